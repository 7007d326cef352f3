"""A plain-Python model of the job-log format v1, for differential tests.

It restates, one small function per rule, the semantics written in the module
docstring of ``iabulk/_native.pyi``. It is meant to be obviously correct, not
fast: the Rust scan (``iabulk._native.scan``) must agree with it on every log.

``scan_bytes(data)`` returns a :class:`ModelSnapshot` with the same field names
as the Rust ``Snapshot``; the bitmap is a ``set`` of ints and the pending jobs
a list of job dicts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_SEQ = 100_000_000
MAX_DEPTH = 512  # arrays and objects, the line's object counting as 1
KNOWN_KINDS = {"job", "started", "completed", "failed", "requeued", "source", "resolved"}
SEQ_KINDS = {"job", "started", "completed", "failed", "requeued"}
JSON_WHITESPACE = b" \t\r\n"


# -- lines ---------------------------------------------------------------------


def split_lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line without its ``\\n``, whether a ``\\n`` ended it) for each line."""
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end == -1:
            yield offset, data[offset:], False
            return
        yield offset, data[offset:end], True
        offset = end + 1


def is_blank(line: bytes) -> bool:
    """Empty or only JSON whitespace: ignored, not counted."""
    return line.strip(JSON_WHITESPACE) == b""


# -- one line of JSON ----------------------------------------------------------


class _Pairs(list):  # type: ignore[type-arg]
    """An object's (key, value) pairs with duplicate keys kept."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_int(digits: str) -> int:
    """Python's own limit: an integer of more than 4300 digits makes the line malformed
    (a job line holding one could never be read back as a dict)."""
    if len(digits.lstrip("-")) > 4300:
        raise ValueError("integer of more than 4300 digits")
    return int(digits)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed value, keys and shadowed duplicates included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, _Pairs):
            for key, child in item:
                stack += [key, child]
        elif isinstance(item, list):
            stack += item


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed value (a scalar is 0)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, _Pairs):
            deepest = max(deepest, depth)
            stack += [(child, depth + 1) for _key, child in item]
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack += [(child, depth + 1) for child in item]
    return deepest


def _is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (from an escape like ``\\ud800``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_object(line: bytes) -> dict[str, Any] | None:
    """The JSON object on a line, or None if the line is malformed."""
    try:
        text = line.decode("utf-8")  # strict: no invalid or overlong bytes
        pairs = json.loads(
            text, parse_constant=_reject_constant, parse_int=_parse_int, object_pairs_hook=_Pairs
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None  # RecursionError: nesting CPython cannot parse, far deeper than MAX_DEPTH
    if not isinstance(pairs, _Pairs) or _depth(pairs) > MAX_DEPTH:
        return None
    if not all(_is_unicode(s) for s in _strings(pairs)):
        return None
    obj = json.loads(text, parse_int=_parse_int)  # the same text; duplicate keys: the last wins
    assert isinstance(obj, dict)
    return obj


# -- one record ----------------------------------------------------------------


def valid_seq(value: Any) -> bool:
    """A JSON integer (not 1.0, not true) in 1..MAX_SEQ."""
    return type(value) is int and 1 <= value <= MAX_SEQ


def item_size(record: dict[str, Any]) -> int:
    """``extra.item_size`` when it is a non-negative integer, else 0."""
    extra = record.get("extra")
    size = extra.get("item_size") if isinstance(extra, dict) else None
    return size if type(size) is int and size >= 0 else 0


def is_permanent_failure(record: dict[str, Any]) -> bool:
    return record.get("retry") is False


# -- the scan ------------------------------------------------------------------


@dataclass
class SeqState:
    """What the events seen so far say about one seq."""

    done: bool = False
    done_by_completed: bool = False
    in_flight: bool = False
    item_size: int = 0  # of the completed event that made it done


def apply_event(state: SeqState, kind: str, record: dict[str, Any]) -> None:
    """The per-seq state machine: the last terminal event wins."""
    if kind == "started":
        state.in_flight = True
        return
    state.in_flight = False
    if kind == "completed":
        state.done, state.done_by_completed = True, True
        state.item_size = item_size(record)
    elif kind == "failed" and is_permanent_failure(record):
        state.done, state.done_by_completed = True, False
    else:  # a failure to be retried, or requeued
        state.done = False


def errors_histogram(errors: Counter[str]) -> list[tuple[str, int]]:
    """(message, count), most frequent first, ties by message."""
    return sorted(errors.items(), key=lambda item: (-item[1], item[0]))


@dataclass
class ModelSnapshot:
    max_seq: int = 0
    total: int = 0
    completed: int = 0
    failed: int = 0
    pending: int = 0
    in_flight: int = 0
    malformed: int = 0
    bytes_completed: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    errors: list[tuple[str, int]] = field(default_factory=list)
    source: str | None = None
    resolved: bool = False
    size: int = 0
    bitmap: set[int] = field(default_factory=set)
    pending_jobs: list[dict[str, Any]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


def scan_bytes(data: bytes) -> ModelSnapshot:
    """One pass over a whole log, the way the format's rules say."""
    snap = ModelSnapshot(size=len(data))
    jobs: dict[int, dict[str, Any]] = {}  # seq -> its first job line
    states: dict[int, SeqState] = {}
    errors: Counter[str] = Counter()
    timestamps: list[str] = []

    for _offset, line, complete in split_lines(data):
        if not complete:
            snap.malformed += 1  # a torn tail
            continue
        if is_blank(line):
            continue
        record = parse_object(line)
        kind = record.get("event") if record is not None else None
        if record is None or not isinstance(kind, str):
            snap.malformed += 1
            continue
        if kind not in KNOWN_KINDS:
            continue
        if kind in SEQ_KINDS and not valid_seq(record.get("seq")):
            snap.malformed += 1
            continue
        if kind == "job" and (not isinstance(record.get("id"), str) or record["seq"] in jobs):
            snap.malformed += 1
            continue

        if isinstance(record.get("ts"), str):
            timestamps.append(record["ts"])
        if kind == "job":
            jobs[record["seq"]] = record
        elif kind == "source":
            snap.source = line.decode("utf-8").rstrip("\r")
            snap.resolved = False
        elif kind == "resolved":
            snap.resolved = True
        else:
            if kind == "failed" and isinstance(record.get("error"), str):
                errors[record["error"]] += 1
            apply_event(states.setdefault(record["seq"], SeqState()), kind, record)

    for seq, state in states.items():
        if state.done:
            snap.bitmap.add(seq)
    for seq in sorted(jobs):
        state = states.get(seq, SeqState())
        if state.done and state.done_by_completed:
            snap.completed += 1
            snap.bytes_completed += state.item_size
        elif state.done:
            snap.failed += 1
        else:
            snap.pending_jobs.append(jobs[seq])
            snap.in_flight += state.in_flight
    snap.total = len(jobs)
    snap.pending = len(snap.pending_jobs)
    snap.max_seq = max(jobs, default=0)
    snap.ids = {job["id"] for job in jobs.values()}
    snap.first_ts = min(timestamps, default=None)
    snap.last_ts = max(timestamps, default=None)
    snap.errors = errors_histogram(errors)
    return snap


def scan_file(path: str) -> ModelSnapshot:
    with open(path, "rb") as f:
        return scan_bytes(f.read())
