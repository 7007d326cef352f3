"""Reliability: random kills, torn writes, fault storms, full disks, hostile input, old logs.

Every test drives the real ``iabulk`` command against the archive stand-in
and judges the outcome with its own reader of the job log (plain Python, not
the Rust scan under test) and by md5 against the corpus:

- **nothing lost**: every item of the source has exactly one job line, and
  at the end every good item is on disk, verified;
- **nothing corrupt**: every file under its final name (not ``.iabulk-part``)
  holds exactly the corpus's bytes, at every moment we look;
- **nothing falsely completed**: an item the log says ``completed`` is intact
  on disk at that moment, checked after every kill, not only at the end;
- **nothing silently skipped**: permanent failures are logged with
  ``retry: false`` and make the exit code 1.

The random-kill harness (:class:`KillHarness`) SIGKILLs ``iabulk`` at seeded
random moments of several kinds (mid-resolve, mid-file, right after a file's
rename, right after a log append, at a random time), sometimes tears the
log's last record in half as a power cut can, and resumes. The moment "after
a file's rename, before the item's ``completed`` line" is hit exactly with a
``sitecustomize`` hook in the child that stops the process (SIGSTOP) right
after the Nth rename of a verified file; the test then SIGKILLs it.

``make soak`` runs the same harness longer (``@pytest.mark.soak``) and
prints its figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from iabulk._native import scan
from iabulk.workers.download import PART_SUFFIX

from tests.commands import IABULK
from tests.standin import ArchiveStandin, Corpus, FaultPlan
from tests.standin.faults import Fault, RequestInfo

KIB = 1 << 10
MIB = 1 << 20


# -- the job log, read independently of the code under test -------------------


@dataclass
class LogView:
    """What a plain reader of the job log sees (format v1, DESIGN.md)."""

    size: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[bytes] = field(default_factory=list)  # complete lines only
    torn: bytes = b""  # a last line without its newline
    jobs: dict[int, str] = field(default_factory=dict)  # seq -> id
    job_lines: Counter[str] = field(default_factory=Counter)  # id -> job lines
    seq_order_ok: bool = True
    state: dict[int, str] = field(default_factory=dict)  # seq -> "completed"/"failed"/"pending"
    resolved: bool = False
    has_source: bool = False

    @property
    def completed_ids(self) -> set[str]:
        return {
            self.jobs[s] for s, st in self.state.items() if st == "completed" and s in self.jobs
        }

    @property
    def failed_ids(self) -> set[str]:
        return {self.jobs[s] for s, st in self.state.items() if st == "failed" and s in self.jobs}

    def failures(self) -> list[tuple[str, str, Any]]:
        """(id, error, retry) of every ``failed`` event."""
        return [
            (self.jobs.get(r["seq"], "?"), str(r.get("error")), r.get("retry"))
            for r in self.records
            if r.get("event") == "failed"
        ]


def read_log(path: Path) -> LogView:
    data = path.read_bytes() if path.exists() else b""
    view = LogView(size=len(data))
    cut = data.rfind(b"\n") + 1
    view.torn = data[cut:]
    last_seq = 0
    for raw in data[:cut].split(b"\n")[:-1]:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            view.malformed.append(raw)
            continue
        if not isinstance(record, dict) or not isinstance(record.get("event"), str):
            view.malformed.append(raw)
            continue
        view.records.append(record)
        event, seq = record["event"], record.get("seq")
        if event == "source":
            view.has_source, view.resolved = True, False
        elif event == "resolved":
            view.resolved = True
        elif event == "job":
            view.job_lines[record["id"]] += 1
            if seq in view.jobs:
                continue
            view.seq_order_ok &= isinstance(seq, int) and seq > last_seq
            last_seq = max(last_seq, seq)
            view.jobs[seq] = record["id"]
            view.state.setdefault(seq, "pending")
        elif event == "completed":
            view.state[seq] = "completed"
        elif event == "failed":
            view.state[seq] = "failed" if record.get("retry") is False else "pending"
        elif event == "requeued":
            view.state[seq] = "pending"
    return view


# -- what is on disk -----------------------------------------------------------


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


class DiskChecker:
    """Judges files under the destinations against the corpus.

    A file's verdict is cached under its inode, size, mtime and ctime, so a
    file checked after one kill is not hashed again after the next unless it
    changed.
    """

    def __init__(self, corpus: Corpus, dests: list[Path]) -> None:
        self.corpus = corpus
        self.dests = dests
        self._cache: dict[Path, tuple[tuple[int, ...], bool]] = {}
        self._expected: dict[str, dict[str, tuple[int, str]]] = {}

    def expected(self, identifier: str) -> dict[str, tuple[int, str]]:
        found = self._expected.get(identifier)
        if found is None:
            found = self._expected[identifier] = self.corpus.expected(identifier)
        return found

    def file_ok(self, path: Path, size: int, md5: str) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache.get(path)
        if cached and cached[0] == sig:
            return cached[1]
        ok = st.st_size == size and md5_of(path) == md5
        self._cache[path] = (sig, ok)
        return ok

    def home(self, identifier: str) -> Path | None:
        homes = [d for d in self.dests if (d / identifier).is_dir()]
        return homes[0] if len(homes) == 1 else None

    def item_intact(self, identifier: str) -> bool:
        """Every file the metadata lists with an md5 is there, whole, on one disk."""
        home = self.home(identifier)
        if home is None:
            return False
        root = home / identifier
        if not (root / self.corpus[identifier].files_xml).is_file():
            return False  # listed without md5: present is all one can check
        return all(
            self.file_ok(root / name, size, md5)
            for name, (size, md5) in self.expected(identifier).items()
        )

    def bad_final_files(self) -> list[str]:
        """Files under a final name whose bytes are not the corpus's (or unknown files)."""
        bad = []
        for dest in self.dests:
            for path in dest.rglob("*"):
                if not path.is_file() or path.name.endswith(PART_SUFFIX):
                    continue
                identifier, name = path.relative_to(dest).as_posix().split("/", 1)
                if identifier not in self.corpus:
                    bad.append(f"stray {path}")
                    continue
                item = self.corpus[identifier]
                if name == item.files_xml:
                    continue  # no md5 to hold it to
                want = self.expected(identifier).get(name)
                if want is None:
                    bad.append(f"stray {path}")
                elif not self.file_ok(path, *want):
                    bad.append(f"corrupt {path}")
        return bad

    def parts(self) -> list[Path]:
        return [p for d in self.dests for p in d.rglob("*" + PART_SUFFIX)]


def problems(view: LogView, disks: DiskChecker, wanted: set[str]) -> dict[str, list[str]]:
    """What breaks the invariants that hold at every moment (empty lists when none)."""
    return {
        "malformed": [repr(raw[:80]) for raw in view.malformed],
        "seq_order": [] if view.seq_order_ok else ["job seqs not strictly increasing"],
        "listed_twice": sorted(i for i, n in view.job_lines.items() if n > 1),
        "strangers": sorted(set(view.job_lines) - wanted),
        "falsely_completed": sorted(i for i in view.completed_ids if not disks.item_intact(i)),
        "corrupt": disks.bad_final_files(),
    }


