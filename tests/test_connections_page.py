"""The tenant's Connections page: one card per provider, each token set in plain words."""

from __future__ import annotations

import json
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from oauth_connect.models import Connection

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("credential_providers")]
LIST = reverse("oauth_connect:list")
Status = Connection.Status


class _Cards(HTMLParser):
    """The text of each provider card and of each token set in it, as a person reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, str] = {}
        self.sets: dict[int, str] = {}
        self._open: list[tuple[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("class") == "oc-card":
            self._open.append(("card", str(values["id"]).removeprefix("oc-provider-")))
        elif tag == "li" and values.get("class") == "oc-connection":
            self._open.append(("set", int(str(values["data-connection"]))))

    def handle_endtag(self, tag: str) -> None:
        if self._open and (tag, self._open[-1][0]) in (("section", "card"), ("li", "set")):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        for kind, key in self._open:
            store = self.cards if kind == "card" else self.sets
            store[key] = f"{store.get(key, '')} {text}".strip() if text else store.get(key, "")


def cards(client: Client) -> _Cards:
    response = client.get(LIST)
    assert response.status_code == 200
    parser = _Cards()
    parser.feed(response.content.decode())
    return parser


def test_a_card_per_configured_provider_says_what_to_do(logged_in_client: Client) -> None:
    page = cards(logged_in_client)
    assert set(page.cards) == {"apicbase", "custobar", "teletracker"}
    assert "Not connected. Connect Apicbase" in page.cards["apicbase"]


def test_a_working_connection_shows_account_scopes_expiry_and_last_refresh(
    logged_in_client: Client, make_connection: Any
) -> None:
    now = timezone.now()
    connection = make_connection(
        label="production",
        scopes="accounts library",
        expires_at=now + timedelta(hours=5, minutes=1),
        last_refreshed_at=now - timedelta(minutes=20),
    )
    text = cards(logged_in_client).sets[connection.pk]
    assert text.startswith("production Connected")
    assert "Access granted accounts, library" in text
    assert "Access token expires in 5 hours" in text
    assert "Last refreshed 20 minutes ago" in text
    assert "Disconnect" in text and "Reconnect" not in text


def test_a_moment_ago_reads_just_now_and_the_last_minute_under_a_minute(
    logged_in_client: Client, make_connection: Any
) -> None:
    now = timezone.now()
    connection = make_connection(
        expires_at=now + timedelta(seconds=40), last_refreshed_at=now - timedelta(seconds=20)
    )
    text = cards(logged_in_client).sets[connection.pk]
    assert "Access token expires in under a minute" in text
    assert "Last refreshed just now" in text
    assert "0 minutes" not in text


def test_several_token_sets_are_listed_and_another_can_be_added(
    logged_in_client: Client, make_connection: Any
) -> None:
    development = make_connection(label="development")
    production = make_connection(label="production")
    page = cards(logged_in_client)
    assert {development.pk, production.pk} <= set(page.sets)
    assert page.cards["apicbase"].endswith("Add another Apicbase connection")


def test_an_expired_token_and_a_never_refreshed_one_read_plainly(
    logged_in_client: Client, make_connection: Any
) -> None:
    connection = make_connection(expires_at=timezone.now() - timedelta(hours=2, seconds=10))
    text = cards(logged_in_client).sets[connection.pk]
    assert "Access token expired 2 hours ago" in text
    assert "Last refreshed not yet" in text


def test_reauthorization_says_why_in_plain_words_and_offers_reconnect(
    logged_in_client: Client, make_connection: Any
) -> None:
    technical = "the Apicbase token endpoint (api.apicbase.test) refused the grant (invalid_grant)"
    connection = make_connection(status=Status.REAUTH_REQUIRED, last_error=technical)
    text = cards(logged_in_client).sets[connection.pk]
    assert "Needs reconnecting" in text
    assert "Apicbase no longer accepts the access you gave" in text
    assert text.count("Apicbase") == 1  # the provider named once: the card is under its name
    assert "Reconnect" in text
    assert "Access token" not in text  # a refused token's expiry means nothing
    assert "invalid_grant" not in text and "api.apicbase.test" not in text  # operators' detail


def test_a_credential_provider_asks_to_reconnect_with_the_login(
    logged_in_client: Client, make_connection: Any
) -> None:
    connection = make_connection(
        provider="teletracker",
        status=Status.REAUTH_REQUIRED,
        last_error='{"success": false, "message": "Invalid refresh token"}',
        account={"username": "alice"},
    )
    response = logged_in_client.get(LIST)
    text = cards(logged_in_client).sets[connection.pk]
    assert "TeleTracker no longer accepts the stored login" in text
    assert "Reconnect with your TeleTracker login" in text
    assert "Invalid refresh token" not in response.content.decode()  # no raw provider JSON
    # Credentials must be typed again: Reconnect opens the form for this label.
    connect = reverse("oauth_connect:connect", kwargs={"provider": "teletracker"})
    assert f'href="{connect}?label=&amp;reconnect=1"' in response.content.decode()


def test_a_failing_renewal_is_explained_without_alarm(
    logged_in_client: Client, make_connection: Any
) -> None:
    connection = make_connection(status=Status.ERROR, last_error="HTTP 503 from the provider")
    text = cards(logged_in_client).sets[connection.pk]
    assert "Connected, renewal failing" in text
    assert "It is retried automatically." in text
    assert "503" not in text and "Reconnect" not in text


def test_a_disconnected_set_can_be_reconnected_but_not_disconnected_again(
    logged_in_client: Client, make_connection: Any
) -> None:
    connection = make_connection(label="old", status=Status.DISCONNECTED)
    page = cards(logged_in_client)
    text = page.sets[connection.pk]
    assert "Disconnected" in text and "Reconnect" in text
    assert "Disconnect " not in f"{text} ".replace("Disconnected", "")
    assert "Access token" not in text
    assert page.cards["apicbase"].endswith("Connect Apicbase")  # nothing connected any more


def test_the_page_shows_no_secret(logged_in_client: Client, make_connection: Any) -> None:
    make_connection(
        provider="custobar",
        access_token="custobar-token-secret",
        refresh_token="",
        account={"company": "acme", "username": "alice"},
        credentials=json.dumps({"password": "pw-secret-1234"}),
    )
    html = logged_in_client.get(LIST).content.decode()
    assert "alice" in html
    for secret in ("custobar-token-secret", "pw-secret-1234", "access-token-1"):
        assert secret not in html


def test_a_failing_renewal_past_expiry_says_it_is_not_working_and_offers_reconnect(
    logged_in_client: Client, make_connection: Any
) -> None:
    connection = make_connection(
        status=Status.ERROR, expires_at=timezone.now() - timedelta(hours=3, seconds=5)
    )
    text = cards(logged_in_client).sets[connection.pk]
    assert "Not working: renewal failing" in text
    assert "If it keeps failing, reconnect." in text
    assert "Reconnect" in text


def test_each_button_names_the_token_set_it_acts_on(
    logged_in_client: Client, make_connection: Any
) -> None:
    # Several sets on a card: a screen reader hears which one each Disconnect is for.
    make_connection(label="development")
    make_connection(label="production")
    html = logged_in_client.get(LIST).content.decode()
    assert 'aria-label="Disconnect Apicbase development"' in html
    assert 'aria-label="Disconnect Apicbase production"' in html
    assert '<main id="oc-main">' in html and '<html lang="en">' in html


def test_a_card_shows_no_secret_even_if_a_template_asks(make_connection: Any) -> None:
    from oauth_connect.cards import ConnectionCard

    card = ConnectionCard(make_connection(label="production"))
    assert card.label == "production"
    for secret_field in ("access_token", "refresh_token", "credentials"):
        with pytest.raises(AttributeError):
            getattr(card, secret_field)
