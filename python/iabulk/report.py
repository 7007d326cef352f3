"""Turning snapshots of one or more job logs into a status report.

Several logs (the shards of one run, or successive runs) are merged by
adding their counts; timestamps take the earliest first and latest last.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from iabulk._native import Snapshot
from iabulk.ui import human_bytes

__all__ = ["Summary", "merge_snapshots", "render_status", "status_json"]

TOP_ERRORS = 5


@dataclass
class Summary:
    """The figures of one or more job logs."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    pending: int = 0
    in_flight: int = 0
    malformed: int = 0
    bytes_completed: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    errors: Counter[str] = field(default_factory=Counter)


def merge_snapshots(snapshots: Sequence[Snapshot]) -> Summary:
    summary = Summary()
    for snap in snapshots:
        summary.total += snap.total
        summary.completed += snap.completed
        summary.failed += snap.failed
        summary.pending += snap.pending
        summary.in_flight += snap.in_flight
        summary.malformed += snap.malformed
        summary.bytes_completed += snap.bytes_completed
        if snap.first_ts and (summary.first_ts is None or snap.first_ts < summary.first_ts):
            summary.first_ts = snap.first_ts
        if snap.last_ts and (summary.last_ts is None or snap.last_ts > summary.last_ts):
            summary.last_ts = snap.last_ts
        summary.errors.update(dict(snap.errors))
    return summary


def _top_errors(summary: Summary) -> list[tuple[str, int]]:
    return sorted(summary.errors.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]


def _pretty_ts(ts: str | None) -> str:
    if not ts or len(ts) != 16:
        return ts or "-"
    return f"{ts[0:4]}-{ts[4:6]}-{ts[6:8]} {ts[9:11]}:{ts[11:13]}:{ts[13:15]}Z"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:5.1f}%" if whole else "    -"


def render_status(summary: Summary, paths: Sequence[str]) -> str:
    name = paths[0] if len(paths) == 1 else f"{len(paths)} job logs"
    s = summary
    lines = [
        f"{name}: {s.total:,} jobs",
        f"  completed  {s.completed:>12,}  {_pct(s.completed, s.total)}",
        f"  failed     {s.failed:>12,}  {_pct(s.failed, s.total)}",
        f"  pending    {s.pending:>12,}  {_pct(s.pending, s.total)}"
        + (f"  ({s.in_flight:,} cut short while running)" if s.in_flight else ""),
        f"  downloaded {human_bytes(s.bytes_completed):>12}",
        f"  first      {_pretty_ts(s.first_ts)}   last {_pretty_ts(s.last_ts)}",
    ]
    if s.malformed:
        lines.append(f"  malformed  {s.malformed:>12,}  line(s) skipped")
    top = _top_errors(s)
    if top:
        lines.append("  errors (all attempts):")
        lines.extend(f"    {count:>10,}  {message}" for message, count in top)
    return "\n".join(lines)


def status_json(summary: Summary, paths: Sequence[str]) -> dict[str, Any]:
    s = summary
    return {
        "joblogs": list(paths),
        "total": s.total,
        "completed": s.completed,
        "failed": s.failed,
        "pending": s.pending,
        "in_flight": s.in_flight,
        "malformed": s.malformed,
        "bytes_completed": s.bytes_completed,
        "first_ts": s.first_ts,
        "last_ts": s.last_ts,
        "errors": [{"error": m, "count": c} for m, c in _top_errors(s)],
    }
