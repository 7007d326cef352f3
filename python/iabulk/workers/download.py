"""Downloading one archive.org item, every file verified before it counts.

The worker reads the item's metadata, picks a disk, and fetches the selected
files itself, one after another, over one kept-alive connection to the
item's data node. Transfer threads that would otherwise sit idle (fewer
items than transfer slots: one item with thousands of files, the tail of a
run) join the item with the most files left, so every slot stays busy
without opening a connection per file. All threads share one
``requests.Session``: connections to archive.org and to each data node are
kept alive and reused across items, files and redirects. A file is streamed to a temporary name
beside its target while its md5 is computed, and synced; only when size and
md5 match the metadata is it stamped with the metadata's mtime and renamed
into place; its cached pages are released once it is synced. A partial
temporary file is resumed with ``Range`` on the next attempt or run.

Politeness: a 429 or 503 from any host (archive.org or a data node) closes a
shared gate for its ``Retry-After``; every request waits at the gate, so the
whole run slows down instead of burning retries.

The worker knows nothing about the job log; it returns a
:class:`~iabulk.workers.base.WorkerResult`.
"""

from __future__ import annotations

import email.utils
import errno
import fcntl
import fnmatch
import hashlib
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urljoin

import requests
from requests.cookies import RequestsCookieJar
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri

from iabulk.disk import DiskPool, DisksFull, Reservation, TooLarge
from iabulk.durable import NAME_MAX, release_cache, sync_and_release, sync_path, temporary_path
from iabulk.progress import TransferBoard
from iabulk.session import cookie_state
from iabulk.throttle import AdaptiveLimit, RateGate, TokenBucket
from iabulk.workers.base import BaseWorker, StopRun, WorkerResult
from iabulk.workers.sink import iter_body

__all__ = ["DownloadWorker", "DownloadOptions", "unsafe_name_reason", "PART_SUFFIX"]

CHUNK = 1 << 20
PART_SUFFIX = ".iabulk-part"
CHECK_TRIES = 4
"""Tries at an item's metadata for ``verify`` (waits of 1, 2, 4 s between)."""
CLAIM_POLL = 0.5
"""Seconds between tries for a temporary file another process holds."""
HELP_MIN_FILES = 8
"""Helpers join an item only while it has this many files waiting: a helper
opens another connection to the item's data node, which pays off only over
several files (one wide item), not for the last few files of a small one."""
UNSELECTED_NOTICE = 20
"""After this many items in a row with no file passing the filters (and none
with one), say so: a mistyped ``--glob`` would otherwise record a whole
collection completed with nothing written."""
ON_THE_FLY = [
    (".epub", "EPUB"),
    (".mobi", "MOBI"),
    ("_daisy.zip", "DAISY"),
    ("_archive_marc.xml", "MARCXML"),
]
"""Derivatives archive.org makes on request for texts (--on-the-fly): suffix, format."""
DISK_WAIT_MAX = 60.0
"""Seconds between looks for room, at most, while every destination is full."""
MAX_GATE_WAITS = 30
"""429/503 answers one request may sit out before its job is handed back to the engine."""


@dataclass
class DownloadOptions:
    """The file selection and behaviour flags, named as ``ia download`` names them."""

    glob: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    exclude_sources: list[str] = field(default_factory=list)
    on_the_fly: bool = False
    no_directories: bool = False
    ignore_existing: bool = False
    checksum: bool = False
    timeout: float = 60.0
    file_retries: int = 3


class _Permanent(Exception):
    """This file (and so the item) cannot be had: no retry will help."""


class _Transient(Exception):
    """Try again later: the network, the server or the data failed us."""


class _ItemFault(_Transient):
    """The server answered, and what it sent does not match the metadata."""


class _RateLimited(Exception):
    """The server asked us to slow down and kept asking."""


class _Cancelled(Exception):
    pass


def unsafe_name_reason(name: str) -> str | None:
    """Why a file name from metadata must not be written, or None if it is safe.

    A name must stay inside the item's directory: relative, no ``..``, no
    empty or ``.`` parts, no NUL, no part longer than the filesystem allows,
    and no part ending in :data:`PART_SUFFIX` (it would be taken for another
    file's partial download: resumed from, renamed over, or deleted).
    """
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte in name"
    if name.startswith("/") or os.path.isabs(name):
        return "absolute path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "path escapes the item directory"
    try:
        if any(len(p.encode("utf-8")) > NAME_MAX for p in parts):
            return "name too long"
    except UnicodeEncodeError:
        return "name is not valid Unicode (a lone surrogate)"
    if any(p.endswith(PART_SUFFIX) for p in parts):
        return f"name ends in {PART_SUFFIX}, iabulk's temporary suffix"
    return None


