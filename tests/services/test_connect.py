"""connect_with_credentials: credentials exchanged for tokens, the password kept only on request,
nothing stored on failure, and no secret anywhere but in the encrypted columns."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.db import connection as db

from oauth_connect.exceptions import (
    AuthorizationError,
    ConfigurationError,
    InvalidCredentials,
)
from oauth_connect.models import Connection
from oauth_connect.services import connect_with_credentials
from tests.conftest import TELETRACKER_LOGIN_URL

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("credential_providers")]

CUSTOBAR_TOKEN_URL = "https://acme.custobar.test/api/auth/access-token/"
LOGIN_URL = TELETRACKER_LOGIN_URL
PASSWORD = "typed-password-4d1e"  # noqa: S105 - a fake for the mocked APIs
TOKEN = "custobar-token-0b9c"  # noqa: S105
TELETRACKER_ANSWER = {
    "success": True,
    "token": "tt-access-token-5a2f",
    "tokenExpiration": "2026-11-23T13:00:00+00:00",
    "tokenLifetime": 3600,
    "refreshToken": "tt-refresh-token-c77d",
    "refreshTokenExpiration": "2026-12-22T13:00:00+00:00",
}
SECRETS = [PASSWORD, TOKEN, TELETRACKER_ANSWER["token"], TELETRACKER_ANSWER["refreshToken"]]


def connect_custobar(organisation: Any, **overrides: Any) -> Connection:
    credentials = {"company": "acme", "username": "alice", "password": PASSWORD, **overrides}
    return connect_with_credentials(organisation, "custobar", **credentials)


def raw_row(pk: int) -> tuple[Any, ...]:
    with db.cursor() as cursor:
        cursor.execute("SELECT * FROM oauth_connect_connection WHERE id = %s", [pk])
        return tuple(cursor.fetchone())


def raw_credentials(pk: int) -> Any:
    with db.cursor() as cursor:
        cursor.execute("SELECT credentials FROM oauth_connect_connection WHERE id = %s", [pk])
        return cursor.fetchone()[0]


# Success ----------------------------------------------------------------------------------------


def test_connect_stores_an_active_connection_with_the_password_kept(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": TOKEN})

    connection = connect_custobar(organisation, label="prod")

    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.tenant, stored.provider, stored.label) == (organisation, "custobar", "prod")
    assert stored.status == Connection.Status.ACTIVE
    assert stored.account == {
        "company": "acme",
        "base_url": "https://acme.custobar.test/",
        "username": "alice",
    }
    assert stored.access_token == TOKEN
    assert stored.has_stored_credentials
    assert stored.stored_credential("password") == PASSWORD
    assert list(stored.events.values_list("kind", flat=True)) == ["connected"]


def test_connect_teletracker_stores_both_tokens_and_expiries(
    http_mock: responses.RequestsMock, organisation: Any, frozen_now: Any
) -> None:
    http_mock.add(responses.POST, LOGIN_URL, json=TELETRACKER_ANSWER)

    connection = connect_with_credentials(
        organisation, "teletracker", username="alice", password=PASSWORD, account_id="7"
    )

    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == TELETRACKER_ANSWER["token"]
    assert stored.refresh_token == TELETRACKER_ANSWER["refreshToken"]
    # Our clock plus the lifetimes the answer gives (tokenLifetime; refresh minus token expiry).
    assert stored.expires_at == frozen_now + timedelta(hours=1)
    assert stored.refresh_expires_at == frozen_now + timedelta(hours=1) + timedelta(days=29)
    assert stored.account == {"username": "alice", "account_id": "7"}
    assert stored.stored_credential("password") == PASSWORD


def test_keep_password_false_stores_only_the_token(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": TOKEN})

    connection = connect_with_credentials(
        organisation,
        "custobar",
        keep_password=False,
        company="acme",
        username="alice",
        password=PASSWORD,
    )

    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == TOKEN
    assert not stored.has_stored_credentials
    assert stored.stored_credential("password") == ""
    assert raw_credentials(stored.pk) == ""
    assert "not kept" in stored.events.get().message


def test_reconnecting_the_same_label_updates_the_same_row(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": TOKEN})
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": "custobar-token-2"})
    first = connect_custobar(organisation, label="prod")

    second = connect_with_credentials(
        organisation,
        "custobar",
        "prod",
        keep_password=False,
        company="acme",
        username="bob",
        password="another-password",
    )

    assert second.pk == first.pk
    assert Connection.objects.count() == 1
    stored = Connection.objects.get()
    assert stored.access_token == "custobar-token-2"
    assert stored.account["username"] == "bob"
    assert not stored.has_stored_credentials  # the earlier kept password is forgotten
    assert list(stored.events.values_list("kind", flat=True)) == ["connected", "connected"]


# Refusals and failures store nothing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "field"),
    [
        ({"company": "acme", "username": "alice"}, "password"),
        ({"company": "acme", "username": "alice", "password": ""}, "password"),
        ({"company": "acme", "username": "   ", "password": PASSWORD}, "username"),
        ({"username": "alice", "password": PASSWORD}, "company"),
        ({"company": "acme", "username": "alice", "password": PASSWORD, "api_key": "x"}, "api_key"),
        ({"company": "evil.test", "username": "alice", "password": PASSWORD}, "company"),
    ],
)
def test_missing_unknown_or_bad_fields_are_named_without_calling_the_provider(
    http_mock: responses.RequestsMock,
    organisation: Any,
    credentials: dict[str, str],
    field: str,
) -> None:
    with pytest.raises(InvalidCredentials) as info:
        connect_with_credentials(organisation, "custobar", **credentials)

    assert info.value.field == field
    assert len(http_mock.calls) == 0
    assert not Connection.objects.exists()


def test_refused_credentials_are_invalid_and_store_nothing(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(
        responses.GET,
        CUSTOBAR_TOKEN_URL,
        status=401,
        json={"detail": "Invalid username/password."},
    )

    with pytest.raises(InvalidCredentials, match="did not accept these credentials") as info:
        connect_custobar(organisation)

    assert "Custobar" in str(info.value)
    assert not Connection.objects.exists()


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, '{"detail": "Server error"}', "application/json"),
        (502, "<html>Bad gateway</html>", "text/html"),
    ],
)
def test_a_failing_provider_asks_to_try_again_later_and_stores_nothing(
    http_mock: responses.RequestsMock,
    organisation: Any,
    status: int,
    body: str,
    content_type: str,
) -> None:
    http_mock.add(
        responses.GET, CUSTOBAR_TOKEN_URL, status=status, body=body, content_type=content_type
    )

    with pytest.raises(AuthorizationError, match="try again later") as info:
        connect_custobar(organisation)

    # An outage is not the tenant's typing: not InvalidCredentials, and no operator detail.
    assert not isinstance(info.value, InvalidCredentials)
    assert f"HTTP {status}" in str(info.value.__cause__)
    assert "OAUTH_CONNECT" not in str(info.value)
    assert not Connection.objects.exists()


def test_a_redirect_provider_cannot_connect_with_credentials(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    with pytest.raises(ConfigurationError, match="redirect"):
        connect_with_credentials(organisation, "apicbase", username="alice", password=PASSWORD)
    assert not Connection.objects.exists()


# Secrets ----------------------------------------------------------------------------------------


def test_the_database_row_holds_no_password_and_no_token(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.POST, LOGIN_URL, json=TELETRACKER_ANSWER)

    connection = connect_with_credentials(
        organisation, "teletracker", username="alice", password=PASSWORD
    )

    row = " ".join(str(value) for value in raw_row(connection.pk))
    assert "alice" in row  # the account is plain, for people to read
    assert raw_credentials(connection.pk)  # the password is there, encrypted
    for secret in SECRETS:
        assert secret not in row


@pytest.mark.parametrize(
    ("provider", "method", "url", "status", "body"),
    [
        # Custobar refusing, with the password echoed back.
        ("custobar", "GET", CUSTOBAR_TOKEN_URL, 401, {"detail": f"Bad password {PASSWORD}"}),
        # Custobar failing, echoing the password in an OAuth-style error.
        (
            "custobar",
            "GET",
            CUSTOBAR_TOKEN_URL,
            500,
            {"error": "server_error", "error_description": f"could not check {PASSWORD}"},
        ),
        # TeleTracker failing, echoing the password in its own "message" field.
        ("teletracker", "POST", LOGIN_URL, 500, {"success": False, "message": PASSWORD}),
        (
            "teletracker",
            "POST",
            LOGIN_URL,
            200,
            {"success": False, "message": f"password {PASSWORD} is wrong"},
        ),
    ],
    ids=["custobar-401", "custobar-500", "teletracker-500", "teletracker-success-false"],
)
def test_no_secret_in_logs_or_errors_even_when_the_provider_echoes_it(
    http_mock: responses.RequestsMock,
    organisation: Any,
    caplog: Any,
    provider: str,
    method: str,
    url: str,
    status: int,
    body: dict[str, Any],
) -> None:
    caplog.set_level(logging.DEBUG)
    http_mock.add(method, url, status=status, json=body)
    credentials = {"username": "alice", "password": PASSWORD}
    if provider == "custobar":
        credentials["company"] = "acme"

    with pytest.raises(AuthorizationError) as info:
        connect_with_credentials(organisation, provider, **credentials)

    error: BaseException | None = info.value
    while error is not None:  # the error and every error it was raised from
        assert PASSWORD not in str(error)
        error = error.__cause__
    assert PASSWORD not in caplog.text
    assert not Connection.objects.exists()


def test_no_secret_in_logs_after_a_successful_connect(
    http_mock: responses.RequestsMock, organisation: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    http_mock.add(responses.POST, LOGIN_URL, json=TELETRACKER_ANSWER)

    connection = connect_with_credentials(
        organisation, "teletracker", username="alice", password=PASSWORD
    )

    assert "connected" in caplog.text
    for secret in SECRETS:
        assert secret not in caplog.text
        assert secret not in repr(connection) and secret not in str(connection)


def test_django_error_reports_never_show_the_password(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    # What mail_admins, Sentry and the debug page render from a traceback's frame variables.
    import sys

    import requests
    from django.views.debug import ExceptionReporter

    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, body=requests.ConnectionError("down"))
    try:
        # Called directly: no frame of this test holds the password in a variable.
        connect_with_credentials(
            organisation, "custobar", company="acme", username="alice", password=PASSWORD
        )
    except Exception:
        report = ExceptionReporter(None, *sys.exc_info()).get_traceback_html()
    assert "connect_with_credentials" in report and "Local vars" in report
    assert PASSWORD not in report


def test_a_password_is_sent_exactly_as_typed(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    import base64

    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": TOKEN})
    connect_custobar(organisation, password="  spaces count  ")
    sent = http_mock.calls[0].request.headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(sent).decode() == "alice:  spaces count  "
