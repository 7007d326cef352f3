"""Write a realistic, deterministic job log for the benchmarks.

The log looks like a large download that was interrupted twice and resumed:

* a ``source`` line, then every ``job`` line (resolve), then ``resolved``;
* session 1 works through the jobs with ``workers`` workers and is killed at
  30% (its in-flight jobs are left ``started`` with no terminal event);
* session 2 redoes those, continues, and is killed at 60%, leaving its own
  in-flight jobs behind.

Per attempted job: ``started`` (with ``worker``), then ``completed`` (with
``extra.item_size``) about 95% of the time; ~3% fail with ``retry: 1`` (a few
then ``retry: 2``) and are retried later in the session; ~2% fail permanently
(``retry: false``) with one of a few realistic messages. Terminal events trail
their ``started`` by about ``workers`` jobs, as they do with a worker pool.

10M jobs make ~22.6M lines, ~2 GB. Everything is formatted in bulk and
written in large chunks, so that takes well under a minute or two.

    python benches/genlog.py --jobs 1000000 bench-out/joblog-1000000.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TextIO

VERSION = 1  # bump when the output for given parameters changes
COLLECTIONS = ["nasa-apollo", "nasa-gemini", "nasa-hubble", "nasa-skylab", "nasa-mercury"]
RETRY_ERRORS = ["HTTP 503", "HTTP 429", "read timed out", "connection reset by peer"]
PERMANENT_ERRORS = [
    "HTTP 404", "item is dark", "md5 mismatch for x.pdf", "HTTP 403",
    "md5 mismatch for x_djvu.txt", "no files matched",
]  # fmt: skip
P_PERMANENT = 0.02
P_RETRY = 0.03
CHUNK = 50_000  # jobs per formatted chunk; retries are redone at chunk ends


@dataclass
class Stats:
    """What the generated log holds, for checking readers against."""

    jobs: int = 0
    seed: int = 0
    version: int = VERSION
    lines: int = 0
    bytes: int = 0
    completed: int = 0
    failed: int = 0
    in_flight: int = 0
    bytes_completed: int = 0

    @property
    def pending(self) -> int:
        return self.jobs - self.completed - self.failed


class Clock:
    """``%Y%m%dT%H%M%SZ`` for event ``i`` at ``rate`` events per second, cached per second."""

    def __init__(self, start: int, rate: float) -> None:
        self.start, self.rate = start, rate
        self._second = -1
        self._text = ""

    def __call__(self, i: int) -> str:
        second = self.start + int(i / self.rate)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        return self._text


class Writer:
    """Lines are formatted into ``buf`` and written a chunk at a time."""

    def __init__(self, f: TextIO, stats: Stats) -> None:
        self.f = f
        self.stats = stats
        self.buf: list[str] = []

    def flush(self) -> None:
        text = "".join(self.buf)
        self.buf.clear()
        self.f.write(text)
        self.stats.bytes += len(text)


def write_resolve(w: Writer, jobs: int, clock: Clock) -> None:
    out = w.buf
    out.append(
        f'{{"event":"source","search":"collection:nasa","op":"download","ts":"{clock(0)}"}}\n'
    )
    for lo in range(1, jobs + 1, CHUNK):
        out.extend(
            f'{{"event":"job","seq":{s},"id":"{COLLECTIONS[s % 5]}-{s:08d}",'
            f'"op":"download","ts":"{clock(s)}"}}\n'
            for s in range(lo, min(lo + CHUNK, jobs + 1))
        )
        w.flush()
    out.append(f'{{"event":"resolved","count":{jobs},"ts":"{clock(jobs)}"}}\n')
    w.stats.lines += jobs + 2


class Session:
    """One run of the engine over a list of seqs, killed (or not) at the end."""

    def __init__(self, w: Writer, rng: random.Random, clock: Clock, workers: int) -> None:
        self.w, self.rng, self.clock, self.workers = w, rng, clock, workers
        self.events = 0
        self.in_flight: deque[tuple[int, int, int]] = deque()  # (seq, worker, attempt)
        self.retries: list[tuple[int, int]] = []  # (seq, attempt that failed)

    def emit(self, text: str) -> None:
        self.w.buf.append(text)
        self.events += 1

    def start(self, seq: int, attempt: int) -> None:
        """A worker picks up ``seq``: the one that just finished, once all are busy."""
        if len(self.in_flight) == self.workers:
            worker = self.finish(*self.in_flight.popleft())
        else:
            worker = len(self.in_flight)
        self.emit(
            f'{{"event":"started","seq":{seq},"ts":"{self.clock(self.events)}","worker":{worker}}}\n'
        )
        self.in_flight.append((seq, worker, attempt))

    def finish(self, seq: int, worker: int, attempt: int) -> int:
        """The terminal event of attempt ``attempt`` (0 = first) of ``seq``; frees its worker."""
        r = self.rng.random()
        ts = self.clock(self.events)
        stats = self.w.stats
        if r < P_PERMANENT or (attempt >= 2 and r < 0.3):  # third attempts often fail for good
            error = PERMANENT_ERRORS[int(r * 1e6) % len(PERMANENT_ERRORS)]
            self.emit(
                f'{{"event":"failed","seq":{seq},"ts":"{ts}","error":"{error}","retry":false}}\n'
            )
            stats.failed += 1
        elif r < P_PERMANENT + P_RETRY or (attempt == 1 and r < 0.5):  # half of retries fail again
            error = RETRY_ERRORS[int(r * 1e6) % len(RETRY_ERRORS)]
            retry = attempt + 1
            self.emit(
                f'{{"event":"failed","seq":{seq},"ts":"{ts}","error":"{error}","retry":{retry}}}\n'
            )
            self.retries.append((seq, retry))
        else:
            getrandbits = self.rng.getrandbits
            size = (getrandbits(34) >> getrandbits(4)) + 1024
            self.emit(
                f'{{"event":"completed","seq":{seq},"ts":"{ts}","extra":{{"item_size":{size}}}}}\n'
            )
            stats.completed += 1
            stats.bytes_completed += size
        return worker

    def redo_retries(self) -> None:
        """Failed jobs get another attempt at the end of each chunk (the engine's retry queue)."""
        retries, self.retries = self.retries, []
        for seq, attempt in retries:
            self.start(seq, attempt)

    def run(self, seqs: list[int], first_attempt: dict[int, int], killed: bool) -> None:
        for i, seq in enumerate(seqs):
            self.start(seq, first_attempt.get(seq, 0))
            if i % CHUNK == CHUNK - 1:
                self.redo_retries()
                self.w.flush()
        if not killed:
            while self.in_flight:
                self.finish(*self.in_flight.popleft())
        self.w.stats.lines += self.events
        self.w.flush()


def generate(
    path: str,
    jobs: int,
    seed: int = 1,
    workers: int = 16,
    progress: Callable[[str], None] | None = None,
) -> Stats:
    """Write the log to ``path``; return what it holds."""
    with open(path, "w", encoding="ascii", newline="\n", buffering=1 << 22) as f:
        return _generate(Writer(f, Stats(jobs=jobs, seed=seed)), seed, workers, progress)


def _generate(w: Writer, seed: int, workers: int, progress: Callable[[str], None] | None) -> Stats:
    rng = random.Random(seed)
    stats = w.stats
    jobs = stats.jobs
    start = 1_764_000_000  # 2025-11-24
    write_resolve(w, jobs, Clock(start, 20_000))
    if progress:
        progress(f"resolve: {jobs:,} jobs")

    first_cut, second_cut = int(jobs * 0.3), int(jobs * 0.6)
    s1 = Session(w, rng, Clock(start + 3_600, 6.0), workers)
    s1.run(list(range(1, first_cut + 1)), {}, killed=True)
    if progress:
        progress(f"session 1 killed after seq {first_cut:,}")

    # Session 2 resumes: the pending jobs in seq order, first the ones session 1 left.
    redo = sorted({seq for seq, _, _ in s1.in_flight} | {seq for seq, _ in s1.retries})
    attempts = {seq: attempt for seq, attempt in s1.retries}
    s2 = Session(w, rng, Clock(start + 86_400 * 7, 6.0), workers)
    s2.run(redo + list(range(first_cut + 1, second_cut + 1)), attempts, killed=True)
    stats.in_flight = len(s2.in_flight)
    w.flush()
    if progress:
        progress(f"session 2 killed after seq {second_cut:,}")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    stats = generate(args.path, args.jobs, args.seed, progress=lambda m: print(m, file=sys.stderr))
    print(json.dumps({**asdict(stats), "pending": stats.pending}))
    print(f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
