"""File bodies the stand-in serves, produced on demand instead of stored.

A corpus can describe gigabytes (50 x 20 MiB, or 100,000 small files), so no
body is ever kept per file. Every synthetic file is a 32-byte header unique to
``(identifier, name)`` followed by a window into one shared pseudo-random
block, starting at an offset also derived from ``(identifier, name)``. The
block is stored twice in a row (a "ring"), so any window of up to one block
length is a contiguous ``memoryview`` slice: serving never copies or loops
per byte, which is what lets the server push hundreds of MB/s.

Checksums (md5, sha1, crc32) are computed from the same chunks the server
sends, so a client that verifies them checks exactly what was on the wire.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

BLOCK_SIZE = 4 * 1024 * 1024
HEADER_SIZE = 32
CHUNK_SIZE = 1024 * 1024

_BLOCK = random.Random(0x1AB01C).randbytes(BLOCK_SIZE)
_RING = memoryview(_BLOCK + _BLOCK)


@dataclass(frozen=True)
class Digests:
    """The checksums archive.org lists for a file (hex strings, as in its JSON)."""

    md5: str
    sha1: str
    crc32: str


class Body(Protocol):
    """A byte range that can be sent as a sequence of ``memoryview`` chunks."""

    length: int

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]: ...


class BytesBody:
    """A body held in memory: JSON answers, XML files, error pages."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self.length = len(data)

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
        for start in range(0, self.length, chunk_size):
            yield self._view[start : start + chunk_size]


class SyntheticBody:
    """Bytes ``[start, end)`` of the synthetic file for ``(identifier, name)``."""

    def __init__(self, identifier: str, name: str, start: int, end: int) -> None:
        key = hashlib.sha256(f"{identifier}\0{name}".encode()).digest()
        self._header = memoryview(key[:HEADER_SIZE])
        self._ring_offset = int.from_bytes(key[:8], "big") % BLOCK_SIZE
        self._start = start
        self._end = end
        self.length = end - start

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
        chunk_size = min(chunk_size, BLOCK_SIZE)
        pos = self._start
        if pos < HEADER_SIZE and pos < self._end:
            stop = min(HEADER_SIZE, self._end)
            yield self._header[pos:stop]
            pos = stop
        while pos < self._end:
            ring_pos = (self._ring_offset + pos - HEADER_SIZE) % BLOCK_SIZE
            take = min(chunk_size, self._end - pos)
            yield _RING[ring_pos : ring_pos + take]
            pos += take


def digests_of(body: Body) -> Digests:
    """md5, sha1 and crc32 of a body in one pass over its chunks."""
    md5 = hashlib.md5()
    sha1 = hashlib.sha1()
    crc = 0
    for chunk in body.chunks():
        md5.update(chunk)
        sha1.update(chunk)
        crc = zlib.crc32(chunk, crc)
    return Digests(md5.hexdigest(), sha1.hexdigest(), f"{crc:08x}")
