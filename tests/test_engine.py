"""The engine over a scripted worker: outcomes, retries, backoff, concurrency, stop.

These are unit tests of the engine's logic with a real job log on disk; the
download path over real sockets is covered by test_download.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from iabulk import BaseWorker, BulkEngine, JobLog, StopRun, WorkerResult


class Scripted(BaseWorker):
    """Returns, per identifier, the next scripted result (success when the script runs out)."""

    def __init__(self, script: dict[str, list[WorkerResult]] | None = None, delay: float = 0.0):
        self.script = defaultdict(list, script or {})
        self.delay = delay
        self.calls: list[str] = []
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
        with self.lock:
            self.calls.append(job["id"])
            self.active += 1
            self.peak = max(self.peak, self.active)
            planned = self.script[job["id"]].pop(0) if self.script[job["id"]] else None
        try:
            if self.delay:
                cancel_event.wait(self.delay)
            if cancel_event.is_set():
                return WorkerResult(False, job["id"], error="cancelled")
            return planned or WorkerResult(True, job["id"], extra={"item_size": 10})
        finally:
            with self.lock:
                self.active -= 1


def make_log(tmp_path: Path, n: int) -> JobLog:
    log = JobLog(tmp_path / "jobs.jsonl")
    for seq in range(1, n + 1):
        log.write_job(seq, f"item-{seq}", "download")
    log.sync()
    return log


def events(log: JobLog) -> list[dict[str, Any]]:
    with open(log.path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if '"event":"job"' not in line]


def run(log: JobLog, worker: BaseWorker, **kwargs: Any) -> Any:
    kwargs.setdefault("backoff_base", 0.01)
    engine = BulkEngine(log, worker, **kwargs)
    return engine, engine.run(log.snapshot().pending_jobs)


def test_every_job_completes_and_is_logged(tmp_path: Path) -> None:
    log = make_log(tmp_path, 25)
    _, summary = run(log, Scripted(), workers=4)
    assert summary.completed == 25 and summary.exit_code == 0
    assert log.status() == {"total": 25, "completed": 25, "failed": 0, "pending": 0}
    completed = [e for e in events(log) if e["event"] == "completed"]
    assert sorted(e["seq"] for e in completed) == list(range(1, 26))
    assert all(e["extra"] == {"item_size": 10} for e in completed)


def test_transient_failure_is_retried_and_logged_with_attempt(tmp_path: Path) -> None:
    log = make_log(tmp_path, 1)
    worker = Scripted({"item-1": [WorkerResult(False, "item-1", error="HTTP 500")] * 2})
    _, summary = run(log, worker, workers=1, retries=3)
    assert summary.completed == 1 and summary.retried == 2
    kinds = [(e["event"], e.get("retry")) for e in events(log) if e["event"] != "started"]
    assert kinds == [("failed", 1), ("failed", 2), ("completed", None)]


def test_retries_exhausted_become_a_permanent_failure(tmp_path: Path) -> None:
    log = make_log(tmp_path, 1)
    worker = Scripted({"item-1": [WorkerResult(False, "item-1", error="HTTP 500")] * 5})
    _, summary = run(log, worker, workers=1, retries=2)
    assert summary.failed == 1 and summary.exit_code == 1
    failures = [e for e in events(log) if e["event"] == "failed"]
    assert [e["retry"] for e in failures] == [1, 2, False]
    assert log.status()["failed"] == 1


def test_permanent_failure_is_not_retried(tmp_path: Path) -> None:
    log = make_log(tmp_path, 2)
    worker = Scripted(
        {"item-1": [WorkerResult(False, "item-1", error="item is dark", retry=False)]}
    )
    _, summary = run(log, worker, workers=2, retries=3)
    assert worker.calls.count("item-1") == 1
    assert summary.failed == 1 and summary.completed == 1


def test_backoff_pauses_without_using_up_retries(tmp_path: Path) -> None:
    log = make_log(tmp_path, 1)
    limited = WorkerResult(False, "item-1", error="HTTP 429", backoff=True, backoff_seconds=0.05)
    worker = Scripted({"item-1": [limited] * 4})
    started = time.monotonic()
    _engine, summary = run(log, worker, workers=1, retries=0)
    assert summary.completed == 1 and summary.backoffs == 4
    assert time.monotonic() - started >= 0.2  # four pauses of 0.05 s were honoured
    assert all(e.get("backoff") for e in events(log) if e["event"] == "failed")


def test_concurrency_is_capped_at_workers(tmp_path: Path) -> None:
    log = make_log(tmp_path, 24)
    worker = Scripted(delay=0.05)
    run(log, worker, workers=4)
    assert worker.peak == 4


def test_worker_exception_is_a_retryable_failure(tmp_path: Path) -> None:
    class Broken(Scripted):
        def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
            if not self.calls:
                self.calls.append(job["id"])
                raise RuntimeError("boom")
            return super().execute(job, cancel_event)

    log = make_log(tmp_path, 1)
    _, summary = run(log, Broken(), workers=1)
    assert summary.completed == 1
    failed = [e for e in events(log) if e["event"] == "failed"]
    assert failed and "internal error" in failed[0]["error"] and "boom" in failed[0]["error"]


def test_stop_run_ends_the_run_and_leaves_the_job_pending(tmp_path: Path) -> None:
    class Unwritable(Scripted):
        def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
            if job["id"] == "item-3":
                raise StopRun("destination /x cannot be written: Read-only file system")
            return super().execute(job, cancel_event)

    log = make_log(tmp_path, 10)
    with pytest.raises(StopRun, match="Read-only"):
        run(log, Unwritable(delay=0.01), workers=2)
    outcomes = {e["seq"]: e["event"] for e in events(log) if e["event"] != "started"}
    assert 3 not in outcomes  # no outcome: the next run does it again
    assert set(outcomes.values()) <= {"completed"}
    assert log.status()["pending"] == 10 - len(outcomes) >= 1


def test_started_lines_reach_the_file_while_jobs_run(tmp_path: Path) -> None:
    """`iabulk status` reads the file: jobs in flight must show there long
    before they finish."""
    log = make_log(tmp_path, 2)
    engine = BulkEngine(log, Scripted(delay=30), workers=2)
    running = threading.Thread(target=engine.run, args=(log.snapshot().pending_jobs,))
    running.start()
    try:
        deadline = time.monotonic() + 20
        while Path(log.path).read_text().count('"event":"started"') < 2:
            assert time.monotonic() < deadline, "started lines never reached the file"
            time.sleep(0.05)
    finally:
        engine.request_stop()
        running.join()


class Outage(Scripted):
    """The first ``down`` calls fail, whatever the job (the link is down); then all succeed."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
        with self.lock:
            self.down -= 1
            failing = self.down >= 0
        if failing:
            return WorkerResult(False, job["id"], error="connection error")
        return super().execute(job, cancel_event)


