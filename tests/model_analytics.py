"""A plain-Python model of the job-log analytics (``_native.analyze``), for differential tests.

It builds on ``tests/model.py``: the same line parsing and the same rules for
which lines count (``accepted_events`` walks the log the way
``model.scan_bytes`` does), and the counts are the model's snapshot. On top,
one small function per figure restates the docstring of ``analyze`` in
``iabulk/_native.pyi``. Meant to be obviously correct, not fast.

``analyze_model(data, bucket_seconds)`` returns a dict shaped like the Rust
``analyze``; the job lists are plain lists of job dicts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import model

MAX_BUCKETS = 100_000
EPOCH = datetime(1, 1, 1)
TS = re.compile(r"[0-9]{8}T[0-9]{6}Z")


# -- values ----------------------------------------------------------------------


def parse_ts(value: Any) -> int | None:
    """Seconds from 0001-01-01T00:00:00Z, for a string that is exactly ``%Y%m%dT%H%M%SZ``."""
    if not isinstance(value, str) or not TS.fullmatch(value):
        return None
    try:
        when = datetime(
            int(value[0:4]), int(value[4:6]), int(value[6:8]),
            int(value[9:11]), int(value[11:13]), int(value[13:15]),
        )  # fmt: skip
    except ValueError:  # year 0, 30 February, hour 24, second 60, ...
        return None
    delta = when - EPOCH
    return delta.days * 86_400 + delta.seconds


def format_ts(seconds: int) -> str:
    when = EPOCH + timedelta(seconds=seconds)
    return (
        f"{when.year:04d}{when.month:02d}{when.day:02d}"
        f"T{when.hour:02d}{when.minute:02d}{when.second:02d}Z"
    )


def non_negative(value: Any) -> int:
    """A non-negative JSON integer of any size; anything else counts as 0."""
    return value if type(value) is int and value >= 0 else 0


def extra_field(record: dict[str, Any], name: str) -> Any:
    extra = record.get("extra")
    return extra.get(name) if isinstance(extra, dict) else None


def worker_of(started: dict[str, Any] | None) -> int | None:
    """The ``worker`` of an attempt's ``started`` line: an integer in 0..2**64-1, else None."""
    worker = started.get("worker") if started is not None else None
    return worker if type(worker) is int and 0 <= worker < 2**64 else None


# -- error causes ----------------------------------------------------------------

NAME_CHARS = "A-Za-z0-9_-"
WORD = re.compile(r"[A-Za-z0-9._-]+")
DIGITS = re.compile(r"[0-9]+")


def _host(match: re.Match[str]) -> str:
    run = match.group()
    core = run.strip(".")
    last = core.rsplit(".", 1)[-1]
    if "." in core and last and last.isascii() and last.isalpha():
        lead = len(run) - len(run.lstrip("."))
        return run[:lead] + "<host>" + run[lead + len(core) :]
    return run


def _number(match: re.Match[str]) -> str:
    text, start, digits = match.string, match.start(), match.group()
    before = text[start - 1] if start else ""
    if before.isascii() and before.isalpha():
        return digits  # md5, sha256
    if len(digits) == 3 and text[:start].endswith("HTTP "):
        return digits
    return "N"


def error_cause(message: str, ident: str | None) -> str:
    """The message without the job's own id (whole words), host names and numbers."""
    if ident:
        own = rf"(?<![{NAME_CHARS}]){re.escape(ident)}(?![{NAME_CHARS}])"
        message = re.sub(own, lambda _: "<id>", message)
    message = WORD.sub(_host, message)
    return DIGITS.sub(_number, message)


# -- the walk --------------------------------------------------------------------


def accepted_events(data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, record) of every line ``model.scan_bytes`` acts on, in file order."""
    jobs: set[int] = set()
    for _offset, line, complete in model.split_lines(data):
        if not complete or model.is_blank(line):
            continue
        record = model.parse_object(line)
        kind = record.get("event") if record is not None else None
        if record is None or not isinstance(kind, str) or kind not in model.KNOWN_KINDS:
            continue
        if kind in model.SEQ_KINDS and not model.valid_seq(record.get("seq")):
            continue
        if kind == "job":
            if not isinstance(record.get("id"), str) or record["seq"] in jobs:
                continue
            jobs.add(record["seq"])
        yield kind, record


@dataclass
class Terminal:
    """A seq's last ``completed``/``failed``/``requeued`` and the ``started`` of its attempt."""

    kind: str
    record: dict[str, Any]
    started: dict[str, Any] | None


