"""`iabulk status`, `--retry-failed` and `iabulk verify` on real runs against the stand-in."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from iabulk import JobLog

from tests.commands import iabulk, search_download
from tests.standin import ArchiveStandin, Corpus


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