def check_consistent(view: LogView, disks: DiskChecker, wanted: set[str]) -> None:
    found = {k: v for k, v in problems(view, disks, wanted).items() if v}
    assert not found, found


# -- running iabulk --------------------------------------------------------------

# Loaded by the child through PYTHONPATH: stops the process (SIGSTOP) right
# after the Nth rename of a ``.iabulk-part`` file (or another suffix) into place, and says so by
# writing a marker file. The test then SIGKILLs it: a crash exactly between a
# file's rename and its item's ``completed`` line.
FREEZE_HOOK = """
import os, signal, threading
_spec = os.environ.get("IABULK_TEST_FREEZE_AFTER_RENAME")
if _spec:
    _n, _marker = _spec.split(":", 1)
    _suffix = os.environ.get("IABULK_TEST_FREEZE_SUFFIX", ".iabulk-part")
    _left = [int(_n)]
    _lock = threading.Lock()
    _replace = os.replace

    def replace(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        if os.fspath(src).endswith(_suffix):
            with _lock:
                _left[0] -= 1
                hit = _left[0] == 0
            if hit:
                with open(_marker, "w") as out:
                    out.write(os.fspath(dst))
                # Aimed at this thread: a process-wide SIGSTOP may be taken by
                # another thread while this one runs on for a moment.
                signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)

    os.replace = replace
"""


def hook_dir(tmp: Path) -> Path:
    d = tmp / "hook"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(FREEZE_HOOK)
    return d


def iabulk(
    srv: ArchiveStandin, *args: str, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IABULK, *args], env=srv.client_env(**env), capture_output=True, text=True, timeout=timeout
    )


def wait_until(
    predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[Any] | None = None
) -> bool:
    """Poll ``predicate``; False if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


@dataclass
class KillStats:
    kills: int = 0
    by_mode: Counter[str] = field(default_factory=Counter)
    torn: int = 0
    repaired: int = 0
    runs: int = 0
    finished_early: int = 0
    mid_resolve: int = 0


class KillHarness:
    """Runs ``iabulk`` over and over on one log, killing it at seeded random moments."""

    MODES = ("resolve", "midfile", "rename", "append", "random")

    def __init__(
        self,
        srv: ArchiveStandin,
        corpus: Corpus,
        tmp: Path,
        source: list[str],
        options: list[str],
        dests: list[Path],
        seed: int,
        tear_rate: float = 0.3,
        max_delay: float = 3.0,
    ) -> None:
        self.srv, self.corpus, self.tmp = srv, corpus, tmp
        self.source, self.options, self.dests = source, options, dests
        self.log = tmp / "run.jsonl"
        self.rng = random.Random(seed)
        self.tear_rate = tear_rate
        self.max_delay = max_delay
        self.disks = DiskChecker(corpus, dests)
        self.wanted = set(corpus.identifiers())
        self.stats = KillStats()
        self.seen: dict[str, set[str]] = {}
        self.strict = True
        self.hook = hook_dir(tmp)
        self._round = 0
        self._torn: tuple[bytes, bytes] | None = None

    def args(self) -> list[str]:
        view = read_log(self.log)
        # The README: `iabulk download --joblog J` alone resumes. Use it half
        # the time once the log holds its source record.
        alone = view.has_source and self.rng.random() < 0.5
        dests = [a for d in self.dests for a in ("--destdir", str(d))]
        return [
            "download",
            *([] if alone else self.source),
            "--joblog",
            str(self.log),
            *dests,
            *self.options,
        ]

    def start(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self._round += 1
        self.stats.runs += 1
        err = open(self.tmp / f"stderr-{self._round:03d}.txt", "wb")
        try:
            return subprocess.Popen(
                [IABULK, *self.args()],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.srv.client_env(**(env or {})),
            )
        finally:
            err.close()

    def stderr(self) -> str:
        return (self.tmp / f"stderr-{self._round:03d}.txt").read_text(errors="replace")

    def pick_mode(self) -> str:
        view = read_log(self.log)
        if not view.resolved and self.stats.by_mode["resolve"] < 3:
            return "resolve"
        return self.rng.choice(self.MODES[1:])

    def kill_round(self, mode: str | None = None) -> bool:
        """One run, killed at a moment of the chosen kind; False if it ended by itself."""
        mode = mode or self.pick_mode()
        env = {}
        marker = self.tmp / f"frozen-{self._round + 1}"
        if mode == "rename":
            env = {
                "PYTHONPATH": str(self.hook),
                "IABULK_TEST_FREEZE_AFTER_RENAME": f"{self.rng.randint(1, 6)}:{marker}",
            }
        proc = self.start(env)
        try:
            if mode == "resolve":
                wait_until(lambda: read_log(self.log).has_source, 60, proc)
                time.sleep(self.rng.uniform(0.0, 1.5))
            elif mode == "midfile":
                threshold = self.rng.randint(16 * KIB, 768 * KIB)
                wait_until(lambda: any(_size(p) >= threshold for p in self.disks.parts()), 60, proc)
            elif mode == "rename":
                wait_until(marker.exists, 60, proc)
            elif mode == "append":
                start = _size(self.log)
                wait_until(lambda: _size(self.log) > start, 60, proc)
                # The log just grew: more appends follow in a burst; land in it.
                time.sleep(self.rng.uniform(0.0, 0.02))
            else:
                time.sleep(self.rng.uniform(0.2, self.max_delay))
            if proc.poll() is not None:
                self.stats.finished_early += 1
                assert proc.returncode in (0, 1), self.stderr()
                return False
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.stats.kills += 1
        self.stats.by_mode[mode] += 1
        self.after_crash()
        return True

    def check(self) -> LogView:
        """Record (and unless the harness is lenient, fail on) broken invariants."""
        view = read_log(self.log)
        found = problems(view, self.disks, self.wanted)
        for kind, items in found.items():
            self.seen.setdefault(kind, set()).update(items)
        if self.strict:
            assert not any(found.values()), {k: v[:5] for k, v in found.items() if v}
        return view

    def after_crash(self) -> None:
        self.check_repair()
        view = self.check()
        self.stats.mid_resolve += view.has_source and not view.resolved
        if self.rng.random() < self.tear_rate:
            self.tear()

    def tear(self) -> None:
        """Cut the last record in half, as a power cut can."""
        data = self.log.read_bytes() if self.log.exists() else b""
        if not data.endswith(b"\n") or len(data) < 2:
            return  # the kill tore it already (or nothing to tear)
        start = data.rfind(b"\n", 0, len(data) - 1) + 1
        torn = data[: start + (len(data) - start) // 2]
        self.log.write_bytes(torn)
        self._torn = (data[:start], torn)
        self.stats.torn += 1

    def check_repair(self) -> None:
        """After a run that followed a tear: every complete record before it survived,
        and the fragment is gone (unless that run died before opening the log)."""
        if self._torn is None:
            return
        prefix, torn = self._torn
        data = self.log.read_bytes()
        if data == torn:
            return  # not opened yet: check after the next run
        assert data.startswith(prefix), "a complete record was lost repairing a tear"
        rest = data[len(prefix) :]
        if b"\n" in rest:  # (a kill may have torn the next record in turn)
            json.loads(rest.split(b"\n", 1)[0])  # it starts cleanly, not glued to the fragment
        self.stats.repaired += 1
        self._torn = None

    def finish(self, expect_failed: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Resume to the end and judge everything (asserts unless lenient)."""
        result = iabulk(self.srv, *self.args())
        self.stderr_final = result.stderr
        self.check_repair()
        view = self.check()
        snap = scan(str(self.log))
        good = self.wanted - expect_failed
        report: dict[str, Any] = {
            "exit": result.returncode,
            "exit_wanted": 1 if expect_failed else 0,
            "torn_left": [view.torn[:80]] if view.torn else [],
            "malformed_after_repair": snap.malformed,
            "never_recorded": sorted(self.wanted - set(view.job_lines)),
            "lost": sorted(
                i for i in good if i not in view.completed_ids or not self.disks.item_intact(i)
            ),
            "wrongly_failed": sorted(view.failed_ids ^ expect_failed),
            "pending": snap.pending,
            "parts_left": [str(p) for p in self.disks.parts()],
        }
        if self.strict:
            self.assert_clean(report)
        return report

    def assert_clean(self, report: dict[str, Any]) -> None:
        assert report["exit"] == report["exit_wanted"], self.stderr_final[-3000:]
        assert not {k: v for k, v in self.seen.items() if v}, self.seen
        for key in ("torn_left", "never_recorded", "lost", "wrongly_failed", "parts_left"):
            assert not report[key], (key, report[key][:5])
        assert report["malformed_after_repair"] == 0 and report["pending"] == 0, report


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def corpus_bytes(corpus: Corpus) -> int:
    return sum(corpus.item_size(corpus[i]) for i in corpus.identifiers())


