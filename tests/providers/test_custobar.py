"""Custobar: HTTP basic exchanged for the user's one long-lived API token, fetched again after a
401 and rotated on demand. Its auth endpoints are mocked at a fake per-company base URL."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.core.management import call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from oauth_connect.exceptions import (
    InvalidCredentials,
    ProviderError,
    ReauthorizationRequired,
    UnsupportedOperation,
)
from oauth_connect.models import Connection
from oauth_connect.providers import registry
from oauth_connect.providers.custobar import CustobarProvider
from oauth_connect.services import (
    connect_with_credentials,
    refresh_due_connections,
    rotate_token,
)
from tests.conftest import TOKEN_URL, apicbase_settings, oauth_connect_settings, token_body
from tests.providers.contract import ProviderContract

BASE_URL = "https://acme.custobar.test/"
ACCESS_TOKEN_URL = BASE_URL + "api/auth/access-token/"
NEW_TOKEN_URL = BASE_URL + "api/auth/new-access-token/"
USERNAME = "alice@acme.test"
PASSWORD = "custobar-password-7f3a"  # noqa: S105 - a fake for the mocked API
ACCOUNT = {"company": "acme", "base_url": BASE_URL, "username": USERNAME}


def custobar_settings() -> dict[str, Any]:
    return {"BASE_URL": "https://{company}.custobar.test/"}


def kept_password_fields() -> dict[str, Any]:
    """A Custobar connection as connecting stores it: no refresh token, the password kept."""
    return {
        "provider": "custobar",
        "refresh_token": "",
        "token_type": "Token",
        "scopes": "",
        "client_id": "",
        "account": dict(ACCOUNT),
        "credentials": json.dumps({"password": PASSWORD}),
    }


def basic_auth(call: Any) -> str:
    """The ``username:password`` a request sent as HTTP basic."""
    scheme, _, encoded = call.request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded).decode()


@pytest.fixture(autouse=True)
def custobar_configured(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": apicbase_settings(), "custobar": custobar_settings()}
    )


@pytest.fixture
def custobar_connection(make_connection: Callable[..., Connection]) -> Connection:
    """An active Custobar connection with its password kept; its token never expires."""
    return make_connection(expires_at=None, **kept_password_fields())


# The contract ----------------------------------------------------------------------------------


class TestCustobar(ProviderContract):
    refresh_sets_expiry = False
    provider_id = "custobar"
    api_url = BASE_URL
    header_scheme = "Token"
    # Custobar's token has no expiry: a "refresh" fetches the one valid token again.
    refresh_method = responses.GET
    refresh_url = ACCESS_TOKEN_URL

    def provider_settings(self) -> dict[str, Any]:
        return custobar_settings()

    def refresh_answer(self, n: int) -> dict[str, Any]:
        return {"token": f"access-token-{n}"}

    def dead_grant_answer(self) -> tuple[int, dict[str, Any]]:
        # What Custobar answers basic auth with a wrong (e.g. changed) password.
        return 401, {"detail": "Invalid username/password."}

    def connection_fields(self) -> dict[str, Any]:
        fields = kept_password_fields()
        del fields["provider"]  # the contract sets it
        return fields


# Company resolution -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "acme",
        "ACME",
        "acme.custobar.test",
        "https://acme.custobar.test",
        "https://acme.custobar.test/",
        "  acme  ",
    ],
)
def test_company_resolves_from_name_domain_or_base_url(typed: str) -> None:
    provider = registry.get("custobar")
    assert isinstance(provider, CustobarProvider)
    assert provider.resolve_company(typed) == ("acme", BASE_URL)


@pytest.mark.parametrize(
    "typed",
    [
        "https://evil.test/",
        "acme.evil.test",
        "https://acme.custobar.test.evil.test/",
        "http://acme.custobar.test/",
        "a_b",
        "",
    ],
)
def test_anything_else_is_not_a_company(typed: str) -> None:
    # Credentials go to whatever host the company names: only hosts of BASE_URL's shape.
    with pytest.raises(InvalidCredentials) as info:
        registry.get("custobar").resolve_company(typed)  # type: ignore[attr-defined]
    assert info.value.field == "company"


# Connecting -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_connect_gets_the_token_with_basic_auth_and_stores_no_expiry(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.GET, ACCESS_TOKEN_URL, json={"token": "access-token-1"})

    connection = connect_with_credentials(
        organisation, "custobar", company="acme.custobar.test", username=USERNAME, password=PASSWORD
    )

    assert [call.request.method for call in http_mock.calls] == ["GET"]
    assert basic_auth(http_mock.calls[0]) == f"{USERNAME}:{PASSWORD}"
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == "access-token-1"
    assert stored.token_type == "Token"
    assert stored.expires_at is None
    assert stored.refresh_token == ""
    assert stored.account == ACCOUNT
    assert stored.stored_credential("password") == PASSWORD


# Using the token --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_401_fetches_the_current_token_and_retries_once(
    http_mock: responses.RequestsMock, custobar_connection: Connection
) -> None:
    # Someone rotated the token elsewhere: GET access-token returns the new one. Never POST
    # new-access-token, which would kill the token of every other user of this login.
    url = BASE_URL + "api/customers/"
    http_mock.add(responses.GET, url, status=401, json={"detail": "Invalid token."})
    http_mock.add(responses.GET, ACCESS_TOKEN_URL, json={"token": "access-token-2"})
    http_mock.add(responses.GET, url, json={"customers": []})

    response = custobar_connection.session().get("api/customers/")

    assert response.json() == {"customers": []}
    assert [(call.request.method, call.request.url) for call in http_mock.calls] == [
        ("GET", url),
        ("GET", ACCESS_TOKEN_URL),
        ("GET", url),
    ]
    assert basic_auth(http_mock.calls[1]) == f"{USERNAME}:{PASSWORD}"
    assert http_mock.calls[0].request.headers["Authorization"] == "Token access-token-1"
    assert http_mock.calls[2].request.headers["Authorization"] == "Token access-token-2"
    stored = Connection.objects.get(pk=custobar_connection.pk)
    assert stored.access_token == "access-token-2"
    assert stored.expires_at is None


@pytest.mark.django_db
def test_a_second_401_is_returned_not_retried_again(
    http_mock: responses.RequestsMock, custobar_connection: Connection
) -> None:
    url = BASE_URL + "api/customers/"
    http_mock.add(responses.GET, url, status=401, json={"detail": "Invalid token."})
    http_mock.add(responses.GET, ACCESS_TOKEN_URL, json={"token": "access-token-2"})
    http_mock.add(responses.GET, url, status=401, json={"detail": "Invalid token."})

    response = custobar_connection.session().get("api/customers/")

    assert response.status_code == 401
    assert len(http_mock.calls) == 3


@pytest.mark.django_db
def test_without_a_kept_password_a_401_requires_reauthorization(
    http_mock: responses.RequestsMock, make_connection: Callable[..., Connection]
) -> None:
    connection = make_connection(expires_at=None, **{**kept_password_fields(), "credentials": ""})
    url = BASE_URL + "api/customers/"
    http_mock.add(responses.GET, url, status=401, json={"detail": "Invalid token."})

    with pytest.raises(ReauthorizationRequired):
        connection.session().get("api/customers/")

    assert [call.request.url for call in http_mock.calls] == [url]  # no token endpoint
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert stored.access_token == "access-token-1"


# Rotating ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rotate_posts_new_access_token_and_stores_it_atomically(
    http_mock: responses.RequestsMock,
    custobar_connection: Connection,
    received: list[tuple[str, dict[str, Any]]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    http_mock.add(responses.POST, NEW_TOKEN_URL, json={"token": "access-token-2"})

    with (
        django_capture_on_commit_callbacks(execute=True),
        CaptureQueriesContext(db_connection) as queries,
    ):
        rotate_token(custobar_connection)

    assert [call.request.method for call in http_mock.calls] == ["POST"]
    assert basic_auth(http_mock.calls[0]) == f"{USERNAME}:{PASSWORD}"
    updates = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert '"access_token"' in updates[0]
    stored = Connection.objects.get(pk=custobar_connection.pk)
    assert stored.access_token == "access-token-2"
    assert stored.status == Connection.Status.ACTIVE
    assert stored.expires_at is None
    assert stored.stored_credential("password") == PASSWORD
    assert custobar_connection.access_token == "access-token-2"  # updated in place
    assert list(stored.events.values_list("kind", flat=True)) == ["rotated"]
    assert [name for name, _ in received] == ["rotated"]
    assert received[0][1]["connection"].pk == custobar_connection.pk


@pytest.mark.django_db
def test_rotate_without_a_kept_password_is_unsupported_and_changes_nothing(
    http_mock: responses.RequestsMock, make_connection: Callable[..., Connection]
) -> None:
    connection = make_connection(expires_at=None, **{**kept_password_fields(), "credentials": ""})
    before = Connection.objects.get(pk=connection.pk)

    with pytest.raises(UnsupportedOperation, match="password"):
        rotate_token(connection)

    assert len(http_mock.calls) == 0
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == "access-token-1"
    assert stored.status == Connection.Status.ACTIVE
    assert stored.updated_at == before.updated_at
    assert not stored.events.exists()


@pytest.mark.django_db
def test_rotate_refused_requires_reauthorization(
    http_mock: responses.RequestsMock, custobar_connection: Connection
) -> None:
    http_mock.add(
        responses.POST, NEW_TOKEN_URL, status=401, json={"detail": "Invalid username/password."}
    )

    with pytest.raises(ReauthorizationRequired):
        rotate_token(custobar_connection)

    stored = Connection.objects.get(pk=custobar_connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert stored.access_token == "access-token-1"
    assert list(stored.events.values_list("kind", flat=True)) == ["reauth_required"]


@pytest.mark.django_db
def test_rotate_failing_keeps_the_old_token_and_status(
    http_mock: responses.RequestsMock, custobar_connection: Connection
) -> None:
    http_mock.add(responses.POST, NEW_TOKEN_URL, status=500, body="<html>oops</html>")

    with pytest.raises(ProviderError) as info:
        rotate_token(custobar_connection)

    assert not isinstance(info.value, ReauthorizationRequired)
    stored = Connection.objects.get(pk=custobar_connection.pk)
    assert stored.access_token == "access-token-1"
    assert stored.status == Connection.Status.ACTIVE
    assert not stored.events.filter(kind="rotated").exists()
    assert stored.events.get(kind="refresh_failed").message.startswith("Rotation failed")


# Scheduled refreshes ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_token_without_expiry_is_never_due(
    http_mock: responses.RequestsMock,
    custobar_connection: Connection,
    make_connection: Callable[..., Connection],
    capsys: Any,
) -> None:
    # The control: an expired Apicbase connection is due, so the run does refresh something.
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(3))
    apicbase = make_connection(label="control", expires_at=timezone.now() - timedelta(minutes=1))
    Connection.objects.filter(pk=custobar_connection.pk).update(
        last_refreshed_at=timezone.now() - timedelta(days=400)
    )

    summary = refresh_due_connections(timedelta(days=3650))
    assert [result.connection_id for result in summary.results] == [apicbase.pk]

    Connection.objects.filter(pk=apicbase.pk).update(expires_at=timezone.now())
    call_command("refresh_tokens", "--within", "520w")
    output = capsys.readouterr().out
    assert f"#{apicbase.pk}: refreshed" in output
    assert f"#{custobar_connection.pk}" not in output
    assert "1 due" in output

    assert all(call.request.url == TOKEN_URL for call in http_mock.calls)
    stored = Connection.objects.get(pk=custobar_connection.pk)
    assert stored.access_token == "access-token-1"
    assert not stored.events.exists()


@pytest.mark.django_db
def test_a_401_for_the_current_token_fails_once_then_backs_off(
    http_mock: responses.RequestsMock, custobar_connection: Connection
) -> None:
    # Custobar hands back the very token its API refused: not a rotation (e.g. permissions).
    url = BASE_URL + "api/customers/"
    http_mock.add(responses.GET, url, status=401, json={"detail": "No permission."})
    http_mock.add(responses.GET, ACCESS_TOKEN_URL, json={"token": "access-token-1"})
    http_mock.add(responses.GET, url, status=401, json={"detail": "No permission."})
    session = custobar_connection.session()

    with pytest.raises(ProviderError, match="check the account's permissions"):
        session.get("api/customers/")
    # Backing off: the next refusal comes back as it is, without checking the password again.
    assert session.get("api/customers/").status_code == 401

    assert [call.request.url for call in http_mock.calls] == [url, ACCESS_TOKEN_URL, url]
    assert custobar_connection.status == Connection.Status.ERROR


@pytest.mark.django_db
def test_forgetting_the_password_keeps_the_token(custobar_connection: Connection) -> None:
    from oauth_connect.services import forget_credentials

    assert forget_credentials(custobar_connection) is True
    stored = Connection.objects.get(pk=custobar_connection.pk)
    assert not stored.has_stored_credentials
    assert stored.access_token == "access-token-1"
    assert forget_credentials(stored) is False


def test_the_account_reads_as_user_at_company(custobar_connection: Connection) -> None:
    assert custobar_connection.account_description == f"{USERNAME} @ acme"
