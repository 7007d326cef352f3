"""The subset of archive.org's Lucene-style query syntax the stand-in answers.

Supported: ``field:value`` (value bare or in double quotes, ``*`` and ``?``
wildcards, compared case-insensitively), ``*:*``, ``AND``, ``OR``, ``NOT``,
parentheses, and juxtaposition (treated as ``AND``, archive.org's default
operator). ``AND`` binds tighter than ``OR``. Anything else (bare words, ranges,
boosts) raises :class:`QueryError`, which the search endpoints turn into the
``{"error": ...}`` answer archive.org gives for a query it cannot parse -
better a loud error in a test than a silently wrong result set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase

# A document is seen through one function: field name -> its string values.
FieldValues = Callable[[str], Iterable[str]]
Predicate = Callable[[FieldValues], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<term>(?P<field>[A-Za-z_*][\w.*-]*):(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s()"]+))) |
        (?P<word>[^\s()]+)
    )""",
    re.VERBOSE,
)


class QueryError(ValueError):
    """The query uses syntax the stand-in does not implement."""


def compile_query(query: str) -> Predicate:
    """Turn a query string into a predicate over a document's field values."""
    tokens = _tokenize(query)
    if not tokens:
        raise QueryError("empty query")
    parser = _Parser(tokens)
    predicate = parser.parse_or()
    if parser.pos != len(tokens):
        raise QueryError(f"unexpected {tokens[parser.pos][1]!r} in query {query!r}")
    return predicate


def _tokenize(query: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    query = query.strip()
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if m is None:
            raise QueryError(f"cannot parse query {query!r} at {pos}")
        pos = m.end()
        if m["lparen"]:
            tokens.append(("(", "("))
        elif m["rparen"]:
            tokens.append((")", ")"))
        elif m["term"]:
            value = m["quoted"] if m["quoted"] is not None else m["bare"]
            tokens.append(("term", f"{m['field']}:{value}"))
        elif m["word"] in ("AND", "OR", "NOT"):
            tokens.append((m["word"], m["word"]))
        else:
            raise QueryError(f"bare word {m['word']!r}: use field:value")
    return tokens


class _Parser:
    """Recursive descent: or := and (OR and)*; and := unary (AND? unary)*."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def parse_or(self) -> Predicate:
        parts = [self.parse_and()]
        while self._peek() == "OR":
            self.pos += 1
            parts.append(self.parse_and())
        if len(parts) == 1:
            return parts[0]
        return lambda doc: any(p(doc) for p in parts)

    def parse_and(self) -> Predicate:
        parts = [self.parse_unary()]
        while self._peek() in ("AND", "NOT", "term", "("):
            if self._peek() == "AND":
                self.pos += 1
            parts.append(self.parse_unary())
        if len(parts) == 1:
            return parts[0]
        return lambda doc: all(p(doc) for p in parts)

    def parse_unary(self) -> Predicate:
        kind = self._peek()
        if kind is None:
            raise QueryError("query ends where a term was expected")
        kind, text = self.tokens[self.pos]
        self.pos += 1
        if kind == "NOT":
            inner = self.parse_unary()
            return lambda doc: not inner(doc)
        if kind == "(":
            inner = self.parse_or()
            if self._peek() != ")":
                raise QueryError("unbalanced parenthesis")
            self.pos += 1
            return inner
        if kind == "term":
            field, value = text.split(":", 1)
            return _term(field, value)
        raise QueryError(f"unexpected {text!r}")


def _term(field: str, value: str) -> Predicate:
    if field == "*" and value == "*":
        return lambda doc: True
    if field == "*":
        raise QueryError("only *:* may use a wildcard field")
    pattern = value.lower()
    if "*" in pattern or "?" in pattern:
        return lambda doc: any(fnmatchcase(v.lower(), pattern) for v in doc(field))
    return lambda doc: any(v.lower() == pattern for v in doc(field))
