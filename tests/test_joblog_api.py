"""The ``JobLog`` API from Python: upstream method names and meanings, appender promises."""

from __future__ import annotations

import collections.abc
import concurrent.futures
import copy as copy_module
import json
import os
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path

import iabulk.joblog as joblog_module
import pytest
from iabulk._native import MAX_SEQ, Bitmap, IdSet, JobList, Snapshot, scan
from iabulk.joblog import JobLog, LogChangedError, UnrecordableError, encode_line

TS = re.compile(r"^\d{8}T\d{6}Z$")


def lines_of(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(raw) for raw in data.split(b"\n")[:-1]]


@pytest.fixture
def session(tmp_path: Path) -> Path:
    """Four jobs: 1 completed, 2 permanently failed, 3 retried and in flight, 4 untouched."""
    path = tmp_path / "log.jsonl"
    with JobLog(path) as log:
        for seq, ident in enumerate(["alpha", "beta", "gamma", "delta"], start=1):
            log.write_job(seq, ident, "download")
        log.write_event("started", 1, worker=0)
        log.write_event("completed", 1, extra={"item_size": 100})
        log.write_event("failed", 2, error="item is dark", retry=False)
        log.write_event("failed", 3, error="HTTP 503", retry=1)
        log.write_event("started", 3, worker=1)
    return path


# -- writing ----------------------------------------------------------------------


def test_write_job_and_write_event_produce_upstream_lines(session: Path) -> None:
    records = lines_of(session)
    assert records[0] == {
        "event": "job",
        "seq": 1,
        "id": "alpha",
        "op": "download",
        "ts": records[0]["ts"],
    }
    assert records[5] == {
        "event": "completed",
        "seq": 1,
        "ts": records[5]["ts"],
        "extra": {"item_size": 100},
    }
    assert records[6]["retry"] is False and records[7]["retry"] == 1
    assert all(TS.match(str(r["ts"])) for r in records)
    assert len(records) == 9


def test_write_job_keeps_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with JobLog(path) as log:
        log.write_job(1, "caf\u00e9", "download", destdir="/mnt/a", files=["x.pdf"])
    (record,) = lines_of(path)
    assert (record["id"], record["destdir"], record["files"]) == ("caf\u00e9", "/mnt/a", ["x.pdf"])


