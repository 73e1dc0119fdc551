"""The aiohttp client ``connection.asession()`` sends through: one per event loop, shared by
every connection, so calls to an API reuse kept-alive connections (no TCP and TLS handshake
per view), closed when its loop shuts down.

Why a keeper generator: Django's ASGI handler has no lifespan hooks to close a client at
shutdown, but ``asyncio.run()``, uvicorn and asgiref all finish a loop with
``loop.shutdown_asyncgens()``, which closes every started async generator. The keeper is one,
and closing it closes the client, so no "Unclosed client session" is left for the garbage
collector to report.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .http import MAX_ORIGINS, USER_AGENT

REDACTED = "[redacted]"


class ApiResponse(aiohttp.ClientResponse):
    """aiohttp's response, but ``request_info`` (which ``raise_for_status()`` and ``json()``
    put in their errors, whose ``repr()`` shows it) never holds the token we sent."""

    @property
    def request_info(self) -> aiohttp.RequestInfo:
        sent = super().request_info
        if "Authorization" not in sent.headers:
            return sent
        headers = CIMultiDict(sent.headers)
        headers["Authorization"] = REDACTED
        return aiohttp.RequestInfo(sent.url, sent.method, CIMultiDictProxy(headers), sent.real_url)


class SharedClient:
    """An event loop's aiohttp client, and the environment's proxy for each origin it calls."""

    __slots__ = ("client", "keeper", "_proxies")

    def __init__(self, client: aiohttp.ClientSession, keeper: AsyncIterator[None]) -> None:
        self.client = client
        self.keeper = keeper
        self._proxies: dict[str, dict[str, Any]] = {}

    def proxy_arguments(self, origin: str) -> dict[str, Any]:
        """``proxy=`` (and ``proxy_auth=``) for requests to ``origin``, as ``HTTPS_PROXY``,
        ``NO_PROXY`` and the like say; read once per origin. aiohttp's ``trust_env`` would
        read them, and ``~/.netrc``, on a thread at every request: two thread hand-offs that
        tripled a call's CPU (benchmarks/bench_asession.py), and a netrc entry for the API's
        host made every request fail (its credentials clash with our Authorization header)."""
        arguments = self._proxies.get(origin)
        if arguments is None:
            if len(self._proxies) >= MAX_ORIGINS:  # one client meets every tenant's hosts
                self._proxies.clear()
            try:
                proxy, proxy_auth = get_env_proxy_for_url(URL(origin))
            except LookupError:
                arguments = {}
            else:
                arguments = {"proxy": proxy, "proxy_auth": proxy_auth}
            self._proxies[origin] = arguments
        return arguments


_clients: dict[asyncio.AbstractEventLoop, SharedClient] = {}
_clients_guard = threading.Lock()  # several loops may run in several threads


async def shared_client() -> SharedClient:
    """This event loop's client, made on first use."""
    loop = asyncio.get_running_loop()
    shared = _clients.get(loop)
    if shared is not None and not shared.client.closed:
        return shared
    client = aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT},
        # One client serves every tenant: a cookie one tenant's API set must never ride along
        # with the next tenant's call.
        cookie_jar=aiohttp.DummyCookieJar(),
        # The environment's proxies are read once per origin instead: see proxy_arguments().
        trust_env=False,
        response_class=ApiResponse,
    )
    keeper = _keep(loop, client)
    await keeper.__anext__()  # started: the loop now finalises it at shutdown
    with _clients_guard:
        for other in [other for other in _clients if other.is_closed()]:
            # A loop closed without shutting its generators down: nothing can close the client
            # any more, but it needn't stay in memory.
            del _clients[other]
        shared = _clients[loop] = SharedClient(client, keeper)
    return shared


async def _keep(
    loop: asyncio.AbstractEventLoop, client: aiohttp.ClientSession
) -> AsyncIterator[None]:
    try:
        yield  # and stays here: only closing the generator resumes it
    finally:
        with _clients_guard:
            shared = _clients.get(loop)
            if shared is not None and shared.client is client:
                del _clients[loop]
        await client.close()


async def close_shared_client() -> None:
    """Close this event loop's client now (a later ``asession()`` makes a new one). For code
    that runs its own loop and closes it without ``asyncio.run()``."""
    with _clients_guard:
        shared = _clients.pop(asyncio.get_running_loop(), None)
    if shared is not None:
        await shared.client.close()
