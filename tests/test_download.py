"""`iabulk download` end to end: the real command, over real sockets, against the stand-in.

Every test runs the installed ``iabulk`` as a subprocess with the stand-in's
environment (HTTPS through CONNECT, a throw-away CA), then checks what is on
disk by md5 against the corpus and what the job log says.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from iabulk import JobLog
from iabulk.workers.download import PART_SUFFIX

from tests.commands import IABULK, iabulk, search_args, search_download
from tests.standin import ArchiveStandin, Corpus, FaultPlan


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_verified(corpus: Corpus, destdir: Path, identifiers: list[str]) -> None:
    """Every file of every item is on disk with the corpus's size and md5; no leftovers."""
    for identifier in identifiers:
        expected = corpus.expected(identifier)
        assert expected, identifier
        for name, (size, md5) in expected.items():
            path = destdir / identifier / name
            assert path.is_file(), path
            assert path.stat().st_size == size, path
            assert md5_of(path) == md5, path
    assert not list(destdir.rglob("*" + PART_SUFFIX))


def log_events(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def failures_by_id(path: Path) -> dict[str, list[Any]]:
    events = log_events(path)
    ids = {e["seq"]: e["id"] for e in events if e["event"] == "job"}
    out: dict[str, list[Any]] = {}
    for e in events:
        if e["event"] == "failed":
            out.setdefault(ids[e["seq"]], []).append((e["error"], e["retry"]))
    return out


def corpus_of(n: int, collection: str = "c", size: int = 2048, files: int = 1) -> Corpus:
    corpus = Corpus()
    for i in range(n):
        corpus.add_item(
            f"{collection}-item-{i:04d}",
            [(f"file-{j}.bin", size + 37 * i + j) for j in range(files)],
            collection=collection,
        )
    return corpus


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "files"
    d.mkdir()
    return d


def test_search_across_cursor_pages_downloads_every_file_verified(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(230)
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    result = search_download(srv, log, dest, "--search-param", "count:100", "-w", "6")
    assert result.returncode == 0, result.stderr
    assert srv.counters()["requests_by_kind"]["search"] >= 3  # three cursor pages
    assert_verified(corpus, dest, corpus.identifiers())
    assert JobLog(log).status() == {"total": 230, "completed": 230, "failed": 0, "pending": 0}


def test_itemlist_skips_blank_lines_and_duplicates(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(5)
    srv = standin(corpus)
    ids = corpus.identifiers()
    itemlist = tmp_path / "items.txt"
    itemlist.write_text("\n".join([ids[0], "", ids[1], ids[0], "  ", *ids[2:], ids[4]]) + "\n")
    log = tmp_path / "run.jsonl"
    result = iabulk(
        srv,
        "download",
        "--itemlist",
        str(itemlist),
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert "2 duplicate(s) and 2 empty line(s) skipped" in result.stderr
    assert JobLog(log).status()["total"] == 5
    assert_verified(corpus, dest, ids)


def test_identifiers_as_arguments(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(3, files=3)
    srv = standin(corpus)
    ids = corpus.identifiers()
    log = tmp_path / "run.jsonl"
    result = iabulk(
        srv,
        "download",
        *ids,
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
        "--disk-margin",
        "0",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: nothing but errors
    assert_verified(corpus, dest, ids)


def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def completed_count(log: Path) -> int:
    if not log.exists():
        return 0
    return JobLog(log).snapshot().completed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_sigint_exits_promptly_with_130_and_resume_by_joblog_alone_finishes(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path, signum: int
) -> None:
    """The first Ctrl-C, or the terminal closing (SIGHUP), stops gracefully."""
    corpus = corpus_of(12, size=400_000)
    srv = standin(corpus, FaultPlan(bandwidth=600_000))
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [IABULK, *search_args(log, dest, "-w", "3")],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: completed_count(log) >= 1)
    interrupted_at = time.monotonic()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - interrupted_at < 5, "the first Ctrl-C must stop promptly"
    assert proc.returncode == 130, stderr
    assert "resume" in stderr
    snap = JobLog(log).snapshot()
    assert 1 <= snap.completed < 12

    result = iabulk(srv, "download", "--joblog", str(log), "-w", "6")
    assert result.returncode == 0, result.stderr
    assert_verified(corpus, dest, corpus.identifiers())
    assert JobLog(log).status()["completed"] == 12

    again = iabulk(
        srv, "download", "--search", "collection:c", "--joblog", str(log), "--destdir", str(dest)
    )
    assert again.returncode == 0, again.stderr
    assert "nothing left to do" in again.stderr


def test_second_ctrl_c_exits_at_once(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(4, size=2_000_000)
    srv = standin(corpus, FaultPlan(bandwidth=200_000))
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [IABULK, *search_args(log, dest, "-w", "2")],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: bool(list(dest.rglob("*" + PART_SUFFIX))))
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert proc.returncode == 130


@pytest.mark.parametrize("kind", ["metadata", "data"])
def test_first_ctrl_c_does_not_wait_for_a_silent_server(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path, kind: str
) -> None:
    corpus = corpus_of(1)
    plan = FaultPlan(first_byte_delay=120).fail_first("c-item-0000", ["slow_first_byte"], [kind])
    srv = standin(corpus, plan)
    log = tmp_path / "run.jsonl"
    args = search_args(log, dest, "--timeout", "300")
    proc = subprocess.Popen(
        [IABULK, *args], env=srv.client_env(), stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: srv.counters()["requests_by_kind"].get(kind, 0) >= 1)
    time.sleep(0.5)  # the request is on its way: the server holds its answer back
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)  # without the interrupt: the 120 s of the server
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert JobLog(log).status()["pending"] == 1  # no outcome: the next run does it again
    result = iabulk(srv, *args)
    assert result.returncode == 0, result.stderr
    assert_verified(corpus, dest, corpus.identifiers())


def test_rerun_resumes_partial_file_with_range(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    kill_mid_file_and_resume(standin, corpus_of(1, size=3_000_000), tmp_path, dest)


def kill_mid_file_and_resume(
    standin: Callable[..., ArchiveStandin], corpus: Corpus, tmp_path: Path, dest: Path
) -> None:
    """Kill -9 a run once its one 3 MB file is half a megabyte in, then run it again:
    the rest is fetched with a Range request, and the head is not sent again."""
    srv = standin(corpus, FaultPlan(bandwidth=1_000_000))
    args = search_args(tmp_path / "run.jsonl", dest)
    proc = subprocess.Popen([IABULK, *args], env=srv.client_env(), stderr=subprocess.PIPE)

    def partial() -> int:
        parts = [p for p in dest.rglob("*" + PART_SUFFIX) if p.is_file()]
        return max((p.stat().st_size for p in parts), default=0)

    wait_for(lambda: partial() > 500_000)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    srv.reset_counters()
    result = iabulk(srv, *args)
    assert result.returncode == 0, result.stderr
    assert srv.counters()["status"].get("206", 0) >= 1
    assert srv.counters()["bytes_sent"] < 3_000_000 + 100_000  # the head was not sent again
    assert_verified(corpus, dest, corpus.identifiers())


NAMES_AT_THE_LIMIT = [
    "n" * 251 + ".bin",  # 255 bytes: no room left for a suffix
    "\u00e9" * 125 + "x.bin",  # 255 bytes of UTF-8 in 130 characters
    "m" * 236 + ".bin",  # 240 bytes
]


def test_names_up_to_255_bytes_download_and_resume_from_their_partial_file(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = Corpus()
    big, *small = NAMES_AT_THE_LIMIT
    corpus.add_item("long", [(big, 3_000_000)] + [(n, 1000) for n in small], collection="c")
    kill_mid_file_and_resume(standin, corpus, tmp_path, dest)


def test_filters_that_pass_no_file_are_reported_early_and_at_the_end(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    srv = standin(corpus_of(25))
    log = tmp_path / "run.jsonl"
    typo = iabulk(srv, *search_args(log, dest, "--glob", "*.bni", "-w", "2"))
    assert typo.returncode == 0, typo.stderr
    assert "the first 20 items had no file passing --glob '*.bni'" in typo.stderr
    assert "25 item(s) completed with no file passing --glob '*.bni'" in typo.stderr
    assert not list(dest.rglob("*.bin"))

    before = log.read_bytes()
    fixed = iabulk(srv, "download", "--joblog", str(log), "--glob", "*.bin")
    assert fixed.returncode == 2, fixed.stderr
    assert fixed.stderr == (
        f"iabulk: {log} was started with the file filters --glob '*.bni': its items are "
        "fetched and verified by them; for other filters, start a new --joblog\n"
    )
    assert log.read_bytes() == before

    right = iabulk(srv, *search_args(tmp_path / "new.jsonl", dest, "--glob", "*.bin"))
    assert right.returncode == 0, right.stderr
    assert "no file passing" not in right.stderr
    assert len(list(dest.rglob("*.bin"))) == 25


def test_two_runs_with_their_own_logs_share_a_destination_without_damage(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(6, size=1_500_000)
    srv = standin(corpus, FaultPlan(bandwidth=4_000_000))

    def start(name: str) -> subprocess.Popen[str]:
        args = search_args(tmp_path / f"{name}.jsonl", dest, "-w", "3", "-q")
        return subprocess.Popen(
            [IABULK, *args], env=srv.client_env(), stderr=subprocess.PIPE, text=True
        )

    runs = [start("first")]
    wait_for(lambda: bool(list(dest.rglob("*" + PART_SUFFIX))))
    runs.append(start("second"))  # while the first is writing the same files
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    assert_verified(corpus, dest, corpus.identifiers())
    for name in ("first", "second"):
        assert JobLog(tmp_path / f"{name}.jsonl").status()["completed"] == 6
    assert (
        srv.counters()["bytes_sent"] < 2 * 6 * 1_500_000
    )  # a file held by one run is not fetched by the other meanwhile


def test_files_that_never_match_their_md5_fail_their_items_without_an_outage(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(6)
    plan = FaultPlan(retry_after=0)
    for i in (3, 4, 5):  # archive.org's metadata can list a wrong md5: every copy differs
        plan.fail_first(f"c-item-{i:04d}/file-0.bin", ["flip"] * 100, ["data"])
    srv = standin(corpus, plan)
    log = tmp_path / "run.jsonl"
    result = iabulk(srv, *search_args(log, dest, "--retries", "1", "-q"), timeout=120)
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    failed = [r for r in records if r["event"] == "failed"]
    assert not [r for r in failed if r.get("backoff")]  # no pause: the items are at fault
    assert {r["seq"] for r in failed if r["retry"] is False} == {4, 5, 6}
    assert all("md5 mismatch" in r["error"] for r in failed)


def test_a_metadata_answer_cut_short_is_a_plain_retry(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(2)
    srv = standin(corpus, FaultPlan().fail_first("c-item-0001", ["reset"], ["metadata"]))
    log = tmp_path / "run.jsonl"
    result = iabulk(srv, *search_args(log, dest, "-q"))
    assert result.returncode == 0, result.stderr
    [failed] = [r for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "failed"]
    assert "reading metadata" in failed["error"] and "internal error" not in failed["error"]
    assert_verified(corpus, dest, corpus.identifiers())
    srv.faults.fail_first("c-item-0000", ["reset", "reset"], ["metadata"])
    checked = iabulk(srv, "verify", str(log))
    assert checked.returncode == 0, checked.stderr  # verify tries again too


def test_a_different_source_for_an_existing_log_is_refused(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(2)
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    first = search_download(srv, log, dest)
    assert first.returncode == 0, first.stderr
    before = log.read_bytes()
    other = iabulk(
        srv,
        "download",
        "--search",
        "collection:other",
        "--joblog",
        str(log),
        "--destdir",
        str(dest),
    )
    assert other.returncode == 2
    assert other.stderr.count("\n") == 1 and "was started for search 'collection:c'" in other.stderr
    assert log.read_bytes() == before


def test_flipped_byte_in_transit_is_detected_and_refetched(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(3, size=200_000)
    target = "c-item-0001/file-0.bin"
    srv = standin(corpus, FaultPlan().fail_first(target, ["flip"], kinds=["data"]))
    log = tmp_path / "run.jsonl"
    result = search_download(srv, log, dest)
    assert result.returncode == 0, result.stderr
    assert srv.counters()["faults_injected"] == {"flip": 1}
    assert_verified(corpus, dest, corpus.identifiers())


def test_an_items_files_come_from_its_data_node_after_one_redirect(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(3, files=6)
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    result = search_download(srv, log, dest, "-w", "1")
    assert result.returncode == 0, result.stderr
    assert failures_by_id(log) == {}
    assert_verified(corpus, dest, corpus.identifiers())
    by_kind = srv.counters()["requests_by_kind"]
    files = sum(len(corpus.metadata_doc(corpus.item(i))["files"]) for i in corpus.identifiers())
    assert by_kind["redirect"] == 3  # one /download round trip per item, not per file
    assert by_kind["data"] == files


def test_names_the_redirect_encodes_differently_still_find_the_data_node(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = Corpus()
    names = ["a&b+c=d.txt", "x:y@z (1).bin", "dir/sp ace,é.txt", "plain.bin"]
    for i in range(2):
        corpus.add_item(f"c-odd-{i}", [(n, 1000 + 7 * i) for n in names], collection="c")
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    result = search_download(srv, log, dest, "-w", "1")
    assert result.returncode == 0, result.stderr
    assert failures_by_id(log) == {}
    assert_verified(corpus, dest, corpus.identifiers())
    assert srv.counters()["requests_by_kind"]["redirect"] == 2  # one per item


def test_a_file_the_data_node_refuses_is_asked_for_through_download(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(2, files=4)
    refused = "c-item-0001/file-2.bin"
    # Once refused by the node only (say, a node that lost the file): /download decides,
    # redirects again, and the second answer is the file.
    plan = FaultPlan().fail_first(refused, ["403"], kinds=["data"])
    # Refused by both (a restricted file): a permanent failure of that item only.
    plan.fail_first("c-item-0000/file-3.bin", ["403"] * 5, kinds=["redirect", "data"])
    srv = standin(corpus, plan)
    log = tmp_path / "run.jsonl"
    result = search_download(srv, log, dest, "-w", "1")
    assert result.returncode == 1, result.stderr
    assert_verified(corpus, dest, ["c-item-0001"])
    assert srv.counters()["requests_by_kind"]["redirect"] == 2 + 2  # first file + each refusal
    failures = failures_by_id(log)
    assert list(failures) == ["c-item-0000"]
    [(error, retry)] = failures["c-item-0000"]
    assert "HTTP 403 for file-3.bin" in error and retry is False


def test_a_data_node_that_redirects_sends_the_file_back_through_download(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(2, files=4)
    plan = FaultPlan().fail_first("c-item-0001/file-2.bin", ["moved"], kinds=["data"])
    plan.fail_first("c-item-0000/file-0.bin", ["moved"], kinds=["redirect"])
    srv = standin(corpus, plan)
    log = tmp_path / "run.jsonl"
    result = search_download(srv, log, dest, "-w", "1")
    assert result.returncode == 0, result.stderr
    assert srv.counters()["faults_injected"] == {"moved": 2}
    assert failures_by_id(log) == {}  # followed at once, not failed and retried
    assert_verified(corpus, dest, corpus.identifiers())


def test_dark_and_missing_items_fail_permanently_with_exit_1(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(2)
    corpus.add_item("c-dark", [("secret.bin", 100)], collection="c", dark=True)
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    ids = [*corpus.identifiers(), "no-such-item"]
    result = iabulk(
        srv, "download", *ids, "--joblog", str(log), "--destdir", str(dest), "--disk-margin", "0"
    )
    assert result.returncode == 1, result.stderr
    failures = failures_by_id(log)
    assert failures["c-dark"] == [("item is dark", False)]
    assert failures["no-such-item"] == [("item does not exist", False)]
    assert JobLog(log).status() == {"total": 4, "completed": 2, "failed": 2, "pending": 0}
    assert not (dest / "c-dark" / "secret.bin").exists()


def test_hostile_file_names_are_refused_and_nothing_escapes(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = Corpus()
    corpus.add_item(
        "evil",
        [
            ("good.txt", 100),
            ("../escaped.txt", 100),
            ("/tmp/absolute.txt", 100),
            ("a/../../up.txt", 100),
        ],
    )
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    result = iabulk(
        srv, "download", "evil", "--joblog", str(log), "--destdir", str(dest), "--disk-margin", "0"
    )
    assert result.returncode == 1
    assert (dest / "evil" / "good.txt").is_file()
    assert not (dest / "escaped.txt").exists() and not (tmp_path / "up.txt").exists()
    assert not Path("/tmp/absolute.txt").exists()
    [(error, retry)] = failures_by_id(log)["evil"]
    assert retry is False and "refused unsafe file name" in error


def test_429_with_retry_after_is_honoured_without_failing_the_item(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(2)
    plan = FaultPlan(retry_after=1).fail_first("c-item-0000", ["429", "503"])
    srv = standin(corpus, plan)
    log = tmp_path / "run.jsonl"
    result = search_download(srv, log, dest)
    assert result.returncode == 0, result.stderr
    assert srv.counters()["faults_injected"] == {"429": 1, "503": 1}
    assert "iabulk: the server asked to slow down 2 time(s) (HTTP 429/503)" in result.stderr
    assert failures_by_id(log) == {}
    assert_verified(corpus, dest, corpus.identifiers())


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def two_small_disks(tmp_path: Path) -> Any:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disks = [tmp_path / "disk1", tmp_path / "disk2"]
    for disk in disks:
        mount_tmpfs(disk, "6m")
    yield disks
    for disk in disks:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_two_destdirs_with_a_margin_really_spread_items(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, two_small_disks: list[Path]
) -> None:
    corpus = corpus_of(16, size=400_000)  # 6.4 MB: more than either 6 MB disk takes
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    disk1, disk2 = two_small_disks
    result = iabulk(
        srv,
        "download",
        "--search",
        "collection:c",
        "-w",
        "4",
        "--joblog",
        str(log),
        "--destdir",
        str(disk1),
        "--destdir",
        str(disk2),
        "--disk-margin",
        "1M",
    )
    assert result.returncode == 0, result.stderr
    on1 = {p.name for p in disk1.iterdir()}
    on2 = {p.name for p in disk2.iterdir()}
    assert on1 and on2 and not on1 & on2
    assert on1 | on2 == set(corpus.identifiers())
    for disk, ids in ((disk1, on1), (disk2, on2)):
        assert_verified(corpus, disk, sorted(ids))


@pytest.mark.parametrize(
    ("url", "name", "expected"),
    [
        ("https://n1.example/3/items/x/a%20b.txt", "a b.txt", "https://n1.example/3/items/x/"),
        ("https://n1.example/3/items/x/d/a&b.txt", "d/a&b.txt", "https://n1.example/3/items/x/"),
        ("https://n1.example/3/items/x/d%2Fa.txt", "d/a.txt", None),  # one segment, not two
        ("https://n1.example/3/items/x/other.txt", "a.txt", None),
        ("https://n1.example/3/items/x/a.txt?token=1", "a.txt", None),
        ("https://n1.example/a.txt", "a.txt", None),  # no directory to reuse
    ],
)
def test_the_data_node_directory_is_read_off_a_redirect(
    url: str, name: str, expected: str | None
) -> None:
    from iabulk.workers.download import _directory_of

    assert _directory_of(url, name) == expected


class _OddMetadata(Corpus):
    """Lists a nonsense mtime for every file named ``odd-*``, an md5 that is not
    hex for ``nohex-*``, ``is_dark: "false"`` (a string) for item ``lit``, and a
    lone surrogate (valid JSON, not text) in the name of ``lone-*``."""

    def file_entries(self, item: Any) -> list[dict[str, str]]:
        entries = super().file_entries(item)
        for entry in entries:
            if entry["name"].startswith("odd-"):
                entry["mtime"] = entry["name"].removeprefix("odd-").removesuffix(".bin")
            if entry["name"].startswith("nohex-"):
                entry["md5"] = "z" * 32
        return entries

    def metadata_doc(self, item: Any) -> dict[str, Any]:
        doc = super().metadata_doc(item)
        if item.identifier == "lit":
            doc["is_dark"] = "false"
        for entry in doc.get("files", []):
            if entry["name"].startswith("lone-"):
                entry["name"] = entry["name"].replace("-", "-\ud800", 1)
        return doc


def test_empty_files_and_odd_metadata_still_complete(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = _OddMetadata()
    corpus.add_item("empty", [("empty.txt", 0), ("sub/also-empty", 0), ("a.bin", 100)])
    corpus.add_item("mtimes", [("odd-1e20.bin", 100), ("odd-nan.bin", 10), ("odd-inf.bin", 20)])
    corpus.add_item("nohex", [("nohex-a.bin", 100)])
    corpus.add_item("lit", [("a.bin", 100)])
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    items = ["empty", "mtimes", "nohex", "lit"]
    args = ["download", *items, "--joblog", str(log), "--destdir", str(dest)]
    result = iabulk(srv, *args, "--disk-margin", "0", "-q")
    assert result.returncode == 0, result.stderr
    assert_verified(corpus, dest, items)
    assert JobLog(log).status()["completed"] == 4
    assert srv.counters()["requests_by_kind"]["data"] == 5 + 5 + 3 + 3  # each file once
    again = iabulk(srv, "download", "--joblog", str(log), "--retry-failed", "-q")
    assert again.returncode == 0, again.stderr


def test_a_name_that_is_not_text_fails_its_item_once_with_a_reason(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = _OddMetadata()
    corpus.add_item("lone", [("a.bin", 100), ("lone-name.txt", 10)])
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    result = iabulk(srv, "download", "lone", "--joblog", str(log), "--destdir", str(dest), "-q")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [failed] = [r for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "failed"]
    assert failed["retry"] is False and "lone surrogate" in failed["error"]
    assert (dest / "lone" / "a.bin").read_bytes() == corpus.read("lone", "a.bin")


def test_a_destination_removed_mid_run_stops_the_run_and_loses_nothing(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(4, size=1_500_000)
    srv = standin(corpus, FaultPlan(bandwidth=1_000_000))
    log = tmp_path / "run.jsonl"
    run = subprocess.Popen(
        [IABULK, *search_args(log, dest, "-w", "1", "-q")],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(dest.rglob("*" + PART_SUFFIX)):
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    moved = tmp_path / "moved"
    dest.rename(moved)  # gone from under the run, with the part file in it
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "cannot be written" in stderr, stderr
    assert "nothing is lost" in stderr
    status = JobLog(log).status()
    assert status["failed"] == 0 and status["pending"] >= 1, status
    moved.rename(dest)
    resumed = iabulk(srv, "download", "--joblog", str(log), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_verified(corpus, dest, corpus.identifiers())


def test_a_reader_of_stderr_that_goes_away_does_not_fail_the_run(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    """`iabulk download ... 2>&1 | head -3`: the run goes on, unseen, and succeeds."""
    corpus = corpus_of(8, size=50_000)
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [IABULK, *search_args(log, dest, "-w", "2")], env=srv.client_env(), stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    proc.stderr.close()  # no reader: every write to stderr fails with EPIPE
    assert proc.wait(timeout=120) == 0
    assert_verified(corpus, dest, corpus.identifiers())


def test_control_characters_from_the_archive_never_reach_the_terminal(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    srv = standin(corpus_of(1))
    log = tmp_path / "run.jsonl"
    hostile = "ok\x1b[2J\x1b[31mRED\nline"
    items = tmp_path / "items.txt"
    items.write_text(hostile.replace("\n", "") + "\n")
    result = iabulk(
        srv, "download", "--itemlist", str(items), "--joblog", str(log), "--destdir", str(dest)
    )
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stderr and "ok\\x1b[2J\\x1b[31mRED" in result.stderr
    status = iabulk(srv, "status", str(log))
    assert "\x1b" not in status.stdout and "\\x1b[2J" in status.stdout


def test_a_slow_link_writes_and_counts_in_small_steps(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    """On a slow link a megabyte takes seconds: the bytes still reach the partial
    file (kept by a stop) a fraction of a second after they arrive."""
    corpus = corpus_of(1, size=3_000_000)
    srv = standin(corpus, FaultPlan(bandwidth=200_000))
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [IABULK, *search_args(log, dest)], env=srv.client_env(), stderr=subprocess.PIPE, text=True
    )
    part = dest / "c-item-0000" / ("file-0.bin" + PART_SUFFIX)
    wait_for(lambda: part.exists() and part.stat().st_size > 0)
    first = part.stat().st_size
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert 0 < first < 1 << 20, first  # not a whole 1 MiB read buffer
    assert part.stat().st_size >= first
    resumed = iabulk(srv, "download", "--joblog", str(log), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_verified(corpus, dest, corpus.identifiers())


class _OnTheFly(Corpus):
    """Serves a texts item's on-the-fly derivatives without listing them, as archive.org does."""

    def file_entries(self, item: Any) -> list[dict[str, str]]:
        made = {f"{item.identifier}{s}" for s in (".epub", ".mobi", "_daisy.zip")}
        return [e for e in super().file_entries(item) if e["name"] not in made]


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], {"a.pdf", "book.epub", "book.mobi", "book_daisy.zip"}),
        (["--glob", "*.pdf"], {"a.pdf"}),
        (["-f", "EPUB"], {"book.epub"}),
        (["--glob", "*.epub|*.mobi", "--exclude", "*.mobi"], {"book.epub"}),
    ],
    ids=["all", "glob", "format", "glob-exclude"],
)
def test_on_the_fly_files_pass_the_same_filters(
    standin: Callable[..., ArchiveStandin],
    tmp_path: Path,
    dest: Path,
    flags: list[str],
    expected: set[str],
) -> None:
    corpus = _OnTheFly()
    files = [("a.pdf", 300), ("book.epub", 200), ("book.mobi", 100), ("book_daisy.zip", 50)]
    corpus.add_item("book", files, metadata={"mediatype": "texts"})
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    args = ["download", "book", "--on-the-fly", *flags, "--joblog", str(log)]
    result = iabulk(srv, *args, "--destdir", str(dest), "--disk-margin", "0", "-q")
    assert result.returncode == 0, result.stderr
    got = {p.name for p in (dest / "book").iterdir()} - {"book_meta.xml", "book_files.xml"}
    assert got == expected


def test_a_job_log_removed_during_the_run_stops_it_with_an_error(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = corpus_of(20, size=200_000)
    srv = standin(corpus, FaultPlan(bandwidth=1_000_000))
    logs = tmp_path / "logs"
    logs.mkdir()
    args = search_args(logs / "run.jsonl", dest, "-w", "2")
    run = subprocess.Popen([IABULK, *args], env=srv.client_env(), stderr=subprocess.PIPE, text=True)
    wait_for(lambda: bool(list(dest.rglob("*.bin"))))
    (logs / "run.jsonl").unlink()
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2, err
    assert "iabulk: cannot write the job log: it was removed or replaced while in use" in err
    assert "Traceback" not in err
    assert len(list(dest.rglob("*.bin"))) < 20  # it stopped, rather than run on unrecorded
