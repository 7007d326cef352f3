"""Job-log lines for the tests: canonical builders, hypothesis strategies, big random logs.

A line is built from a list of (key, value) pairs, so keys can be reordered or
repeated; a value is a Python value or :class:`Raw` JSON text (for ``1.0``,
``1e3``, ``NaN`` and other spellings ``json.dumps`` never writes). Rendering
styles vary whitespace and string escapes, so the same record reaches the scan
in many spellings.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

MAX_SEQ = 100_000_000
KINDS = ["job", "started", "completed", "failed", "requeued", "source", "resolved"]

# -- rendering -------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as is."""

    text: str


@dataclass(frozen=True)
class Style:
    escapes: str = "none"  # none | ascii (\\u00e9) | all (every char escaped, / as \\/)
    space: str = ""  # around , and :
    pad: str = ""  # before and after the object


COMPACT = Style()


def render_string(s: str, style: Style = COMPACT) -> str:
    if style.escapes == "none":
        return json.dumps(s, ensure_ascii=False)
    if style.escapes == "ascii":
        return json.dumps(s, ensure_ascii=True)
    out = []
    for ch in s:
        if ch == "/":
            out.append("\\/")
        elif ord(ch) > 0xFFFF:
            high, low = divmod(ord(ch) - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return '"' + "".join(out) + '"'


def render_value(value: Any, style: Style = COMPACT) -> str:
    sp = style.space
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, str):
        return render_string(value, style)
    if isinstance(value, dict):
        return render_object(list(value.items()), style)
    if isinstance(value, list):
        return "[" + f"{sp},{sp}".join(render_value(v, style) for v in value) + "]"
    return json.dumps(value)


def render_object(pairs: list[tuple[str, Any]], style: Style = COMPACT) -> str:
    sp = style.space
    body = f"{sp},{sp}".join(
        f"{render_string(k, style)}{sp}:{sp}{render_value(v, style)}" for k, v in pairs
    )
    return style.pad + "{" + sp + body + sp + "}" + style.pad


def line(pairs: list[tuple[str, Any]] | dict[str, Any], style: Style = COMPACT) -> bytes:
    """One line, without its newline."""
    if isinstance(pairs, dict):
        pairs = list(pairs.items())
    return render_object(pairs, style).encode("utf-8", "surrogatepass")


def log(lines: list[bytes], ending: bytes = b"\n") -> bytes:
    return b"".join(ln + ending for ln in lines)


# -- canonical lines in the upstream shapes --------------------------------------


def job(seq: int, ident: str, op: str = "download", ts: str = "20261128T101500Z") -> bytes:
    return line({"event": "job", "seq": seq, "id": ident, "op": op, "ts": ts})


def event(kind: str, seq: int, ts: str = "20261128T101600Z", **fields: Any) -> bytes:
    return line({"event": kind, "seq": seq, "ts": ts, **fields})


# -- hypothesis strategies -------------------------------------------------------

GOOD_SEQS = st.one_of(
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(1, 12),
    st.sampled_from([MAX_SEQ, 99_999_999]),
)
BAD_SEQS = st.sampled_from(
    [
        Raw("-1"), Raw("0"), Raw("-0"), Raw("100000001"), Raw("1.0"), Raw("1e3"), Raw("1E0"),
        Raw("true"), Raw("false"), Raw("null"), Raw('"5"'), Raw("[1]"), Raw("{}"), Raw("2.5"),
        Raw("18446744073709551617"), Raw("-9223372036854775809"), Raw("1.0e0"), Raw("10e-1"),
    ]
)  # fmt: skip

