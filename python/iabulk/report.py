"""`iabulk status`: what one or more job logs say, at a glance or in full.

The figures come from :func:`iabulk._native.analyze`, one pass per log in
Rust. Several logs (the shards of one run) are merged here: counts, bytes,
throughput buckets, retries, workers, disks and error causes add up;
duration percentiles cannot be merged from summaries, so a merged report
gives each log's own next to the overall count and maximum, and the human
report bounds each percentile of the whole by the logs' own.

A merged report keeps the shapes and key types of a single log's (workers
by int id, ``None`` for completions that name no worker, in that order), so
``status --json`` writes both alike: JSON keys are strings, worker ids
``"0"``, ``"1"`` … and ``"null"`` for no worker.
"""

from __future__ import annotations

import calendar
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from iabulk.ui import human_bytes, visible

__all__ = ["merge_analytics", "render_status", "recent_rate", "eta_seconds", "TOP_CAUSES"]

TOP_CAUSES = 5
CAUSE_WIDTH = 200
"""Characters of a failure cause (or its examples) shown; the JSON report has them whole."""
RECENT_BUCKETS = 10
"""The rate behind the ETA: the last ten one-minute buckets of completions."""


def merge_analytics(reports: Sequence[dict[str, Any]], paths: Sequence[str]) -> dict[str, Any]:
    """One report for several logs (the single-log report is returned as it is)."""
    if len(reports) == 1:
        return {"joblogs": list(paths), **reports[0]}
    counts: Counter[str] = Counter()
    throughput: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    retries: Counter[int] = Counter()
    workers: dict[int | None, dict[str, int]] = defaultdict(lambda: {"completed": 0, "bytes": 0})
    disks: dict[str, dict[str, int]] = defaultdict(lambda: {"completed": 0, "bytes": 0})
    causes: dict[str, dict[str, Any]] = {}
    for report in reports:
        counts.update(report["counts"])
        for bucket in report["throughput"]:
            throughput[bucket["start"]][0] += bucket["items"]
            throughput[bucket["start"]][1] += bucket["bytes"]
        retries.update(report["retries"])
        for name, figures in report["workers"].items():
            workers[name]["completed"] += figures["completed"]
            workers[name]["bytes"] += figures["bytes"]
        for name, figures in report["disks"].items():
            disks[name]["completed"] += figures["completed"]
            disks[name]["bytes"] += figures["bytes"]
        for error in report["errors"]:
            merged = causes.setdefault(error["cause"], {"count": 0, "examples": []})
            merged["count"] += error["count"]
            merged["examples"] = list(dict.fromkeys(merged["examples"] + error["examples"]))[:3]
    stamps = [r[k] for r in reports for k in ("first_ts", "last_ts") if r[k]]
    durations = [r["durations"] for r in reports]
    return {
        "joblogs": list(paths),
        "counts": dict(counts),
        "running": sum(r.get("running", 0) for r in reports),
        "bytes_completed": sum(r["bytes_completed"] for r in reports),
        "files_completed": sum(r["files_completed"] for r in reports),
        "first_ts": min(stamps) if stamps else None,
        "last_ts": max(stamps) if stamps else None,
        "throughput": [
            {"start": start, "items": items, "bytes": nbytes}
            for start, (items, nbytes) in sorted(throughput.items())
        ],
        "durations": {
            "count": sum(d["count"] for d in durations),
            "max": max((d["max"] for d in durations if d["max"] is not None), default=None),
            "per_log": durations,
        },
        "retries": dict(sorted(retries.items())),
        "workers": dict(sorted(workers.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))),
        "disks": dict(disks),
        "errors": [
            {"cause": cause, **figures}
            for cause, figures in sorted(causes.items(), key=lambda kv: (-kv[1]["count"], kv[0]))
        ],
    }


