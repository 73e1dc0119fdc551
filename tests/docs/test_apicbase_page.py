"""docs/providers/apicbase.md, against the sandbox that plays Apicbase on a live server: the
settings shown pass the checks and their table tells the truth, the link connects, a tenant's
own client is used for new token sets only, the API answers, and a refused refresh token turns
into "reconnect"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
import time_machine
from django.utils import timezone

from example_project.sandbox.setup import register_client
from oauth_connect.models import Connection, ConnectionEvent
from oauth_connect.providers import OAuthClient
from oauth_connect.providers.apicbase import ApicbaseProvider
from oauth_connect.services import disconnect, refresh_connection
from tests.conftest import KEY
from tests.docs.provider_pages import (
    assert_table_tells_the_truth,
    matches_output,
    page_says,
    point_samples_at,
)
from tests.e2e.conftest import CLIENTS, Sandbox, event_kinds, hidden_inputs
from tests.e2e.test_sandbox_flow import spend_behind_our_back

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "providers/apicbase.md"
LINK = "/connections/apicbase/connect/?label=production"
# What a library owner copied from Apicbase's API settings page.
OWN_CLIENT = ("library-owner-client", "library-owner-secret")


def register_own_client_at(server: Sandbox) -> None:
    """Apicbase issued the library owner a client of their own."""
    register_client(
        "library owner's client", *OWN_CLIENT, server.absolute("/connections/apicbase/callback/")
    )


@pytest.fixture
def connected(
    sandbox: Sandbox,
    browser: requests.Session,
    organisation: Any,
) -> Connection:
    """The tenant clicked the page's link and connected Apicbase as "production"."""
    form = browser.get(sandbox.absolute(LINK))
    assert 'value="production"' in form.text, "the label in the link isn't pre-filled"
    sandbox.connect(browser, "apicbase", label="production")
    return Connection.objects.get(tenant=organisation, provider="apicbase", label="production")


@pytest.fixture
def page(
    run_docs_page: Callable[..., Any],
    sandbox: Sandbox,
    connected: Connection,
    organisation: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    point_samples_at(
        monkeypatch,
        sandbox.url,
        APICBASE_CLIENT_ID="docs-client-id",
        APICBASE_CLIENT_SECRET="docs-client-secret",
    )
    register_own_client_at(sandbox)
    client_id, client_secret = OWN_CLIENT
    names = {"organisation": organisation, "client_id": client_id, "client_secret": client_secret}
    return run_docs_page("providers/apicbase.md", namespace=names)


def test_the_production_settings_are_apicbase_with_its_defaults(page: Any) -> None:
    applied = page.output_of('env("APICBASE_CLIENT_ID")')["OAUTH_CONNECT"]
    assert applied["ENCRYPTION_KEYS"] == [KEY]
    provider = ApicbaseProvider("apicbase", applied["PROVIDERS"]["apicbase"])
    assert provider.settings["TOKEN_URL"] == "https://api.apicbase.com/oauth/token/"
    assert provider.settings["CLIENT_ID"] == "docs-client-id"
    url = provider.authorization_url(
        oauth_client=OAuthClient("docs-client-id", "docs-client-secret"),
        redirect_uri="https://your-host/connections/apicbase/callback/",
        state="s",
        code_challenge="c",
    )
    assert url.startswith("https://app.apicbase.com/oauth/authorize/?response_type=code&")
    assert "scope=accounts+library" in url  # as Apicbase's own example writes it
    assert_table_tells_the_truth(PAGE, ApicbaseProvider)


def test_the_link_and_the_api_calls_work_as_shown(page: Any, connected: Connection) -> None:
    assert page.output_of("{% url").strip() == f'<a href="{LINK}">Connect Apicbase</a>'
    assert page.namespace["connection"] == connected
    assert page.namespace["me"] == {"username": "alice"}
    assert [recipe["name"] for recipe in page.namespace["recipes"]] == ["Tomato soup", "Focaccia"]
    assert page.namespace["recipe_names"](connected) == ["Tomato soup", "Focaccia"]


def test_check_connection_prints_what_the_page_shows(
    capsys: pytest.CaptureFixture[str], page: Any
) -> None:
    printed = capsys.readouterr().out
    assert matches_output(page.output_of("accepted the token"), printed), printed


def test_a_tenants_own_client_serves_new_token_sets_only(
    page: Any,
    sandbox: Sandbox,
    browser: requests.Session,
    connected: Connection,
    organisation: Any,
) -> None:
    sandbox.connect(browser, "apicbase", label="development")

    development = Connection.objects.get(tenant=organisation, label="development")
    assert development.client_id == OWN_CLIENT[0]
    assert development.session().get("accounts/me/").json() == {"username": "alice"}
    # The production token set was issued to the settings' client and is refreshed with it: the
    # sandbox refuses a refresh token presented by any other client.
    assert refresh_connection(connected, force=True) is True
    assert connected.client_id == CLIENTS["apicbase"][0]
    assert refresh_connection(development, force=True) is True


def test_a_refused_refresh_token_means_reconnect(
    received: list[tuple[str, dict[str, Any]]],
    page: Any,
    sandbox: Sandbox,
    browser: requests.Session,
    connected: Connection,
) -> None:
    spend_behind_our_back(sandbox, connected)  # a script refreshed with our refresh token
    sandbox.expire(connected)
    recipe_names = page.namespace["recipe_names"]

    assert recipe_names(connected) is None

    stored = Connection.objects.get(pk=connected.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert "invalid_grant" in stored.last_error
    assert event_kinds(stored) == ["connected", "reauth_required"]
    assert [name for name, _ in received][-1] == "reauth_required"  # the signal went out
    mark = sandbox.mark("apicbase")
    assert recipe_names(stored) is None  # and now without calling Apicbase at all
    assert sandbox.issued_since("apicbase", mark) == 0
    page_html = browser.get(sandbox.absolute("/connections/")).text
    assert "Needs reconnecting" in page_html and "Reconnect" in page_html


def test_without_a_revoke_url_disconnect_only_wipes_the_tokens(
    page: Any, settings: Any, make_connection: Callable[..., Connection]
) -> None:
    settings.OAUTH_CONNECT = page.output_of('env("APICBASE_CLIENT_ID")')["OAUTH_CONNECT"]
    connection = make_connection(label="old")

    disconnect(connection)  # no HTTP: nothing to call

    assert connection.status == Connection.Status.DISCONNECTED
    assert connection.access_token == ""
    event = connection.events.get(kind=ConnectionEvent.Kind.DISCONNECTED)
    assert event.message == "Apicbase offers no revocation. Tokens wiped here anyway."
    assert page_says(PAGE, event.message)


def test_what_a_person_reads_when_connecting_fails(
    page: Any,
    sandbox: Sandbox,
    browser: requests.Session,
) -> None:
    declined = sandbox.connect(browser, "apicbase", label="declined", allow=False)
    said = "Access to Apicbase was declined, so nothing was connected."
    assert said in declined.text and page_says(PAGE, said)
    # A person who lingers more than Apicbase's minute before the code reaches the callback.
    consent = sandbox.consent_page(browser, "apicbase", label="slow")
    approved = browser.post(
        consent.url,
        data={**hidden_inputs(consent.text), "allow": "Authorize"},
        allow_redirects=False,
    )
    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=True):
        back = browser.get(approved.headers["Location"])
    said = (
        "Apicbase did not accept the authorization (it expired or was already used). "
        "Please try again."
    )
    assert said in back.text and page_says(PAGE, said)
    assert not Connection.objects.filter(label__in=["declined", "slow"]).exists()
