"""``ProviderClient`` against a real socket that plays a hostile provider (tests/hostile_server):
every way of answering too slowly, too much, malformed or with our secrets in it ends in a
``ProviderError`` subclass that says what happened and holds no secret."""

from __future__ import annotations

import html
import json
import socket
import time
import tracemalloc
from typing import Any
from urllib.parse import quote

import pytest

from oauth_connect.exceptions import (
    DeadlineExceeded,
    ProviderError,
    ReauthorizationRequired,
    UnusableAnswer,
)
from oauth_connect.providers.client import ProviderClient
from tests.hostile_server import (
    MIB,
    HostileServer,
    Send,
    Step,
    chunk,
    chunked,
    drip,
    gzip_bomb,
    head,
    hostile_server_fixture,  # noqa: F401 - the fixture
    json_response,
    repeated,
    response,
)

REFRESH = "sk-hostile-refresh-0001"
CLIENT_SECRET = "sk-hostile-client-0002"
FORM = {
    "grant_type": "refresh_token",
    "refresh_token": REFRESH,
    "client_id": "hostile-client",
    "client_secret": CLIENT_SECRET,
}
LIMIT = 64 * 1024
# A drip the deadline must cut: 400 bytes, one every 50 ms, is 20 seconds.
DRIPPED = 400
EVERY = 0.05
# Well past a 1.5 s deadline, well short of the 20 s drip: generous, for a loaded machine.
CEILING = 5.0


@pytest.fixture
def server(hostile_server: HostileServer) -> HostileServer:
    """The hostile server (tests/hostile_server.py), by a shorter name."""
    return hostile_server


@pytest.fixture(autouse=True)
def small_limits(settings: Any) -> None:
    settings.OAUTH_CONNECT = {
        **settings.OAUTH_CONNECT,
        "HTTP_TIMEOUT": 1,
        "HTTP_DEADLINE": 1.5,
        "MAX_RESPONSE_BYTES": LIMIT,
    }


def post(server: HostileServer, form: dict[str, str] | None = None) -> dict[str, Any]:
    return ProviderClient("apicbase").post_form(server.url(), dict(form or FORM))


def failure(server: HostileServer, form: dict[str, str] | None = None) -> ProviderError:
    """The error posting ``form`` (FORM) raises; any other outcome fails the test."""
    with pytest.raises(ProviderError) as info:
        post(server, form)
    return info.value


def texts(err: BaseException) -> list[str]:
    """``str`` and ``repr`` of the error and of every exception a traceback of it would show
    (what a log handler or an error tracker records)."""
    found: list[str] = []
    seen: BaseException | None = err
    for _ in range(20):  # a chain is a few links long
        if seen is None:
            break
        found += [str(seen), repr(seen)]
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return found


def assert_says(err: ProviderError, server: HostileServer, *words: str) -> None:
    """The message names the provider and its endpoint, says ``words``, and carries neither a
    secret of FORM (nor any part of one) anywhere in the error's chain."""
    message = str(err)
    assert f"Apicbase token endpoint (127.0.0.1:{server.port})" in message
    for word in words:
        assert word in message
    assert err.provider == "apicbase"
    for text in texts(err):
        assert "hostile" not in text, text  # a fragment of either secret
        assert CLIENT_SECRET not in text and REFRESH not in text


def padded_head(status: int = 200, *headers: tuple[str, str]) -> bytes:
    return head(status, [("Content-Type", "application/json"), *headers])


# Too slow --------------------------------------------------------------------------------------

TOKEN = json.dumps({"access_token": "a" * (DRIPPED - 20)}).encode()
assert len(TOKEN) == DRIPPED

