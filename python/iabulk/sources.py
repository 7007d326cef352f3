"""Where the items come from, and turning them into job lines.

A source is a search query, an item list file, or identifiers given on the
command line. Resolving streams its identifiers into job lines (empty lines
and duplicates skipped and counted); a search is read page by page through
the ``internetarchive`` library's cursor API, so ten million results never
sit in memory. The source is recorded in the log first and the end of
resolve last, so a run killed half-way through resolve resumes it without
losing or repeating an item.
"""

from __future__ import annotations

import codecs
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from iabulk._native import MAX_SEQ, IdSet
from iabulk.errors import JobLogError, TransientSourceError, UsageError
from iabulk.joblog import JobLog
from iabulk.shard import Shard, parse_shard

__all__ = ["Source", "ResolveStats", "resolve", "iter_identifiers"]


@dataclass(frozen=True)
class Source:
    """What to run over: ``kind`` is ``search``, ``itemlist`` or ``ids``."""

    kind: str
    query: str = ""
    params: tuple[tuple[str, str], ...] = ()
    path: str = ""
    ids: tuple[str, ...] = ()
    shard: Shard | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"kind": self.kind}
        if self.shard is not None:
            record["shard"] = str(self.shard)
        if self.kind == "search":
            record["query"] = self.query
            record["params"] = dict(self.params)
        elif self.kind == "itemlist":
            record["path"] = self.path
        else:
            record["ids"] = list(self.ids)
        return record

    @classmethod
    def from_record(cls, record: Any) -> Source:
        """The source a log's ``source`` record names; ValueError if it names none."""
        if not isinstance(record, dict):
            raise ValueError("the source is not an object")
        kind = record.get("kind")
        shard_text = record.get("shard")
        if shard_text is not None and not isinstance(shard_text, str):
            raise ValueError(f"shard {shard_text!r}")
        shard = parse_shard(shard_text) if shard_text else None
        if kind == "search":
            query, params = record.get("query", ""), record.get("params", {})
            if not isinstance(query, str) or not isinstance(params, dict):
                raise ValueError("a search needs a query text and params as an object")
            pairs = tuple(sorted((str(k), str(v)) for k, v in params.items()))
            return cls("search", query=query, params=pairs, shard=shard)
        if kind == "itemlist":
            path = record.get("path")
            if not isinstance(path, str) or not path:
                raise ValueError("an item list needs a path")
            return cls("itemlist", path=path, shard=shard)
        if kind == "ids":
            ids = record.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("identifiers must be a list of strings")
            return cls("ids", ids=tuple(ids), shard=shard)
        raise ValueError(f"a source kind this version cannot read: {kind!r}")

    def same_as(self, other: Source) -> bool:
        """Whether ``other`` names the same items: identifiers in any order, each once."""
        if self.kind == other.kind == "ids":
            return self.shard == other.shard and self.id_set() == other.id_set()
        return self == other

    def id_set(self) -> frozenset[str]:
        """The identifiers as resolve takes them: stripped, blanks dropped."""
        return frozenset(i.strip() for i in self.ids) - {""}

    def describe(self) -> str:
        if self.kind == "search":
            what = f"search {self.query!r}"
            if self.params:
                what += " with " + ", ".join(f"{k}:{v}" for k, v in self.params)
        elif self.kind == "itemlist":
            what = "item list " + ("<stdin>" if self.path == "-" else self.path)
        else:
            what = f"{len(self.id_set())} identifier(s)"
        return f"{what}, shard {self.shard}" if self.shard else what


@dataclass
class ResolveStats:
    """Counts from one resolve."""

    added: int = 0
    known: int = 0
    """Identifiers the log already had."""
    duplicates: int = 0
    """Identifiers the source itself gave more than once."""
    empty: int = 0
    other_shards: int = 0
    restarts: int = 0


SearchFn = Callable[[str, dict[str, str]], Iterable[str]]


def iter_identifiers(source: Source, search: SearchFn) -> Iterator[str]:
    """Raw identifiers from a source, in order (not yet cleaned or deduplicated)."""
    if source.kind == "search":
        yield from search(source.query, dict(source.params))
    elif source.kind == "itemlist":
        if source.path == "-":
            if sys.stdin is None:
                raise UsageError("--itemlist -: there is no standard input to read")
            yield from _utf8(sys.stdin.buffer, "<stdin>")
            return
        try:
            with open(source.path, "rb") as lines:
                yield from _utf8(lines, source.path)
        except OSError as exc:
            raise UsageError(
                f"cannot read item list {source.path}: {exc.strerror or exc}"
            ) from None
    else:
        yield from source.ids


