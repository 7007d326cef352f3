"""archive.org's HTTP API as the ``internetarchive`` library (5.12) uses it.

Pure request -> reply logic with no sockets, so each endpoint reads like the
behaviour it copies:

- ``POST|GET /services/search/v1/scrape`` (``q``, ``fields``, ``count``,
  ``cursor``, ``total_only``, ``sorts``): pages of ``items`` with ``count``
  and ``total``, and an opaque ``cursor`` on every page but the last.
  ``count`` must be 100..10000, as on archive.org, so a client that wants
  several pages needs more than 100 results.
- ``GET /advancedsearch.php`` (``q``, ``fl[]``, ``rows``, ``page``): JSON only.
- ``GET /metadata/<id>``: the item document, ``is_dark`` for dark items and
  ``{}`` (status 200) for identifiers that do not exist.
- ``GET /download/<id>/<name>``: 302 to the item's data node,
  ``<scheme>://ia80NNNN.us.archive.org/<n>/items/<id>/<quoted name>``; 403
  for dark items, 404 for missing items or files.
- ``GET /<n>/items/<id>/<name>`` on a data node: the bytes, with
  ``Content-Length``, ``Last-Modified``, ``ETag``, ``Accept-Ranges``;
  a single ``Range`` gives 206, a start past the end 416; anything else in
  ``Range`` is ignored (200, full body), which HTTP allows.

Dark items stay in search results: a search index lags behind darkening, and
the case a bulk downloader must survive is exactly "search found it, then it
was dark".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from .content import Body, BytesBody
from .corpus import Corpus
from .query import QueryError

MIN_COUNT, MAX_COUNT = 100, 10000
_DATA_PATH = re.compile(r"/(\d+)/items/(.+)", re.DOTALL)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
UNSATISFIABLE = "unsatisfiable"


@dataclass
class ApiRequest:
    """An HTTP request addressed to an archive.org host."""

    method: str
    scheme: str  # "https" inside a CONNECT tunnel, "http" for forward-proxy requests
    host: str
    path: str  # percent-decoded
    query: dict[str, list[str]]
    headers: Mapping[str, str]

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Reply:
    """An answer, plus what fault injection and counters need to know about it."""

    status: int
    kind: str
    body: Body
    headers: list[tuple[str, str]] = field(default_factory=list)
    identifier: str | None = None
    name: str | None = None
    page: int | None = None


def json_reply(kind: str, doc: Any, status: int = 200, **about: Any) -> Reply:
    text = json.dumps(doc, ensure_ascii=False)
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate (a test's odd metadata) travels as \ud800
        data = json.dumps(doc).encode()
    return Reply(status, kind, BytesBody(data), [("Content-Type", "application/json")], **about)


def status_reply(
    kind: str, status: int, headers: list[tuple[str, str]] | None = None, **about: Any
) -> Reply:
    """A plain nginx-style page for a status, as archive.org's front ends send."""
    phrase = HTTPStatus(status).phrase
    page = (
        f"<html><head><title>{status} {phrase}</title></head><body><h1>{phrase}</h1></body></html>"
    )
    body = BytesBody(page.encode())
    return Reply(status, kind, body, [("Content-Type", "text/html"), *(headers or [])], **about)


