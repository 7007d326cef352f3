"""Making written files durable, then letting their pages go.

Durable first: a file is fsynced before anything depends on it (its rename
into place, a ``completed`` line, the removal of the original after a move).
Released after: a bulk run writes far more than anyone reads back soon. Left
in the page cache, those pages push the rest of the machine's working set
out of memory, and each new file lands in memory the kernel must first
reclaim (in a VM, memory the host may have to back afresh: 2-4 s of system
time per GB on the benchmark machine, against under 1 s when pages are
reused). Once synced, the pages are clean, so dropping them costs no I/O.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

# posix_fadvise is missing on macOS and Windows, where the page cache keeps its pages.
_fadvise: Callable[[int, int, int, int], None] | None = getattr(os, "posix_fadvise", None)

__all__ = ["NAME_MAX", "release_cache", "sync_and_release", "sync_path", "temporary_path"]

NAME_MAX = 255
"""Bytes a file name may have on the file systems iabulk writes to (ext4, XFS,
Btrfs, ZFS, tmpfs); archive.org lists names up to that length."""


def release_cache(fd: int) -> None:
    """Advise the kernel to drop the file's clean cached pages (a hint, never an error)."""
    if _fadvise is not None:
        try:
            _fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # a file system that takes no advice keeps its pages


def sync_and_release(fd: int) -> None:
    """fsync ``fd``, then release its now clean pages."""
    os.fsync(fd)
    release_cache(fd)


def sync_path(path: str) -> None:
    """:func:`sync_and_release` a file or a directory by name."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sync_and_release(fd)
    finally:
        os.close(fd)


def temporary_path(target: str, suffix: str) -> str:
    """Where ``target`` is written before it is renamed into place.

    Beside it, as ``target + suffix``; but a name already near :data:`NAME_MAX`
    has no room for the suffix, so it gets a hidden name made from a hash of
    its own. Either way the name is the same on every run: a resume finds
    the partial file it left.
    """
    head, name = os.path.split(target)
    if len(os.fsencode(name + suffix)) <= NAME_MAX:
        return target + suffix
    return os.path.join(head, f".{hashlib.sha1(os.fsencode(name)).hexdigest()}{suffix}")
