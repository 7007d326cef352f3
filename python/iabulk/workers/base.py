"""The worker interface: what the engine runs for one job.

The engine is operation-agnostic; an operation (download today; upload,
metadata, delete later) is a :class:`BaseWorker` subclass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerResult:
    """The outcome of one job.

    ``retry=False`` marks a permanent failure; ``backoff=True`` asks the
    engine to pause new submissions (rate limited, disks full), for
    ``backoff_seconds`` if the worker knows how long (a ``Retry-After``).
    ``item_fault=True`` says a retryable failure is the item's own (the
    server answered, the data did not match): it never counts toward an
    outage, which pauses the run instead of using up retries.
    ``extra`` is recorded in the job log's ``completed`` line.
    """

    success: bool
    identifier: str
    error: str | None = None
    backoff: bool = False
    retry: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    backoff_seconds: float | None = None
    item_fault: bool = False


class StopRun(Exception):
    """Raised by a worker when no job can succeed until someone acts (a
    destination gone read-only, or gone): the engine stops the run, the job
    is left without an outcome (the next run does it again), and the run
    ends with this error instead of failing every job in turn."""


class BaseWorker:
    """Runs one job. Must be safe to call from several threads at once."""

    def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Cut short what a stop cannot reach through ``cancel_event``, such as a
        request waiting on a silent server. Called, perhaps repeatedly, while
        jobs are still running a moment after a stop was requested."""
