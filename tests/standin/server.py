"""The stand-in's network side: an HTTP proxy that *is* archive.org.

Clients are pointed at it with the standard proxy variables (see
:meth:`ArchiveStandin.env`), so the code under test runs unchanged:

- ``CONNECT archive.org:443`` (or any ``*.archive.org:443``) is accepted with
  200, then TLS is terminated with the throw-away certificate from
  :mod:`.tls`, and the HTTP/1.1 requests inside the tunnel are answered
  (keep-alive). This is the path real users run: default ``https:`` URLs.
- ``GET http://archive.org/... HTTP/1.1`` (absolute-form, plain forward
  proxying) is answered the same way, for ``http:`` sessions.
- Any other host is refused with 403, and the socket listens on 127.0.0.1
  only, so nothing a test runs can reach past this machine.
- Requests in origin-form (``GET /_standin/counters``), which no proxy
  client sends, are the control endpoint: ``GET /_standin/counters``,
  ``POST /_standin/counters/reset``, ``GET|POST /_standin/faults``.

One daemon thread per connection; bodies go out as ``memoryview`` slices of
up to 1 MiB per ``sendall`` (the GIL is released while the kernel or OpenSSL
copies), which is what keeps a single connection at hundreds of MB/s.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from email.message import Message
from email.utils import formatdate
from http import HTTPStatus
from http.client import HTTPException, parse_headers
from pathlib import Path
from typing import Any, NamedTuple, final
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

from .api import ApiRequest, ArchiveAPI, Reply, status_reply
from .content import Body
from .corpus import Corpus
from .counters import Counters
from .faults import BODY_FAULTS, RETRY_AFTER_STATUSES, Fault, FaultPlan, RequestInfo
from .tls import certificate_files

MAX_LINE = 65536
MAX_REQUEST_BODY = 1024 * 1024
COALESCE = 16 * 1024  # a body chunk this small is sent in the same segment as the headers
ACCESS_KEY, SECRET_KEY = "standin-access-key", "standin-secret-key"

_IA_INI = f"""\
[s3]
access = {ACCESS_KEY}
secret = {SECRET_KEY}

[cookies]
logged-in-user = tester%40example.org; path=/; domain=.archive.org
logged-in-sig = standin-signature; path=/; domain=.archive.org

[general]
screenname = tester
"""


@final
class ArchiveStandin:
    """A local archive.org, reached as an HTTP(S) proxy on 127.0.0.1.

    Use as a context manager (or :meth:`start` / :meth:`stop`)::

        with ArchiveStandin(Corpus.preset("demo")) as srv:
            subprocess.run([...], env={**os.environ, **srv.env()})
            assert srv.counters()["requests_by_kind"]["data"] > 0

    ``faults`` is a :class:`FaultPlan`; assign ``srv.faults`` to replace it
    while serving.
    """

    def __init__(self, corpus: Corpus, faults: FaultPlan | None = None, port: int = 0) -> None:
        self.corpus = corpus
        self.api = ArchiveAPI(corpus)
        self.faults = faults if faults is not None else FaultPlan()
        self.certs = certificate_files()
        self.tls_context = self.certs.server_context()
        self.port = port
        self.stopping = threading.Event()
        self.stats = Counters()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._config_dir: Path | None = None

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> ArchiveStandin:
        if self._listener is not None:
            raise RuntimeError("stand-in already started")
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=1024)
        self.port = self._listener.getsockname()[1]
        self._config_dir = Path(tempfile.mkdtemp(prefix="iabulk-standin-"))
        (self._config_dir / "ia.ini").write_text(_IA_INI)
        self._acceptor = threading.Thread(target=self._accept, name="standin-accept", daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting, abort every open connection, remove the temp config."""
        self.stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.abort()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)

    def __enter__(self) -> ArchiveStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what clients need ------------------------------------------------------

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"{self.proxy_url}/_standin"

    @property
    def ca_bundle(self) -> str:
        return self.certs.ca_bundle

    @property
    def ia_config_file(self) -> str:
        assert self._config_dir is not None, "start() the stand-in first"
        return str(self._config_dir / "ia.ini")

    def env(self) -> dict[str, str]:
        """Environment variables that route a client process to this stand-in.

        Both spellings of the proxy variables are set (curl reads only the
        lower-case ``http_proxy``; Python lets lower case win), inherited
        ``ALL_PROXY``/``NO_PROXY`` and ``IA_*`` keys are blanked so they cannot
        bypass or override it, and the CA goes in every variable a client
        library might consult.
        """
        env = {
            "IA_CONFIG_FILE": self.ia_config_file,
            "IA_ACCESS_KEY_ID": "",
            "IA_SECRET_ACCESS_KEY": "",
        }
        for name, value in [
            ("HTTP_PROXY", self.proxy_url),
            ("HTTPS_PROXY", self.proxy_url),
            ("ALL_PROXY", ""),
            ("NO_PROXY", ""),
        ]:
            env[name] = env[name.lower()] = value
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
            env[name] = self.ca_bundle
        return env

    def client_env(self, **extra: str) -> dict[str, str]:
        """A whole environment for a client subprocess: ``os.environ``, then
        :meth:`env`, this interpreter's ``bin`` directory first on ``PATH`` (so
        ``iabulk``/``ia`` from the same virtualenv are found), then ``extra``."""
        env = {**os.environ, **self.env(), "PYTHONUNBUFFERED": "1"}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(extra)
        return env

    def counters(self) -> dict[str, Any]:
        """A snapshot of the tallies described in :class:`.counters.Counters`."""
        return self.stats.snapshot()

    def reset_counters(self) -> None:
        self.stats.reset()

    # -- connections ------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            if self.stopping.is_set():
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(
                target=self._run, args=(conn,), name="standin-conn", daemon=True
            ).start()

    def _run(self, conn: _Connection) -> None:
        try:
            conn.run()
        finally:
            with self._lock:
                self._connections.discard(conn)


