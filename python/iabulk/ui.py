"""What a run shows: progress bars on a terminal, plain lines in a pipe, or nothing.

All three are engine observers. Per-chunk progress never reaches them: a
background thread samples the :class:`~iabulk.progress.TransferBoard` a few
times a second, so the display costs nothing measurable however fast the
transfers go. Errors always go to stderr, even with ``--quiet``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from iabulk.progress import TransferBoard
from iabulk.workers.base import WorkerResult

__all__ = ["make_ui", "BarsUI", "LinesUI", "QuietUI", "human_bytes", "visible"]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def visible(text: str, limit: int = 0) -> str:
    """``text`` safe for one terminal line: control characters (a newline or an
    escape sequence in a file name from metadata) shown as escapes, and cut
    to ``limit`` characters if given."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Rate:
    """Bytes per second over the last ~10 s of samples, from ``start``."""

    def __init__(self, start: float) -> None:
        self._samples: deque[tuple[float, int]] = deque([(start, 0)], maxlen=40)

    def update(self, now: float, total: int) -> float:
        self._samples.append((now, total))
        t0, b0 = self._samples[0]
        while len(self._samples) > 2 and now - t0 > 10:
            self._samples.popleft()
            t0, b0 = self._samples[0]
        return (total - b0) / (now - t0) if now > t0 else 0.0


class _BaseUI:
    """Counts outcomes; subclasses decide what to show."""

    refresh_seconds = 0.25

    def __init__(
        self,
        board: TransferBoard,
        total: int,
        stream: TextIO,
        level: Callable[[], str] | None = None,
    ) -> None:
        self.level = level or (lambda: "")
        self.board = board
        self.total = total
        self.stream = stream
        self.done = 0
        self.failed = 0
        self.started_at = time.monotonic()
        self._rate = _Rate(self.started_at)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="iabulk-ui", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.refresh(final=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def refresh(self, final: bool = False) -> None:
        pass

    def speed(self) -> float:
        return self._rate.update(time.monotonic(), self.board.bytes_transferred)

    # engine observer
    def job_started(self, job: dict[str, Any], slot: int) -> None:
        pass

    def job_finished(self, job: dict[str, Any], result: WorkerResult, outcome: str) -> None:
        with self._lock:
            if outcome == "completed":
                self.done += 1
            elif outcome == "failed":
                self.done += 1
                self.failed += 1
        if outcome == "failed":
            self.error(f"failed {result.identifier}: {result.error}")

    def paused(self, seconds: float, reason: str) -> None:
        pass

    def error(self, text: str) -> None:
        self.stream.write(f"iabulk: {visible(text)}\n")
        self.stream.flush()

    def info(self, text: str) -> None:
        pass

    def abandon(self) -> None:
        """Leave the display as it stands, at once (a second Ctrl-C): only
        make sure the shell's prompt will not land inside it."""


class QuietUI(_BaseUI):
    """Nothing but errors."""


class LinesUI(_BaseUI):
    """Timestamped lines for logs and pipes: one per item, a summary every 10 s."""

    refresh_seconds = 10.0

    def info(self, text: str) -> None:
        self.stream.write(f"{_stamp()} {visible(text)}\n")
        self.stream.flush()

    def error(self, text: str) -> None:
        self.info(f"error: {text}")

    def job_finished(self, job: dict[str, Any], result: WorkerResult, outcome: str) -> None:
        super().job_finished(job, result, outcome)
        if outcome == "completed":
            size = result.extra.get("item_size", 0)
            self.info(f"completed {result.identifier} ({human_bytes(size)})")
        elif outcome in ("retry", "backoff"):
            self.info(f"will retry {result.identifier}: {result.error}")

    def paused(self, seconds: float, reason: str) -> None:
        self.info(f"pausing new work for {seconds:.0f} s: {reason}")

    def refresh(self, final: bool = False) -> None:
        if final:
            return
        self.info(
            f"progress: {self.done}/{self.total} items, "
            f"{human_bytes(self.board.bytes_transferred)}, {human_bytes(self.speed())}/s, "
            f"transfers {self.level()}"
        )


class BarsUI(_BaseUI):
    """tqdm bars: one for the run, one per transfer slot."""

    def __init__(
        self,
        board: TransferBoard,
        total: int,
        stream: TextIO,
        level: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(board, total, stream, level)
        from tqdm import tqdm

        self._overall = tqdm(
            total=total,
            unit="item",
            file=stream,
            position=0,
            dynamic_ncols=True,
            leave=True,
            desc="items",
        )
        self._bars = [
            tqdm(
                total=0,
                file=stream,
                position=i + 1,
                dynamic_ncols=True,
                leave=False,
                bar_format="{desc}",
                desc=f"  [{i}] idle",
            )
            for i in range(len(board.slots))
        ]

    def error(self, text: str) -> None:
        self._overall.write(f"iabulk: {visible(text)}", file=self.stream)

    def info(self, text: str) -> None:
        self._overall.write(visible(text), file=self.stream)

    def abandon(self) -> None:
        # The cursor rests on the top bar: step below the bars, raw, as a
        # signal handler may interrupt tqdm half-way through a write.
        with contextlib.suppress(OSError, ValueError):
            os.write(self.stream.fileno(), b"\n" * (len(self._bars) + 1))

    def paused(self, seconds: float, reason: str) -> None:
        self.info(f"pausing new work for {seconds:.0f} s: {reason}")

    def refresh(self, final: bool = False) -> None:
        with self._lock:
            done = self.done
        speed = self.speed()
        self._overall.n = done
        self._overall.set_postfix_str(
            f"{human_bytes(self.board.bytes_transferred)}, {human_bytes(speed)}/s, "
            f"transfers {self.level()}",
            refresh=False,
        )
        self._overall.refresh()
        for bar, slot in zip(self._bars, self.board.slots):
            if slot.identifier:
                size = f"/{human_bytes(slot.size)}" if slot.size else ""
                name = visible(f"{slot.identifier}/{slot.name}")
                if len(name) > 60:
                    name = "…" + name[-59:]
                bar.set_description_str(
                    f"  [{slot.index}] {name} {human_bytes(slot.done)}{size}", refresh=False
                )
            else:
                bar.set_description_str(f"  [{slot.index}] idle", refresh=False)
            bar.refresh()
        if final:
            for bar in self._bars:
                bar.close()
            self._overall.close()


def make_ui(
    board: TransferBoard,
    total: int,
    quiet: bool,
    stream: TextIO | None = None,
    level: Callable[[], str] | None = None,
) -> _BaseUI:
    """Bars on a terminal, lines otherwise, errors only with ``quiet``."""
    out = stream or sys.stderr
    if quiet:
        return QuietUI(board, total, out, level)
    if out.isatty() and os.environ.get("TERM") != "dumb":
        return BarsUI(board, total, out, level)
    return LinesUI(board, total, out, level)
