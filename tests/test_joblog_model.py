"""The Rust scan agrees with the plain-Python model (tests/model.py) on every log.

Two kinds of test: the format's rules as worked examples, each checked against
both the model and the scan (so the model itself is pinned to the documented
semantics); and differential tests, where hypothesis writes logs full of odd
spellings and corruption and the scan must report exactly what the model does.
"""

# ruff: noqa: E501  (the tables of cases read one case per line)

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import logdata
import model
import pytest
from hypothesis import HealthCheck, given, settings
from iabulk import _native as native
from logdata import MAX_SEQ, Raw, event, job, line

CI = os.environ.get("CI") == "true"
settings.register_profile(
    "joblog-ci",
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "joblog-dev",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("joblog-ci" if CI else "joblog-dev")

COUNTS = [
    "max_seq", "total", "completed", "failed", "pending", "in_flight", "malformed",
    "bytes_completed", "first_ts", "last_ts", "source", "resolved", "size",
]  # fmt: skip


# -- helpers -----------------------------------------------------------------------


SCRATCH = Path(tempfile.mkdtemp(prefix="iabulk-model-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def scan_bytes(data: bytes, collect_ids: bool = False) -> Any:
    """The Rust scan of ``data`` written to a file."""
    path = SCRATCH / "log.jsonl"
    path.write_bytes(data)
    return native.scan(str(path), collect_ids)


def typed(value: Any) -> str:
    """Canonical text of a parsed JSON value that tells 1, 1.0, true and -0.0 apart.

    (Text rather than nested tuples so that comparing deep values does not
    recurse; ints in hex, which has no digit limit.)
    """
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return f"int:{value:x}"
    if isinstance(value, float):
        return f"float:{value.hex()}"
    if isinstance(value, str):
        return json.dumps(value)
    parts: list[str] = []  # loops, not comprehensions: one frame per level of nesting
    if isinstance(value, list):
        for v in value:
            parts.append(typed(v))
        return "[" + ",".join(parts) + "]"
    if isinstance(value, dict):
        for k in sorted(value):
            parts.append(json.dumps(k) + ":" + typed(value[k]))
        return "{" + ",".join(parts) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def probe_seqs(want: model.ModelSnapshot) -> set[int]:
    """Every seq worth asking the bitmap about: a range around the data and the edges."""
    near = [s for s in [want.max_seq, *want.bitmap] if s < 100_000]
    top = max([*near, 20])
    edges = {MAX_SEQ - 1, MAX_SEQ, MAX_SEQ + 1, 99_999_998, 2**63, -(2**63)}
    return set(range(-2, top + 3)) | edges | want.bitmap


def assert_scan_matches_model(
    data: bytes, collect_ids: bool = False, want: model.ModelSnapshot | None = None
) -> None:
    """Every field of the Rust scan of ``data`` equals the model's (``want``, if known)."""
    got = scan_bytes(data, collect_ids)
    want = want or model.scan_bytes(data)
    context = f"log: {data!r}"
    for name in COUNTS:
        assert getattr(got, name) == getattr(want, name), f"{name} differs; {context}"
    assert [tuple(e) for e in got.errors] == want.errors, f"errors differ; {context}"
    probes = probe_seqs(want)
    assert {s for s in probes if s in got.bitmap} == {s for s in probes if s in want.bitmap}, (
        f"bitmap differs; {context}"
    )
    assert len(got.bitmap) == len(want.bitmap), f"bitmap length differs; {context}"
    pending = got.pending_jobs
    assert len(pending) == want.pending, f"len(pending_jobs) differs; {context}"
    assert pending.seqs() == [j["seq"] for j in want.pending_jobs], (
        f"pending seqs differ; {context}"
    )
    assert [typed(j) for j in pending] == [typed(j) for j in want.pending_jobs], (
        f"pending job dicts differ; {context}"
    )
    if collect_ids:
        assert got.ids is not None
        assert len(got.ids) == len(want.ids), f"ids differ; {context}"
        assert all(i in got.ids for i in want.ids), f"ids differ; {context}"
        assert "no such id \u0000" not in got.ids


def observed(snap: Any, probes: range = range(-2, 30)) -> dict[str, Any]:
    """A snapshot (Rust or model) as plain values, for the worked examples."""
    pending = list(snap.pending_jobs)
    return {
        **{name: getattr(snap, name) for name in COUNTS},
        "errors": [tuple(e) for e in snap.errors],
        "bitmap": {s for s in [*probes, MAX_SEQ] if s in snap.bitmap},
        "pending_ids": [j["id"] for j in pending],
        "pending_seqs": [j["seq"] for j in pending],
    }


# -- the rules, as worked examples ------------------------------------------------

L = logdata.log
A, B = job(1, "a"), job(2, "b")
TORN = b'{"event":"comp'

RULES: list[Any] = [
    pytest.param(L([A, event("completed", 1)]), {"completed": 1, "pending": 0, "bitmap": {1}}, id="completed-is-done"),
    pytest.param(L([A, event("failed", 1, error="dark", retry=False)]), {"failed": 1, "pending": 0, "bitmap": {1}}, id="failed-retry-false-is-permanent"),
    pytest.param(L([A, event("failed", 1, error="x", retry=True)]), {"failed": 0, "pending": 1, "bitmap": set()}, id="failed-retry-true-will-be-retried"),
    pytest.param(L([A, event("failed", 1, error="x", retry=0)]), {"failed": 0, "pending": 1, "bitmap": set()}, id="failed-retry-0-will-be-retried"),
    pytest.param(L([A, event("failed", 1, error="x")]), {"failed": 0, "pending": 1, "bitmap": set()}, id="failed-without-retry-will-be-retried"),
    pytest.param(L([A, event("failed", 1, retry=None)]), {"failed": 0, "pending": 1}, id="failed-retry-null-will-be-retried"),
    pytest.param(L([A, event("completed", 1), event("failed", 1, retry=1)]), {"completed": 0, "pending": 1, "bitmap": set()}, id="last-terminal-wins-failed"),
    pytest.param(L([A, event("failed", 1, retry=False), event("completed", 1)]), {"completed": 1, "failed": 0, "bitmap": {1}}, id="last-terminal-wins-completed"),
    pytest.param(L([A, event("completed", 1), event("requeued", 1)]), {"completed": 0, "pending": 1, "bitmap": set()}, id="requeued-undoes-done"),
    pytest.param(L([A, event("completed", 1), event("started", 1)]), {"completed": 1, "in_flight": 0, "bitmap": {1}}, id="started-after-done-keeps-done"),
    pytest.param(L([A, B, event("started", 1), event("started", 2), event("failed", 2, retry=1)]), {"in_flight": 1, "pending": 2}, id="started-without-terminal-is-in-flight"),
    pytest.param(L([A, event("started", 1), event("requeued", 1)]), {"in_flight": 0, "pending": 1}, id="requeued-ends-in-flight"),
    pytest.param(L([A, event("started", 1), event("completed", 1), event("requeued", 1)]), {"in_flight": 0, "pending": 1}, id="requeued-after-completed-is-not-in-flight"),
    pytest.param(L([event("completed", 7), event("failed", 8, retry=False)]), {"total": 0, "completed": 0, "failed": 0, "bitmap": {7, 8}}, id="done-without-job-line-in-bitmap-only"),
    pytest.param(L([event("completed", 1), A]), {"completed": 1, "pending": 0, "bitmap": {1}}, id="event-before-job-line-counts"),
    pytest.param(L([A, job(1, "b")]), {"total": 1, "malformed": 1, "pending_ids": ["a"]}, id="duplicate-job-line-malformed-first-wins"),
    pytest.param(L([line({"event": "job", "seq": 1}), job(1, "b")]), {"total": 1, "malformed": 1, "pending_ids": ["b"]}, id="job-without-id-malformed"),
    pytest.param(L([line({"event": "job", "seq": 1, "id": 5})]), {"total": 0, "malformed": 1}, id="job-with-number-id-malformed"),
    pytest.param(L([job(MAX_SEQ, "top")]), {"total": 1, "max_seq": MAX_SEQ, "pending_seqs": [MAX_SEQ]}, id="seq-cap-is-valid"),
    pytest.param(L([job(MAX_SEQ + 1, "x"), job(0, "x"), job(-1, "x"), event("completed", MAX_SEQ + 1)]), {"total": 0, "malformed": 4, "max_seq": 0}, id="seq-out-of-range-malformed"),
    pytest.param(L([line({"event": "job", "seq": Raw(s), "id": "x"}) for s in ["1.0", "true", '"1"', "1e0", "null", "-0"]]), {"total": 0, "malformed": 6}, id="seq-not-an-integer-malformed"),
    pytest.param(L([line({"event": "completed", "id": "x"}), line({"event": "started"})]), {"malformed": 2}, id="seq-missing-malformed"),
    pytest.param(L([line({"event": "checkpoint", "seq": -5, "ts": "0"}), line({"event": "JOB", "seq": 1})]), {"malformed": 0, "first_ts": None, "total": 0}, id="unknown-kinds-ignored"),
    pytest.param(L([line({"event": 1, "seq": 1}), line({"seq": 1}), line({"event": None})]), {"malformed": 3}, id="event-not-a-string-malformed"),
    pytest.param(L([b"", b"  ", b"\t", b"\r", A]), {"malformed": 0, "total": 1}, id="blank-lines-ignored"),
    pytest.param(L([A]) + TORN, {"malformed": 1, "total": 1}, id="torn-tail-malformed"),
    pytest.param(L([A]) + event("completed", 1), {"malformed": 1, "completed": 0, "pending": 1}, id="complete-object-without-newline-is-torn"),
    pytest.param(L([A, event("completed", 1)], b"\r\n"), {"malformed": 0, "completed": 1}, id="crlf-endings"),
    pytest.param(L([A, b'{"event":"completed","seq":1,"x":NaN}', b'{"event":"completed","seq":1,"x":-Infinity}']), {"malformed": 2, "completed": 0}, id="nan-and-infinity-malformed"),
    pytest.param(L([A, b'{"event":"completed","seq":1,"x":"\\ud800"}']), {"malformed": 1, "completed": 0}, id="lone-surrogate-malformed"),
    pytest.param(L([b'{"event":"checkpoint","x":"\\udc00"}']), {"malformed": 1}, id="lone-surrogate-in-unknown-kind-malformed"),
    pytest.param(L([b'{"event":"completed","seq":1,"x":"\\ud800","x":1}']), {"malformed": 1}, id="lone-surrogate-in-shadowed-duplicate-malformed"),
    pytest.param(L([b'{"event":"job","seq":1,"id":"\\ud83d\\ude00"}']), {"malformed": 0, "pending_ids": ["\U0001f600"]}, id="surrogate-pair-is-one-char"),
    pytest.param(L([b'{"event":"job","seq":1,"id":"a","seq":2}']), {"max_seq": 2, "pending_seqs": [2]}, id="duplicate-keys-last-wins"),
    pytest.param(L([b'{"event":"job","s\\u0065q":3,"\\u0069d":"\\u00e9\\"\\\\\\/"}']), {"max_seq": 3, "pending_ids": ['\u00e9"\\/']}, id="escaped-keys-and-values"),
    pytest.param(L([b'{"event":"job","id":"\\"seq\\":4","extra":{"seq":5},"seq":1}']), {"max_seq": 1, "pending_ids": ['"seq":4']}, id="seq-only-at-top-level"),
    pytest.param(L([A, b'{"event":"completed","seq":1,"x":"\xff"}', b'{"event":"completed","seq":1,"x":"\xc3"}']), {"malformed": 2, "completed": 0}, id="invalid-utf8-malformed"),
    pytest.param(L([A, b'{"event":"completed","seq":1,"x":"\xed\xa0\x80"}', b'{"event":"completed","seq":1,"x":"\xc0\xaf"}']), {"malformed": 2, "completed": 0}, id="utf8-surrogate-and-overlong-malformed"),
    pytest.param(L([b"[1]", b'"x"', b"3", b"null", b"{}{}"]), {"malformed": 5}, id="not-one-object-malformed"),
    pytest.param(L([job(1, "a"), b'{"event":"completed","seq":1,"x":' + b"[" * 511 + b"]" * 511 + b"}", b'{"event":"failed","seq":1,"x":' + b"[" * 512 + b"]" * 512 + b"}"]), {"malformed": 1, "completed": 1}, id="nesting-deeper-than-512-malformed"),
    pytest.param(L([A, B, job(3, "c"), event("completed", 1, extra={"item_size": 10}), event("completed", 2, extra={"item_size": 5}), event("completed", 3, extra={"item_size": -4}), event("completed", 9, extra={"item_size": 100})]), {"bytes_completed": 15, "completed": 3}, id="bytes-completed-counts-counted-completions"),
    pytest.param(L([A, event("completed", 1, extra={"item_size": 10}), event("failed", 1, retry=1)]), {"bytes_completed": 0}, id="bytes-of-undone-completion-not-counted"),
    pytest.param(L([event("failed", 1, error="b"), event("failed", 2, error="a", retry=False), event("failed", 3, error="b"), event("failed", 4, error="c"), event("failed", 5, error=7)]), {"errors": [("b", 2), ("a", 1), ("c", 1)]}, id="errors-histogram-by-count-then-message"),
    pytest.param(L([line({"event": "job", "seq": 1, "id": "a", "ts": "20260101T000000Z"}), b'{"event":"started","seq":1,"ts":"\\u0032"}', line({"event": "checkpoint", "ts": "0"}), line({"event": "completed", "seq": 1, "ts": 5}), b'{"event":"failed","seq":1,"ts":"\\u0039"}']), {"first_ts": "2", "last_ts": "9"}, id="first-last-ts-over-known-kinds"),
    pytest.param(L([line({"event": "source", "q": 1}), line({"event": "resolved"}), line({"event": "source", "q": 2})]), {"source": '{"event":"source","q":2}', "resolved": False}, id="source-is-last-source-line"),
    pytest.param(L([line({"event": "source", "q": 1}), line({"event": "resolved", "n": 0})]), {"source": '{"event":"source","q":1}', "resolved": True}, id="resolved-after-source"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "expected"), RULES)
def test_model_follows_the_documented_rules(data: bytes, expected: dict[str, Any]) -> None:
    seen = observed(model.scan_bytes(data))
    assert {k: seen[k] for k in expected} == expected


@pytest.mark.parametrize(("data", "expected"), RULES)
def test_scan_follows_the_documented_rules(data: bytes, expected: dict[str, Any]) -> None:
    seen = observed(scan_bytes(data))
    assert {k: seen[k] for k in expected} == expected


def test_empty_log_is_all_zeros() -> None:
    snap = scan_bytes(b"")
    assert (snap.total, snap.pending, snap.malformed, snap.max_seq, snap.size) == (0, 0, 0, 0, 0)
    assert (snap.first_ts, snap.last_ts, snap.source, snap.resolved) == (None, None, None, False)
    assert list(snap.pending_jobs) == [] and len(snap.bitmap) == 0


# -- differential: hypothesis -------------------------------------------------------


@PROFILE
@given(logdata.logs())
def test_scan_matches_model_on_generated_logs(data: bytes) -> None:
    assert_scan_matches_model(data)


@settings(PROFILE, max_examples=PROFILE.max_examples // 3)
@given(logdata.logs(max_lines=8))
def test_collected_ids_match_model(data: bytes) -> None:
    assert_scan_matches_model(data, collect_ids=True)


@pytest.mark.parametrize("bad", logdata.CORRUPT, ids=repr)
def test_scan_matches_model_on_each_corrupt_line(bad: bytes) -> None:
    assert_scan_matches_model(logdata.log([A, event("completed", 1), bad, event("requeued", 1)]))


def nested(depth: int) -> bytes:
    """A job line whose ``x`` nests arrays so that the line is ``depth`` levels deep."""
    return b'{"event":"job","seq":1,"id":"a","x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


EDGE_CASES = [
    pytest.param(L([nested(512)]), id="nesting-512-deep"),
    pytest.param(L([nested(513)]), id="nesting-513-deep"),
    pytest.param(L([nested(5000)]), id="nesting-5000-deep"),
    pytest.param(L([b'{"event":"job","seq":1,"id":"a","x":' + b'[{"y":' * 256 + b"1" + b"}]" * 256 + b"}"]), id="nesting-513-deep-mixed"),
    pytest.param(L([b'{"event":"job","seq":1,"id":"a","x":' + b'[{"y":' * 255 + b"[1]" + b"}]" * 255 + b"}"]), id="nesting-512-deep-mixed"),
    pytest.param(
        L([b'{"event":"job","seq":1,"id":"a","x":' + b"7" * 4301 + b"}"]),
        id="4301-digit-integer-python-cannot-read",
    ),
    pytest.param(
        L([b'{"event":"job","seq":1,"id":"a","x":-' + b"7" * 4300 + b"}"]),
        id="4300-digit-integer-python-can-read",
    ),
    pytest.param(L([A, b'{"event":"completed","seq":1,"extra":{"item_size":' + b"9" * 30 + b"}}"]), id="item-size-above-2**64"),
    pytest.param(L([A, B, *[event("completed", s, extra={"item_size": 2**63 + 1}) for s in (1, 2)]]), id="bytes-completed-above-2**64"),
    pytest.param(L([b'{"event":"job","seq":1,"id":"a","x":"' + b"y" * 2_500_000 + b'"}', B]), id="pending-job-longer-than-a-read-block"),
    pytest.param(L([b'{"event":"job","seq":1,"id":"a","x":[1e400,-0.0,0.1,5e-324,1E+2,-12345678901234567890123]}']), id="numbers-in-a-pending-job"),
    pytest.param(L([b'{"event":"started","seq":1,"ts":"\\uffff"}', b'{"event":"started","seq":1,"ts":"\\ud800\\udc00"}', b'{"event":"started","seq":1,"ts":"\\u0000"}']), id="ts-order-is-code-point-order"),
    pytest.param(L([b'{"event":"failed","seq":1,"error":"\\u0041"}', b'{"event":"failed","seq":1,"error":"A"}']), id="errors-are-counted-decoded"),
    pytest.param(L([b'{"event":"job","seq":1,"id":"\\u0000\\r\\n"}', b'{"event":"job","seq":2,"id":""}']), id="odd-ids"),
    pytest.param(L([A]) + b"  \r", id="blank-torn-tail"),
    pytest.param(L([A, b'{"event":"completed","seq":1}\r{"event":"requeued","seq":1}']), id="lone-cr-inside-a-line"),
    pytest.param(b"\n" * 5 + L([A]) + b"\r\n" * 3, id="only-newlines-around"),
]  # fmt: skip


@pytest.mark.parametrize("data", EDGE_CASES)
def test_scan_matches_model_on_edge_cases(data: bytes) -> None:
    assert_scan_matches_model(data, collect_ids=True)


def test_bench_reference_matches_model() -> None:
    """The plain-Python reader in benches/joblog.py, the benchmark's baseline, is honest."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "benches"))
    try:
        import joblog as bench  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    data = (
        logdata.random_log(random.Random(7), 400_000) + b'{"event":"job","seq":3,"id":"\\ud800"}\n'
    )
    path = SCRATCH / "reference.jsonl"
    path.write_bytes(data)
    got = bench.reference_scan(str(path))
    want = model.scan_bytes(data)
    offsets = got.pop("pending_offsets")
    assert got.pop("done_seqs") == len(want.bitmap)
    assert got == {name: getattr(want, name) for name in got}
    assert [bench.reference_job_at(str(path), o) for o in offsets] == want.pending_jobs


def test_pending_jobs_is_a_sequence() -> None:
    data = logdata.log([A, B, job(3, "c"), event("completed", 2)])
    pending = scan_bytes(data).pending_jobs
    assert (pending[0]["id"], pending[1]["id"], pending[-1]["id"]) == ("a", "c", "c")
    with pytest.raises(IndexError):
        pending[2]
    assert pending.seqs() == [1, 3]


# -- differential: big logs, so parallel ranges split mid-data ----------------------
#
# The scan reads 1 MiB blocks and splits files of 16 MiB and more into ranges
# scanned on threads (one per 8 MiB, up to the core count); these logs are
# ~19 MB with lines longer than a block. With a seq's job line duplicated in two
# ranges the scan falls back to one sequential pass, so the distinct-jobs log
# is the one that exercises the parallel fold.


@pytest.fixture(scope="module", params=["distinct-jobs", "duplicate-jobs"])
def big_log(request: pytest.FixtureRequest) -> tuple[bytes, model.ModelSnapshot]:
    duplicates = request.param == "duplicate-jobs"
    data = logdata.random_log(random.Random(20261128), 11_000_000, duplicates, giant_lines=4)
    assert len(data) > 16 << 20
    return data, model.scan_bytes(data)


def test_scan_matches_model_on_large_logs(big_log: tuple[bytes, model.ModelSnapshot]) -> None:
    assert_scan_matches_model(big_log[0], collect_ids=True, want=big_log[1])


@pytest.mark.parametrize("shift", [1, 7, 4095, 65_537, 1_000_003, 3_999_999])
def test_scan_result_does_not_depend_on_where_blocks_split(
    big_log: tuple[bytes, model.ModelSnapshot], shift: int
) -> None:
    """Blank padding shifts every block and range boundary without changing what the log says."""
    data, want = big_log
    padded = b" " * shift + b"\n" + data
    got = scan_bytes(padded)
    for name in COUNTS:
        expected = len(padded) if name == "size" else getattr(want, name)
        assert getattr(got, name) == expected, name
    assert [tuple(e) for e in got.errors] == want.errors
    assert got.pending_jobs.seqs() == [j["seq"] for j in want.pending_jobs]
    assert len(got.bitmap) == len(want.bitmap)
    assert all(s in got.bitmap for s in want.bitmap)
    jobs = list(got.pending_jobs)
    assert [typed(j) for j in jobs] == [typed(j) for j in want.pending_jobs]
