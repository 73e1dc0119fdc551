"""``connection.asession()``: an aiohttp client that authenticates as a connection, for async
views and other code on an event loop, with everything ``connection.session()`` promises.

While the token is valid a request costs what aiohttp's own costs, plus a float comparison: no
database query, no thread. A refresh (ahead of expiry, or after the API refused the token) runs
the same code as the sync session, on a thread through ``sync_to_async`` under the
connection's row lock; coroutines of one event loop that need it at once wait for one of them
(``flight.py``). Requests go through one aiohttp client per event loop (``_internal/
aio_client.py``), so they reuse kept-alive connections.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any
from urllib.parse import urljoin

import aiohttp
from asgiref.sync import sync_to_async
from multidict import CIMultiDict
from yarl import URL

from .. import conf
from .._internal.aio_client import SharedClient, close_shared_client, shared_client
from ..models import Connection
from .arequest import Call, PendingResponse, redirected, resendable
from .flight import Flight, copy_of, flight_for
from .session_tokens import DEFAULT, SessionTokens, origin_of, raise_unless_usable

__all__ = ["AsyncConnectionSession", "close_shared_client", "connection_asession"]

#: Statuses whose Location is followed (within the API's origin), as requests does.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 30  # requests' limit


def connection_asession(
    connection: Connection, *, timeout: float | None = None, deadline: float | None = DEFAULT
) -> OpeningSession:
    """An async session for ``connection``: ``await`` it, or use it in ``async with``. Raises at
    once, as ``connection.session()`` does, if the connection can't be used as it stands.

    ``timeout`` bounds connecting, and each wait for data where no deadline bounds the read
    (default ``HTTP_TIMEOUT``); ``deadline`` each whole request, body included (default
    ``HTTP_DEADLINE``; None: no deadline).
    ``await api.get(url, deadline=120)`` sets it for one request. With ``stream=True`` it
    covers the request up to the response's headers, and the body is yours to read."""
    raise_unless_usable(connection)
    return OpeningSession(connection, timeout, deadline)


class OpeningSession:
    """What ``connection.asession()`` returns: awaitable, and an async context manager. The
    session holds no resources of its own (the HTTP client is the event loop's), so leaving
    the ``async with`` block closes nothing; it is there for code that reads better so."""

    def __init__(self, connection: Connection, timeout: float | None, deadline: float | None):
        self._args = (connection, timeout, deadline)

    def __await__(self) -> Generator[Any, None, AsyncConnectionSession]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncConnectionSession:
        return await self._open()

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def _open(self) -> AsyncConnectionSession:
        connection, timeout, deadline = self._args
        shared = await shared_client()
        return AsyncConnectionSession(
            connection, shared, flight_for(connection), timeout=timeout, deadline=deadline
        )


