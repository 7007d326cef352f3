"""The archive stand-in is faithful enough to test iabulk against.

The fidelity tests drive the REAL ``internetarchive`` library (and its ``ia``
command) in subprocesses whose only route anywhere is ``srv.env()``: default
``https:`` URLs through ``CONNECT`` plus TLS, or plain-HTTP forward proxying.
Protocol details (ranges, faults, refusals, counters) are checked in-process
with ``requests`` over real sockets, where exceptions can be caught exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.standin import ArchiveStandin, Corpus, FaultPlan
from tests.standin.content import BLOCK_SIZE, HEADER_SIZE
from tests.standin.faults import Fault, RequestInfo
from tests.standin.query import QueryError, compile_query

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


def session(srv: ArchiveStandin) -> requests.Session:
    """A requests session routed through the stand-in, ignoring the host's env."""
    s = requests.Session()
    s.trust_env = False
    s.proxies = {"http": srv.proxy_url, "https": srv.proxy_url}
    s.verify = srv.ca_bundle
    return s


def run_client(srv: ArchiveStandin, code: str, cwd: Path) -> Any:
    """Run Python in a subprocess with only ``srv.env()`` as a route; return its
    last stdout line as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=srv.client_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- corpus -----------------------------------------------------------------


def test_presets_are_deterministic_and_seeded() -> None:
    a = Corpus.preset("many-small", seed=1, scale=0.01)
    b = Corpus.preset("many-small", seed=1, scale=0.01)
    c = Corpus.preset("many-small", seed=2, scale=0.01)
    assert len(a) == 20 and a.identifiers() == b.identifiers() == c.identifiers()
    first = a.identifiers()[0]
    assert a.expected(first) == b.expected(first)
    assert a.expected(first) != c.expected(first)
    sizes = [
        size
        for ident in a.identifiers()
        for n, (size, _) in a.expected(ident).items()
        if n.endswith(".bin")
    ]
    assert len(sizes) == 100 and all(4096 <= s <= 65536 for s in sizes)


def test_preset_shapes() -> None:
    large = Corpus.preset("few-large", scale=0.1)
    assert len(large) == 5
    item = large[large.identifiers()[0]]
    assert list(item.files.values()) == [20 * MIB]
    wide = Corpus.preset("wide-item", scale=0.05)
    assert len(wide) == 1 and len(wide["wide-item"].files) == 100
    started = time.monotonic()
    tiny = Corpus.preset("tiny-100k")
    assert len(tiny) == 100_000 and time.monotonic() - started < 10
    assert all(1000 <= s <= 1048 for s in tiny["tiny-099999"].files.values())


def test_demo_preset(small_corpus: Corpus) -> None:
    ids = small_corpus.identifiers()
    assert 35 <= len(ids) <= 45
    assert small_corpus.search("collection:demo") == sorted(ids)
    dark = [i for i in ids if small_corpus[i].dark]
    assert dark == ["demo-dark"]
    names = [n for i in ids for n in small_corpus[i].files]
    assert any("/" in n for n in names)
    assert any(" " in n for n in names)
    assert any(not n.isascii() for n in names)


def test_file_bodies_are_unique_and_match_their_checksums() -> None:
    corpus = Corpus()
    corpus.add_item("a", [("x.bin", 5000), ("y.bin", 5000)])
    corpus.add_item("b", [("x.bin", 5000)])
    bodies = {corpus.read(i, "x.bin") for i in ("a", "b")} | {corpus.read("a", "y.bin")}
    assert len(bodies) == 3 and all(len(b) == 5000 for b in bodies)
    for ident in ("a", "b"):
        for name, (size, md5) in corpus.expected(ident).items():
            data = corpus.read(ident, name)
            assert (len(data), md5_bytes(data)) == (size, md5)


LARGE = Corpus()
LARGE.add_item("big", [("big.bin", BLOCK_SIZE * 2 + 12345)])
LARGE_BYTES = LARGE.read("big", "big.bin")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(LARGE_BYTES)), st.integers(0, len(LARGE_BYTES)))
def test_any_range_of_a_large_body_is_a_slice_of_it(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    assert LARGE.read("big", "big.bin", start, end) == LARGE_BYTES[start:end]


def test_large_bodies_are_served_from_shared_memory_not_built() -> None:
    corpus = Corpus.preset("few-large", scale=0.02)
    item = corpus["few-large-000"]
    body = corpus.body(item, "large-000.bin", 0, 20 * MIB)
    chunks = list(body.chunks())
    assert all(isinstance(c, memoryview) for c in chunks)
    assert sum(map(len, chunks)) == 20 * MIB
    assert len(chunks[0]) == HEADER_SIZE  # the unique header, then ring slices


def test_metadata_document_shape(small_corpus: Corpus) -> None:
    item = small_corpus["demo-subdirs"]
    doc = small_corpus.metadata_doc(item)
    top = {"created", "d1", "d2", "dir", "files", "item_size", "metadata", "server", "uniq"}
    assert top | {"workable_servers"} <= set(doc)
    assert "is_dark" not in doc
    assert doc["metadata"]["identifier"] == "demo-subdirs"
    by_name = {f["name"]: f for f in doc["files"]}
    files_xml = by_name.pop("demo-subdirs_files.xml")
    assert "md5" not in files_xml and "size" not in files_xml
    for f in by_name.values():
        assert all(isinstance(v, str) for v in f.values())
        assert {"name", "size", "md5", "sha1", "crc32", "format", "source", "mtime"} <= set(f)
    assert set(small_corpus.expected("demo-subdirs")) == set(by_name)
    assert doc["item_size"] == sum(
        len(small_corpus.read("demo-subdirs", f["name"])) for f in doc["files"]
    )
    assert small_corpus.metadata_doc(small_corpus["demo-dark"])["is_dark"] is True


def test_add_item_rejects_what_cannot_be_served() -> None:
    corpus = Corpus()
    corpus.add_item("x", [("a", 1)])
    for bad in [
        lambda: corpus.add_item("x", []),
        lambda: corpus.add_item("y", [("a", 1), ("a", 2)]),
        lambda: corpus.add_item("z", [("z_meta.xml", 1)]),
        lambda: corpus.add_item("w", [("\udc80", 1)]),
    ]:
        with pytest.raises((ValueError, UnicodeEncodeError)):
            bad()


def test_query_language() -> None:
    docs = {
        "a": {"identifier": ["a"], "collection": ["demo", "other"]},
        "b": {"identifier": ["b"], "collection": ["demo"], "title": ["Hello World"]},
        "c": {"identifier": ["c"], "collection": ["misc"]},
    }

    def values_of(doc: dict[str, list[str]]) -> Callable[[str], list[str]]:
        return lambda field: doc.get(field, [])

    def run(q: str) -> list[str]:
        matches = compile_query(q)
        return [key for key, doc in docs.items() if matches(values_of(doc))]

    assert run("*:*") == ["a", "b", "c"]
    assert run("collection:demo") == ["a", "b"]
    assert run("collection:demo AND identifier:b") == ["b"]
    assert run("collection:misc OR identifier:a") == ["a", "c"]
    assert run("collection:demo AND NOT collection:other") == ["b"]
    assert run("(identifier:a OR identifier:c) collection:misc") == ["c"]
    assert run('title:"hello world"') == ["b"]
    assert run("identifier:[ab]") == []  # fnmatch classes are not Lucene syntax
    assert run("collection:de*") == ["a", "b"]
    for bad in ["", "hello", "collection:demo AND", "(collection:demo", "*:x"]:
        with pytest.raises(QueryError):
            compile_query(bad)


# -- faults -----------------------------------------------------------------


def _data(i: int) -> RequestInfo:
    return RequestInfo("data", f"/1/items/x/f{i}", f"/1/items/x/f{i}", "x", f"f{i}")


def test_random_faults_are_reproducible_whatever_the_order() -> None:
    rates = {"503": 0.1, "flip": 0.05}
    plans = [FaultPlan(seed=7, rates=rates), FaultPlan(seed=7, rates=rates)]
    forward = [plans[0].decide(_data(i)) for i in range(2000)]
    backward = [plans[1].decide(_data(i)) for i in reversed(range(2000))][::-1]
    assert forward == backward
    reseeded = FaultPlan(seed=8, rates=rates)
    other = [reseeded.decide(_data(i)) for i in range(2000)]
    assert forward != other
    kinds = [f.kind for f in forward if f is not None]
    assert 140 < kinds.count("503") < 260 and 60 < kinds.count("flip") < 140
    again = FaultPlan(seed=7, rates=rates)
    repeats = [again.decide(_data(0)) for _ in range(1000)]
    assert 50 < sum(f is not None for f in repeats) < 250  # each retry draws anew
    meta = RequestInfo("metadata", "/metadata/x", "/metadata/x", "x")
    assert all(
        FaultPlan(rates={"503": 1.0}, kinds=["data"]).decide(meta) is None for _ in range(50)
    )


def test_targeted_faults_are_exact() -> None:
    plan = FaultPlan().fail_first("x", ["503", "reset"]).fail_first("y/f.bin", ["flip"])
    plan.fail_first("/metadata/z", ["429"]).fail_search_page(2, ["500"])
    plan.fail_first("w", ["short"], kinds=["data"])
    meta_x = RequestInfo("metadata", "/metadata/x", "/metadata/x", "x")
    redirect_x = RequestInfo("redirect", "/download/x/a", "/download/x/a", "x", "a")
    assert [getattr(plan.decide(r), "kind", None) for r in (meta_x, redirect_x, meta_x)] == [
        "503",
        "reset",
        None,
    ]
    other_file = RequestInfo("data", "/1/items/y/g.bin", "/1/items/y/g.bin", "y", "g.bin")
    this_file = RequestInfo("data", "/1/items/y/f.bin", "/1/items/y/f.bin", "y", "f.bin")
    assert plan.decide(other_file) is None
    assert getattr(plan.decide(this_file), "kind", None) == "flip"
    meta_z = RequestInfo("metadata", "/metadata/z", "/metadata/z", "z")
    assert getattr(plan.decide(meta_z), "kind", None) == "429"
    page1 = RequestInfo("search", "/s?p1", "/s", page=1)
    page2 = RequestInfo("search", "/s?p2", "/s", page=2)
    assert plan.decide(page1) is None
    assert getattr(plan.decide(page2), "kind", None) == "500"
    assert plan.decide(page2) is None
    meta_w = RequestInfo("metadata", "/metadata/w", "/metadata/w", "w")
    data_w = RequestInfo("data", "/1/items/w/a", "/1/items/w/a", "w", "a")
    assert plan.decide(meta_w) is None
    assert getattr(plan.decide(data_w), "kind", None) == "short"
    assert isinstance(FaultPlan(rates={"flip": 1.0}).decide(data_w), Fault)


def test_fault_spec_round_trips() -> None:
    spec = (
        "seed=3,503=0.05,429=0.02,retry_after=1,reset=0.01,flip=0.01,kinds=data+metadata,"
        "bandwidth=2M,first_byte_delay=2,metadata_delay=0.5,fail:item1=503+reset,page:2=503"
    )
    plan = FaultPlan.from_spec(spec)
    expected = {
        "seed": 3,
        "rates": {"503": 0.05, "429": 0.02, "reset": 0.01, "flip": 0.01},
        "kinds": ["data", "metadata"],
        "retry_after": 1,
        "bandwidth": 2 * MIB,
        "first_byte_delay": 2.0,
        "metadata_delay": 0.5,
        "fail_first": [{"target": "item1", "faults": ["503", "reset"], "kinds": None}],
        "search_pages": {"2": ["503"]},
    }
    assert plan.to_dict() == expected
    assert FaultPlan.from_dict(json.loads(json.dumps(expected))).to_dict() == expected
    assert FaultPlan.from_spec("").to_dict()["rates"] == {}
    for bad in ["bogus=1", "503", "503=0.7,429=0.7", "kinds=uploads", "fail:x=explode"]:
        with pytest.raises(ValueError):
            FaultPlan.from_spec(bad)


# -- the real internetarchive library, in subprocesses ----------------------


def test_library_search_pages_through_every_item(standin: Any, tmp_path: Path) -> None:
    corpus = Corpus.preset("demo")
    for i in range(230):
        corpus.add_item(f"extra-{i:03d}", [("a.txt", 100)])
    corpus.add_item("elsewhere", [("a.txt", 100)], collection="other")
    srv = standin(corpus, FaultPlan(retry_after=0).fail_search_page(2, ["503"]))
    out = run_client(
        srv,
        """
        import json
        from internetarchive import get_session
        s = get_session()
        search = s.search_items("collection:demo", fields=["title"], params={"count": 100})
        results = list(search)
        both = [r["identifier"] for r in s.search_items("collection:demo OR collection:other")]
        print(json.dumps({"results": results, "num_found": search.num_found, "both": both}))
        """,
        tmp_path,
    )
    expected = corpus.search("collection:demo")
    assert len(expected) == 270
    assert [r["identifier"] for r in out["results"]] == expected
    assert out["results"][0]["title"] == f"Stand-in item {expected[0]}"
    assert out["num_found"] == 270
    assert sorted(out["both"]) == sorted([*expected, "elsewhere"])
    counters = srv.counters()
    # list() asks len() first (total_only), then pages 1, 2 (503), 2 again, 3;
    # then the single page of the second search
    assert counters["requests_by_kind"]["search"] == 6
    assert counters["status"] == {"200": 5, "503": 1}
    assert counters["faults_injected"] == {"503": 1}
    assert counters["tunnels_opened"] == counters["connections_opened"] == 6


def test_library_reads_metadata_and_downloads_verified_files(
    standin: Any, small_corpus: Corpus, tmp_path: Path
) -> None:
    srv = standin(small_corpus)
    items = ["demo-unicode", "demo-subdirs", "demo-spaces", "demo-large-1"]
    out = run_client(
        srv,
        f"""
        import json
        from internetarchive import get_session
        s = get_session()
        files = {{i: s.get_item(i).files for i in {items!r}}}
        errors = {{i: s.get_item(i).download(destdir="dl") for i in {items!r}}}
        dark = s.get_item("demo-dark")
        missing = s.get_item("no-such-item")
        print(json.dumps({{
            "protocol": s.protocol,
            "files": files,
            "errors": errors,
            "dark": [dark.is_dark, dark.download(destdir="dl"),
                     s.get(dark.get_file("secret.txt").url).status_code],
            "missing": [missing.exists, s.get_metadata("no-such-item")],
        }}))
        """,
        tmp_path,
    )
    assert out["protocol"] == "https:"
    for ident in items:
        item = small_corpus[ident]
        assert out["files"][ident] == small_corpus.metadata_doc(item)["files"]
        assert out["errors"][ident] == []
        for name, (size, md5) in small_corpus.expected(ident).items():
            path = tmp_path / "dl" / ident / name
            assert (path.stat().st_size, md5_file(path)) == (size, md5), name
            assert path.stat().st_mtime == item.mtime(name)  # from Last-Modified
        files_xml = tmp_path / "dl" / ident / f"{ident}_files.xml"
        assert files_xml.read_bytes() == small_corpus.read(ident, f"{ident}_files.xml")
    assert out["dark"] == [True, [], 403]
    assert out["missing"] == [False, {}]
    assert not (tmp_path / "dl" / "demo-dark").exists()
    counters = srv.counters()
    assert counters["tunnels_opened"] > 0 and counters["requests_by_kind"]["refused"] == 0
    expected_files = sum(len(small_corpus.expected(i)) + 1 for i in items)
    assert counters["requests_by_kind"]["data"] == expected_files


def test_ia_command_range_download(
    standin: Any, small_corpus: Corpus, iabulk_env: Any, tmp_path: Path
) -> None:
    srv = standin(small_corpus)
    proc = subprocess.run(
        ["ia", "download", "demo-large-1", "video.mp4", "--stdout", "--range", "1000-1999"],
        env=iabulk_env(srv),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == small_corpus.read("demo-large-1", "video.mp4", 1000, 2000)
    assert srv.counters()["status"].get("206") == 1


def test_library_honours_retry_after(standin: Any, small_corpus: Corpus, tmp_path: Path) -> None:
    plan = FaultPlan(retry_after=1).fail_first("demo-item-001", ["429"], kinds=["metadata"])
    srv = standin(small_corpus, plan)
    out = run_client(
        srv,
        """
        import json, time
        from internetarchive import get_session
        s = get_session()
        started = time.monotonic()
        item = s.get_item("demo-item-001")
        print(json.dumps({"elapsed": time.monotonic() - started, "exists": item.exists}))
        """,
        tmp_path,
    )
    assert out["exists"] is True
    assert out["elapsed"] >= 1.0
    counters = srv.counters()
    assert counters["requests_by_kind"]["metadata"] == 2
    assert counters["status"] == {"429": 1, "200": 1}
    assert counters["faults_injected"] == {"429": 1}


def test_library_over_plain_http_forward_proxy(
    standin: Any, small_corpus: Corpus, tmp_path: Path
) -> None:
    srv = standin(small_corpus)
    out = run_client(
        srv,
        """
        import json
        from internetarchive import get_session
        s = get_session(config={"general": {"secure": False}})
        ids = [r["identifier"] for r in s.search_items("collection:demo")]
        item = s.get_item("demo-subdirs")
        errors = item.download(destdir="dl")
        url = item.get_file("docs/readme.txt").url
        print(json.dumps({"ids": ids, "errors": errors, "url": url}))
        """,
        tmp_path,
    )
    assert out["ids"] == small_corpus.search("collection:demo")
    assert out["url"] == "http://archive.org/download/demo-subdirs/docs/readme.txt"
    assert out["errors"] == []
    for name, (_, md5) in small_corpus.expected("demo-subdirs").items():
        assert md5_file(tmp_path / "dl" / "demo-subdirs" / name) == md5
    counters = srv.counters()
    assert counters["tunnels_opened"] == 0
    assert counters["requests_by_kind"]["data"] == len(small_corpus.expected("demo-subdirs")) + 1


# -- protocol details, in-process over real sockets -------------------------


def test_ranges_heads_and_416(standin: Any, small_corpus: Corpus) -> None:
    srv = standin(small_corpus)
    s = session(srv)
    full = small_corpus.read("demo-large-1", "video.mp4")
    size = len(full)
    url = "https://archive.org/download/demo-large-1/video.mp4"
    cases = {
        "bytes=100-199": (100, 200),
        f"bytes={size - 10}-": (size - 10, size),
        "bytes=-5": (size - 5, size),
        "bytes=0-99999999999": (0, size),
    }
    for header, (start, end) in cases.items():
        r = s.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == full[start:end]
        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert r.url.startswith("https://ia80") and "/items/demo-large-1/video.mp4" in r.url
    keep_alive = srv.counters()  # 4 redirects + 4 bodies over one tunnel per host
    assert keep_alive["requests"] == 8 and keep_alive["tunnels_opened"] == 2
    r = s.get(url, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    r = s.get(url, headers={"Range": "bytes=0-1,5-6"})  # multi-range: ignored, whole body
    assert r.status_code == 200 and len(r.content) == size
    r = s.head(url, allow_redirects=True)
    item = small_corpus["demo-large-1"]
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == str(size)
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Last-Modified"] == formatdate(item.mtime("video.mp4"), usegmt=True)
    redirect = s.get(url, allow_redirects=False)
    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith(f"https://{item.servers[0]}/")
    assert s.get("https://archive.org/download/demo-large-1/nope.bin").status_code == 404
    assert s.get("https://archive.org/download/demo-dark/secret.txt").status_code == 403
    data_node = f"https://{item.servers[0]}/{item.dir_number}/items/demo-dark/secret.txt"
    assert s.get(data_node).status_code == 403
    assert s.get("https://archive.org/metadata/no-such-item").json() == {}


def test_scrape_and_advancedsearch_edges(standin: Any, small_corpus: Corpus) -> None:
    srv = standin(small_corpus)
    s = session(srv)
    scrape = "https://archive.org/services/search/v1/scrape"
    r = s.post(scrape, params={"q": "collection:demo", "total_only": "true", "count": 100})
    assert r.json() == {"total": len(small_corpus)}
    r = s.post(scrape, params={"q": "collection:demo", "count": 50})
    assert r.status_code == 400 and "count" in r.json()["error"]
    r = s.post(scrape, params={"q": "collection:demo", "count": 100, "cursor": "garbage"})
    assert r.status_code == 400 and "error" in r.json()
    r = s.post(scrape, params={"q": "just words", "count": 100})
    assert r.status_code == 400 and "error" in r.json()
    r = s.post(scrape, params={"q": "identifier:demo-large-1", "fields": "item_size,title"})
    page = r.json()
    assert page["count"] == page["total"] == 1 and "cursor" not in page
    item = small_corpus["demo-large-1"]
    assert page["items"] == [
        {
            "identifier": "demo-large-1",
            "item_size": small_corpus.item_size(item),
            "title": "Stand-in item demo-large-1",
        }
    ]
    r = s.get(
        "https://archive.org/advancedsearch.php",
        params={
            "q": "collection:demo",
            "fl[]": "identifier",
            "rows": 10,
            "page": 2,
            "output": "json",
        },
    )
    response = r.json()["response"]
    assert response["numFound"] == len(small_corpus) and response["start"] == 10
    assert [d["identifier"] for d in response["docs"]] == small_corpus.search("collection:demo")[
        10:20
    ]


def test_body_faults_are_observable(standin: Any, small_corpus: Corpus) -> None:
    faults = ["short", "reset", "flip", "slow_first_byte"]
    plan = FaultPlan(first_byte_delay=1.0).fail_first(
        "demo-large-1/video.mp4", faults, kinds=["data"]
    )
    srv = standin(small_corpus, plan)
    s = session(srv)
    url = "https://archive.org/download/demo-large-1/video.mp4"
    full = small_corpus.read("demo-large-1", "video.mp4")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        s.get(url)  # short: Content-Length promised, half delivered
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        s.get(url)  # reset mid-body
    flipped = s.get(url).content
    assert len(flipped) == len(full) and md5_bytes(flipped) != md5_bytes(full)
    diff = [i for i in range(0, len(full), 65536) if flipped[i : i + 65536] != full[i : i + 65536]]
    assert len(diff) == 1
    block = diff[0]
    at = next(i for i in range(block, block + 65536) if flipped[i] != full[i])
    assert flipped[at] ^ full[at] == 0xFF
    assert flipped[:at] == full[:at] and flipped[at + 1 :] == full[at + 1 :]
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.get(url, timeout=0.5)  # slow first byte
    assert s.get(url).content == full
    assert srv.counters()["faults_injected"] == {
        "short": 1,
        "reset": 1,
        "flip": 1,
        "slow_first_byte": 1,
    }


def test_reset_is_a_real_rst(standin: Any, small_corpus: Corpus) -> None:
    plan = FaultPlan().fail_first("demo-large-1/video.mp4", ["reset"], kinds=["data"])
    srv = standin(small_corpus, plan)
    item = small_corpus["demo-large-1"]
    raw = socket.create_connection(("127.0.0.1", srv.port))
    path = f"/{item.dir_number}/items/demo-large-1/video.mp4"
    raw.sendall(f"GET http://{item.servers[0]}{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = 0
    with pytest.raises(ConnectionResetError):
        while chunk := raw.recv(1 << 20):
            received += len(chunk)
    raw.close()
    assert received < 8 * MIB


def test_throttle_metadata_delay_and_retry_after_header(standin: Any, small_corpus: Corpus) -> None:
    plan = FaultPlan(bandwidth=MIB, metadata_delay=1.0, retry_after=7)
    plan.fail_first("demo-item-002", ["503"], kinds=["metadata"])
    small_corpus.add_item("half-a-mib", [("half.bin", MIB // 2)])
    srv = standin(small_corpus, plan)
    s = session(srv)
    started = time.monotonic()
    r = s.get("https://archive.org/download/half-a-mib/half.bin")
    elapsed = time.monotonic() - started
    assert r.content == small_corpus.read("half-a-mib", "half.bin")
    assert 0.4 <= elapsed < 3
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.get("https://archive.org/metadata/demo-item-001", timeout=0.5)
    r = s.get("https://archive.org/metadata/demo-item-002")
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    faults = srv.counters()["faults_injected"]
    assert faults["metadata_delay"] == 2 and faults["503"] == 1


def test_counters_and_control_endpoint(standin: Any, small_corpus: Corpus) -> None:
    srv = standin(small_corpus, FaultPlan(metadata_delay=0.6))
    results: list[requests.Response] = []

    def fetch(i: int) -> None:
        results.append(session(srv).get(f"https://archive.org/metadata/demo-item-{i:03d}"))

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5  # a server thread may still be returning
    while srv.counters()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    counters = srv.counters()
    assert counters["peak_concurrency"] == 6 and counters["in_flight"] == 0
    assert counters["requests"] == counters["requests_by_kind"]["metadata"] == 6
    assert counters["tunnels_opened"] == counters["connections_opened"] == 6
    assert counters["status"] == {"200": 6}
    assert counters["bytes_sent"] == sum(len(r.content) for r in results)
    control = requests.Session()
    control.trust_env = False
    assert control.get(f"{srv.control_url}/counters").json() == counters  # not counted itself
    assert control.post(f"{srv.control_url}/counters/reset").json()["requests"] == 0
    assert srv.counters()["requests"] == 0

    spec = {"fail_first": [{"target": "demo-item-003", "faults": ["502"]}]}
    assert control.post(f"{srv.control_url}/faults", json=spec).json()["fail_first"][0][
        "faults"
    ] == ["502"]
    s = session(srv)
    assert s.get("https://archive.org/metadata/demo-item-003").status_code == 502
    assert s.get("https://archive.org/metadata/demo-item-003").status_code == 200
    control.post(f"{srv.control_url}/faults", json="seed=1,500=1.0,kinds=data")
    assert srv.faults.to_dict()["rates"] == {"500": 1.0}
    assert control.post(f"{srv.control_url}/faults", json={"rates": {"boom": 1}}).status_code == 400
    assert srv.counters()["faults_injected"] == {"502": 1}


def test_refuses_everything_but_archive_org(standin: Any, small_corpus: Corpus) -> None:
    srv = standin(small_corpus)
    assert srv.proxy_url.startswith("http://127.0.0.1:")
    s = session(srv)
    for url in ["https://example.com/", "https://evilarchive.org/", "https://archive.org:8443/"]:
        with pytest.raises(requests.exceptions.ProxyError):
            s.get(url)
    r = s.get("http://example.com/metadata/demo-item-001")
    assert r.status_code == 403 and "archive.org" in r.json()["error"]
    assert s.get("http://archive.org:8080/metadata/demo-item-001").status_code == 403
    direct = requests.Session()
    direct.trust_env = False
    assert direct.get(f"{srv.proxy_url}/metadata/demo-item-001").status_code == 404
    counters = srv.counters()
    assert counters["requests_by_kind"]["refused"] == 5
    assert counters["requests"] == 5


def test_malformed_requests_and_foreign_hosts_inside_a_tunnel(
    standin: Any, small_corpus: Corpus
) -> None:
    srv = standin(small_corpus)
    with socket.create_connection(("127.0.0.1", srv.port)) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        assert raw.recv(65536).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", srv.port)) as raw:
        raw.sendall(b"CONNECT archive.org:443 HTTP/1.1\r\nHost: archive.org:443\r\n\r\n")
        assert raw.recv(65536) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        ctx = ssl.create_default_context(cafile=srv.ca_bundle)
        with ctx.wrap_socket(raw, server_hostname="archive.org") as tls:
            tls.sendall(b"GET /metadata/demo-item-001 HTTP/1.1\r\nHost: example.com\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 403 ")
    assert srv.counters()["requests_by_kind"]["refused"] == 1


def test_hostile_names_are_listed_and_served_verbatim(standin: Any) -> None:
    corpus = Corpus()
    names = ["../x", "/etc/passwd", "nul\x00byte.txt", "L" * 300 + ".bin", "sub dir/ünï cødé.txt"]
    corpus.add_item("hostile item ü", [(n, 100 + i) for i, n in enumerate(names)], collection="h")
    srv = standin(corpus)
    s = session(srv)
    ident = quote("hostile item ü", safe="")
    doc = s.get(f"https://archive.org/metadata/{ident}").json()
    assert [f["name"] for f in doc["files"]][: len(names)] == names
    for name in names:
        r = s.get(f"https://archive.org/download/{ident}/{quote(name, safe='')}")
        assert r.status_code == 200, name
        assert r.content == corpus.read("hostile item ü", name)
    assert srv.counters()["status"] == {"200": 1 + len(names), "302": len(names)}


def test_command_line_mode(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standin",
            "--preset",
            "demo",
            "--scale",
            "0.2",
            "--faults",
            "fail:demo-item-001=503",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) >= {"proxy", "ca_bundle", "control", "env"}
        s = requests.Session()
        s.trust_env = False
        s.proxies = {"https": info["proxy"]}
        s.verify = info["ca_bundle"]
        assert s.get("https://archive.org/metadata/demo-item-001").status_code == 503
        assert s.get("https://archive.org/metadata/demo-item-001").json()["metadata"]["identifier"]
        control = requests.Session()
        control.trust_env = False
        counters = control.get(f"{info['control']}/counters").json()
        assert counters["faults_injected"] == {"503": 1}
        assert counters["requests_by_kind"]["metadata"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
