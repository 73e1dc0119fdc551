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

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from .. import __version__

USER_AGENT = f"oauth-connect/{__version__}"
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


class _Shared:
    __slots__ = ("client", "keeper")

    def __init__(self, client: aiohttp.ClientSession, keeper: AsyncIterator[None]) -> None:
        self.client = client
        self.keeper = keeper


_clients: dict[asyncio.AbstractEventLoop, _Shared] = {}
_clients_guard = threading.Lock()  # several loops may run in several threads


async def shared_client() -> aiohttp.ClientSession:
    """This event loop's client, made on first use."""
    loop = asyncio.get_running_loop()
    shared = _clients.get(loop)
    if shared is not None and not shared.client.closed:
        return shared.client
    client = aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT},
        # One client serves every tenant: a cookie one tenant's API set must never ride along
        # with the next tenant's call.
        cookie_jar=aiohttp.DummyCookieJar(),
        # As requests does: HTTPS_PROXY, NO_PROXY and the like apply.
        trust_env=True,
        response_class=ApiResponse,
    )
    keeper = _keep(loop, client)
    await keeper.__anext__()  # started: the loop now finalises it at shutdown
    with _clients_guard:
        for other in [other for other in _clients if other.is_closed()]:
            # A loop closed without shutting its generators down: nothing can close the client
            # any more, but it needn't stay in memory.
            del _clients[other]
        _clients[loop] = _Shared(client, keeper)
    return client


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
