"""`iabulk status`, `--retry-failed` and `iabulk verify` on real runs against the stand-in."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from iabulk import JobLog

from tests import logdata
from tests.commands import IABULK, iabulk, search_download
from tests.standin import ArchiveStandin, Corpus, FaultPlan


def corpus_with_dark() -> Corpus:
    corpus = Corpus()
    for i in range(6):
        corpus.add_item(f"item-{i}", [("a.bin", 30_000 + i), ("sub/b.txt", 5_000)], collection="c")
    corpus.add_item("item-dark", [("a.bin", 1000)], collection="c", dark=True)
    return corpus


def first_run(srv: ArchiveStandin, tmp_path: Path) -> tuple[Path, Path]:
    log, dest = tmp_path / "run.jsonl", tmp_path / "files"
    dest.mkdir()
    result = search_download(srv, log, dest, "-q")
    assert result.returncode == 1, result.stderr  # the dark item
    return log, dest


def test_status_report_and_failed_list(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    srv = standin(corpus_with_dark())
    log, _ = first_run(srv, tmp_path)
    text = iabulk(srv, "status", str(log))
    assert text.returncode == 0, text.stderr
    assert "7/7 jobs done" in text.stdout
    assert "item is dark   e.g. item-dark" in text.stdout
    full = json.loads(iabulk(srv, "status", "--json", str(log)).stdout)
    assert full["counts"]["completed"] == 6 and full["files_completed"] == 6 * 4
    assert full["errors"] == [{"cause": "item is dark", "count": 1, "examples": ["item-dark"]}]
    failed = iabulk(srv, "status", "--failed", str(log))
    assert failed.stdout == "item-dark\n"


def test_retry_failed_puts_failures_back_and_resumes(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = corpus_with_dark()
    srv = standin(corpus)
    log, dest = first_run(srv, tmp_path)
    corpus["item-dark"].dark = False  # the item became available
    plain = iabulk(srv, "download", "--joblog", str(log), "-q")
    assert plain.returncode == 1  # a plain resume leaves permanent failures alone
    retried = iabulk(srv, "download", "--joblog", str(log), "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert "1 failed job(s) put back to pending" in retried.stderr
    assert (dest / "item-dark" / "a.bin").stat().st_size == 1000
    assert JobLog(log).status() == {"total": 7, "completed": 7, "failed": 0, "pending": 0}


def test_verify_finds_damage_and_requeue_plus_resume_repairs_it(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = corpus_with_dark()
    srv = standin(corpus)
    log, dest = first_run(srv, tmp_path)
    clean = iabulk(srv, "verify", str(log))
    assert clean.returncode == 0, clean.stderr
    assert "6 intact, 0 damaged" in clean.stderr

    corrupted = dest / "item-2" / "a.bin"
    data = bytearray(corrupted.read_bytes())
    data[100] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    (dest / "item-4" / "sub" / "b.txt").unlink()

    found = iabulk(srv, "verify", str(log))
    assert found.returncode == 1
    assert "damaged item-2: md5 mismatch a.bin" in found.stderr
    assert "damaged item-4: missing sub/b.txt" in found.stderr
    assert JobLog(log).status()["completed"] == 6  # verify alone changes nothing

    requeued = iabulk(srv, "verify", "--requeue", str(log))
    assert requeued.returncode == 1
    assert "2 item(s) put back to pending" in requeued.stderr
    assert JobLog(log).status()["pending"] == 2

    resumed = iabulk(srv, "download", "--joblog", str(log), "-q")
    assert resumed.returncode == 1, resumed.stderr  # the dark item is still failed
    again = iabulk(srv, "verify", str(log))
    assert again.returncode == 0, again.stderr
    assert JobLog(log).status() == {"total": 7, "completed": 6, "failed": 1, "pending": 0}


def test_verify_of_an_item_with_no_selected_files_is_intact(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    srv = standin(corpus_with_dark())
    log, dest = tmp_path / "run.jsonl", tmp_path / "files"
    dest.mkdir()
    done = search_download(srv, log, dest, "--glob", "*.pdf", "-q")
    assert done.returncode == 1, done.stderr  # the dark item
    checked = iabulk(srv, "verify", str(log))
    assert checked.returncode == 0, checked.stderr
    assert "6 intact, 0 damaged" in checked.stderr


def test_verify_requeue_never_leaves_a_completed_item_without_its_files(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    """Damaged files go only once their item is pending again: an interrupted
    verify leaves each item completed and whole (if damaged) or pending."""
    srv = standin(corpus_with_dark())
    log, dest = first_run(srv, tmp_path)
    for i in range(6):
        path = dest / f"item-{i}" / "a.bin"
        data = bytearray(path.read_bytes())
        data[7] ^= 0xFF
        path.write_bytes(bytes(data))
    srv.faults = FaultPlan(metadata_delay=0.5)  # slow enough to interrupt half-way
    checking = subprocess.Popen(
        [IABULK, "verify", "--requeue", "-w", "1", str(log)],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while '"requeued"' not in log.read_text():
        assert checking.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    checking.send_signal(signal.SIGINT)
    _, stderr = checking.communicate(timeout=60)
    assert checking.returncode == 130, stderr
    completed = {job["id"] for job in JobLog(log).analytics()["completed_jobs"]}
    pending = JobLog(log).status()["pending"]
    assert 1 <= pending < 6 and len(completed) == 6 - pending
    assert f"{pending} item(s) put back to pending" in stderr
    for i in range(6):
        assert (dest / f"item-{i}" / "a.bin").exists() == (f"item-{i}" in completed)

    srv.faults = FaultPlan()
    resumed = iabulk(srv, "download", "--joblog", str(log), "-q")
    assert resumed.returncode == 1, resumed.stderr  # the dark item
    rest = iabulk(srv, "verify", "--requeue", str(log))
    assert f"{6 - pending} item(s) put back to pending" in rest.stderr
    iabulk(srv, "download", "--joblog", str(log), "-q")
    assert iabulk(srv, "verify", str(log)).returncode == 0


def test_verify_requeue_with_a_directory_where_a_file_belongs(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    srv = standin(corpus_with_dark())
    log, dest = first_run(srv, tmp_path)
    item = dest / "item-2"
    data = bytearray((item / "a.bin").read_bytes())
    data[0] ^= 0xFF
    (item / "a.bin").write_bytes(bytes(data))
    (item / "sub" / "b.txt").unlink()
    (item / "sub" / "b.txt").mkdir()
    found = iabulk(srv, "verify", "--requeue", str(log))
    assert found.returncode == 1
    assert "damaged item-2: md5 mismatch a.bin; not a file: sub/b.txt" in found.stderr
    assert f"not requeued: remove {item / 'sub' / 'b.txt'} first" in found.stderr
    assert "put back to pending" not in found.stderr  # a download could not repair it
    assert JobLog(log).status()["completed"] == 6
    (item / "sub" / "b.txt").rmdir()
    again = iabulk(srv, "verify", "--requeue", str(log))
    assert again.returncode == 1 and "1 item(s) put back to pending" in again.stderr
    resumed = iabulk(srv, "download", "--joblog", str(log), "-q")
    assert resumed.returncode == 1  # the dark item, still
    assert iabulk(srv, "verify", str(log)).returncode == 0


def test_verify_requeue_with_a_file_where_a_directory_belongs(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    srv = standin(corpus_with_dark())
    log, dest = first_run(srv, tmp_path)
    sub = dest / "item-3" / "sub"
    (sub / "b.txt").unlink()
    sub.rmdir()
    sub.write_bytes(b"in the way")
    found = iabulk(srv, "verify", "--requeue", str(log))
    assert found.returncode == 1
    assert f"damaged item-3: missing sub/b.txt; not requeued: remove {sub} first" in found.stderr
    assert JobLog(log).status()["completed"] == 6


def test_verify_names_a_destination_that_is_gone(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    srv = standin(corpus_with_dark())
    log, dest = first_run(srv, tmp_path)
    later = tmp_path / "later"
    later.mkdir()
    again = search_download(srv, log, later, "-q")  # the same source, recorded with --destdir later
    assert again.returncode == 1, again.stderr  # the dark item
    dest.rename(tmp_path / "unmounted")
    found = iabulk(srv, "verify", str(log))
    assert found.returncode == 2, found.stderr
    assert found.stderr == (
        f"iabulk: destination {dest} (where 6 completed item(s) went) does not exist: "
        "mount it, or name every destination with --destdir\n"
    )


def test_status_watch_as_the_readme_writes_it(tmp_path: Path) -> None:
    log = tmp_path / "nasa.jsonl"
    log.write_text(
        json.dumps({"event": "job", "seq": 1, "id": "a", "op": "download", "ts": "20261128T1015Z"})
        + "\n"
    )
    watching = subprocess.Popen(
        [IABULK, "status", "--watch", "--every", "0.5", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watching.stdout is not None
    lines = [watching.stdout.readline() for _ in range(3)]
    assert "every 0.5 s; Ctrl-C to stop" in lines[0], lines
    watching.send_signal(signal.SIGINT)
    _, stderr = watching.communicate(timeout=30)
    assert watching.returncode == 0 and not stderr, stderr


def test_verify_requeue_on_a_read_only_destination(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, small_disks: Callable[[str, str], Path]
) -> None:
    """Nothing can be removed or stamped: a wrong-size file's item is still put
    back to pending (the resume will see the size); a wrong-md5 file's item
    stays completed, since nothing could stop a resume from trusting it."""
    dest = small_disks("files", "8m")
    srv = standin(corpus_with_dark())
    log = tmp_path / "run.jsonl"
    assert search_download(srv, log, dest, "-q").returncode == 1  # the dark item
    with open(dest / "item-1" / "a.bin", "r+b") as short:
        short.truncate(100)
    flipped = dest / "item-2" / "a.bin"
    data = bytearray(flipped.read_bytes())
    data[5] ^= 0xFF
    flipped.write_bytes(bytes(data))
    subprocess.run(["mount", "-o", "remount,ro", str(dest)], check=True)
    result = iabulk(srv, "verify", "--requeue", str(log))
    assert result.returncode == 1
    assert "could not remove a.bin: Read-only file system" in result.stderr
    assert "left completed: cannot mark a.bin unverified (Read-only file system)" in result.stderr
    assert "1 item(s) put back to pending" in result.stderr
    pending = [job["id"] for job in JobLog(log).load()["pending"]]
    assert pending == ["item-1"]


def write_log(path: Path, *lines: bytes) -> Path:
    path.write_bytes(logdata.log(list(lines)))
    return path


def run_job(seq: int, identifier: str, worker: int | None = None) -> list[bytes]:
    """A job's lines, completed in 2 s (by ``worker``, or by no worker named)."""
    named = {} if worker is None else {"worker": worker}
    return [
        logdata.job(seq, identifier),
        logdata.event("started", seq, "20261128T101500Z", **named),
        logdata.event("completed", seq, "20261128T101502Z", extra={"item_size": 1}),
    ]


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IABULK, "status", *args], capture_output=True, text=True, timeout=60)


