"""The whole life of a connection against a real authorization server: django-oauth-toolkit
(the example project's sandbox) on a live server, driven over HTTP like a browser would."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import requests
import time_machine
from django.db import connection as db_connection
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken
from requests.adapters import HTTPAdapter

from oauth_connect.exceptions import ReauthorizationRequired
from oauth_connect.models import Connection, ConnectionEvent
from oauth_connect.services import refresh_connection
from tests.conftest import race

from .conftest import CLIENTS, TOKEN_LIFETIME, Sandbox, event_kinds, record_statuses

pytestmark = pytest.mark.django_db(transaction=True)


def only_connection(tenant: Any, provider: str = "apicbase") -> Connection:
    return Connection.objects.get(tenant=tenant, provider=provider)


def test_apicbase_connects_and_calls_the_api(
    sandbox: Sandbox, browser: requests.Session, organisation: Any, user: Any
) -> None:
    page = sandbox.connect(browser, "apicbase", label="production")

    assert page.status_code == 200
    assert page.url == sandbox.absolute("/connections/")
    assert "Apicbase is connected." in page.text
    connection = only_connection(organisation)
    assert connection.status == Connection.Status.ACTIVE
    assert connection.label == "production"
    assert connection.scopes == "accounts library"
    assert connection.client_id == "sandbox-apicbase-client"
    assert event_kinds(connection) == ["connected"]
    # Named from the sandbox's accounts/me/: the card says who authorized.
    assert connection.account == {"username": "alice"}
    card = " ".join(browser.get(sandbox.absolute("/connections/")).text.split())
    assert "<strong>production</strong> · alice" in card
    # What the sandbox issued is what we hold, and its lifetime is the sandbox's.
    issued = AccessToken.objects.get(token=connection.access_token)
    assert issued.application == sandbox.applications["apicbase"]
    assert issued.user == user
    assert RefreshToken.objects.get(token=connection.refresh_token).access_token == issued
    assert connection.expires_at is not None
    lifetime = connection.expires_at - timezone.now()
    assert timedelta(seconds=TOKEN_LIFETIME - 60) < lifetime <= timedelta(seconds=TOKEN_LIFETIME)

    response = connection.session().get("accounts/me/")
    assert response.status_code == 200
    assert response.json() == {"username": "alice"}
    assert connection.session().get("/library/recipes/").json()["results"]

    # At rest the tokens are ciphertext: no column of the row holds what the sandbox issued.
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM oauth_connect_connection WHERE id = %s", [connection.pk])
        row = [str(value) for value in cursor.fetchone()]
    for secret in (issued.token, connection.refresh_token):
        assert not any(secret in value for value in row)
    assert sum(value.startswith("gAAAAA") for value in row) == 2  # Fernet tokens


def test_an_expired_token_is_refreshed_before_the_request(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    sandbox.connect(browser, "apicbase")
    connection = only_connection(organisation)
    first_access, first_refresh = connection.access_token, connection.refresh_token
    mark = sandbox.mark("apicbase")

    # Past the sandbox's expiry: the live server thread sees the same moved clock.
    with time_machine.travel(timezone.now() + timedelta(seconds=TOKEN_LIFETIME + 60), tick=True):
        assert AccessToken.objects.get(token=first_access).is_expired()
        session = connection.session()
        statuses = record_statuses(session)
        response = session.get("accounts/me/")

        assert response.status_code == 200
        assert response.json() == {"username": "alice"}
        assert statuses == [200]  # refreshed first: the expired token was never sent
        assert sandbox.issued_since("apicbase", mark) == 1
        assert RefreshToken.objects.get(token=first_refresh).revoked is not None
        newest = sandbox.newest_refresh_token("apicbase")
        assert newest.revoked is None
        stored = Connection.objects.get(pk=connection.pk)
        assert stored.refresh_token == newest.token
        assert stored.access_token == newest.access_token.token
        assert stored.access_token != first_access
        assert stored.expires_at > timezone.now() + timedelta(seconds=TOKEN_LIFETIME - 60)
        assert event_kinds(stored) == ["connected", "refreshed"]


def test_a_token_the_api_rejects_is_refreshed_once_and_the_request_retried(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    sandbox.connect(browser, "apicbase")
    connection = only_connection(organisation)
    first_refresh = connection.refresh_token
    mark = sandbox.mark("apicbase")
    # The sandbox stops accepting the access token while our expires_at still says it's good.
    # (Expired rather than deleted: the sandbox refuses a refresh token whose access token row
    # was deleted out of band.)
    AccessToken.objects.filter(token=connection.access_token).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    assert not connection.expires_within(timedelta(minutes=30))

    session = connection.session()
    statuses = record_statuses(session)
    response = session.get("accounts/me/")

    assert statuses == [401, 200]
    assert response.status_code == 200
    assert response.json() == {"username": "alice"}
    assert sandbox.issued_since("apicbase", mark) == 1
    assert RefreshToken.objects.get(token=first_refresh).revoked is not None
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.refresh_token == sandbox.newest_refresh_token("apicbase").token
    assert event_kinds(stored) == ["connected", "refreshed"]


def test_concurrent_requests_on_an_expired_connection_refresh_once(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    sandbox.connect(browser, "apicbase")
    connection = only_connection(organisation)
    sandbox.expire(connection)
    mark = sandbox.mark("apicbase")
    workers = 8

    def call_api() -> tuple[int, Any]:
        response = Connection.objects.get(pk=connection.pk).session().get("accounts/me/")
        return response.status_code, response.json()

    results = race(workers, call_api)

    assert results == [(200, {"username": "alice"})] * workers
    assert sandbox.issued_since("apicbase", mark) == 1
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.refresh_token == sandbox.newest_refresh_token("apicbase").token
    assert sandbox.refresh_tokens("apicbase").filter(revoked__isnull=True).count() == 1
    assert sandbox.access_tokens("apicbase").get().token == stored.access_token
    assert event_kinds(stored) == ["connected", "refreshed"]


def revoke_at_the_sandbox(sandbox: Sandbox, connection: Connection) -> None:
    """The tenant revoked our access at the provider."""
    RefreshToken.objects.get(token=connection.refresh_token).revoke()


def spend_behind_our_back(sandbox: Sandbox, connection: Connection) -> None:
    """Someone else refreshed with our refresh token; rotation killed the one we hold."""
    response = requests.post(
        sandbox.absolute("/sandbox/o/token/"),
        data={"grant_type": "refresh_token", "refresh_token": connection.refresh_token},
        auth=CLIENTS["apicbase"],
        timeout=10,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "kill_grant", [revoke_at_the_sandbox, spend_behind_our_back], ids=["revoked", "spent"]
)
def test_a_refused_refresh_token_requires_reauthorization(
    sandbox: Sandbox, browser: requests.Session, organisation: Any, kill_grant: Any
) -> None:
    sandbox.connect(browser, "apicbase")
    connection = only_connection(organisation)
    kill_grant(sandbox, connection)

    with pytest.raises(ReauthorizationRequired) as caught:
        refresh_connection(connection, force=True)

    assert caught.value.error_code == "invalid_grant"
    assert connection.status == Connection.Status.REAUTH_REQUIRED
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert "invalid_grant" in stored.last_error
    assert event_kinds(stored) == ["connected", "reauth_required"]
    event = stored.events.get(kind=ConnectionEvent.Kind.REAUTH_REQUIRED)
    assert stored.refresh_token not in event.message
    # From now on nothing is sent to the provider until someone reconnects.
    with (
        mock.patch.object(HTTPAdapter, "send", side_effect=AssertionError("HTTP was sent")),
        pytest.raises(ReauthorizationRequired),
    ):
        stored.session()
    page = browser.get(sandbox.absolute("/connections/"))
    assert "Needs reconnecting" in page.text
    assert "Reconnect" in page.text

    # Reconnect (the button posts the connection's label to the connect view): the same
    # connection comes back to life with new tokens.
    sandbox.connect(browser, "apicbase", label=stored.label)
    revived = only_connection(organisation)
    assert revived.pk == connection.pk
    assert revived.status == Connection.Status.ACTIVE
    assert revived.last_error == ""
    assert revived.session().get("accounts/me/").status_code == 200
    assert event_kinds(revived) == ["connected", "reauth_required", "connected"]


def test_a_generic_provider_from_settings_connects_with_basic_client_auth(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    page = sandbox.connect(browser, "acme")

    assert "Acme (generic OAuth2) is connected." in page.text
    connection = only_connection(organisation, "acme")
    assert connection.scopes == "accounts"
    assert connection.client_id == "sandbox-acme-client"
    issued = AccessToken.objects.get(token=connection.access_token)
    assert issued.application == sandbox.applications["acme"]
    session = connection.session()
    assert session.get("accounts/me/").json() == {"username": "alice"}
    # Only the scope it asked for: the library needs another (403 insufficient_scope).
    assert session.get("library/recipes/").status_code == 403

    # Refresh and revocation authenticate with HTTP basic too.
    assert refresh_connection(connection, force=True) is True
    assert connection.refresh_token == sandbox.newest_refresh_token("acme").token
    assert connection.session().get("accounts/me/").status_code == 200
    sandbox.post(browser, f"/connections/{connection.pk}/disconnect/").raise_for_status()
    assert not sandbox.access_tokens("acme").exists()
    assert not sandbox.refresh_tokens("acme").filter(revoked__isnull=True).exists()
    event = connection.events.get(kind="disconnected")
    assert event.message == "Tokens revoked at Acme (generic OAuth2)."


def test_disconnect_revokes_the_tokens_at_the_provider(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    sandbox.connect(browser, "apicbase")
    connection = only_connection(organisation)
    access, refresh = connection.access_token, connection.refresh_token

    page = sandbox.post(browser, f"/connections/{connection.pk}/disconnect/")

    assert page.status_code == 200
    assert "Apicbase is disconnected." in page.text
    assert not AccessToken.objects.filter(token=access).exists()
    assert RefreshToken.objects.get(token=refresh).revoked is not None
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.DISCONNECTED
    assert (stored.access_token, stored.refresh_token, stored.expires_at) == ("", "", None)
    assert stored.events.get(kind="disconnected").message == "Tokens revoked at Apicbase."


def test_reconnecting_revokes_the_grant_it_replaces(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    # Connecting again with the same label replaces the stored tokens. The ones replaced must
    # not stay valid at the provider: once we drop them nobody can revoke them, and even
    # Disconnect would leave that grant alive.
    sandbox.connect(browser, "apicbase")
    replaced = only_connection(organisation).refresh_token

    sandbox.connect(browser, "apicbase", reconnect=True)

    stored = only_connection(organisation)
    assert stored.refresh_token != replaced
    live = sandbox.refresh_tokens("apicbase").filter(revoked__isnull=True)
    assert not live.filter(token=replaced).exists(), "the replaced grant is still valid"
    assert live.get().token == stored.refresh_token


def test_declining_at_the_consent_page_connects_nothing(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    page = sandbox.connect(browser, "apicbase", allow=False)

    assert sandbox.callback_params(page, "apicbase")["error"] == ["access_denied"]
    assert page.url == sandbox.absolute("/connections/")
    assert "Access to Apicbase was declined, so nothing was connected." in page.text
    assert not Connection.objects.exists()
    assert not sandbox.access_tokens("apicbase").exists()


def test_another_organisation_cannot_disconnect_the_connection(
    sandbox: Sandbox, browser: requests.Session, organisation: Any, other_organisation: Any
) -> None:
    sandbox.connect(browser, "apicbase")
    connection = only_connection(organisation)
    intruder = sandbox.login(other_organisation.members.get().get_username())

    response = sandbox.post(intruder, f"/connections/{connection.pk}/disconnect/")

    assert response.status_code == 404
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ACTIVE
    assert stored.access_token == connection.access_token
    assert AccessToken.objects.filter(token=connection.access_token).exists()
    their_page = intruder.get(sandbox.absolute("/connections/")).text
    assert f'data-connection="{connection.pk}"' not in their_page
