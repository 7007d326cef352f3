"""The shared session and the requests prepared ahead under a URL prefix, over a real socket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import requests
from iabulk.disk import DiskPool
from iabulk.session import CountingCookieJar, cookie_state, session_factory
from iabulk.workers.download import DownloadWorker

from tests.local_http import QuietHandler, serving


class _Recorder(QuietHandler):
    cookies_seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).cookies_seen.append(self.headers.get("Cookie"))
        sets = (("Set-Cookie", "fresh=1; Path=/"),) if self.path.endswith("/set") else ()
        self.reply(200, b"ok", sets)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    _Recorder.cookies_seen = []
    with serving(_Recorder, monkeypatch) as url:
        yield url


def test_a_cookie_set_by_a_response_reaches_the_next_prepared_request(
    server: str, tmp_path: Path
) -> None:
    jar = requests.cookies.RequestsCookieJar()
    jar.set("logged-in-user", "someone", domain="127.0.0.1", path="/")
    ia = SimpleNamespace(headers={"User-Agent": "test"}, cookies=jar)
    worker = DownloadWorker(session_factory(ia, 2), server, DiskPool([str(tmp_path)], check=False))
    cancel = threading.Event()
    prefix = worker._prefix(f"{server}/d/")
    for name in ("a", "set", "b"):
        worker._get_under(prefix, name, {}, cancel).close()
    first, setting, after = _Recorder.cookies_seen
    assert first == setting == "logged-in-user=someone"
    assert after is not None and "fresh=1" in after and "logged-in-user=someone" in after
    worker.close()


def test_the_counting_jar_counts_sets_and_clears() -> None:
    jar = CountingCookieJar()
    before = cookie_state(jar)
    jar.set("a", "1", domain="example.org", path="/")
    jar.set("a", "2", domain="example.org", path="/")  # replaced in place: still a change
    assert cookie_state(jar) == before + 2
    jar.clear()
    assert cookie_state(jar) == before + 3 and len(jar) == 0


def test_a_plain_jar_is_judged_by_its_size() -> None:
    jar = requests.cookies.RequestsCookieJar()
    assert cookie_state(jar) == 0
    jar.set("a", "1")
    assert cookie_state(jar) == 1
