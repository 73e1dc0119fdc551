"""One request of ``connection.asession()``: what the caller asked for (``Call``), what they
get back to await (``PendingResponse``), and the rules for sending a body again after a 401 or
through a redirect."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any

import aiohttp


class PendingResponse(Coroutine[Any, Any, aiohttp.ClientResponse]):
    """A request under way: ``await`` it for the response, hand it to ``create_task``, or
    ``async with`` it to have the response released at the end of the block (for
    ``stream=True``). A coroutine, as aiohttp's own request objects are."""

    __slots__ = ("_coroutine", "_response")

    def __init__(self, coroutine: Coroutine[Any, Any, aiohttp.ClientResponse]) -> None:
        self._coroutine = coroutine
        self._response: aiohttp.ClientResponse | None = None

    def send(self, value: Any) -> Any:
        return self._coroutine.send(value)

    def throw(self, *args: Any) -> Any:
        return self._coroutine.throw(*args)

    def close(self) -> None:
        self._coroutine.close()

    def __await__(self) -> Generator[Any, None, aiohttp.ClientResponse]:
        return self._coroutine.__await__()

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._response = await self._coroutine
        return self._response

    async def __aexit__(self, *exc_info: object) -> None:
        if self._response is not None:
            self._response.release()


@dataclass(slots=True)
class Call:
    """One request as the caller asked for it."""

    method: str
    url: str
    deadline: float | None
    stream: bool
    timeout: float | aiohttp.ClientTimeout | None
    follow: bool
    resendable: bool
    headers: Any
    kwargs: dict[str, Any]


def redirected(method: str, status: int, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The method and arguments of the request a redirect asks for, by requests' rules: a 303
    (and a 302, or a 301 after a POST) becomes a GET without a body. The Location holds the
    whole URL, query included."""
    kwargs = {key: value for key, value in kwargs.items() if key != "params"}
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        method = "GET"
        kwargs = {key: value for key, value in kwargs.items() if key not in ("data", "json")}
    return method, kwargs


def resendable(kwargs: dict[str, Any]) -> bool:
    """Whether the request's body can be sent a second time: a file, a stream or a
    ``FormData`` (or a form whose fields hold one) was consumed by the first attempt."""
    body = kwargs.get("data")
    if body is None or isinstance(body, (str, bytes, bytearray)):
        return True
    if isinstance(body, dict):
        fields: Any = body.values()
    elif isinstance(body, (list, tuple)):
        fields = [
            field[1] if isinstance(field, tuple) and len(field) == 2 else field for field in body
        ]
    else:
        return False
    return all(isinstance(value, (str, bytes, bytearray, int, float)) for value in fields)