TEXT = st.text(
    st.one_of(
        st.sampled_from([*list('ae"\\/\té\u2028\x7f{}:,'), "é", "😀", "\x00", "\n"]),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=30,
)
IDS = st.one_of(
    st.sampled_from(["nasa-apollo-11", "item", "Ünïcødé-项目", 'quote"back\\slash', '"seq":7']),
    TEXT,
)
TIMESTAMPS = st.one_of(
    st.sampled_from(["20261128T101500Z", "20261128T101501Z", "20250101T000000Z", "2026é", ""]),
    TEXT,
    st.integers(0, 10),
)
ERRORS = st.one_of(st.sampled_from(["HTTP 404", "HTTP 503", "item is dark", "md5 mismatch"]), TEXT)
RETRIES = st.one_of(
    st.integers(0, 5),
    st.sampled_from([False, False, True, None, Raw("0.0"), "false", Raw("1.0")]),
)
SIZES = st.one_of(
    st.integers(0, 10**12),
    st.sampled_from([Raw("-1"), Raw("1.5"), Raw("1e3"), Raw('"12"'), Raw("true"), Raw("-0")]),
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.sampled_from(
        [Raw("1E+2"), Raw("-0.0"), Raw("0e0"), Raw("1.5e-7"), Raw("123456789012345678")]
    ),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["seq", "event", "a", ""]), inner, max_size=3),
    ),
    max_leaves=6,
)
STYLES = st.builds(
    Style,
    escapes=st.sampled_from(["none", "none", "ascii", "all"]),
    space=st.sampled_from(["", "", " ", "\t", " \r "]),
    pad=st.sampled_from(["", "", " ", "\t"]),
)


@st.composite
def record_pairs(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """A record of a known or unknown kind, mostly well-formed, keys in any order."""
    if draw(st.integers(0, 9)):
        kind = draw(st.sampled_from([*KINDS, "job", "completed", "failed", "checkpoint"]))
    else:
        kind = draw(st.sampled_from(["JOB", "", 3, None, Raw("missing")]))
    pairs: list[tuple[str, Any]] = []
    if kind != Raw("missing"):
        pairs.append(("event", kind))
    if kind in ("job", "started", "completed", "failed", "requeued") or draw(st.booleans()):
        if draw(st.integers(0, 9)) == 0:
            seq = draw(st.one_of(BAD_SEQS, st.just(Raw("missing"))))
        else:
            seq = draw(GOOD_SEQS)
        if seq != Raw("missing"):
            pairs.append(("seq", seq))
    if draw(st.integers(0, 3)):
        pairs.append(("ts", draw(TIMESTAMPS)))
    if kind == "job" and draw(st.integers(0, 9)):
        pairs.append(("id", draw(IDS)))
        pairs.append(("op", "download"))
    elif kind == "job" and draw(st.booleans()):
        pairs.append(("id", draw(JSON_SCALARS)))
    if kind == "started":
        pairs.append(("worker", draw(st.integers(0, 31))))
    if kind == "completed" and draw(st.integers(0, 3)):
        extra = draw(st.one_of(st.builds(lambda s: {"item_size": s}, SIZES), JSON_VALUES))
        pairs.append(("extra", extra))
    if kind == "failed":
        if draw(st.integers(0, 5)):
            pairs.append(("error", draw(ERRORS)))
        retry = draw(RETRIES)
        if retry is not None:
            pairs.append(("retry", retry))
    if kind == "source":
        pairs.append(("query", draw(TEXT)))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.one_of(st.sampled_from(["x", "note", "worker", "op", "extra_"]), TEXT))
        pairs.append((key, draw(JSON_VALUES)))
    if draw(st.integers(0, 7)) == 0:  # a duplicate key: the last one wins
        key = draw(st.sampled_from(["seq", "event", "id", "retry", "ts", "extra", "error"]))
        pairs.append((key, draw(st.one_of(JSON_VALUES, st.sampled_from(KINDS), GOOD_SEQS))))
    return draw(st.permutations(pairs)) if draw(st.booleans()) else pairs


@st.composite
def well_formed_line(draw: st.DrawFn) -> bytes:
    return line(draw(record_pairs()), draw(STYLES))


