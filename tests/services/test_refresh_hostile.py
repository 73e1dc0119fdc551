"""``refresh_connection`` against a real socket that plays a hostile token endpoint
(tests/hostile_server): whatever the provider does, the connection afterwards holds what the
library promises (the old tokens, or the usable half of a bad answer), says what happened
without a secret or a NUL, backs off, and no raw database error escapes. Run on SQLite and on
PostgreSQL, which refuses NUL characters and over-long values that SQLite stores."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError
from django.utils import timezone

from oauth_connect.exceptions import (
    DeadlineExceeded,
    ProviderError,
    ReauthorizationRequired,
    UnusableAnswer,
)
from oauth_connect.models import Connection, ConnectionEvent
from oauth_connect.services import refresh_connection
from tests.conftest import CLIENT_SECRET, apicbase_settings, oauth_connect_settings
from tests.hostile_server import (
    MIB,
    HostileServer,
    Step,
    drip,
    head,
    hostile_server_fixture,  # noqa: F401 - the fixture
    json_response,
    repeated,
    response,
)

# Each test commits for real: the refresh holds the row lock (PostgreSQL) across the call.
pytestmark = pytest.mark.django_db(transaction=True)

ERROR, ACTIVE, REAUTH = (
    Connection.Status.ERROR,
    Connection.Status.ACTIVE,
    Connection.Status.REAUTH_REQUIRED,
)
ACCESS = "sk-hostile-access-0001"
REFRESH = "sk-hostile-refresh-0001"
NEW_ACCESS = "sk-hostile-access-0002"
NEW_REFRESH = "sk-hostile-refresh-0002"
LIMIT = 64 * 1024


@pytest.fixture
def server(hostile_server: HostileServer, settings: Any) -> HostileServer:
    """The hostile server as Apicbase's token endpoint, with small limits."""
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": apicbase_settings(TOKEN_URL=hostile_server.url())},
        HTTP_TIMEOUT=1,
        HTTP_DEADLINE=1.5,
        MAX_RESPONSE_BYTES=LIMIT,
    )
    return hostile_server


@pytest.fixture
def connection(make_connection: Any) -> Connection:
    """An expired connection, due for a refresh."""
    return make_connection(
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=timezone.now() - timedelta(minutes=1),
    )


def refresh_fails(connection: Connection, error: type[ProviderError]) -> ProviderError:
    """Refresh ``connection``, which must raise exactly ``error`` (not a database error)."""
    with pytest.raises(Exception) as info:  # noqa: B017 - its type is checked below
        refresh_connection(connection)
    assert not isinstance(info.value, DatabaseError), repr(info.value)
    assert type(info.value) is error, repr(info.value)
    assert f"#{connection.pk}" in str(info.value)  # names the connection
    return info.value


def stored(connection: Connection) -> tuple[Connection, ConnectionEvent]:
    """The connection as the database holds it, and its newest event, both checked for
    secrets (of the request or the answer) and control characters."""
    row = Connection.objects.get(pk=connection.pk)
    event = row.events.first()
    assert event is not None
    for text in (row.last_error, event.message):
        assert "hostile" not in text, text  # a fragment of any of the tokens
        assert CLIENT_SECRET not in text
        assert not any(ch in text for ch in "\x00\r\n"), repr(text)
    return row, event


def assert_failed_and_backing_off(row: Connection, event: ConnectionEvent, words: str) -> None:
    assert row.status == ERROR
    assert words in row.last_error
    assert event.kind == ConnectionEvent.Kind.REFRESH_FAILED
    assert event.message == row.last_error
    assert row.consecutive_failures == 1
    assert row.retry_not_before is not None and row.retry_not_before > timezone.now()


def token_answer(**fields: Any) -> bytes:
    return json_response(
        200,
        {
            "access_token": NEW_ACCESS,
            "refresh_token": NEW_REFRESH,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "accounts library",
            **fields,
        },
    )


# The provider fails: nothing stored, the old tokens kept ----------------------------------------

