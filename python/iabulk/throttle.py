"""How fast iabulk may go: server pushback, a bandwidth cap, adaptive concurrency.

archive.org asks bulk clients to start slowly, ramp up, and back off when
told. Three shared objects carry that for every transfer thread:

- :class:`RateGate`: after a 429/503 the gate is closed for ``Retry-After``
  and every request waits at it, so the whole run slows, not one thread.
- :class:`AdaptiveLimit`: transfers in flight start low and grow by one per
  quiet interval up to ``-w``; each 429/503 halves them (AIMD).
- :class:`TokenBucket`: ``--limit-rate``, a total byte rate across all
  transfers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateGate", "AdaptiveLimit", "TokenBucket", "parse_rate"]

Clock = Callable[[], float]


class RateGate:
    """A shared pause: closed for a while after a 429/503, waited at by every request."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._open_at = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self.closures = 0

    def close_for(self, seconds: float) -> None:
        with self._lock:
            self._open_at = max(self._open_at, self._clock() + seconds)
            self.closures += 1

    def remaining(self) -> float:
        return max(0.0, self._open_at - self._clock())

    def wait(self, cancel: threading.Event) -> None:
        """Block until the gate is open (or the run is cancelled)."""
        while (left := self.remaining()) > 0 and not cancel.is_set():
            cancel.wait(min(left, 0.5))


class AdaptiveLimit:
    """Concurrent transfers allowed: slow start, then AIMD, like TCP.

    Starts at ``start`` and doubles after every ``ramp_seconds`` that passed
    with no pushback and no failed transfer, up to ``maximum``: when a
    transfer ends well, or, until the first pushback, while one is under way
    and another waits for a permit (so a run of large files ramps up before
    its first file ends). After the first :meth:`pushback` (a 429/503) it
    halves and from then on grows by one per quiet interval, only as
    transfers end well (a permit held by a request waiting out a
    ``Retry-After`` is no sign of room). Pushbacks within one interval of the
    last counted one count once, so a burst of 429s from many threads halves
    the level once.
    """

    def __init__(
        self,
        maximum: int,
        start: int = 2,
        ramp_seconds: float = 1.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[int, int, str], None] | None = None,
    ) -> None:
        self.on_change = on_change
        self.maximum = maximum
        self.current = max(1, min(start, maximum))
        self.ramp_seconds = ramp_seconds
        self.pushbacks = 0
        self._clock = clock
        self._in_use = 0
        self._slow_start = True
        self._last_change = clock()
        self._last_failure = -float("inf")
        self._last_pushback = -float("inf")
        self._cond = threading.Condition()

    def acquire(self, cancel: threading.Event) -> bool:
        """Wait for a permit; False if cancelled first."""
        level = 0
        with self._cond:
            while self._in_use >= self.current:
                if cancel.is_set():
                    return False
                grown = self._grow() if self._in_use and self._slow_start else 0
                if grown:
                    level = grown
                else:
                    self._cond.wait(0.2)
            self._in_use += 1
        self._announce(level)
        return True

    def release(self, succeeded: bool) -> None:
        with self._cond:
            self._in_use -= 1
            if not succeeded:
                self._last_failure = self._clock()
            grown = self._grow() if succeeded else 0
            self._cond.notify_all()
        self._announce(grown)

    def _grow(self) -> int:
        """Raise the level after a quiet interval (``_cond`` held); the new level, or 0."""
        now = self._clock()
        quiet = min(now - self._last_change, now - self._last_failure)
        if self.current >= self.maximum or quiet < self.ramp_seconds:
            return 0
        grown = self.current * 2 if self._slow_start else self.current + 1
        self.current = min(self.maximum, grown)
        self._last_change = now
        return self.current

    def _announce(self, level: int) -> None:
        if level and self.on_change is not None:
            self.on_change(level, self.maximum, "ramping up")

    def pushback(self) -> None:
        with self._cond:
            now = self._clock()
            if now - self._last_pushback < self.ramp_seconds:
                return  # the same burst
            self._slow_start = False
            self.current = max(1, self.current // 2)
            self._last_change = self._last_pushback = now
            self.pushbacks += 1
            level = self.current
        if self.on_change is not None:
            self.on_change(level, self.maximum, "server asked to slow down")


class TokenBucket:
    """A total byte rate shared by all transfers (``--limit-rate``).

    Each chunk books the next ``nbytes / rate`` seconds of a shared
    timeline; a transfer sleeps until its booking comes due, so threads
    share the rate instead of each paying the whole debt. Up to ``burst``
    bytes may run ahead of the timeline.
    """

    def __init__(self, rate: float, clock: Clock = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(64 * 1024, rate / 10)
        self._clock = clock
        self._due = clock()
        self._lock = threading.Lock()

    def chunk_size(self, default: int) -> int:
        """A read size that keeps the rate smooth (about ten reads a second)."""
        return max(16 * 1024, min(default, int(self.rate / 10)))

    def consume(self, nbytes: int, cancel: threading.Event) -> None:
        """Account for ``nbytes`` received; sleep while ahead of the rate."""
        with self._lock:
            now = self._clock()
            self._due = max(self._due, now) + nbytes / self.rate
            wait = self._due - now - self.burst / self.rate
        if wait > 0:
            cancel.wait(wait)


def parse_rate(text: str) -> float:
    """``"10M"``, ``"500K"``, ``"1.5M/s"`` → bytes per second."""
    from iabulk.disk import parse_size

    value = text.strip()
    if value.lower().endswith("/s"):
        value = value[:-2]
    rate = parse_size(value)
    if rate <= 0:
        raise ValueError(f"not a rate: {text!r}")
    return float(rate)