CORRUPT = [
    b"[1]", b'"x"', b"3", b"null", b"true", b"{}{}", b'{"event":"job"} x', b"{", b"}",
    b'{"event":"job","seq":1,"id":"a",}', b"{'event':'job'}", b'{event:"job"}',
    b'{"event":"completed","seq":1,"extra":{"item_size":NaN}}',
    b'{"event":"completed","seq":1,"x":Infinity}', b'{"event":"completed","seq":1,"x":-Infinity}',
    b'{"event":"completed","seq":1,"x":"\\ud800"}',
    b'{"event":"completed","seq":1,"x":"\\udc00\\ud800"}',
    b'{"event":"checkpoint","x":"\\ud83d\\u0041"}', b'{"event":"completed","seq":1,"\\udfff":1}',
    b'{"event":"completed","seq":1,"x":"\\ud800","x":1}',
    b'{"event":"completed","seq":1,"x":"\xff"}', b'{"event":"completed","seq":1,"x":"\xc3"}',
    b'{"event":"completed","seq":1,"x":"\xc0\xaf"}',
    b'{"event":"completed","seq":1,"x":"\xed\xa0\x80"}',
    b'{"event":"completed","seq":1,"x":"\xf4\x90\x80\x80"}', b"\xef\xbb\xbf{}",
    b'{"event":"completed","seq":1,"x":"a\tb"}', b'{"event":"completed","seq":1,"x":"\\x"}',
    b'{"event":"completed","seq":1,"x":"\\u12"}', b'{"event":"completed","seq":01}',
    b'{"event":"completed","seq":1,"x":+1}', b'{"event":"completed","seq":1,"x":.5}',
    b'{"event":"completed","seq":1,"x":1.}', b'{"event":"completed","seq":1,"x":-}',
    b'{"event":"completed","seq":1,"x":tru}', b'{"event":"completed","seq":1,"x":[1,]}',
    b'{"event":"completed","seq":1 "x":1}', b'{"event":"completed" "seq":1}',
    b'{"event":"completed","seq":1,"x":"unterminated}', b'{"event":"completed","seq":1,:1}',
    b'{"event":"completed","seq":1,"x":"\x00"}', b'{"event":"completed","seq":1,"x":\x00}',
    b'\x00{"event":"completed","seq":1}', b'{"event":"completed","seq":1}\x00',
    b'{"event":"completed","seq":1,"x":1e}', b'{"event":"completed","seq":1,"x":0x10}',
    b'{"event":"completed","seq":1}\x0c', b'\x0b{"event":"completed","seq":1}',
    b'{"event":"completed","seq":1,"x":"\xe2\x80"}',
]  # fmt: skip
CORRUPT_LINES = st.sampled_from(CORRUPT)
BLANK_LINES = st.sampled_from([b"", b" ", b"\t", b"\r", b" \t \r"])


STRUCTURAL = b'{}[]":, \t0123456789-.eEtrufalsn'


@st.composite
def corrupted(draw: st.DrawFn, good: st.SearchStrategy[bytes]) -> bytes:
    """A good line broken: cut, a multi-byte char cut in half, a byte changed,
    inserted or deleted (often a structural ASCII byte, so that the line stays
    plain ASCII and takes the scanner's fast path), or garbage."""
    raw = draw(good)
    how = draw(
        st.sampled_from(["cut", "half-char", "flip", "ascii-flip", "insert", "delete", "garbage"])
    )
    at = draw(st.integers(0, max(len(raw) - 1, 0)))
    ascii_byte = bytes([draw(st.sampled_from(STRUCTURAL))])
    if how == "cut" and raw:
        return raw[:at]
    if how == "half-char":
        raw = raw.replace(b'"event"', b'"event\xc3\xa9"', 1) if b"\xc3" not in raw else raw
        cut = raw.index(b"\xc3") if b"\xc3" in raw else 0
        return raw[:cut] + raw[cut : cut + 1] + raw[cut + 2 :]
    if how == "flip" and raw:
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    if how == "ascii-flip" and raw:
        return raw[:at] + ascii_byte + raw[at + 1 :]
    if how == "insert":
        return raw[:at] + ascii_byte + raw[at:]
    if how == "delete" and raw:
        return raw[:at] + raw[at + 1 :]
    alphabet = draw(st.sampled_from([None, STRUCTURAL]))
    if alphabet is None:
        return draw(st.binary(max_size=20)).replace(b"\n", b"")
    return bytes(draw(st.lists(st.sampled_from(alphabet), max_size=40)))


