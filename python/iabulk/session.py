"""The one HTTP session every transfer thread shares, built from the ia configuration.

``internetarchive`` reads the user's configuration (credentials, cookies,
protocol, host, User-Agent); iabulk keeps all of it, and every request still
goes through ``requests`` (proxies from the environment, ``NO_PROXY``, CA
bundles, ``.netrc``). What changes is what ``requests`` recomputes for every
request although the answer cannot change during a run: the proxy
environment and ``.netrc`` per host, and the CA bundle per connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import weakref
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.auth import _basic_auth_str
from requests.cookies import RequestsCookieJar
from requests.sessions import merge_setting
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_auth_from_url,
    get_environ_proxies,
    get_netrc_auth,
)
from urllib3.util.ssl_ import create_urllib3_context

from iabulk import __version__
from iabulk.errors import UsageError

__all__ = [
    "SessionAdapter",
    "CountingCookieJar",
    "EnvCachedSession",
    "cookie_state",
    "ia_session",
    "session_factory",
]

_CACHE_LIMIT = 4096
"""Hosts remembered per cache; a run that meets more starts the cache afresh."""


def ia_session(config_file: str | None, *, library_retries: bool = False) -> Any:
    """The ``internetarchive`` session for a config file (or the default search path).

    Transfers retry by themselves, so the library's own HTTP retries are off
    unless ``library_retries`` (the search pages rely on them).
    """
    from internetarchive import get_session

    if config_file and not os.path.isfile(config_file):
        raise UsageError(f"config file not found: {config_file}")
    adapter = None if library_retries else {"max_retries": 0}
    try:
        return get_session(config_file=config_file, http_adapter_kwargs=adapter)
    except Exception as exc:
        why = " ".join(str(exc).split())  # configparser's messages run over several lines
        raise UsageError(f"cannot read the ia configuration: {type(exc).__name__}: {why}") from None


def session_factory(ia: Any, workers: int = 4) -> Any:
    """Makes the one ``requests.Session`` every transfer thread shares.

    Its pools keep ``workers`` connections per host (one item's files, or
    ``-w`` threads on one wide item, all hit one data node) for many hosts
    (every item in flight has its own data node), so connections are reused
    across items, files and redirects instead of opened per file.
    """
    agent = f"iabulk/{__version__} {ia.headers.get('User-Agent', '')}".strip()
    cookies = ia.cookies

    def make() -> requests.Session:
        session = EnvCachedSession()
        session.headers["User-Agent"] = agent
        session.cookies = CountingCookieJar()
        session.cookies.update(cookies)
        adapter = SessionAdapter(
            pool_connections=4 * workers + 8, pool_maxsize=workers + 2, max_retries=0
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    return make


class CountingCookieJar(RequestsCookieJar):
    """A cookie jar that counts its changes.

    Requests prepared ahead of time (see the download worker) carry the
    Cookie header of the moment they were prepared; the count tells them
    when a response has set or cleared a cookie since.
    """

    changes = 0

    def set_cookie(self, cookie: Any, *args: Any, **kwargs: Any) -> None:
        self.changes += 1
        super().set_cookie(cookie, *args, **kwargs)

    def clear(
        self, domain: str | None = None, path: str | None = None, name: str | None = None
    ) -> None:
        self.changes += 1
        super().clear(domain, path, name)


def cookie_state(jar: Any) -> int:
    """A number that changes whenever ``jar`` does: its change count if it keeps
    one, else (a plain jar) its size, which misses a cookie replaced in place."""
    changes = getattr(jar, "changes", None)
    return changes if isinstance(changes, int) else len(jar)


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return scheme + "://" + rest.split("/", 1)[0]


class EnvCachedSession(requests.Session):
    """``requests.Session`` that reads the proxy environment once per host.

    ``requests`` looks up ``*_PROXY``/``NO_PROXY`` for every request and again
    for every redirect, and each look-up walks all of ``os.environ``: with a
    few dozen variables that was ~40% of iabulk's CPU on small files. The
    answer depends only on the host (and the environment, which iabulk never
    changes while it runs), so it is cached per host, and so is the
    ``.netrc`` look-up made on every redirect; everything else, including
    NO_PROXY matching, Proxy-Authorization and stripping credentials on a
    redirect to another host, is what ``requests`` does.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environ: dict[tuple[str, str | None], dict[str, str]] = {}
        self._netrc: dict[str, tuple[str, str] | None] = {}
        # Without NO_PROXY (in any spelling) the answer is the same for every host.
        self._per_host = "no" in _proxy_environment()

    def _environ_proxies(self, url: str, no_proxy: str | None) -> dict[str, str]:
        key = (_origin(url), no_proxy) if self._per_host or no_proxy else ("", None)
        found = self._environ.get(key)
        if found is None:
            if len(self._environ) > _CACHE_LIMIT:
                self._environ.clear()
            found = self._environ[key] = get_environ_proxies(url, no_proxy=no_proxy)
        return found

    def merge_environment_settings(  # as requests' own, with the cached look-up
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        if self.trust_env:
            no_proxy = proxies.get("no_proxy") if proxies is not None else None
            if proxies is not None:
                for k, v in self._environ_proxies(url, no_proxy).items():
                    proxies.setdefault(k, v)
            if verify is True or verify is None:
                verify = (
                    os.environ.get("REQUESTS_CA_BUNDLE")
                    or os.environ.get("CURL_CA_BUNDLE")
                    or verify
                )
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }

    def rebuild_proxies(self, prepared_request: Any, proxies: Any) -> dict[str, str]:
        headers = prepared_request.headers
        url = prepared_request.url
        scheme = url.partition("://")[0].lower()
        proxies = proxies if proxies is not None else {}
        new_proxies = dict(proxies)
        if self.trust_env:
            environ = self._environ_proxies(url, proxies.get("no_proxy"))
            proxy = environ.get(scheme, environ.get("all"))
            if proxy:
                new_proxies.setdefault(scheme, proxy)
        if "Proxy-Authorization" in headers:
            del headers["Proxy-Authorization"]
        try:
            username, password = get_auth_from_url(new_proxies[scheme])
        except KeyError:
            username, password = None, None
        if not scheme.startswith("https") and username and password:
            headers["Proxy-Authorization"] = _basic_auth_str(username, password)
        return new_proxies

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        # As requests' own, with the .netrc look-up (a file probe on every
        # redirect) cached per host like the proxies.
        headers = prepared_request.headers
        url = prepared_request.url
        if "Authorization" in headers and self.should_strip_auth(response.request.url, url):
            del headers["Authorization"]
        if not self.trust_env:
            return
        host = _origin(url)
        if host not in self._netrc:
            if len(self._netrc) > _CACHE_LIMIT:
                self._netrc.clear()
            self._netrc[host] = get_netrc_auth(url)
        new_auth = self._netrc[host]
        if new_auth is not None:
            prepared_request.prepare_auth(new_auth)