DEEP = b"[" * 30_000 + b"]" * 30_000
assert len(DEEP) < LIMIT
FAULTS: dict[str, tuple[list[Step], type[ProviderError], str]] = {
    "drip-past-the-deadline": (
        [
            head(200, [("Content-Type", "application/json"), ("Content-Length", "400")]),
            drip(b" " * 400, every=0.05),  # 20 seconds
        ],
        DeadlineExceeded,
        "did not finish answering within 1.5 seconds (HTTP_DEADLINE)",
    ),
    "huge-body": (
        [head(200, [("Connection", "close")]), repeated(b"{" * 65536, 128 * MIB)],
        UnusableAnswer,
        "answered with more than 65,536 bytes (MAX_RESPONSE_BYTES)",
    ),
    "deep-json": (
        [response(200, DEEP) + DEEP],
        UnusableAnswer,
        "answered HTTP 200 with a body that is not a JSON object (application/json)",
    ),
    "both-tokens-bad": (
        [token_answer(access_token="sk-hostile\r\nX: 1", refresh_token="sk\x00hostile")],
        UnusableAnswer,
        "its access token holds characters a token can't have",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failed_refresh_keeps_the_old_tokens(
    server: HostileServer, connection: Connection, fault: str
) -> None:
    steps, error, words = FAULTS[fault]
    server.answer(*steps)

    started = time.monotonic()
    refresh_fails(connection, error)
    elapsed = time.monotonic() - started

    assert elapsed < 5  # the row lock was not held for the 20 seconds of a drip
    row, event = stored(connection)
    assert (row.access_token, row.refresh_token) == (ACCESS, REFRESH)
    assert row.expires_at == connection.expires_at
    assert_failed_and_backing_off(row, event, words)
    exchange = server.finished()
    assert exchange.form["refresh_token"] == REFRESH
    if fault == "both-tokens-bad":
        assert "Nothing of it was stored; the stored tokens are kept." in row.last_error
        assert "its refresh token holds characters a token can't have" in row.last_error
    elif fault != "deep-json":
        assert exchange.hung_up  # cut off, not read to the end


# Half a usable answer: the usable token stored, with the failure -------------------------------


def test_an_access_token_with_crlf_keeps_the_new_refresh_token(
    server: HostileServer, connection: Connection
) -> None:
    server.answer(token_answer(access_token="sk-hostile-access\r\nX-Injected: 1"))

    refresh_fails(connection, UnusableAnswer)

    row, event = stored(connection)
    # A rotating provider has spent REFRESH: its new one is kept, whatever came with it.
    assert (row.access_token, row.refresh_token) == (ACCESS, NEW_REFRESH)
    assert row.expires_at == connection.expires_at
    assert_failed_and_backing_off(
        row, event, "its access token holds characters a token can't have"
    )
    assert "Its new refresh token was stored (the access token kept is the previous one)." in (
        row.last_error
    )


def test_a_refresh_token_with_a_newline_keeps_the_new_access_token(
    server: HostileServer, connection: Connection
) -> None:
    server.answer(token_answer(refresh_token="sk-hostile-refresh\n0002"))

    refresh_fails(connection, UnusableAnswer)

    row, event = stored(connection)
    assert (row.access_token, row.refresh_token) == (NEW_ACCESS, REFRESH)
    assert row.expires_at is not None and row.expires_at > timezone.now() + timedelta(minutes=50)
    assert_failed_and_backing_off(
        row, event, "its refresh token holds characters a token can't have"
    )
    assert "Its new access token was stored; the stored refresh token is kept" in row.last_error


# Descriptive values unusable: the tokens stored, the event says what was replaced ---------------

DESCRIPTIVE = {
    "token-type-of-200-characters": (
        {"token_type": "Bearer" + "x" * 194},
        "its token type was unusable and 'Bearer' was assumed",
    ),
    "scope-with-nul": (
        {"scope": "accounts\x00 library"},
        "its list of granted scopes was unusable and was not stored",
    ),
}


@pytest.mark.parametrize("fault", list(DESCRIPTIVE))
def test_an_unusable_descriptive_value_is_replaced_and_said(
    server: HostileServer, connection: Connection, fault: str
) -> None:
    fields, note = DESCRIPTIVE[fault]
    server.answer(token_answer(**fields))

    assert refresh_connection(connection) is True

    row, event = stored(connection)
    assert (row.access_token, row.refresh_token) == (NEW_ACCESS, NEW_REFRESH)
    assert row.status == ACTIVE
    assert (row.token_type, row.scopes) == ("Bearer", "accounts library")
    assert event.kind == ConnectionEvent.Kind.REFRESHED
    assert note in event.message
    assert row.last_error == "" and row.retry_not_before is None


# The provider's words: our secrets masked, control characters gone -----------------------------


@pytest.mark.parametrize(
    ("status", "code", "error", "state"),
    [
        (503, "temporarily_unavailable", ProviderError, ERROR),
        (400, "invalid_grant", ReauthorizationRequired, REAUTH),
    ],
    ids=["transient", "grant-refused"],
)
def test_an_error_description_with_nul_and_the_refresh_token(
    server: HostileServer,
    connection: Connection,
    status: int,
    code: str,
    error: type[ProviderError],
    state: str,
) -> None:
    description = f"token {REFRESH}\x00from client {CLIENT_SECRET}\r\nis\x00bad"
    server.answer(json_response(status, {"error": code, "error_description": description}))

    refresh_fails(connection, error)

    row, event = stored(connection)
    assert (row.access_token, row.refresh_token) == (ACCESS, REFRESH)
    assert row.status == state
    assert f"({code}: token [redacted] from client [redacted] is bad)" in row.last_error
    assert event.message == row.last_error
    if state == ERROR:
        assert_failed_and_backing_off(row, event, f"answered HTTP {status}")
    else:
        # A refused grant waits for a person, not for a retry.
        assert event.kind == ConnectionEvent.Kind.REAUTH_REQUIRED
        assert row.retry_not_before is None


def test_an_absurd_retry_after_is_capped(server: HostileServer, connection: Connection) -> None:
    server.answer(json_response(429, {"error": "slow_down"}, [("Retry-After", "9" * 20)]))

    refresh_fails(connection, ProviderError)

    row, event = stored(connection)
    assert_failed_and_backing_off(row, event, "answered HTTP 429 (slow_down)")
    assert row.retry_not_before <= timezone.now() + timedelta(hours=6)  # RETRY_BACKOFF_MAX
