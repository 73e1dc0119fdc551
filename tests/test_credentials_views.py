"""The connect page of providers that take credentials (Custobar, TeleTracker): the form, what
a good or bad login does, and that a typed password never comes back to the browser."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from oauth_connect.exceptions import ConnectionBusy
from oauth_connect.models import Connection
from tests.conftest import TELETRACKER_LOGIN_URL

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("credential_providers")]

LIST = reverse("oauth_connect:list")
CUSTOBAR = reverse("oauth_connect:connect", kwargs={"provider": "custobar"})
TELETRACKER = reverse("oauth_connect:connect", kwargs={"provider": "teletracker"})
CUSTOBAR_TOKEN_URL = "https://acme.custobar.test/api/auth/access-token/"
LOGIN_URL = TELETRACKER_LOGIN_URL
PASSWORD = "typed-in-browser-3e8b"  # noqa: S105 - a fake for the mocked APIs
LOGIN_ANSWER = {
    "success": True,
    "token": "tt-access-token",
    "tokenExpiration": "2026-11-23T13:00:00+00:00",
    "tokenLifetime": 3600,
    "refreshToken": "tt-refresh-token",
    "refreshTokenExpiration": "2026-12-22T13:00:00+00:00",
}


class _Inputs(HTMLParser):
    """Every ``<input>`` of a page, by name: a list of their attribute dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, list[dict[str, str | None]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("name"):
            self.inputs.setdefault(str(values["name"]), []).append(values)


def inputs(html: str) -> dict[str, list[dict[str, str | None]]]:
    parser = _Inputs()
    parser.feed(html)
    return parser.inputs


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def custobar_form(**overrides: str) -> dict[str, str]:
    return {
        "company": "acme",
        "username": "alice",
        "password": PASSWORD,
        "label": "",
        "password_storage": "keep",
        **overrides,
    }


# The form ---------------------------------------------------------------------------------------


def test_connect_page_shows_the_credential_fields_and_storage_choices(
    logged_in_client: Client,
) -> None:
    response = logged_in_client.get(CUSTOBAR)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Connect Custobar" in html
    fields = inputs(html)
    assert {"company", "username", "password", "label", "password_storage"} <= set(fields)
    [password] = fields["password"]
    assert password["type"] == "password"
    assert "value" not in password
    assert {choice["value"] for choice in fields["password_storage"]} == {"keep", "token_only"}
    assert all(choice["type"] == "radio" for choice in fields["password_storage"])


# Custobar ---------------------------------------------------------------------------------------


def test_good_credentials_connect_and_the_card_shows_the_username(
    logged_in_client: Client, http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": "custobar-token"})

    response = logged_in_client.post(CUSTOBAR, custobar_form(label="prod"))

    assert response.status_code == 302 and response["Location"] == LIST
    assert messages_of(response) == ["Custobar is connected."]
    connection = Connection.objects.get()
    assert (connection.tenant, connection.provider, connection.label) == (
        organisation,
        "custobar",
        "prod",
    )
    assert connection.stored_credential("password") == PASSWORD
    page = logged_in_client.get(LIST).content.decode()
    assert "alice @ acme" in page
    assert PASSWORD not in page and "custobar-token" not in page


def test_a_refused_password_is_a_message_and_is_not_echoed(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(
        responses.GET,
        CUSTOBAR_TOKEN_URL,
        status=401,
        json={"detail": "Invalid username/password."},
    )

    response = logged_in_client.post(CUSTOBAR, custobar_form())

    assert response.status_code == 200
    assert "did not accept these credentials" in " ".join(messages_of(response))
    html = response.content.decode()
    assert "did not accept these credentials" in html
    assert PASSWORD not in html
    [password] = inputs(html)["password"]
    assert "value" not in password
    assert inputs(html)["username"][0]["value"] == "alice"  # what isn't secret stays filled in
    assert not Connection.objects.exists()


@pytest.mark.parametrize("company", ["", "evil.test"])
def test_a_missing_or_foreign_company_is_a_form_error(
    logged_in_client: Client, http_mock: responses.RequestsMock, company: str
) -> None:
    response = logged_in_client.post(CUSTOBAR, custobar_form(company=company))

    assert response.status_code == 200
    assert response.context["form"].errors["company"]
    assert PASSWORD not in response.content.decode()
    assert len(http_mock.calls) == 0
    assert not Connection.objects.exists()


def test_a_field_error_is_described_by_its_field_and_every_id_is_unique(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    response = logged_in_client.post(CUSTOBAR, custobar_form(username=""))

    html = response.content.decode()
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert sorted(id_ for id_ in set(ids) if ids.count(id_) > 1) == []
    [username] = inputs(html)["username"]
    # Screen readers read the error and the help with the field they are about.
    assert "id_username_error" in str(username["aria-describedby"])
    assert 'id="id_username_error"' in html and username["aria-invalid"] == "true"
    assert 'id="id_company_helptext"' in html
    assert len(http_mock.calls) == 0


def test_token_only_stores_no_password(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": "custobar-token"})

    response = logged_in_client.post(CUSTOBAR, custobar_form(password_storage="token_only"))

    assert response.status_code == 302
    connection = Connection.objects.get()
    assert connection.access_token == "custobar-token"
    assert not connection.has_stored_credentials


def test_an_unknown_storage_choice_is_a_form_error(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    response = logged_in_client.post(CUSTOBAR, custobar_form(password_storage="plaintext"))

    assert response.status_code == 200
    assert response.context["form"].errors["password_storage"]
    assert not Connection.objects.exists()


# TeleTracker ------------------------------------------------------------------------------------


def test_teletracker_page_has_an_optional_account_id(logged_in_client: Client) -> None:
    response = logged_in_client.get(TELETRACKER)

    assert response.status_code == 200
    fields = inputs(response.content.decode())
    assert {"username", "password", "account_id", "password_storage"} <= set(fields)
    assert "company" not in fields
    assert "required" not in fields["account_id"][0]
    assert "required" in fields["username"][0]
    assert fields["password"][0]["type"] == "password"


@pytest.mark.parametrize(
    ("account_id", "sent"),
    [("", None), ("42", ["42"])],
)
def test_teletracker_connects_with_or_without_an_account_id(
    logged_in_client: Client,
    http_mock: responses.RequestsMock,
    account_id: str,
    sent: list[str] | None,
) -> None:
    http_mock.add(responses.POST, LOGIN_URL, json=LOGIN_ANSWER)

    response = logged_in_client.post(
        TELETRACKER,
        {
            "username": "alice",
            "password": PASSWORD,
            "account_id": account_id,
            "password_storage": "token_only",
        },
        follow=True,
    )

    assert response.redirect_chain == [(LIST, 302)]
    assert "TeleTracker is connected." in response.content.decode()
    assert parse_qs(http_mock.calls[0].request.body).get("account_id") == sent
    connection = Connection.objects.get()
    assert connection.provider == "teletracker"
    assert connection.refresh_token == "tt-refresh-token"
    assert not connection.has_stored_credentials
    assert ("account_id" in connection.account) is bool(account_id)


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (401, {"success": False, "message": "Invalid username or password"}),
        # The page shows the provider's own words when it fails: never the password within them.
        (200, {"success": False, "message": f"password {PASSWORD} is not valid here"}),
    ],
    ids=["refused", "echoing-the-password"],
)
def test_a_refused_teletracker_login_is_a_message_without_the_password(
    logged_in_client: Client, http_mock: responses.RequestsMock, status: int, answer: Any
) -> None:
    http_mock.add(responses.POST, LOGIN_URL, status=status, json=answer)

    response = logged_in_client.post(
        TELETRACKER,
        {"username": "alice", "password": PASSWORD, "password_storage": "keep"},
    )

    assert response.status_code == 200
    assert messages_of(response)
    assert PASSWORD not in response.content.decode()
    assert not Connection.objects.exists()


def test_posted_credentials_are_hidden_from_error_reports(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, status=401, json={"detail": "no"})
    response = logged_in_client.post(CUSTOBAR, custobar_form())
    # Django's error reporter masks every POST parameter of this request.
    assert response.wsgi_request.sensitive_post_parameters == "__ALL__"


def test_a_provider_outage_is_a_plain_message(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(
        responses.GET,
        CUSTOBAR_TOKEN_URL,
        status=502,
        body="<html>Bad gateway</html>",
        content_type="text/html",
    )
    response = logged_in_client.post(CUSTOBAR, custobar_form())
    assert messages_of(response) == [
        "Custobar could not be reached or answered unexpectedly, so nothing was connected. "
        "Please try again later."
    ]
    assert "OAUTH_CONNECT" not in response.content.decode()


def test_connecting_with_credentials_goes_back_to_next(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    # As the redirect flow does: the page that sent the person here gets them back.
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": "t"})
    form = logged_in_client.get(CUSTOBAR + "?next=/reports/").content.decode()
    assert 'name="next" value="/reports/"' in form

    response = logged_in_client.post(CUSTOBAR, {**custobar_form(), "next": "/reports/"})

    assert response.status_code == 302 and response["Location"] == "/reports/"


def test_a_busy_connection_is_a_plain_message(
    logged_in_client: Client, http_mock: responses.RequestsMock, monkeypatch: Any
) -> None:
    def busy(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionBusy("custobar connection #1 is locked by another worker.")

    monkeypatch.setattr("oauth_connect.services.connect_with_credentials", busy)

    response = logged_in_client.post(CUSTOBAR, custobar_form(label="prod"))

    assert response.status_code == 200
    assert messages_of(response) == [
        "Custobar is busy being updated; please try again in a moment."
    ]
    assert PASSWORD not in response.content.decode()
