"""Bad input: one clear line on stderr, the documented exit code, nothing lost.

Each case runs the real ``iabulk`` command. "Nothing lost" is checked where
it can be: a job log given to a refused command is byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from iabulk import JobLog

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
def readonly_dir(small_disks: Callable[[str, str], Path]) -> Path:
    return small_disks("ro", "1m,ro")


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


# -- refused runs leave the log as it was ---------------------------------------


@pytest.mark.parametrize(
    "flags, text",
    [
        (["-w", "0"], "--workers must be between"),
        (["--destdir", "/no/such/dir"], "destination directory does not exist"),
        (["--disk-margin", "5P"], "leaves no room on any destination"),
        (["--config-file", "/no/such.ini"], "config file not found"),
        (["--destdir", ""], "--destdir needs a directory, not an empty string"),
        (["--shard", "\u00b2/3"], "--shard takes K/N"),
    ],
)
def test_a_refused_run_does_not_create_the_log(tmp_path: Path, flags: list[str], text: str) -> None:
    log = tmp_path / "j.jsonl"
    result = run(["download", "one", "--joblog", str(log), *flags], cwd=tmp_path)
    assert_one_line_error(result, 2, text)
    assert not log.exists()


def test_a_malformed_config_file_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.ini"
    config.write_text("garbage with no section\n")
    log = tmp_path / "j.jsonl"
    log.write_text(_event({"event": "job", "seq": 1, "id": "one", "op": "download"}))
    before = log.read_bytes()
    for source in (["two"], ["--search", "collection:c"]):
        result = run(
            ["download", *source, "--joblog", str(log), "--config-file", str(config)],
            cwd=tmp_path,
        )
        assert_one_line_error(result, 2, "cannot read the ia configuration")
        assert log.read_bytes() == before


def _event(record: dict[str, object]) -> str:
    return json.dumps({**record, "ts": "20261128T101500Z"}) + "\n"


def test_no_job_past_the_seq_cap(tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    log.write_text(_event({"event": "job", "seq": 100_000_000, "id": "a", "op": "download"}))
    before = log.read_bytes()
    result = run(["download", "b", "c", "--joblog", str(log), "--destdir", str(tmp_path), "-q"])
    assert_one_line_error(result, 2, "a job log holds at most 100,000,000 jobs")
    assert log.read_bytes() == before


def test_an_empty_item_list_leaves_the_log_free_for_the_fixed_one(
    srv: ArchiveStandin, tmp_path: Path
) -> None:
    items, log = tmp_path / "items.txt", tmp_path / "j.jsonl"
    items.write_text("\n")
    args = ["download", "--itemlist", str(items), "--joblog", str(log)]
    args += ["--destdir", str(tmp_path), "--disk-margin", "0", "-q"]
    assert_one_line_error(run(args, env=srv.client_env()), 2, "gave no identifiers")
    items.write_text("one\n")
    fixed = run(args, env=srv.client_env())
    assert fixed.returncode == 0, fixed.stderr
    assert (tmp_path / "one" / "a.bin").stat().st_size == 1000


def test_an_empty_shard_is_nothing_to_do_every_time(tmp_path: Path) -> None:
    from iabulk.shard import Shard

    other = next(k for k in (1, 2) if not Shard(k, 2).owns("one"))
    log = tmp_path / "j.jsonl"
    args = ["download", "one", "--shard", f"{other}/2", "--joblog", str(log)]
    args += ["--destdir", str(tmp_path)]
    first, again = run(args), run(args)
    assert (
        first.returncode == 0 and "none of the 1 identifier(s) fall in this shard" in first.stderr
    )
    assert again.returncode == 0 and "fall in this shard" in again.stderr


@pytest.mark.parametrize(
    "source",
    [
        "x",
        {"kind": "search", "query": "x", "params": [1, 2]},
        {"kind": "ids", "ids": ["a"], "shard": 5},
        {"kind": "ids", "ids": "a"},
        {"kind": "weird"},
    ],
    ids=["string", "params-list", "shard-int", "ids-string", "unknown-kind"],
)
def test_a_source_record_of_the_wrong_shape(tmp_path: Path, source: object) -> None:
    log = tmp_path / "j.jsonl"
    log.write_text(_event({"event": "source", "op": "download", "source": source}))
    before = log.read_bytes()
    for command in (["download", "--joblog", str(log)], ["verify", str(log)]):
        result = run(command, cwd=tmp_path)
        assert_one_line_error(result, 2, "has an unreadable source record")
        assert log.read_bytes() == before


@pytest.mark.parametrize(
    "options",
    [{"timeout": "60"}, {"workers": "4"}, {"glob": "*.xml"}, {"destdir": [1]}, {"checksum": 1}],
    ids=["timeout", "workers", "glob", "destdir", "checksum"],
)
def test_a_recorded_option_of_the_wrong_type(tmp_path: Path, options: dict[str, object]) -> None:
    log = tmp_path / "j.jsonl"
    source = {"kind": "ids", "ids": ["one"]}
    record = {"event": "source", "op": "download", "source": source, "options": options}
    log.write_text(_event(record))
    result = run(["download", "--joblog", str(log)], cwd=tmp_path)
    assert_one_line_error(result, 2, f"option {next(iter(options))} is")


@pytest.mark.parametrize("where", ["identifier", "destdir", "search"])
def test_arguments_that_are_not_utf8(tmp_path: Path, where: str) -> None:
    latin = os.fsencode(tmp_path) + b"/lat\xe9"
    os.mkdir(latin)
    log = os.fsencode(tmp_path / "j.jsonl")
    source = (
        [b"--search", b"collection:\xff"]
        if where == "search"
        else [b"ok\xff" if where == "identifier" else b"one"]
    )
    dest = latin if where == "destdir" else os.fsencode(tmp_path)
    result = subprocess.run(
        [IABULK, b"download", *source, b"--joblog", log, b"--destdir", dest],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result, 2, "not valid UTF-8")
    assert not os.path.exists(log)


@pytest.mark.parametrize("stdin", [b"\xff\xfe\x00a\x00b\n", None], ids=["not-utf8", "closed"])
def test_itemlist_from_a_bad_stdin(tmp_path: Path, stdin: bytes | None) -> None:
    args = [IABULK, "download", "--itemlist", "-", "--joblog", str(tmp_path / "j.jsonl")]
    args += ["--destdir", str(tmp_path), "-q"]
    if stdin is None:  # no descriptor 0 at all, as with `<&-`
        command = ["bash", "-c", 'exec "$@" <&-', "bash", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    else:
        result = subprocess.run(args, input=stdin, capture_output=True, timeout=120)
        result = subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
        )
    text = "is not UTF-8 text" if stdin else "no standard input"
    assert_one_line_error(result, 2, text)


def test_itemlist_that_is_a_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run(["download", "--itemlist", str(fifo), "--joblog", str(tmp_path / "j.jsonl")])
    assert_one_line_error(result, 2, "item list is not a regular file")


def test_the_same_identifiers_in_another_order_resume(srv: ArchiveStandin, tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    tail = ["--joblog", str(log), "--destdir", str(tmp_path), "--disk-margin", "0", "-q"]
    first = run(["download", "one", "nope", *tail], env=srv.client_env())
    assert first.returncode == 1, first.stderr  # `nope` does not exist
    again = run(["download", "nope", "one", *tail], env=srv.client_env())
    assert again.returncode == 1 and "was started for" not in again.stderr, again.stderr
    other = run(["download", "one", "three", *tail], env=srv.client_env())
    assert_one_line_error(other, 2, "'three' is not among them")


def test_a_relative_destdir_is_recorded_whole(srv: ArchiveStandin, tmp_path: Path) -> None:
    (tmp_path / "run" / "d").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    log = tmp_path / "run" / "j.jsonl"
    args = ["download", "one", "--joblog", str(log), "--destdir", "d", "--disk-margin", "0"]
    done = run([*args, "-q"], env=srv.client_env(), cwd=tmp_path / "run")
    assert done.returncode == 0, done.stderr
    record = json.loads(log.read_text().splitlines()[0])
    assert record["options"]["destdir"] == [str(tmp_path / "run" / "d")]
    checked = run(["verify", str(log)], env=srv.client_env(), cwd=tmp_path / "elsewhere")
    assert checked.returncode == 0, checked.stderr


def test_status_refuses_what_is_not_a_log_and_counts_a_log_once(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    assert_one_line_error(run(["status", str(other)]), 2, "not a job log")
    log = tmp_path / "j.jsonl"
    log.write_text(_event({"event": "job", "seq": 1, "id": "a", "op": "download"}))
    twice = run(["status", "--json", str(log), str(log)])
    assert twice.returncode == 0, twice.stderr
    assert json.loads(twice.stdout)["counts"]["total"] == 1


@pytest.mark.parametrize("seconds", ["inf", "nan", "0", "-1"])
def test_status_watch_needs_a_finite_interval(tmp_path: Path, seconds: str) -> None:
    log = tmp_path / "j.jsonl"
    log.write_text(_event({"event": "job", "seq": 1, "id": "a", "op": "download"}))
    result = run(["status", "--watch", "--every", seconds, str(log)])
    assert_one_line_error(result, 2, "--every takes")


@pytest.mark.parametrize(
    "env, text",
    [
        ({"JOB_COMPLETION_INDEX": "1"}, "JOB_COMPLETION_INDEX gives shard 2 of 1"),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "x"}, "SLURM_ARRAY_TASK_MIN is not"),
        ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
    ],
)
def test_scheduler_shard_errors_name_the_variable(
    tmp_path: Path, env: dict[str, str], text: str
) -> None:
    shards = ["--shards", "1"] if "JOB_COMPLETION_INDEX" in env else []
    result = run(
        ["download", "one", *shards, "--joblog", str(tmp_path / "j.jsonl")],
        env={**os.environ, **env},
    )
    assert_one_line_error(result, 2, text)


def test_an_item_list_that_is_not_utf8_is_refused_before_the_log_exists(tmp_path: Path) -> None:
    items, log = tmp_path / "items.txt", tmp_path / "j.jsonl"
    items.write_bytes(b"one\ncaf\xe9\n")
    result = run(["download", "--itemlist", str(items), "--joblog", str(log), "-q"])
    assert_one_line_error(result, 2, "it is not UTF-8 text")
    assert not log.exists()


def test_a_log_path_that_is_not_utf8_is_fine_to_read(tmp_path: Path) -> None:
    log = os.fsencode(tmp_path) + b"/caf\xe9.jsonl"
    with open(log, "w") as out:
        out.write(_event({"event": "job", "seq": 1, "id": "a", "op": "download"}))
    result = subprocess.run([IABULK, b"status", log], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"0/1 jobs done" in result.stdout


# -- sources given again ---------------------------------------------------------


def _tail(log: Path, dest: Path) -> list[str]:
    return ["--joblog", str(log), "--destdir", str(dest), "--disk-margin", "0"]


def test_an_item_list_given_again_adds_what_is_new_in_it(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = Corpus()
    for name in ("a", "b", "c", "d"):
        corpus.add_item(name, [("f.bin", 500)], collection="c")
    srv = standin(corpus)
    items, log = tmp_path / "items.txt", tmp_path / "j.jsonl"
    items.write_text("a\nb\n")
    args = ["download", "--itemlist", str(items), *_tail(log, tmp_path)]
    assert run(args, env=srv.client_env()).returncode == 0
    items.write_text("a\nb\nc\n\nd\nc\n")
    again = run(args, env=srv.client_env())
    assert again.returncode == 0, again.stderr
    assert "2 new job(s), 2 already in the log; 1 duplicate(s)" in again.stderr
    assert all((tmp_path / name / "f.bin").exists() for name in "abcd")
    plain = run(["download", "--joblog", str(log)], env=srv.client_env())
    assert plain.returncode == 0 and "resolving" not in plain.stderr, plain.stderr


def test_a_search_param_given_twice_counts_once_and_resumes(
    srv: ArchiveStandin, tmp_path: Path
) -> None:
    log = tmp_path / "j.jsonl"
    args = ["download", "--search", "collection:c", "--search-param", "rows:5000"]
    args += ["--search-param", "rows:100", *_tail(log, tmp_path), "-q"]
    assert run(args, env=srv.client_env()).returncode == 0
    record = json.loads(log.read_text().splitlines()[0])
    assert record["source"]["params"] == {"rows": "100"}
    again = run(args, env=srv.client_env())
    assert again.returncode == 0, again.stderr
    other = run([*args[:2], "collection:c", *_tail(log, tmp_path)], env=srv.client_env())
    assert_one_line_error(other, 2, "started for search 'collection:c' with rows:100, not")


def test_a_shard_that_contradicts_the_log_is_refused_without_a_source(tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    source = {"kind": "search", "query": "collection:c", "shard": "1/3"}
    log.write_text(_event({"event": "source", "op": "download", "source": source}))
    before = log.read_bytes()
    result = run(["download", "--joblog", str(log), "--shard", "2/3"])
    assert_one_line_error(result, 2, "is shard 1/3 of its source, not shard")
    assert log.read_bytes() == before


def test_identifiers_resume_as_resolve_took_them(srv: ArchiveStandin, tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    first = run(
        ["download", "one", "one", " nope ", "", *_tail(log, tmp_path), "-q"], env=srv.client_env()
    )
    assert first.returncode == 1, first.stderr  # nope does not exist
    again = run(["download", "nope", "one", *_tail(log, tmp_path), "-q"], env=srv.client_env())
    assert again.returncode == 1 and "started for" not in again.stderr, again.stderr


def test_an_interrupted_stdin_resolve_asks_for_stdin_again(tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    source = {"kind": "itemlist", "path": "-"}
    log.write_text(
        _event({"event": "source", "op": "download", "source": source})
        + _event({"event": "job", "seq": 1, "id": "a", "op": "download"})
    )
    result = run(["download", "--joblog", str(log), "-q"])
    assert_one_line_error(result, 2, "pass it again with --itemlist -")


def test_a_search_restarted_part_way_says_so(tmp_path: Path) -> None:
    from iabulk._native import IdSet
    from iabulk.errors import TransientSourceError
    from iabulk.joblog import JobLog
    from iabulk.sources import Source, resolve

    calls = []

    def flaky(query: str, params: dict[str, str]) -> Iterator[str]:
        calls.append(query)
        yield "a"
        if len(calls) < 3:
            raise TransientSourceError("search failed: too many 503 error responses")
        yield "b"

    said: list[str] = []
    log = JobLog(tmp_path / "j.jsonl")
    stats = resolve(
        log,
        Source("search", query="q"),
        "download",
        IdSet(),
        0,
        flaky,
        say=said.append,
        sleep=lambda seconds: None,
    )
    log.close()
    assert (stats.added, stats.duplicates, stats.restarts) == (2, 0, 2)
    assert said == [
        "search failed: too many 503 error responses; starting it again in 2 s (1 of 5)",
        "search failed: too many 503 error responses; starting it again in 4 s (2 of 5)",
    ]


def test_no_directories_takes_one_destdir(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    log = tmp_path / "j.jsonl"
    args = ["download", "one", "--no-directories", "--joblog", str(log)]
    result = run([*args, "--destdir", str(tmp_path / "a"), "--destdir", str(tmp_path / "b")])
    assert_one_line_error(result, 2, "--no-directories takes one --destdir")
    assert not log.exists()


def test_the_default_destdir_is_recorded_whole_and_verify_finds_other_destdirs(
    srv: ArchiveStandin, tmp_path: Path
) -> None:
    """Started here with no --destdir, resumed from elsewhere with another one:
    verify, given nothing, still finds every item where it completed."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    log = tmp_path / "j.jsonl"
    first = run(
        ["download", "one", "--joblog", str(log), "--disk-margin", "0", "-q"],
        env=srv.client_env(),
        cwd=here,
    )
    assert first.returncode == 0, first.stderr
    record = json.loads(log.read_text().splitlines()[0])
    assert record["options"]["destdir"] == [str(here)]
    log.write_text(log.read_text().replace('"event":"completed"', '"event":"requeued"'))
    (here / "one" / "a.bin").unlink()
    moved = run(
        ["download", "--joblog", str(log), "--destdir", str(there), "-q"],
        env=srv.client_env(),
        cwd=tmp_path,
    )
    assert moved.returncode == 0, moved.stderr
    assert (there / "one" / "a.bin").exists()
    checked = run(["verify", str(log)], env=srv.client_env(), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_status_says_whether_a_run_holds_the_log(tmp_path: Path) -> None:
    log = tmp_path / "j.jsonl"
    log.write_text(
        "".join(
            _event({"event": "job", "seq": s, "id": f"i{s}", "op": "download"}) for s in (1, 2, 3)
        )
        + _event({"event": "started", "seq": 1, "worker": 0})
        + _event({"event": "completed", "seq": 2})
    )
    idle = run(["status", str(log)])
    assert idle.returncode == 0, idle.stderr
    assert "1/3 jobs done (33.3%), no run under way" in idle.stdout
    assert "(1 cut short: the next run starts them again)" in idle.stdout
    held = JobLog(log)
    held.open_for_append()  # what a run does first: it holds the log until it ends
    try:
        live = run(["status", str(log)])
    finally:
        held.close()
    assert "ETA" in live.stdout and "(1 running)" in live.stdout, live.stdout
    empty = tmp_path / "resolving.jsonl"
    empty.touch()
    resolving = JobLog(empty)
    resolving.open_for_append()  # a run that has not written its first line yet
    try:
        second = run(["download", "--joblog", str(empty)])
    finally:
        resolving.close()
    assert_one_line_error(second, 2, f"is in use by another iabulk process (pid {os.getpid()})")
