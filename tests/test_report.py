"""The status report's arithmetic: recent rate, ETA, merging shards."""

from __future__ import annotations

from typing import Any

from iabulk.report import eta_seconds, merge_analytics, recent_rate, render_status


def report(
    pending: int, buckets: list[tuple[str, int, int]], first: str, last: str
) -> dict[str, Any]:
    return {
        "counts": {
            "total": 100,
            "completed": 100 - pending,
            "failed": 0,
            "pending": pending,
            "in_flight": 0,
            "malformed": 0,
        },
        "bytes_completed": sum(b for _, _, b in buckets),
        "files_completed": 7,
        "first_ts": first,
        "last_ts": last,
        "throughput": [{"start": s, "items": i, "bytes": b} for s, i, b in buckets],
        "durations": {"count": 3, "p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 3.0},
        "retries": {0: 5, 2: 1},
        "workers": {0: {"completed": 3, "bytes": 30}},
        "disks": {"/a": {"completed": 3, "bytes": 30}},
        "errors": [{"cause": "HTTP N", "count": 2, "examples": ["x"]}],
    }


def test_rate_over_a_short_run_uses_its_real_span() -> None:
    r = report(60, [("20261128T100000Z", 40, 4000)], "20261128T100010Z", "20261128T100029Z")
    items, nbytes = recent_rate(r)
    assert items == 2.0 and nbytes == 200.0  # 40 items in 20 s, not in a minute
    assert eta_seconds(r) == 30.0


def test_no_completions_no_eta() -> None:
    assert eta_seconds(report(100, [], "20261128T100000Z", "20261128T100000Z")) is None


def test_merge_adds_counts_buckets_and_causes() -> None:
    a = report(10, [("20261128T100000Z", 5, 50)], "20261128T100000Z", "20261128T100059Z")
    b = report(
        20,
        [("20261128T100000Z", 1, 10), ("20261128T100100Z", 2, 20)],
        "20261128T095900Z",
        "20261128T100130Z",
    )
    merged = merge_analytics([a, b], ["a.jsonl", "b.jsonl"])
    assert merged["counts"]["total"] == 200 and merged["counts"]["pending"] == 30
    assert merged["throughput"] == [
        {"start": "20261128T100000Z", "items": 6, "bytes": 60},
        {"start": "20261128T100100Z", "items": 2, "bytes": 20},
    ]
    assert merged["first_ts"] == "20261128T095900Z" and merged["last_ts"] == "20261128T100130Z"
    assert merged["errors"] == [{"cause": "HTTP N", "count": 4, "examples": ["x"]}]
    assert merged["retries"] == {0: 10, 2: 2}
    assert merged["durations"]["count"] == 6 and len(merged["durations"]["per_log"]) == 2
    assert "2 job logs" in render_status(merged)


def test_a_share_never_rounds_to_all_or_nothing() -> None:
    r = report(4, [], "20261128T100000Z", "20261128T100000Z")
    r["counts"].update(total=10_000, completed=9_996, pending=4)
    text = render_status(merge_analytics([r], ["run.jsonl"]))
    assert "9,996/10,000 jobs done (99.9%)" in text
    assert "100.0%" not in text  # 99.96% done is not all done
    pending = next(line for line in text.splitlines() if line.lstrip().startswith("pending"))
    assert "0.1%" in pending and "0.0%" not in pending  # 4 jobs are not none
    everything = report(0, [], "20261128T100000Z", "20261128T100000Z")
    assert "100/100 jobs done (100.0%)" in render_status(merge_analytics([everything], ["a"]))


def test_the_causes_left_out_are_counted() -> None:
    r = report(0, [], "20261128T100000Z", "20261128T100000Z")
    r["errors"] = [
        {"cause": f"cause {letter}", "count": 9 - n, "examples": ["x"]}
        for n, letter in enumerate("abcdef")
    ]
    r["errors"][-1]["count"] = 2
    text = render_status(merge_analytics([r], ["run.jsonl"]))
    assert "cause e" in text and "cause f" not in text
    assert "… and 1 more cause (2 failures); see --json" in text
    r["errors"] = r["errors"][:5]
    assert "more cause" not in render_status(merge_analytics([r], ["run.jsonl"]))


def test_merged_logs_bound_each_percentile_by_the_logs_own() -> None:
    """The merged distribution is not at hand, but each of its percentiles lies
    between the smallest and the largest of the logs' own."""
    a = report(0, [], "20261128T100000Z", "20261128T100000Z")
    b = report(0, [], "20261128T100000Z", "20261128T100000Z")
    idle = report(0, [], "20261128T100000Z", "20261128T100000Z")
    b["durations"] = {"count": 5, "p50": 1.0, "p90": 70.0, "p99": 90.0, "max": 95.0}
    idle["durations"] = {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    text = render_status(merge_analytics([a, b, idle], ["a", "b", "idle"]))
    assert "  per job    p50 1s, p90 2s to 1m 10s, p99 3s to 1m 30s, max 1m 35s" in text
    assert "per job" not in render_status(merge_analytics([idle, idle], ["c", "d"]))