# Each: what is sent at once, then what is dripped (DRIPPED pieces or more), and a piece's size.
DRIPS: dict[str, tuple[bytes, Send, int]] = {
    # The status line and headers themselves, a byte at a time: the deadline covers them too.
    "status-line": (b"", drip(head(200, [("X-Pad", "p" * DRIPPED)]), every=EVERY), 1),
    "headers": (b"HTTP/1.1 200 OK\r\n", drip(b"X-Pad: " + b"p" * DRIPPED, every=EVERY), 1),
    "body-with-length": (
        padded_head(200, ("Content-Length", str(DRIPPED))),
        drip(TOKEN, every=EVERY),
        1,
    ),
    "body-until-close": (
        padded_head(200, ("Connection", "close")),
        drip(TOKEN, every=EVERY),
        1,
    ),
    "chunked-without-end": (
        padded_head(200, ("Transfer-Encoding", "chunked")),
        chunked(lambda: iter(lambda: b"x", None), every=EVERY, end=False),
        len(chunk(b"x")),
    ),
}


@pytest.mark.parametrize("phase", list(DRIPS))
def test_a_dripping_answer_is_cut_off_at_the_deadline(server: HostileServer, phase: str) -> None:
    at_once, dripped, piece = DRIPS[phase]
    server.answer(at_once, dripped)

    started = time.monotonic()
    err = failure(server)
    elapsed = time.monotonic() - started

    assert elapsed < CEILING
    exchange = server.finished()
    assert exchange.hung_up  # the client hung up on the drip...
    pieces = (exchange.sent - len(at_once)) // piece
    assert 0 < pieces < DRIPPED // 4  # ...long before a quarter of it was out
    assert exchange.form == FORM
    # Where HTTP has no length to miss (headers, a body that ends with the connection), the cut
    # looks like the end of the answer to http.client: still a deadline, not a bad answer.
    assert type(err) is DeadlineExceeded
    assert_says(err, server, "did not finish answering within 1.5 seconds (HTTP_DEADLINE)")


def test_after_a_cut_the_shared_session_works_normally(server: HostileServer) -> None:
    at_once, dripped, _piece = DRIPS["body-with-length"]
    server.answer(at_once, dripped)
    server.answer(json_response(200, {"access_token": "second"}, keep_alive=True), keep_alive=True)
    server.answer(json_response(200, {"access_token": "third"}))

    assert type(failure(server)) is DeadlineExceeded
    assert post(server) == {"access_token": "second"}
    assert post(server) == {"access_token": "third"}

    cut, second, third = (server.finished(n) for n in (1, 2, 3))
    assert cut.hung_up and not second.hung_up and not third.hung_up
    # A fresh connection after the cut one, kept alive and reused: the pool works as ever.
    assert cut.connection != second.connection == third.connection


# Too much --------------------------------------------------------------------------------------

HUGE = 128 * MIB
PIECE = b"x" * (64 * 1024)
BOMB = gzip_bomb(32 * MIB)
assert len(BOMB) < LIMIT  # small compressed (so its Content-Length passes), huge decoded

