"""Beyond one machine and one link: shards, the bandwidth cap, AIMD, and the docs' recipes.

All against the stand-in with the real ``iabulk`` command. The recipes are
taken from docs/scale-out.md itself, so the documentation is what is tested.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.commands import IABULK, iabulk, search_args
from tests.standin import ArchiveStandin, Corpus, FaultPlan

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "scale-out.md").read_text()


def corpus_of(n: int, size: int = 1500) -> Corpus:
    corpus = Corpus()
    for i in range(n):
        corpus.add_item(f"shard-item-{i:04d}", [("data.bin", size + i)], collection="c")
    return corpus


def logged_ids(log: Path) -> list[str]:
    return [
        line.split('"id":"', 1)[1].split('"', 1)[0]
        for line in log.read_text().splitlines()
        if '"event":"job"' in line
    ]


def downloaded(dest: Path) -> set[str]:
    return {p.name for p in dest.iterdir()}


def test_three_concurrent_shards_cover_the_corpus_exactly_once(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = corpus_of(60)
    srv = standin(corpus)
    procs = []
    for k in (1, 2, 3):
        dest = tmp_path / f"dest{k}"
        dest.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    IABULK,
                    *search_args(tmp_path / f"shard-{k}.jsonl", dest),
                    *("--shard", f"{k}/3", "-w", "3", "-q"),
                ],
                env=srv.client_env(),
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    shares = [downloaded(tmp_path / f"dest{k}") for k in (1, 2, 3)]
    assert all(shares)
    assert sum(len(s) for s in shares) == 60 and set().union(*shares) == set(corpus.identifiers())
    per_log = [logged_ids(tmp_path / f"shard-{k}.jsonl") for k in (1, 2, 3)]
    assert sorted(functools.reduce(operator.iadd, per_log, [])) == sorted(corpus.identifiers())
    status = subprocess.run(
        [IABULK, "status", "--json", *(str(tmp_path / f"shard-{k}.jsonl") for k in (1, 2, 3))],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"total": 60' in status.stdout and '"completed": 60' in status.stdout


def test_resuming_a_log_as_another_shard_is_refused(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    srv = standin(corpus_of(6))
    log = tmp_path / "shard.jsonl"
    common = search_args(log, tmp_path, "-q")
    first = subprocess.run(
        [IABULK, *common, "--shard", "1/2"],
        env=srv.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    other = subprocess.run(
        [IABULK, *common, "--shard", "2/2"],
        env=srv.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 2 and "shard 1/2" in other.stderr


def test_limit_rate_holds_the_total_within_five_percent(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    rate = 1 << 20
    # Many small files: the stand-in sends a file only when the client asks for
    # it, so socket buffers cannot hide more than a few files from the window.
    corpus = Corpus()
    corpus.add_item("wide", [(f"part-{i:03d}.bin", 48_000) for i in range(400)], collection="c")
    srv = standin(corpus)
    proc = subprocess.Popen(
        [
            IABULK,
            *search_args(tmp_path / "j.jsonl", tmp_path, "-w", "4", "--limit-rate", "1M", "-q"),
        ],
        env=srv.client_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)  # past the start-up and the first burst
        b0, t0 = srv.counters()["bytes_sent"], time.monotonic()
        time.sleep(10)
        b1, t1 = srv.counters()["bytes_sent"], time.monotonic()
    finally:
        proc.kill()
        proc.wait()
    measured = (b1 - b0) / (t1 - t0)
    assert abs(measured - rate) / rate < 0.05, f"{measured:.0f} B/s against a cap of {rate}"


def test_429s_halve_the_transfers_and_quiet_ramps_them_up(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    corpus = Corpus()
    for i in range(24):
        corpus.add_item(f"item-{i:02d}", [("blob.bin", 600_000)], collection="c")
    plan = FaultPlan(bandwidth=400_000, retry_after=0)
    for i in (12, 13, 14):
        plan.fail_first(f"item-{i:02d}", ["429"], kinds=["data"])
    srv = standin(corpus, plan)
    dest = tmp_path / "files"
    dest.mkdir()
    result = iabulk(srv, *search_args(tmp_path / "j.jsonl", dest, "-w", "8"), timeout=300)
    assert result.returncode == 0, result.stderr
    levels = [(int(m[1]), m[2]) for m in re.finditer(r"transfers (\d+)/8: (.+)", result.stderr)]
    assert (8, "ramping up") in levels, result.stderr
    halved = levels.index(next(lv for lv in levels if lv[1] == "server asked to slow down"))
    assert levels[halved][0] <= 4
    assert any(why == "ramping up" for _, why in levels[halved + 1 :]), levels
    assert srv.counters()["faults_injected"] == {"429": 3}
    for i in range(24):
        expected = corpus.expected(f"item-{i:02d}")["blob.bin"][1]
        got = hashlib.md5((dest / f"item-{i:02d}" / "blob.bin").read_bytes()).hexdigest()
        assert got == expected


def doc_block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)
    assert len(blocks) == 1, f"docs/scale-out.md should hold one {language} block"
    return blocks[0]


def test_kubernetes_manifest_is_an_indexed_job_with_matching_shards() -> None:
    job = yaml.safe_load(doc_block("yaml"))
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    command = " ".join(spec["template"]["spec"]["containers"][0]["args"])
    assert f"--shards {spec['completions']}" in command
    assert "$JOB_COMPLETION_INDEX" in command


def test_slurm_script_runs_as_an_array_and_covers_the_corpus(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    script = tmp_path / "mirror.sbatch"
    script.write_text(doc_block("bash"))
    array = re.search(r"#SBATCH --array=(\d+)-(\d+)", script.read_text())
    assert array
    first, last = int(array[1]), int(array[2])
    corpus = corpus_of(24)
    srv = standin(corpus)
    logs, dest = tmp_path / "logs", tmp_path / "files"

    def run_task(task: int, lowest: int, count: int) -> None:
        env = srv.client_env(
            SLURM_ARRAY_TASK_ID=str(task),
            SLURM_ARRAY_TASK_MIN=str(lowest),
            SLURM_ARRAY_TASK_COUNT=str(count),
            QUERY="collection:c",
            LOGDIR=str(logs),
            DEST=str(dest),
        )
        done = subprocess.run(
            ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr

    for task in range(first, last + 1):
        run_task(task, first, last - first + 1)
    assert downloaded(dest) == set(corpus.identifiers())
    assert len(list(logs.glob("shard-*.jsonl"))) == last - first + 1
    # One task resubmitted alone: Slurm numbers the array afresh (MIN 4, COUNT 1).
    (logs / "shard-4.jsonl").rename(tmp_path / "lost.jsonl")
    run_task(4, 4, 1)  # a task that never ran
    run_task(4, 4, 1)  # the same task requeued
    all_logged = [i for log in logs.glob("shard-*.jsonl") for i in logged_ids(log)]
    assert sorted(all_logged) == sorted(corpus.identifiers())  # each item in one shard


def test_a_rescheduled_pod_resumes_its_log_without_shards_given(
    standin: Callable[..., ArchiveStandin], tmp_path: Path
) -> None:
    srv = standin(corpus_of(8))
    log = tmp_path / "shard-2.jsonl"
    pod = srv.client_env(JOB_COMPLETION_INDEX="2")
    first = subprocess.run(
        [IABULK, *search_args(log, tmp_path, "--shards", "4")],
        env=pod,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    added = int(re.search(r"resolved: (\d+) new job\(s\)", first.stderr)[1])  # type: ignore[index]
    assert f", {8 - added} in other shards;" in first.stderr
    again = subprocess.run(
        [IABULK, "download", "--joblog", str(log)],
        env=pod,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert "nothing left to do" in again.stderr


def test_gnu_parallel_recipe_names_every_shard_once() -> None:
    recipe = doc_block("sh")
    hosts = re.search(r"--sshlogin (\S+)", recipe)
    shards = re.search(r"--shard \{\}/(\d+)", recipe)
    args = re.search(r":::((?: \d+)+)", recipe)
    assert hosts and shards and args
    assert [int(a) for a in args[1].split()] == list(range(1, int(shards[1]) + 1))
    assert len(hosts[1].split(",")) == int(shards[1])


@pytest.mark.parametrize("spec", ["2/3", "3/3"])
def test_shard_split_is_stable_when_the_item_list_grows(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, spec: str
) -> None:
    small, large = corpus_of(30), corpus_of(45)
    lists = {}
    for name, corpus in (("small", small), ("large", large)):
        srv = standin(corpus)
        items = tmp_path / f"{name}.txt"
        items.write_text("\n".join(corpus.identifiers()) + "\n")
        log = tmp_path / f"{name}.jsonl"
        (tmp_path / name).mkdir()
        result = subprocess.run(
            [
                IABULK,
                "download",
                "--itemlist",
                str(items),
                "--shard",
                spec,
                "--joblog",
                str(log),
                "--destdir",
                str(tmp_path / name),
                "--disk-margin",
                "0",
                "-q",
            ],
            env=srv.client_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        lists[name] = set(logged_ids(log))
    assert lists["small"] <= lists["large"]
    assert lists["large"] - lists["small"] <= set(large.identifiers()) - set(small.identifiers())