PLAIN_IDS = st.text(st.sampled_from("abcxyz-_.:/ {}[],"), max_size=20)
NUMBER_TEXT = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,5})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.from_regex(r"[-+]?[0-9]{0,3}\.?[0-9]{0,3}[eE]?[-+]?[0-9]{0,2}", fullmatch=True),  # often bad
    st.integers(0, 2**64 + 5).map(str),
)


@st.composite
def plain_line(draw: st.DrawFn) -> bytes:
    """A short, plain ASCII line (no escapes), the shape most lines have."""
    kind = draw(st.sampled_from(["job", "started", "completed", "failed", "requeued", "x"]))
    seq = draw(st.one_of(GOOD_SEQS, GOOD_SEQS, NUMBER_TEXT.map(Raw)))
    pairs: list[tuple[str, Any]] = [("event", kind), ("seq", seq)]
    if kind == "job":
        pairs.append(("id", draw(PLAIN_IDS)))
    if kind == "failed":
        pairs += [("error", draw(PLAIN_IDS)), ("retry", draw(st.sampled_from([1, False, True])))]
    if kind == "completed" and draw(st.booleans()):
        size = draw(st.one_of(st.integers(0, 10**6), NUMBER_TEXT.map(Raw)))
        pairs.append(("extra", {"item_size": size}))
    if draw(st.integers(0, 3)) == 0:
        pairs.append(("n", Raw(draw(NUMBER_TEXT))))
    if draw(st.booleans()):
        pairs.append(("ts", draw(PLAIN_IDS)))
    pairs = draw(st.permutations(pairs))
    return line(pairs, draw(st.sampled_from([COMPACT, Style(space=" ")])))


@st.composite
def plain_line_near_128(draw: st.DrawFn) -> bytes:
    """A plain line padded to 100-150 bytes: either side of the scanner's 128-byte fast path."""
    base = draw(plain_line())
    target = draw(st.integers(100, 150))
    room = target - len(base) - len(b',"pad":""')
    if room < 0 or not base.endswith(b"}"):
        return base
    return base[:-1] + b',"pad":"' + b"p" * room + b'"}'


def any_line() -> st.SearchStrategy[bytes]:
    good = well_formed_line()
    plain = st.one_of(plain_line(), plain_line_near_128())
    return st.one_of(
        good, good, good, good, plain, plain, CORRUPT_LINES, BLANK_LINES,
        corrupted(good), corrupted(plain), corrupted(plain),
    )  # fmt: skip


@st.composite
def logs(draw: st.DrawFn, max_lines: int = 40) -> bytes:
    """A whole log: lines, each ending in ``\\n`` or ``\\r\\n``, maybe a torn tail."""
    body = draw(st.lists(any_line(), max_size=max_lines))
    endings = draw(
        st.lists(
            st.sampled_from([b"\n", b"\n", b"\n", b"\r\n"]), min_size=len(body), max_size=len(body)
        )
    )
    data = b"".join(ln + end for ln, end in zip(body, endings))
    tail = draw(st.sampled_from(["none", "none", "torn", "whole-line-no-newline"]))
    if tail == "torn":
        data += draw(any_line())[: draw(st.integers(1, 40))]
    elif tail == "whole-line-no-newline":
        data += draw(well_formed_line())
    return data


# -- big random logs (not hypothesis: a few MB each) -----------------------------