def kill_corpus(
    n_items: int, large_every: int, large: tuple[int, int], seed: int, collection: str = "rk"
) -> Corpus:
    """``n_items`` items; every ``large_every``-th has one file of ``large`` bytes,
    the rest one to three small files."""
    rng = random.Random(seed)
    corpus = Corpus()
    for i in range(n_items):
        if large_every and i % large_every == 0:
            files = [(f"big-{i}.bin", rng.randint(*large))]
        else:
            files = [(f"f{j}.dat", rng.randint(200, 6 * KIB)) for j in range(rng.randint(1, 3))]
        corpus.add_item(f"{collection}-{i:04d}", files, collection=collection)
    corpus.warm()
    return corpus


def slow_search_plan(plan: FaultPlan, pages: int) -> FaultPlan:
    for page in range(2, pages + 1):
        plan.fail_search_page(page, ["slow_first_byte"])
    return plan


# -- random kills ----------------------------------------------------------------


def test_random_kills_lose_nothing_and_record_nothing_false(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    """K >= 10 SIGKILLs of every kind, some with torn tails, then one resume."""
    corpus = kill_corpus(320, large_every=16, large=(MIB, 3 * MIB // 2), seed=1)
    plan = FaultPlan(bandwidth=1_500_000, first_byte_delay=0.6)
    srv = standin(corpus, slow_search_plan(plan, 4))
    dest = tmp_path / "files"
    dest.mkdir()
    harness = KillHarness(
        srv,
        corpus,
        tmp_path,
        ["--search", "collection:rk", "--search-param", "count:100"],
        ["-w", "4", "--disk-margin", "0", "-q"],
        [dest],
        seed=20261128,
    )
    modes = [
        "resolve",
        "resolve",
        "midfile",
        "rename",
        "append",
        "random",
        "midfile",
        "rename",
        "append",
        "random",
        "midfile",
        "rename",
    ]
    for mode in modes:
        if mode == "resolve":
            slow_search_plan(plan, 4)  # every resume pages the search again
        assert harness.kill_round(mode), f"the run ended before the {mode} kill"
    harness.finish()
    stats = harness.stats
    assert stats.kills >= 10 and stats.by_mode["rename"] == 3
    assert stats.torn >= 1 and stats.repaired == stats.torn
    sent, total = srv.counters()["bytes_sent"], corpus_bytes(corpus)
    print(
        f"\nrandom kills: {stats.kills} kills {dict(stats.by_mode)}, {stats.torn} torn, "
        f"re-downloaded {(sent - total) / total:.1%} of {total} corpus bytes"
    )


# -- fault storms ----------------------------------------------------------------


class StormPlan(FaultPlan):
    """Random faults on every kind of request, except that bytes are flipped only
    in data-node bodies: that models a data node's bad disk, which md5 catches.
    A flipped byte in a metadata document (say, in a file name) cannot come off
    an HTTPS connection and no client could detect it."""

    def decide(self, req: RequestInfo) -> Fault | None:
        fault = super().decide(req)
        return None if fault and fault.kind == "flip" and req.kind != "data" else fault


def storm_corpus(n: int, collection: str = "st") -> Corpus:
    corpus = Corpus()
    rng = random.Random(7)
    for i in range(n):
        if i % 6 == 0:
            files = [(f"large-{i}.bin", rng.randint(MIB, 3 * MIB // 2)), ("small.txt", 3000)]
        else:
            files = [(f"part {j}.dat", rng.randint(1 * KIB, 40 * KIB)) for j in range(3)]
        corpus.add_item(f"{collection}-{i:03d}", files, collection=collection)
    corpus.warm()
    return corpus


def test_fault_storm_every_recoverable_item_ends_verified(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    """5xx, 429 + Retry-After (archive.org and data nodes), resets, short bodies,
    flipped bytes, slow first bytes, throttled bandwidth; plus dark, missing and
    403 items, which alone end failed, permanently."""
    corpus = storm_corpus(36)
    corpus.add_item("st-dark", [("x.bin", 5000)], collection="st", dark=True)
    corpus.add_item("st-forbidden", [("ok.bin", 5000), ("locked.bin", 5000)], collection="st")
    rates = {
        "500": 0.03,
        "502": 0.03,
        "503": 0.02,
        "429": 0.02,
        "reset": 0.03,
        "short": 0.03,
        "flip": 0.02,
        "slow_first_byte": 0.03,
    }
    plan = StormPlan(
        seed=11,
        rates=rates,
        kinds=("metadata", "redirect", "data"),
        retry_after=1,
        bandwidth=3_000_000,
        first_byte_delay=0.4,
    )
    # A restricted file: /download and the data node both refuse it.
    plan.fail_first("st-forbidden/locked.bin", ["403"] * 50, kinds=["redirect", "data"])
    plan.fail_first("st-001", ["429", "429"], kinds=["metadata"])  # archive.org
    plan.fail_first("st-000/large-0.bin", ["429", "reset", "429"], kinds=["data"])  # data node
    srv = standin(corpus, plan)
    dest = tmp_path / "files"
    dest.mkdir()
    items = tmp_path / "items.txt"
    ids = [*corpus.identifiers(), "st-no-such-item"]
    items.write_text("\n".join(ids) + "\n")
    log = tmp_path / "storm.jsonl"
    result = iabulk(
        srv,
        "download",
        "--itemlist",
        str(items),
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-w",
        "6",
        "-q",
    )
    assert result.returncode == 1, result.stderr

    view = read_log(log)
    permanent = {i: (e, r) for i, e, r in view.failures() if r is False}
    assert set(permanent) == {"st-dark", "st-forbidden", "st-no-such-item"}, permanent
    assert permanent["st-dark"][0] == "item is dark"
    assert permanent["st-no-such-item"][0] == "item does not exist"
    assert "403" in permanent["st-forbidden"][0]
    for identifier, error, retry in view.failures():
        if "429" in error or "rate" in error:
            assert retry is not False, (identifier, error)
    good = set(corpus.identifiers()) - {"st-dark", "st-forbidden"}
    disks = DiskChecker(corpus, [dest])
    check_consistent(view, disks, set(ids))
    assert view.completed_ids == good
    assert all(disks.item_intact(i) for i in good)
    assert not disks.parts()
    injected = srv.counters()["faults_injected"]
    for kind in rates:
        assert injected.get(kind, 0) > 0, (kind, injected)
    print(f"\nfault storm: {len(good)} items verified, 3 failed for good; injected {injected}")


def test_metadata_timeouts_for_a_while_then_every_item_ends_verified(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    """Metadata answers slower than --timeout (a struggling archive.org), then recovery."""
    corpus = storm_corpus(12, collection="mt")
    plan = FaultPlan(metadata_delay=4.0)
    srv = standin(corpus, plan)
    dest = tmp_path / "files"
    dest.mkdir()
    log = tmp_path / "mt.jsonl"
    proc = subprocess.Popen(
        [
            IABULK,
            "download",
            "--search",
            "collection:mt",
            "--joblog",
            str(log),
            "--destdir",
            str(dest),
            "--disk-margin",
            "0",
            "--timeout",
            "1",
            "-w",
            "4",
            "-q",
        ],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(
            lambda: any("timed out" in e for _, e, _ in read_log(log).failures()), 60, proc
        )
        plan.metadata_delay = 0.0
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    view = read_log(log)
    assert view.completed_ids == set(corpus.identifiers())
    disks = DiskChecker(corpus, [dest])
    check_consistent(view, disks, set(corpus.identifiers()))
    assert all(disks.item_intact(i) for i in corpus.identifiers())


@pytest.mark.parametrize("fault", ["reset", "500"])
def test_an_outage_pauses_the_run_instead_of_failing_every_item_for_good(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, fault: str
) -> None:
    """For a few seconds every request fails (the link or archive.org is down):
    items must not use up their retries and end failed for good (a resume
    never retries those), the run waits the outage out."""
    corpus = kill_corpus(40, large_every=0, large=(0, 0), seed=8, collection="out")
    plan = FaultPlan(bandwidth=300_000)
    srv = standin(corpus, plan)
    dest = tmp_path / "files"
    dest.mkdir()
    log = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [
            IABULK,
            "download",
            "--search",
            "collection:out",
            "-w",
            "4",
            "--joblog",
            str(log),
            "--destdir",
            str(dest),
            "--disk-margin",
            "0",
            "-q",
        ],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: len(read_log(log).completed_ids) >= 5, 60, proc)
        plan.rates = {fault: 1.0}
        time.sleep(6)  # (long enough to use up 3 retries of 1, 2 and 4 s, jittered)
        plan.rates = {}
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert srv.counters()["faults_injected"].get(fault, 0) > 10
    view = read_log(log)
    assert not view.failed_ids, [f for f in view.failures() if f[2] is False][:3]
    assert proc.returncode == 0, stderr
    disks = DiskChecker(corpus, [dest])
    check_consistent(view, disks, set(corpus.identifiers()))
    assert view.completed_ids == set(corpus.identifiers())


@pytest.mark.parametrize(
    "faults",
    [["503", "429", "500"], ["reset"], ["short"]],
    ids=["5xx-and-429", "reset", "short-body"],
)
def test_failing_search_pages_are_retried_and_nothing_is_lost(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, faults: list[str]
) -> None:
    corpus = kill_corpus(250, large_every=0, large=(0, 0), seed=3, collection="sp")
    plan = FaultPlan(retry_after=0).fail_search_page(2, faults).fail_search_page(3, faults[:1])
    srv = standin(corpus, plan)
    dest = tmp_path / "files"
    dest.mkdir()
    log = tmp_path / "sp.jsonl"
    result = iabulk(
        srv,
        "download",
        "--search",
        "collection:sp",
        "--search-param",
        "count:100",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-w",
        "8",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    view = read_log(log)
    assert view.resolved
    disks = DiskChecker(corpus, [dest])
    check_consistent(view, disks, set(corpus.identifiers()))
    assert view.completed_ids == set(corpus.identifiers())
    assert srv.counters()["faults_injected"] == dict(Counter(faults + faults[:1]))


# -- hostile and bad input ---------------------------------------------------------


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith("iabulk: ") and result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr, result.stderr


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_a_metadata_name_that_is_another_files_temporary_name_is_refused(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    """``x.bin.iabulk-part`` listed beside ``x.bin`` is taken for x.bin's partial
    file: resumed from, or renamed over, or deleted as a bad partial, so an
    item can be recorded complete without it, or with the wrong bytes."""
    corpus = Corpus()
    corpus.add_item(
        "clash", [("x.bin" + PART_SUFFIX, 100_000), ("x.bin", 3_000_000)], collection="c"
    )
    corpus.add_item("fine", [("y.bin", 1000)], collection="c")
    srv = standin(corpus, FaultPlan(bandwidth=2_000_000))
    dest = tmp_path / "files"
    dest.mkdir()
    log = tmp_path / "j.jsonl"
    result = iabulk(
        srv,
        "download",
        "clash",
        "fine",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    )
    view = read_log(log)
    disks = DiskChecker(corpus, [dest])
    check_consistent(view, disks, {"clash", "fine"})
    assert view.completed_ids == {"fine"}
    assert result.returncode == 1, result.stderr
    [(error, retry)] = [(e, r) for i, e, r in view.failures() if i == "clash"]
    assert retry is False and "refused unsafe file name" in error and PART_SUFFIX in error


def test_nul_bytes_and_over_long_names_in_metadata_are_refused(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = Corpus()
    corpus.add_item(
        "odd",
        [
            ("ok.txt", 100),
            ("bad\x00name.txt", 100),
            ("L" * 256, 10),
            ("deep/" + "d" * 256 + "/x.txt", 10),
        ],
        collection="c",
    )
    srv = standin(corpus)
    dest = tmp_path / "files"
    dest.mkdir()
    log = tmp_path / "j.jsonl"
    before = tree(tmp_path)
    result = iabulk(
        srv,
        "download",
        "odd",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [(error, retry)] = [(e, r) for _, e, r in read_log(log).failures()]
    assert retry is False and "NUL byte" in error and "too long" in error
    assert (dest / "odd" / "ok.txt").read_bytes() == corpus.read("odd", "ok.txt")
    written = tree(tmp_path) - before
    assert written <= {
        "j.jsonl",
        "files/odd",
        "files/odd/ok.txt",
        "files/odd/odd_meta.xml",
        "files/odd/odd_files.xml",
    }, written


def test_identifiers_with_slashes_or_dots_in_an_item_list_write_nothing_outside(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = Corpus()
    corpus.add_item("good", [("a.bin", 1000)], collection="c")
    hostile = [
        "..",
        ".",
        "../escape",
        "a/b",
        "x/../../y",
        "/abs",
        "back\\slash",
        "nul\x01ctl",
        "i" * 300,
    ]
    srv = standin(corpus)
    work = tmp_path / "work"
    dest = work / "files"
    dest.mkdir(parents=True)
    items = tmp_path / "items.txt"
    items.write_text("\n".join(["good", *hostile]) + "\n")
    log = tmp_path / "j.jsonl"
    result = iabulk(
        srv,
        "download",
        "--itemlist",
        str(items),
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    )
    assert result.returncode == 1, result.stderr
    view = read_log(log)
    assert view.completed_ids == {"good"}
    failures = {i: (e, r) for i, e, r in view.failures()}
    assert set(failures) == set(hostile)
    assert all(r is False and "refused identifier" in e for e, r in failures.values()), failures
    assert tree(work) == {
        "files",
        "files/good",
        "files/good/a.bin",
        "files/good/good_meta.xml",
        "files/good/good_files.xml",
    }
    assert srv.counters()["requests_by_kind"]["metadata"] == 1  # nothing hostile was asked for


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_an_item_list_with_a_byte_order_mark_and_crlf_lines(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, via: str
) -> None:
    """As Windows editors save them: the BOM is not part of the first identifier."""
    corpus = Corpus()
    for name in ("first", "second"):
        corpus.add_item(name, [("a.bin", 1000)], collection="c")
    srv = standin(corpus)
    text = "\ufefffirst\r\nsecond\r\n".encode()
    items = tmp_path / "items.txt"
    items.write_bytes(text)
    log = tmp_path / "j.jsonl"
    result = subprocess.run(
        [
            IABULK,
            "download",
            "--itemlist",
            str(items) if via == "file" else "-",
            "--joblog",
            str(log),
            "--destdir",
            str(tmp_path),
            "--disk-margin",
            "0",
            "-q",
        ],
        input=text,
        capture_output=True,
        env=srv.client_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert read_log(log).completed_ids == {"first", "second"}


def test_destdir_that_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    result = subprocess.run(
        [IABULK, "download", "one", "--joblog", str(tmp_path / "j.jsonl"), "--destdir", str(afile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line_error(result, 2, "is not a directory")
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_job_log_that_is_not_a_regular_file_is_refused_without_hanging(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        log = tmp_path / "fifo"
        os.mkfifo(log)
    else:
        log = Path("/dev/null")
    result = subprocess.run(
        [IABULK, "download", "one", "--joblog", str(log), "--destdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line_error(result, 2, "not a regular file")


@pytest.mark.parametrize("value", ["inf", "1e300"])
def test_timeout_that_is_not_a_usable_number(tmp_path: Path, value: str) -> None:
    result = subprocess.run(
        [
            IABULK,
            "download",
            "one",
            "--joblog",
            str(tmp_path / "j.jsonl"),
            "--destdir",
            str(tmp_path),
            "--timeout",
            value,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line_error(result, 2, "--timeout")
    assert not (tmp_path / "j.jsonl").exists() or (tmp_path / "j.jsonl").stat().st_size == 0


# -- a full disk -------------------------------------------------------------------


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; returns the bytes written."""
    written = 0
    block = b"\0" * (64 * KIB)
    with open(path, "wb", buffering=0) as out:
        try:
            while True:
                written += out.write(block)
        except OSError:
            pass
    return written


def disk_full_failures(log: Path) -> list[tuple[str, str, Any]]:
    return [f for f in read_log(log).failures() if "disk full" in f[1] or "room" in f[1]]


def test_a_disk_filling_up_mid_file_waits_and_finishes_once_space_is_freed(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, small_disks: Callable[[str, str], Path]
) -> None:
    corpus = Corpus()
    for i in range(4):
        corpus.add_item(f"fd-{i}", [(f"big-{i}.bin", 3 * MIB)], collection="fd")
    srv = standin(corpus, FaultPlan(bandwidth=1_500_000))
    disk = small_disks("disk", "16m")
    dest = disk / "dest"
    dest.mkdir()
    log = tmp_path / "fd.jsonl"
    proc = subprocess.Popen(
        [
            IABULK,
            "download",
            "--search",
            "collection:fd",
            "-w",
            "2",
            "--joblog",
            str(log),
            "--destdir",
            str(dest),
            "--disk-margin",
            "0",
            "-q",
        ],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    disks = DiskChecker(corpus, [dest])
    try:
        assert wait_until(lambda: any(_size(p) > 256 * KIB for p in disks.parts()), 60, proc)
        fill(disk / "filler")
        assert wait_until(lambda: bool(disk_full_failures(log)), 60, proc), "no disk-full wait"
        failures = disk_full_failures(log)
        assert all(retry is not False for _, _, retry in failures), failures
        check_consistent(read_log(log), disks, set(corpus.identifiers()))
        assert proc.poll() is None, "iabulk gave up instead of waiting for space"
        (disk / "filler").unlink()
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    view = read_log(log)
    check_consistent(view, disks, set(corpus.identifiers()))
    assert view.completed_ids == set(corpus.identifiers())
    assert all(disks.item_intact(i) for i in corpus.identifiers()) and not disks.parts()


def test_a_disk_filling_up_mid_file_sends_the_item_to_another_destdir_with_room(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, small_disks: Callable[[str, str], Path]
) -> None:
    corpus = Corpus()
    for i in range(2):
        corpus.add_item(f"mv-{i}", [(f"big-{i}.bin", 4 * MIB)], collection="mv")
    srv = standin(corpus, FaultPlan(bandwidth=1_500_000))
    roomy, other = small_disks("disk1", "20m"), small_disks("disk2", "12m")
    dests = [roomy / "dest", other / "dest"]
    for d in dests:
        d.mkdir()
    log = tmp_path / "mv.jsonl"
    proc = subprocess.Popen(
        [
            IABULK,
            "download",
            "--search",
            "collection:mv",
            "-w",
            "1",
            "--joblog",
            str(log),
            "--destdir",
            str(dests[0]),
            "--destdir",
            str(dests[1]),
            "--disk-margin",
            "0",
            "-q",
        ],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    disks = DiskChecker(corpus, dests)
    try:
        assert wait_until(lambda: any(_size(p) > 256 * KIB for p in disks.parts()), 60, proc)
        assert [p for p in disks.parts() if roomy in p.parents], "started on the roomier disk"
        fill(roomy / "filler")  # and it stays full
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still waiting for the full disk: {disk_full_failures(log)[-3:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    view = read_log(log)
    check_consistent(view, disks, set(corpus.identifiers()))
    assert view.completed_ids == set(corpus.identifiers())
    assert all(disks.item_intact(i) for i in corpus.identifiers()) and not disks.parts()
    assert {p.name for p in dests[1].iterdir()} == set(corpus.identifiers())


def test_a_resumed_item_needs_room_only_for_what_it_still_lacks(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, small_disks: Callable[[str, str], Path]
) -> None:
    """Killed after one of two large files, on a disk with room for the other only."""
    corpus = Corpus()
    corpus.add_item("half", [("a.bin", 3 * MIB), ("b.bin", 3 * MIB)], collection="h")
    srv = standin(corpus, FaultPlan(bandwidth=2_000_000))
    disk = small_disks("disk", "10m")
    dest = disk / "dest"
    dest.mkdir()
    log = tmp_path / "h.jsonl"
    args = [
        "download",
        "half",
        "-w",
        "1",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    ]
    proc = subprocess.Popen([IABULK, *args], env=srv.client_env(), stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: (dest / "half" / "a.bin").exists(), 60, proc)
    finally:
        proc.kill()
        proc.wait()
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as out:  # leave 3.5 MiB: b.bin fits, the item does not
        out.write(b"\0" * (free - 7 * MIB // 2))
    result = iabulk(srv, *args, timeout=120)
    assert result.returncode == 0, result.stderr
    disks = DiskChecker(corpus, [dest])
    assert read_log(log).completed_ids == {"half"} and disks.item_intact("half")


# -- two sessions' logs ---------------------------------------------------------------


def upstream_log(path: Path, corpus: Corpus, dest: Path) -> None:
    """What the upstream ``ia`` bulk engine leaves when killed part-way through
    writing its search results: 20 of 30 job lines, no ``source`` or
    ``resolved`` record, items 0-4 completed (their files on disk, mtimes
    stamped as ``ia download`` does), 5-6 waiting for a retry, 7 failed for
    good, 8 in flight, and a torn last line."""
    ids = corpus.identifiers()
    ts = "20261128T101500Z"

    def line(record: dict[str, Any]) -> bytes:
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()

    out = [
        line({"event": "job", "seq": n + 1, "id": ids[n], "op": "download", "ts": ts})
        for n in range(20)
    ]
    for n in range(9):
        out.append(line({"event": "started", "seq": n + 1, "ts": ts, "worker": n % 4}))
    for n in range(5):
        item = corpus[ids[n]]
        out.append(
            line(
                {
                    "event": "completed",
                    "seq": n + 1,
                    "ts": ts,
                    "extra": {"item_size": corpus.item_size(item)},
                }
            )
        )
        for name in [*item.files, item.meta_xml, item.files_xml]:
            target = dest / ids[n] / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(corpus.read(ids[n], name))
            os.utime(target, (item.mtime(name), item.mtime(name)))
    out += [
        line({"event": "failed", "seq": 6, "ts": ts, "error": "HTTP 503", "retry": 1}),
        line({"event": "failed", "seq": 7, "ts": ts, "error": "HTTP 503", "retry": 2}),
        line({"event": "failed", "seq": 8, "ts": ts, "error": "HTTP 403", "retry": False}),
    ]
    torn = line({"event": "job", "seq": 21, "id": ids[20], "op": "download", "ts": ts})
    path.write_bytes(b"".join(out) + torn[: len(torn) // 2])


@pytest.mark.parametrize("with_source", [False, True], ids=["joblog-alone", "same-source"])
def test_a_log_written_by_the_upstream_engine_resumes(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, with_source: bool
) -> None:
    corpus = kill_corpus(30, large_every=0, large=(0, 0), seed=5, collection="up")
    srv = standin(corpus)
    ids = corpus.identifiers()
    dest = tmp_path / "files"
    dest.mkdir()
    log = tmp_path / "upstream.jsonl"
    upstream_log(log, corpus, dest)
    kept = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    before = log.read_bytes()
    complete = before[: before.rfind(b"\n") + 1]
    source = ["--search", "collection:up"] if with_source else []

    result = iabulk(
        srv,
        "download",
        *source,
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    )
    assert result.returncode == 1, result.stderr  # item 7 failed for good, upstream
    data = log.read_bytes()
    assert data.startswith(complete), "a complete upstream record was lost"
    view = read_log(log)
    disks = DiskChecker(corpus, [dest])
    check_consistent(view, disks, set(ids))
    assert view.failed_ids == {ids[7]}
    assert all(p.stat().st_mtime_ns == m for p, m in kept.items()), "completed items redone"
    resolved_here = set(ids) if with_source else set(ids[:20])
    assert set(view.job_lines) == resolved_here
    assert view.completed_ids == resolved_here - {ids[7]}
    assert all(disks.item_intact(i) for i in resolved_here - {ids[7]})

    # The upstream engine reads the log back: iabulk's lines do not confuse it.
    sys.path.insert(0, str(Path(__file__).parent))
    from test_joblog_upstream_format import upstream_read

    upstream = upstream_read(log)
    assert upstream["status"] == {
        "total": len(resolved_here),
        "completed": len(resolved_here) - 1,
        "failed": 1,
        "pending": 0,
    }

    if not with_source:  # the rest of the search, given later, joins without doubling
        again = iabulk(
            srv,
            "download",
            "--search",
            "collection:up",
            "--joblog",
            str(log),
            "--destdir",
            str(dest),
            "--disk-margin",
            "0",
            "-q",
        )
        assert again.returncode == 1, again.stderr
        view = read_log(log)
        check_consistent(view, disks, set(ids))
        assert set(view.job_lines) == set(ids)
        assert view.completed_ids == set(ids) - {ids[7]}


# -- the soak (make soak) ------------------------------------------------------------

SOAK_KILLS = int(os.environ.get("IABULK_SOAK_KILLS", "60"))
SOAK_SEED = int(os.environ.get("IABULK_SOAK_SEED", "4242"))


@pytest.fixture(autouse=True)
def _soak_only_when_asked(request: pytest.FixtureRequest) -> None:
    """Soak tests run under ``-m soak`` (make soak), not whenever this file is named."""
    if request.node.get_closest_marker("soak") and "soak" not in (
        request.config.option.markexpr or ""
    ).replace("not soak", ""):
        pytest.skip("soak: run it with make soak (pytest -m soak)")


def soak_figures(
    harness: KillHarness, report: dict[str, Any], corpus: Corpus, srv: ArchiveStandin, title: str
) -> dict[str, Any]:
    counters = srv.counters()
    total = corpus_bytes(corpus)
    files = sum(len(corpus[i].files) + 2 for i in corpus.identifiers())
    seen = harness.seen
    figures = {
        "kills_survived": harness.stats.kills,
        "kills_by_moment": dict(harness.stats.by_mode),
        "mid_resolve_kills": harness.stats.mid_resolve,
        "torn_tails": harness.stats.torn,
        "torn_tails_repaired": harness.stats.repaired,
        "runs": harness.stats.runs + 1,
        "items": len(corpus),
        "files": files,
        "corpus_bytes": total,
        "lost": len(report["lost"]) + len(report["never_recorded"]),
        "listed_twice": len(seen.get("listed_twice", ())),
        "corrupt": len(seen.get("corrupt", ())),
        "falsely_completed": len(seen.get("falsely_completed", ())),
        "malformed_lines": len(seen.get("malformed", ())) + report["malformed_after_repair"],
        "parts_left": len(report["parts_left"]),
        "exit_code": report["exit"],
        "bytes_sent": counters["bytes_sent"],
        "redownloaded_fraction": round((counters["bytes_sent"] - total) / total, 4),
        "faults_injected": counters["faults_injected"],
    }
    print(f"\n== soak: {title} ==")
    for key, value in figures.items():
        print(f"  {key:24} {value}")
    return figures


def run_soak(harness: KillHarness, kills: int, plan: FaultPlan, pages: int) -> None:
    while harness.stats.kills < kills:
        if not read_log(harness.log).resolved:
            slow_search_plan(plan, pages)
        if not harness.kill_round():
            break  # the corpus ran out before the kills did (asserted by the caller)


@pytest.mark.soak
def test_soak_kills_large_files_redownload_little(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """>= 50 SIGKILLs over a corpus of 1-3 MiB files: nothing lost or corrupt, and
    Range resume keeps re-downloaded bytes within 5% of the corpus."""
    corpus = kill_corpus(320, large_every=1, large=(MIB, 3 * MIB), seed=SOAK_SEED)
    plan = FaultPlan(bandwidth=2_000_000, first_byte_delay=0.5)
    srv = standin(corpus, plan)
    dests = [tmp_path / "files-a", tmp_path / "files-b"]
    for d in dests:
        d.mkdir()
    harness = KillHarness(
        srv,
        corpus,
        tmp_path,
        ["--search", "collection:rk", "--search-param", "count:100"],
        ["-w", "4", "--disk-margin", "0", "-q"],
        dests,
        seed=SOAK_SEED,
        max_delay=2.5,
    )
    harness.strict = False
    run_soak(harness, SOAK_KILLS, plan, pages=4)
    report = harness.finish()
    with capsys.disabled():
        figures = soak_figures(harness, report, corpus, srv, "kills, 1-3 MiB files")
    harness.assert_clean(report)
    assert harness.stats.kills >= min(SOAK_KILLS, 50)
    assert figures["redownloaded_fraction"] <= 0.05


@pytest.mark.soak
def test_soak_kills_in_a_fault_storm(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """>= 50 SIGKILLs while the stand-in misbehaves in every way it can; a dark item
    and a forbidden file are the only permanent failures."""
    corpus = kill_corpus(360, large_every=8, large=(MIB, 2 * MIB), seed=SOAK_SEED + 1)
    corpus.add_item("rk-dark", [("x.bin", 5000)], collection="rk", dark=True)
    corpus.add_item("rk-forbidden", [("locked.bin", 5000)], collection="rk")
    rates = {
        "500": 0.01,
        "502": 0.01,
        "503": 0.02,
        "429": 0.02,
        "reset": 0.01,
        "short": 0.01,
        "flip": 0.005,
        "slow_first_byte": 0.01,
    }
    plan = StormPlan(
        seed=SOAK_SEED,
        rates=rates,
        kinds=("metadata", "redirect", "data"),
        retry_after=1,
        bandwidth=2_000_000,
        first_byte_delay=0.5,
    )
    plan.fail_first("rk-forbidden/locked.bin", ["403"] * 1000, kinds=["redirect", "data"])
    srv = standin(corpus, plan)
    dest = tmp_path / "files"
    dest.mkdir()
    harness = KillHarness(
        srv,
        corpus,
        tmp_path,
        ["--search", "collection:rk", "--search-param", "count:100"],
        ["-w", "6", "--disk-margin", "0", "-q"],
        [dest],
        seed=SOAK_SEED + 1,
        max_delay=2.5,
    )
    harness.strict = False
    run_soak(harness, SOAK_KILLS, plan, pages=4)
    expect_failed = frozenset({"rk-dark", "rk-forbidden"})
    report = harness.finish(expect_failed)
    with capsys.disabled():
        soak_figures(harness, report, corpus, srv, "kills in a fault storm")
    harness.assert_clean(report)
    assert harness.stats.kills >= min(SOAK_KILLS, 50)
    for identifier, error, retry in read_log(harness.log).failures():
        if retry is False:
            assert identifier in expect_failed, (identifier, error)


@pytest.mark.soak
def test_soak_search_pages_failing_past_the_librarys_own_retries(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = kill_corpus(250, large_every=0, large=(0, 0), seed=3, collection="sp")
    srv = standin(corpus, FaultPlan(retry_after=0).fail_search_page(2, ["502"] * 6))
    dest = tmp_path / "files"
    dest.mkdir()
    log = tmp_path / "sp.jsonl"
    result = iabulk(
        srv,
        "download",
        "--search",
        "collection:sp",
        "--search-param",
        "count:100",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-w",
        "8",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    view = read_log(log)
    check_consistent(view, DiskChecker(corpus, [dest]), set(corpus.identifiers()))
    assert view.completed_ids == set(corpus.identifiers())


def test_the_job_logs_own_disk_filling_up_stops_cleanly_and_resumes(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, small_disks: Callable[[str, str], Path]
) -> None:
    corpus = kill_corpus(200, large_every=0, large=(0, 0), seed=6, collection="ld")
    srv = standin(corpus, FaultPlan(bandwidth=500_000))
    logdisk = small_disks("logdisk", "1m")
    dest = tmp_path / "files"
    dest.mkdir()
    log = logdisk / "j.jsonl"
    args = [
        "download",
        "--search",
        "collection:ld",
        "--search-param",
        "count:100",
        "-w",
        "4",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    ]
    proc = subprocess.Popen(
        [IABULK, *args], env=srv.client_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_until(lambda: len(read_log(log).completed_ids) >= 10, 60, proc)
        fill(logdisk / "filler")
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    disks = DiskChecker(corpus, [dest])
    if proc.returncode != 0:  # (it may have finished before the disk filled)
        assert proc.returncode == 2 and "cannot write the job log" in stderr, stderr
        assert stderr.count("\n") == 1, stderr
    view = read_log(log)
    assert not view.torn
    check_consistent(view, disks, set(corpus.identifiers()))
    (logdisk / "filler").unlink()
    result = iabulk(srv, *args)
    assert result.returncode == 0, result.stderr
    view = read_log(log)
    check_consistent(view, disks, set(corpus.identifiers()))
    assert view.completed_ids == set(corpus.identifiers())


def test_a_kill_while_a_long_resolve_has_flushed_part_of_its_job_lines(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    """Job lines are batched (1 MiB); a search longer than that is killed after a
    batch reached the file and before ``resolved``: the resume adds the rest,
    nothing twice, seqs still increasing."""
    corpus = Corpus()
    for i in range(16000):
        corpus.add_item(f"long-resolve-item-{i:06d}", [("a.txt", 10)], collection="lr")
    plan = FaultPlan(first_byte_delay=0.4)
    for page in range(2, 9):
        plan.fail_search_page(page, ["slow_first_byte"])
    srv = standin(corpus, plan)
    log = tmp_path / "lr.jsonl"
    args = [
        "download",
        "--search",
        "collection:lr",
        "--search-param",
        "count:2000",
        "--joblog",
        str(log),
        "--destdir",
        str(tmp_path),
        "--disk-margin",
        "0",
        "-q",
    ]
    proc = subprocess.Popen([IABULK, *args], env=srv.client_env(), stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _size(log) > 1 << 20, 120, proc), "no batch reached the log"
        assert not read_log(log).resolved
    finally:
        proc.kill()
        proc.wait()
    partial = read_log(log)
    assert 0 < len(partial.jobs) < 16000
    proc = subprocess.Popen([IABULK, *args], env=srv.client_env(), stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: read_log(log).resolved, 120, proc)
    finally:
        proc.kill()
        proc.wait()
    view = read_log(log)
    assert not view.malformed and view.seq_order_ok
    assert set(view.job_lines) == set(corpus.identifiers())
    assert max(view.job_lines.values()) == 1
    assert sorted(view.jobs) == list(range(1, 16001))


class DoubleListing(Corpus):
    """Lists one file of an item twice in its metadata, as a hostile server may."""

    def metadata_doc(self, item: Any) -> dict[str, Any]:
        doc = super().metadata_doc(item)
        doc["files"] = [doc["files"][0], *doc["files"]]
        return doc


def test_a_file_listed_twice_in_metadata_is_fetched_once(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = DoubleListing()
    corpus.add_item("twice", [("x.bin", 2 * MIB), ("y.bin", 1000)], collection="c")
    srv = standin(corpus, FaultPlan(bandwidth=2_000_000))
    log = tmp_path / "j.jsonl"
    dest = tmp_path / "files"
    dest.mkdir()
    result = iabulk(
        srv,
        "download",
        "twice",
        "-w",
        "4",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    view = read_log(log)
    check_consistent(view, DiskChecker(corpus, [dest]), {"twice"})
    assert view.completed_ids == {"twice"}


def test_no_directories_refuses_a_file_name_another_item_already_uses(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    """With --no-directories every item shares one directory: two items with a
    cover.jpg cannot both be whole there, so one must not be recorded complete."""
    corpus = Corpus()
    corpus.add_item("nd-1", [("cover.jpg", 300_000)], collection="nd")
    corpus.add_item("nd-2", [("cover.jpg", 200_000)], collection="nd")
    srv = standin(corpus, FaultPlan(bandwidth=1_000_000))
    log = tmp_path / "j.jsonl"
    dest = tmp_path / "files"
    dest.mkdir()
    result = iabulk(
        srv,
        "download",
        "nd-1",
        "nd-2",
        "--no-directories",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    )
    view = read_log(log)
    [done] = view.completed_ids
    assert (dest / "cover.jpg").read_bytes() == corpus.read(done, "cover.jpg")
    [(failed, error, retry)] = [f for f in view.failures() if f[2] is False]
    assert failed != done and "cover.jpg" in error and retry is False
    assert result.returncode == 1, result.stderr


def test_a_kill_while_an_item_moves_to_a_disk_with_room_loses_nothing(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, small_disks: Callable[[str, str], Path]
) -> None:
    """The item's disk is full; its directory moves to another disk, and the run is
    SIGKILLed right after the first file of the move is in place."""
    corpus = Corpus()
    corpus.add_item(
        "mover", [("a.bin", 2 * MIB), ("b.bin", 2 * MIB), ("c.bin", 2 * MIB)], collection="m"
    )
    srv = standin(corpus, FaultPlan(bandwidth=2_000_000))
    full, roomy = small_disks("disk1", "12m"), small_disks("disk2", "10m")
    dests = [full / "dest", roomy / "dest"]
    for d in dests:
        d.mkdir()
    log = tmp_path / "m.jsonl"
    args = [
        IABULK,
        "download",
        "mover",
        "-w",
        "1",
        "--joblog",
        str(log),
        "--destdir",
        str(dests[0]),
        "--destdir",
        str(dests[1]),
        "--disk-margin",
        "0",
        "-q",
    ]
    proc = subprocess.Popen(args, env=srv.client_env(), stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: (dests[0] / "mover" / "a.bin").exists(), 60, proc)
    finally:
        proc.kill()
        proc.wait()
    free = os.statvfs(full).f_bavail * os.statvfs(full).f_frsize
    with open(full / "filler", "wb") as out:  # the rest no longer fits on disk1
        out.write(b"\0" * (free - MIB))
    disks = DiskChecker(corpus, dests)
    marker = tmp_path / "frozen"
    env = srv.client_env(
        PYTHONPATH=str(hook_dir(tmp_path)),
        IABULK_TEST_FREEZE_AFTER_RENAME=f"1:{marker}",
        IABULK_TEST_FREEZE_SUFFIX=".iabulk-moving",
    )
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(marker.exists, 60, proc), "the item did not move"
    finally:
        proc.kill()
        proc.wait()
    assert not disks.bad_final_files()  # every file whole wherever it is
    assert (dests[0] / "mover" / "a.bin").exists()  # the originals go only at the end
    result = subprocess.run(args, env=srv.client_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    view = read_log(log)
    check_consistent(view, disks, {"mover"})
    assert view.completed_ids == {"mover"} and disks.home("mover") == dests[1]
    assert not list(roomy.rglob("*.iabulk-moving")) and not disks.parts()


def test_no_directories_never_overwrites_another_items_file_across_runs(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    """p2 clashes with p1 and is refused without claiming anything, so p3 still
    runs; and `--retry-failed` later must not put p2's thumb over completed p1's."""
    corpus = Corpus()
    corpus.add_item("p1", [("thumb.jpg", 100)], collection="nd")
    corpus.add_item("p2", [("thumb.jpg", 200), ("two.txt", 50)], collection="nd")
    corpus.add_item("p3", [("two.txt", 60)], collection="nd")
    srv = standin(corpus)
    log, dest = tmp_path / "j.jsonl", tmp_path / "files"
    dest.mkdir()
    args = ["--no-directories", "--joblog", str(log), "--destdir", str(dest), "-w", "1"]
    first = iabulk(srv, "download", "p1", "p2", "p3", *args, "--disk-margin", "0", "-q")
    assert first.returncode == 1, first.stderr
    assert read_log(log).completed_ids == {"p1", "p3"}
    retried = iabulk(srv, "download", "--joblog", str(log), "--retry-failed", "-q")
    assert retried.returncode == 1
    assert "'thumb.jpg' is already there and is not this item's file" in retried.stderr
    assert (dest / "thumb.jpg").read_bytes() == corpus.read("p1", "thumb.jpg")
    assert (dest / "two.txt").read_bytes() == corpus.read("p3", "two.txt")
