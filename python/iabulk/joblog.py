"""The job log: an append-only JSONL file that is both manifest and event log.

Reading is one pass in Rust (:func:`iabulk._native.scan`); writing goes
through a Rust appender that holds an exclusive lock on the file, repairs a
torn tail before the first append, and makes event lines durable before
``write_event`` returns. This module keeps the method names and meanings of
the upstream ``ia`` bulk engine's ``JobLog`` so code written against it runs
unchanged, and adds :meth:`JobLog.snapshot` for everything else one pass
knows.

The log knows nothing about archive.org: a job is a seq, an id and an op.
"""

from __future__ import annotations

import errno
import heapq
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from iabulk._native import (
    MAX_SEQ,
    Appender,
    Bitmap,
    JobList,
    LogChangedError,
    PendingJobs,
    Snapshot,
    analyze,
    scan,
)

__all__ = [
    "JobLog",
    "Bitmap",
    "Snapshot",
    "PendingJobs",
    "JobList",
    "LogChangedError",
    "MAX_SEQ",
    "utc_ts",
    "encode_line",
    "UnrecordableError",
]


def utc_ts() -> str:
    """The log's timestamp format: UTC, ``%Y%m%dT%H%M%SZ``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class UnrecordableError(ValueError):
    """A record no job log line can hold: refused before anything is written."""


_MAX_DEPTH = 512
"""The deepest nesting a job log reader accepts, the line's own object counting as 1."""


def _deeper_than(limit: int, value: Any) -> bool:
    """Whether ``value`` (already known to encode as JSON) nests containers more
    than ``limit`` deep; iterative, so no depth exhausts the stack."""
    stack = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        items = container.values() if isinstance(container, dict) else container
        stack.extend((item, depth + 1) for item in items if isinstance(item, (dict, list, tuple)))
    return False


def encode_line(record: dict[str, Any]) -> bytes:
    """One compact JSON line, UTF-8, ending in a newline.

    Raises :class:`UnrecordableError` for what JSON cannot hold and for what
    every reader would skip as malformed (NaN or infinity, a lone surrogate,
    nesting more than 512 deep): written, such a line would lose its record
    without a word.
    """
    try:
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        # Each level of nesting opens a bracket, so a line with few brackets is
        # shallow enough without a walk (brackets inside strings only add to the count).
        if text.count("{") + text.count("[") <= _MAX_DEPTH or not _deeper_than(_MAX_DEPTH, record):
            return (text + "\n").encode()
        why = f"nested more than {_MAX_DEPTH} deep, the line's object counting as 1"
    except UnicodeEncodeError as exc:
        why = f"not valid Unicode: {exc.reason} in {exc.object[exc.start : exc.end]!r}"
    except RecursionError:
        why = "nested too deeply for a job log line"
    except (TypeError, ValueError) as exc:
        why = str(exc)
    raise UnrecordableError(why)


_GONE = (
    "it was removed or replaced while in use; what this run recorded is lost, "
    "the files it fetched are kept (a new run checks them without fetching them again)"
)


def check_seq(seq: Any) -> int:
    """``seq`` if it is an int in ``1..=MAX_SEQ``; every reader skips any other seq."""
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise TypeError(f"seq must be an int, not {type(seq).__name__}")
    if not 1 <= seq <= MAX_SEQ:
        raise ValueError(f"seq {seq} is outside 1..{MAX_SEQ}")
    return seq


