"""docs/providers/oauth2-settings-only.md, end to end: the page's own settings configure "acme"
against the sandbox's standard OAuth2 server on a live server; then a person connects through
the Connections page and the page's function calls the API, refreshes and disconnects."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from oauth2_provider.models import RefreshToken

from oauth_connect.models import Connection, ConnectionEvent
from oauth_connect.providers import OAuth2Provider, registry
from oauth_connect.services import check_connection, disconnect
from tests.docs.provider_pages import assert_table_tells_the_truth, point_samples_at
from tests.e2e.conftest import CLIENTS, Sandbox, event_kinds

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "providers/oauth2-settings-only.md"


@pytest.fixture
def page(
    run_docs_page: Callable[..., Any],
    sandbox: Sandbox,
    organisation: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    point_samples_at(
        monkeypatch,
        sandbox.url,
        ACME_CLIENT_ID="acme-client-id",
        ACME_CLIENT_SECRET="acme-client-secret",
    )
    names = {"organisation": organisation}
    return run_docs_page("providers/oauth2-settings-only.md", namespace=names)


@contextmanager
def token_requests(server: Sandbox) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every request oauth_connect sends to the token endpoint."""
    sent: list[dict[str, Any]] = []
    send = requests.Session.request

    def spy(session: requests.Session, method: str, url: str, **kwargs: Any) -> Any:
        if url == server.absolute("/sandbox/o/token/"):
            sent.append(kwargs)
        return send(session, method, url, **kwargs)

    with mock.patch.object(requests.Session, "request", spy):
        yield sent


def test_the_acme_settings_make_a_generic_oauth2_provider(page: Any, settings: Any) -> None:
    applied = page.output_of('"https://acme.example/oauth/token"')["OAUTH_CONNECT"]
    settings.OAUTH_CONNECT = applied
    provider = registry.get("acme")
    assert type(provider) is OAuth2Provider
    assert provider.display_name == "Acme"
    assert provider.settings["CLIENT_ID"] == "acme-client-id"
    assert_table_tells_the_truth(PAGE, OAuth2Provider)
    # Without NAME, people read the generic class's name, as the table warns.
    nameless = {key: value for key, value in applied["PROVIDERS"]["acme"].items() if key != "NAME"}
    assert OAuth2Provider("acme", nameless).display_name == "acme"


@pytest.mark.parametrize(
    ("change", "check_id"),
    [
        ({"TOKEN_URL": None, "AUTHORIZE_URL": None}, "E008"),  # nothing says it is OAuth2
        ({"API_URL": None}, "E010"),
        ({"CLIENT_SECRET": None}, "E011"),
        ({"CLIENT_AUTH": "post"}, "E012"),
        ({"TOKEN_URI": "https://acme.example/oauth/token"}, "E009"),
    ],
)
def test_manage_py_check_names_what_is_wrong(
    page: Any, settings: Any, change: dict[str, Any], check_id: str
) -> None:
    applied = page.output_of('"https://acme.example/oauth/token"')["OAUTH_CONNECT"]
    acme = {**applied["PROVIDERS"]["acme"], **change}
    acme = {key: value for key, value in acme.items() if value is not None}
    settings.OAUTH_CONNECT = {**applied, "PROVIDERS": {"acme": acme}}
    with pytest.raises(SystemCheckError, match=rf"oauth_connect\.{check_id}"):
        call_command("check")


def test_connect_call_refresh_and_disconnect_with_the_pages_settings(
    page: Any,
    sandbox: Sandbox,
    browser: requests.Session,
    organisation: Any,
) -> None:
    cards = browser.get(sandbox.absolute("/connections/")).text
    assert "Connect Acme (generic OAuth2)" in cards
    consent = sandbox.consent_page(browser, "acme")
    assert "scope=accounts" in consent.url and "code_challenge_method=S256" in consent.url

    with token_requests(sandbox) as sent:
        landed = sandbox.connect(browser, "acme")

    assert "Acme (generic OAuth2) is connected." in landed.text
    # CLIENT_AUTH "basic": the client authenticates with HTTP basic, not in the form.
    [exchange] = sent
    basic = base64.b64encode(":".join(CLIENTS["acme"]).encode()).decode()
    assert exchange["auth"].header == f"Basic {basic}" and "client_secret" not in exchange["data"]
    connection = Connection.objects.get(tenant=organisation, provider="acme")
    assert connection.client_id == CLIENTS["acme"][0]
    assert connection.scopes == "accounts"
    assert page.namespace["acme_username"](organisation) == "alice"
    assert check_connection(connection).startswith(
        "Acme (generic OAuth2) accepted the token: GET accounts/me/ answered HTTP 200"
    )

    # An expired token is refreshed at the sandbox, with the rotated refresh token stored.
    first_refresh = connection.refresh_token
    sandbox.expire(connection)
    assert page.namespace["acme_username"](organisation) == "alice"
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.refresh_token != first_refresh
    assert event_kinds(stored) == ["connected", "refreshed"]

    live_refresh_token = stored.refresh_token
    disconnect(stored)
    assert RefreshToken.objects.get(token=live_refresh_token).revoked is not None
    event = stored.events.get(kind=ConnectionEvent.Kind.DISCONNECTED)
    assert event.message == "Tokens revoked at Acme (generic OAuth2)."