def test_an_outage_pauses_instead_of_using_up_retries(tmp_path: Path) -> None:
    log = make_log(tmp_path, 6)
    _, summary = run(log, Outage(down=20), workers=2, retries=1, backoff_cap=0.05)
    assert summary.completed == 6 and summary.failed == 0 and summary.backoffs > 0
    assert log.status()["completed"] == 6


def test_without_patience_an_outage_uses_up_retries_as_before(tmp_path: Path) -> None:
    log = make_log(tmp_path, 6)
    _, summary = run(log, Outage(down=20), workers=2, retries=1, outage_patience=-1)
    assert summary.failed == 6 and summary.backoffs == 0


def test_one_failing_job_among_successes_is_no_outage(tmp_path: Path) -> None:
    log = make_log(tmp_path, 8)
    worker = Scripted({"item-3": [WorkerResult(False, "item-3", error="HTTP 500")] * 9})
    _, summary = run(log, worker, workers=2, retries=2)
    assert summary.failed == 1 and summary.completed == 7 and summary.backoffs == 0


def test_stop_leaves_cut_short_jobs_pending(tmp_path: Path) -> None:
    log = make_log(tmp_path, 10)
    worker = Scripted(delay=30)
    engine = BulkEngine(log, worker, workers=3)
    threading.Timer(0.3, engine.request_stop).start()
    started = time.monotonic()
    summary = engine.run(log.snapshot().pending_jobs)
    assert time.monotonic() - started < 10
    assert summary.interrupted and summary.exit_code == 130
    snap = log.snapshot()
    assert snap.pending == 10 and snap.in_flight == 3
    assert not [e for e in events(log) if e["event"] in ("completed", "failed")]