def nearest_rank(ordered: list[int], percent: int) -> int | None:
    if not ordered:
        return None
    rank = -(-percent * len(ordered) // 100)  # ceil, in integers
    return ordered[rank - 1]


def analyze_model(data: bytes, bucket_seconds: int = 60) -> dict[str, Any]:
    snap = model.scan_bytes(data)
    jobs: dict[int, dict[str, Any]] = {}
    open_attempt: dict[int, dict[str, Any]] = {}  # seq -> its started, until a terminal event
    last: dict[int, Terminal] = {}
    retried: Counter[int] = Counter()
    failures: list[tuple[int, str]] = []
    for kind, record in accepted_events(data):
        seq = record.get("seq")
        if kind == "job":
            jobs[seq] = record
        elif kind == "started":
            open_attempt[seq] = record
        elif kind in ("completed", "failed", "requeued"):
            last[seq] = Terminal(kind, record, open_attempt.pop(seq, None))
            if kind == "failed":
                retried[seq] += not model.is_permanent_failure(record)
                if isinstance(record.get("error"), str):
                    failures.append((seq, record["error"]))

    counted = [(s, t) for s, t in sorted(last.items()) if s in jobs and t.kind == "completed"]
    done = [
        s for s, t in last.items()
        if s in jobs and (t.kind == "completed" or model.is_permanent_failure(t.record))
    ]  # fmt: skip
    # The model's own walk agrees with the model's snapshot.
    assert len(counted) == snap.completed and len(done) == snap.completed + snap.failed
    assert sum(model.item_size(t.record) for _, t in counted) == snap.bytes_completed

    buckets: dict[int, list[int]] = {}
    durations: list[int] = []
    workers: dict[int | None, dict[str, int]] = {}
    disks: dict[str, dict[str, int]] = {}
    for _seq, t in counted:
        size = model.item_size(t.record)
        end = parse_ts(t.record.get("ts"))
        if end is not None:
            bucket = buckets.setdefault(end // bucket_seconds, [0, 0])
            bucket[0] += 1
            bucket[1] += size
            start = parse_ts(t.started.get("ts")) if t.started is not None else None
            if start is not None and end >= start:
                durations.append(end - start)
        figures = workers.setdefault(worker_of(t.started), {"completed": 0, "bytes": 0})
        figures["completed"] += 1
        figures["bytes"] += size
        disk = extra_field(t.record, "disk")
        if isinstance(disk, str):
            figures = disks.setdefault(disk, {"completed": 0, "bytes": 0})
            figures["completed"] += 1
            figures["bytes"] += size

    throughput = []
    if buckets:
        top = max(buckets)
        for b in range(max(min(buckets), top - MAX_BUCKETS + 1), top + 1):
            items, nbytes = buckets.get(b, [0, 0])
            throughput.append({"start": format_ts(b * bucket_seconds), "items": items,
                               "bytes": nbytes})  # fmt: skip

    durations.sort()
    causes: dict[str, dict[str, Any]] = {}
    for seq, message in failures:
        ident = jobs[seq]["id"] if seq in jobs else None
        cause = causes.setdefault(error_cause(message, ident), {"count": 0, "examples": []})
        cause["count"] += 1
        if ident is not None and ident not in cause["examples"] and len(cause["examples"]) < 3:
            cause["examples"].append(ident)

    def by_worker(item: tuple[int | None, Any]) -> tuple[bool, int]:
        return (item[0] is None, item[0] or 0)

    return {
        "counts": {name: getattr(snap, name) for name in
                   ("total", "completed", "failed", "pending", "in_flight", "malformed")},
        "bytes_completed": snap.bytes_completed,
        "files_completed": sum(non_negative(extra_field(t.record, "files")) for _, t in counted),
        "first_ts": snap.first_ts,
        "last_ts": snap.last_ts,
        "throughput": throughput,
        "durations": {
            "count": len(durations),
            "p50": nearest_rank(durations, 50),
            "p90": nearest_rank(durations, 90),
            "p99": nearest_rank(durations, 99),
            "max": durations[-1] if durations else None,
        },
        "retries": dict(sorted(Counter(retried[s] for s in done).items())),
        "workers": dict(sorted(workers.items(), key=by_worker)),
        "disks": dict(sorted(disks.items())),
        "errors": [
            {"cause": cause, **figures}
            for cause, figures in sorted(causes.items(), key=lambda c: (-c[1]["count"], c[0]))
        ],
        "failed_jobs": [jobs[s] for s in sorted(done) if last[s].kind == "failed"],
        "completed_jobs": [jobs[s] for s, _ in counted],
    }  # fmt: skip
