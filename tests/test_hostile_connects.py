"""A hostile or broken provider at connect time (the OAuth callback's code exchange, a credential
connect): the tenant reads a plain message, never a 500; nothing is stored; no secret reaches
the page, the error, the log or the database."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from oauth_connect.exceptions import AuthorizationError, InvalidCredentials
from oauth_connect.models import Connection
from oauth_connect.providers.oauth2 import OAuth2Provider
from oauth_connect.providers.registry import registered
from oauth_connect.services import connect_with_credentials
from oauth_connect.services.authorize import SESSION_KEY, PendingAuthorization
from tests.conftest import (
    CLIENT_SECRET,
    TELETRACKER_LOGIN_URL,
    TOKEN_URL,
    apicbase_settings,
    oauth_connect_settings,
    token_body,
)
from tests.hostile_server import (
    HostileServer,
    hostile_server_fixture,  # noqa: F401 - the fixture
    response,
)

pytestmark = pytest.mark.django_db
CONNECT = reverse("oauth_connect:connect", kwargs={"provider": "apicbase"})
CALLBACK = reverse("oauth_connect:callback", kwargs={"provider": "apicbase"})
LIST = reverse("oauth_connect:list")
CUSTOBAR_TOKEN_URL = "https://acme.custobar.test/api/auth/access-token/"


def callback(client: Client) -> Any:
    """Start the flow, then come back from the provider with a code."""
    started = client.post(CONNECT, {})
    state = parse_qs(urlsplit(started["Location"]).query)["state"][0]
    return client.get(CALLBACK, {"code": "the-code", "state": state})


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


HOSTILE_TOKEN_ANSWERS = {
    "deeply nested JSON": {"body": "[" * 100_000 + "]" * 100_000},
    "access token with CR/LF": {"json": token_body(2, access_token="evil\r\nX-Injected: 1")},
    "access token with NUL": {"json": token_body(2, access_token="evil\x00token")},
    "refresh token with NUL": {"json": token_body(2, refresh_token="evil\x00refresh")},
    "a megabyte of access token": {"json": token_body(2, access_token="a" * 1024 * 1024)},
    "access token not a string": {"json": token_body(2, access_token={"nested": ["x"]})},
}


@pytest.mark.parametrize("answer", HOSTILE_TOKEN_ANSWERS.values(), ids=HOSTILE_TOKEN_ANSWERS)
def test_an_unusable_token_answer_at_the_callback_is_a_plain_message(
    logged_in_client: Client,
    http_mock: responses.RequestsMock,
    caplog: Any,
    answer: dict[str, Any],
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, **answer)
    response = callback(logged_in_client)

    assert response.status_code == 302 and response["Location"] == LIST
    [message] = messages_of(response)
    assert "could not be reached or answered unexpectedly" in message
    assert not Connection.objects.exists()
    assert CLIENT_SECRET not in caplog.text and "the-code" not in caplog.text


@pytest.mark.parametrize(
    ("answer", "stored_type", "stored_scopes", "note"),
    [
        ({"token_type": "B" * 200}, "Bearer", "accounts library", "token type was unusable"),
        ({"token_type": "Bearer\r\nX: y"}, "Bearer", "accounts library", "token type"),
        ({"scope": "accounts\x00library"}, "Bearer", "", "scopes was unusable"),
        ({"scope": "x" * 10_000}, "Bearer", "", "scopes was unusable"),
    ],
)
def test_odd_descriptive_values_are_replaced_and_said_not_a_lost_grant(
    logged_in_client: Client,
    http_mock: responses.RequestsMock,
    answer: dict[str, Any],
    stored_type: str,
    stored_scopes: str,
    note: str,
) -> None:
    # The tokens are good: the grant is kept, and the event log says what was set aside.
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2, **answer))
    response = callback(logged_in_client)

    assert messages_of(response) == ["Apicbase is connected."]
    connection = Connection.objects.get()
    assert (connection.access_token, connection.refresh_token) == (
        "access-token-2",
        "refresh-token-2",
    )
    assert (connection.token_type, connection.scopes) == (stored_type, stored_scopes)
    assert note in connection.events.get().message


def test_a_provider_class_bug_at_the_callback_is_a_plain_message(
    logged_in_client: Client, settings: Any, caplog: Any
) -> None:
    class Broken(OAuth2Provider):
        id = "apicbase"
        name = "Apicbase"

        def exchange_code(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyError("access_token")

    with registered(Broken):
        response = callback(logged_in_client)
    assert response.status_code == 302
    assert "could not be reached or answered unexpectedly" in messages_of(response)[0]
    assert "Broken.exchange_code() failed unexpectedly (KeyError)" in caplog.text
    assert not Connection.objects.exists()


def test_the_pending_authorizations_repr_hides_state_and_verifier(
    logged_in_client: Client,
) -> None:
    logged_in_client.post(CONNECT, {})
    [raw] = logged_in_client.session[SESSION_KEY].values()
    text = repr(PendingAuthorization(**raw))
    assert raw["state"] not in text and raw["code_verifier"] not in text
    assert "apicbase" in text


# Credential connects ----------------------------------------------------------------------------


@pytest.mark.usefixtures("credential_providers")
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "alice\x00"),
        ("username", "alice\r\nX-Injected: 1"),
        ("password", "pass\nword"),
        ("company", "acme\x7f"),
        ("username", "a" * 501),
    ],
)
def test_control_characters_or_overlong_credentials_are_refused_at_the_field(
    http_mock: responses.RequestsMock, organisation: Any, field: str, value: str
) -> None:
    credentials = {"company": "acme", "username": "alice", "password": "pw", field: value}
    with pytest.raises(InvalidCredentials, match="control characters") as info:
        connect_with_credentials(organisation, "custobar", **credentials)
    assert info.value.field == field
    assert value not in str(info.value)
    assert not http_mock.calls and not Connection.objects.exists()


@pytest.mark.usefixtures("credential_providers")
def test_a_custobar_username_with_a_colon_is_refused_at_the_field(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    with pytest.raises(InvalidCredentials, match="“:”") as info:
        connect_with_credentials(
            organisation, "custobar", company="acme", username="a:b", password="pw"
        )
    assert info.value.field == "username"
    assert not http_mock.calls


@pytest.mark.usefixtures("credential_providers")
def test_credentials_beyond_latin_1_go_in_utf_8_and_a_refusal_says_so(
    http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, status=401, json={"detail": "Invalid."})
    with pytest.raises(InvalidCredentials) as info:
        connect_with_credentials(
            organisation, "custobar", company="acme", username="Łukasz", password="pa€ss"
        )
    sent = http_mock.calls[0].request.headers["Authorization"]
    assert base64.b64decode(sent.removeprefix("Basic ")).decode() == "Łukasz:pa€ss"
    assert "outside ASCII" in str(info.value)
    assert "pa€ss" not in str(info.value)


@pytest.mark.usefixtures("credential_providers")
def test_a_teletracker_login_answer_with_a_bad_token_stores_nothing(
    http_mock: responses.RequestsMock, organisation: Any, caplog: Any
) -> None:
    answer = {
        "success": True,
        "token": "tt\r\ntoken",
        "tokenLifetime": 3600,
        "refreshToken": "tt-refresh-1",
    }
    http_mock.add(responses.POST, TELETRACKER_LOGIN_URL, json=answer)
    with pytest.raises(AuthorizationError, match="try again later"):
        connect_with_credentials(organisation, "teletracker", username="al", password="pw-1234")
    assert not Connection.objects.exists()
    assert "holds characters a token can't have" in caplog.text


# The same against a real socket ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("answer", "connected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, False),
        (json.dumps(token_body(2, access_token="evil\r\nX-Injected: 1")).encode(), False),
        (json.dumps(token_body(2, scope="accounts\x00library")).encode(), True),
        (json.dumps(token_body(2, token_type="B" * 200)).encode(), True),
    ],
    ids=["deep-json", "crlf-token", "nul-scope", "long-token-type"],
)
def test_a_hostile_token_endpoint_at_the_callback_over_a_real_socket(
    logged_in_client: Client,
    hostile_server: HostileServer,
    settings: Any,
    answer: bytes,
    connected: bool,
) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": apicbase_settings(TOKEN_URL=hostile_server.url())}
    )
    hostile_server.answer(response(200, answer) + answer)
    reply = callback(logged_in_client)

    assert reply.status_code == 302 and reply["Location"] == LIST
    [message] = messages_of(reply)
    if connected:
        assert message == "Apicbase is connected."
        assert Connection.objects.get().access_token == "access-token-2"
    else:
        assert "could not be reached or answered unexpectedly" in message
        assert not Connection.objects.exists()