class AsyncConnectionSession(SessionTokens):
    """``get``, ``post``, ``put``, ``patch``, ``delete``, ``head``, ``options`` and
    ``request`` take aiohttp's arguments (``params``, ``json``, ``data``, ``headers``...) and
    return an ``aiohttp.ClientResponse`` whose body is already read (``await response.json()``)
    within the deadline; ``async with api.get(...) as response`` works too.

    Relative URLs (with or without a leading slash) are appended to the provider's API URL;
    absolute ones must point at the API's own scheme, host and port. Redirects are followed
    within that origin only. A body that can't be sent twice (a file, a stream, ``FormData``)
    is not retried after a 401. One event loop per session, as with any aiohttp client."""

    def __init__(
        self,
        connection: Connection,
        shared: SharedClient,
        flight: Flight,
        *,
        timeout: float | None = None,
        deadline: float | None = DEFAULT,
    ) -> None:
        self.timeout = conf.http_timeout() if timeout is None else timeout
        self._client = shared.client
        self._flight = flight
        SessionTokens.__init__(self, connection, deadline)
        self._environment = shared.environment_arguments(self._origin)
        if flight.newer_than(connection):
            # Loaded before a refresh this loop made since: its tokens may be spent already.
            flight.copy_to(connection)
            self._use_stored_token()
        self._version = flight.version
        self._default_timeout = self._client_timeout(self.deadline)

    def __repr__(self) -> str:
        return f"<AsyncConnectionSession for {self.connection!r}>"

    def request(self, method: str, url: str | URL, **kwargs: Any) -> PendingResponse:
        return PendingResponse(self._request(method, url, **kwargs))

    def get(self, url: str | URL, **kwargs: Any) -> PendingResponse:
        return PendingResponse(self._request("GET", url, **kwargs))

    def options(self, url: str | URL, **kwargs: Any) -> PendingResponse:
        return PendingResponse(self._request("OPTIONS", url, **kwargs))

    def head(self, url: str | URL, **kwargs: Any) -> PendingResponse:
        return PendingResponse(self._request("HEAD", url, **kwargs))

    def post(self, url: str | URL, **kwargs: Any) -> PendingResponse:
        return PendingResponse(self._request("POST", url, **kwargs))

    def put(self, url: str | URL, **kwargs: Any) -> PendingResponse:
        return PendingResponse(self._request("PUT", url, **kwargs))

    def patch(self, url: str | URL, **kwargs: Any) -> PendingResponse:
        return PendingResponse(self._request("PATCH", url, **kwargs))

    def delete(self, url: str | URL, **kwargs: Any) -> PendingResponse:
        return PendingResponse(self._request("DELETE", url, **kwargs))

    async def _request(
        self,
        method: str,
        url: str | URL,
        *,
        deadline: float | None = DEFAULT,
        stream: bool = False,
        timeout: float | aiohttp.ClientTimeout | None = None,
        allow_redirects: bool = True,
        raise_for_status: bool | Callable[[aiohttp.ClientResponse], Awaitable[None]] = False,
        **kwargs: Any,
    ) -> aiohttp.ClientResponse:
        call = Call(
            method.upper(),
            self._resolve(url if isinstance(url, str) else str(url)),
            self.deadline if deadline is DEFAULT else deadline,
            stream,
            timeout,
            allow_redirects,
            resendable(kwargs),
            kwargs.pop("headers", None),
            # The environment's proxy and certificates, unless the caller passes their own.
            {**self._environment, **kwargs} if self._environment else kwargs,
        )
        if call.deadline is not None and call.deadline <= 0:
            raise self._too_slow(call.deadline)  # as the sync session: nothing is sent
        if self._flight.version != self._version:
            self._adopt()
        if self._refresh_due() and self._should_refresh_ahead():
            await self._in_flight(self._refresh_ahead_of_expiry, self._still_due)
        if not self._sendable:
            # As in the sync session: an unsendable stored token is a refused one.
            if self._backing_off():
                raise self._unsendable_while_backing_off()
            await self._refresh_after_refusal(self._access_token)
        sent = self._access_token
        response, retry = await self._send(call, call.resendable)
        if retry:
            response.release()  # its body unread: the connection is closed, not reused
            await self._refresh_after_refusal(sent)
            response, _retry = await self._send(call, False)
        # After the refresh and retry, not before: aiohttp's own would raise at the first 401.
        if raise_for_status is True:
            response.raise_for_status()
        elif raise_for_status:
            await raise_for_status(response)
        return response

    # Refreshing, once per event loop ----------------------------------------------------------

    async def _refresh_after_refusal(self, refused: str) -> None:
        await self._in_flight(
            lambda: self._refresh_rejected(refused), lambda: self._access_token == refused
        )

    def _still_due(self) -> bool:
        return self._refresh_due() and self._should_refresh_ahead()

    async def _in_flight(
        self, refresh: Callable[[], None], still_needed: Callable[[], bool]
    ) -> None:
        """Run ``refresh`` (database and provider work) on a thread, unless another coroutine of
        this loop did one while this one waited: then take its outcome, new tokens or error."""
        flight = self._flight
        async with flight.lock:
            if flight.version != self._version:
                error = flight.error
                self._adopt()
                if error is not None:
                    raise copy_of(error)
                if not still_needed():
                    return
            try:
                # Thread-sensitive, as Django's own async ORM calls: under ASGI, the request's
                # own thread (and database connection); outside a request, the main thread.
                await sync_to_async(refresh, thread_sensitive=True)()
            except Exception as err:
                flight.publish(self.connection, err)
                self._version = flight.version
                raise
            flight.publish(self.connection)
            self._version = flight.version

    def _adopt(self) -> None:
        self._flight.copy_to(self.connection)
        self._use_stored_token()
        self._version = self._flight.version

    def _use_stored_token(self) -> None:
        super()._use_stored_token()
        self._auth_headers = {"Authorization": self._authorization}

    # Sending ----------------------------------------------------------------------------------

    def _client_timeout(
        self, deadline: float | None, timeout: float | None = None
    ) -> aiohttp.ClientTimeout:
        """``timeout`` for connecting, ``deadline`` for the whole request. Each wait for data
        is bounded by ``timeout`` only where there is no deadline (``deadline=None``, or a
        stream's body): aiohttp re-arms that timer at every chunk, which cost 11% of a call's
        instructions (callgrind), and the deadline bounds a stalled read anyway."""
        timeout = self.timeout if timeout is None else timeout
        if deadline is None:
            return aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout)
        return aiohttp.ClientTimeout(
            total=deadline,
            sock_connect=timeout,
            # aiohttp rounds timeouts over 5 s up to a whole second of its clock; the deadline
            # is the one the sync session keeps, to the millisecond.
            ceil_threshold=math.inf,
        )

    def _timeout_for(self, call: Call, deadline: float | None) -> aiohttp.ClientTimeout:
        if isinstance(call.timeout, aiohttp.ClientTimeout):
            return call.timeout  # the caller's, whole
        return self._client_timeout(deadline, call.timeout)

    async def _send(self, call: Call, resendable: bool) -> tuple[aiohttp.ClientResponse, bool]:
        """One request (and its redirects within the origin), and whether to refresh and send
        it again. Its body is read within the deadline unless the caller streams it, but never
        that of an answer to be sent again: a 401 may be 256 MiB."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        headers = self._headers(call.headers)
        deadline = call.deadline
        try:
            if call.stream:
                # aiohttp's total timeout would go on running while the caller reads the body:
                # bound the wait for the headers instead.
                response = await asyncio.wait_for(
                    self._send_following(call, headers, None, started), deadline
                )
            else:
                response = await self._send_following(call, headers, deadline, started)
            retry = (
                resendable
                and response.status in self.provider.expired_token_statuses
                and not self._backing_off()
            )
            if not (call.stream or retry):
                await response.read()  # within the total timeout, which covers the body
        except (asyncio.TimeoutError, aiohttp.ClientError):
            if deadline is None or loop.time() - started < deadline:
                raise
            # Not chained: the cut's error can quote the API's bytes (which may echo the token).
            raise self._too_slow(deadline) from None
        return response, retry

    async def _send_following(
        self, call: Call, headers: Mapping[str, str], deadline: float | None, started: float
    ) -> aiohttp.ClientResponse:
        response = await self._client.request(
            call.method,
            call.url,
            headers=headers,
            timeout=(
                self._default_timeout
                if call.timeout is None and deadline == self.deadline
                else self._timeout_for(call, deadline)
            ),
            allow_redirects=False,
            **call.kwargs,
        )
        if call.follow and response.status in REDIRECT_STATUSES:
            response = await self._follow(response, call, headers, deadline, started)
        return response

    async def _follow(
        self,
        response: aiohttp.ClientResponse,
        call: Call,
        headers: Mapping[str, str],
        deadline: float | None,
        started: float,
    ) -> aiohttp.ClientResponse:
        """Follow redirects within the API's origin only. A redirect elsewhere comes back to the
        caller as the 3xx it is: a provider must not make this server fetch other hosts (an
        internal address, say) and hand the answer to the product as the API's. So does a
        307 or 308 whose body was a stream or file, already sent and gone."""
        loop = asyncio.get_running_loop()
        hops: list[aiohttp.ClientResponse] = []
        method, kwargs = call.method, call.kwargs
        while response.status in REDIRECT_STATUSES:
            location = response.headers.get("Location")
            if not location:
                break
            target = urljoin(str(response.url), location)
            if origin_of(target) != self._origin:
                break
            method, kwargs = redirected(method, response.status, kwargs)
            if response.status in (307, 308) and not call.resendable:
                break
            if len(hops) == MAX_REDIRECTS:
                response.release()
                raise aiohttp.TooManyRedirects(response.request_info, tuple(hops))
            response.release()
            hops.append(response)
            left = None if deadline is None else max(deadline - (loop.time() - started), 0.001)
            response = await self._client.request(
                method,
                target,
                headers=headers,
                timeout=self._timeout_for(call, left),
                allow_redirects=False,
                **kwargs,
            )
        if hops:
            response._history = tuple(hops)
        return response

    def _headers(self, extra: Any) -> Mapping[str, str]:
        if not extra:
            return self._auth_headers
        # The caller's headers, but never their Authorization: the token is the session's.
        merged: CIMultiDict[str] = CIMultiDict(extra)
        merged["Authorization"] = self._authorization
        return merged
