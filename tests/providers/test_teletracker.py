"""TeleTracker: a username/password login for a 1-hour bearer token and a rotating refresh token,
each with its own expiry on the vendor's (possibly skewed) clock; log in again with the kept
password when the refresh token is refused or expired."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses
import time_machine
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from oauth_connect.exceptions import ProviderError, ReauthorizationRequired
from oauth_connect.models import Connection
from oauth_connect.services import connect_with_credentials, refresh_connection
from tests.conftest import oauth_connect_settings, race
from tests.providers.contract import ProviderContract

API_URL = "https://api.teletracker.test/"
LOGIN_URL = API_URL + "auth/login"
REFRESH_URL = API_URL + "auth/refresh"
PASSWORD = "teletracker-password-91c2"  # noqa: S105 - a fake for the mocked API
REFRESH_LIFETIME = timedelta(days=29)


def teletracker_settings() -> dict[str, Any]:
    return {"API_URL": API_URL, "LOGIN_URL": LOGIN_URL, "REFRESH_URL": REFRESH_URL}


def answer(n: int, *, server_now: datetime | None = None, lifetime: int = 3600) -> dict[str, Any]:
    """A login or refresh answer issuing access-token-N and refresh-token-N, with expirations
    stated on the server's clock (``server_now``, default: ours)."""
    server_now = server_now or timezone.now()
    token_expiration = server_now + timedelta(seconds=lifetime)
    return {
        "success": True,
        "guid": "71067212-8141-4887-b48e-ccabcfb07196",
        "token": f"access-token-{n}",
        "tokenExpiration": token_expiration.isoformat(),
        "tokenLifetime": lifetime,
        "refreshToken": f"refresh-token-{n}",
        "refreshTokenExpiration": (token_expiration + REFRESH_LIFETIME).isoformat(),
    }


def form(call: Any) -> dict[str, list[str]]:
    return parse_qs(call.request.body)


def teletracker_fields(**overrides: Any) -> dict[str, Any]:
    """A TeleTracker connection as connecting stores it, password kept."""
    return {
        "provider": "teletracker",
        "scopes": "",
        "client_id": "",
        "account": {"username": "alice", "account_id": "42"},
        "credentials": json.dumps({"password": PASSWORD}),
        "refresh_expires_at": timezone.now() + REFRESH_LIFETIME,
        **overrides,
    }


@pytest.fixture(autouse=True)
def teletracker_configured(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"teletracker": teletracker_settings()}
    )


@pytest.fixture
def expired_connection(
    frozen_now: datetime, make_connection: Callable[..., Connection]
) -> Connection:
    """Expired a minute ago on the frozen clock (made after freezing it: NOW may be past)."""
    return make_connection(expires_at=timezone.now() - timedelta(minutes=1), **teletracker_fields())


def events(connection: Connection) -> list[tuple[str, str]]:
    return list(connection.events.order_by("pk").values_list("kind", "message"))


# The contract ----------------------------------------------------------------------------------


class TestTeleTracker(ProviderContract):
    provider_id = "teletracker"
    api_url = API_URL
    # "Any attempt to use an expired bearer token will result in a 401 or 403 response."
    expired_token_statuses = (401, 403)
    refresh_url = REFRESH_URL

    def provider_settings(self) -> dict[str, Any]:
        return teletracker_settings()

    def refresh_answer(self, n: int) -> dict[str, Any]:
        return answer(n)

    def dead_grant_answer(self) -> tuple[int, dict[str, Any]]:
        return 401, {"success": False, "message": "Invalid refresh token"}

    def connection_fields(self) -> dict[str, Any]:
        # No kept password: with one, a refused refresh token makes the provider log in again
        # (tested below) instead of requiring reauthorization, which is what the contract checks.
        fields = teletracker_fields(credentials="")
        del fields["provider"]  # the contract sets it
        return fields


