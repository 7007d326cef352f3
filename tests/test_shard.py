"""--shard K/N: an exact, stable partition; indexes from Slurm and Kubernetes."""

from __future__ import annotations

import pytest
from iabulk.shard import Shard, ShardError, parse_shard, shard_from_env

IDS = [f"item-{i:05d}" for i in range(3000)]


def test_shards_partition_the_items_exactly() -> None:
    shards = [Shard(k, 3) for k in (1, 2, 3)]
    owners = [[s for s in shards if s.owns(i)] for i in IDS]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(s.owns(i) for i in IDS) for s in shards]
    assert min(sizes) > 800  # roughly even: 1000 each


def test_split_is_stable_when_the_list_grows() -> None:
    shard = Shard(2, 5)
    before = {i for i in IDS if shard.owns(i)}
    grown = IDS + [f"new-{i}" for i in range(1000)]
    after = {i for i in grown if shard.owns(i)}
    assert before == after & set(IDS)


@pytest.mark.parametrize("text, k, n", [("1/1", 1, 1), ("3/10", 3, 10), (" 2 / 4 ", 2, 4)])
def test_parse_shard(text: str, k: int, n: int) -> None:
    assert parse_shard(text) == Shard(k, n)


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/3", ""])
def test_parse_shard_rejects_nonsense(text: str) -> None:
    with pytest.raises(ShardError):
        parse_shard(text)


def test_slurm_array_index_with_offset() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert shard_from_env(env, None) == Shard(3, 4)


def test_kubernetes_indexed_job_needs_shards() -> None:
    assert shard_from_env({"JOB_COMPLETION_INDEX": "0"}, 6) == Shard(1, 6)
    with pytest.raises(ShardError, match="--shards"):
        shard_from_env({"JOB_COMPLETION_INDEX": "0"}, None)


def test_no_scheduler_no_shard() -> None:
    assert shard_from_env({}, None) is None
    with pytest.raises(ShardError):
        shard_from_env({}, 4)
