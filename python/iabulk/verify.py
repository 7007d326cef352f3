"""`iabulk verify`: is what the log calls completed really on disk, intact?

Every completed item's files are checked against the item's current
metadata — present, the right size, the right md5 — several items at once.
What is damaged can then be requeued, so the next resume fetches it again.
The check itself belongs to the worker of the operation (it knows what a
finished download looks like); this module runs it over the log.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from iabulk.errors import JobLogError
from iabulk.joblog import JobLog

__all__ = ["verify", "VerifyReport", "Checker"]


class Checker(Protocol):
    def check(
        self,
        identifier: str,
        cancel: threading.Event,
        requeue: Callable[[], None] | None = None,
    ) -> list[str]: ...


@dataclass
class VerifyReport:
    """Seqs of the damaged items, of those put back to pending, and of those
    that could not be checked."""

    checked: int = 0
    damaged: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    unchecked: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.unchecked


def verify(
    log: JobLog,
    checker: Checker,
    workers: int,
    quiet: bool = False,
    repair: bool = False,
    report: VerifyReport | None = None,
) -> VerifyReport:
    """Check every completed job of ``log``; print one line per problem item.

    ``repair`` puts each damaged item back to pending (a durable ``requeued``
    line) as soon as it is found, then removes its damaged files: an
    interrupted verify leaves every item either completed and untouched or
    pending; ``report``, if given, is filled in as items are checked (the
    caller still has it when an interrupt ends the check).
    """
    completed = log.analytics()["completed_jobs"]
    report = report if report is not None else VerifyReport()
    cancel = threading.Event()
    bar: Any = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(completed), unit="item", desc="verifying", file=sys.stderr)

    lock = threading.Lock()

    def requeue_of(seq: int) -> Callable[[], None]:
        def requeue() -> None:
            try:
                log.requeue([seq], reason="verify")
            except OSError as exc:
                raise JobLogError(f"cannot requeue in {log.path}: {exc.strerror or exc}") from None
            with lock:
                report.requeued.append(seq)

        return requeue

    def check(job: dict[str, Any]) -> tuple[dict[str, Any], list[str] | str]:
        requeue = requeue_of(job["seq"]) if repair else None
        try:
            return job, checker.check(job["id"], cancel, requeue)
        except JobLogError:
            raise  # the log cannot be written: no item can be requeued
        except Exception as exc:  # one unreadable item must not stop the others
            return job, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(workers, thread_name_prefix="iabulk-verify") as pool:
        try:
            for job, outcome in pool.map(check, completed):
                report.checked += 1
                if isinstance(outcome, str):
                    report.unchecked.append(job["seq"])
                    _say(bar, f"could not check {job['id']}: {outcome}")
                elif outcome:
                    report.damaged.append(job["seq"])
                    _say(bar, f"damaged {job['id']}: " + "; ".join(outcome))
                if bar is not None:
                    bar.update()
        except KeyboardInterrupt:
            cancel.set()
            raise
        finally:
            if bar is not None:
                bar.close()
    if not quiet or not report.ok:
        print(
            f"iabulk: verified {report.checked} completed item(s): "
            f"{report.checked - len(report.damaged) - len(report.unchecked)} intact, "
            f"{len(report.damaged)} damaged, {len(report.unchecked)} not checked",
            file=sys.stderr,
        )
    return report


def _say(bar: Any, text: str) -> None:
    if bar is not None:
        bar.write(f"iabulk: {text}", file=sys.stderr)
    else:
        print(f"iabulk: {text}", file=sys.stderr)