class JobLog:
    """A job log at ``path``; reading never locks it, the first write does.

    Job lines (:meth:`write_job`) are buffered and reach the disk at the next
    :meth:`sync`, :meth:`write_event` or :meth:`close`; an event line is on
    disk when :meth:`write_event` returns. Safe to share between threads.

    ``path`` is anything :func:`open` takes as a path: a str, bytes (any bytes
    the file system allows, as upstream's ``open(path)`` does), or a path
    object; :attr:`path` holds it as a str.
    """

    def __init__(self, path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
        self.path = os.fsdecode(path)
        self._appender: Appender | None = None
        self._open_lock = threading.Lock()
        self._job_lock = threading.RLock()  # write_job's first check takes a snapshot
        # The largest job seq in the log while this process holds it: read once
        # per opening, then kept by write_job. None until a job is written.
        self._last_job_seq: int | None = None

    # -- writing ---------------------------------------------------------

    def _writer(self) -> Appender:
        appender = self._appender
        if appender is None:
            with self._open_lock:
                if self._appender is None:
                    self._appender = Appender(self.path)
                    self._identity = os.stat(self.path)
                    self._last_job_seq = None  # others may have written while unlocked
                appender = self._appender
        return appender

    def check_in_place(self) -> None:
        """Raise FileNotFoundError if the file this log writes to is no longer at
        its path (removed, or replaced): every line written since is lost."""
        if self._appender is None:
            return
        try:
            here = os.path.samestat(os.stat(self.path), self._identity)
        except FileNotFoundError:
            here = False
        if not here:
            raise FileNotFoundError(errno.ENOENT, _GONE, self.path)

    @property
    def repaired_bytes(self) -> int:
        """Bytes of a torn last line cut off when this process opened the log."""
        return self._appender.repaired_bytes if self._appender else 0

    def open_for_append(self) -> None:
        """Take the lock and repair a torn tail now rather than at the first write."""
        self._writer()

    def write_job(self, seq: int, identifier: str, op: str, **extra: Any) -> None:
        """Queue a job line; durable at the next sync.

        ``seq`` must be in ``1..=MAX_SEQ`` and above every job seq already in
        the log (the format's seqs are strictly increasing over job lines):
        every reader skips any other seq as malformed, and a second job line
        for a seq as well. ValueError otherwise. The log's largest job seq is
        read once per opening for writing (by the first :meth:`snapshot` taken
        while this log holds the lock, or by the first job written); each
        write after that checks only the seq kept since.
        """
        check_seq(seq)
        if not isinstance(identifier, str) or not isinstance(op, str):
            raise TypeError("identifier and op must be str")
        record = {"event": "job", "seq": seq, "id": identifier, "op": op, "ts": utc_ts()}
        record.update(extra)
        line = encode_line(record)
        with self._job_lock:  # check and append in one step: the log stays in seq order
            appender = self._writer()
            if self._last_job_seq is None:
                self._last_job_seq = self.snapshot().max_seq
            if seq <= self._last_job_seq:
                raise ValueError(
                    f"seq {seq} is not above the log's last job seq, {self._last_job_seq}: "
                    "job seqs only increase, and every reader drops a second job line for a seq"
                )
            appender.append(line)
            self._last_job_seq = seq

    def write_event(self, event: str, seq: int, **fields: Any) -> None:
        """Append an event line and return once it is on disk."""
        record = {"event": event, "seq": check_seq(seq), "ts": utc_ts()}
        record.update(fields)
        self._writer().append_durable(encode_line(record))

    def note_event(self, event: str, seq: int, **fields: Any) -> None:
        """Queue an event line that nothing waits on (``started``); durable at the next sync."""
        record = {"event": event, "seq": check_seq(seq), "ts": utc_ts()}
        record.update(fields)
        self._writer().append(encode_line(record))

    def write_record(self, record: dict[str, Any], durable: bool = True) -> None:
        """Append any record (run metadata such as ``source``/``resolved``)."""
        line = encode_line({**record, "ts": record.get("ts") or utc_ts()})
        if durable:
            self._writer().append_durable(line)
        else:
            self._writer().append(line)

    def flush(self) -> None:
        """Write the queued lines without syncing: readers of the file (``iabulk
        status``, this log's own reads) see them at once; durable at the next sync."""
        if self._appender is not None:
            self._appender.flush()

    def sync(self) -> None:
        """Make every queued line durable."""
        if self._appender is not None:
            self._appender.sync()

    def close(self) -> None:
        """Sync and release the lock. Idempotent."""
        with self._open_lock:
            appender, self._appender = self._appender, None
        if appender is not None:
            appender.close()

    def __enter__(self) -> JobLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------

    def snapshot(self, collect_ids: bool = False) -> Snapshot:
        """Everything one pass over the log knows (a missing log is empty),
        lines this log has queued included."""
        self.flush()
        holding = self._appender is not None  # then no other process can add lines
        if not os.path.exists(self.path):
            # Upstream treats a log that does not exist yet as empty.
            return scan(os.devnull, collect_ids)
        snap = scan(self.path, collect_ids)
        if holding:  # what write_job checks against, without a scan of its own
            with self._job_lock:
                self._last_job_seq = max(self._last_job_seq or 0, snap.max_seq)
        return snap

    def analytics(self, bucket_seconds: int = 60) -> dict[str, Any]:
        """Counts, bytes, throughput, durations, retries, workers, disks, error causes,
        and the lazy lists of completed and failed jobs: one pass in Rust (see
        :func:`iabulk._native.analyze` for every field)."""
        self.flush()
        path = self.path if os.path.exists(self.path) else os.devnull
        return analyze(path, bucket_seconds)

    def requeue(self, seqs: Iterable[int], reason: str) -> int:
        """Put finished jobs back to pending (a ``requeued`` line each); durable on return."""
        count = 0
        for seq in seqs:
            self.note_event("requeued", seq, reason=reason)
            count += 1
        self.sync()
        return count

    def build_resume_bitmap(self) -> Bitmap:
        """The done seqs: last terminal event ``completed`` or a permanent failure."""
        return self.snapshot().bitmap

    def iter_pending_jobs(self, bitmap: Bitmap | None = None) -> Iterator[dict[str, Any]]:
        """Job dicts whose seq is not in ``bitmap`` (by default the done ones,
        :meth:`build_resume_bitmap`), in seq order, read lazily.

        A bitmap holding every done seq can only leave out pending jobs: those
        are read alone. Any other (say, completed jobs only, to run permanent
        failures again) brings back the done jobs it does not hold, as the
        upstream engine does.
        """
        snap = self.snapshot()
        if bitmap is None or bitmap.issuperset(snap.bitmap):
            jobs: Iterable[dict[str, Any]] = snap.pending_jobs
        else:
            facts = self.analytics()
            lists = (snap.pending_jobs, facts["completed_jobs"], facts["failed_jobs"])
            jobs = heapq.merge(*lists, key=lambda job: int(job["seq"]))
        for job in jobs:
            if bitmap is None or job["seq"] not in bitmap:
                yield job

    def get_max_seq(self) -> int:
        """Largest seq of a job line, 0 for an empty log."""
        return self.snapshot().max_seq

    def status(self) -> dict[str, int]:
        """``total``, ``completed``, ``failed`` (permanent) and ``pending`` jobs."""
        return _status(self.snapshot())

    def load(self) -> dict[str, Any]:
        """``max_seq``, ``bitmap``, ``pending`` (lazy, seq order) and ``status``, in one pass."""
        snap = self.snapshot()
        return {
            "max_seq": snap.max_seq,
            "bitmap": snap.bitmap,
            "pending": snap.pending_jobs,
            "status": _status(snap),
        }


def _status(snap: Snapshot) -> dict[str, int]:
    return {
        "total": snap.total,
        "completed": snap.completed,
        "failed": snap.failed,
        "pending": snap.pending,
    }