def test_job_lines_reach_the_disk_before_the_next_event(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = JobLog(path)
    log.write_job(1, "a", "download")
    log.write_job(2, "b", "download")
    log.write_event("started", 1)
    assert [(r["event"], r["seq"]) for r in lines_of(path)] == [
        ("job", 1),
        ("job", 2),
        ("started", 1),
    ]
    log.close()


def test_a_log_reads_the_lines_it_has_queued_itself(tmp_path: Path) -> None:
    """Upstream code picks the next seq with get_max_seq() + 1 right after write_job."""
    log = JobLog(tmp_path / "j.jsonl")
    log.write_job(1, "a", "download")
    log.write_job(log.get_max_seq() + 1, "b", "download")
    assert log.get_max_seq() == 2
    assert log.status() == {"total": 2, "completed": 0, "failed": 0, "pending": 2}
    assert [job["id"] for job in log.iter_pending_jobs()] == ["a", "b"]
    assert log.analytics()["counts"]["total"] == 2
    log.close()
    assert [line["seq"] for line in lines_of(tmp_path / "j.jsonl")] == [1, 2]


def test_the_pending_list_slices_like_a_list(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "j.jsonl")
    for seq in range(1, 8):
        log.write_job(seq, f"id{seq}", "download")
    pending = log.load()["pending"]
    as_list = list(pending)
    for part in (slice(1, 3), slice(None, None, -2), slice(-2, None), slice(10, None)):
        assert pending[part] == as_list[part]
    assert pending[-1] == as_list[-1]
    with pytest.raises(TypeError):
        pending["a"]  # type: ignore[call-overload]
    log.close()


def test_close_is_idempotent_and_the_log_can_be_reopened(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = JobLog(path)
    log.write_job(1, "a", "download")
    log.close()
    log.close()
    log.write_event("completed", 1)
    log.close()
    assert [r["event"] for r in lines_of(path)] == ["job", "completed"]


# -- reading: the upstream API ------------------------------------------------------


def test_build_resume_bitmap_holds_the_done_seqs(session: Path) -> None:
    bitmap = JobLog(session).build_resume_bitmap()
    assert [s for s in range(-1, 7) if s in bitmap] == [1, 2]
    assert len(bitmap) == 2


def test_iter_pending_jobs_yields_job_dicts_in_seq_order(session: Path) -> None:
    log = JobLog(session)
    pending = list(log.iter_pending_jobs(log.build_resume_bitmap()))
    assert [(j["seq"], j["id"], j["op"]) for j in pending] == [
        (3, "gamma", "download"),
        (4, "delta", "download"),
    ]
    assert [j["id"] for j in log.iter_pending_jobs()] == ["gamma", "delta"]


def test_iter_pending_jobs_skips_seqs_in_the_given_bitmap(session: Path) -> None:
    extra_done = Bitmap()
    extra_done.set(4)
    assert [j["seq"] for j in JobLog(session).iter_pending_jobs(extra_done)] == [1, 2, 3]


def test_get_max_seq(session: Path, tmp_path: Path) -> None:
    assert JobLog(session).get_max_seq() == 4
    assert JobLog(tmp_path / "missing.jsonl").get_max_seq() == 0


def test_status_has_exactly_the_four_upstream_keys(session: Path) -> None:
    assert JobLog(session).status() == {"total": 4, "completed": 1, "failed": 1, "pending": 2}


def test_load_returns_everything_in_one_pass(session: Path) -> None:
    loaded = JobLog(session).load()
    assert set(loaded) == {"max_seq", "bitmap", "pending", "status"}
    assert loaded["max_seq"] == 4
    assert loaded["status"] == {"total": 4, "completed": 1, "failed": 1, "pending": 2}
    assert [s for s in range(6) if s in loaded["bitmap"]] == [1, 2]


def test_load_pending_is_lazy_but_sized(session: Path) -> None:
    pending = JobLog(session).load()["pending"]
    assert not isinstance(pending, list)
    assert len(pending) == 2
    first = next(iter(pending))
    assert isinstance(first, dict) and first["id"] == "gamma"
    assert [j["id"] for j in pending] == ["gamma", "delta"]
    assert pending[1]["id"] == "delta"


def test_reading_sees_lines_appended_since_the_last_read(session: Path) -> None:
    log = JobLog(session)
    assert log.status()["pending"] == 2
    with JobLog(session) as writer:
        writer.write_event("completed", 4)
    assert log.status()["pending"] == 1


def test_missing_log_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    log = JobLog(path)
    assert log.status() == {"total": 0, "completed": 0, "failed": 0, "pending": 0}
    loaded = log.load()
    assert (loaded["max_seq"], len(loaded["pending"]), len(loaded["bitmap"])) == (0, 0, 0)
    assert list(log.iter_pending_jobs()) == []
    assert not path.exists()


def test_scan_of_a_missing_path_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan(str(tmp_path / "missing.jsonl"))


def test_unreadable_path_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        JobLog(tmp_path).status()
    with pytest.raises(OSError):
        JobLog(tmp_path).write_event("completed", 1)


# -- torn tail -------------------------------------------------------------------------


def test_torn_tail_is_cut_before_the_first_append(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    whole = b'{"event":"job","seq":1,"id":"a","op":"download","ts":"20261128T101500Z"}\n'
    fragment = b'{"event":"comp'
    path.write_bytes(whole + fragment)
    assert JobLog(path).snapshot().malformed == 1
    assert path.read_bytes() == whole + fragment, "reading never repairs"
    log = JobLog(path)
    log.write_event("completed", 1)
    assert log.repaired_bytes == len(fragment)
    log.close()
    data = path.read_bytes()
    assert data.startswith(whole)
    appended = data[len(whole) :]
    assert appended.count(b"\n") == 1 and appended.endswith(b"\n"), "one new line, no fragment"
    record = json.loads(appended)
    assert (record["event"], record["seq"]) == ("completed", 1)
    assert JobLog(path).snapshot().malformed == 0
    assert JobLog(path).status() == {"total": 1, "completed": 1, "failed": 0, "pending": 0}


@pytest.mark.parametrize("tail_bytes", [1, 70_000, 3_000_000])
def test_long_torn_tail_is_cut_whole(tmp_path: Path, tail_bytes: int) -> None:
    path = tmp_path / "log.jsonl"
    whole = b'{"event":"job","seq":1,"id":"a"}\n{"event":"started","seq":1}\n'
    path.write_bytes(whole + b'{"event":"checkpoint","blob":"' + b"x" * tail_bytes)
    with JobLog(path) as log:
        log.write_event("completed", 1)
    data = path.read_bytes()
    assert data.startswith(whole) and data.count(b"\n") == 3
    assert JobLog(path).snapshot().malformed == 0


def test_log_that_is_only_a_fragment_is_cut_to_empty(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"event":"job","seq":1,"id":"a"')
    with JobLog(path) as log:
        log.write_event("started", 1)
        assert log.repaired_bytes == 31
    assert [r["event"] for r in lines_of(path)] == ["started"]


def test_log_without_torn_tail_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    whole = b'{"event":"job","seq":1,"id":"a"}\n'
    path.write_bytes(whole)
    with JobLog(path) as log:
        log.write_event("completed", 1)
        assert log.repaired_bytes == 0
    assert path.read_bytes().startswith(whole)


# -- one appender per file ----------------------------------------------------------


def test_second_appender_in_the_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    first = JobLog(path)
    first.open_for_append()
    with pytest.raises(OSError, match=str(os.getpid())):
        JobLog(path).write_event("started", 1)
    first.close()
    with JobLog(path) as second:
        second.write_event("started", 1)


def test_second_appender_in_another_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    hold_the_lock = (
        "import sys; from iabulk.joblog import JobLog; "
        "log = JobLog(sys.argv[1]); log.open_for_append(); print('locked', flush=True); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold_the_lock, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OSError, match=rf"\b{holder.pid}\b"):
            JobLog(path).write_event("started", 1)
    finally:
        holder.communicate("", timeout=30)
    with JobLog(path) as log:  # the lock went with the process
        log.write_event("started", 1)


def test_concurrent_write_event_loses_and_tears_no_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = JobLog(path)
    threads_n, per_thread = 16, 500
    start = threading.Barrier(threads_n)

    def hammer(worker: int) -> None:
        start.wait()
        for i in range(per_thread):
            log.write_event(
                "completed", worker * per_thread + i + 1, worker=worker, note="x" * (i % 50)
            )

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    records = lines_of(path)
    assert len(records) == threads_n * per_thread
    assert sorted(r["seq"] for r in records) == list(range(1, threads_n * per_thread + 1))
    for worker in range(threads_n):  # each thread's lines appear in the order it wrote them
        mine = [r["seq"] for r in records if r["worker"] == worker]
        assert mine == sorted(mine)
    assert len(JobLog(path).build_resume_bitmap()) == threads_n * per_thread


# -- Bitmap and IdSet --------------------------------------------------------------


def test_bitmap_rejects_seqs_outside_the_cap() -> None:
    bitmap = Bitmap()
    for bad in (-1, MAX_SEQ + 1):
        with pytest.raises(ValueError):
            bitmap.set(bad)
    assert MAX_SEQ == 100_000_000


def test_bitmap_membership() -> None:
    bitmap = Bitmap(16)
    bitmap.set(0)
    bitmap.set(5)
    bitmap.set(5)
    assert len(bitmap) == 2
    assert 5 in bitmap and 0 in bitmap and 4 not in bitmap and 1_000 not in bitmap
    assert -1 not in bitmap and MAX_SEQ + 1 not in bitmap and 2**80 not in bitmap
    assert "5" not in bitmap and None not in bitmap
    bitmap.clear(5)
    assert 5 not in bitmap and len(bitmap) == 1


def test_bitmap_at_the_cap_is_12_5_megabytes() -> None:
    bitmap = Bitmap()
    assert bitmap.size_bytes < 1024
    bitmap.set(MAX_SEQ)
    assert 12_500_000 <= bitmap.size_bytes <= 12_600_000
    assert MAX_SEQ in bitmap and MAX_SEQ - 1 not in bitmap and len(bitmap) == 1


def test_idset_is_an_exact_set_of_identifiers() -> None:
    ids = IdSet()
    assert ids.add("nasa-apollo-11") is True
    assert ids.add("nasa-apollo-11") is False
    assert ids.add("caf\u00e9") is True
    assert "nasa-apollo-11" in ids and "caf\u00e9" in ids
    assert "nasa-apollo-12" not in ids and "cafe" not in ids and 5 not in ids
    assert len(ids) == 2


def test_scan_can_collect_job_ids(session: Path) -> None:
    ids = JobLog(session).snapshot(collect_ids=True).ids
    assert ids is not None and len(ids) == 4 and "gamma" in ids and "epsilon" not in ids
    assert JobLog(session).snapshot().ids is None


@pytest.mark.parametrize(
    "call",
    [
        lambda log: log.write_job(True, "a", "download"),
        lambda log: log.write_job(2.0, "b", "download"),
        lambda log: log.write_job(4, 12345, "download"),
        lambda log: log.write_job(5, None, "download"),
        lambda log: log.write_event("completed", 0),
        lambda log: log.write_event("completed", "6"),
        lambda log: log.note_event("started", MAX_SEQ + 1),
        lambda log: log.requeue([0], "x"),
        lambda log: log.write_event("completed", 1, extra={"rate": float("nan")}),
        lambda log: log.write_event("completed", 1, extra={"rate": float("inf")}),
        lambda log: log.write_event("failed", 1, error="bad \udcff"),
        lambda log: log.write_event("completed", 1, extra={"o": object()}),
    ],
)
def test_a_record_every_reader_would_drop_is_refused_when_written(
    tmp_path: Path, call: object
) -> None:
    log = JobLog(tmp_path / "j.jsonl")
    log.write_job(1, "a", "download")
    log.sync()
    before = (tmp_path / "j.jsonl").read_bytes()
    with pytest.raises((TypeError, ValueError)):
        call(log)  # type: ignore[operator]
    log.close()
    assert (tmp_path / "j.jsonl").read_bytes() == before
    assert JobLog(tmp_path / "j.jsonl").snapshot().malformed == 0


def test_iter_pending_jobs_yields_the_jobs_a_given_bitmap_leaves_out(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "j.jsonl")
    for seq in range(1, 6):
        log.write_job(seq, f"x{seq}", "download")
    log.write_event("completed", 1)
    log.write_event("failed", 2, error="e", retry=1)
    log.write_event("failed", 3, error="e", retry=False)
    seqs = lambda bitmap: [job["seq"] for job in log.iter_pending_jobs(bitmap)]  # noqa: E731
    assert seqs(None) == seqs(log.build_resume_bitmap()) == [2, 4, 5]
    assert seqs(Bitmap()) == [1, 2, 3, 4, 5]  # as upstream: every job not in the bitmap
    only_completed = Bitmap()
    only_completed.set(1)
    assert seqs(only_completed) == [2, 3, 4, 5]  # the permanent failure comes back


def test_one_pending_iterator_shared_by_threads_hands_each_job_out_once(
    tmp_path: Path,
) -> None:
    log = JobLog(tmp_path / "j.jsonl")
    for seq in range(1, 20_001):
        log.write_job(seq, f"x{seq}", "download")
    log.close()
    jobs = iter(JobLog(tmp_path / "j.jsonl").load()["pending"])
    seen: list[int] = []
    errors: list[BaseException] = []

    def take() -> None:
        try:
            seen.extend(job["seq"] for job in jobs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(seen) == list(range(1, 20_001))


# -- the lazy job list is a read-only sequence ---------------------------------------


def seven_pending(tmp_path: Path) -> tuple[Path, JobList]:
    path = tmp_path / "j.jsonl"
    with JobLog(path) as log:
        for seq in range(1, 8):
            log.write_job(seq, f"id{seq}", "download")
    return path, JobLog(path).load()["pending"]


def rewrite_in_place(path: Path, data: bytes) -> None:
    """New contents, same inode: what an open JobList still reads."""
    with open(path, "r+b") as file:
        file.write(data)
        file.truncate()


def test_a_job_list_is_a_sequence(tmp_path: Path) -> None:
    _, pending = seven_pending(tmp_path)
    as_list = list(pending)
    assert isinstance(pending, collections.abc.Sequence)
    assert list(reversed(pending)) == as_list[::-1]
    assert pending.index(as_list[3]) == 3 and pending.count(as_list[3]) == 1
    assert as_list[6] in pending and {"seq": 8} not in pending
    with pytest.raises(ValueError):
        pending.index(as_list[3], 4)


def test_a_job_list_equals_any_sequence_of_the_same_jobs(tmp_path: Path) -> None:
    path, pending = seven_pending(tmp_path)
    as_list = list(pending)
    assert pending == as_list and as_list == pending and pending == tuple(as_list)
    assert not pending != as_list
    assert pending == JobLog(path).load()["pending"]
    assert pending != as_list[:-1] and pending != as_list[::-1]
    assert pending != [{**as_list[0], "id": "other"}, *as_list[1:]]
    assert pending != "not jobs" and pending != 7 and pending != {"seq": 1}
    empty = JobLog(tmp_path / "empty.jsonl").load()["pending"]
    assert empty == [] and empty == () and empty != "" and empty != b""
    with pytest.raises(TypeError):
        hash(pending)


def test_a_job_list_compares_lengths_before_reading_a_job(tmp_path: Path) -> None:
    path, pending = seven_pending(tmp_path)
    rewrite_in_place(path, b"")  # reading any job now fails
    assert pending != [{}] * 6 and pending != []


def test_a_job_list_over_a_log_rewritten_since_says_so(tmp_path: Path) -> None:
    path, pending = seven_pending(tmp_path)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    for changed in (
        b"".join(lines[::-1]),  # same offsets, other jobs at them
        bytes(b if b == ord("\n") else ord("x") for b in original),  # not JSON any more
        original[:20],  # cut short
    ):
        rewrite_in_place(path, changed)
        for read in (
            lambda: pending[0],
            lambda: pending[-1],
            lambda: list(pending),
            lambda: list(reversed(pending)),
        ):
            with pytest.raises(LogChangedError, match="changed") as caught:
                read()
            assert isinstance(caught.value, ValueError)
            assert "\n" not in str(caught.value)


# -- pickling a bitmap ---------------------------------------------------------------


@pytest.mark.parametrize("members", [[], [0], [1, 63, 64, 99_999_937, MAX_SEQ]])
def test_a_bitmap_survives_pickling(members: list[int]) -> None:
    bitmap = Bitmap()
    for n in members:
        bitmap.set(n)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(bitmap, protocol))
        assert isinstance(copy, Bitmap) and len(copy) == len(members)
        assert copy.issuperset(bitmap) and bitmap.issuperset(copy)
        assert all(n in copy for n in members) and MAX_SEQ - 1 not in copy
    assert len(copy_module.deepcopy(bitmap)) == len(members)


def test_a_bitmap_reaches_a_process_pool(tmp_path: Path) -> None:
    bitmap = Bitmap()
    bitmap.set(MAX_SEQ)
    bitmap.set(7)
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        assert pool.submit(len, bitmap).result() == 2


def test_a_bitmap_state_beyond_the_cap_is_refused() -> None:
    bitmap = Bitmap()
    bitmap.set(MAX_SEQ)
    state = bitmap.__getstate__()
    with pytest.raises(ValueError, match=str(MAX_SEQ)):
        Bitmap().__setstate__(state + b"\x01")
    with pytest.raises(TypeError):
        Bitmap().__setstate__("not bytes")  # type: ignore[arg-type]


# -- paths, seqs and nesting ---------------------------------------------------------


def test_a_bytes_path_works_as_with_open(tmp_path: Path) -> None:
    path = os.fsencode(tmp_path) + b"/log-\xff.jsonl"  # not even UTF-8
    with JobLog(path) as log:
        log.write_job(1, "a", "download")
        log.write_event("completed", 1)
    assert JobLog(path).status() == {"total": 1, "completed": 1, "failed": 0, "pending": 0}
    assert [job["id"] for job in JobLog(path).analytics()["completed_jobs"]] == ["a"]
    assert os.path.exists(path)


def test_a_seq_that_already_has_a_job_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with JobLog(path) as log:
        log.write_job(1, "a", "download")
        log.write_job(2, "b", "download")
        with pytest.raises(ValueError, match=r"\bseq 2\b"):
            log.write_job(2, "b-again", "download")
    before = path.read_bytes()
    with JobLog(path) as log:  # a new writer knows the jobs already in the log
        for taken in (1, 2):
            with pytest.raises(ValueError, match=rf"\bseq {taken}\b"):
                log.write_job(taken, "again", "download")
    assert path.read_bytes() == before
    with JobLog(path) as log:
        log.write_job(3, "c", "download")
    assert [job["id"] for job in JobLog(path).load()["pending"]] == ["a", "b", "c"]


def test_refusing_a_taken_seq_does_not_read_the_log_on_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[str] = []
    real_scan = joblog_module.scan

    def counted(path: str, collect_ids: bool = False) -> Snapshot:
        scans.append(path)
        return real_scan(path, collect_ids)

    monkeypatch.setattr(joblog_module, "scan", counted)
    with JobLog(tmp_path / "j.jsonl") as log:
        for seq in range(1, 2001):
            log.write_job(seq, f"x{seq}", "download")
    assert len(scans) <= 1

    # A snapshot taken while holding the log (what a resolve starts from) is the
    # one read: the writes that follow it scan nothing more.
    scans.clear()
    with JobLog(tmp_path / "j.jsonl") as log:
        log.open_for_append()
        first = log.snapshot().max_seq
        for seq in range(first + 1, first + 101):
            log.write_job(seq, f"y{seq}", "download")
        with pytest.raises(ValueError, match=f"seq {first} is not above"):
            log.write_job(first, "again", "download")
    assert len(scans) == 1 and first == 2000


def nested(depth: int) -> object:
    """A value that is ``depth`` containers deep (0: a plain number)."""
    value: object = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_an_extra_nested_deeper_than_any_reader_reads_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with JobLog(path) as log:
        log.write_job(1, "a", "download", extra=nested(511))  # the line's object makes 512
        log.write_event("completed", 1, extra=nested(511))
        for deeper in (512, 900):
            with pytest.raises(UnrecordableError, match="512"):
                log.write_job(2, "b", "download", extra=nested(deeper))
            with pytest.raises(UnrecordableError, match="512"):
                log.write_event("completed", 1, extra=nested(deeper))
        with pytest.raises(UnrecordableError):
            encode_line({"event": "x", "deep": nested(600)})
    snap = JobLog(path).snapshot()
    assert (snap.total, snap.completed, snap.malformed) == (1, 1, 0)
