"""The admin for credential connections: the account and whether a password is kept (never the
password, a token or their ciphertext), and the "Rotate token" action."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import responses
from django.contrib.messages import ERROR, SUCCESS
from django.db import connection as db
from django.urls import reverse

from oauth_connect.models import Connection

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("credential_providers")]

BASE_URL = "https://acme.custobar.test/"
NEW_TOKEN_URL = BASE_URL + "api/auth/new-access-token/"
PASSWORD = "kept-password-in-admin-61d0"  # noqa: S105 - a fake for the mocked API
ACCESS = "custobar-token-in-admin-2b7e"
ACCOUNT = {"company": "acme", "base_url": BASE_URL, "username": "alice@acme.test"}


@pytest.fixture
def custobar_connection(make_connection: Callable[..., Connection]) -> Connection:
    return make_connection(
        provider="custobar",
        label="prod",
        access_token=ACCESS,
        refresh_token="",
        token_type="Token",
        scopes="",
        client_id="",
        expires_at=None,
        account=dict(ACCOUNT),
        credentials=json.dumps({"password": PASSWORD}),
    )


def change_url(connection: Connection) -> str:
    return reverse("admin:oauth_connect_connection_change", args=[connection.pk])


def changelist_url() -> str:
    return reverse("admin:oauth_connect_connection_changelist")


def ciphertexts(pk: int) -> list[str]:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, credentials FROM oauth_connect_connection WHERE id = %s", [pk]
        )
        return [value for value in cursor.fetchone() if value]


def messages_of(response: Any) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


def run_action(admin_client: Any, action: str, *connections: Connection) -> Any:
    return admin_client.post(
        changelist_url(),
        {"action": action, "_selected_action": [c.pk for c in connections]},
        follow=True,
    )


def readonly_value(response: Any, field: str) -> Any:
    """The value the change page shows for a read-only field (as the admin computes it)."""
    for fieldset in response.context["adminform"]:
        for line in fieldset:
            for admin_field in line:
                if admin_field.field["name"] == field:
                    return admin_field.contents()
    raise AssertionError(f"{field} is not on the change page")


# What operators see -----------------------------------------------------------------------------


def test_change_page_shows_the_account_and_password_kept_but_no_secret(
    admin_client: Any, custobar_connection: Connection
) -> None:
    stored = ciphertexts(custobar_connection.pk)
    assert len(stored) == 2  # the token and the password are both there, encrypted

    response = admin_client.get(change_url(custobar_connection))

    assert response.status_code == 200
    html = response.content.decode()
    # The account in words, with what the provider told about it: not JSON.
    account = readonly_value(response, "account_details")
    assert account.startswith("alice@acme.test @ acme<br><small>")
    assert account.endswith("<small>base url: https://acme.custobar.test/</small>")  # no repeats
    assert "{" not in account
    assert "Password kept" in html
    assert readonly_value(response, "password_kept") == "yes"
    for secret in [PASSWORD, ACCESS, *stored]:
        assert secret not in html


def test_change_page_says_when_no_password_is_kept(
    admin_client: Any, custobar_connection: Connection
) -> None:
    Connection.objects.filter(pk=custobar_connection.pk).update(credentials="")

    response = admin_client.get(change_url(custobar_connection))

    assert readonly_value(response, "password_kept") == "no"


def test_changelist_shows_the_account_column(
    admin_client: Any, custobar_connection: Connection
) -> None:
    response = admin_client.get(changelist_url())

    assert response.status_code == 200
    html = response.content.decode()
    assert "column-account_name" in html
    assert "alice@acme.test" in html
    for secret in [PASSWORD, ACCESS, *ciphertexts(custobar_connection.pk)]:
        assert secret not in html


# The rotate action ------------------------------------------------------------------------------


def test_rotate_token_action_rotates_with_a_success_message(
    admin_client: Any, custobar_connection: Connection, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.POST, NEW_TOKEN_URL, json={"token": "rotated-token"})

    response = run_action(admin_client, "rotate_token", custobar_connection)

    assert response.status_code == 200
    [call] = http_mock.calls
    assert call.request.method == "POST"
    scheme, _, encoded = call.request.headers["Authorization"].partition(" ")
    assert (scheme, base64.b64decode(encoded).decode()) == (
        "Basic",
        f"alice@acme.test:{PASSWORD}",
    )
    assert messages_of(response) == [(SUCCESS, "Rotated the token of 1 connection.")]
    stored = Connection.objects.get(pk=custobar_connection.pk)
    assert stored.access_token == "rotated-token"
    assert list(stored.events.values_list("kind", flat=True)) == ["rotated"]
    assert "rotated-token" not in response.content.decode()


def test_rotate_token_action_on_an_apicbase_connection_reports_and_changes_nothing(
    admin_client: Any,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    apicbase = make_connection(label="kitchen")
    before = Connection.objects.get(pk=apicbase.pk)

    response = run_action(admin_client, "rotate_token", apicbase)

    assert response.status_code == 200
    [(level, text)] = messages_of(response)
    assert level == ERROR
    assert "can't be rotated" in text
    assert len(http_mock.calls) == 0
    stored = Connection.objects.get(pk=apicbase.pk)
    assert (stored.access_token, stored.refresh_token) == ("access-token-1", "refresh-token-1")
    assert stored.updated_at == before.updated_at
    assert not stored.events.exists()


def test_rotate_token_action_without_a_kept_password_says_what_to_do(
    admin_client: Any, custobar_connection: Connection, http_mock: responses.RequestsMock
) -> None:
    Connection.objects.filter(pk=custobar_connection.pk).update(credentials="")

    response = run_action(admin_client, "rotate_token", custobar_connection)

    [(level, text)] = messages_of(response)
    assert level == ERROR
    assert "password" in text and "reconnect" in text
    assert len(http_mock.calls) == 0
    assert Connection.objects.get(pk=custobar_connection.pk).access_token == ACCESS


def test_rotate_token_action_on_a_mixed_selection_rotates_what_it_can(
    admin_client: Any,
    custobar_connection: Connection,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    apicbase = make_connection(label="kitchen")
    http_mock.add(responses.POST, NEW_TOKEN_URL, json={"token": "rotated-token"})

    response = run_action(admin_client, "rotate_token", custobar_connection, apicbase)

    levels = sorted(level for level, _ in messages_of(response))
    assert levels == [SUCCESS, ERROR]
    assert (SUCCESS, "Rotated the token of 1 connection.") in messages_of(response)
    assert Connection.objects.get(pk=custobar_connection.pk).access_token == "rotated-token"
    assert Connection.objects.get(pk=apicbase.pk).access_token == "access-token-1"


def test_forget_password_action_keeps_only_the_token(
    admin_client: Any, custobar_connection: Connection
) -> None:
    response = run_action(admin_client, "forget_password", custobar_connection)
    assert any("Forgot the kept password of 1" in text for _, text in messages_of(response))
    stored = Connection.objects.get(pk=custobar_connection.pk)
    assert not stored.has_stored_credentials
    assert stored.access_token == ACCESS
