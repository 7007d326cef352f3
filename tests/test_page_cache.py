"""What a run writes or checks does not stay in the page cache.

Every downloaded or moved file is synced and then released, and ``iabulk
verify`` releases each file it has hashed, so a bulk run does not push the
rest of the machine's working set out of memory. Residency is read with mincore(2)
on a mapping of each file; two control files show the check sees cached
pages, and that this file system drops clean pages when advised to.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.commands import iabulk, search_download
from tests.standin import ArchiveStandin, Corpus
from tests.test_disk import pool_with

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mincore(2) as Linux has it")


def resident_pages(path: Path) -> int:
    """How many of ``path``'s pages are in the page cache."""
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    vector = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        start = ctypes.c_char.from_buffer(mapped)
        try:
            if libc.mincore(ctypes.addressof(start), size, vector) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
        finally:
            del start  # the mapping cannot close while a ctypes view holds it
    return sum(byte & 1 for byte in vector)


def write_synced(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A destination on a file system that caches written pages and drops them on advice."""
    cached, released = tmp_path / "cached.bin", tmp_path / "released.bin"
    write_synced(cached, 1 << 20)
    assert resident_pages(cached) == (1 << 20) // mmap.PAGESIZE
    write_synced(released, 1 << 20)
    fd = os.open(released, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if resident_pages(released) != 0:
        pytest.skip("this file system keeps clean pages despite POSIX_FADV_DONTNEED")
    d = tmp_path / "files"
    d.mkdir()
    return d


def test_downloaded_and_verified_files_leave_the_page_cache(
    standin: Callable[..., ArchiveStandin], tmp_path: Path, dest: Path
) -> None:
    corpus = Corpus()
    for i in range(4):
        corpus.add_item(
            f"c-item-{i}",
            [("big.bin", 3 * (1 << 20) + i), ("small.txt", 5000 + i), ("sub/inner.bin", 70_000)],
            collection="c",
        )
    srv = standin(corpus)
    log = tmp_path / "run.jsonl"
    result = search_download(srv, log, dest, "-w", "3")
    assert result.returncode == 0, result.stderr
    files = [dest / i / name for i in corpus.identifiers() for name in corpus.expected(i)]
    assert {"big.bin", "small.txt", "sub/inner.bin"} <= set(corpus.expected("c-item-0"))
    assert {f: resident_pages(f) for f in files} == {f: 0 for f in files}

    for f in files:
        f.read_bytes()  # back into the cache, as a reader would bring them
    assert all(resident_pages(f) > 0 for f in files)
    verified = iabulk(srv, "verify", str(log))
    assert verified.returncode == 0, verified.stderr
    assert {f: resident_pages(f) for f in files} == {f: 0 for f in files}


def test_an_item_moved_to_another_disk_leaves_the_page_cache(dest: Path) -> None:
    pool, (a, b) = pool_with(dest, {"a": 10, "b": 10 * (1 << 20)})
    Path(a, "x").mkdir()
    original = Path(a, "x", "part.bin")
    write_synced(original, 1 << 20)
    assert resident_pages(original) > 0
    assert pool.reserve("x", 2 << 20, present=lambda root: 1 << 20).path == b
    moved = Path(b, "x", "part.bin")
    assert moved.stat().st_size == 1 << 20
    assert resident_pages(moved) == 0
