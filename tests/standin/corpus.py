"""The items the stand-in serves: identifiers, file lists, metadata, bodies.

A :class:`Corpus` stores only names and sizes. Bodies come from
:mod:`.content` (deterministic in ``(identifier, name)``), checksums are
computed the first time someone asks and then cached, and the two metadata
files every archive.org item carries are generated on demand:

- ``<id>_meta.xml`` is listed with size and checksums, like any file;
- ``<id>_files.xml`` is listed WITHOUT md5 and size, exactly as archive.org
  does (a file cannot contain its own checksum), so clients must cope with a
  file they cannot verify.

Values that archive.org gives as strings in the metadata API (``size``,
``mtime``) are strings here too, so clients that forget to convert break in
tests, not in production.

Hostile items are allowed on purpose: file names such as ``../x``,
``/etc/passwd``, names with NUL bytes or of any length, identifiers a test
picks freely. Names only have to be encodable as UTF-8 (the wire needs it),
unique within the item, and not collide with the two metadata files.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterable, Sequence
from posixpath import splitext
from typing import Any, Callable
from xml.sax.saxutils import escape, quoteattr

from .content import Body, BytesBody, Digests, SyntheticBody, digests_of
from .query import compile_query

KIB = 1024
MIB = 1024 * KIB

_FORMATS = {
    ".txt": "Text",
    ".pdf": "Text PDF",
    ".jpg": "JPEG",
    ".png": "PNG",
    ".flac": "Flac",
    ".mp4": "MPEG4",
    ".zip": "ZIP",
    ".xml": "Metadata",
}


def stable_int(*parts: str) -> int:
    """A hash of strings that, unlike ``hash()``, is the same in every process."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Item:
    """One archive.org item: identifier, metadata, and its data files' sizes."""

    __slots__ = ("created", "dark", "files", "identifier", "metadata")

    def __init__(
        self, identifier: str, metadata: dict[str, Any], files: dict[str, int], dark: bool
    ) -> None:
        self.identifier = identifier
        self.metadata = metadata
        self.files = files
        self.dark = dark
        self.created = 1_600_000_000 + stable_int(identifier) % 100_000_000

    @property
    def meta_xml(self) -> str:
        return f"{self.identifier}_meta.xml"

    @property
    def files_xml(self) -> str:
        return f"{self.identifier}_files.xml"

    @property
    def dir_number(self) -> int:
        """The ``N`` in the data-node path ``/N/items/<id>/``."""
        return 1 + stable_int("dir", self.identifier) % 35

    @property
    def servers(self) -> tuple[str, str]:
        """The primary and secondary data nodes (``d1``, ``d2``)."""
        n = stable_int("node", self.identifier) % 10000
        return f"ia80{n:04d}.us.archive.org", f"ia60{n:04d}.us.archive.org"

    def mtime(self, name: str) -> int:
        return self.created + stable_int(self.identifier, name) % 86400

    def field_values(self, field: str) -> list[str]:
        """A metadata field as a list of strings, the way search matches it."""
        value = self.metadata.get(field)
        if value is None:
            return []
        if isinstance(value, list):
            return [str(v) for v in value]
        return [str(value)]


