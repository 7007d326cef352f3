"""Splitting one run across machines: ``--shard K/N``.

Every shard resolves the same source and keeps the identifiers whose stable
hash falls in its share, so the shards together cover the source exactly
once, and adding items to the source never moves an existing item to another
shard. K and N can come from the scheduler: a Slurm job array
(``SLURM_ARRAY_TASK_ID`` as K with ``--shards N``; without it, from the array
as submitted: ``SLURM_ARRAY_TASK_MIN``, ``SLURM_ARRAY_TASK_COUNT``) or a
Kubernetes Indexed Job (``JOB_COMPLETION_INDEX`` plus ``--shards N``). A log
records its shard, and a scheduler's numbering yields to it on a resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Shard", "parse_shard", "shard_from_env", "ShardError"]


class ShardError(ValueError):
    """A shard specification that cannot be used."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ShardError(f"shard {self.index}/{self.count}: need 1 <= K <= N")

    def owns(self, identifier: str) -> bool:
        digest = hashlib.blake2b(identifier.encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"3/10"`` → Shard(3, 10)."""
    k, sep, n = text.partition("/")
    if not sep or not _digits(k) or not _digits(n):
        raise ShardError(f"--shard takes K/N with whole numbers, e.g. 3/10, not {text!r}")
    return Shard(int(k), int(n))


def shard_from_env(env: Mapping[str, str], shards: int | None) -> Shard | None:
    """The shard a scheduler started us as, or None outside an array job."""
    if "SLURM_ARRAY_TASK_ID" in env:
        task = _whole_number(env, "SLURM_ARRAY_TASK_ID")
        if shards is not None:
            # The task number is the shard: the same whichever tasks are (re)submitted.
            if not 1 <= task <= shards:
                raise ShardError(
                    f"SLURM_ARRAY_TASK_ID {task} is not a shard of {shards}: "
                    f"number the array 1-{shards} (sbatch --array=1-{shards})"
                )
            return Shard(task, shards)
        # The whole array as submitted: only a first submission numbers it right.
        first = _whole_number(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        if "SLURM_ARRAY_TASK_COUNT" not in env:
            raise ShardError(
                "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: "
                "give the number of shards with --shards N"
            )
        shards = _whole_number(env, "SLURM_ARRAY_TASK_COUNT")
        return _scheduled(task - first + 1, shards, "SLURM_ARRAY_TASK_ID")
    if "JOB_COMPLETION_INDEX" in env:
        if shards is None:
            raise ShardError(
                "JOB_COMPLETION_INDEX is set: give the number of shards with --shards N"
            )
        return _scheduled(
            _whole_number(env, "JOB_COMPLETION_INDEX") + 1, shards, "JOB_COMPLETION_INDEX"
        )
    if shards is not None:
        raise ShardError(
            "--shards needs a scheduler index (Slurm array or Kubernetes Indexed Job) "
            "or use --shard K/N"
        )
    return None


def _digits(text: str) -> bool:
    """ASCII digits only: ``int()`` refuses some of what ``isdigit()`` accepts ("²")."""
    text = text.strip()
    return text.isascii() and text.isdigit()


def _whole_number(env: Mapping[str, str], name: str) -> int:
    text = env[name].strip()
    if not _digits(text):
        raise ShardError(f"{name} is not a whole number: {env[name]!r}")
    return int(text)


def _scheduled(index: int, count: int, name: str) -> Shard:
    """The shard a scheduler's index names, or an error that names the variable."""
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"{name} gives shard {index} of {count}: need 1 <= K <= N")
    return Shard(index, count)