def _utf8(chunks: Iterable[bytes], name: str) -> Iterator[str]:
    """The text of an item list read in ``chunks`` (lines, or blocks); a byte
    order mark (as Windows editors save text) is not part of the first
    identifier."""
    try:
        yield from codecs.iterdecode(chunks, "utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"cannot read item list {name}: it is not UTF-8 text") from None


SEARCH_RETRIES = 5
"""Times a search that failed part-way (a page cut off, a reset) is started again."""


def resolve(
    joblog: JobLog,
    source: Source,
    op: str,
    known: IdSet,
    first_seq: int,
    search: SearchFn,
    header: dict[str, Any] | None = None,
    say: Callable[[str], None] = lambda text: None,
    retries: int = SEARCH_RETRIES,
    sleep: Callable[[float], None] = time.sleep,
) -> ResolveStats:
    """Append a job line for every new identifier of ``source``.

    ``known`` holds the identifiers the log already has (from an earlier,
    interrupted resolve, or a finished one: a source resolved again adds
    only what is new in it), so they are not added twice. Job lines are
    batched; the closing ``resolved`` record is durable, and only its
    presence tells a later run that resolve finished.

    ``header`` (the ``source`` record) is written before the first
    identifier. A source that gives none writes nothing at all, not even
    ``resolved``: the log stays as it was, free for the source once fixed.

    A search that fails part-way with a :class:`TransientSourceError` is
    started again from its first page (a scrape cursor does not survive the
    failure) after a growing pause, up to ``retries`` times; identifiers
    already added are skipped as they come round again, so nothing is lost
    or doubled. Duplicates met after a restart are not counted as the
    source's duplicates. ``say`` tells the user of each restart.
    """
    if first_seq >= MAX_SEQ:  # before the header: a refused resolve leaves the log as it was
        raise _full_log()
    stats = ResolveStats()
    seq = first_seq
    unwritten = header
    fresh = IdSet()  # added by this resolve: telling the source's own duplicates apart
    while True:
        try:
            for raw in iter_identifiers(source, search):
                identifier = raw.strip()
                if not identifier:
                    stats.empty += not stats.restarts
                    continue
                if unwritten is not None:
                    joblog.write_record(unwritten)
                    unwritten = None
                if source.shard is not None and not source.shard.owns(identifier):
                    stats.other_shards += not stats.restarts
                    continue
                if identifier in known:
                    stats.known += not stats.restarts
                    continue
                if not fresh.add(identifier):
                    stats.duplicates += not stats.restarts
                    continue
                if seq >= MAX_SEQ:
                    raise _full_log()
                seq += 1
                joblog.write_job(seq, identifier, op)
                stats.added += 1
            break
        except TransientSourceError as exc:
            if stats.restarts >= retries:
                raise
            stats.restarts += 1
            pause = min(60.0, 2.0**stats.restarts)
            say(f"{exc}; starting it again in {pause:.0f} s ({stats.restarts} of {retries})")
            sleep(pause)
    if unwritten is not None:
        return stats
    joblog.write_record(
        {
            "event": "resolved",
            "added": stats.added,
            "known": stats.known,
            "duplicates": stats.duplicates,
            "empty": stats.empty,
            "other_shards": stats.other_shards,
            "max_seq": seq,
        }
    )
    return stats


def _full_log() -> JobLogError:
    return JobLogError(
        f"a job log holds at most {MAX_SEQ:,} jobs; "
        "split the source over several logs with --shard K/N"
    )


def check_itemlist(path: str) -> None:
    """Refuse an item list that is not UTF-8 text before resolve commits the
    log to it (resolve reads it line by line, after the source is recorded)."""
    try:
        with open(path, "rb") as text:
            for _ in _utf8(iter(lambda: text.read(1 << 20), b""), path):
                pass
    except OSError as exc:
        raise UsageError(f"cannot read item list {path}: {exc.strerror or exc}") from None


def itemlist_path(path: str) -> str:
    """Absolute path of an item list, so a resume from elsewhere finds it."""
    return path if path == "-" else os.path.abspath(path)