class Corpus:
    """A set of items, and everything derived from them that the server answers."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._digests: dict[tuple[str, str], Digests] = {}
        self._version = 0
        self._search_cache: dict[tuple[str, int], list[str]] = {}
        self._lock = threading.Lock()

    # -- building ---------------------------------------------------------

    def add_item(
        self,
        identifier: str,
        files: Iterable[tuple[str, int]] = (),
        collection: str | Sequence[str] = "demo",
        dark: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> Item:
        """Add an item; ``files`` are ``(name, size)`` pairs of its data files.

        ``collection`` may be one name or several; ``metadata`` overrides or
        extends the generated fields (``identifier`` always wins).
        """
        if not identifier or identifier in self._items:
            raise ValueError(f"identifier {identifier!r} is empty or already present")
        identifier.encode()  # a lone surrogate cannot travel over HTTP: fail here, not there
        sizes: dict[str, int] = {}
        reserved = {f"{identifier}_meta.xml", f"{identifier}_files.xml"}
        for name, size in files:
            name.encode()
            if not name or name in sizes or name in reserved or size < 0:
                raise ValueError(f"bad or duplicate file {name!r} ({size}) in {identifier!r}")
            sizes[name] = size
        collections = [collection] if isinstance(collection, str) else list(collection)
        item = Item(identifier, {}, sizes, dark)
        item.metadata = {
            "identifier": identifier,
            "mediatype": "data",
            "collection": collections[0] if len(collections) == 1 else collections,
            "title": f"Stand-in item {identifier}",
            "publicdate": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(item.created)),
            "uploader": "tester@example.org",
            **(metadata or {}),
        }
        item.metadata["identifier"] = identifier
        with self._lock:
            self._items[identifier] = item
            # A search racing this add may still store its result, but under
            # the old version, where no later lookup can find it.
            self._version += 1
            self._search_cache.clear()
        return item

    @classmethod
    def preset(cls, name: str, seed: int = 0, scale: float = 1.0) -> Corpus:
        """A named corpus (see :data:`PRESETS`); ``scale`` shrinks item/file counts."""
        try:
            build = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
        corpus = cls()
        build(corpus, random.Random(f"{name}:{seed}"), scale)
        return corpus

    # -- lookup -----------------------------------------------------------

    def __contains__(self, identifier: object) -> bool:
        return identifier in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, identifier: str) -> Item:
        return self._items[identifier]

    def identifiers(self) -> list[str]:
        return list(self._items)

    def item(self, identifier: str) -> Item | None:
        return self._items.get(identifier)

    def split_item_path(self, path: str) -> tuple[Item, str] | None:
        """Split ``<identifier>/<name>`` where the identifier itself may contain ``/``.

        The longest known identifier wins, so a test may create ``a`` and
        ``a/b`` and still address both.
        """
        cut = len(path)
        while cut > 0:
            cut = path.rfind("/", 0, cut)
            if cut <= 0:
                return None
            item = self._items.get(path[:cut])
            if item is not None:
                return item, path[cut + 1 :]
        return None

    def size(self, item: Item, name: str) -> int | None:
        """Size of any file the item serves, including the two XML files."""
        if name in item.files:
            return item.files[name]
        if name in (item.meta_xml, item.files_xml):
            return len(self._xml(item, name))
        return None

    def body(self, item: Item, name: str, start: int, end: int) -> Body:
        """Bytes ``[start, end)`` of a file that :meth:`size` knows."""
        if name in item.files:
            return SyntheticBody(item.identifier, name, start, end)
        return BytesBody(self._xml(item, name)[start:end])

    def read(self, identifier: str, name: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of a file, for tests that compare what clients wrote."""
        item = self._items[identifier]
        size = self.size(item, name)
        if size is None:
            raise KeyError(f"{identifier!r} has no file {name!r}")
        body = self.body(item, name, start, size if end is None else min(end, size))
        return b"".join(body.chunks())

    def digests(self, item: Item, name: str) -> Digests:
        key = (item.identifier, name)
        found = self._digests.get(key)
        if found is None:
            if name in item.files:
                found = digests_of(SyntheticBody(item.identifier, name, 0, item.files[name]))
                self._digests[key] = found
            else:
                return digests_of(BytesBody(self._xml(item, name)))
        return found

    def expected(self, identifier: str) -> dict[str, tuple[int, str]]:
        """``{name: (size, md5)}`` for every file the metadata lists an md5 for."""
        item = self._items[identifier]
        names = [*item.files, item.meta_xml]
        out = {}
        for name in names:
            size = self.size(item, name)
            assert size is not None
            out[name] = (size, self.digests(item, name).md5)
        return out

    def warm(self) -> None:
        """Compute every checksum now, so first metadata requests are not slow."""
        for item in list(self._items.values()):
            for name in item.files:
                self.digests(item, name)

    # -- archive.org documents -------------------------------------------

    def file_entries(self, item: Item) -> list[dict[str, str]]:
        """The ``files`` list of the metadata API, values as strings."""
        entries = []
        for name in [*item.files, item.meta_xml]:
            d = self.digests(item, name)
            ext = splitext(name)[1].lower()
            entries.append(
                {
                    "name": name,
                    "source": "original",
                    "format": "Metadata" if name == item.meta_xml else _FORMATS.get(ext, "Unknown"),
                    "mtime": str(item.mtime(name)),
                    "size": str(self.size(item, name)),
                    "md5": d.md5,
                    "crc32": d.crc32,
                    "sha1": d.sha1,
                }
            )
        entries.append({"name": item.files_xml, "source": "original", "format": "Metadata"})
        return entries

    def metadata_doc(self, item: Item) -> dict[str, Any]:
        """The metadata API answer for an existing item (dark ones add ``is_dark``)."""
        files = self.file_entries(item)
        d1, d2 = item.servers
        doc: dict[str, Any] = {
            "created": item.created,
            "d1": d1,
            "d2": d2,
            "dir": f"/{item.dir_number}/items/{item.identifier}",
            "files": files,
            "files_count": len(files),
            "item_last_updated": item.created,
            "item_size": self.item_size(item),
            "metadata": dict(item.metadata),
            "server": d1,
            "uniq": stable_int("uniq", item.identifier) % 2_000_000_000,
            "workable_servers": [d1, d2],
        }
        if item.dark:
            doc["is_dark"] = True
        return doc

    def item_size(self, item: Item) -> int:
        return sum(item.files.values()) + sum(
            len(self._xml(item, name)) for name in (item.meta_xml, item.files_xml)
        )

    def _xml(self, item: Item, name: str) -> bytes:
        if name == item.meta_xml:
            lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<metadata>"]
            for key, value in item.metadata.items():
                for v in value if isinstance(value, list) else [value]:
                    lines.append(f"  <{key}>{escape(str(v))}</{key}>")
            lines.append("</metadata>")
        else:
            lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<files>"]
            for entry in self.file_entries(item)[:-1]:
                lines.append(
                    f"  <file name={quoteattr(entry['name'])} source={quoteattr(entry['source'])}>"
                )
                for key in ("mtime", "size", "md5", "crc32", "sha1", "format"):
                    lines.append(f"    <{key}>{escape(entry[key])}</{key}>")
                lines.append("  </file>")
            lines.append("</files>")
        return ("\n".join(lines) + "\n").encode()

    # -- search -----------------------------------------------------------

    def search(self, query: str) -> list[str]:
        """Identifiers matching ``query``, sorted, as the scrape API pages them.

        Raises :class:`~.query.QueryError` for syntax the stand-in does not
        support. Results are cached per query until the corpus changes, so
        paging through 100,000 items does not rescan them for every page.
        """
        with self._lock:
            key = (query, self._version)
            cached = self._search_cache.get(key)
        if cached is not None:
            return cached
        predicate = compile_query(query)
        found = sorted(
            ident for ident, item in list(self._items.items()) if predicate(item.field_values)
        )
        with self._lock:
            self._search_cache[key] = found
        return found

    def search_fields(self, item: Item, fields: Iterable[str]) -> dict[str, Any]:
        """One search result: ``identifier`` plus the requested fields it has."""
        out: dict[str, Any] = {"identifier": item.identifier}
        for field in fields:
            if field == "item_size":
                out[field] = self.item_size(item)
            elif field in item.metadata:
                out[field] = item.metadata[field]
        return out


