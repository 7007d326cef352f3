"""Reading a response body into one reusable buffer.

``requests``' ``iter_content`` hands out a fresh ``bytes`` object per chunk:
urllib3 allocates it, reads into it through ``http.client``, and often copies
it again while assembling the requested amount. For a large file that is an
allocation, page faults and a copy per megabyte on top of the TLS decryption
and the md5, all of it on the transfer threads that share the GIL.

:func:`iter_body` reads the same body with ``readinto`` into one buffer per
thread, kept from file to file, and yields views of it; over TLS it takes
the records straight from the TLS object (:func:`_tls_readinto`). The
request itself still goes through the shared ``requests`` session (proxies,
CA bundles, the ``ia`` configuration, connection pools); only the
body-reading loop changes, and only for the plain case: an identity-encoded
body with a known or close-delimited length. A compressed or chunked body,
or a response urllib3 has already begun to read, goes through
``iter_content`` as before.

Read failures are raised as the ``requests`` exceptions that ``iter_content``
would raise for them (``ChunkedEncodingError`` for a reset or a short body,
``ConnectionError`` for a timeout, ``SSLError``), so callers handle one set of
exceptions whichever way the body was read.
"""

from __future__ import annotations

import http.client
import io
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import requests

__all__ = ["iter_body", "raw_body"]

FILL_SECONDS = 0.25
"""A fill of the buffer returns what it has after this long: on a slow link a
megabyte takes many seconds, and each chunk is when progress is counted, a
stop is noticed and a partial file grows (what a resume keeps)."""


def raw_body(response: requests.Response) -> http.client.HTTPResponse | None:
    """The ``http.client`` response under ``response`` if its body can be read raw.

    None when urllib3 would transform the body (a ``Content-Encoding`` it
    decodes), when it is chunked, or when anything has read from it already.
    """
    raw = response.raw
    fp = getattr(raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse) or fp.chunked or fp.isclosed():
        return None
    if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        return None
    try:
        if raw.tell() != 0:
            return None
    except (AttributeError, OSError):
        return None
    return fp


def iter_body(response: requests.Response, size: int) -> Iterator[memoryview]:
    """The body of ``response`` in chunks of at most ``size`` bytes.

    Each chunk is a view of one buffer that the next chunk overwrites: use it
    (hash it, write it) before asking for the next. Raises
    ``requests.RequestException`` for a failed read, like ``iter_content``.
    When the whole body has been read, the connection goes back to the pool
    for the next request.
    """
    fp = raw_body(response)
    if fp is None:
        for chunk in response.iter_content(size):
            yield memoryview(chunk)
        return
    view = _buffer(size)
    readinto = _tls_readinto(fp) or fp.readinto
    while True:
        expected = fp.length  # bytes still to come, None if the server did not say
        try:
            n = readinto(view)
        except (OSError, http.client.HTTPException) as exc:
            raise _read_error(exc) from None
        if not n:
            break
        yield view[:n]
    if expected:
        # http.client reports a body cut short by the server as its end.
        raise requests.exceptions.ChunkedEncodingError(
            f"connection closed with {expected} bytes of the body still to come"
        )
    if fp.isclosed():
        response.raw.release_conn()


def _tls_readinto(fp: http.client.HTTPResponse) -> Callable[[memoryview], int] | None:
    """A ``readinto`` for ``fp``'s body that takes TLS records straight from OpenSSL.

    A TLS read returns one record, at most 16 KiB, so ``fp.readinto`` fills a
    megabyte in some 64 trips through ``BufferedReader``, ``SocketIO`` and
    ``SSLSocket``: three Python frames a record, 0.3 s of CPU per GB (7% of a
    large download) and a context switch on the GIL each time. This reader
    goes through those layers once per fill, for whatever ``BufferedReader``
    holds, then asks the TLS object for the rest of the fill directly, and
    keeps ``fp.length`` as ``http.client`` would. None when the body is not
    TLS of a known length behind the layers it expects.
    """
    buffered = fp.fp
    sock = getattr(getattr(buffered, "raw", None), "_sock", None)
    tls = getattr(sock, "_sslobj", None)
    if (
        not isinstance(buffered, io.BufferedReader)
        or not isinstance(sock, ssl.SSLSocket)
        or tls is None  # not yet or no longer TLS
        or fp.length is None
    ):
        return None
    read_record = tls.read

    def readinto(view: memoryview) -> int:
        length = fp.length or 0
        want = min(len(view), length)
        if not want:
            return fp.readinto(view[:0])  # at the end: http.client lets the connection go
        n = buffered.readinto1(view[:want])  # what came with the headers, or one record
        due = time.monotonic() + FILL_SECONDS
        try:
            while 0 < n < want:
                got = read_record(want - n, view[n:want])
                if not got:
                    break
                n += got
                if time.monotonic() > due:
                    break
        except ssl.SSLEOFError:
            pass  # closed without a TLS goodbye: a short body, as SSLSocket reports it
        fp.length = length - n
        return n

    return readinto


_buffers = threading.local()


def _buffer(size: int) -> memoryview:
    """This thread's buffer: allocated once, not per file (a fresh megabyte is
    an mmap, 256 page faults and a munmap: more than a small file costs)."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None or len(view) != size:
        view = _buffers.view = memoryview(bytearray(size))
    return view


def _read_error(exc: BaseException) -> requests.RequestException:
    """The exception ``iter_content`` raises when urllib3 meets ``exc`` reading a body."""
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, ssl.SSLError) and "read operation timed out" in str(exc)
    ):
        return requests.ConnectionError(f"read timed out: {exc}")
    if isinstance(exc, ssl.SSLError):
        return requests.exceptions.SSLError(str(exc))
    return requests.exceptions.ChunkedEncodingError(f"connection broken: {exc!r}")