def _epoch(ts: str | None) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(ts or "", "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def recent_rate(report: dict[str, Any]) -> tuple[float, float]:
    """(items/s, bytes/s) over the last :data:`RECENT_BUCKETS` buckets of completions.

    The span runs from the start of the first of those buckets (or the log's
    first timestamp, if later) to its last timestamp, so a run of a few
    seconds is not averaged over a whole minute.
    """
    recent = report["throughput"][-RECENT_BUCKETS:]
    if not recent:
        return 0.0, 0.0
    start, first, last = (
        _epoch(t) for t in (recent[0]["start"], report["first_ts"], report["last_ts"])
    )
    if start is None or last is None:
        return 0.0, 0.0
    span = max(1.0, last - max(start, first or start) + 1)
    return sum(b["items"] for b in recent) / span, sum(b["bytes"] for b in recent) / span


def eta_seconds(report: dict[str, Any]) -> float | None:
    """Seconds to finish the pending jobs at the recent completion rate."""
    items_per_second, _ = recent_rate(report)
    if not items_per_second:
        return None
    pending: int = report["counts"]["pending"]
    return pending / items_per_second


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _pretty_ts(ts: str | None) -> str:
    if not ts or len(ts) != 16:
        return ts or "-"
    return f"{ts[0:4]}-{ts[4:6]}-{ts[6:8]} {ts[9:11]}:{ts[11:13]}:{ts[13:15]}Z"


def _pct(part: int, whole: int) -> str:
    """``part`` of ``whole`` to a tenth of a percent, rounded so that only all
    of it reads 100.0% and only none of it reads 0.0%: 9,996 of 10,000 done is
    not done, and 4 failures of 10,000 are not none."""
    if not whole:
        return "    -"
    tenths = 1000 * part // whole  # integers: a float would round 99.96 up
    if part and not tenths:
        tenths = 1
    return f"{tenths // 10:3d}.{tenths % 10}%"


def _percentiles(durations: dict[str, Any]) -> str | None:
    """p50, p90, p99 and max of the jobs' durations, if any were timed.

    Merged logs give the overall max, and a range for each percentile, from
    the smallest to the largest of the logs' own: the merged distribution is
    not at hand, but a percentile of the whole can lie neither below the
    lowest nor above the highest of its parts'.
    """
    timed = [d for d in durations.get("per_log", [durations]) if d["p50"] is not None]
    if not timed:
        return None

    def spread(key: str) -> str:
        low, high = (_duration(pick(d[key] for d in timed)) for pick in (min, max))
        return low if low == high else f"{low} to {high}"

    return (
        f"p50 {spread('p50')}, p90 {spread('p90')}, p99 {spread('p99')}, "
        f"max {_duration(durations['max'])}"
    )


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def render_status(report: dict[str, Any]) -> str:
    """The human report: progress and ETA, failures by cause, disks and workers."""
    paths = report["joblogs"]
    c = report["counts"]
    total = c["total"]
    name = paths[0] if len(paths) == 1 else f"{len(paths)} job logs"
    rate_items, rate_bytes = recent_rate(report)
    done = c["completed"] + c["failed"]
    # A log no run holds now has no ETA, and its jobs in flight were cut short.
    running = report.get("running", len(paths))
    ahead = f", ETA {_duration(eta_seconds(report))}" if running else ", no run under way"
    if not running:
        in_flight = "cut short: the next run starts them again"
    else:
        in_flight = "running" if running == len(paths) else "in flight"
    lines = [
        f"{name}: {done:,}/{total:,} jobs done ({_pct(done, total).strip()})"
        + (ahead if c["pending"] else ""),
        f"  completed  {c['completed']:>12,}  {_pct(c['completed'], total)}"
        f"   {human_bytes(report['bytes_completed'])} in {report['files_completed']:,} files",
        f"  failed     {c['failed']:>12,}  {_pct(c['failed'], total)}",
        f"  pending    {c['pending']:>12,}  {_pct(c['pending'], total)}"
        + (f"  ({c['in_flight']:,} {in_flight})" if c["in_flight"] else ""),
        f"  recent     {rate_items * 60:>12,.1f}  items/min, {human_bytes(rate_bytes)}/s",
        f"  first      {_pretty_ts(report['first_ts'])}   last {_pretty_ts(report['last_ts'])}",
    ]
    per_job = _percentiles(report["durations"])
    if per_job:
        lines.append(f"  per job    {per_job}")
    if c["malformed"]:
        lines.append(f"  malformed  {c['malformed']:>12,}  line(s) skipped")
    retried = {n: jobs for n, jobs in report["retries"].items() if int(n) > 0}
    if retried:
        lines.append(
            "  retried    "
            + ", ".join(
                f"{jobs:,} job(s) {n}x"
                for n, jobs in sorted(retried.items(), key=lambda kv: int(kv[0]))
            )
        )
    if report["errors"]:
        lines.append("  failures by cause (all attempts):")
        for error in report["errors"][:TOP_CAUSES]:
            examples = visible(", ".join(error["examples"]), CAUSE_WIDTH)
            cause = visible(error["cause"], CAUSE_WIDTH)
            lines.append(f"    {error['count']:>10,}  {cause}   e.g. {examples}")
        left_out = report["errors"][TOP_CAUSES:]
        if left_out:
            # Counted in failures, not jobs: a retried job fails once per attempt.
            failures = sum(error["count"] for error in left_out)
            lines.append(
                f"    … and {len(left_out):,} more {_plural(len(left_out), 'cause')}"
                f" ({failures:,} {_plural(failures, 'failure')}); see --json"
            )
    disks = report["disks"]
    if len(disks) > 1:
        slowest = min(disks.items(), key=lambda kv: kv[1]["bytes"])
        lines.append(
            "  disks      "
            + ", ".join(f"{d} {human_bytes(f['bytes'])}" for d, f in sorted(disks.items()))
            + f"   (least written: {slowest[0]})"
        )
    return "\n".join(visible(line) for line in lines)
