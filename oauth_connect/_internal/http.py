"""The one place oauth_connect builds HTTP sessions: our User-Agent, a default timeout on every
request, and connections the deadline watchdog (``_internal.deadline``) can cut, so no call to a
provider can hang a worker."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .. import __version__, conf
from .deadline import watch

if TYPE_CHECKING:
    from requests.sessions import _Settings

# requests' own rule for a per-call setting over the session's (untyped in its stubs).
_merge_setting = cast(Callable[[Any, Any], Any], merge_setting)

USER_AGENT = f"oauth-connect/{__version__}"
#: How many origins' environment settings one session remembers (a shared session may talk to
#: every tenant's Custobar host).
MAX_ORIGINS = 256


class _Watched:
    """Registers its sockets with the thread's current deadline: the plain one as soon as it
    is open (for connecting), the one it ends up using once connected (under TLS another
    object, which took the plain one's descriptor over), and that one again on each request
    (a kept-alive connection opens nothing). The socket objects themselves: http.client
    forgets ``self.sock`` as soon as an answer says the connection will close, while the body
    is still being read from it."""

    sock: Any

    def _new_conn(self) -> Any:
        sock = super()._new_conn()  # type: ignore[misc]
        watch(sock)
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.sock is not None:
            watch(self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


class WatchedAdapter(HTTPAdapter):
    """``requests``' adapter, with connections a deadline can cut (proxied ones too)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager


def ends_at_close(response: requests.Response) -> bool:
    """Whether the answer's body had no length and no chunks, so that only the connection's
    close ended it: a deadline's cut then looks like the end, and the body may be a fragment.
    (A cut through a length or chunk-framed body fails loudly instead.)"""
    headers = response.headers
    return (
        "Content-Length" not in headers
        and "chunked" not in headers.get("Transfer-Encoding", "").lower()
    )


class TimeoutSession(requests.Session):
    """A ``requests.Session`` whose requests time out after ``timeout`` seconds unless the caller
    passes its own ``timeout``, over connections a deadline can cut."""

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__()
        self.timeout = conf.http_timeout() if timeout is None else timeout
        self.headers["User-Agent"] = USER_AGENT
        self._environments: dict[str, tuple[dict[str, str], str | None]] = {}
        adapter = WatchedAdapter()
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        """As requests does, from the environment read once per session and origin: requests
        reads the proxy variables (``HTTPS_PROXY``, ``NO_PROXY``...) and the CA bundle on every
        call, scanning the whole environment twice (about 0.45 ms of a token call's CPU)."""
        if not self.trust_env or (proxies and "no_proxy" in proxies):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        environ_proxies, ca_bundle = self._environment(url)
        proxies = {**environ_proxies, **(proxies or {})}
        if verify is True or verify is None:
            verify = ca_bundle or verify
        return {
            "proxies": _merge_setting(proxies, self.proxies),
            "stream": _merge_setting(stream, self.stream),
            "verify": _merge_setting(verify, self.verify),
            "cert": _merge_setting(cert, self.cert),
        }

    def _environment(self, url: str) -> tuple[dict[str, str], str | None]:
        """The environment's proxies for ``url``'s origin, and its CA bundle, read once."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        cached = self._environments.get(origin)
        if cached is None:
            if len(self._environments) >= MAX_ORIGINS:  # one shared session meets many hosts
                self._environments.clear()
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            cached = self._environments[origin] = (get_environ_proxies(url), bundle)
        return cached


_local = threading.local()
# A child process must not share the parent's kept-alive connections: both would read from
# one socket. (The forking thread is the child's only thread, so its locals are all there is.)
os.register_at_fork(after_in_child=lambda: _local.__dict__.clear())


def shared_session() -> TimeoutSession:
    """A per-thread session for token-endpoint calls, so bulk refreshes reuse TCP connections.
    Callers pass ``timeout=`` explicitly, so the setting in force at call time applies."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = TimeoutSession()
        # One thread serves many tenants: a cookie set for one must never ride along for the next.
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session
