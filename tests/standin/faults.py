"""Seeded, reproducible fault injection for the archive stand-in.

A :class:`FaultPlan` decides, per request, whether to misbehave and how:

- ``"429"``, ``"503"`` or any other 4xx/5xx status string: answer with that
  status instead (plus ``Retry-After`` for 429/503 when ``retry_after`` is set);
- ``"reset"``: send the headers and half the body, then abort the connection
  with a TCP RST (``SO_LINGER`` 0);
- ``"short"``: send a full ``Content-Length`` but only half the body, then
  close normally;
- ``"flip"``: send the whole body with one byte inverted;
- ``"slow_first_byte"``: wait ``first_byte_delay`` seconds before the headers;
- ``"moved"``: answer ``302`` with a ``Location`` naming the same URL, as a
  front end does while an item moves between nodes (asked again, it answers).

Random faults are drawn from ``rates`` for requests of the chosen ``kinds``
(``search``, ``metadata``, ``redirect``, ``data``). The draw for a request is a
hash of ``(seed, kind, request target, how many times that target was seen)``
rather than a shared random stream, so the same seed gives the same faults to
the same requests however many client threads race each other.

Targeted faults are exact: ``plan.fail_first("item1", ["503", "reset"])``
makes the first two requests for ``item1`` fail in that order and later ones
succeed; ``plan.fail_search_page(2, ["503"])`` does the same for the second
page of a scrape.

The compact string form (for ``python -m tests.standin --faults``) is
comma-separated ``key=value`` pairs::

    seed=3,503=0.05,429=0.02,retry_after=1,reset=0.01,flip=0.01,kinds=data+metadata,
    bandwidth=2M,first_byte_delay=2,metadata_delay=15,fail:item1=503+reset,page:2=503

Fault names as keys set rates; ``fail:TARGET`` and ``page:N`` take ``+``-joined
fault lists; ``bandwidth`` (bytes/s per response) accepts a K/M/G suffix.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REQUEST_KINDS = ("search", "metadata", "redirect", "data")
BODY_FAULTS = ("reset", "short", "flip")
RETRY_AFTER_STATUSES = ("429", "503")
_STATUS = re.compile(r"[45]\d\d")


def check_fault(kind: str) -> str:
    """Return ``kind`` if it names a fault, else raise ``ValueError``."""
    if kind in BODY_FAULTS or kind in ("slow_first_byte", "moved") or _STATUS.fullmatch(kind):
        return kind
    raise ValueError(f"unknown fault {kind!r}")


@dataclass(frozen=True)
class RequestInfo:
    """What the plan may look at to decide on a fault."""

    kind: str
    target: str  # the request target as sent: percent-encoded path and query
    path: str  # the decoded path
    identifier: str | None = None
    name: str | None = None
    page: int | None = None


@dataclass(frozen=True)
class Fault:
    """A decision: which fault, plus a number that places it (e.g. the flipped byte)."""

    kind: str
    draw: int

    @property
    def status(self) -> int | None:
        return int(self.kind) if _STATUS.fullmatch(self.kind) else None


class _Rule:
    """Targeted faults for the first requests matching ``target``."""

    def __init__(self, target: str, faults: Iterable[str], kinds: Iterable[str] | None) -> None:
        self.target = target
        self.queue = deque(check_fault(f) for f in faults)
        self.kinds = None if kinds is None else frozenset(_check_kinds(kinds))

    def matches(self, req: RequestInfo) -> bool:
        if self.kinds is not None and req.kind not in self.kinds:
            return False
        if self.target.startswith("/"):
            return req.path == self.target
        if "/" in self.target:
            return req.identifier is not None and f"{req.identifier}/{req.name}" == self.target
        return req.identifier == self.target


def _check_kinds(kinds: Iterable[str]) -> list[str]:
    kinds = list(kinds)
    for kind in kinds:
        if kind not in REQUEST_KINDS:
            raise ValueError(f"unknown request kind {kind!r}; known: {REQUEST_KINDS}")
    return kinds


class FaultPlan:
    """Which requests fail, how, and how slowly the stand-in answers.

    ``rates`` maps fault names to probabilities (their sum must not exceed
    1); ``kinds`` limits random faults to those request kinds;
    ``retry_after`` (whole seconds) is sent with 429/503 answers;
    ``bandwidth`` throttles every response body to that many bytes/s;
    ``first_byte_delay`` is the wait of a ``slow_first_byte`` fault;
    ``metadata_delay`` delays every metadata answer (to trip client timeouts).
    """

    def __init__(
        self,
        seed: int = 0,
        rates: dict[str, float] | None = None,
        kinds: Iterable[str] = REQUEST_KINDS,
        retry_after: int | None = None,
        bandwidth: int | None = None,
        first_byte_delay: float = 1.0,
        metadata_delay: float = 0.0,
    ) -> None:
        self.seed = seed
        self.rates = {check_fault(k): float(v) for k, v in (rates or {}).items()}
        if any(not 0.0 <= v <= 1.0 for v in self.rates.values()) or sum(self.rates.values()) > 1:
            raise ValueError(f"fault rates must be in [0, 1] and sum to at most 1: {self.rates}")
        self.kinds = frozenset(_check_kinds(kinds))
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError("bandwidth must be > 0")
        self.retry_after = retry_after
        self.bandwidth = bandwidth
        self.first_byte_delay = first_byte_delay
        self.metadata_delay = metadata_delay
        self._rules: list[_Rule] = []
        self._pages: dict[int, deque[str]] = {}
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def fail_first(
        self, target: str, faults: Iterable[str], kinds: Iterable[str] | None = None
    ) -> FaultPlan:
        """Give the next requests matching ``target`` these faults, in order.

        ``target`` is an identifier (its metadata, redirect and data
        requests), ``identifier/name`` (one file's redirect and data
        requests), or a decoded path starting with ``/`` (exact match).
        ``kinds`` narrows the match to some request kinds.
        """
        with self._lock:
            self._rules.append(_Rule(target, faults, kinds))
        return self

    def fail_search_page(self, page: int, faults: Iterable[str]) -> FaultPlan:
        """Give the next requests for scrape page ``page`` (1-based) these faults."""
        with self._lock:
            self._pages.setdefault(page, deque()).extend(check_fault(f) for f in faults)
        return self

    def decide(self, req: RequestInfo) -> Fault | None:
        """The fault for this request, or None. Consumes targeted faults."""
        with self._lock:
            for rule in self._rules:
                if rule.queue and rule.matches(req):
                    return Fault(
                        rule.queue.popleft(), self._hash("first", req.target, len(rule.queue))
                    )
            pages = self._pages.get(req.page) if req.kind == "search" and req.page else None
            if pages:
                return Fault(pages.popleft(), self._hash("page", req.target, len(pages)))
            if not self.rates or req.kind not in self.kinds:
                return None
            seen = self._seen[(req.kind, req.target)]
            self._seen[(req.kind, req.target)] = seen + 1
        draw = self._hash(req.kind, req.target, seen)
        u = (draw >> 64) / 2**64
        for kind, rate in self.rates.items():
            if u < rate:
                return Fault(kind, draw & (2**64 - 1))
            u -= rate
        return None

    def _hash(self, *parts: object) -> int:
        text = "\0".join(str(p) for p in (self.seed, *parts))
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")

    # -- serialisation (CLI string, control endpoint JSON) -------------------

    @classmethod
    def from_spec(cls, spec: str) -> FaultPlan:
        """Parse the compact ``key=value,...`` form described in the module doc."""
        options: dict[str, Any] = {"rates": {}}
        targeted: list[tuple[str, list[str]]] = []
        pages: list[tuple[int, list[str]]] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"fault spec item {part!r} is not key=value")
            if key.startswith("fail:"):
                targeted.append((key[5:], value.split("+")))
            elif key.startswith("page:"):
                pages.append((int(key[5:]), value.split("+")))
            elif key == "seed":
                options["seed"] = int(value)
            elif key == "kinds":
                options["kinds"] = value.split("+")
            elif key == "retry_after":
                options["retry_after"] = int(value)
            elif key == "bandwidth":
                options["bandwidth"] = _parse_bytes(value)
            elif key in ("first_byte_delay", "metadata_delay"):
                options[key] = float(value)
            else:
                options["rates"][check_fault(key)] = float(value)
        plan = cls(**options)
        for target, faults in targeted:
            plan.fail_first(target, faults)
        for page, faults in pages:
            plan.fail_search_page(page, faults)
        return plan

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        """Inverse of :meth:`to_dict`; missing keys take their defaults."""
        data = dict(data)
        rules = data.pop("fail_first", [])
        pages = data.pop("search_pages", {})
        plan = cls(**data)
        for rule in rules:
            plan.fail_first(rule["target"], rule["faults"], rule.get("kinds"))
        for page, faults in pages.items():
            plan.fail_search_page(int(page), faults)
        return plan

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data, with only the targeted faults still pending."""
        with self._lock:
            return {
                "seed": self.seed,
                "rates": dict(self.rates),
                "kinds": sorted(self.kinds),
                "retry_after": self.retry_after,
                "bandwidth": self.bandwidth,
                "first_byte_delay": self.first_byte_delay,
                "metadata_delay": self.metadata_delay,
                "fail_first": [
                    {
                        "target": r.target,
                        "faults": list(r.queue),
                        "kinds": None if r.kinds is None else sorted(r.kinds),
                    }
                    for r in self._rules
                    if r.queue
                ],
                "search_pages": {str(p): list(q) for p, q in self._pages.items() if q},
            }


def _parse_bytes(text: str) -> int:
    """``"2M"`` -> 2 MiB; plain numbers are bytes."""
    scale = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(text[-1:].lower())
    return int(float(text[:-1]) * scale) if scale else int(text)
