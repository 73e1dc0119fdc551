"""refresh_connection: rotation, failure states, backoff, single flight."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from oauth_connect.exceptions import (
    ConnectionUnavailable,
    ProviderError,
    ReauthorizationRequired,
)
from oauth_connect.models import ClientCredentials, Connection
from oauth_connect.providers import OAuth2Provider
from oauth_connect.services import refresh_connection, refresh_rejected_token
from oauth_connect.services.refresh import needs_reauth_message
from tests.conftest import CLIENT_ID, CLIENT_SECRET, TOKEN_URL, race, token_body

pytestmark = pytest.mark.django_db


def body(call: Any) -> dict[str, list[str]]:
    return parse_qs(call.request.body)


def expired(make_connection: Callable[..., Connection], **fields: Any) -> Connection:
    from django.utils import timezone

    return make_connection(expires_at=timezone.now() - timedelta(minutes=1), **fields)


def test_refresh_rotates_both_tokens_in_the_database(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    frozen_now: Any,
    received: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = expired(make_connection)

    with django_capture_on_commit_callbacks(execute=True):
        assert refresh_connection(connection) is True

    assert body(http_mock.calls[0]) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-token-1"],
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
    }
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.access_token, stored.refresh_token) == ("access-token-2", "refresh-token-2")
    assert stored.expires_at == frozen_now + timedelta(hours=1)
    assert stored.last_refreshed_at == frozen_now
    assert stored.status == Connection.Status.ACTIVE
    # The caller's instance is updated in place.
    assert connection.access_token == "access-token-2"
    assert list(stored.events.values_list("kind", flat=True)) == ["refreshed"]
    assert [name for name, _ in received] == ["refreshed"]
    assert received[0][1]["connection"].pk == connection.pk


def test_tokens_are_written_in_one_statement(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    # Access and refresh token must never be stored apart: a crash between two writes would
    # keep a dead refresh token.
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = expired(make_connection)
    with CaptureQueriesContext(db_connection) as queries:
        refresh_connection(connection)
    updates = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert '"access_token"' in updates[0] and '"refresh_token"' in updates[0]


def test_not_due_means_no_call(make_connection: Any, http_mock: responses.RequestsMock) -> None:
    connection = make_connection()  # valid for an hour, leeway 5 minutes
    assert refresh_connection(connection) is False
    assert connection.access_token == "access-token-1"


def test_force_refreshes_a_valid_token(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection()
    assert refresh_connection(connection, force=True) is True
    assert connection.access_token == "access-token-2"


def test_omitted_refresh_token_keeps_the_old_one(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json={"access_token": "access-token-2"})
    connection = expired(make_connection)
    refresh_connection(connection)
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.refresh_token == "refresh-token-1"
    assert stored.scopes == "accounts library"


def test_invalid_grant_requires_reauthorization(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    received: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=400, json={"error": "invalid_grant"})
    connection = expired(make_connection)

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(ReauthorizationRequired) as info,
    ):
        refresh_connection(connection)

    assert f"#{connection.pk}" in str(info.value)
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert "invalid_grant" in stored.last_error
    assert list(stored.events.values_list("kind", flat=True)) == ["reauth_required"]
    assert [name for name, _ in received] == ["reauth_required"]
    # No loop: asking again raises at once, without calling the provider.
    with pytest.raises(ReauthorizationRequired):
        refresh_connection(stored, force=True)
    assert len(http_mock.calls) == 1


def test_invalid_grant_after_rotation_elsewhere_adopts_the_new_tokens(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    connection = expired(make_connection)

    def rotated_behind_our_back(request: Any) -> tuple[int, dict[str, str], str]:
        # Another worker (one that doesn't take our lock) rotated the token meanwhile.
        Connection.objects.filter(pk=connection.pk).update(
            access_token="their-access", refresh_token="their-refresh"
        )
        return 400, {}, json.dumps({"error": "invalid_grant"})

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=rotated_behind_our_back)

    assert refresh_connection(connection) is False
    assert connection.status == Connection.Status.ACTIVE
    assert connection.access_token == "their-access"
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.ACTIVE


@pytest.mark.parametrize("status", [500, 502, 503])
def test_transient_failure_keeps_tokens_and_backs_off(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    frozen_now: Any,
    received: list[Any],
    status: int,
    django_capture_on_commit_callbacks: Any,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=status, body="<html>down</html>")
    connection = expired(make_connection)

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ProviderError) as info:
        refresh_connection(connection)

    assert type(info.value) is ProviderError
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ERROR
    assert (stored.access_token, stored.refresh_token) == ("access-token-1", "refresh-token-1")
    assert stored.consecutive_failures == 1
    assert stored.retry_not_before == frozen_now + timedelta(seconds=60)
    assert f"HTTP {status}" in stored.last_error
    assert [name for name, _ in received] == ["refresh_failed"]
    assert isinstance(received[0][1]["error"], ProviderError)


def test_backoff_doubles_and_is_capped(
    http_mock: responses.RequestsMock, make_connection: Any, frozen_now: Any, settings: Any
) -> None:
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "RETRY_BACKOFF_MAX": 150}
    http_mock.add(responses.POST, TOKEN_URL, status=500, json={})
    connection = expired(make_connection)
    delays = []
    for _ in range(3):
        with pytest.raises(ProviderError):
            refresh_connection(connection)
        delays.append((connection.retry_not_before - frozen_now).total_seconds())
    assert delays == [60, 120, 150]
    assert connection.consecutive_failures == 3


@pytest.mark.parametrize(("retry_after", "expected"), [("600", 600), ("999999", 6 * 3600)])
def test_retry_after_is_honoured_with_a_cap(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    frozen_now: Any,
    retry_after: str,
    expected: int,
) -> None:
    http_mock.add(
        responses.POST, TOKEN_URL, status=429, json={}, headers={"Retry-After": retry_after}
    )
    connection = expired(make_connection)
    with pytest.raises(ProviderError):
        refresh_connection(connection)
    assert connection.retry_not_before == frozen_now + timedelta(seconds=expected)


def test_recovery_after_failures_fires_a_signal(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    received: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = expired(
        make_connection, status=Connection.Status.ERROR, consecutive_failures=3, last_error="x"
    )
    with django_capture_on_commit_callbacks(execute=True):
        refresh_connection(connection)
    assert (connection.status, connection.consecutive_failures, connection.last_error) == (
        Connection.Status.ACTIVE,
        0,
        "",
    )
    assert connection.retry_not_before is None
    assert [name for name, _ in received] == ["refreshed", "recovered"]


def test_expired_without_refresh_token_requires_reauthorization(
    make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = expired(make_connection, refresh_token="")
    with pytest.raises(ReauthorizationRequired, match="nothing is stored to get a new one"):
        refresh_connection(connection)
    assert connection.status == Connection.Status.REAUTH_REQUIRED


def test_disconnected_connection_is_unavailable(make_connection: Any) -> None:
    connection = make_connection(status=Connection.Status.DISCONNECTED)
    with pytest.raises(ConnectionUnavailable, match="disconnected"):
        refresh_connection(connection, force=True)


def test_refresh_uses_the_client_that_issued_the_tokens(
    http_mock: responses.RequestsMock, make_connection: Any, organisation: Any
) -> None:
    ClientCredentials.objects.create(
        tenant=organisation, provider="apicbase", client_id="own-id", client_secret="own-secret"
    )
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(3))
    issued_by_tenant = expired(make_connection, client_id="own-id", label="own")
    issued_by_settings = expired(make_connection, client_id=CLIENT_ID, label="shared")

    refresh_connection(issued_by_tenant)
    refresh_connection(issued_by_settings)

    assert body(http_mock.calls[0])["client_secret"] == ["own-secret"]
    assert body(http_mock.calls[1])["client_secret"] == [CLIENT_SECRET]


def test_refresh_rejected_token_skips_when_already_replaced(
    make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection()
    assert refresh_rejected_token(connection, "an-older-token") is False
    assert connection.access_token == "access-token-1"


def test_no_secret_reaches_the_logs(
    http_mock: responses.RequestsMock, make_connection: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        status=400,
        json={"error": "invalid_grant", "error_description": "refresh-token-2 was used"},
    )
    connection = expired(make_connection)
    refresh_connection(connection)
    with pytest.raises(ReauthorizationRequired):
        refresh_connection(connection, force=True)
    assert "refreshed" in caplog.text and "reauth_required" in caplog.text
    for secret in (
        "access-token-1",
        "refresh-token-1",
        "access-token-2",
        "refresh-token-2",
        CLIENT_SECRET,
    ):
        assert secret not in caplog.text
    assert "refresh-token-2" not in Connection.objects.get(pk=connection.pk).last_error


@pytest.mark.django_db(transaction=True)
def test_threads_racing_on_one_expired_token_cause_one_refresh(
    make_connection: Any,
) -> None:
    calls = []

    def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
        calls.append(parse_qs(request.body)["refresh_token"][0])
        return 200, {}, json.dumps(token_body(len(calls) + 1))

    connection = expired(make_connection)
    threads_count = 8

    def refresh_a_fresh_copy() -> str:
        mine = Connection.objects.get(pk=connection.pk)
        refresh_connection(mine)
        return mine.access_token

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, TOKEN_URL, callback=token_endpoint)
        outcomes = race(threads_count, refresh_a_fresh_copy)

    assert calls == ["refresh-token-1"]
    assert outcomes == ["access-token-2"] * threads_count
    assert Connection.objects.get(pk=connection.pk).refresh_token == "refresh-token-2"


@pytest.mark.parametrize("expires_in", ["1e400", "NaN", -5, 10**20, "soon"])
def test_a_nonsense_lifetime_still_stores_the_rotated_tokens(
    http_mock: responses.RequestsMock, make_connection: Any, expires_in: Any
) -> None:
    # The provider has already rotated the refresh token: dropping its answer would kill the
    # connection. An unknown expiry just means "refresh on the first 401".
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2, expires_in=expires_in))
    connection = expired(make_connection)
    refresh_connection(connection)
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.refresh_token == "refresh-token-2"
    assert stored.expires_at is None
    assert stored.status == Connection.Status.ACTIVE


class Broken(OAuth2Provider):
    def refresh(self, client: Any, connection: Any, oauth_client: Any) -> Any:
        return {}["missing"]


def test_a_provider_class_bug_marks_the_connection_failed(
    make_connection: Any, settings: Any
) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["CLASS"] = "tests.services.test_refresh.Broken"
    connection = expired(make_connection)
    with pytest.raises(ProviderError, match=r"Broken.refresh\(\) failed unexpectedly \(KeyError\)"):
        refresh_connection(connection)
    assert connection.status == Connection.Status.ERROR


def test_forced_refresh_without_refresh_token_leaves_a_valid_token_alone(
    make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection(refresh_token="")  # valid for an hour
    assert refresh_connection(connection, force=True) is False
    assert connection.status == Connection.Status.ACTIVE


@pytest.mark.parametrize(
    ("last_error", "said"),
    [
        (
            "the Acme token endpoint refused the stored grant (invalid_grant). Someone must "
            "reconnect.",
            "It needs reauthorization: the Acme token endpoint refused the stored grant "
            "(invalid_grant). Someone must reconnect.",
        ),
        (
            "Revoked by the operator.",
            "It needs reauthorization: Revoked by the operator. Someone must reconnect it.",
        ),
        ("", "It needs reauthorization: someone must reconnect it."),
    ],
)
def test_the_reauthorization_message_says_what_to_do_once(last_error: str, said: str) -> None:
    connection = Connection(provider="apicbase", last_error=last_error)
    assert needs_reauth_message(connection) == said