class _BadRequest(Exception):
    """The client sent something that is not an HTTP/1.x request we accept."""


class _Request(NamedTuple):
    method: str
    target: str
    version: str
    headers: Message
    body: bytes

    @property
    def keep_alive(self) -> bool:
        tokens = self.headers.get("Connection", "").lower()
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens


class _Connection:
    """One client connection: plain proxy requests, or a TLS tunnel after CONNECT."""

    def __init__(self, server: ArchiveStandin, sock: socket.socket) -> None:
        self.server = server
        self.stats = server.stats
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=64 * 1024)
        self.tunnel_host: str | None = None
        self.counted = False

    def abort(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self) -> None:
        try:
            while not self.server.stopping.is_set():
                try:
                    req = self._read_request()
                    if req is None or not self._dispatch(req):
                        return
                except (_BadRequest, HTTPException) as exc:
                    self._send_json({"error": f"bad request: {exc}"}, 400, keep_alive=False)
                    return
        except OSError:  # includes ssl.SSLError: the peer went away or spoke nonsense
            pass
        finally:
            self._close()

    def _close(self) -> None:
        # The reader holds a reference to the socket: close it first, or
        # closing the socket would not release the descriptor.
        for closable in (self.reader, self.sock):
            try:
                closable.close()
            except OSError:
                pass

    def _read_request(self) -> _Request | None:
        line = self.reader.readline(MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):
            line = self.reader.readline(MAX_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_LINE or not line.endswith(b"\n"):
            raise _BadRequest("request line too long or cut short")
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"not an HTTP/1.x request line: {line[:80]!r}")
        headers = parse_headers(self.reader)
        if headers.get("Transfer-Encoding"):
            raise _BadRequest("chunked request bodies are not supported")
        length = headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_REQUEST_BODY:
            raise _BadRequest(f"request body of {length} bytes")
        body = self.reader.read(int(length))
        if len(body) < int(length):
            return None
        return _Request(parts[0], parts[1], parts[2], headers, body)

    def _dispatch(self, req: _Request) -> bool:
        """Answer one request; False when the connection must end."""
        if self.tunnel_host is not None:
            if not req.target.startswith("/"):
                raise _BadRequest("inside a tunnel, requests use origin-form targets")
            return self._archive(
                req, "https", req.headers.get("Host") or self.tunnel_host, req.target
            )
        if req.method == "CONNECT":
            return self._connect(req)
        if req.target.startswith("/"):
            return self._control(req, req.target)
        try:
            url = urlsplit(req.target)
            port = url.port
        except ValueError as exc:
            raise _BadRequest(f"bad request target {req.target!r}: {exc}") from None
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        if url.hostname in ("127.0.0.1", "localhost") and port == self.server.port:
            return self._control(req, target)  # a client that proxies everything, even us
        if url.scheme != "http":
            return self._refuse(req.target)
        return self._archive(req, "http", url.netloc, target)

    def _connect(self, req: _Request) -> bool:
        host = _archive_host(req.target, 443)
        if host is None:
            return self._refuse(req.target)
        self._count_connection()
        self.sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.stats.tunnel()
        # The client sends nothing more until it sees our 200, so the plain
        # reader holds no buffered bytes that belong to the TLS handshake.
        self.reader.close()
        self.sock = self.server.tls_context.wrap_socket(self.sock, server_side=True)
        self.reader = self.sock.makefile("rb", buffering=64 * 1024)
        self.tunnel_host = host
        return True

    def _refuse(self, host: str) -> bool:
        self._count_connection()
        self.stats.answered("refused", 403)
        message = f"the archive stand-in only serves archive.org, not {host!r}"
        self._send_json({"error": message}, 403, keep_alive=False)
        return False

    def _count_connection(self) -> None:
        if not self.counted:
            self.counted = True
            self.stats.connection()

    # -- archive.org requests ---------------------------------------------------

    def _archive(self, req: _Request, scheme: str, authority: str, target: str) -> bool:
        host = _archive_host(authority, 443 if scheme == "https" else 80)
        if host is None:
            return self._refuse(authority)
        self._count_connection()
        raw_path, _, raw_query = target.partition("?")
        api_req = ApiRequest(
            method=req.method,
            scheme=scheme,
            host=host,
            # Bytes first: a careless client may send raw UTF-8 instead of %XX.
            path=unquote_to_bytes(raw_path.encode("latin-1")).decode("utf-8", "replace"),
            query=parse_qs(raw_query, keep_blank_values=True),
            headers=req.headers,
        )
        self.stats.begin()
        try:
            reply = self.server.api.handle(api_req)
            plan = self.server.faults
            about = RequestInfo(
                reply.kind, target, api_req.path, reply.identifier, reply.name, reply.page
            )
            fault = plan.decide(about)
            if reply.kind == "metadata" and plan.metadata_delay > 0:
                self.stats.fault("metadata_delay")
                self.server.stopping.wait(plan.metadata_delay)
            if fault is not None and fault.status is not None:
                self.stats.fault(fault.kind)
                headers = []
                if plan.retry_after is not None and fault.kind in RETRY_AFTER_STATUSES:
                    headers.append(("Retry-After", str(plan.retry_after)))
                reply = status_reply(reply.kind, fault.status, headers)
                fault = None
            elif fault is not None and fault.kind == "moved":
                self.stats.fault(fault.kind)
                here = f"{api_req.scheme}://{api_req.host}{target}"
                reply = status_reply(reply.kind, 302, [("Location", here)])
                fault = None
            self.stats.answered(reply.kind, reply.status)
            return self._send(reply, fault, plan, req.method == "HEAD", req.keep_alive)
        finally:
            self.stats.end()

    def _send(
        self, reply: Reply, fault: Fault | None, plan: FaultPlan, head: bool, keep_alive: bool
    ) -> bool:
        """Write the reply, applying a body fault; False when the connection is gone."""
        body = reply.body
        with_body = not head and body.length > 0
        kind = fault.kind if fault is not None else None
        if kind == "slow_first_byte":
            self.stats.fault(kind)
            self.server.stopping.wait(plan.first_byte_delay)
        elif kind == "reset" and not with_body:
            self.stats.fault(kind)
            self._reset()
            return False
        elif kind in BODY_FAULTS and with_body:
            self.stats.fault(kind)
        else:
            kind = None  # short/flip cannot apply to an empty body
        head_bytes = _head(reply.status, reply.headers, body.length, keep_alive)
        if not with_body:
            self.sock.sendall(head_bytes)
            return keep_alive
        limit = body.length // 2 if kind in ("reset", "short") else body.length
        flip_at = fault.draw % body.length if kind == "flip" and fault is not None else -1
        self._send_body(head_bytes, body, limit, flip_at, plan.bandwidth)
        if kind == "reset":
            self._reset()
            return False
        return keep_alive and kind != "short"

    def _send_body(
        self, head: bytes, body: Body, limit: int, flip_at: int, bandwidth: int | None
    ) -> None:
        """Send the headers and the first ``limit`` body bytes, one flipped if asked.

        Bytes are counted before they are sent, so a client that has read a
        body always finds it counted, and uncounted if the connection breaks.
        """
        pieces = _pieces(body, limit, flip_at)
        if limit <= COALESCE and not bandwidth:  # one segment for small answers
            self._send_counted(head + b"".join(pieces), limit)
            return
        self.sock.sendall(head)
        pacer = _Pacer(bandwidth, self.server.stopping) if bandwidth else None
        for piece in pieces:
            self._send_counted(piece, len(piece), pacer)

    def _send_counted(
        self, data: bytes | memoryview, body_bytes: int, pacer: _Pacer | None = None
    ) -> None:
        self.stats.sent(body_bytes)
        try:
            if pacer is None:
                self.sock.sendall(data)
            else:
                pacer.send(self.sock, data)
        except OSError:
            self.stats.sent(-body_bytes)
            raise

    def _reset(self) -> None:
        """Abort with a TCP RST: SO_LINGER on with a zero timeout, then close."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self._close()

    # -- control endpoint -------------------------------------------------------

    def _control(self, req: _Request, target: str) -> bool:
        path = target.partition("?")[0]
        server = self.server
        if (req.method, path) == ("GET", "/_standin/counters"):
            return self._send_json(server.counters(), 200, req.keep_alive)
        if (req.method, path) == ("POST", "/_standin/counters/reset"):
            server.reset_counters()
            return self._send_json(server.counters(), 200, req.keep_alive)
        if (req.method, path) == ("GET", "/_standin/faults"):
            return self._send_json(server.faults.to_dict(), 200, req.keep_alive)
        if (req.method, path) == ("POST", "/_standin/faults"):
            try:
                data = json.loads(req.body or b"{}")
                plan = (
                    FaultPlan.from_spec(data)
                    if isinstance(data, str)
                    else FaultPlan.from_dict(data)
                )
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                return self._send_json({"error": f"bad fault plan: {exc}"}, 400, req.keep_alive)
            server.faults = plan
            return self._send_json(plan.to_dict(), 200, req.keep_alive)
        error = (
            f"no control endpoint {req.method} {path}; archive.org requests must come "
            "through the proxy (CONNECT or absolute-form)"
        )
        return self._send_json({"error": error}, 404, req.keep_alive)

    def _send_json(self, doc: Any, status: int, keep_alive: bool) -> bool:
        body = json.dumps(doc).encode()
        head = _head(status, [("Content-Type", "application/json")], len(body), keep_alive)
        self.sock.sendall(head + body)
        return keep_alive


class _Pacer:
    """Holds one response body to ``bandwidth`` bytes/s by sleeping between slices."""

    def __init__(self, bandwidth: int, stopping: threading.Event) -> None:
        self.bandwidth = bandwidth
        self.step = max(1024, bandwidth // 20)
        self.stopping = stopping
        self.started = time.monotonic()
        self.sent = 0

    def send(self, sock: socket.socket, data: bytes | memoryview) -> None:
        for start in range(0, len(data), self.step):
            part = data[start : start + self.step]
            sock.sendall(part)
            self.sent += len(part)
            ahead = self.started + self.sent / self.bandwidth - time.monotonic()
            if ahead > 0:
                self.stopping.wait(ahead)


def _pieces(body: Body, limit: int, flip_at: int) -> Iterator[bytes | memoryview]:
    """The body's chunks up to ``limit`` bytes, with the byte at ``flip_at`` inverted."""
    sent = 0
    for chunk in body.chunks():
        if sent >= limit:
            return
        chunk = chunk[: limit - sent]
        if sent <= flip_at < sent + len(chunk):
            k = flip_at - sent
            yield chunk[:k]
            yield bytes([chunk[k] ^ 0xFF])
            yield chunk[k + 1 :]
        else:
            yield chunk
        sent += len(chunk)


def _head(status: int, headers: list[tuple[str, str]], length: int, keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Server: nginx",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Length: {length}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _archive_host(authority: str, default_port: int) -> str | None:
    """The lower-cased host if ``authority`` is archive.org or a subdomain on the
    expected port, else None (the proxy refuses everything else)."""
    host, sep, port = authority.lower().partition(":")
    if sep and port != str(default_port):
        return None
    if host == "archive.org" or host.endswith(".archive.org"):
        return host
    return None
