"""What the stand-in has seen and done, for tests and benchmarks to assert on.

Only archive.org traffic is counted; requests to the control endpoint
(``/_standin/...``) are not, so reading the counters does not change them.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

KINDS = ("search", "metadata", "redirect", "data", "other", "refused")


class Counters:
    """Thread-safe tallies; :meth:`snapshot` returns plain JSON-ready data.

    Keys of the snapshot:

    - ``requests``: archive.org requests answered (refused ones included);
    - ``requests_by_kind``: the same split into ``search``, ``metadata``,
      ``redirect`` (``/download/...``), ``data`` (data-node bytes),
      ``other`` (unknown paths) and ``refused`` (hosts outside archive.org);
    - ``bytes_sent``: response body bytes actually written;
    - ``connections_opened``: client connections that made a proxy request;
    - ``tunnels_opened``: accepted ``CONNECT`` tunnels;
    - ``in_flight`` and ``peak_concurrency``: requests being answered now,
      and the most at any one time;
    - ``status``: answers by HTTP status, as strings (``{"200": 12}``);
    - ``faults_injected``: faults by name (``{"503": 2, "reset": 1}``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero every tally; requests in flight stay in flight."""
        with self._lock:
            self._requests: Counter[str] = Counter({kind: 0 for kind in KINDS})
            self._status: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._bytes = 0
            self._connections = 0
            self._tunnels = 0
            self._peak = self._in_flight

    def begin(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def answered(self, kind: str, status: int) -> None:
        with self._lock:
            self._requests[kind] += 1
            self._status[str(status)] += 1

    def fault(self, name: str) -> None:
        with self._lock:
            self._faults[name] += 1

    def sent(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes

    def connection(self) -> None:
        with self._lock:
            self._connections += 1

    def tunnel(self) -> None:
        with self._lock:
            self._tunnels += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self._requests.values()),
                "requests_by_kind": dict(self._requests),
                "bytes_sent": self._bytes,
                "connections_opened": self._connections,
                "tunnels_opened": self._tunnels,
                "in_flight": self._in_flight,
                "peak_concurrency": self._peak,
                "status": dict(self._status),
                "faults_injected": dict(self._faults),
            }