class Deaf(BaseWorker):
    """Ignores the cancel event, as a request blocked on a silent server does,
    until :meth:`interrupt` cuts it short."""

    def __init__(self) -> None:
        self.cut = threading.Event()
        self.interrupts = 0

    def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
        self.cut.wait(60)
        return WorkerResult(False, job["id"], error="connection shut")

    def interrupt(self) -> None:
        self.interrupts += 1
        self.cut.set()


def test_jobs_deaf_to_a_stop_are_interrupted_and_left_pending(tmp_path: Path) -> None:
    log = make_log(tmp_path, 4)
    worker = Deaf()
    engine = BulkEngine(log, worker, workers=2)
    threading.Timer(0.3, engine.request_stop).start()
    summary = engine.run(log.snapshot().pending_jobs)
    assert worker.interrupts >= 1
    assert summary.interrupted
    assert log.snapshot().pending == 4  # cut short by the stop: no outcome recorded
    assert not [e for e in events(log) if e["event"] in ("completed", "failed")]


def test_jobs_that_end_by_themselves_are_not_interrupted(tmp_path: Path) -> None:
    log = make_log(tmp_path, 10)
    worker = Scripted(delay=30)
    worker.interrupt = lambda: pytest.fail("interrupted")  # type: ignore[method-assign]
    engine = BulkEngine(log, worker, workers=3)
    threading.Timer(0.3, engine.request_stop).start()
    assert engine.run(log.snapshot().pending_jobs).interrupted


def test_bad_worker_counts_are_refused(tmp_path: Path) -> None:
    log = make_log(tmp_path, 1)
    with pytest.raises(ValueError):
        BulkEngine(log, Scripted(), workers=0)
    with pytest.raises(ValueError):
        BulkEngine(log, Scripted(), workers=1000)
    with pytest.raises(ValueError):
        BulkEngine(log, Scripted(), retries=-1)


class Sloppy(Scripted):
    """Returns what the log cannot hold for ``bad-*`` jobs, and None for ``none-*``."""

    def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
        if job["id"].startswith("none"):
            return None  # type: ignore[return-value]
        if job["id"].startswith("bad"):
            return WorkerResult(True, job["id"], extra={"rate": float("nan")})
        return super().execute(job, cancel_event)


def test_a_result_the_log_cannot_hold_fails_its_job_and_the_run_goes_on(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "jobs.jsonl")
    for seq, ident in enumerate(["ok-1", "bad-1", "none-1", "ok-2"], 1):
        log.write_job(seq, ident, "download")
    log.sync()
    _, summary = run(log, Sloppy(), workers=2, retries=0)
    assert summary.completed == 2 and summary.failed == 2
    failed = {e["seq"]: e["error"] for e in events(log) if e["event"] == "failed"}
    assert "not recordable" in failed[2] and "NoneType" in failed[3]
    assert log.snapshot().malformed == 0


class BadItems(Scripted):
    """Jobs named ``bad-*`` fail every time, by their own fault (a wrong md5)."""

    def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
        if job["id"].startswith("bad"):
            return WorkerResult(False, job["id"], error="md5 mismatch", item_fault=True)
        return super().execute(job, cancel_event)


def test_items_failing_by_their_own_fault_are_no_outage(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "jobs.jsonl")
    for seq in range(1, 11):
        log.write_job(seq, f"bad-{seq}" if seq > 7 else f"ok-{seq}", "download")
    log.sync()
    _, summary = run(log, BadItems(), workers=3, retries=1, backoff_cap=30)
    assert summary.completed == 7 and summary.failed == 3 and summary.backoffs == 0
    assert not [e for e in events(log) if e.get("backoff")]