def test_status_json_names_the_unnamed_worker_null_for_one_log_or_several(tmp_path: Path) -> None:
    one = write_log(tmp_path / "one.jsonl", *run_job(1, "a", worker=3), *run_job(2, "b"))
    two = write_log(tmp_path / "two.jsonl", *run_job(1, "c", worker=1), *run_job(2, "d"))
    alone = json.loads(status("--json", str(one)).stdout)["workers"]
    assert list(alone) == ["3", "null"]
    merged = json.loads(status("--json", str(one), str(two)).stdout)["workers"]
    assert merged == {
        "1": {"completed": 1, "bytes": 1},
        "3": {"completed": 1, "bytes": 1},
        "null": {"completed": 2, "bytes": 2},
    }
    assert list(merged) == ["1", "3", "null"]  # as one log orders them: by worker, null last


def failed_job(seq: int, identifier: str, *causes: str) -> list[bytes]:
    """A job that fails with each of ``causes`` in turn, the last time for good."""
    return [
        logdata.job(seq, identifier),
        *(
            logdata.event(
                "failed",
                seq,
                "20261128T101501Z",
                error=cause,
                retry=attempt if attempt < len(causes) else False,
            )
            for attempt, cause in enumerate(causes, 1)
        ),
    ]


def test_status_says_how_many_causes_it_leaves_out_and_failed_lists_every_job(
    tmp_path: Path,
) -> None:
    few = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    log = write_log(
        tmp_path / "run.jsonl",
        *failed_job(1, "burnt-1", "disk on fire"),
        *failed_job(2, "burnt-2", "disk on fire"),
        *[line for n, cause in enumerate(few, 3) for line in failed_job(n, f"job-{cause}", cause)],
        *failed_job(9, "twice", "foxtrot", "golf"),
    )
    text = status(str(log))
    assert text.returncode == 0, text.stderr
    shown = [line for line in text.stdout.splitlines() if "e.g." in line]
    assert len(shown) == 5 and "disk on fire" in shown[0] and "foxtrot" in shown[1]
    assert "… and 3 more causes (3 failures); see --json" in text.stdout  # delta, echo, golf
    failed = status("--failed", str(log))
    expected = ["burnt-1", "burnt-2", *(f"job-{cause}" for cause in few), "twice"]
    assert failed.stdout.split() == expected


