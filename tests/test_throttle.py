"""The shared brakes: rate gate, adaptive concurrency, token bucket (with a fake clock)."""

from __future__ import annotations

import threading
import time

from iabulk.throttle import AdaptiveLimit, RateGate, TokenBucket, parse_rate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_gate_closes_for_retry_after_and_never_shortens() -> None:
    clock = Clock()
    gate = RateGate(clock)
    gate.close_for(10)
    gate.close_for(2)
    assert gate.remaining() == 10
    clock.now += 10
    assert gate.remaining() == 0


def test_limit_slow_starts_then_halves_then_grows_by_one() -> None:
    clock = Clock()
    limit = AdaptiveLimit(16, start=2, ramp_seconds=1.0, clock=clock)
    never = threading.Event()
    levels = []
    for _ in range(4):
        clock.now += 1
        assert limit.acquire(never)
        limit.release(True)
        levels.append(limit.current)
    assert levels == [4, 8, 16, 16]
    limit.pushback()
    limit.pushback()  # the same burst: counted once
    assert limit.current == 8 and limit.pushbacks == 1
    clock.now += 1
    limit.acquire(never)
    limit.release(True)
    assert limit.current == 9


def test_limit_ramps_up_while_long_transfers_run() -> None:
    """Large files: no transfer ends for a while, yet a quiet second still doubles the level."""
    clock = Clock()
    limit = AdaptiveLimit(8, start=2, ramp_seconds=1.0, clock=clock)
    never = threading.Event()
    assert limit.acquire(never) and limit.acquire(never)
    third = threading.Thread(target=limit.acquire, args=(never,))
    third.start()
    third.join(0.5)
    assert third.is_alive() and limit.current == 2  # less than a second: it waits
    clock.now += 1
    third.join(5)
    assert not third.is_alive() and limit.current == 4


def test_every_burst_of_pushbacks_halves_while_requests_wait_at_the_gate() -> None:
    """Permits held by requests waiting out a Retry-After are no sign of room:
    after the first pushback the level grows only as transfers end well."""
    clock = Clock()
    limit = AdaptiveLimit(16, start=16, ramp_seconds=1.0, clock=clock)
    never = threading.Event()
    for _ in range(16):
        assert limit.acquire(never)
    waiter = threading.Thread(target=limit.acquire, args=(never,), daemon=True)
    waiter.start()
    levels = []
    for _ in range(4):
        limit.pushback()
        clock.now += 2
        time.sleep(0.3)  # the waiter polls: it must not grow the level back
        levels.append(limit.current)
    assert levels == [8, 4, 2, 1] and limit.pushbacks == 4
    assert waiter.is_alive()


def test_a_failed_transfer_holds_the_level() -> None:
    clock = Clock()
    limit = AdaptiveLimit(8, start=2, ramp_seconds=1.0, clock=clock)
    never = threading.Event()
    assert limit.acquire(never) and limit.acquire(never)
    clock.now += 1
    limit.release(False)
    assert limit.acquire(never)  # the freed permit, no growth
    cancel = threading.Event()
    cancel.set()
    assert not limit.acquire(cancel) and limit.current == 2
    clock.now += 1
    limit.release(True)
    assert limit.current == 4


def test_limit_blocks_beyond_current_and_honours_cancel() -> None:
    limit = AdaptiveLimit(4, start=1, clock=Clock())
    cancel = threading.Event()
    assert limit.acquire(cancel)
    cancel.set()
    assert limit.acquire(cancel) is False


def test_bucket_books_a_shared_timeline() -> None:
    clock = Clock()
    bucket = TokenBucket(1000.0, clock)  # burst: 64 KiB, i.e. 65.536 s ahead
    slept = []

    class Recorder(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            slept.append(timeout)
            return False

    bucket.consume(65_536, Recorder())  # the burst: no wait
    bucket.consume(500, Recorder())  # beyond it: half a second
    bucket.consume(500, Recorder())  # another thread, booked after the first
    assert slept == [0.5, 1.0]


def test_parse_rate() -> None:
    assert parse_rate("10M") == 10 * 2**20
    assert parse_rate("500K/s") == 500 * 1024
