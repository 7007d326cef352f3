"""A log written by the upstream ``ia`` bulk engine is read by iabulk, and the other way round.

``fixtures/upstream_session.jsonl`` is hand-written in exactly the upstream
line shapes (``json.dumps(record, separators=(",", ":"))``, so non-ASCII as
``\\u`` escapes; key order event, seq, id, op, ts, then the extra fields): five
jobs, one completed at once, one completed after a retry, one permanently
failed (item is dark), one started when the process was killed, one waiting
for a retry, and a torn last line from the kill.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from iabulk.joblog import JobLog

FIXTURE = Path(__file__).parent / "fixtures" / "upstream_session.jsonl"
TS = re.compile(r"^\d{8}T\d{6}Z$")


def upstream_read(path: Path) -> dict[str, Any]:
    """How the upstream engine reads a log, restated in a few lines.

    Each stripped, non-blank line goes through ``json.loads`` (lines that do
    not parse are skipped); ``job`` lines are the jobs; ``completed``, or
    ``failed`` with ``retry`` exactly ``False``, marks a seq done.
    """
    jobs: list[dict[str, Any]] = []
    completed: set[int] = set()
    failed: set[int] = set()
    with open(path, encoding="utf-8") as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            kind = record.get("event")
            if kind == "job":
                jobs.append(record)
            elif kind == "completed":
                completed.add(record["seq"])
            elif kind == "failed" and record.get("retry") is False:
                failed.add(record["seq"])
    done = completed | failed
    return {
        "max_seq": max((j["seq"] for j in jobs), default=0),
        "status": {
            "total": len(jobs),
            "completed": len(completed),
            "failed": len(failed),
            "pending": len(jobs) - len(done),
        },
        "pending_ids": [j["id"] for j in jobs if j["seq"] not in done],
    }


def copy_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "session.jsonl"
    shutil.copyfile(FIXTURE, path)
    return path


def test_upstream_session_is_read_by_iabulk(tmp_path: Path) -> None:
    log = JobLog(copy_fixture(tmp_path))
    loaded = log.load()
    assert loaded["status"] == {"total": 5, "completed": 2, "failed": 1, "pending": 2}
    assert loaded["max_seq"] == 5
    assert [j["id"] for j in loaded["pending"]] == ["caf\u00e9-recordings", "nasa-apollo-13"]
    assert [s for s in range(8) if s in loaded["bitmap"]] == [1, 2, 3]
    assert loaded["pending"][0] == {
        "event": "job",
        "seq": 4,
        "id": "caf\u00e9-recordings",
        "op": "download",
        "ts": "20261128T101501Z",
    }


def test_upstream_session_analytics(tmp_path: Path) -> None:
    snap = JobLog(copy_fixture(tmp_path)).snapshot()
    assert snap.in_flight == 1  # seq 4: started, then the kill
    assert snap.malformed == 1  # the torn last line
    assert snap.bytes_completed == 123456 + 654321
    assert [tuple(e) for e in snap.errors] == [("HTTP 503", 2), ("item is dark", 1)]
    assert (snap.first_ts, snap.last_ts) == ("20261128T101500Z", "20261128T101532Z")


def test_iabulk_and_upstream_reader_agree_on_upstream_session(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path)
    upstream = upstream_read(path)
    loaded = JobLog(path).load()
    assert loaded["status"] == upstream["status"]
    assert loaded["max_seq"] == upstream["max_seq"]
    assert [j["id"] for j in loaded["pending"]] == upstream["pending_ids"]


def test_iabulk_resuming_an_upstream_session_leaves_a_clean_log(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path)
    complete_part = FIXTURE.read_bytes().rsplit(b"\n", 1)[0] + b"\n"
    with JobLog(path) as log:
        log.write_event("completed", 4, extra={"item_size": 42})
    data = path.read_bytes()
    assert data.startswith(complete_part)
    assert json.loads(data[len(complete_part) :])["seq"] == 4
    assert upstream_read(path)["status"] == {"total": 5, "completed": 3, "failed": 1, "pending": 1}
    assert JobLog(path).snapshot().malformed == 0


def write_session_with_iabulk(path: Path) -> None:
    with JobLog(path) as log:
        log.write_record({"event": "source", "search": "collection:nasa"})
        log.write_job(1, "nasa-apollo-11", "download")
        log.write_job(2, "caf\u00e9-\u9879\u76ee", "download", destdir="/mnt/disk1")
        log.write_job(3, "nasa-dark-item", "download")
        log.write_job(4, "nasa-apollo-13", "download")
        log.write_record({"event": "resolved", "count": 4})
        log.write_event("started", 1, worker=0)
        log.write_event("completed", 1, extra={"item_size": 123456})
        log.write_event("started", 2, worker=1)
        log.write_event("failed", 2, error="HTTP 503", retry=1)
        log.write_event("started", 2, worker=1)
        log.write_event("completed", 2, extra={"item_size": 7})
        log.write_event("started", 3, worker=2)
        log.write_event("failed", 3, error="item is dark", retry=False)
        log.write_event("started", 4, worker=0)


def test_log_written_by_iabulk_is_read_by_upstream_reader(tmp_path: Path) -> None:
    path = tmp_path / "iabulk.jsonl"
    write_session_with_iabulk(path)
    upstream = upstream_read(path)
    assert upstream["status"] == {"total": 4, "completed": 2, "failed": 1, "pending": 1}
    assert upstream["pending_ids"] == ["nasa-apollo-13"]
    assert upstream["max_seq"] == 4
    loaded = JobLog(path).load()
    assert (loaded["status"], loaded["max_seq"]) == (upstream["status"], upstream["max_seq"])


def test_iabulk_writes_the_upstream_line_shapes(tmp_path: Path) -> None:
    path = tmp_path / "iabulk.jsonl"
    write_session_with_iabulk(path)
    raw_lines = path.read_bytes().split(b"\n")
    assert raw_lines[-1] == b"", "every line ends in a newline"
    records = [json.loads(raw) for raw in raw_lines[:-1]]
    assert all(b", " not in raw and b'": ' not in raw for raw in raw_lines), "compact JSON"
    for record in records:
        assert isinstance(record["event"], str) and TS.match(record["ts"]), record
    jobs = [r for r in records if r["event"] == "job"]
    assert [list(j)[:5] for j in jobs] == [["event", "seq", "id", "op", "ts"]] * 4
    assert jobs[1]["destdir"] == "/mnt/disk1" and jobs[1]["id"] == "caf\u00e9-\u9879\u76ee"
    events = [r for r in records if r["event"] in ("started", "completed", "failed")]
    assert all(list(e)[:3] == ["event", "seq", "ts"] and type(e["seq"]) is int for e in events)
    assert {type(e["retry"]) for e in events if e["event"] == "failed"} == {int, bool}
    assert [e["retry"] for e in events if e["event"] == "failed"] == [1, False]
    assert [e["worker"] for e in events if e["event"] == "started"] == [0, 1, 1, 2, 0]
    assert [e["extra"] for e in events if e["event"] == "completed"] == [
        {"item_size": 123456},
        {"item_size": 7},
    ]
