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

import os
from collections.abc import Callable

# posix_fadvise is missing on macOS and Windows, where the page cache keeps its pages.
_fadvise: Callable[[int, int, int, int], None] | None = getattr(os, "posix_fadvise", None)

__all__ = ["release_cache", "sync_and_release", "sync_path"]


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
