"""Reading a response body into one reused buffer (``iabulk.workers.sink``).

The raw path is checked against the archive stand-in over real sockets (TLS
through its proxy, as iabulk reaches it); the fallbacks for bodies urllib3
must transform (gzip, chunked) and a stalled body against a small local
server that can send them.
"""

from __future__ import annotations

import gzip
import http.server
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
import requests
from iabulk.workers.sink import _tls_readinto, iter_body, raw_body

from tests.standin import ArchiveStandin, Corpus, FaultPlan

SIZE = 3 * 1024 * 1024 + 12_345  # not a multiple of any buffer size
CHUNK = 256 * 1024


def session(srv: ArchiveStandin) -> requests.Session:
    """A requests session routed through the stand-in, ignoring the host's env."""
    s = requests.Session()
    s.trust_env = False
    s.proxies = {"http": srv.proxy_url, "https": srv.proxy_url}
    s.verify = srv.ca_bundle
    return s


@pytest.fixture
def corpus() -> Corpus:
    c = Corpus()
    c.add_item("sink-item", [("a.bin", SIZE), ("b.bin", SIZE)])
    return c


def url(name: str) -> str:
    return f"https://archive.org/download/sink-item/{name}"


def read_all(response: requests.Response, size: int = CHUNK) -> bytes:
    parts = []
    for chunk in iter_body(response, size):
        assert 0 < len(chunk) <= size
        parts.append(bytes(chunk))  # the view is overwritten by the next read
    return b"".join(parts)


def test_body_read_raw_is_the_file_and_keeps_the_connection(
    standin: Callable[..., ArchiveStandin], corpus: Corpus
) -> None:
    srv = standin(corpus)
    s = session(srv)
    for name in ("a.bin", "b.bin"):
        with s.get(url(name), stream=True, timeout=30) as r:
            assert r.status_code == 200
            fp = raw_body(r)
            assert fp is not None
            assert _tls_readinto(fp) is not None  # TLS records read directly
            assert read_all(r) == corpus.read("sink-item", name)
    # archive.org and the data node: one kept-alive connection each, reused.
    assert srv.counters()["connections_opened"] == 2


def test_resumed_range_body_is_read_raw(
    standin: Callable[..., ArchiveStandin], corpus: Corpus
) -> None:
    srv = standin(corpus)
    with session(srv).get(
        url("a.bin"), stream=True, timeout=30, headers={"Range": "bytes=1000-"}
    ) as r:
        assert r.status_code == 206
        assert raw_body(r) is not None
        assert read_all(r) == corpus.read("sink-item", "a.bin", 1000)


@pytest.mark.parametrize("fault", ["reset", "short"])
def test_broken_body_raises_what_iter_content_raises(
    standin: Callable[..., ArchiveStandin], corpus: Corpus, fault: str
) -> None:
    plan = FaultPlan().fail_first("sink-item/a.bin", [fault], kinds=["data"])
    srv = standin(corpus, plan)
    with session(srv).get(url("a.bin"), stream=True, timeout=30) as r:
        assert raw_body(r) is not None
        got = 0
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in iter_body(r, CHUNK):
                got += len(chunk)
    assert got < SIZE


def test_stalled_tls_body_times_out_as_a_connection_error(
    standin: Callable[..., ArchiveStandin], corpus: Corpus
) -> None:
    srv = standin(corpus, FaultPlan(bandwidth=1024))  # a 1 KiB slice, then a second's pause
    with session(srv).get(url("a.bin"), stream=True, timeout=(30, 0.3)) as r:
        with pytest.raises(requests.ConnectionError):
            read_all(r)


def test_body_already_started_is_not_read_raw(
    standin: Callable[..., ArchiveStandin], corpus: Corpus
) -> None:
    srv = standin(corpus)
    with session(srv).get(url("a.bin"), stream=True, timeout=30) as r:
        head = r.raw.read(10)
        assert raw_body(r) is None
        assert head + read_all(r) == corpus.read("sink-item", "a.bin")


# -- fallbacks, against a local plain-HTTP server ------------------------------

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/gzip":
            body = gzip.compress(PAYLOAD)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(PAYLOAD), 100_000):
                part = PAYLOAD[i : i + 100_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            self.server.release.wait(10)  # type: ignore[attr-defined]
            self.close_connection = True
        elif self.path == "/reset":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            # Abort with a TCP RST while the client waits for the rest.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.server.release.wait(0.2)  # type: ignore[attr-defined]
            self.connection.close()
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def plain_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


@pytest.mark.parametrize("path", ["/gzip", "/chunked"])
def test_encoded_or_chunked_body_falls_back_to_iter_content(local: str, path: str) -> None:
    with plain_session().get(local + path, stream=True, timeout=10) as r:
        assert raw_body(r) is None
        assert read_all(r, 64 * 1024) == PAYLOAD


def test_stalled_body_times_out_as_a_connection_error(local: str) -> None:
    with plain_session().get(local + "/stall", stream=True, timeout=(5, 0.5)) as r:
        assert raw_body(r) is not None
        with pytest.raises(requests.ConnectionError):
            read_all(r)


def test_connection_reset_mid_body_is_a_requests_exception(local: str) -> None:
    """The socket's ``ConnectionResetError`` must not escape as an ``OSError``:
    the caller takes ``OSError`` for a failed write to disk."""
    with plain_session().get(local + "/reset", stream=True, timeout=10) as r:
        assert raw_body(r) is not None
        with pytest.raises(requests.exceptions.ChunkedEncodingError) as caught:
            read_all(r)
    assert "ConnectionResetError" in str(caught.value)
