"""Connections pages: authorize redirect (state + PKCE), callback checks, disconnect."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
import time_machine
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from oauth_connect._internal.pkce import s256_challenge
from oauth_connect.exceptions import ConnectionBusy
from oauth_connect.models import ClientCredentials, Connection
from oauth_connect.providers.apicbase import ApicbaseProvider
from oauth_connect.services.authorize import SESSION_KEY
from tests.conftest import (
    API_URL,
    AUTHORIZE_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    NOW,
    REVOKE_URL,
    TOKEN_URL,
    apicbase_settings,
    oauth_connect_settings,
    token_body,
)

pytestmark = pytest.mark.django_db
CONNECT = reverse("oauth_connect:connect", kwargs={"provider": "apicbase"})
CALLBACK = reverse("oauth_connect:callback", kwargs={"provider": "apicbase"})
LIST = reverse("oauth_connect:list")


def start(client: Client, **data: str) -> dict[str, list[str]]:
    """POST the connect form; return the query of the provider URL we were sent to."""
    response = client.post(CONNECT, data)
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(AUTHORIZE_URL)
    return parse_qs(urlsplit(location).query)


def token_calls(http_mock: responses.RequestsMock) -> int:
    return sum(call.request.url == TOKEN_URL for call in http_mock.calls)


def revocations(http_mock: responses.RequestsMock) -> int:
    return sum(call.request.url == REVOKE_URL for call in http_mock.calls)


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# The list and connect pages ---------------------------------------------------------------------


def test_anonymous_users_are_sent_to_log_in(client: Client) -> None:
    response = client.get(LIST)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_user_without_a_tenant_is_refused_with_a_page_that_says_why(
    client: Client, user: Any
) -> None:
    client.force_login(user)  # no organisation
    response = client.get(LIST)
    assert response.status_code == 403
    text = " ".join(response.content.decode().split())
    assert (
        f"You are signed in as {user.get_username()}, but your account doesn't belong to "
        "any organisation yet, so there are no connections to manage here." in text
    )
    assert "Ask a person who manages your organisation to add you to it" in text
    assert "/admin/" not in text  # not staff: no way in through the admin
    assert no_store(response)


def test_operators_without_a_tenant_are_pointed_at_the_connections_in_the_admin(
    client: Client, user: Any
) -> None:
    link = f'<a href="{reverse("admin:oauth_connect_connection_changelist")}">admin</a>'
    user.is_staff = True
    user.save()
    client.force_login(user)  # staff, but not allowed to see connections: no link
    assert link not in client.get(LIST).content.decode()

    user.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client.force_login(User.objects.get(pk=user.pk))  # an operator who followed "View site"
    response = client.get(LIST)
    assert response.status_code == 403
    assert link in response.content.decode()


def test_list_shows_configured_providers_and_own_connections(
    logged_in_client: Client, make_connection: Any, other_organisation: Any
) -> None:
    make_connection(label="production")
    make_connection(label="theirs", tenant=other_organisation)
    page = logged_in_client.get(LIST).content.decode()
    assert "Apicbase" in page
    assert "production" in page and "Connected" in page
    assert "theirs" not in page
    assert "access-token-1" not in page


def test_connect_page_shows_what_will_be_connected(logged_in_client: Client) -> None:
    page = logged_in_client.get(CONNECT).content.decode()
    assert "Connect Apicbase" in page
    assert "accounts" in page and "library" in page


def test_unknown_provider_is_404(logged_in_client: Client) -> None:
    url = reverse("oauth_connect:connect", kwargs={"provider": "nope"})
    assert logged_in_client.get(url).status_code == 404
    assert logged_in_client.post(url).status_code == 404


# Authorize redirect -------------------------------------------------------------------------------


def test_redirect_carries_code_flow_state_and_pkce(logged_in_client: Client) -> None:
    query = start(logged_in_client, label="production")
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == ["http://testserver" + CALLBACK]
    assert query["scope"] == ["accounts library"]
    assert query["code_challenge_method"] == ["S256"]
    pending = logged_in_client.session[SESSION_KEY][query["state"][0]]
    assert query["code_challenge"] == [s256_challenge(pending["code_verifier"])]
    assert pending["label"] == "production"
    # A fresh state every time.
    assert start(logged_in_client)["state"] != query["state"]


def test_tenant_client_credentials_are_used_when_present(
    logged_in_client: Client, organisation: Any
) -> None:
    ClientCredentials.objects.create(
        tenant=organisation, provider="apicbase", client_id="library-owner", client_secret="s3"
    )
    assert start(logged_in_client)["client_id"] == ["library-owner"]


def test_bad_label_is_a_form_error(logged_in_client: Client) -> None:
    response = logged_in_client.post(CONNECT, {"label": "no spaces allowed!"})
    assert response.status_code == 200
    assert response.context["form"].errors["label"]


# Callback ---------------------------------------------------------------------------------------


def test_callback_exchanges_the_code_and_stores_the_connection(
    logged_in_client: Client, http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    query = start(logged_in_client, label="production")
    verifier = logged_in_client.session[SESSION_KEY][query["state"][0]]["code_verifier"]

    response = logged_in_client.get(CALLBACK, {"code": "the-code", "state": query["state"][0]})

    assert response.status_code == 302 and response["Location"] == LIST
    sent = parse_qs(http_mock.calls[0].request.body)
    assert sent["code"] == ["the-code"]
    assert sent["code_verifier"] == [verifier]
    assert sent["redirect_uri"] == query["redirect_uri"]
    connection = Connection.objects.get()
    assert (connection.tenant, connection.label) == (organisation, "production")
    assert connection.access_token == "access-token-1"
    assert connection.client_id == CLIENT_ID
    assert list(connection.events.values_list("kind", flat=True)) == ["connected"]
    assert messages_of(response) == ["Apicbase is connected."]


def test_state_is_single_use(logged_in_client: Client, http_mock: responses.RequestsMock) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    state = start(logged_in_client)["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    before = Connection.objects.get()

    logged_in_client.get(LIST)  # "Apicbase is connected." is shown, and gone

    # The browser's Back button: the same callback again. Not exchanged again, and not an
    # error either: the list, with the connection on it.
    response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})

    assert response.status_code == 302 and response["Location"] == LIST
    assert messages_of(response) == []
    assert Connection.objects.get().updated_at == before.updated_at
    assert token_calls(http_mock) == 1


def test_a_state_that_failed_is_still_unknown_when_it_comes_again(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json={"error": "invalid_grant"}, status=400)
    state = start(logged_in_client)["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    logged_in_client.get(LIST)

    response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})

    assert "already used" in messages_of(response)[-1]
    assert not Connection.objects.exists()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"code": "c"}, "had no state"),
        ({"code": "c", "state": "forged"}, "unknown or was already used"),
        ({"state": "{state}"}, "had no code"),
        ({"code": "x" * 3000, "state": "{state}"}, "malformed code"),
        ({"code": "c\x00", "state": "{state}"}, "malformed code"),
        ({"code": "c", "state": ["{state}", "{state}"]}, "more than once"),
    ],
)
def test_bad_callbacks_change_nothing(
    logged_in_client: Client, params: dict[str, Any], expected: str
) -> None:
    state = start(logged_in_client)["state"][0]
    params = {
        key: [v.format(state=state) for v in value]
        if isinstance(value, list)
        else value.format(state=state)
        for key, value in params.items()
    }
    response = logged_in_client.get(CALLBACK, params)
    assert response.status_code == 302
    assert expected in messages_of(response)[0]
    assert not Connection.objects.exists()


def test_expired_state_is_rejected(logged_in_client: Client) -> None:
    with time_machine.travel(NOW, tick=False) as traveller:
        state = start(logged_in_client)["state"][0]
        traveller.shift(timedelta(minutes=11))  # STATE_TTL is 10 minutes
        response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    assert "took too long" in messages_of(response)[0]
    assert not Connection.objects.exists()


def test_state_is_bound_to_the_browser_session(
    logged_in_client: Client, user: Any, organisation: Any
) -> None:
    state = start(logged_in_client)["state"][0]
    other_browser = Client()
    other_browser.force_login(user)
    response = other_browser.get(CALLBACK, {"code": "c", "state": state})
    assert "unknown" in messages_of(response)[0]


def test_state_is_bound_to_the_provider(logged_in_client: Client, settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": apicbase_settings(), "acme": apicbase_settings(NAME="Acme")}
    )
    state = start(logged_in_client)["state"][0]
    url = reverse("oauth_connect:callback", kwargs={"provider": "acme"})
    response = logged_in_client.get(url, {"code": "c", "state": state})
    assert "another account or service" in messages_of(response)[0]
    assert not Connection.objects.exists()


def test_state_is_bound_to_the_tenant(
    logged_in_client: Client, user: Any, organisation: Any
) -> None:
    state = start(logged_in_client)["state"][0]
    # The user's organisation changes between redirect and callback.
    organisation.members.remove(user)
    from example_project.tenants.models import Organisation

    Organisation.objects.create(name="New").members.add(user)
    response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    assert "another account" in messages_of(response)[0]


def test_access_denied_is_shown_plainly(logged_in_client: Client) -> None:
    state = start(logged_in_client)["state"][0]
    response = logged_in_client.get(
        CALLBACK, {"error": "access_denied", "error_description": "User said no", "state": state}
    )
    assert messages_of(response) == ["Access to Apicbase was declined, so nothing was connected."]
    # A choice the person made: said as information, not as an error.
    assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["info"]
    assert not Connection.objects.exists()


ACCOUNT_URL = API_URL + "accounts/me/"


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ({"username": "chef"}, "chef"),
        ({"id": 7, "email": "chef@kitchen.example"}, "chef@kitchen.example"),
        ({"user": {"name": "Chef\u202eevil"}}, "Chef evil"),  # printable: no bidi override
        ({"id": 7}, ""),  # nothing that names anyone
        ({"username": "access-token-1"}, ""),  # the token, echoed back: no name
        (
            {"username": "x refresh-token-1", "email": "chef@kitchen.example"},
            "chef@kitchen.example",
        ),
    ],
)
def test_the_card_names_the_account_the_api_says_authorized(
    logged_in_client: Client, http_mock: responses.RequestsMock, answer: Any, named: str
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    http_mock.add(responses.GET, ACCOUNT_URL, json=answer)
    state = start(logged_in_client)["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})

    connection = Connection.objects.get()
    assert connection.account == ({"username": named} if named else {})
    [asked] = [call for call in http_mock.calls if call.request.url == ACCOUNT_URL]
    assert asked.request.headers["Authorization"] == "Bearer access-token-1"
    if named:
        assert f"· {named}" in " ".join(logged_in_client.get(LIST).content.decode().split())


@pytest.mark.parametrize("failure", ["status", "not json", "network"])
def test_an_account_endpoint_that_fails_costs_the_name_only(
    logged_in_client: Client,
    http_mock: responses.RequestsMock,
    failure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    if failure == "status":
        http_mock.add(responses.GET, ACCOUNT_URL, json={"detail": "nope"}, status=500)
    elif failure == "not json":
        http_mock.add(responses.GET, ACCOUNT_URL, body="<html>access-token-1</html>")
    else:
        http_mock.add(responses.GET, ACCOUNT_URL, body=requests.ConnectionError("refused"))
    state = start(logged_in_client)["state"][0]
    response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})

    assert messages_of(response) == ["Apicbase is connected."]
    connection = Connection.objects.get()
    assert connection.status == Connection.Status.ACTIVE and connection.account == {}
    [line] = [r for r in caplog.records if getattr(r, "event", "") == "account_unnamed"]
    assert line.getMessage().startswith("Apicbase: the connected account couldn't be named (")
    assert "access-token-1" not in caplog.text


def test_a_name_that_quotes_the_client_secret_names_nobody(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    http_mock.add(responses.GET, ACCOUNT_URL, json={"username": f"me {CLIENT_SECRET}"})
    state = start(logged_in_client)["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    assert Connection.objects.get().account == {}


def test_the_account_is_asked_within_the_code_exchanges_deadline(
    logged_in_client: Client, http_mock: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One ProviderClient (one HTTP_DEADLINE) for the exchange and the lookup: a slow provider
    # can't hold the callback for two deadlines before the grant is stored.
    clients: list[Any] = []
    exchange, account_for = ApicbaseProvider.exchange_code, ApicbaseProvider.account_for
    monkeypatch.setattr(
        ApicbaseProvider,
        "exchange_code",
        lambda self, client, **kw: clients.append(client) or exchange(self, client, **kw),
    )
    monkeypatch.setattr(
        ApicbaseProvider,
        "account_for",
        lambda self, client, tokens: clients.append(client) or account_for(self, client, tokens),
    )
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    http_mock.add(responses.GET, ACCOUNT_URL, json={"username": "chef"})
    state = start(logged_in_client)["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    assert len(clients) == 2 and clients[0] is clients[1]


@pytest.mark.parametrize(
    ("api_url", "check_path", "asked"),
    [
        ("https://api.apicbase.test/api/v1", "accounts/me/", ACCOUNT_URL),  # no trailing /
        ("https://api.apicbase.test/api/v1/", "/accounts/me/", ACCOUNT_URL),  # leading /
        ("https://api.apicbase.test/api/v1/", "https://elsewhere.test/me/", None),
        ("https://api.apicbase.test/api/v1/", "//elsewhere.test/me/", None),
    ],
)
def test_the_account_is_asked_where_the_session_would_send_the_token(
    logged_in_client: Client,
    http_mock: responses.RequestsMock,
    settings: Any,
    api_url: str,
    check_path: str,
    asked: str | None,
) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": apicbase_settings(API_URL=api_url, CHECK_PATH=check_path)}
    )
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    if asked:
        http_mock.add(responses.GET, asked, json={"username": "chef"})
    state = start(logged_in_client)["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    assert [call.request.url for call in http_mock.calls] == [
        TOKEN_URL,
        *([asked] if asked else []),
    ]


def test_without_the_accounts_scope_nobody_is_asked(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1, scope="library"))
    state = start(logged_in_client)["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    assert [call.request.url for call in http_mock.calls] == [TOKEN_URL]


def test_other_provider_errors_are_reported(logged_in_client: Client) -> None:
    state = start(logged_in_client)["state"][0]
    response = logged_in_client.get(
        CALLBACK, {"error": "invalid_scope", "error_description": "no", "state": state}
    )
    assert "Apicbase reported an error (invalid_scope: no)" in messages_of(response)[0]


def test_failed_code_exchange_stores_nothing(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=400, json={"error": "invalid_grant"})
    state = start(logged_in_client)["state"][0]
    response = logged_in_client.get(CALLBACK, {"code": "expired-code", "state": state})
    message = messages_of(response)[0]
    assert "did not accept the authorization" in message and "try again" in message
    assert "expired-code" not in message
    assert not Connection.objects.exists()


def test_reconnecting_a_label_updates_the_same_connection(
    logged_in_client: Client, http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    old = make_connection(label="production", status=Connection.Status.REAUTH_REQUIRED)
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(5))
    http_mock.add(responses.POST, REVOKE_URL, body="")
    state = start(logged_in_client, label="production")["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    connection = Connection.objects.get()
    assert connection.pk == old.pk
    assert connection.status == Connection.Status.ACTIVE
    assert connection.access_token == "access-token-5"
    # The replaced grant is revoked, so it can't outlive the connection.
    [revocation] = [call for call in http_mock.calls if call.request.url == REVOKE_URL]
    assert parse_qs(revocation.request.body)["token"] == ["refresh-token-1"]
    assert "Previous grant: Tokens revoked" in connection.events.get().message


@pytest.mark.parametrize("issued_refresh_token", ["refresh-token-1", None])
def test_reconnect_that_may_return_the_same_grant_revokes_nothing(
    logged_in_client: Client,
    http_mock: responses.RequestsMock,
    make_connection: Any,
    issued_refresh_token: str | None,
) -> None:
    make_connection(label="production")
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        json={"access_token": "access-token-5", "refresh_token": issued_refresh_token},
    )
    state = start(logged_in_client, label="production", reconnect="1")["state"][0]
    logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    assert token_calls(http_mock) == 1 and revocations(http_mock) == 0  # the exchange only
    connection = Connection.objects.get()
    assert "Previous grant" not in connection.events.get().message
    assert connection.refresh_token == "refresh-token-1"


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [("/admin/", "/admin/"), ("https://evil.test/", LIST), ("//evil.test/", LIST)],
)
def test_next_is_checked_against_allowed_hosts(
    logged_in_client: Client, http_mock: responses.RequestsMock, next_url: str, expected: str
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    state = start(logged_in_client, next=next_url)["state"][0]
    response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    assert response["Location"] == expected


# Disconnect -------------------------------------------------------------------------------------


def test_disconnect_asks_for_confirmation_first(
    logged_in_client: Client, make_connection: Any
) -> None:
    connection = make_connection(label="production")
    url = reverse("oauth_connect:disconnect", kwargs={"pk": connection.pk})

    page = logged_in_client.get(url)

    assert page.status_code == 200
    html = page.content.decode()
    text = " ".join(html.split())
    # Which connection: its label (or "Default"), its account, its status.
    assert "Disconnect Apicbase?" in text
    assert "<dt>Connection</dt> <dd><strong>production</strong></dd>" in text
    assert '<span class="oc-badge oc-badge-active">Connected</span>' in text
    # The destructive button says what it does.
    assert '<button type="submit" class="oc-button-danger">Disconnect Apicbase</button>' in text
    assert reload_status(connection) == Connection.Status.ACTIVE  # a GET changes nothing


def test_a_disconnected_connection_has_no_confirmation_page(
    logged_in_client: Client, make_connection: Any
) -> None:
    connection = make_connection(status=Connection.Status.DISCONNECTED)
    url = reverse("oauth_connect:disconnect", kwargs={"pk": connection.pk})
    assert logged_in_client.get(url).status_code == 404


def reload_status(connection: Connection) -> str:
    return Connection.objects.get(pk=connection.pk).status


def test_disconnect_revokes_and_wipes(
    logged_in_client: Client, http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, REVOKE_URL, body="")
    connection = make_connection()
    url = reverse("oauth_connect:disconnect", kwargs={"pk": connection.pk})

    response = logged_in_client.post(url)

    assert response["Location"] == LIST
    revoke = parse_qs(http_mock.calls[0].request.body)
    assert revoke["token"] == ["refresh-token-1"]
    assert revoke["token_type_hint"] == ["refresh_token"]
    connection.refresh_from_db()
    assert connection.status == Connection.Status.DISCONNECTED
    assert (connection.access_token, connection.refresh_token) == ("", "")
    event = connection.events.get()
    assert (event.kind, event.message) == ("disconnected", "Tokens revoked at Apicbase.")


def test_disconnect_still_wipes_when_revocation_fails(
    logged_in_client: Client, http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, REVOKE_URL, status=503)
    connection = make_connection()
    logged_in_client.post(reverse("oauth_connect:disconnect", kwargs={"pk": connection.pk}))
    connection.refresh_from_db()
    assert connection.status == Connection.Status.DISCONNECTED
    assert connection.refresh_token == ""
    assert "Revocation failed" in connection.events.get().message


def test_disconnect_without_revocation_endpoint(
    logged_in_client: Client, make_connection: Any, settings: Any
) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["REVOKE_URL"] = None
    connection = make_connection()
    logged_in_client.post(reverse("oauth_connect:disconnect", kwargs={"pk": connection.pk}))
    connection.refresh_from_db()
    assert connection.status == Connection.Status.DISCONNECTED
    assert "offers no revocation" in connection.events.get().message


def test_someone_elses_connection_is_404(
    logged_in_client: Client, make_connection: Any, other_organisation: Any
) -> None:
    theirs = make_connection(tenant=other_organisation)
    url = reverse("oauth_connect:disconnect", kwargs={"pk": theirs.pk})
    assert logged_in_client.post(url).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == Connection.Status.ACTIVE


def test_configuration_errors_are_not_shown_to_tenants(
    logged_in_client: Client, settings: Any, caplog: Any
) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"].update(CLIENT_ID=None, CLIENT_SECRET=None)
    response = logged_in_client.post(CONNECT)
    message = messages_of(response)[0]
    assert message == "Apicbase can't be connected right now. Please contact support."
    assert "CLIENT_ID" in caplog.text  # the operator's detail goes to the log


@pytest.mark.parametrize("name", ["state", "code", "error", "error_description"])
@pytest.mark.parametrize("fault", ["duplicated", "oversized", "garbage"])
def test_every_callback_parameter_fault_is_refused_plainly(
    logged_in_client: Client, http_mock: responses.RequestsMock, name: str, fault: str
) -> None:
    state = start(logged_in_client)["state"][0]
    good = {"state": state, "code": "the-code", "error": "", "error_description": ""}
    bad = {
        "duplicated": [good[name] or "x", good[name] or "x"],
        "oversized": "x" * 5000,
        "garbage": "\x00\x1b[31m\ufffe",
    }[fault]
    params = {key: value for key, value in {**good, name: bad}.items() if value != ""}

    response = logged_in_client.get(CALLBACK, params)

    assert response.status_code == 302 and response["Location"] == LIST
    message = messages_of(response)[-1]
    assert "start again" in message.lower() or "start" in message
    assert "\x00" not in message and "x" * 100 not in message
    assert not Connection.objects.exists()
    assert len(http_mock.calls) == 0  # no code exchange attempted


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, {"error": "temporarily_unavailable"}, "could not be reached or answered"),
        (401, {"error": "invalid_client"}, "can't be connected right now. Please contact support"),
    ],
)
def test_a_failed_exchange_shows_no_operator_detail(
    logged_in_client: Client,
    http_mock: responses.RequestsMock,
    caplog: Any,
    status: int,
    body: dict[str, str],
    expected: str,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=status, json=body)
    state = start(logged_in_client)["state"][0]
    response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})
    message = messages_of(response)[-1]
    assert expected in message
    assert "OAUTH_CONNECT" not in message and "apicbase.test" not in message
    assert body["error"] in caplog.text  # the detail is for operators, in the log
    assert not Connection.objects.exists()


def test_disconnecting_needs_the_csrf_token(user: Any, make_connection: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    connection = make_connection()
    url = reverse("oauth_connect:disconnect", kwargs={"pk": connection.pk})
    assert client.post(url).status_code == 403
    assert reload_status(connection) == Connection.Status.ACTIVE


def test_add_another_with_a_label_in_use_asks_for_another_instead_of_replacing(
    logged_in_client: Client, make_connection: Any
) -> None:
    make_connection(label="production")

    response = logged_in_client.post(CONNECT, {"label": "production"})

    assert response.status_code == 200
    [error] = response.context["form"].errors["label"]
    assert "“production” already names one of your Apicbase connections" in error
    assert Connection.objects.get().access_token == "access-token-1"


def test_reconnect_may_replace_the_token_set_with_its_label(
    logged_in_client: Client, make_connection: Any
) -> None:
    make_connection(label="production")
    assert start(logged_in_client, label="production", reconnect="1")["state"]


def test_a_configuration_error_at_the_callback_is_a_plain_message(
    logged_in_client: Client, settings: Any, caplog: Any
) -> None:
    # The client credentials disappear while the user is at the provider.
    state = start(logged_in_client)["state"][0]
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"].update(CLIENT_ID=None, CLIENT_SECRET=None)

    response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})

    assert response.status_code == 302 and response["Location"] == LIST
    assert messages_of(response) == [
        "Apicbase can't be connected right now. Please contact support."
    ]
    assert "CLIENT_ID" in caplog.text
    assert not Connection.objects.exists()


# No page is kept by a browser or proxy -----------------------------------------------------------


def no_store(response: Any) -> bool:
    return "no-store" in response.get("Cache-Control", "")


def test_every_page_and_redirect_says_no_store(
    logged_in_client: Client, http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    http_mock.add(responses.POST, REVOKE_URL, body="")
    state = start(logged_in_client)["state"][0]
    kept = make_connection(label="kept")
    disconnect = reverse("oauth_connect:disconnect", kwargs={"pk": kept.pk})
    responses_by_page = {
        "list": logged_in_client.get(LIST),
        "connect page": logged_in_client.get(CONNECT),
        "connect redirect": logged_in_client.post(CONNECT),
        "connect form error": logged_in_client.post(CONNECT, {"label": "no spaces!"}),
        "callback": logged_in_client.get(CALLBACK, {"code": "c", "state": state}),
        "refused callback": logged_in_client.get(CALLBACK, {"code": "c", "state": "forged"}),
        "disconnect page": logged_in_client.get(disconnect),
        "disconnect": logged_in_client.post(disconnect),
    }
    assert {page: r.status_code for page, r in responses_by_page.items()} == {
        "list": 200,
        "connect page": 200,
        "connect redirect": 302,
        "connect form error": 200,
        "callback": 302,
        "refused callback": 302,
        "disconnect page": 200,
        "disconnect": 302,
    }
    assert [page for page, r in responses_by_page.items() if not no_store(r)] == []


def test_the_login_redirect_says_no_store(client: Client) -> None:
    response = client.get(LIST)
    assert response.status_code == 302 and no_store(response)


def test_a_404_says_no_store(logged_in_client: Client) -> None:
    response = logged_in_client.get(reverse("oauth_connect:connect", kwargs={"provider": "nope"}))
    assert response.status_code == 404 and no_store(response)


# An anonymous callback --------------------------------------------------------------------------


def test_an_anonymous_callback_does_not_hand_its_code_to_the_login_page(client: Client) -> None:
    # E.g. the session expired while the user was at the provider.
    response = client.get(CALLBACK, {"code": "the-secret-code", "state": "the-state"})

    assert response.status_code == 302
    login = urlsplit(response["Location"])
    assert login.path == reverse("login")
    assert parse_qs(login.query) == {"next": [LIST]}
    assert "the-secret-code" not in response["Location"]


def test_other_pages_bring_an_anonymous_user_back_after_login(client: Client) -> None:
    response = client.get(CONNECT, {"label": "production"})
    assert parse_qs(urlsplit(response["Location"]).query) == {
        "next": [CONNECT + "?label=production"]
    }


# Another worker holds the connection ------------------------------------------------------------

BUSY_MESSAGE = "Apicbase is busy being updated; please try again in a moment."


def busy(*args: Any, **kwargs: Any) -> Any:
    raise ConnectionBusy("apicbase connection #1 is locked by another worker.")


def test_a_busy_connection_at_the_callback_is_a_plain_message(
    logged_in_client: Client, monkeypatch: Any
) -> None:
    monkeypatch.setattr("oauth_connect.services.complete_authorization", busy)
    state = start(logged_in_client)["state"][0]

    response = logged_in_client.get(CALLBACK, {"code": "c", "state": state})

    assert response.status_code == 302 and response["Location"] == LIST
    assert messages_of(response) == [BUSY_MESSAGE]


def test_a_busy_connection_is_not_disconnected_and_says_so(
    logged_in_client: Client, make_connection: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr("oauth_connect.services.disconnect", busy)
    connection = make_connection()

    response = logged_in_client.post(
        reverse("oauth_connect:disconnect", kwargs={"pk": connection.pk})
    )

    assert response.status_code == 302 and response["Location"] == LIST
    assert messages_of(response) == [BUSY_MESSAGE]
    assert reload_status(connection) == Connection.Status.ACTIVE