# Connecting -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("account_id", "sent"),
    [
        ("42", {"username": ["alice"], "password": [PASSWORD], "account_id": ["42"]}),
        ("", {"username": ["alice"], "password": [PASSWORD]}),
        (None, {"username": ["alice"], "password": [PASSWORD]}),
    ],
)
def test_login_sends_the_form_fields_and_account_id_only_when_given(
    http_mock: responses.RequestsMock,
    organisation: Any,
    frozen_now: datetime,
    account_id: str | None,
    sent: dict[str, list[str]],
) -> None:
    http_mock.add(responses.POST, LOGIN_URL, json=answer(1))
    extra = {} if account_id is None else {"account_id": account_id}

    connection = connect_with_credentials(
        organisation, "teletracker", username="alice", password=PASSWORD, **extra
    )

    assert form(http_mock.calls[0]) == sent
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.access_token, stored.refresh_token) == ("access-token-1", "refresh-token-1")
    assert stored.expires_at == frozen_now + timedelta(hours=1)
    expected_account = {"username": "alice", **({"account_id": "42"} if account_id else {})}
    assert stored.account == expected_account


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [timedelta(hours=1), timedelta(hours=-1)])
def test_expiries_are_on_our_clock_whatever_the_servers_says(
    http_mock: responses.RequestsMock,
    organisation: Any,
    frozen_now: datetime,
    skew: timedelta,
) -> None:
    # The vendor: "compute expiry from tokenLifetime and your own clock". Its clock is an hour
    # off here, so tokenExpiration is wrong by an hour; the difference of its two expirations
    # (the refresh token's lifetime beyond the token's) is right whatever the skew.
    http_mock.add(responses.POST, LOGIN_URL, json=answer(1, server_now=frozen_now + skew))

    connection = connect_with_credentials(
        organisation, "teletracker", username="alice", password=PASSWORD
    )

    assert connection.expires_at == frozen_now + timedelta(hours=1)
    assert connection.refresh_expires_at == frozen_now + timedelta(hours=1) + REFRESH_LIFETIME


# Refreshing -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_refresh_rotates_both_tokens_in_one_update(
    http_mock: responses.RequestsMock, expired_connection: Connection, frozen_now: datetime
) -> None:
    http_mock.add(responses.POST, REFRESH_URL, json=answer(2, server_now=frozen_now))

    with CaptureQueriesContext(db_connection) as queries:
        assert refresh_connection(expired_connection) is True

    assert form(http_mock.calls[0]) == {"refresh_token": ["refresh-token-1"]}
    updates = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert '"access_token"' in updates[0] and '"refresh_token"' in updates[0]
    stored = Connection.objects.get(pk=expired_connection.pk)
    assert (stored.access_token, stored.refresh_token) == ("access-token-2", "refresh-token-2")
    assert stored.expires_at == frozen_now + timedelta(hours=1)
    assert stored.refresh_expires_at == frozen_now + timedelta(hours=1) + REFRESH_LIFETIME
    assert stored.status == Connection.Status.ACTIVE


@pytest.mark.django_db
def test_a_403_on_an_api_call_refreshes_once_and_retries_once(
    http_mock: responses.RequestsMock, make_connection: Callable[..., Connection]
) -> None:
    connection = make_connection(**teletracker_fields())  # valid for an hour, as far as we know
    url = API_URL + "vehicles"
    http_mock.add(responses.GET, url, status=403, json={"success": False})
    http_mock.add(responses.POST, REFRESH_URL, json=answer(2))
    http_mock.add(responses.GET, url, status=403, json={"success": False})

    response = connection.session().get("vehicles")

    # Still refused after a refresh: returned to the caller, no refresh loop.
    assert response.status_code == 403
    assert [call.request.url for call in http_mock.calls] == [url, REFRESH_URL, url]
    assert [call.request.headers["Authorization"] for call in http_mock.calls[::2]] == [
        "Bearer access-token-1",
        "Bearer access-token-2",
    ]


@pytest.mark.django_db
def test_a_refused_refresh_token_logs_in_again_with_the_kept_password(
    http_mock: responses.RequestsMock, expired_connection: Connection
) -> None:
    http_mock.add(
        responses.POST,
        REFRESH_URL,
        status=401,
        json={"success": False, "message": "Invalid refresh token"},
    )
    http_mock.add(responses.POST, LOGIN_URL, json=answer(2))

    assert refresh_connection(expired_connection) is True

    assert [call.request.url for call in http_mock.calls] == [REFRESH_URL, LOGIN_URL]
    assert form(http_mock.calls[1]) == {
        "username": ["alice"],
        "password": [PASSWORD],
        "account_id": ["42"],
    }
    stored = Connection.objects.get(pk=expired_connection.pk)
    assert (stored.access_token, stored.refresh_token) == ("access-token-2", "refresh-token-2")
    assert stored.status == Connection.Status.ACTIVE
    [(kind, message)] = events(stored)
    assert kind == "refreshed"
    assert message.startswith(
        "Logged in again with the kept password: the refresh token was refused ("
    )
    assert PASSWORD not in message and "refresh-token-1" not in message