FLOODS: dict[str, list[Step]] = {
    "content-length": [
        padded_head(200, ("Content-Length", str(HUGE))),
        repeated(PIECE, HUGE),
    ],
    "until-close": [padded_head(200, ("Connection", "close")), repeated(PIECE, HUGE)],
    "chunked": [
        padded_head(200, ("Transfer-Encoding", "chunked")),
        chunked(lambda: (PIECE for _ in range(HUGE // len(PIECE)))),
    ],
    "gzip-bomb": [
        response(200, BOMB, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]),
        BOMB,
    ],
    "chunked-gzip-bomb": [
        padded_head(200, ("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")),
        chunked(lambda: (BOMB[i : i + 4096] for i in range(0, len(BOMB), 4096))),
    ],
}


@pytest.mark.parametrize("flood", list(FLOODS))
def test_a_huge_answer_is_refused_reading_little_of_it(server: HostileServer, flood: str) -> None:
    server.answer(*FLOODS[flood])

    tracemalloc.start()
    try:
        err = failure(server)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert type(err) is UnusableAnswer
    assert err.status_code == 200
    assert_says(err, server, "answered with more than 65,536 bytes (MAX_RESPONSE_BYTES)")
    assert peak < 4 * MIB  # a 128 MiB body, or a 32 MiB decoded one, was never held
    exchange = server.finished()
    if flood.endswith("bomb"):
        # Small on the wire (sent in full, or nearly): what is refused is its decoded size.
        assert exchange.sent < LIMIT
    else:
        # Cut off: what the kernel's buffers hold at most, not 128 MiB.
        assert exchange.hung_up
        assert exchange.sent < 16 * MIB


def test_an_encoding_we_did_not_offer_is_refused(server: HostileServer) -> None:
    server.answer(response(200, b"{}", [("Content-Encoding", "br")]) + b"{}")

    err = failure(server)

    assert type(err) is UnusableAnswer
    assert_says(err, server, "answered in an encoding we did not ask for (br)")
    assert server.finished().header("Accept-Encoding") == "gzip, deflate"


def test_an_encoding_echoing_a_secret_is_masked(server: HostileServer) -> None:
    server.answer(response(200, b"{}", [("Content-Encoding", REFRESH)]) + b"{}")

    err = failure(server)

    assert type(err) is UnusableAnswer
    assert_says(err, server, "answered in an encoding we did not ask for")


# Malformed -------------------------------------------------------------------------------------


def test_a_body_shorter_than_its_content_length(server: HostileServer) -> None:
    start = b'{"access_token": "sk-'
    server.answer(padded_head(200, ("Content-Length", "1000")) + start)

    err = failure(server)

    assert type(err) is ProviderError
    assert err.status_code is None
    read = len(start)
    assert_says(err, server, f"IncompleteRead({read} bytes read, {1000 - read} more expected)")
    assert_says(err, server, "broke off or garbled its answer")


def test_deeply_nested_json_is_not_an_answer(server: HostileServer, settings: Any) -> None:
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "MAX_RESPONSE_BYTES": MIB}
    deep = b"[" * 100_000 + b"]" * 100_000
    server.answer(response(200, deep) + deep)

    err = failure(server)

    assert type(err) is UnusableAnswer
    assert_says(err, server, "answered HTTP 200 with a body that is not a JSON object")


def test_deep_json_inside_an_error_answer(server: HostileServer, settings: Any) -> None:
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "MAX_RESPONSE_BYTES": MIB}
    deep = b'{"error": "invalid_grant", "detail": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    server.answer(response(400, deep) + deep)

    err = failure(server)

    # Not the API's words (it can't be parsed), so not a refused grant: a plain failure.
    assert type(err) is ProviderError
    assert_says(err, server, "answered HTTP 400 with a body that is not a JSON object")


@pytest.mark.parametrize("status", [200, 400])
def test_invalid_utf8_is_not_an_answer(server: HostileServer, status: int) -> None:
    body = b'{"access_token": "\xff\xfe", "error": "invalid_grant\xc3"}'
    server.answer(response(status, body) + body)

    err = failure(server)

    assert type(err) is (UnusableAnswer if status == 200 else ProviderError)
    assert_says(err, server, f"answered HTTP {status} with a body that is not a JSON object")


@pytest.mark.parametrize(
    ("headers", "cause"),
    [
        ([(f"X-Header-{n}", "v") for n in range(101)], "got more than 100 headers"),
        ([("X-Long", "v" * 100 * 1024)], "got more than 65536 bytes when reading header line"),
    ],
    ids=["101-headers", "100-KiB-header-line"],
)
def test_oversized_headers_are_refused(
    server: HostileServer, headers: list[tuple[str, str]], cause: str
) -> None:
    server.answer(padded_head(200, *headers, ("Content-Length", "2")) + b"{}")

    err = failure(server)

    assert type(err) is ProviderError
    assert err.status_code is None
    assert_says(err, server, cause)
    assert_says(err, server, "broke off or garbled its answer")  # reached, not unreachable


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        (f"HTTP/1.1 {REFRESH}\r\n\r\n".encode(), "BadStatusLine"),
        (
            head(200, [("Transfer-Encoding", "chunked")]) + f"{REFRESH}\r\n".encode(),
            "InvalidChunkLength",
        ),
    ],
    ids=["status-line", "chunk-size"],
)
def test_a_secret_echoed_in_broken_framing_stays_out_of_the_error(
    server: HostileServer, answer: bytes, cause: str
) -> None:
    # http.client and urllib3 quote the offending line in their errors: an error tracker that
    # records the whole chain must not find the secret there either.
    server.answer(answer)

    err = failure(server)

    assert type(err) is ProviderError
    assert_says(err, server, cause, "[redacted]")


