"""The bulk engine: N workers over a stream of jobs, every outcome logged.

The engine knows nothing about what a job does. It hands each job to a
:class:`~iabulk.workers.base.BaseWorker`, records ``started`` (buffered: on
the file within :data:`FLUSH_SECONDS`, durable with the next outcome) and
the outcome (durable, before acting on it), retries failures with
exponential backoff and jitter, and pauses all new submissions when a worker
asks it to (rate limiting, full disks) without counting that against the
job's retries.

Outages: when the last :data:`OUTAGE_JOBS` different jobs to finish all
failed (retryably) and nothing succeeded in between, the trouble is the
link or the server, not the items: further failures pause the run (2, 4, 8 s
… up to ``backoff_cap``) and put the job back without using up a retry, so
an hour of network trouble does not turn every item into a permanent
failure. After ``outage_patience`` seconds without a single success, failures
count against retries again, so a run that can never succeed still ends.

Stopping: :meth:`BulkEngine.request_stop` (the first Ctrl-C) stops new
submissions and sets the cancel event every worker watches; jobs cut short
are left without an outcome, so the next run picks them up again.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from iabulk.joblog import JobLog, UnrecordableError
from iabulk.workers.base import BaseWorker, StopRun, WorkerResult

__all__ = ["BulkEngine", "RunSummary", "EngineObserver", "MAX_WORKERS"]

MAX_WORKERS = 64
"""More concurrent jobs than this only gets a client blocked by archive.org."""

FLUSH_SECONDS = 0.5
"""How stale the log on disk may be for ``status``: buffered lines wait at most this long."""

INTERRUPT_AFTER = 1.0
"""Seconds after a stop before the worker is asked to cut short what is still
running: what notices the stop by itself has ended by then."""

OUTAGE_JOBS = 3
"""Different jobs failing in a row, with no success between, that make an outage."""


def _internal_error(job: dict[str, Any], why: str) -> WorkerResult:
    """A worker bug, recorded as a failure of its job; retried, never an outage."""
    return WorkerResult(False, str(job.get("id")), error=f"internal error: {why}", item_fault=True)


class EngineObserver(Protocol):
    """What the engine tells the UI. Called from worker threads."""

    def job_started(self, job: dict[str, Any], slot: int) -> None: ...
    def job_finished(self, job: dict[str, Any], result: WorkerResult, outcome: str) -> None: ...
    def paused(self, seconds: float, reason: str) -> None: ...


class _SilentObserver:
    def job_started(self, job: dict[str, Any], slot: int) -> None:
        pass

    def job_finished(self, job: dict[str, Any], result: WorkerResult, outcome: str) -> None:
        pass

    def paused(self, seconds: float, reason: str) -> None:
        pass


@dataclass
class RunSummary:
    """What one run did. ``exit_code``: 0 all done, 1 failures, 130 interrupted."""

    completed: int = 0
    failed: int = 0
    retried: int = 0
    backoffs: int = 0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


@dataclass(order=True)
class _Queued:
    ready_at: float
    order: int
    attempt: int
    job: dict[str, Any]


class BulkEngine:
    """Runs jobs with ``workers`` threads, recording every outcome in ``joblog``."""

    def __init__(
        self,
        joblog: JobLog,
        worker: BaseWorker,
        workers: int = 4,
        retries: int = 3,
        observer: EngineObserver | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        outage_patience: float = 3600.0,
    ) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, not {workers}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        self.joblog = joblog
        self.worker = worker
        self.workers = workers
        self.retries = retries
        self.observer: EngineObserver = observer or _SilentObserver()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.clock = clock
        self.cancel_event = threading.Event()
        self.summary = RunSummary()
        self._cond = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        self._free_slots = list(range(workers - 1, -1, -1))
        self._retry_queue: list[_Queued] = []
        self._order = itertools.count()
        self._paused_until = 0.0
        self._consecutive_backoffs = 0
        self._fatal: BaseException | None = None
        self.outage_patience = outage_patience
        self._failing: set[int] = set()  # jobs failed since the last success
        self._last_success = clock()
        self._outage_level = 0

    # -- control -----------------------------------------------------------

    def request_stop(self) -> None:
        """Stop submitting and cancel what runs; safe from a signal handler."""
        self._stopping = True
        self.cancel_event.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def pause(self, seconds: float, reason: str) -> None:
        """Hold new submissions for ``seconds`` (extends, never shortens, a pause)."""
        with self._cond:
            self._paused_until = max(self._paused_until, self.clock() + seconds)
            self._cond.notify_all()
        self.observer.paused(seconds, reason)

    # -- the run -----------------------------------------------------------

    def run(self, jobs: Iterable[dict[str, Any]]) -> RunSummary:
        """Run every job of ``jobs`` (a lazy iterable is read as slots free up)."""
        self._source: Iterator[dict[str, Any]] | None = iter(jobs)
        done = threading.Event()
        flusher = threading.Thread(target=self._flush_until, args=(done,), daemon=True)
        flusher.start()
        try:
            self._submit_all()
        finally:
            done.set()
            flusher.join()
        if self._fatal is not None:
            raise self._fatal
        self.joblog.sync()  # the buffered `started` lines, for `status`
        self.joblog.check_in_place()
        self.summary.interrupted = self._stopping
        return self.summary

    def _flush_until(self, done: threading.Event) -> None:
        """Write the queued ``started`` lines every half second, unsynced, so that
        ``iabulk status`` sees the jobs in flight while long transfers run."""
        while not done.wait(FLUSH_SECONDS):
            try:
                self.joblog.flush()
            except OSError:
                return  # the next durable write reports it, and stops the run
            try:
                self.joblog.check_in_place()
            except OSError as exc:  # writes still succeed, to a file no one will read
                with self._cond:
                    if self._fatal is None:
                        self._fatal = exc
                self.request_stop()
                return

    def _submit_all(self) -> None:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="iabulk-job") as pool:
            while (picked := self._next_job()) is not None:
                attempt, job = picked
                with self._cond:
                    self._in_flight += 1
                    slot = self._free_slots.pop()
                pool.submit(self._run_job, job, attempt, slot)
            stopped_at: float | None = None
            while True:
                with self._cond:
                    if not self._in_flight:
                        break
                    self._cond.wait(0.2)
                if self._stopping:
                    stopped_at = stopped_at or time.monotonic()
                    if time.monotonic() - stopped_at >= INTERRUPT_AFTER:
                        self.worker.interrupt()

    def _next_job(self) -> tuple[int, dict[str, Any]] | None:
        """The next (attempt, job) to submit, waiting for a slot; None when all is done."""
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return None
                    now = self.clock()
                    if self._in_flight >= self.workers:
                        self._cond.wait(0.5)
                    elif self._paused_until > now:
                        self._cond.wait(min(0.5, self._paused_until - now))
                    elif self._retry_queue and self._retry_queue[0].ready_at <= now:
                        queued = heapq.heappop(self._retry_queue)
                        return queued.attempt, queued.job
                    elif self._source is not None:
                        break
                    elif self._retry_queue:
                        self._cond.wait(min(0.5, self._retry_queue[0].ready_at - now))
                    elif self._in_flight:
                        self._cond.wait(0.5)
                    else:
                        return None
            # Reading the next pending job may touch the disk: not under the lock.
            job = next(self._source, None)
            if job is not None:
                return 1, job
            self._source = None

    def _run_job(self, job: dict[str, Any], attempt: int, slot: int) -> None:
        try:
            self.joblog.note_event("started", job["seq"], worker=slot)
            self.observer.job_started(job, slot)
            try:
                result = self.worker.execute(job, self.cancel_event)
                if not isinstance(result, WorkerResult):
                    raise TypeError(f"the worker returned {type(result).__name__}, not a result")
            except StopRun:
                raise
            except Exception as exc:  # a worker bug must not take the run down
                result = _internal_error(job, repr(exc))
            try:
                self._record(job, attempt, result)
            except UnrecordableError as exc:  # refused before its line was written
                self._record(job, attempt, _internal_error(job, f"result not recordable: {exc}"))
        except BaseException as exc:  # the log cannot be written, or StopRun: stop everything
            with self._cond:
                if self._fatal is None:
                    self._fatal = exc
            self.request_stop()
        finally:
            with self._cond:
                self._in_flight -= 1
                self._free_slots.append(slot)
                self._cond.notify_all()

    def _record(self, job: dict[str, Any], attempt: int, result: WorkerResult) -> None:
        seq = job["seq"]
        if result.success:
            self.joblog.write_event("completed", seq, extra=result.extra)
            with self._cond:
                self.summary.completed += 1
                self._consecutive_backoffs = 0
                self._failing.clear()
                self._last_success = self.clock()
                self._outage_level = 0
            self.observer.job_finished(job, result, "completed")
            return
        if self.cancel_event.is_set():
            # Cut short by a stop: no outcome, so the next run starts it again.
            self.observer.job_finished(job, result, "cancelled")
            return
        error = result.error or "unknown error"
        if result.backoff:
            with self._cond:
                self._consecutive_backoffs += 1
                self.summary.backoffs += 1
                doubling = self._consecutive_backoffs
            seconds = result.backoff_seconds
            if seconds is None:
                seconds = min(self.backoff_cap, self.backoff_base * 2 ** min(doubling, 16))
            self.joblog.write_event("failed", seq, error=error, retry=attempt, backoff=True)
            self.pause(seconds, error)
            self._requeue(job, attempt, self._paused_until)
            self.observer.job_finished(job, result, "backoff")
        elif result.retry and not result.item_fault and self._in_outage(seq):
            with self._cond:
                if self.clock() >= self._paused_until:  # the first failure since a pause
                    self._outage_level += 1
                level = self._outage_level
                self.summary.backoffs += 1
            seconds = min(self.backoff_cap, self.backoff_base * 2 ** min(level, 16))
            self.joblog.write_event("failed", seq, error=error, retry=attempt, backoff=True)
            self.pause(seconds, f"every job is failing ({error})")
            self._requeue(job, attempt, self._paused_until)
            self.observer.job_finished(job, result, "backoff")
        elif result.retry and attempt <= self.retries:
            self.joblog.write_event("failed", seq, error=error, retry=attempt)
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.5)
            with self._cond:
                self.summary.retried += 1
            self._requeue(job, attempt + 1, self.clock() + delay)
            self.observer.job_finished(job, result, "retry")
        else:
            self.joblog.write_event("failed", seq, error=error, retry=False)
            with self._cond:
                self.summary.failed += 1
            self.observer.job_finished(job, result, "failed")

    def _in_outage(self, seq: int) -> bool:
        """Note a retryable failure of ``seq``; True if it is part of an outage."""
        with self._cond:
            self._failing.add(seq)
            return (
                len(self._failing) >= OUTAGE_JOBS
                and self.clock() - self._last_success <= self.outage_patience
            )

    def _requeue(self, job: dict[str, Any], attempt: int, ready_at: float) -> None:
        with self._cond:
            heapq.heappush(self._retry_queue, _Queued(ready_at, next(self._order), attempt, job))
            self._cond.notify_all()