@pytest.mark.django_db
def test_a_locally_expired_refresh_token_logs_in_without_trying_it(
    http_mock: responses.RequestsMock, make_connection: Callable[..., Connection]
) -> None:
    connection = make_connection(
        expires_at=timezone.now() - timedelta(minutes=1),
        **teletracker_fields(refresh_expires_at=timezone.now() - timedelta(seconds=1)),
    )
    http_mock.add(responses.POST, LOGIN_URL, json=answer(2))

    assert refresh_connection(connection) is True

    assert [call.request.url for call in http_mock.calls] == [LOGIN_URL]
    assert connection.access_token == "access-token-2"
    assert events(connection) == [
        ("refreshed", "Logged in again with the kept password: the refresh token has expired.")
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("refresh_expired", [False, True])
def test_without_a_kept_password_a_dead_refresh_token_requires_reauthorization(
    http_mock: responses.RequestsMock,
    make_connection: Callable[..., Connection],
    refresh_expired: bool,
) -> None:
    refresh_expires_at = timezone.now() + (
        -timedelta(seconds=1) if refresh_expired else REFRESH_LIFETIME
    )
    connection = make_connection(
        expires_at=timezone.now() - timedelta(minutes=1),
        **teletracker_fields(credentials="", refresh_expires_at=refresh_expires_at),
    )
    if not refresh_expired:
        http_mock.add(
            responses.POST,
            REFRESH_URL,
            status=401,
            json={"success": False, "message": "Invalid refresh token"},
        )

    with pytest.raises(ReauthorizationRequired, match="no password is kept"):
        refresh_connection(connection)

    assert LOGIN_URL not in [call.request.url for call in http_mock.calls]
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert stored.access_token == "access-token-1"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, json.dumps({"success": False, "message": "Internal problem"}), "application/json"),
        (502, "<html><body>Bad gateway</body></html>", "text/html"),
        (200, json.dumps({**answer(2), "token": None, "refreshToken": 5}), "application/json"),
        (200, '{"success": true, "token": ', "application/json"),
        (200, "[1, 2]", "application/json"),
    ],
    ids=[
        "success-false",
        "html-502",
        "neither-token-a-string",
        "invalid-json",
        "not-an-object",
    ],
)
def test_unusable_answers_are_provider_errors_that_keep_the_tokens(
    http_mock: responses.RequestsMock,
    expired_connection: Connection,
    status: int,
    body: str,
    content_type: str,
) -> None:
    http_mock.add(responses.POST, REFRESH_URL, status=status, body=body, content_type=content_type)

    with pytest.raises(ProviderError) as info:
        refresh_connection(expired_connection)

    assert not isinstance(info.value, ReauthorizationRequired)
    stored = Connection.objects.get(pk=expired_connection.pk)
    assert stored.status == Connection.Status.ERROR
    assert (stored.access_token, stored.refresh_token) == ("access-token-1", "refresh-token-1")
    assert stored.last_error


@pytest.mark.django_db
def test_a_message_echoing_the_refresh_token_is_redacted(
    http_mock: responses.RequestsMock, expired_connection: Connection, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    http_mock.add(
        responses.POST,
        REFRESH_URL,
        json={"success": False, "message": "refresh_token=refresh-token-1 is not known"},
    )

    with pytest.raises(ProviderError) as info:
        refresh_connection(expired_connection)

    stored = Connection.objects.get(pk=expired_connection.pk)
    for text in (str(info.value), stored.last_error, caplog.text, *events(stored)[0]):
        assert "refresh-token-1" not in text


# Single flight ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_threads_racing_on_one_expired_connection_cause_one_refresh(
    make_connection: Callable[..., Connection],
) -> None:
    calls: list[str] = []
    calls_lock = threading.Lock()

    def refresh_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
        with calls_lock:
            calls.append(parse_qs(request.body)["refresh_token"][0])
            n = len(calls) + 1
        return 200, {}, json.dumps(answer(n))

    connection = make_connection(
        expires_at=timezone.now() - timedelta(minutes=1), **teletracker_fields()
    )
    threads_count = 8

    def refresh_a_fresh_copy() -> str:
        mine = Connection.objects.get(pk=connection.pk)
        refresh_connection(mine)
        return mine.access_token

    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.add_callback(responses.POST, REFRESH_URL, callback=refresh_endpoint)
        outcomes = race(threads_count, refresh_a_fresh_copy)

    assert calls == ["refresh-token-1"]
    assert outcomes == ["access-token-2"] * threads_count
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.access_token, stored.refresh_token) == ("access-token-2", "refresh-token-2")
    assert [kind for kind, _ in events(stored)] == ["refreshed"]


# Scheduled refreshes and expiry bookkeeping -------------------------------------------------


@pytest.mark.django_db
def test_refresh_tokens_with_the_default_window_waits_for_half_the_token_life(
    http_mock: responses.RequestsMock,
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
) -> None:
    from oauth_connect.services import refresh_due_connections

    # An hour-long token: "--within 1d" covers it from the start, yet a cron run every
    # 15 minutes must not renew it every time, only once it is past half its life.
    connection = make_connection(
        last_refreshed_at=frozen_now,
        expires_at=frozen_now + timedelta(hours=1),
        **teletracker_fields(),
    )
    early = refresh_due_connections(timedelta(days=1))
    # Listed by the broad database filter, then left alone under the lock: no call made (any
    # call would fail here, as nothing answers it yet).
    assert (early.count("refreshed"), early.failed) == (0, 0)

    http_mock.add(responses.POST, REFRESH_URL, json=answer(2))
    with time_machine.travel(frozen_now + timedelta(minutes=31), tick=False):
        summary = refresh_due_connections(timedelta(days=1))
    assert summary.count("refreshed") == 1
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-2"