def _proxy_environment() -> dict[str, str]:
    from urllib.request import getproxies_environment

    return getproxies_environment()


class SessionAdapter(HTTPAdapter):
    """``HTTPAdapter`` that loads each CA bundle once, and can shut its connections.

    A stop (Ctrl-C) reaches a transfer between two reads; a request whose
    server has gone silent would hold it for the whole ``--timeout``.
    :meth:`abort_connections` shuts the sockets of every connection the
    adapter's pools made, so that such a request fails at once.

    ``urllib3`` builds a new ``SSLContext`` for every new connection and
    parses the whole CA bundle into it: ~18 ms of CPU for a 140-certificate
    bundle (certifi's, or the system's via ``REQUESTS_CA_BUNDLE``), paid once
    per item because every item lives on its own data node. Here the context
    for a bundle is built once (as ``urllib3`` builds it) and shared by the
    pools; verification is unchanged (``CERT_REQUIRED``, the same bundle,
    ``urllib3``'s host-name check). A bundle that cannot be loaded falls back
    to the default path, so errors are reported exactly as ``requests`` does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._contexts: dict[str, ssl.SSLContext | None] = {}
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._track(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        self._track(manager)
        return manager

    def _track(self, manager: Any) -> None:
        """Make ``manager``'s pools report each connection they make."""
        if getattr(manager, "_iabulk_tracked", False):
            return
        manager._iabulk_tracked = True
        adapter = self

        def tracking(base: Any) -> Any:
            class Tracked(base):  # type: ignore[misc]
                def _new_conn(self) -> Any:
                    conn = super()._new_conn()
                    with adapter._connections_lock:
                        adapter._connections.add(conn)
                    return conn

            return Tracked

        manager.pool_classes_by_scheme = {
            scheme: tracking(cls) for scheme, cls in manager.pool_classes_by_scheme.items()
        }

    def abort_connections(self) -> None:
        """Shut the socket of every open connection: a read blocked on one
        returns at once (an error for the request), from any thread."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            sock = getattr(conn, "sock", None)
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    # socket.socket's own shutdown: SSLSocket's would drop its TLS
                    # state under a thread that may be reading through it.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _context(self, verify: Any) -> ssl.SSLContext | None:
        path = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        if not isinstance(path, str):
            return None
        if path not in self._contexts:
            context: ssl.SSLContext | None = None
            if os.path.exists(path):
                try:
                    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
                    if os.path.isdir(path):
                        context.load_verify_locations(capath=path)
                    else:
                        context.load_verify_locations(cafile=path)
                except (OSError, ValueError):
                    context = None
            self._contexts[path] = context
        return self._contexts[path]

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params.get("scheme") == "https" and verify and cert is None:
            context = self._context(verify)
            if context is not None:
                pool_kwargs.pop("ca_certs", None)
                pool_kwargs.pop("ca_cert_dir", None)
                pool_kwargs["ssl_context"] = context
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        context = getattr(conn, "conn_kw", {}).get("ssl_context")
        if (
            context is not None
            and cert is None
            and any(context is c for c in self._contexts.values())
        ):
            # The bundle is already loaded into the pool's context: requests'
            # own checks (two file probes per request) would only find it again.
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = None
            conn.ca_cert_dir = None
            return
        super().cert_verify(conn, url, verify, cert)
