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

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from iabulk._native import IdSet
from iabulk.errors import SourceError, TransientSourceError
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
    def from_record(cls, record: dict[str, Any]) -> Source:
        kind = record.get("kind")
        shard = parse_shard(record["shard"]) if record.get("shard") else None
        if kind == "search":
            params = tuple(sorted((str(k), str(v)) for k, v in record.get("params", {}).items()))
            return cls("search", query=str(record.get("query", "")), params=params, shard=shard)
        if kind == "itemlist":
            return cls("itemlist", path=str(record.get("path", "")), shard=shard)
        if kind == "ids":
            return cls("ids", ids=tuple(str(i) for i in record.get("ids", [])), shard=shard)
        raise SourceError(f"the job log records a source this version cannot read: {kind!r}")

    def describe(self) -> str:
        if self.kind == "search":
            what = f"search {self.query!r}"
        elif self.kind == "itemlist":
            what = "item list " + ("<stdin>" if self.path == "-" else self.path)
        else:
            what = f"{len(self.ids)} identifier(s)"
        return f"{what}, shard {self.shard}" if self.shard else what


@dataclass
class ResolveStats:
    """Counts from one resolve."""

    added: int = 0
    duplicates: int = 0
    empty: int = 0
    other_shards: int = 0
    restarts: int = 0


SearchFn = Callable[[str, dict[str, str]], Iterable[str]]


def iter_identifiers(source: Source, search: SearchFn) -> Iterator[str]:
    """Raw identifiers from a source, in order (not yet cleaned or deduplicated).

    An item list may start with a UTF-8 byte order mark (as Windows editors
    save text); it is not part of the first identifier.
    """
    if source.kind == "search":
        yield from search(source.query, dict(source.params))
    elif source.kind == "itemlist":
        if source.path == "-":
            for n, line in enumerate(sys.stdin):
                yield line.removeprefix("\ufeff") if n == 0 else line
            return
        try:
            with open(source.path, encoding="utf-8-sig") as lines:
                yield from lines
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SourceError(f"cannot read item list {source.path}: {reason}") from None
    else:
        yield from source.ids


SEARCH_RETRIES = 5
"""Times a search that failed part-way (a page cut off, a reset) is started again."""


def resolve(
    joblog: JobLog,
    source: Source,
    op: str,
    known: IdSet,
    first_seq: int,
    search: SearchFn,
    progress: Callable[[int], None] | None = None,
    retries: int = SEARCH_RETRIES,
    sleep: Callable[[float], None] = time.sleep,
) -> ResolveStats:
    """Append a job line for every new identifier of ``source``.

    ``known`` holds the identifiers the log already has (from an earlier,
    interrupted resolve), so they are not added twice. Job lines are
    batched; the closing ``resolved`` record is durable, and only its
    presence tells a later run that resolve finished.

    A search that fails part-way with a :class:`TransientSourceError` is
    started again from its first page (a scrape cursor does not survive the
    failure) after a growing pause, up to ``retries`` times; identifiers
    already added are skipped as they come round again, so nothing is lost
    or doubled. Duplicates met after a restart are not counted as the
    source's duplicates.
    """
    stats = ResolveStats()
    seq = first_seq
    while True:
        try:
            for raw in iter_identifiers(source, search):
                identifier = raw.strip()
                if not identifier:
                    stats.empty += not stats.restarts
                    continue
                if source.shard is not None and not source.shard.owns(identifier):
                    stats.other_shards += not stats.restarts
                    continue
                if not known.add(identifier):
                    stats.duplicates += not stats.restarts
                    continue
                seq += 1
                joblog.write_job(seq, identifier, op)
                stats.added += 1
                if progress is not None and stats.added % 1000 == 0:
                    progress(stats.added)
            break
        except TransientSourceError:
            if stats.restarts >= retries:
                raise
            stats.restarts += 1
            sleep(min(60.0, 2.0**stats.restarts))
    joblog.write_record(
        {
            "event": "resolved",
            "added": stats.added,
            "duplicates": stats.duplicates,
            "empty": stats.empty,
            "other_shards": stats.other_shards,
            "max_seq": seq,
        }
    )
    return stats


def itemlist_path(path: str) -> str:
    """Absolute path of an item list, so a resume from elsewhere finds it."""
    return path if path == "-" else os.path.abspath(path)