@pytest.mark.parametrize("shown", [[], ["--json"], ["--failed"]], ids=["report", "json", "failed"])
def test_status_watch_refreshes_exactly_what_status_prints(
    tmp_path: Path, shown: list[str]
) -> None:
    log = write_log(
        tmp_path / "run.jsonl",
        *run_job(1, "fine", worker=0),
        *failed_job(2, "broken", "HTTP 500", "item is dark"),
        *failed_job(3, "gone", "item is dark"),
    )
    once = status(*shown, str(log))
    assert once.returncode == 0 and once.stdout, once.stderr
    watching = subprocess.Popen(
        [IABULK, "status", "--watch", "--every", "0.5", *shown, str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watching.stdout is not None
    refreshes: list[list[str]] = []
    while len(refreshes) < 3:
        line = watching.stdout.readline()
        assert line, "the watch ended by itself"
        if "(every 0.5 s; Ctrl-C to stop)" in line:
            refreshes.append([])
        else:
            assert refreshes, f"printed before the first refresh: {line!r}"
            refreshes[-1].append(line)
    watching.send_signal(signal.SIGINT)
    _, stderr = watching.communicate(timeout=30)
    assert watching.returncode == 0 and not stderr, stderr
    assert "".join(refreshes[0]) == "".join(refreshes[1]) == once.stdout