# -- presets -----------------------------------------------------------------


def _count(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _many_small(corpus: Corpus, rng: random.Random, scale: float) -> None:
    for i in range(_count(2000, scale)):
        files = [(f"file-{j}.bin", rng.randint(4 * KIB, 64 * KIB)) for j in range(5)]
        corpus.add_item(f"many-small-{i:05d}", files, collection="many-small")


def _few_large(corpus: Corpus, rng: random.Random, scale: float) -> None:
    for i in range(_count(50, scale)):
        corpus.add_item(
            f"few-large-{i:03d}", [(f"large-{i:03d}.bin", 20 * MIB)], collection="few-large"
        )


def _wide_item(corpus: Corpus, rng: random.Random, scale: float) -> None:
    files = [
        (f"d{j % 20:02d}/part-{j:05d}.dat", rng.randint(1 * KIB, 16 * KIB))
        for j in range(_count(2000, scale))
    ]
    corpus.add_item("wide-item", files, collection="wide-item")


def _tiny_100k(corpus: Corpus, rng: random.Random, scale: float) -> None:
    for i in range(_count(100_000, scale)):
        corpus.add_item(
            f"tiny-{i:06d}", [("tiny.txt", 1000 + rng.randint(0, 48))], collection="tiny-100k"
        )


def _demo(corpus: Corpus, rng: random.Random, scale: float) -> None:
    stems = ["page", "scan", "notes", "data", "track"]
    exts = [".txt", ".jpg", ".txt", ".bin", ".flac"]
    for i in range(_count(34, scale)):
        files = []
        for j in range(rng.randint(1, 4)):
            k = rng.randrange(len(stems))
            big = rng.random() < 0.2
            size = rng.randint(256 * KIB, 2 * MIB) if big else rng.randint(1 * KIB, 64 * KIB)
            files.append((f"{stems[k]}-{j}{exts[k]}", size))
        corpus.add_item(f"demo-item-{i + 1:03d}", files)
    corpus.add_item("demo-large-1", [("video.mp4", 8 * MIB)])
    corpus.add_item("demo-large-2", [("archive.zip", 6 * MIB), ("readme.txt", 2 * KIB)])
    corpus.add_item(
        "demo-subdirs",
        [
            ("docs/readme.txt", 3 * KIB),
            ("docs/img/cover.jpg", 40 * KIB),
            ("a/b/c/deep.bin", 9 * KIB),
        ],
    )
    corpus.add_item(
        "demo-spaces",
        [
            ("my file.txt", 2 * KIB),
            ("notes (draft).txt", 5 * KIB),
            ("100% done.txt", 1 * KIB),
            ("a+b=c&d.txt", 1 * KIB),
            ("hash#tag?.txt", 1 * KIB),
        ],
    )
    corpus.add_item(
        "demo-unicode",
        [
            ("café.txt", 2 * KIB),
            ("naïve résumé.pdf", 30 * KIB),
            ("日本語/ファイル.txt", 4 * KIB),
            ("emoji-🎉.bin", 3 * KIB),
        ],
    )
    corpus.add_item("demo-dark", [("secret.txt", 4 * KIB)], dark=True)


PRESETS: dict[str, Callable[[Corpus, random.Random, float], None]] = {
    "many-small": _many_small,
    "few-large": _few_large,
    "wide-item": _wide_item,
    "tiny-100k": _tiny_100k,
    "demo": _demo,
}
