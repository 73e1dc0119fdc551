"""A tenant's API on 127.0.0.1, served by aiohttp on a thread of its own, for the tests of
``connection.asession()``: it accepts the tokens a test lists, and records every call.

    from tests.async_api import fake_api_fixture  # noqa: F401 - the fixture

    def test_something(fake_api: FakeApi) -> None:
        fake_api.accepted = {"access-token-1"}
        ...call fake_api.url("accounts/me/") through an async session...
        assert fake_api.tokens_seen() == ["Bearer access-token-1"]

Routes under ``/api/v1/``: any path answers ``{"path": ...}`` to an accepted token and 401
otherwise; ``redirect/?to=URL[&status=N]`` redirects there (302, or N); ``loop/`` redirects to
itself; ``drip/`` sends its body a byte every ``drip_pause`` seconds; ``status/N`` answers
HTTP N. ``FakeApi(tls=context)`` serves HTTPS.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

#: Seconds any wait on the server's thread may take.
WAIT = 30.0


class FakeApi:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.accepted: set[str] = {"access-token-1"}
        self.refused_status = 401
        self.drip_pause = 0.2
        self.calls: list[tuple[str, str, str | None]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/api/v1/{path}"

    def tokens_seen(self) -> list[str | None]:
        return [authorization for _, _, authorization in self.calls]

    # Serving ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(WAIT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/v1/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        tail = request.match_info["tail"]
        await request.read()
        self.calls.append((request.method, "/" + tail, authorization))
        if tail.startswith("status/"):
            return web.json_response({"status": "set"}, status=int(tail.split("/")[1]))
        token = (authorization or "").removeprefix("Bearer ")
        if token not in self.accepted:
            return web.json_response({"error": "token expired"}, status=self.refused_status)
        if tail == "redirect/":
            status = int(request.query.get("status", "302"))
            return web.Response(status=status, headers={"Location": request.query["to"]})
        if tail == "loop/":
            raise web.HTTPFound("/api/v1/loop/")
        if tail == "drip/":
            response = web.StreamResponse(headers={"Content-Length": "50"})
            await response.prepare(request)
            for _ in range(50):
                await response.write(b".")
                await asyncio.sleep(self.drip_pause)
            return response
        return web.json_response({"path": "/" + tail, "method": request.method})


@pytest.fixture(name="fake_api")
def fake_api_fixture() -> Iterator[FakeApi]:
    api = FakeApi()
    api.start()
    try:
        yield api
    finally:
        api.stop()