def test_a_redirect_is_not_followed(server: HostileServer) -> None:
    with socket.socket() as elsewhere:
        elsewhere.bind(("127.0.0.1", 0))
        elsewhere.listen(1)
        elsewhere.setblocking(False)
        location = f"http://127.0.0.1:{elsewhere.getsockname()[1]}/steal/"
        server.answer(response(307, b"", [("Location", location)]))

        err = failure(server)

        # Following it would have re-sent the form (secrets included) to the other port, whose
        # listen queue would now hold that connection.
        with pytest.raises(BlockingIOError):
            elsewhere.accept()
    assert type(err) is ProviderError
    assert err.status_code == 307
    assert_says(err, server, "answered HTTP 307")
    assert len(server.exchanges) == 1
    assert server.finished().form == FORM


def test_a_retry_after_of_odd_digits_is_ignored(server: HostileServer) -> None:
    server.answer(json_response(429, {"error": "slow_down"}, [("Retry-After", "\xb2")]))

    err = failure(server)

    assert err.retry_after is None
    assert_says(err, server, "answered HTTP 429 (slow_down)")


# Our secrets in the provider's words -----------------------------------------------------------

# Characters that make each encoding of the secret differ from the others.
ECHOED = 'sk-hostile-refresh-0001/+"é'


def test_an_echoed_secret_is_masked_in_every_form(server: HostileServer) -> None:
    description = " ".join(
        [
            f"plain {ECHOED}",
            f"url-encoded {quote(ECHOED, safe='')}",
            f"json-escaped {json.dumps(ECHOED)[1:-1]}",
            f"html-escaped {html.escape(ECHOED)}",
            f"client {CLIENT_SECRET}",
        ]
    )
    server.answer(json_response(400, {"error": "invalid_grant", "error_description": description}))

    err = failure(server, {**FORM, "refresh_token": ECHOED})

    assert type(err) is ReauthorizationRequired
    assert err.error_code == "invalid_grant"
    assert_says(
        err,
        server,
        "refused the stored grant (invalid_grant: plain [redacted] url-encoded [redacted] "
        "json-escaped [redacted] html-escaped [redacted] client [redacted])",
    )
    assert server.finished().form["refresh_token"] == ECHOED


def test_control_characters_never_reach_the_message(server: HostileServer) -> None:
    description = f"bad\r\nSet-Cookie: x=1\x00\x1b[31m{REFRESH}\x00\u202eevil\x7f end"
    server.answer(
        json_response(400, {"error": "invalid_request\x00\r\n", "error_description": description})
    )

    err = failure(server)

    assert type(err) is ProviderError
    assert err.error_code == "invalid_request"
    assert_says(err, server, "answered HTTP 400 (invalid_request: bad Set-Cookie: x=1")
    assert "[redacted]" in str(err)
    for text in (str(err), err.detail, err.error_code):
        assert not any(ch in text for ch in "\x00\r\n\x1b\u202e\x7f"), repr(text)


def test_a_flood_of_provider_words_is_cut(server: HostileServer) -> None:
    description = ("word " * 5000) + REFRESH
    server.answer(json_response(503, {"error": "x" * 5000, "error_description": description}))

    err = failure(server)

    assert type(err) is ProviderError
    assert_says(err, server, "answered HTTP 503")
    assert len(str(err)) < 600


def test_a_forked_child_never_shares_the_parents_kept_alive_connection(
    server: HostileServer,
) -> None:
    # Both processes reading one socket could each take the other's answer.
    import os

    server.answer(json_response(200, {"ok": 1}, keep_alive=True), keep_alive=True)
    server.answer(json_response(200, {"ok": 2}))
    assert post(server) == {"ok": 1}  # the parent's connection, kept alive in its pool
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        try:
            os._exit(0 if post(server) == {"ok": 2} else 1)
        except BaseException:
            os._exit(2)
    _pid, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert server.finished(2).connection != server.exchanges[0].connection
