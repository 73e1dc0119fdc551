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
import functools
import os
import ssl
import threading
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from requests.utils import get_environ_proxies, select_proxy
from yarl import URL

from .http import MAX_ORIGINS, USER_AGENT

REDACTED = "[redacted]"
#: Connections an event loop's client opens to one API host at most; more calls wait.
CONNECTIONS_PER_HOST = 100


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
    """An event loop's aiohttp client, and the environment's settings for each origin."""

    __slots__ = ("client", "keeper", "_environments")

    def __init__(self, client: aiohttp.ClientSession, keeper: AsyncGenerator[None, None]) -> None:
        self.client = client
        self.keeper = keeper
        self._environments: dict[str, dict[str, Any]] = {}

    def environment_arguments(self, origin: str) -> dict[str, Any]:
        """``proxy=``, ``proxy_auth=`` and ``ssl=`` for requests to ``origin``, from the
        environment read the way requests reads it (``HTTPS_PROXY``, ``ALL_PROXY``,
        ``NO_PROXY`` with its address ranges, ``REQUESTS_CA_BUNDLE``...), once per origin.
        Not aiohttp's ``trust_env``: it reads the proxy variables, and ``~/.netrc``, on a
        thread at every request (two hand-offs that tripled a call's CPU in
        benchmarks/bench_asession.py; and a netrc entry for the API's host made every request
        fail, its credentials clashing with our Authorization header), and it knows neither
        ``ALL_PROXY``, address ranges in ``NO_PROXY``, nor requests' CA bundle variables."""
        arguments = self._environments.get(origin)
        if arguments is None:
            if len(self._environments) >= MAX_ORIGINS:  # one client meets every tenant's hosts
                self._environments.clear()
            arguments = _environment_arguments(origin)
            self._environments[origin] = arguments
        return arguments


def _environment_arguments(origin: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    proxy = select_proxy(origin, get_environ_proxies(origin))
    if proxy:
        url = URL(proxy if "://" in proxy else "http://" + proxy)
        arguments["proxy"] = url.with_user(None)
        if url.user is not None:
            arguments["proxy_auth"] = aiohttp.BasicAuth(url.user, url.password or "")
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and origin.startswith("https:"):
        arguments["ssl"] = _trusting(bundle)
    return arguments


@functools.lru_cache(maxsize=8)
def _trusting(bundle: str) -> ssl.SSLContext:
    """A TLS context that trusts the certificates in ``bundle`` (a file or a directory)."""
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


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
        # The environment is read once per origin instead: see environment_arguments().
        trust_env=False,
        # A cap per API host (scheme, host and port), none in all: one slow API must not
        # queue the calls to every other, and a stampede of one tenant's requests must not
        # open hundreds of connections to its API at once (aiohttp's default is 100 in all).
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=CONNECTIONS_PER_HOST),
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
) -> AsyncGenerator[None, None]:
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
        await shared.keeper.aclose()  # closes the client, and the loop has nothing to finalise
