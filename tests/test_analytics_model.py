"""``_native.analyze`` agrees with the plain-Python model (tests/model_analytics.py) on every log.

As in test_joblog_model.py: the rules as worked examples, checked against
both the model and the Rust pass; then differential tests where hypothesis
writes logs (realistic runs, odd spellings, corruption, shards of one run)
and every figure of ``analyze`` must be exactly the model's.
"""

# ruff: noqa: E501  (the tables of cases read one case per line)

from __future__ import annotations

import atexit
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import logdata
import model_analytics as ma
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iabulk import _native as native
from logdata import Raw, Style, line
from test_joblog_model import typed

PROFILE = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCRATCH = Path(tempfile.mkdtemp(prefix="iabulk-analytics-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)
FIGURES = ["counts", "bytes_completed", "files_completed", "first_ts", "last_ts", "throughput",
           "durations", "retries", "workers", "disks", "errors"]  # fmt: skip


def analyze_bytes(data: bytes, bucket_seconds: int = 60, name: str = "log.jsonl") -> dict[str, Any]:
    path = SCRATCH / name
    path.write_bytes(data)
    return native.analyze(str(path), bucket_seconds)


def assert_matches_model(
    data: bytes, bucket_seconds: int = 60, want: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every figure of the Rust analysis of ``data`` equals the model's; returns the Rust one."""
    got = analyze_bytes(data, bucket_seconds)
    want = want or ma.analyze_model(data, bucket_seconds)
    context = f"bucket_seconds {bucket_seconds}, log: {data!r}"[:20_000]
    assert set(got) == set(want), context
    for name in FIGURES:
        assert got[name] == want[name], f"{name} differs; {context}"
    assert list(got["workers"]) == list(want["workers"]), f"worker order; {context}"
    assert list(got["retries"]) == list(want["retries"]), f"retries order; {context}"
    for name in ("failed_jobs", "completed_jobs"):
        jobs = got[name]
        assert len(jobs) == len(want[name]), f"len({name}) differs; {context}"
        assert jobs.seqs() == [j["seq"] for j in want[name]], f"{name} seqs; {context}"
        assert [typed(j) for j in jobs] == [typed(j) for j in want[name]], f"{name}; {context}"
        if want[name]:
            assert typed(jobs[-1]) == typed(want[name][-1])
    return got


# -- the rules, as worked examples -----------------------------------------------

L = logdata.log


def ev(kind: str, seq: int, ts: str | None = None, **fields: Any) -> bytes:
    pairs: dict[str, Any] = {"event": kind, "seq": seq}
    if ts is not None:
        pairs["ts"] = ts
    return line({**pairs, **fields})


def job(seq: int, ident: str) -> bytes:
    return logdata.job(seq, ident)


def t(minute: int, second: int = 0) -> str:
    return f"20261128T10{minute:02d}{second:02d}Z"


def done(seq: int, ts: str, size: int = 0, **extra: Any) -> bytes:
    return ev("completed", seq, ts, extra={"item_size": size, **extra})


RULES: list[Any] = [
    pytest.param(L([job(1, "a"), ev("started", 1, t(0), worker=2), done(1, t(0, 40), 10, files=3, disk="/d")]),
                 {"durations": {"count": 1, "p50": 40, "p90": 40, "p99": 40, "max": 40}, "workers": {2: {"completed": 1, "bytes": 10}},
                  "disks": {"/d": {"completed": 1, "bytes": 10}}, "files_completed": 3}, id="one-job"),
    pytest.param(L([job(1, "a"), ev("started", 1, t(0), worker=2), ev("failed", 1, t(1), error="x", retry=1), done(1, t(2))]),
                 {"durations": {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}, "workers": {None: {"completed": 1, "bytes": 0}},
                  "retries": {1: 1}}, id="attempt-ends-at-a-failure"),
    pytest.param(L([job(1, "a"), ev("started", 1, t(0), worker=1), ev("started", 1, t(1), worker=4), done(1, t(3))]),
                 {"durations": {"count": 1, "p50": 120, "p90": 120, "p99": 120, "max": 120}, "workers": {4: {"completed": 1, "bytes": 0}}}, id="last-started-of-the-attempt"),
    pytest.param(L([job(1, "a"), ev("started", 1, t(0), worker=1), done(1, t(1)), ev("started", 1, t(2), worker=7)]),
                 {"workers": {1: {"completed": 1, "bytes": 0}}, "counts": {"total": 1, "completed": 1, "failed": 0, "pending": 0, "in_flight": 0, "malformed": 0}}, id="started-after-done"),
    pytest.param(L([job(1, "a"), done(1, t(0), 5), ev("requeued", 1, t(1))]),
                 {"throughput": [], "workers": {}, "retries": {}}, id="requeued-completion-not-counted"),
    pytest.param(L([done(1, t(0), 5), ev("failed", 2, t(0), error="HTTP 503", retry=False)]),
                 {"throughput": [], "retries": {}, "errors": [{"cause": "HTTP 503", "count": 1, "examples": []}]}, id="no-job-line-not-counted-errors-without-example"),
    pytest.param(L([job(1, "a"), job(2, "b"), done(1, t(0)), done(2, t(3))]),
                 {"throughput": [{"start": t(0), "items": 1, "bytes": 0}, {"start": t(1), "items": 0, "bytes": 0}, {"start": t(2), "items": 0, "bytes": 0}, {"start": t(3), "items": 1, "bytes": 0}]}, id="empty-buckets-between"),
    pytest.param(L([job(1, "a"), done(1, "20261128T101500"), job(2, "b"), done(2, "20260230T000000Z")]),
                 {"throughput": [], "counts": {"total": 2, "completed": 2, "failed": 0, "pending": 0, "in_flight": 0, "malformed": 0}}, id="unparsable-ts-left-out-of-buckets"),
    pytest.param(L([job(1, "a"), ev("started", 1, t(5)), done(1, t(4))]),
                 {"durations": {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}}, id="negative-duration-left-out"),
    pytest.param(L([job(s, f"j{s}") for s in range(1, 5)] + [x for s in range(1, 5) for x in (ev("started", s, t(0)), done(s, t(0, s * 10)))]),
                 {"durations": {"count": 4, "p50": 20, "p90": 40, "p99": 40, "max": 40}}, id="nearest-rank-percentiles"),
    pytest.param(L([job(1, "nasa-1"), job(2, "nasa-2"), ev("failed", 1, error="HTTP 503 from ia801.us.archive.org", retry=1), ev("failed", 2, error="HTTP 503 from ia905.us.archive.org", retry=1),
                    ev("failed", 2, error="item nasa-2 is dark", retry=False), ev("failed", 1, error="HTTP 503 from ia801.us.archive.org", retry=1)]),
                 {"errors": [{"cause": "HTTP 503 from <host>", "count": 3, "examples": ["nasa-1", "nasa-2"]}, {"cause": "item <id> is dark", "count": 1, "examples": ["nasa-2"]}],
                  "retries": {1: 1}}, id="error-causes"),
    pytest.param(L([job(1, "a"), ev("failed", 1, error="md5 mismatch for a/x_12.pdf after 3 tries", retry=1), ev("failed", 1, error="HTTP 4040 aHTTP 404", retry=1)]),
                 {"errors": [{"cause": "HTTP N aHTTP 404", "count": 1, "examples": ["a"]}, {"cause": "md5 mismatch for <id>/<host> after N tries", "count": 1, "examples": ["a"]}]}, id="numbers-and-hosts"),
    pytest.param(L([job(1, "a"), ev("started", 1, worker=Raw("-1")), done(1, None), job(2, "b"), ev("started", 2, worker=Raw("18446744073709551616")), done(2, None), job(3, "c"), ev("started", 3, worker=Raw("18446744073709551615")), done(3, None)]),
                 {"workers": {18446744073709551615: {"completed": 1, "bytes": 0}, None: {"completed": 2, "bytes": 0}}}, id="worker-must-be-a-u64"),
    pytest.param(L([job(1, "a"), done(1, None, 2**70, files=2**66), job(2, "b"), done(2, None, 1, files=Raw("-1")), job(3, "c"), done(3, None, 1, files="4")]),
                 {"files_completed": 2**66, "bytes_completed": 2**70 + 2}, id="files-of-any-size"),
    pytest.param(L([job(1, "a"), ev("failed", 1, error="x", retry=False), ev("requeued", 1), ev("failed", 1, error="x", retry=Raw("0")), done(1, None)]),
                 {"retries": {1: 1}}, id="retries-count-every-failure-that-was-not-permanent"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "expected"), RULES)
def test_model_follows_the_documented_rules(data: bytes, expected: dict[str, Any]) -> None:
    seen = ma.analyze_model(data)
    assert {k: seen[k] for k in expected} == expected


@pytest.mark.parametrize(("data", "expected"), RULES)
def test_analyze_follows_the_documented_rules(data: bytes, expected: dict[str, Any]) -> None:
    seen = assert_matches_model(data)
    assert {k: seen[k] for k in expected} == expected


def test_timestamps() -> None:
    assert ma.parse_ts("00010101T000000Z") == 0
    assert ma.format_ts(ma.parse_ts("99991231T235959Z") or 0) == "99991231T235959Z"
    for bad in ["00000101T000000Z", "20230229T000000Z", "20261128T240000Z", "20261128T101560Z",
                "\uff120261128T101500Z", "20261128T101500Z\n", "2026-11-28T10:15:00Z", 20261128]:  # fmt: skip
        assert ma.parse_ts(bad) is None, bad


def test_throughput_is_capped_to_the_most_recent_buckets() -> None:
    data = L([job(1, "a"), job(2, "b"), done(1, "20250101T000000Z"), done(2, "20261128T101500Z")])
    got = assert_matches_model(data, 60)
    assert len(got["throughput"]) == ma.MAX_BUCKETS
    assert got["throughput"][-1] == {"start": "20261128T101500Z", "items": 1, "bytes": 0}


def test_bucket_seconds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bucket_seconds"):
        analyze_bytes(b"", 0)
    with pytest.raises(TypeError):
        analyze_bytes(b"", "60")  # type: ignore[arg-type]


def test_missing_log_is_an_os_error() -> None:
    with pytest.raises(FileNotFoundError):
        native.analyze(str(SCRATCH / "no-such-log.jsonl"))


def test_job_lists_are_sequences() -> None:
    data = L(
        [
            job(1, "a"),
            job(2, "b"),
            job(3, "c"),
            done(3, None),
            done(1, None),
            ev("failed", 2, retry=False),
        ]
    )
    got = analyze_bytes(data)
    completed, failed = got["completed_jobs"], got["failed_jobs"]
    assert (len(completed), completed.seqs(), completed[0]["id"], completed[-1]["id"]) == (
        2,
        [1, 3],
        "a",
        "c",
    )
    assert [j["id"] for j in failed] == ["b"]
    with pytest.raises(IndexError):
        failed[1]
    assert repr(failed) == "<JobList len=1>"


# -- differential: hypothesis --------------------------------------------------------

SEQS = st.integers(1, 8)
IDS = st.one_of(st.sampled_from(["nasa-1", "nasa-2", "a", "x.pdf", "item 7", "é", ""]), logdata.IDS)
TIMES = st.one_of(
    st.integers(0, 400).map(lambda s: t(s // 60 % 60, s % 60)),  # within minutes
    st.sampled_from(["20261128T101500Z", "20261129T000000Z", "19691231T235959Z", "20240229T120000Z",
                     "00010101T000000Z", "99991231T235959Z", "20260230T000000Z", "20261128T246000Z",
                     "2026112T101500Z", "x", ""]),
    logdata.TIMESTAMPS,
)  # fmt: skip
WORKERS = st.one_of(st.integers(0, 20), st.integers(0, 300),
                    st.sampled_from([Raw("-1"), Raw("1.0"), "3", None, Raw("18446744073709551616"), 2**64 - 1]))  # fmt: skip
SIZES = st.one_of(
    st.integers(0, 10**12), st.sampled_from([2**64, 2**70, Raw("-1"), Raw("1.5"), "9"])
)
FILES = st.one_of(
    st.integers(0, 100),
    st.integers(65_530, 70_000),
    st.sampled_from([2**64 + 1, Raw("-2"), "3", None]),
)
DISKS = st.one_of(
    st.sampled_from(["/d1", "/d2", "/mnt/é"]),
    st.integers(0, 300).map(lambda n: f"/disk{n}"),
    st.just(None),
    st.integers(0, 3),
)
ERRORS = st.one_of(
    st.sampled_from(["HTTP 503 from ia801234.us.archive.org", "HTTP 503 from ia9.us.archive.org.", "md5 mismatch for x.pdf",
                     "item nasa-1 is dark", "item nasa-2 is dark", "HTTP 404 for nasa-1/a.txt", "read timed out (30 s)", "item a is dark"]),
    logdata.ERRORS,
)  # fmt: skip
RETRIES = st.one_of(
    st.just(False), st.integers(0, 3), st.sampled_from([True, None, "false", Raw("0.0")])
)


@st.composite
def run_line(
    draw: st.DrawFn, kind: str | None = None, seq: int | None = None, clock: int | None = None
) -> bytes:
    """A line of a realistic run (job, started, completed, failed, requeued), in any spelling."""
    kind = kind or draw(
        st.sampled_from(
            ["job", "started", "started", "completed", "completed", "failed", "requeued"]
        )
    )
    seq = seq if seq is not None else draw(SEQS)
    pairs: list[tuple[str, Any]] = [("event", kind), ("seq", seq)]
    if kind == "job":
        pairs.append(("id", draw(IDS)))
    if draw(st.integers(0, 9)):
        valid = clock is not None and draw(st.integers(0, 5))
        pairs.append(("ts", ma.format_ts(clock) if valid else draw(TIMES)))
    if kind == "started" and draw(st.integers(0, 9)):
        pairs.append(("worker", draw(WORKERS)))
    if kind == "completed" and draw(st.integers(0, 5)):
        extra: dict[str, Any] = {}
        for key, values in (("item_size", SIZES), ("files", FILES), ("disk", DISKS)):
            if draw(st.integers(0, 4)):
                extra[key] = draw(values)
        pairs.append(
            ("extra", extra if draw(st.integers(0, 9)) else draw(st.sampled_from([[], 1, None])))
        )
    if kind == "failed":
        if draw(st.integers(0, 5)):
            pairs.append(("error", draw(ERRORS)))
        retry = draw(RETRIES)
        if retry is not None:
            pairs.append(("retry", retry))
    if draw(st.integers(0, 9)) == 0:  # a duplicate key: the last one wins
        key = draw(st.sampled_from(["worker", "extra", "ts", "seq", "error"]))
        pairs.append(
            (key, draw(st.one_of(WORKERS, TIMES, SEQS, st.just({"files": 2, "disk": "/dup"}))))
        )
    if draw(st.integers(0, 3)) == 0:
        pairs = draw(st.permutations(pairs))
    style = draw(logdata.STYLES) if draw(st.integers(0, 3)) == 0 else logdata.COMPACT
    return line(pairs, style)


KINDS = st.sampled_from(
    ["started", "started", "completed", "completed", "failed", "failed", "requeued"]
)
NOISE = st.one_of(logdata.any_line(), logdata.corrupted(run_line()), run_line())


@st.composite
def analytics_logs(draw: st.DrawFn, max_events: int = 40) -> bytes:
    """A run: job lines (most first, a few later), then events for those jobs on a
    clock that mostly moves forward, with noise (any line, corrupt lines) between."""
    jobs = draw(st.integers(0, 8))
    body = [draw(run_line("job", s)) for s in range(1, jobs + 1)]
    late = draw(st.integers(0, min(2, len(body))))
    held, body = body[len(body) - late :], body[: len(body) - late]
    clock = ma.parse_ts("20261128T100000Z") or 0
    for _ in range(draw(st.integers(0, max_events))):
        clock += draw(st.sampled_from([0, 1, 5, 30, 61, 400, 86_400 * 3, -10]))
        if draw(st.integers(0, 9)) == 0:
            body.append(draw(NOISE))
            continue
        seq = draw(st.integers(1, max(jobs, 1) + 1))  # now and then one with no job line
        if draw(st.booleans()):  # a whole attempt
            body.append(draw(run_line("started", seq, clock)))
            clock += draw(st.integers(0, 100))
            body.append(
                draw(
                    run_line(
                        draw(st.sampled_from(["completed", "completed", "failed"])), seq, clock
                    )
                )
            )
        else:
            body.append(draw(run_line(draw(KINDS), seq, clock)))
        if held and draw(st.integers(0, 9)) == 0:
            body.append(held.pop())
    body += held
    endings = draw(
        st.lists(
            st.sampled_from([b"\n", b"\n", b"\n", b"\r\n"]), min_size=len(body), max_size=len(body)
        )
    )
    data = b"".join(ln + end for ln, end in zip(body, endings))
    if draw(st.integers(0, 5)) == 0:
        data += draw(NOISE)[: draw(st.integers(1, 60))]  # a torn tail
    return data


BUCKETS = st.sampled_from([1, 7, 60, 3600, 86_400 * 7, 10**12])


@PROFILE
@given(analytics_logs(), BUCKETS)
def test_analyze_matches_model_on_generated_logs(data: bytes, bucket_seconds: int) -> None:
    assert_matches_model(data, bucket_seconds)


@settings(PROFILE, max_examples=100)
@given(logdata.logs(), BUCKETS)
def test_analyze_matches_model_on_the_scan_tests_logs(data: bytes, bucket_seconds: int) -> None:
    assert_matches_model(data, bucket_seconds)


@pytest.mark.parametrize("bad", logdata.CORRUPT, ids=repr)
def test_analyze_matches_model_on_each_corrupt_line(bad: bytes) -> None:
    data = L(
        [
            job(1, "a"),
            ev("started", 1, t(0), worker=1),
            bad,
            done(1, t(1), 5, files=2, disk="/d"),
            bad,
            ev("failed", 1, error="x 1", retry=1),
        ]
    )
    assert_matches_model(data)


@settings(PROFILE, max_examples=100)
@given(st.lists(analytics_logs(max_events=25), min_size=2, max_size=3), BUCKETS)
def test_shards_of_one_run_are_each_right_and_their_buckets_line_up(
    shards: list[bytes], bucket_seconds: int
) -> None:
    """Shards of one run (their own seqs, the same clock) are analysed one by one and
    merged in Python (iabulk.report): each must be exact, and their buckets must start
    on one grid, so that buckets of the same minute add up."""
    for k, data in enumerate(shards):
        got = assert_matches_model(data, bucket_seconds)
        for bucket in got["throughput"]:
            assert (ma.parse_ts(bucket["start"]) or 0) % bucket_seconds == 0, k


# -- differential: big logs, so parallel ranges split mid-data ----------------------


def big_run(rng: random.Random, target_bytes: int) -> bytes:
    """A realistic run of ~``target_bytes``: workers over jobs with retries, permanent
    failures, requeues, a resume, corrupt lines, and events far from their job line."""
    out: list[bytes] = []
    size = 0
    n = max(1000, target_bytes // 300)
    seqs = list(range(1, n + 1))
    for seq in seqs:
        out.append(line({"event": "job", "seq": seq, "id": f"nasa-{seq:07d}", "op": "download",
                         "ts": "20261128T100000Z"}))  # fmt: skip
    clock = ma.parse_ts("20261128T100000Z") or 0
    running: dict[int, int] = {}
    errors = ["HTTP 503 from ia{n}.us.archive.org", "item {id} is dark", "md5 mismatch for {id}/x.pdf",
              "read timed out after {n} s"]  # fmt: skip
    while size < target_bytes:
        clock += rng.randint(0, 3)
        ts = ma.format_ts(clock)
        r = rng.random()
        if r < 0.35 or not running:
            seq = rng.choice(seqs) if rng.random() < 0.1 else rng.randint(1, n)
            worker = rng.randint(0, 15)
            running[seq] = worker
            ln = line({"event": "started", "seq": seq, "ts": ts, "worker": worker})
        elif r < 0.80:
            seq = rng.choice(list(running)[:32])
            del running[seq]
            q = rng.random()
            if q < 0.8:
                extra = {"item_size": rng.randint(0, 10**10), "files": rng.randint(0, 40),
                         "disk": f"/mnt/d{rng.randint(1, 3)}"}  # fmt: skip
                ln = line({"event": "completed", "seq": seq, "ts": ts, "extra": extra})
            else:
                error = rng.choice(errors).format(n=rng.randint(1, 999), id=f"nasa-{seq:07d}")
                retry = rng.choice([1, 2, False])
                ln = line({"event": "failed", "seq": seq, "ts": ts, "error": error, "retry": retry})
        elif r < 0.83:
            ln = line({"event": "requeued", "seq": rng.randint(1, n), "ts": ts})
        elif r < 0.85:
            ln = rng.choice([b"garbage", b'{"event":"completed","seq":', b""])
        elif r < 0.86:
            ln = line([("seq", rng.randint(1, n)), ("event", "started"), ("worker", 3), ("ts", ts)],
                      Style(escapes="all", space=" "))  # fmt: skip
        else:
            continue
        out.append(ln)
        size += len(ln) + 1
    return b"\n".join(out) + b"\n"


@pytest.fixture(scope="module")
def big() -> tuple[bytes, dict[str, Any]]:
    data = big_run(random.Random(20261128), 18_000_000)
    assert len(data) > 16 << 20
    return data, ma.analyze_model(data)


def test_analyze_matches_model_on_a_large_log(big: tuple[bytes, dict[str, Any]]) -> None:
    data, want = big
    got = assert_matches_model(data, want=want)
    assert (
        got["durations"]["count"] > 1000 and len(got["errors"]) >= 4 and len(got["workers"]) == 16
    )


@pytest.mark.parametrize("shift", [1, 4095, 1_000_003])
def test_analysis_does_not_depend_on_where_ranges_split(
    big: tuple[bytes, dict[str, Any]], shift: int
) -> None:
    data, want = big
    assert_matches_model(b" " * shift + b"\n" + data, want=want)
