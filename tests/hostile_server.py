"""A loopback HTTP/1.1 server that plays a hostile provider, for tests against real sockets.

A test scripts what the server answers to each request it gets (``server.answer(...)``): bytes
sent at once, bytes dripped a few at a time with pauses (the pauses are the fault being
injected), or a lazily made stream (128 MiB, or a chunked body that never ends). The server
records each request (request line, headers, body) and how many bytes of its answer it got
into the socket before the client hung up.

One thread, one connection at a time, raw ``socket``. Every loop is bounded, by the script's
length or by ``LIFETIME``, and the server stops at fixture teardown even in the middle of a
drip: its waits are ``select`` calls that a wake-up socket interrupts.

    from tests.hostile_server import hostile_server_fixture  # noqa: F401 - the fixture

    def test_something(hostile_server: HostileServer) -> None:
        hostile_server.answer(json_response(200, {"access_token": "x"}))
        ...post to hostile_server.url()...
        exchange = hostile_server.finished()
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest

#: Seconds the server lives at most, whatever a test asks (a drip, a stream that never ends).
LIFETIME = 60.0
#: The largest request the server reads: the client under test sends small forms.
MAX_REQUEST_BYTES = 1024 * 1024
#: A small send buffer, so "bytes sent" is close to "bytes the client took": the kernel holds
#: little on our side of the socket (the client's receive buffer still holds some).
SEND_BUFFER = 32 * 1024
MIB = 1024 * 1024


class _HungUp(Exception):
    """The client closed or reset the connection."""


class _Stopped(Exception):
    """The fixture is tearing down, or the server outlived ``LIFETIME``."""


@dataclass(frozen=True)
class Send:
    """One step of a script: ``pieces()`` sent in order, waiting ``every`` seconds after each.
    ``size`` is how many bytes that is (None: not known beforehand, or no end)."""

    pieces: Callable[[], Iterable[bytes]]
    size: int | None
    every: float = 0.0


Step = bytes | Send


def drip(data: bytes, step: int = 1, every: float = 0.1) -> Send:
    """``data``, ``step`` bytes at a time, waiting ``every`` seconds after each piece."""
    return Send(lambda: (data[i : i + step] for i in range(0, len(data), step)), len(data), every)


def repeated(piece: bytes, size: int) -> Send:
    """``size`` bytes of ``piece`` over and over, made as they are sent, never held at once."""
    count, rest = divmod(size, len(piece))

    def pieces() -> Iterator[bytes]:
        for _ in range(count):
            yield piece
        yield piece[:rest]

    return Send(pieces, size)


def head(status: int = 200, headers: Iterable[tuple[str, str]] = (), reason: str = "") -> bytes:
    """A status line and headers, ending with the blank line. Nothing is added: the test says
    every header (Content-Length, Transfer-Encoding, Connection...)."""
    lines = [f"HTTP/1.1 {status} {reason or 'Hostile'}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response(
    status: int = 200,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (("Content-Type", "application/json"),),
    *,
    keep_alive: bool = False,
) -> bytes:
    """The status line and headers of an answer with a Content-Length (``body`` follows):
    "Connection: close" unless ``keep_alive``."""
    framing = [("Content-Length", str(len(body)))]
    return head(status, [*headers, *framing, *([] if keep_alive else [("Connection", "close")])])


def json_response(
    status: int, value: Any, headers: Iterable[tuple[str, str]] = (), *, keep_alive: bool = False
) -> bytes:
    """A whole JSON answer (status line, headers and body)."""
    body = json.dumps(value).encode()
    headers = [("Content-Type", "application/json"), *headers]
    return response(status, body, headers, keep_alive=keep_alive) + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (an empty ``data`` is the last chunk)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def chunked(pieces: Callable[[], Iterable[bytes]], every: float = 0.0, end: bool = True) -> Send:
    """``pieces()`` as a chunked body, with its last chunk unless not ``end``."""

    def encoded() -> Iterator[bytes]:
        for piece in pieces():
            yield chunk(piece)
        if end:
            yield chunk(b"")

    return Send(encoded, None, every)


def gzip_bomb(decoded_size: int) -> bytes:
    """A gzip body of ``decoded_size`` zero bytes: about a thousandth of that, compressed."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: with a gzip header
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(decoded_size // MIB)]
    parts.append(compressor.compress(bytes(decoded_size % MIB)))
    return b"".join([*parts, compressor.flush()])


@dataclass
class Exchange:
    """One request the server read, and what came of the answer it was scripted to send."""

    request_line: str
    headers: list[tuple[str, str]]
    body: bytes
    #: Which accepted connection (0, 1, ...) carried the request.
    connection: int
    #: Bytes of the answer the script meant to send (None: not known beforehand, or no end).
    wanted: int | None = None
    #: Bytes the server got into the socket before the script ended or the client hung up.
    sent: int = 0
    #: Whether the client closed or reset the connection before the script ended.
    hung_up: bool = False
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


# What the server answers a request no test scripted.
UNSCRIPTED: tuple[tuple[Step, ...], bool] = ((response(599, b"", ()),), False)


class HostileServer:
    """See the module docstring. ``url()`` is where it listens; ``exchanges`` what it got."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.exchanges: list[Exchange] = []
        #: Anything that went wrong in the server itself (not a client hanging up).
        self.errors: list[str] = []
        self._scripts: deque[tuple[tuple[Step, ...], bool]] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake, self._waker = socket.socketpair()
        self._ends_at = time.monotonic() + LIFETIME
        self._thread = threading.Thread(target=self._serve, name="hostile-server", daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, path: str = "/oauth/token/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, *steps: Step, keep_alive: bool = False) -> None:
        """Answer the next request (in the order scripted) with ``steps``; then close the
        connection, or with ``keep_alive`` wait on it for another request."""
        with self._lock:
            self._scripts.append((steps, keep_alive))

    def arrived(self, count: int = 1, timeout: float = 10.0) -> Exchange:
        """The ``count``-th exchange as soon as its request is read (its answer may be under
        way): a bounded wait on the server thread, not a sleep."""
        with self._changed:
            came = self._changed.wait_for(lambda: len(self.exchanges) >= count, timeout)
        assert came, f"the server got {len(self.exchanges)} requests, not {count}"
        return self.exchanges[count - 1]

    def finished(self, count: int = 1, timeout: float = 10.0) -> Exchange:
        """The ``count``-th exchange, once the server is done with it (sent it all, or saw the
        client hang up). A bounded wait on the server thread, not a sleep."""
        ends_at = time.monotonic() + timeout
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.exchanges) >= count, timeout)
        assert arrived, f"the server got {len(self.exchanges)} requests, not {count}"
        exchange = self.exchanges[count - 1]
        assert exchange.done.wait(max(ends_at - time.monotonic(), 0)), "the server is stuck"
        return exchange

    def stop(self) -> None:
        if self._thread.is_alive():
            self._waker.send(b"x")
            self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the hostile server did not stop"
        for sock in (self.listener, self._wake, self._waker):
            sock.close()

    # The server thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        count = 0
        try:
            while True:
                if self.listener not in self._wait([self.listener], [])[0]:
                    continue
                conn, _address = self.listener.accept()
                try:
                    with conn:
                        self._converse(conn, count)
                except _Stopped:
                    raise
                except Exception as err:  # a bug in the server: reported by the fixture
                    self.errors.append(repr(err))
                count += 1
        except _Stopped:
            pass
        except Exception as err:
            self.errors.append(repr(err))

    def _converse(self, conn: socket.socket, number: int) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        conn.setblocking(False)
        pending = bytearray()
        for index in range(100):  # requests on one kept-alive connection
            try:
                request = self._read_request(conn, pending, kept_alive=index > 0)
            except _HungUp:
                return
            if request is None:
                return
            with self._changed:
                steps, keep_alive = self._scripts.popleft() if self._scripts else UNSCRIPTED
                exchange = Exchange(*request, connection=number, wanted=_total(steps))
                self.exchanges.append(exchange)
                self._changed.notify_all()
            try:
                self._play(conn, steps, exchange, pending)
            except _HungUp:
                exchange.hung_up = True
                return
            finally:
                exchange.done.set()
            if not keep_alive:
                return

    def _read_request(
        self, conn: socket.socket, pending: bytearray, *, kept_alive: bool
    ) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """The next request on ``conn``. None when the client closes the connection between
        requests, or leaves a kept-alive one idle while it opens another."""
        while b"\r\n\r\n" not in pending:
            if len(pending) > MAX_REQUEST_BYTES:
                raise ValueError("request headers too long")
            if kept_alive and not pending:
                readable = self._wait([conn, self.listener], [])[0]
                if self.listener in readable and conn not in readable:
                    return None
            if not self._receive(conn, pending):
                if pending:
                    raise _HungUp
                return None
        header_block, _, rest = bytes(pending).partition(b"\r\n\r\n")
        request_line, *lines = header_block.decode("latin-1").split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
        length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        if length > MAX_REQUEST_BYTES:
            raise ValueError("request body too long")
        pending[:] = rest
        while len(pending) < length:
            if not self._receive(conn, pending):
                raise _HungUp
        body = bytes(pending[:length])
        del pending[:length]
        return request_line, headers, body

    def _receive(self, conn: socket.socket, pending: bytearray) -> bool:
        """Wait (a second at most) for bytes from the client and add them to ``pending``;
        False once the client closed or reset the connection."""
        self._wait([conn], [])
        try:
            data = conn.recv(64 * 1024)
        except BlockingIOError:
            return True
        except OSError:  # reset
            return False
        pending += data
        return bool(data)

    def _play(
        self, conn: socket.socket, steps: Iterable[Step], exchange: Exchange, pending: bytearray
    ) -> None:
        for step in steps:
            pieces, every = (
                ([step], 0.0) if isinstance(step, bytes) else (step.pieces(), step.every)
            )
            for piece in pieces:
                self._send(conn, piece, exchange, pending)
                if every:
                    self._pause(conn, every, pending)

    def _send(
        self, conn: socket.socket, data: bytes, exchange: Exchange, pending: bytearray
    ) -> None:
        view = memoryview(data)
        while view:
            readable, writable = self._wait([conn], [conn])
            if conn in readable and not self._receive(conn, pending):
                raise _HungUp
            if conn in writable:
                try:
                    sent = conn.send(view)
                except BlockingIOError:
                    continue
                except OSError as err:  # reset, or a broken pipe
                    raise _HungUp from err
                exchange.sent += sent
                view = view[sent:]

    def _pause(self, conn: socket.socket, seconds: float, pending: bytearray) -> None:
        """Wait ``seconds`` (the injected slowness), noticing at once if the client hangs up."""
        ends_at = time.monotonic() + seconds
        while (left := ends_at - time.monotonic()) > 0:
            readable = self._wait([conn], [], left)[0]
            if conn in readable and not self._receive(conn, pending):
                raise _HungUp

    def _wait(
        self, read: list[socket.socket], write: list[socket.socket], most: float = 1.0
    ) -> tuple[list[Any], list[Any]]:
        """``select`` for at most ``most`` seconds; raises ``_Stopped`` on teardown."""
        left = self._ends_at - time.monotonic()
        if left <= 0:
            raise _Stopped
        readable, writable, _ = select.select([*read, self._wake], write, [], min(most, left))
        if self._wake in readable:
            raise _Stopped
        return readable, writable


def _total(steps: Iterable[Step]) -> int | None:
    total = 0
    for step in steps:
        size = len(step) if isinstance(step, bytes) else step.size
        if size is None:
            return None
        total += size
    return total


@pytest.fixture(name="hostile_server")
def hostile_server_fixture() -> Iterator[HostileServer]:
    """``hostile_server``: a started :class:`HostileServer`, stopped (and checked for errors of
    its own) at teardown. Import ``hostile_server_fixture`` into a test module to use it."""
    with HostileServer() as server:
        yield server
    assert not server.errors, server.errors