def random_log(
    rng: random.Random, target_bytes: int, duplicate_jobs: bool = True, giant_lines: int = 0
) -> bytes:
    """A seeded log of roughly ``target_bytes``: realistic lines, collisions, corruption.

    Seqs are drawn in any order, so events land far from their job line (in
    another range of a parallel scan). A few lines are long (tens of KB) so
    block boundaries fall inside them, and ``giant_lines`` are longer than a
    read block (1-3 MB). Without ``duplicate_jobs`` no seq gets a second
    well-formed job line (a duplicate across ranges sends the Rust scan back
    to one sequential pass, so this is what exercises the parallel fold).
    """
    n_seqs = max(1000, target_bytes // 400)
    unused = list(range(1, n_seqs + 1))
    rng.shuffle(unused)
    out: list[bytes] = []
    size = 0
    errors = ["HTTP 404", "HTTP 503", "item is dark", "md5 mismatch for x.pdf", 'caf\u00e9 \\ "q"']
    while size < target_bytes:
        r = rng.random()
        seq = rng.randint(1, n_seqs)
        ts = f"2026112{rng.randint(0, 9)}T{rng.randint(0, 235959):06d}Z"
        if r < 0.25:
            if not duplicate_jobs:
                if not unused:
                    continue
                seq = unused.pop()
            ident = f"nasa-apollo-{seq:08d}-\u00e9"
            ln = line({"event": "job", "seq": seq, "id": ident, "op": "download", "ts": ts})
        elif r < 0.40:
            ln = line({"event": "started", "seq": seq, "ts": ts, "worker": rng.randint(0, 9)})
        elif r < 0.65:
            extra = {"item_size": rng.randint(0, 10**9)}
            ln = line({"seq": seq, "event": "completed", "ts": ts, "extra": extra})
        elif r < 0.78:
            retry: Any = rng.choice([1, 2, 3, False, False, True])
            error = rng.choice(errors)
            ln = line({"event": "failed", "seq": seq, "ts": ts, "error": error, "retry": retry})
        elif r < 0.82:
            ln = line({"event": "requeued", "seq": seq, "ts": ts})
        elif r < 0.83:
            ln = line({"event": "source", "query": f"collection:nasa {seq}", "ts": ts})
        elif r < 0.84:
            ln = line({"event": "resolved", "count": seq, "ts": ts})
        elif r < 0.843:
            ln = line({"event": "checkpoint", "seq": seq, "note": "x" * rng.randint(0, 30_000)})
        elif r < 0.845 and duplicate_jobs:
            blob = "y\u00e9" * rng.randint(0, 20_000)
            ln = line({"event": "job", "seq": seq, "id": "long", "blob": blob})
        elif r < 0.90:
            bad_seq = rng.choice([-1, 0, MAX_SEQ + 1, "1"])
            ln = line(
                {"event": rng.choice(["job", "completed"]), "seq": bad_seq, "id": "x", "ts": ts}
            )
        elif r < 0.92:
            ln = rng.choice(
                [b"", b"  ", b"[1]", b"\xff\xfe", b'{"event":"completed","seq":3,"x":"\xc3"}']
            )
        elif r < 0.94:
            good = line({"event": "completed", "seq": seq, "ts": ts})
            ln = good[: rng.randint(0, len(good) - 1)]
        elif r < 0.96:
            ln = line({"event": "completed", "seq": seq, "ts": ts}) + b"\r"
        else:
            pairs = [("ts", ts), ("seq", seq), ("event", "failed"), ("retry", False),
                     ("error", "x"), ("seq", seq + 1)]  # fmt: skip
            ln = line(pairs, Style(escapes="all", space=" "))
        out.append(ln)
        size += len(ln) + 1
    for _ in range(giant_lines):
        blob = "z" * rng.randint(1_000_000, 3_000_000)
        giant = line({"event": rng.choice(["checkpoint", "started"]), "seq": 1, "blob": blob})
        out.insert(rng.randint(0, len(out)), giant)
    return b"\n".join(out) + b"\n"
