"""docs/providers/custobar.md, against the sandbox's fake Custobar on a live server: the settings
and their table, the connect form as described, connecting and calling from code, rotating,
forgetting the password, and what a 401 leads to with and without it."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from example_project.sandbox.custobar import CUSTOMERS
from example_project.sandbox.models import CustobarToken
from oauth_connect.exceptions import (
    InvalidCredentials,
    ReauthorizationRequired,
    UnsupportedOperation,
)
from oauth_connect.models import Connection
from oauth_connect.providers.custobar import CustobarProvider
from oauth_connect.services import check_connection, disconnect
from tests.docs.provider_pages import (
    assert_table_tells_the_truth,
    page_says,
    point_samples_at,
)
from tests.e2e.conftest import PASSWORD, Sandbox, event_kinds, record_statuses
from tests.e2e.test_custobar import rotate_elsewhere

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "providers/custobar.md"
USERNAME = "api@acme.example"  # the Custobar user the page's sample connects as
API_PASSWORD = "api user's pass phrase "  # noqa: S105 - the sandbox's; the space is part of it


@pytest.fixture
def api_user(db: None) -> Any:
    """The Custobar user of the page's sample (the sandbox's users are the project's)."""
    return get_user_model().objects.create_user(USERNAME, password=API_PASSWORD)


@pytest.fixture
def page(
    run_docs_page: Callable[..., Any],
    sandbox: Sandbox,
    api_user: Any,
    organisation: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    point_samples_at(monkeypatch, sandbox.url)
    names = {"organisation": organisation, "password": API_PASSWORD}
    return run_docs_page("providers/custobar.md", namespace=names)


def sandbox_tokens(user: Any) -> list[tuple[str, bool]]:
    """Every token the sandbox issued ``user``, oldest first, and whether it is still valid."""
    return [
        (token.token, token.revoked_at is None)
        for token in CustobarToken.objects.filter(user=user).order_by("pk")
    ]


def test_the_settings_table_and_the_company_check(page: Any, settings: Any) -> None:
    applied = page.output_of('"custobar": {}')["OAUTH_CONNECT"]
    provider = CustobarProvider("custobar", applied["PROVIDERS"]["custobar"])
    assert provider.settings["BASE_URL"] == "https://{company}.custobar.com/"
    assert_table_tells_the_truth(PAGE, CustobarProvider)

    settings.OAUTH_CONNECT = {
        **applied,
        "PROVIDERS": {"custobar": {"BASE_URL": "https://custobar.example/"}},
    }
    with pytest.raises(SystemCheckError, match=r"oauth_connect\.E013"):
        call_command("check")


def test_what_a_tenant_may_type_as_the_company(page: Any) -> None:
    provider = CustobarProvider("custobar", {})
    for typed in ("acme", "acme.custobar.com", "https://acme.custobar.com", " ACME "):
        assert provider.resolve_company(typed) == ("acme", "https://acme.custobar.com/")
    with pytest.raises(InvalidCredentials) as refused:
        provider.resolve_company("evil.example")
    assert refused.value.field == "company"
    assert str(refused.value) == (
        "'evil.example' is not a Custobar company: give its domain (acme.custobar.com), its "
        "name (acme) or its base URL (https://acme.custobar.com/)."
    )
    assert page_says(PAGE, str(refused.value).replace("'evil.example'", "'…'"))


def test_connecting_calling_rotating_and_forgetting_as_shown(
    received: list[tuple[str, dict[str, Any]]],
    page: Any,
    sandbox: Sandbox,
    api_user: Any,
) -> None:
    connection = page.namespace["connection"]
    assert connection.label == "marketing"
    assert connection.account == {
        "company": "acme",
        "base_url": sandbox.absolute("/sandbox/custobar/acme/"),
        "username": USERNAME,
    }
    assert connection.token_type == "Token"
    assert connection.expires_at is None
    # The call went to the company's own address, with the token of the time.
    [first, rotated] = sandbox_tokens(api_user)
    assert first[1] is False and rotated[1] is True  # rotate_token killed the first token
    response = page.namespace["response"]
    assert response.request.url == sandbox.absolute("/sandbox/custobar/acme/api/customers/")
    assert response.request.headers["Authorization"] == f"Token {first[0]}"
    assert page.namespace["customers"]["results"] == CUSTOMERS

    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == rotated[0]
    assert event_kinds(stored) == ["connected", "rotated"]
    assert [name for name, _ in received] == ["connected", "rotated"]  # the signals went out
    assert not stored.has_stored_credentials  # forgotten, last
    with pytest.raises(UnsupportedOperation) as refused:
        page.namespace["rotate_token"](stored)
    assert page_says(PAGE, refused.value.detail)
    assert refused.value.detail == (
        "Rotating a Custobar token needs the password, which was not kept. Rotate it in "
        "Custobar and reconnect, or reconnect keeping the password."
    )
    assert check_connection(stored).startswith(
        "Custobar accepted the token: GET api/customers/ answered HTTP 200"
    )
    # Tokens don't expire: the cron job never has a Custobar connection to refresh.
    printed = StringIO()
    call_command("refresh_tokens", "--json", stdout=printed)
    assert json.loads(printed.getvalue())["due"] == 0


def test_without_the_password_a_token_rotated_elsewhere_needs_reconnecting(
    page: Any,
    sandbox: Sandbox,
) -> None:
    connection = Connection.objects.get(pk=page.namespace["connection"].pk)
    rotate_elsewhere(sandbox, USERNAME, API_PASSWORD)

    with pytest.raises(ReauthorizationRequired):
        connection.session().get("api/customers/")

    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.REAUTH_REQUIRED


def test_the_connect_form_is_as_described_and_recovers_from_a_401(
    page: Any,
    sandbox: Sandbox,
    browser: requests.Session,
    user: Any,
    organisation: Any,
) -> None:
    form = browser.get(sandbox.absolute("/connections/custobar/connect/")).text
    for text in (
        "Company domain or base URL",
        "Username",
        "Password",
        "Label",
        "Password storage",
        "Keep the password (encrypted), so the connection can renew itself",
        "Store only the token: when it stops working, someone must reconnect",
    ):
        assert text in form and page_says(PAGE, text), text
    assert "e.g. acme, acme.custobar.com or https://acme.custobar.com" in form  # its help text
    wrong = sandbox.connect_with_credentials(
        browser, "custobar", company="acme", username="alice", password="wrong"
    )
    refused = "Custobar did not accept these credentials. Check them and try again."
    assert refused in wrong.text and page_says(PAGE, refused)

    page_html = sandbox.connected_with_credentials(
        browser, "custobar", company="acme", username="alice", password=PASSWORD
    ).text
    assert "alice @ acme" in page_html
    connection = Connection.objects.get(tenant=organisation, provider="custobar", label="")
    rotate_elsewhere(sandbox)  # another integration rotated alice's token
    session = connection.session()
    statuses = record_statuses(session)

    assert session.get("api/customers/").status_code == 200
    assert statuses == [401, 200]

    disconnect(connection)
    assert not connection.has_stored_credentials
    message = connection.events.first().message
    assert message == "Custobar offers no revocation. Tokens wiped here anyway."
    assert page_says(PAGE, message)