def unsafe_identifier_reason(identifier: str) -> str | None:
    if not identifier:
        return "empty identifier"
    if identifier in (".", ".."):
        return "identifier is a relative path"
    if "/" in identifier or "\x00" in identifier or "\\" in identifier:
        return "identifier contains a path separator or NUL"
    if len(identifier.encode()) > NAME_MAX - 16:
        return "identifier too long"
    if any(ord(c) < 32 for c in identifier):
        return "identifier contains control characters"
    return None


def _retry_after(response: requests.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return default
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return default
    return max(0.0, when - time.time())


@dataclass
class _File:
    name: str
    size: int | None
    md5: str | None
    mtime: float | None
    optional: bool = False


class _Prefix:
    """A URL prefix, and what ``requests`` adds to a request under it, merged once.

    ``Session.request`` merges the session's headers, cookies, ``.netrc`` auth,
    proxies and CA settings afresh for every request: about as much CPU as
    the HTTP exchange itself on a small file. Under one prefix (an item's
    data-node directory, ``/metadata/``, ``/download/``) the merge gives the
    same answer every time, until a response sets a cookie: then it is
    merged again.
    """

    def __init__(self, session: requests.Session, url: str, auth: Any = None) -> None:
        self.url = url
        self._session = session
        self._auth = auth
        self._merged = self._merge()

    def _merge(self) -> tuple[int, Mapping[str, str], dict[str, Any]]:
        session = self._session
        state = cookie_state(session.cookies)
        prepared = session.prepare_request(requests.Request("GET", self.url, auth=self._auth))
        settings: dict[str, Any] = dict(
            session.merge_environment_settings(self.url, {}, None, None, None)
        )
        del settings["stream"]
        return state, prepared.headers, settings

    def merged(self) -> tuple[Mapping[str, str], dict[str, Any]]:
        """The headers (Cookie included) and send settings for a request under the prefix."""
        merged = self._merged
        if merged[0] != cookie_state(self._session.cookies):
            merged = self._merged = self._merge()
        return merged[1], merged[2]


@dataclass
class _Item:
    identifier: str
    root: str
    reservation: Reservation
    written: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    node: _Prefix | None = None
    """The data-node directory ``/download`` redirected this item's files to."""
    fresh: bool = False
    """Its directory did not exist: no file or partial file to look for."""
    dirs: set[str] = field(default_factory=set)
    """Directories known to exist."""


@dataclass(eq=False)
class _Work:
    """An item's files still to take, and what became of those taken."""

    item: _Item
    queue: deque[_File]
    cancel: threading.Event
    outstanding: int = 0
    errors: list[BaseException] = field(default_factory=list)


class DownloadWorker(BaseWorker):
    """Downloads an item's selected files to ``DESTDIR/<identifier>/<name>``.

    Up to ``transfers`` files move at once: each item's own worker thread
    takes its files one by one, and helper threads (as many as the
    :class:`AdaptiveLimit` level leaves free) join the items with the most
    files left. ``session_factory`` is called once; the ``requests.Session``
    it makes is shared by every thread (its connection pools must hold
    ``transfers`` connections per host) and carries the ``internetarchive``
    configuration: credentials, cookies, User-Agent, protocol and host.
    """

    def __init__(
        self,
        session_factory: Callable[[], requests.Session],
        base_url: str,
        disks: DiskPool,
        options: DownloadOptions | None = None,
        transfers: int = 4,
        board: TransferBoard | None = None,
        gate: RateGate | None = None,
        metadata_auth: Any = None,
        limit: AdaptiveLimit | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        self._session_factory = session_factory
        self.base_url = base_url.rstrip("/")
        self.disks = disks
        self.options = options or DownloadOptions()
        self.board = board or TransferBoard(transfers)
        self.gate = gate or RateGate()
        self.limit = limit or AdaptiveLimit(transfers, start=transfers)
        self.bucket = bucket
        self._chunk = bucket.chunk_size(CHUNK) if bucket else CHUNK
        self._metadata_auth = metadata_auth
        self._api: dict[str, _Prefix] = {}
        self._shared: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._transfers = transfers
        self._pool = ThreadPoolExecutor(transfers, thread_name_prefix="iabulk-transfer")
        # Items whose files are being fetched, and how many threads pull files.
        self._sched = threading.Condition()
        self._open: list[_Work] = []
        self._streams = 0
        self._helpers = 0
        self._full_waits = 0
        """Items refused for want of room in a row (no lock: a rough count will do)."""
        # --no-directories: which item of this run each file name belongs to.
        self._claims: dict[str, str] = {}
        self._claims_lock = threading.Lock()
        self.unselected = 0
        """Items completed with files listed but none passing the filters."""
        self._selected = 0
        self._count_lock = threading.Lock()
        self.on_unselected: Callable[[int], None] | None = None
        """Called once if the first :data:`UNSELECTED_NOTICE` items all had no file to take."""

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._shared is not None:
            self._shared.close()

    def interrupt(self) -> None:
        """Shut the transfers' connections: a request waiting on a silent server
        then fails at once instead of holding a stop for its whole timeout."""
        session = self._shared
        if session is not None:
            for adapter in set(session.adapters.values()):
                abort = getattr(adapter, "abort_connections", None)
                if abort is not None:
                    abort()

    def _session(self) -> requests.Session:
        session = self._shared
        if session is None:
            with self._session_lock:
                if self._shared is None:
                    self._shared = self._session_factory()
                session = self._shared
        return session

    # -- one item ------------------------------------------------------------

    def execute(self, job: dict[str, Any], cancel_event: threading.Event) -> WorkerResult:
        identifier = str(job.get("id", ""))
        reason = unsafe_identifier_reason(identifier)
        if reason:
            error = f"refused identifier: {reason}"
            return WorkerResult(False, identifier, error=error, retry=False)
        try:
            metadata = self._metadata(identifier, cancel_event)
            files, refused = self._select(identifier, metadata)
            result = self._download_item(identifier, files, refused, cancel_event)
            self._count_selection(bool(files), bool(metadata["files"]))
            return result
        except _Permanent as exc:
            return WorkerResult(False, identifier, error=str(exc), retry=False)
        except _RateLimited as exc:
            return WorkerResult(
                False,
                identifier,
                error=str(exc),
                backoff=True,
                backoff_seconds=max(1.0, self.gate.remaining()),
            )
        except DisksFull as exc:
            self._full_waits += 1  # waits growing from 2 s: not a log line every 2 s for days
            wait = min(DISK_WAIT_MAX, 2.0 ** min(self._full_waits, 6))
            return WorkerResult(
                False, identifier, error=str(exc), backoff=True, backoff_seconds=wait
            )
        except TooLarge as exc:
            return WorkerResult(False, identifier, error=str(exc), retry=False)
        except _Cancelled:
            return WorkerResult(False, identifier, error="cancelled")
        except _Transient as exc:
            fault = isinstance(exc, _ItemFault)
            return WorkerResult(False, identifier, error=str(exc), item_fault=fault)

    def _get(self, url: str, cancel: threading.Event, **kwargs: Any) -> requests.Response:
        timeout = self.options.timeout
        session = self._session()
        return self._gated(
            url, cancel, lambda: session.get(url, timeout=(timeout, timeout), **kwargs)
        )

    def _gated(
        self, url: str, cancel: threading.Event, send: Callable[[], requests.Response]
    ) -> requests.Response:
        """Send through the rate gate; 429/503 close the gate and are retried here."""
        for _ in range(MAX_GATE_WAITS):
            self.gate.wait(cancel)
            if cancel.is_set():
                raise _Cancelled()
            try:
                response = send()
            except requests.RequestException as exc:
                raise _Transient(_describe(exc)) from None
            if response.status_code in (429, 503):
                self.gate.close_for(_retry_after(response, 5.0))
                self.limit.pushback()
                response.close()
                continue
            return response
        raise _RateLimited(f"HTTP {response.status_code} (rate limited) from {_host(url)}")

    def check(
        self,
        identifier: str,
        cancel: threading.Event,
        requeue: Callable[[], None] | None = None,
    ) -> list[str]:
        """What is wrong with a downloaded item on disk, by its current metadata.

        Empty when every selected file is present with the listed size and
        md5. Raises if the metadata cannot be had (the item cannot be judged).

        ``requeue`` (put the item back to pending, durably) is called for a
        damaged item, and then its damaged files are removed, so that a resume
        fetches them again instead of trusting their size and mtime. A file
        of the right size is first stamped as unverified, so that a crash
        between the requeue and the removal cannot leave it trusted (one that
        cannot be stamped keeps its item completed, and says so); nothing is
        removed before the item is pending, so no item stays ``completed``
        without its files.
        """
        for attempt in range(CHECK_TRIES):
            try:
                metadata = self._metadata(identifier, cancel)
                break
            except (_Transient, _RateLimited) as exc:
                if attempt + 1 == CHECK_TRIES or cancel.wait(2.0**attempt):
                    raise RuntimeError(str(exc)) from None
            except (_Permanent, _Cancelled) as exc:
                raise RuntimeError(str(exc) or "cancelled") from None
        files, _ = self._select(identifier, metadata)
        if not files:
            return []
        subdir = "" if self.options.no_directories else identifier
        # Where the item's directory is: usually one destination, but a run
        # resumed with other --destdir may have left a partial copy elsewhere.
        item_dirs = [
            os.path.join(d, subdir)
            for d in self.disks.destdirs
            if os.path.isdir(os.path.join(d, subdir))
        ]
        if not item_dirs:
            if requeue is not None:
                requeue()
            return ["item directory missing"]
        item_dir, problems, wrong_size, wrong_md5, blocked = min(
            (_inspect(d, files) for d in item_dirs), key=lambda found: len(found[1])
        )
        if not problems or requeue is None:
            return problems
        if blocked:  # a download could not put the file there: someone must look
            problems.append(f"not requeued: remove {', '.join(blocked)} first")
            return problems
        for path in wrong_md5:
            try:
                _stamp_unverified(path)
            except OSError as exc:
                name = os.path.relpath(path, item_dir)
                problems.append(f"left completed: cannot mark {name} unverified ({exc.strerror})")
                return problems
        requeue()
        for path in wrong_size + wrong_md5:
            try:
                _remove(path)
            except OSError as exc:  # pending all the same: the resume checks it anew
                name = os.path.relpath(path, item_dir)
                problems.append(f"could not remove {name}: {exc.strerror}")
        return problems

    def _metadata(self, identifier: str, cancel: threading.Event) -> dict[str, Any]:
        name = quote(identifier, safe="")
        response = self._get_under(self._api_prefix("metadata"), name, {}, cancel)
        if response.is_redirect:  # requests follows it, with its rules for auth on the way
            response.close()
            url = f"{self.base_url}/metadata/{name}"
            response = self._get(url, cancel, auth=self._metadata_auth)
        with response:
            if response.status_code >= 500:
                raise _Transient(f"HTTP {response.status_code} for metadata")
            if response.status_code in (403, 404):
                raise _Permanent(f"HTTP {response.status_code} for metadata")
            if response.status_code != 200:
                raise _Transient(f"HTTP {response.status_code} for metadata")
            try:
                metadata = response.json()
            except ValueError:
                raise _Transient("metadata is not JSON") from None
            except requests.RequestException as exc:  # the body cut short
                raise _Transient(f"{_describe(exc)} reading metadata") from None
        if not isinstance(metadata, dict):
            raise _Transient("metadata is not a JSON object")
        if not metadata:
            raise _Permanent("item does not exist")
        if metadata.get("is_dark") in (True, "true", "True"):
            raise _Permanent("item is dark")
        if not isinstance(metadata.get("files"), list):
            raise _Transient("metadata has no file list")
        return metadata

    def _count_selection(self, chosen: bool, listed: bool) -> None:
        with self._count_lock:
            if chosen:
                self._selected += 1
                return
            if not listed:
                return
            self.unselected += 1
            first = self.unselected == UNSELECTED_NOTICE and not self._selected
        if first and self.on_unselected is not None:
            self.on_unselected(UNSELECTED_NOTICE)

    def _select(self, identifier: str, metadata: dict[str, Any]) -> tuple[list[_File], list[str]]:
        """The files to fetch, after the filters; names that are unsafe are refused."""
        opts = self.options
        chosen: list[_File] = []
        refused: list[str] = []
        entries = metadata["files"]
        if opts.on_the_fly and metadata.get("metadata", {}).get("mediatype") == "texts":
            # Made on request, listed nowhere: named as ia names them, and
            # filtered like any listed file.
            entries = entries + [
                {"name": identifier + suffix, "format": fmt, "source": "derivative", "otf": True}
                for suffix, fmt in ON_THE_FLY
            ]
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue
            name = entry["name"]
            if opts.glob and not _matches(name, opts.glob):
                continue
            if opts.exclude and _matches(name, opts.exclude):
                continue
            if opts.formats and entry.get("format") not in opts.formats:
                continue
            if opts.sources and entry.get("source") not in opts.sources:
                continue
            if opts.exclude_sources and entry.get("source") in opts.exclude_sources:
                continue
            reason = unsafe_name_reason(name)
            if reason:
                refused.append(f"{name!r} ({reason})")
                continue
            chosen.append(
                _File(
                    name,
                    _int(entry.get("size")),
                    _md5(entry.get("md5")),
                    _mtime(entry.get("mtime")),
                    optional=entry.get("otf") is True,
                )
            )
        # A name listed twice is one file: fetching it twice at once would race on its
        # temporary file. The first listing counts.
        unique = {f.name: f for f in reversed(chosen)}
        return [f for f in chosen if unique[f.name] is f], refused

    def _claim(self, identifier: str, files: list[_File]) -> None:
        """Under --no-directories all items share one directory: a file name that
        another item of this run uses would overwrite that item's file (or race
        it), so the item asking second is refused, and claims nothing. (Across
        runs, :meth:`_fetch` refuses to overwrite a file that is not this item's.)"""
        with self._claims_lock:
            claims = self._claims
            taken = [
                (f.name, claims[f.name])
                for f in files
                if claims.get(f.name, identifier) != identifier
            ]
            if not taken:
                claims.update((f.name, identifier) for f in files)
        if taken:
            name, owner = taken[0]
            raise _Permanent(f"--no-directories: {name!r} is also a file of item {owner}")

    def _download_item(
        self, identifier: str, files: list[_File], refused: list[str], cancel: threading.Event
    ) -> WorkerResult:
        subdir = "" if self.options.no_directories else identifier
        if self.options.no_directories:
            self._claim(identifier, files)
        remaining = sum(f.size or 0 for f in files)
        reservation = self.disks.reserve(subdir, remaining, lambda root: _present(root, files))
        self._full_waits = 0
        root = os.path.join(reservation.path, subdir)
        item = _Item(identifier, root, reservation, fresh=bool(subdir) and not os.path.isdir(root))
        work = _Work(item, deque(files), cancel)
        try:
            self._fetch_all(work)
            errors = work.errors
            if not errors:
                _sync_dirs(item.root, files)
        finally:
            reservation.release()
        for kind in (StopRun, _Cancelled, DisksFull, _RateLimited, _Permanent, _Transient):
            for exc in errors:
                if isinstance(exc, kind):
                    raise exc
        if errors:
            raise errors[0]
        if refused:
            raise _Permanent("refused unsafe file name(s) in metadata: " + ", ".join(refused[:3]))
        extra = {
            "item_size": sum(f.size or 0 for f in files),
            "files": len(files),
            "bytes": item.written,
            "disk": reservation.path,
        }
        return WorkerResult(True, identifier, extra=extra)

    # -- scheduling files ----------------------------------------------------

    def _fetch_all(self, work: _Work) -> None:
        """Fetch every file of ``work``: this thread in order, helpers if slots are free."""
        sched = self._sched
        with sched:
            self._open.append(work)
            self._streams += 1
            self._recruit()
        try:
            self._pull(work)
        finally:
            with sched:
                self._streams -= 1
                if work in self._open:
                    self._open.remove(work)
                while work.outstanding:
                    sched.wait()
                self._recruit()

    def _pull(self, work: _Work) -> None:
        """Fetch files of ``work`` until none is left to take."""
        sched = self._sched
        while True:
            with sched:
                if not work.queue:
                    return
                f = work.queue.popleft()
                work.outstanding += 1
            try:
                self._fetch(work.item, f, work.cancel)
            except BaseException as exc:  # every file is tried; the item reports the worst
                work.errors.append(exc)
            finally:
                with sched:
                    work.outstanding -= 1
                    if not work.outstanding:
                        sched.notify_all()
                    self._recruit()  # the adaptive level may have grown

    def _recruit(self) -> None:
        """Start helpers while transfer slots are free and files wait (``_sched`` held)."""
        while (
            self._helpers < self._transfers
            and self._streams < self.limit.current
            and any(len(w.queue) >= HELP_MIN_FILES for w in self._open)
        ):
            self._helpers += 1
            self._streams += 1
            self._pool.submit(self._help)

    def _help(self) -> None:
        """A helper: join the open item with the most files left, until none needs help."""
        sched = self._sched
        try:
            while True:
                with sched:
                    if self._streams > self.limit.current:
                        return
                    work = max(self._open, key=lambda w: len(w.queue), default=None)
                    if work is None or len(work.queue) < HELP_MIN_FILES:
                        return
                    work.outstanding += 1  # keeps the owner waiting while we join
                try:
                    self._pull(work)
                finally:
                    with sched:
                        work.outstanding -= 1
                        if not work.outstanding:
                            sched.notify_all()
        finally:
            with sched:
                self._helpers -= 1
                self._streams -= 1

    # -- one file ------------------------------------------------------------

    def _fetch(self, item: _Item, f: _File, cancel: threading.Event) -> int:
        """Make one file present and verified; returns the bytes downloaded."""
        target = os.path.join(item.root, f.name)
        part = temporary_path(target, PART_SUFFIX)
        failures: list[_Transient] = []
        try:
            if not item.fresh and self._already_there(target, f):
                return 0
            self._refuse_foreign(target, f)
            directory = os.path.dirname(target)
            if directory not in item.dirs:
                os.makedirs(directory, exist_ok=True)
                item.dirs.add(directory)
            out, waited = _claim(part, cancel)
            renamed = False
            try:
                if waited:  # another process held the file, and may have put it in place
                    if self._already_there(target, f):
                        return 0
                    self._refuse_foreign(target, f)
                for _attempt in range(self.options.file_retries + 1):
                    if cancel.is_set():
                        raise _Cancelled()
                    if not self.limit.acquire(cancel):
                        raise _Cancelled()
                    ok = False
                    try:
                        written = self._transfer(out, part, item, f, cancel)
                        ok = True
                    except _Transient as exc:
                        failures.append(exc)
                        continue
                    except _Permanent:
                        if f.optional:
                            return 0
                        raise
                    finally:
                        self.limit.release(ok)
                    _finish_file(part, target, f)
                    renamed = True
                    return written
            finally:
                _release(out, None if renamed else part)
        except OSError as exc:
            raise _write_failure(exc, part, target, item.reservation.path) from None
        if not failures:
            raise _Transient(f"{f.name}: failed")
        every_time = all(isinstance(exc, _ItemFault) for exc in failures)
        raise (_ItemFault if every_time else _Transient)(f"{f.name}: {failures[-1]}")

    def _refuse_foreign(self, target: str, f: _File) -> None:
        if self.options.no_directories and os.path.lexists(target):
            raise _Permanent(
                f"--no-directories: {f.name!r} is already there and is not this "
                "item's file (another item's, or another version): not overwritten"
            )

    def _already_there(self, target: str, f: _File) -> bool:
        """Whether an existing file counts as downloaded (see ``--checksum``)."""
        try:
            st = os.stat(target)
        except OSError:
            return False
        if self.options.ignore_existing:
            return True
        if f.size is not None and st.st_size != f.size:
            return False
        if self.options.checksum or f.mtime is None:
            return f.md5 is None or _file_md5(target) == f.md5
        # iabulk stamps the metadata mtime on a file only after verifying it.
        return int(st.st_mtime) == int(f.mtime)

    def _transfer(self, out: int, part: str, item: _Item, f: _File, cancel: threading.Event) -> int:
        """One attempt: resume or start the temporary file ``part`` (open and
        claimed as ``out``), verify it at the end.

        The verified bytes are durable when it returns.
        """
        offset = os.fstat(out).st_size
        if f.size is not None and offset > f.size:
            offset = _truncate(out, 0)
        digest = hashlib.md5()
        if offset:
            _hash_file(part, digest)
        if offset and offset == f.size:
            if f.md5 is None or digest.hexdigest() == f.md5:
                sync_and_release(out)  # whole, from an earlier run that may not have synced it
                return 0
            offset, digest = _truncate(out, 0), hashlib.md5()
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._request_file(item, f, headers, cancel)
        with response:
            status = response.status_code
            if status in (403, 404, 410):
                raise _Permanent(f"HTTP {status} for {f.name}")
            if status == 416:
                _truncate(out, 0)
                raise _Transient(f"HTTP 416 resuming {f.name}")
            if status == 200 and offset:
                offset, digest = _truncate(out, 0), hashlib.md5()
            elif status == 206 and not response.headers.get("Content-Range", "").startswith(
                f"bytes {offset}-"
            ):
                _truncate(out, 0)
                raise _Transient(f"unexpected Content-Range for {f.name}")
            elif status not in (200, 206):
                raise _Transient(f"HTTP {status} for {f.name}")
            received = self._stream(response, out, offset, digest, item, f, cancel)
        total = offset + received
        if f.size is not None and total != f.size:
            raise _Transient(f"short read for {f.name}: {total} of {f.size} bytes")
        if f.md5 is not None and digest.hexdigest() != f.md5:
            _truncate(out, 0)
            raise _ItemFault(f"md5 mismatch for {f.name}")
        return received

    def _request_file(
        self, item: _Item, f: _File, headers: dict[str, str], cancel: threading.Event
    ) -> requests.Response:
        """GET a file's body, straight from the item's data node once ``/download`` named it.

        ``/download`` decides access and where an item lives, at the price of
        a redirect round trip per file; an item's files all live in one
        data-node directory, so after the first redirect the others are asked
        for there directly. Any answer from that directory other than a body
        (or 416 for a range past its end) falls back to ``/download``, which
        then decides: a file the node refuses, an item moved away, a node gone
        (a node that cannot be reached is forgotten).
        """
        name = quote(f.name)
        node = item.node
        if node is not None:
            try:
                response = self._get_under(node, name, headers, cancel)
            except _Transient:
                item.node = None
            else:
                if response.status_code in (200, 206, 416):
                    return response
                response.close()  # /download decides, and redirects elsewhere if need be
        path = f"{quote(item.identifier, safe='')}/{name}"
        response = self._get_under(self._api_prefix("download"), path, headers, cancel)
        if not response.is_redirect:
            return response  # a refusal (or the file itself) from /download
        url = response.url
        location = self._session().get_redirect_target(response)
        response.close()
        target = requote_uri(urljoin(url, location)) if location else url
        node_dir = _directory_of(target, f.name) if target != url else None
        if node_dir is None:  # to itself, or to another name: requests follows it from there
            return self._get(target, cancel, headers=headers, stream=True)
        node = item.node = self._prefix(node_dir)
        response = self._get_under(node, name, headers, cancel)
        if response.is_redirect:  # the node sends it on: requests follows the whole way
            response.close()
            response = self._get(url, cancel, headers=headers, stream=True)
        return response

    def _api_prefix(self, api: str) -> _Prefix:
        """``/metadata/`` (with the S3 keys, if any) or ``/download/`` on archive.org."""
        prefix = self._api.get(api)
        if prefix is None:
            auth = self._metadata_auth if api == "metadata" else None
            prefix = self._api[api] = self._prefix(f"{self.base_url}/{api}/", auth)
        return prefix

    def _prefix(self, url: str, auth: Any = None) -> _Prefix:
        return _Prefix(self._session(), url, auth)

    def _get_under(
        self, prefix: _Prefix, name: str, headers: dict[str, str], cancel: threading.Event
    ) -> requests.Response:
        """GET ``prefix`` + ``name`` as ``Session.get`` would, without the merge; no redirects."""
        merged_headers, settings = prefix.merged()
        request = requests.PreparedRequest()
        request.method = "GET"
        request.url = prefix.url + name  # already a prepared URL: name is percent-encoded
        request.headers = CaseInsensitiveDict(merged_headers)
        request.headers.update(headers)
        # The Cookie header is in prefix.headers; requests still wants a jar to
        # note the cookies a redirect sets (an empty one adds no header).
        request.prepare_cookies(RequestsCookieJar())
        timeout = self.options.timeout
        session = self._session()
        return self._gated(
            request.url,
            cancel,
            lambda: session.send(
                request,
                stream=True,
                timeout=(timeout, timeout),
                allow_redirects=False,
                **settings,
            ),
        )

    def _stream(
        self,
        response: requests.Response,
        out: int,
        offset: int,
        digest: Any,
        item: _Item,
        f: _File,
        cancel: threading.Event,
    ) -> int:
        received = 0
        reservation = item.reservation
        with self.board.slot(item.identifier, f.name, f.size or 0) as slot:
            slot.resume_from(offset)
            try:
                # One reused buffer; each chunk is hashed and written before the next read.
                for chunk in iter_body(response, self._chunk):
                    digest.update(chunk)
                    _write_all(out, chunk)
                    n = len(chunk)
                    received += n
                    slot.add(n)
                    reservation.consume(n)
                    if self.bucket is not None:
                        self.bucket.consume(n, cancel)
                    if cancel.is_set():
                        raise _Cancelled()
            except requests.RequestException as exc:
                raise _Transient(f"{_describe(exc)} after {offset + received} bytes") from None
            finally:
                with item.lock:
                    item.written += received
        sync_and_release(out)
        return received


def _claim(part: str, cancel: threading.Event) -> tuple[int, bool]:
    """Open ``part`` (created if need be) and lock it against other processes.

    A bare descriptor: a file object would cost two more system calls per
    file (fstat, isatty), each handing the GIL to another thread and back.
    Two runs with their own logs may fetch the same file into one
    destination: without the lock each would append to the other's bytes and
    verify only its own. The lock goes with the open file, so a killed
    process leaves none behind. A holder renames the file into place before
    it lets go, so once the lock is had, the name must still be the file
    locked, else it is opened afresh. Returns the descriptor and whether
    another process held the file meanwhile (it may have finished it).
    """
    waited = False
    while True:
        # O_APPEND: every write lands at the end, however the file was cut.
        out = os.open(part, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(out)
            waited = True
            if cancel.wait(CLAIM_POLL):
                raise _Cancelled() from None
            continue
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(out)
                raise
            return out, waited  # a file system without locks: as before they existed
        try:
            if os.path.samestat(os.stat(part), os.fstat(out)):
                return out, waited
        except FileNotFoundError:
            pass
        os.close(out)
        waited = True


def _release(out: int, part: str | None) -> None:
    """Close a claimed temporary file: after its rename, if it got one (``part``
    None; the claim covers the file until it is in place); one still empty is
    removed."""
    try:
        if part is not None:
            mine = os.fstat(out)
            if mine.st_size == 0 and os.path.samestat(os.stat(part), mine):
                os.remove(part)
    except OSError:
        pass  # renamed into place, or gone: nothing of ours to tidy
    finally:
        os.close(out)


def _truncate(out: int, size: int) -> int:
    os.ftruncate(out, size)
    return size


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _finish_file(part: str, target: str, f: _File) -> None:
    """Stamp the mtime on the verified, durable bytes; rename them into place."""
    if f.mtime is not None:
        os.utime(part, (f.mtime, f.mtime))
    os.replace(part, target)


def _inspect(
    item_dir: str, files: list[_File]
) -> tuple[str, list[str], list[str], list[str], list[str]]:
    """What is wrong with ``files`` under ``item_dir``: the problems, the files
    of the wrong size, those of the right size but the wrong md5 (a resume
    would trust them as they are), and what stands where a file must go (a
    directory, or a file where a directory must be) that no download replaces."""
    problems: list[str] = []
    wrong_size: list[str] = []
    wrong_md5: list[str] = []
    blocked: list[str] = []
    for f in files:
        path = os.path.join(item_dir, f.name)
        try:
            st = os.stat(path)
        except NotADirectoryError:
            problems.append(f"missing {f.name}")
            blocked.append(_blocking_file(item_dir, f.name))
            continue
        except OSError:
            if not f.optional:
                problems.append(f"missing {f.name}")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"not a file: {f.name}")
            blocked.append(path)
        elif f.size is not None and st.st_size != f.size:
            problems.append(f"wrong size {f.name} ({st.st_size} of {f.size} bytes)")
            wrong_size.append(path)
        elif f.md5 is not None and _file_md5(path) != f.md5:
            problems.append(f"md5 mismatch {f.name}")
            wrong_md5.append(path)
    return item_dir, problems, wrong_size, wrong_md5, blocked


def _blocking_file(item_dir: str, name: str) -> str:
    """The first directory of ``name`` that is not one under ``item_dir``."""
    path = item_dir
    for part in name.split("/")[:-1]:
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            break
    return path


def _stamp_unverified(path: str) -> None:
    """Give a file an mtime no metadata lists, durably: a resume then checks
    it instead of taking it for a file iabulk verified."""
    os.utime(path, (0, 0))
    sync_path(path)


def _write_failure(exc: OSError, part: str, target: str, destination: str) -> Exception:
    """What a failed write of ``target`` means: a full disk (wait), a destination
    no item can be written to (stop the run), or a refusal of this one file."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        _remove(part)
        return DisksFull(f"disk full writing {target!r}")
    if exc.errno in (errno.EROFS, errno.EIO) or not _writable_dir(destination):
        return StopRun(f"destination {destination} cannot be written: {exc.strerror}")
    return _Permanent(f"cannot write {target!r}: {exc.strerror}")


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _sync_dirs(root: str, files: list[_File]) -> None:
    """fsync the directories that received renames, so the names survive a crash."""
    dirs = {os.path.dirname(os.path.join(root, f.name)) for f in files}
    for d in sorted(dirs):
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for pattern in patterns for p in pattern.split("|"))


def _int(value: Any) -> int | None:
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


LATEST_MTIME = 253402300799
"""9999-12-31 23:59:59 UTC: a later (or infinite) mtime in metadata is noise, not a time."""


def _mtime(value: Any) -> float | None:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= LATEST_MTIME else None


def _md5(value: Any) -> str | None:
    """An md5 to check against, or None for anything that is not one (a file
    whose listed md5 can never match would be fetched again and again)."""
    if isinstance(value, str) and len(value) == 32:
        try:
            bytes.fromhex(value)
        except ValueError:
            return None
        return value.lower()
    return None


def _present(root: str, files: list[_File]) -> int:
    """Bytes of ``files`` already under ``root``: whole files and partial ones."""
    total = 0
    for f in files:
        if f.size:
            path = os.path.join(root, f.name)
            have = _size_or_zero(path)
            total += (
                f.size
                if have == f.size
                else min(f.size, _size_or_zero(temporary_path(path, PART_SUFFIX)))
            )
    return total


def _size_or_zero(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _iter_file(path: str) -> Iterator[bytes]:
    """The bytes of ``path``, its pages released from the cache once read
    (checking a collection should not evict everything else from memory)."""
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            yield chunk
        release_cache(src.fileno())


def _hash_file(path: str, digest: Any) -> None:
    for chunk in _iter_file(path):
        digest.update(chunk)


def _file_md5(path: str) -> str:
    digest = hashlib.md5()
    _hash_file(path, digest)
    return digest.hexdigest()


def _directory_of(url: str, name: str) -> str | None:
    """``url`` up to the path segments that spell ``name`` (however they are
    percent-encoded), with its trailing slash; None if they do not spell it."""
    if "?" in url or "#" in url:
        return None
    segments = url.split("/")
    tail = name.count("/") + 1
    if len(segments) <= tail + 3 or unquote("/".join(segments[-tail:])) != name:
        return None  # "scheme:", "", host, and at least one directory come first
    return "/".join(segments[:-tail]) + "/"


def _host(url: str) -> str:
    return url.split("/")[2] if url.count("/") >= 2 else url


def _describe(exc: requests.RequestException) -> str:
    """A short cause without URLs (which may carry credentials) or reprs."""
    name = type(exc).__name__
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-body"
    if isinstance(exc, requests.ConnectionError):
        return "connection error"
    return name
