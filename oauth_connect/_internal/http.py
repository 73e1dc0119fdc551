"""The one place oauth_connect builds HTTP sessions: our User-Agent and a default timeout on
every request, so no call to a provider can hang a worker."""

from __future__ import annotations

import threading
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests

from .. import __version__, conf

USER_AGENT = f"oauth-connect/{__version__}"


class TimeoutSession(requests.Session):
    """A ``requests.Session`` whose requests time out after ``timeout`` seconds unless the caller
    passes its own ``timeout``."""

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__()
        self.timeout = conf.http_timeout() if timeout is None else timeout
        self.headers["User-Agent"] = USER_AGENT

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
