"""Bad input: one clear line on stderr, the documented exit code, nothing lost.

Each case runs the real ``iabulk`` command. "Nothing lost" is checked where
it can be: a job log given to a refused command is byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.commands import IABULK
from tests.standin import ArchiveStandin, Corpus, FaultPlan


def run(
    args: list[str], env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IABULK, *args], env=env, capture_output=True, text=True, timeout=120, **kw
    )  # type: ignore[call-overload]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith("iabulk: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert text in result.stderr, result.stderr


@pytest.fixture
def srv(standin: Callable[..., ArchiveStandin]) -> ArchiveStandin:
    corpus = Corpus()
    corpus.add_item("one", [("a.bin", 1000)], collection="c")
    return standin(corpus)


@pytest.mark.parametrize(
    "flags, text",
    [
        (["-w", "0"], "--workers must be between 1 and 64"),
        (["-w", "-3"], "--workers must be between 1 and 64"),
        (["-w", "100000"], "--workers must be between 1 and 64"),
        (["-w", "many"], "invalid int value"),
        (["--retries", "-1"], "--retries must be 0 or more"),
        (["--disk-margin", "lots"], "--disk-margin: not a size"),
        (["--limit-rate", "fast"], "--limit-rate: not a size"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--shard", "4/3"], "need 1 <= K <= N"),
        (["--shard", "x"], "--shard takes K/N"),
    ],
)
def test_bad_numbers_are_usage_errors(tmp_path: Path, flags: list[str], text: str) -> None:
    log = tmp_path / "j.jsonl"
    result = run(["download", "one", "--joblog", str(log), "--destdir", str(tmp_path), *flags])
    assert_one_line_error(result, 2, text)


def test_missing_destdir(tmp_path: Path) -> None:
    result = run(
        ["download", "one", "--joblog", str(tmp_path / "j"), "--destdir", str(tmp_path / "nope")]
    )
    assert_one_line_error(result, 2, "destination directory does not exist")


def test_no_source_and_no_log(tmp_path: Path) -> None:
    result = run(["download", "--joblog", str(tmp_path / "j.jsonl")])
    assert_one_line_error(result, 2, "nothing to download")


def test_two_sources_at_once(tmp_path: Path) -> None:
    result = run(["download", "one", "--search", "x", "--joblog", str(tmp_path / "j.jsonl")])
    assert_one_line_error(result, 2, "give one source")


def test_missing_itemlist(tmp_path: Path) -> None:
    result = run(
        [
            "download",
            "--itemlist",
            str(tmp_path / "none.txt"),
            "--joblog",
            str(tmp_path / "j.jsonl"),
        ]
    )
    assert_one_line_error(result, 2, "item list not found")


def test_empty_itemlist(srv: ArchiveStandin, tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("\n\n  \n")
    result = run(
        [
            "download",
            "--itemlist",
            str(items),
            "--joblog",
            str(tmp_path / "j.jsonl"),
            "--destdir",
            str(tmp_path),
            "-q",
        ],
        env=srv.client_env(),
    )
    assert_one_line_error(result, 2, "gave no identifiers")


def test_search_with_no_results(srv: ArchiveStandin, tmp_path: Path) -> None:
    result = run(
        [
            "download",
            "--search",
            "collection:nothing-here",
            "--joblog",
            str(tmp_path / "j.jsonl"),
            "--destdir",
            str(tmp_path),
            "-q",
        ],
        env=srv.client_env(),
    )
    assert_one_line_error(result, 2, "gave no identifiers")


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01\x02binary\xff\xfe", b"just some text\nmore text\n", b"[1, 2, 3]\n"],
    ids=["binary", "text", "json-array"],
)
def test_a_file_that_is_not_a_job_log_is_left_alone(tmp_path: Path, content: bytes) -> None:
    log = tmp_path / "j.jsonl"
    log.write_bytes(content)
    result = run(["download", "one", "--joblog", str(log), "--destdir", str(tmp_path)])
    assert_one_line_error(result, 2, "is not a job log")
    assert log.read_bytes() == content


def test_job_log_that_is_a_directory(tmp_path: Path) -> None:
    result = run(["download", "one", "--joblog", str(tmp_path), "--destdir", str(tmp_path)])
    assert_one_line_error(result, 2, "job log is a directory")


def test_job_log_in_a_missing_directory(tmp_path: Path) -> None:
    result = run(["download", "one", "--joblog", str(tmp_path / "no" / "j.jsonl")])
    assert_one_line_error(result, 2, "directory of the job log does not exist")


def test_job_log_of_another_operation(tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    log.write_text(
        json.dumps({"event": "job", "seq": 1, "id": "x", "op": "upload", "ts": "20261128T101500Z"})
        + "\n"
    )
    before = log.read_bytes()
    result = run(["download", "--joblog", str(log), "--destdir", str(tmp_path)])
    assert_one_line_error(result, 2, "holds 'upload' jobs")
    assert log.read_bytes() == before


def test_empty_job_log_with_a_source_is_fine(srv: ArchiveStandin, tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    log.write_bytes(b"")
    result = run(
        [
            "download",
            "one",
            "--joblog",
            str(log),
            "--destdir",
            str(tmp_path),
            "--disk-margin",
            "0",
            "-q",
        ],
        env=srv.client_env(),
    )
    assert result.returncode == 0, result.stderr


def test_status_of_missing_and_directory_logs(tmp_path: Path) -> None:
    assert_one_line_error(run(["status", str(tmp_path / "none.jsonl")]), 2, "no such job log")
    assert_one_line_error(run(["status", str(tmp_path)]), 2, "not a job log")


def test_status_counts_garbage_lines_instead_of_failing(tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    log.write_bytes(b'{"event":"job","seq":1,"id":"a","op":"download"}\n\xff\xfe garbage\n{"ev')
    result = run(["status", str(log), "--json"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    counts = report["counts"]
    assert counts["total"] == 1 and counts["pending"] == 1 and counts["malformed"] == 2


def test_second_process_on_the_same_log_is_refused(
    tmp_path: Path, standin: Callable[..., ArchiveStandin]
) -> None:
    corpus = Corpus()
    corpus.add_item("slow", [("big.bin", 3_000_000)], collection="c")
    srv = standin(corpus, FaultPlan(bandwidth=300_000))
    log = tmp_path / "j.jsonl"
    args = [
        "download",
        "slow",
        "--joblog",
        str(log),
        "--destdir",
        str(tmp_path),
        "--disk-margin",
        "0",
        "-q",
    ]
    first = subprocess.Popen([IABULK, *args], env=srv.client_env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        part = tmp_path / "slow" / "big.bin.iabulk-part"
        while not part.exists():  # the first run holds the log and is mid-transfer
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = run(args, env=srv.client_env())
        assert_one_line_error(second, 2, f"in use by another iabulk process (pid {first.pid})")
    finally:
        first.kill()
        first.wait()


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    ro = tmp_path / "ro"
    ro.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield ro
    subprocess.run(["umount", "-l", str(ro)], check=False)


def test_unwritable_destdir(tmp_path: Path, readonly_dir: Path) -> None:
    result = run(
        ["download", "one", "--joblog", str(tmp_path / "j.jsonl"), "--destdir", str(readonly_dir)]
    )
    assert_one_line_error(result, 2, "destination directory is not writable")


def test_job_log_on_a_read_only_filesystem(tmp_path: Path, readonly_dir: Path) -> None:
    result = run(
        ["download", "one", "--joblog", str(readonly_dir / "j.jsonl"), "--destdir", str(tmp_path)]
    )
    assert_one_line_error(result, 2, "job log")


def test_credentials_never_reach_the_log_or_the_output(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = Corpus()
    corpus.add_item("ok", [("a.bin", 5000)], collection="c")
    corpus.add_item("dark", [("a.bin", 5000)], collection="c", dark=True)
    srv = standin(corpus, FaultPlan(retry_after=0).fail_first("ok", ["503", "reset"]))
    config = Path(srv.ia_config_file).read_text()
    secrets = [
        line.split("=", 1)[1].strip()
        for line in config.splitlines()
        if line.split("=", 1)[0].strip() in ("access", "secret", "logged-in-sig")
    ]
    assert secrets
    log = tmp_path / "j.jsonl"
    result = run(
        [
            "download",
            "ok",
            "dark",
            "no-such",
            "--joblog",
            str(log),
            "--destdir",
            str(tmp_path),
            "--disk-margin",
            "0",
        ],
        env=srv.client_env(),
    )
    assert result.returncode == 1
    status = run(["status", str(log), "--json"])
    for text in (log.read_text(), result.stdout, result.stderr, status.stdout):
        for secret in secrets:
            assert secret not in text
