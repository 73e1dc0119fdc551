"""The one place oauth_connect builds HTTP sessions: our User-Agent, a default timeout on every
request, and connections the deadline watchdog (``_internal.deadline``) can cut, so no call to a
provider can hang a worker."""

from __future__ import annotations

import threading
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .. import __version__, conf
from .deadline import watch

USER_AGENT = f"oauth-connect/{__version__}"


class _Watched:
    """Registers each socket it opens, and itself on each request it sends (a kept-alive
    connection opens no socket), with the thread's current deadline."""

    def _new_conn(self) -> Any:
        sock = super()._new_conn()  # type: ignore[misc]
        watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch(self)
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
        adapter = WatchedAdapter()
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)


_local = threading.local()


def shared_session() -> TimeoutSession:
    """A per-thread session for token-endpoint calls, so bulk refreshes reuse TCP connections.
    Callers pass ``timeout=`` explicitly, so the setting in force at call time applies."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = TimeoutSession()
        # One thread serves many tenants: a cookie set for one must never ride along for the next.
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session