@pytest.mark.django_db
def test_a_new_refresh_token_replaces_the_old_expiry_even_when_unknown(
    http_mock: responses.RequestsMock, expired_connection: Connection
) -> None:
    body = answer(2)
    del body["refreshTokenExpiration"]
    http_mock.add(responses.POST, REFRESH_URL, json=body)
    refresh_connection(expired_connection)
    # The old token's date says nothing about the new one: unknown, so it is always tried.
    assert Connection.objects.get(pk=expired_connection.pk).refresh_expires_at is None


@pytest.mark.django_db
def test_a_secret_straddling_the_length_cut_is_masked_whole(
    http_mock: responses.RequestsMock, expired_connection: Connection
) -> None:
    # The description is cut to 300 characters; a secret across the cut must not leave its start.
    message = "x" * 290 + " refresh-token-1 is not known"
    http_mock.add(responses.POST, REFRESH_URL, json={"success": False, "message": message})

    with pytest.raises(ProviderError) as info:
        refresh_connection(expired_connection)

    assert "refresh-t" not in str(info.value)
    assert "refresh-t" not in Connection.objects.get(pk=expired_connection.pk).last_error


@pytest.mark.django_db
@pytest.mark.parametrize(
    "odd",
    [
        # Millennia apart: our expiry plus their difference overflows a datetime.
        {"tokenExpiration": "0001-01-01T00:00:00+00:00"},
        {"refreshTokenExpiration": "not a date", "tokenLifetime": "1e999"},
        {"refreshTokenExpiration": ["2026-12-22"], "tokenExpiration": {"a": 1}},
    ],
)
def test_nonsense_dates_still_store_the_rotated_tokens(
    http_mock: responses.RequestsMock, expired_connection: Connection, odd: dict[str, Any]
) -> None:
    # By the time the dates are read, the old refresh token is spent: the new tokens must be
    # stored whatever the dates say, with an unknown expiry.
    body = {**answer(2), "refreshTokenExpiration": "9999-12-31T23:59:59+00:00", **odd}
    http_mock.add(responses.POST, REFRESH_URL, json=body)

    assert refresh_connection(expired_connection) is True

    stored = Connection.objects.get(pk=expired_connection.pk)
    assert (stored.access_token, stored.refresh_token) == (body["token"], body["refreshToken"])
    assert stored.status == Connection.Status.ACTIVE
    assert stored.refresh_expires_at is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "stored"),
    [
        ({"token": None}, ("access-token-1", "refresh-token-2")),
        ({"token": 42}, ("access-token-1", "refresh-token-2")),
        ({"refreshToken": None}, ("access-token-2", "refresh-token-1")),
        ({"refreshToken": ["x"]}, ("access-token-2", "refresh-token-1")),
    ],
    ids=["null-token", "numeric-token", "null-refresh-token", "list-refresh-token"],
)
def test_half_a_rotation_keeps_the_usable_half_and_says_so(
    http_mock: responses.RequestsMock,
    expired_connection: Connection,
    change: dict[str, Any],
    stored: tuple[str, str],
) -> None:
    # TeleTracker rotates both tokens on every refresh: the refresh token we sent is spent once
    # it answers. Whichever new token is usable is kept; the failure is recorded.
    http_mock.add(responses.POST, REFRESH_URL, json={**answer(2), **change})

    with pytest.raises(ProviderError, match="can't be used: its (access|refresh) token is missing"):
        refresh_connection(expired_connection)

    row = Connection.objects.get(pk=expired_connection.pk)
    assert (row.access_token, row.refresh_token) == stored
    assert row.status == Connection.Status.ERROR and row.retry_not_before is not None
    assert row.events.latest("pk").kind == "refresh_failed"


@pytest.mark.django_db
def test_tokens_with_an_odd_success_are_used_and_the_event_says_so(
    http_mock: responses.RequestsMock, expired_connection: Connection
) -> None:
    http_mock.add(responses.POST, REFRESH_URL, json={**answer(2), "success": "true"})
    assert refresh_connection(expired_connection) is True
    row = Connection.objects.get(pk=expired_connection.pk)
    assert (row.access_token, row.refresh_token) == ("access-token-2", "refresh-token-2")
    assert "TeleTracker answered success: 'true', with tokens." in row.events.latest("pk").message