class ArchiveAPI:
    """Answers archive.org requests from a :class:`Corpus`."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def handle(self, req: ApiRequest) -> Reply:
        path = req.path
        if path == "/services/search/v1/scrape":
            return self._allow(req, ("GET", "POST"), "search") or self.scrape(req)
        if path == "/advancedsearch.php":
            return self._allow(req, ("GET",), "search") or self.advanced_search(req)
        if path.startswith("/metadata/"):
            return self._allow(req, ("GET", "HEAD"), "metadata") or self.metadata(req)
        if path.startswith("/download/"):
            return self._allow(req, ("GET", "HEAD"), "redirect") or self.download(req)
        m = _DATA_PATH.fullmatch(path)
        if m:
            return self._allow(req, ("GET", "HEAD"), "data") or self.data(req, m[2])
        return status_reply("other", 404)

    @staticmethod
    def _allow(req: ApiRequest, methods: tuple[str, ...], kind: str) -> Reply | None:
        if req.method in methods:
            return None
        return status_reply(kind, 405, [("Allow", ", ".join(methods))])

    # -- search ---------------------------------------------------------------

    def scrape(self, req: ApiRequest) -> Reply:
        query = req.param("q")
        if not query:
            return json_reply("search", {"error": "No query (q) given"}, 400)
        try:
            count = int(req.param("count", "5000") or "")
        except ValueError:
            count = 0
        if not MIN_COUNT <= count <= MAX_COUNT:
            error = f"count must be an integer between {MIN_COUNT} and {MAX_COUNT}"
            return json_reply("search", {"error": error}, 400)
        try:
            found = self.corpus.search(query)
        except QueryError as exc:
            return json_reply("search", {"error": f"Invalid query: {exc}"}, 400)
        sorts = (req.param("sorts") or "identifier").split()
        if sorts[0] != "identifier" or sorts[1:] not in ([], ["asc"], ["desc"]):
            error = f"the stand-in sorts only by identifier, not {req.param('sorts')!r}"
            return json_reply("search", {"error": error}, 400)
        if sorts[1:] == ["desc"]:
            found = found[::-1]
        if req.param("total_only") == "true":
            return json_reply("search", {"total": len(found)})

        query_key = hashlib.sha1(query.encode()).hexdigest()[:16]
        offset, page = 0, 1
        cursor = req.param("cursor")
        if cursor:
            try:
                state = json.loads(base64.urlsafe_b64decode(cursor))
                offset, page = int(state["o"]), int(state["p"])
                if state["q"] != query_key:
                    raise ValueError("cursor belongs to another query")
            except (ValueError, KeyError, TypeError, binascii.Error):
                return json_reply("search", {"error": "Invalid cursor"}, 400)
        fields = [f for f in (req.param("fields") or "").split(",") if f]
        items = [
            self.corpus.search_fields(item, fields)
            for item in map(self.corpus.item, found[offset : offset + count])
            if item is not None
        ]
        doc: dict[str, Any] = {"items": items, "count": len(items), "total": len(found)}
        if offset + count < len(found):
            state = {"q": query_key, "o": offset + count, "p": page + 1}
            doc["cursor"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
        return json_reply("search", doc, page=page)

    def advanced_search(self, req: ApiRequest) -> Reply:
        query = req.param("q") or ""
        try:
            found = self.corpus.search(query)
            rows = int(req.param("rows", "50") or "50")
            page = int(req.param("page", "1") or "1")
        except (QueryError, ValueError) as exc:
            return json_reply("search", {"error": str(exc)}, 400)
        fields = [v for k, vs in req.query.items() if k.startswith("fl[") for v in vs]
        start = max(0, (page - 1) * rows)
        docs = [
            self.corpus.search_fields(item, fields)
            for item in map(self.corpus.item, found[start : start + rows])
            if item is not None
        ]
        header = {"status": 0, "QTime": 1, "params": {"query": query, "rows": str(rows)}}
        response = {"numFound": len(found), "start": start, "docs": docs}
        return json_reply("search", {"responseHeader": header, "response": response}, page=page)

    # -- items ----------------------------------------------------------------

    def metadata(self, req: ApiRequest) -> Reply:
        identifier = req.path[len("/metadata/") :].rstrip("/")
        item = self.corpus.item(identifier)
        if item is None:
            return json_reply("metadata", {}, identifier=identifier)
        return json_reply("metadata", self.corpus.metadata_doc(item), identifier=identifier)

    def download(self, req: ApiRequest) -> Reply:
        found = self.corpus.split_item_path(req.path[len("/download/") :])
        if found is None:
            return status_reply("redirect", 404)
        item, name = found
        about = {"identifier": item.identifier, "name": name}
        if item.dark:
            return status_reply("redirect", 403, **about)
        if self.corpus.size(item, name) is None:
            return status_reply("redirect", 404, **about)
        node, n = item.servers[0], item.dir_number
        location = f"{req.scheme}://{node}/{n}/items/{_quote(item.identifier)}/{_quote(name)}"
        return status_reply("redirect", 302, [("Location", location)], **about)

    def data(self, req: ApiRequest, item_path: str) -> Reply:
        found = self.corpus.split_item_path(item_path)
        if found is None:
            return status_reply("data", 404)
        item, name = found
        about = {"identifier": item.identifier, "name": name}
        size = self.corpus.size(item, name)
        if item.dark:
            return status_reply("data", 403, **about)
        if size is None:
            return status_reply("data", 404, **about)
        mtime = item.mtime(name)
        headers = [
            ("Content-Type", mimetypes.guess_type(name)[0] or "application/octet-stream"),
            ("Last-Modified", formatdate(mtime, usegmt=True)),
            ("ETag", f'"{mtime:x}-{size:x}"'),
            ("Accept-Ranges", "bytes"),
        ]
        status, start, end = 200, 0, size
        wanted = _parse_range(req.headers.get("Range"), size)
        if wanted == UNSATISFIABLE:
            return status_reply("data", 416, [("Content-Range", f"bytes */{size}")], **about)
        if wanted is not None:
            status, (start, end) = 206, wanted
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        body = self.corpus.body(item, name, start, end)
        return Reply(status, "data", body, headers, **about)


_PCHAR = "!$&'()*+,;=:@"
"""Characters RFC 3986 allows unencoded in a path segment. A server may leave
them so (clients that compare encoded names must not assume one encoding)."""


def _quote(path: str) -> str:
    """Percent-encode a name for a URL path, keeping ``/`` but also encoding
    ``.``/``..`` segments, which clients would otherwise resolve away."""
    return "/".join(
        s.replace(".", "%2E") if s in (".", "..") else quote(s, safe=_PCHAR)
        for s in path.split("/")
    )


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` of one satisfiable range, UNSATISFIABLE, or None to ignore it."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None or m[1] == m[2] == "":
        return None
    if m[1] == "":
        suffix = int(m[2])
        return (max(0, size - suffix), size) if suffix and size else UNSATISFIABLE
    start = int(m[1])
    end = int(m[2]) + 1 if m[2] else max(size, start + 1)
    if end <= start:
        return None  # "bytes=5-2" is invalid, not unsatisfiable
    if start >= size:
        return UNSATISFIABLE
    return start, min(end, size)
