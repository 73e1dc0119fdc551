"""The admin's connection page (buttons, event log, last error) and the counts atop the list."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.contrib.messages import ERROR, INFO, SUCCESS
from django.urls import reverse
from django.utils import timezone

from example_project.tenants.models import Organisation
from oauth_connect.admin.buttons import refresh_outcome
from oauth_connect.models import Connection
from tests.conftest import API_URL, REVOKE_URL, TOKEN_URL, token_body

pytestmark = pytest.mark.django_db
Status = Connection.Status


def url(name: str, connection: Connection) -> str:
    return reverse(f"admin:oauth_connect_connection_{name}", args=[connection.pk])


def messages_of(response: Any) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


def press(admin_client: Any, button: str, connection: Connection) -> Any:
    response = admin_client.post(url(button, connection), follow=True)
    assert response.redirect_chain[-1][0] == url("change", connection)
    return response


def custobar(make_connection: Any) -> Connection:
    return make_connection(
        provider="custobar",
        expires_at=None,
        refresh_token="",
        account={"company": "acme", "base_url": "https://acme.cb.test/", "username": "alice"},
        credentials=json.dumps({"password": "pw-1234"}),
    )


@pytest.fixture(autouse=True)
def custobar_configured(settings: Any) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["custobar"] = {"BASE_URL": "https://{company}.cb.test/"}


def test_the_list_opens_with_counts_per_status_linking_to_their_filter(
    admin_client: Any, make_connection: Any
) -> None:
    now = timezone.now()
    make_connection(label="a", expires_at=now + timedelta(hours=3))
    make_connection(label="b", expires_at=now + timedelta(days=3))
    make_connection(label="c", status=Status.REAUTH_REQUIRED)
    make_connection(label="d", status=Status.ERROR, expires_at=now + timedelta(hours=1))

    html = admin_client.get(reverse("admin:oauth_connect_connection_changelist")).content.decode()

    for count, label, query in [
        (2, "Active", "status__exact=active"),
        (1, "Error", "status__exact=error"),
        (1, "Reauthorization required", "status__exact=reauth_required"),
        (0, "Disconnected", "status__exact=disconnected"),
        (2, "Expiring within a day", "expiring=day"),
    ]:
        assert f'<a href="?{query}"><strong>{count}</strong> {label}</a>' in html


def test_the_connection_page_offers_its_buttons(admin_client: Any, make_connection: Any) -> None:
    apicbase = make_connection(label="prod")
    html = admin_client.get(url("change", apicbase)).content.decode()
    for button in ("Refresh now", "Test connection"):
        assert f">{button}</button>" in html
    assert f'href="{url("disconnect", apicbase)}"' in html
    assert "Rotate token" not in html  # Apicbase can't rotate on demand

    html = admin_client.get(url("change", custobar(make_connection))).content.decode()
    assert ">Rotate token</button>" in html


def refresh_offered(admin_client: Any, connection: Connection) -> bool:
    response = admin_client.get(url("change", connection))
    assert response.status_code == 200
    return ">Refresh now</button>" in response.content.decode()


def test_refresh_now_is_offered_only_where_it_can_work(
    admin_client: Any, make_connection: Any, settings: Any
) -> None:
    Status = Connection.Status
    assert refresh_offered(admin_client, make_connection(label="active"))
    # Failing, but with a refresh token to try again with.
    assert refresh_offered(admin_client, make_connection(label="error", status=Status.ERROR))
    # The provider refused the grant: only the tenant can reconnect it.
    waiting = make_connection(label="reauth", status=Status.REAUTH_REQUIRED)
    assert not refresh_offered(admin_client, waiting)
    # Nothing to renew the token with: no refresh token; a Custobar token without its password.
    assert not refresh_offered(admin_client, make_connection(label="bare", refresh_token=""))
    kept = custobar(make_connection)
    assert refresh_offered(admin_client, kept)
    Connection.objects.filter(pk=kept.pk).update(credentials="")
    assert not refresh_offered(admin_client, kept)
    # A provider no longer configured.
    gone = make_connection(provider="retired")
    assert not refresh_offered(admin_client, gone)


def test_a_provider_class_that_raises_costs_the_button_not_the_page(
    admin_client: Any, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_connect.providers.apicbase import ApicbaseProvider

    def broken(self: Any, connection: Connection) -> bool:
        raise KeyError("a bug")

    monkeypatch.setattr(ApicbaseProvider, "can_refresh", broken)
    assert not refresh_offered(admin_client, make_connection())


def test_the_page_shows_the_event_log_and_the_whole_last_error(
    admin_client: Any, make_connection: Any
) -> None:
    long_error = "The Apicbase token endpoint refused the refresh token. " * 5 + "End of error."
    connection = make_connection(status=Status.REAUTH_REQUIRED, last_error=long_error)
    connection.events.create(kind="reauth_required", message="Refused: invalid_grant.")

    html = admin_client.get(url("change", connection)).content.decode()

    assert "End of error." in html
    assert "Refused: invalid_grant." in html
    assert "access-token-1" not in html and "refresh-token-1" not in html


def test_refresh_now_reports_the_new_expiry(
    admin_client: Any, make_connection: Any, http_mock: responses.RequestsMock, frozen_now: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection()

    response = press(admin_client, "refresh", connection)

    [(level, text)] = messages_of(response)
    assert (level, text.replace("\xa0", " ")) == (
        SUCCESS,
        "Refreshed: the access token now expires in 1 hour.",
    )
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-2"


def test_a_failed_refresh_is_an_error_message_naming_the_connection(
    admin_client: Any, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=400, json={"error": "invalid_grant"})
    connection = make_connection()

    [(level, text)] = messages_of(press(admin_client, "refresh", connection))

    assert level == ERROR
    assert f"#{connection.pk}" in text and "refused" in text
    assert Connection.objects.get(pk=connection.pk).status == Status.REAUTH_REQUIRED


def test_test_connection_reports_the_call(
    admin_client: Any, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.GET, API_URL + "accounts/me/", json={"id": 7})
    [(level, text)] = messages_of(press(admin_client, "test", make_connection()))
    assert level == SUCCESS
    assert text.startswith("Apicbase accepted the token: GET accounts/me/ answered HTTP 200")


def test_test_connection_failure_is_an_error_message(
    admin_client: Any, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.GET, API_URL + "accounts/me/", status=500)
    [(level, text)] = messages_of(press(admin_client, "test", make_connection()))
    assert level == ERROR and "HTTP 500" in text


def test_rotate_token_replaces_the_custobar_token(
    admin_client: Any, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(
        responses.POST, "https://acme.cb.test/api/auth/new-access-token/", json={"token": "t2"}
    )
    connection = custobar(make_connection)

    assert messages_of(press(admin_client, "rotate", connection)) == [
        (SUCCESS, "Rotated: the old token no longer works.")
    ]
    assert Connection.objects.get(pk=connection.pk).access_token == "t2"


def test_rotate_where_unsupported_says_so(admin_client: Any, make_connection: Any) -> None:
    [(level, text)] = messages_of(press(admin_client, "rotate", make_connection()))
    assert level == ERROR and "can't be rotated" in text


def test_disconnect_asks_first_then_revokes(
    admin_client: Any, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.POST, REVOKE_URL, body="")
    connection = make_connection()

    confirmation = admin_client.get(url("disconnect", connection))
    assert confirmation.status_code == 200
    assert "where Apicbase offers revocation, revoked there" in confirmation.content.decode()
    assert Connection.objects.get(pk=connection.pk).status == Status.ACTIVE

    response = press(admin_client, "disconnect", connection)

    assert messages_of(response) == [
        (SUCCESS, "Disconnected: the tokens are revoked and wiped; the history is kept.")
    ]
    assert Connection.objects.get(pk=connection.pk).status == Status.DISCONNECTED


@pytest.mark.parametrize("revocation", ["none offered", "refused"])
def test_disconnect_says_so_when_the_provider_did_not_revoke(
    admin_client: Any,
    make_connection: Any,
    http_mock: responses.RequestsMock,
    settings: Any,
    revocation: str,
) -> None:
    if revocation == "none offered":
        settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["REVOKE_URL"] = None
    else:
        http_mock.add(responses.POST, REVOKE_URL, status=503)
    connection = make_connection()

    response = press(admin_client, "disconnect", connection)

    assert messages_of(response) == [
        (
            SUCCESS,
            "Disconnected: the tokens are wiped here but were not revoked at the provider (the "
            "event log says why); the history is kept.",
        )
    ]
    assert Connection.objects.get(pk=connection.pk).access_token == ""


def test_the_refresh_action_counts_only_what_it_refreshed(
    admin_client: Any, make_connection: Any, http_mock: responses.RequestsMock, frozen_now: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    renewable = make_connection(label="renewable")
    stuck = make_connection(label="stuck", refresh_token="")

    response = admin_client.post(
        reverse("admin:oauth_connect_connection_changelist"),
        {"action": "refresh_now", "_selected_action": [renewable.pk, stuck.pk]},
        follow=True,
    )

    assert sorted(messages_of(response)) == [
        (
            INFO,
            f"{stuck}: Not refreshed: this connection has nothing to renew its token with. The "
            "current token still works; it expires in 1\xa0hour.",
        ),
        (SUCCESS, "Refreshed 1 connection."),
    ]


def test_refresh_outcome_tells_renewed_elsewhere_from_nothing_to_renew_with(
    make_connection: Any,
) -> None:
    # refresh_connection() returns False in both cases; the admin must not say the same thing.
    renewed_elsewhere = refresh_outcome(make_connection(label="a"), refreshed=False)
    nothing_to_renew_with = refresh_outcome(make_connection(label="b", refresh_token=""), False)

    assert renewed_elsewhere.startswith("Already refreshed: another process renewed the token")
    assert nothing_to_renew_with.startswith("Not refreshed: this connection has nothing")


def test_refresh_now_with_nothing_to_renew_with_says_so(
    admin_client: Any, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = custobar(make_connection)
    Connection.objects.filter(pk=connection.pk).update(credentials="")  # password not kept

    [(level, text)] = messages_of(press(admin_client, "refresh", connection))

    assert (level, text) == (
        SUCCESS,
        "Not refreshed: this connection has nothing to renew its token with. The current token "
        "still works; it expires never (no expiry given).",
    )
    assert len(http_mock.calls) == 0


@pytest.mark.parametrize("button", ["refresh", "test", "rotate"])
def test_buttons_change_nothing_on_get(
    admin_client: Any, make_connection: Any, button: str
) -> None:
    assert admin_client.get(url(button, make_connection())).status_code == 405


@pytest.mark.parametrize("button", ["refresh", "test", "rotate", "disconnect"])
def test_view_only_staff_get_no_buttons_and_cannot_press_them(
    client: Any, make_connection: Any, button: str, organisation: Organisation
) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client.force_login(viewer)
    connection = make_connection()

    html = client.get(url("change", connection)).content.decode()
    assert "Refresh now" not in html and "Test connection" not in html

    assert client.post(url(button, connection)).status_code == 403
    assert Connection.objects.get(pk=connection.pk).status == Status.ACTIVE


def test_the_expiring_count_and_its_filter_agree(admin_client: Any, make_connection: Any) -> None:
    soon = timezone.now() + timedelta(hours=2)
    make_connection(label="a", expires_at=soon)
    make_connection(label="b", expires_at=soon, status=Status.ERROR)
    make_connection(label="c", expires_at=soon, status=Status.REAUTH_REQUIRED)  # meaningless

    changelist = reverse("admin:oauth_connect_connection_changelist")
    html = admin_client.get(changelist).content.decode()
    listed = admin_client.get(changelist + "?expiring=day").context["cl"].result_count

    assert '<a href="?expiring=day"><strong>2</strong> Expiring within a day</a>' in html
    assert listed == 2


def test_a_busy_connection_shows_its_latest_events_in_constant_queries(
    admin_client: Any, make_connection: Any
) -> None:
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from oauth_connect.models import ConnectionEvent

    connection = make_connection()

    def page() -> tuple[str, int]:
        with CaptureQueriesContext(db) as queries:
            html = admin_client.get(url("change", connection)).content.decode()
        return html, len(queries)

    ConnectionEvent.objects.create(connection=connection, kind="connected", message="first")
    _, few = page()
    ConnectionEvent.objects.bulk_create(
        ConnectionEvent(connection=connection, kind="refreshed", message=f"refresh {n}")
        for n in range(300)
    )
    html, many = page()

    assert many == few + 1  # the "in all" count, once there are more than shown
    assert html.count("<td>Refreshed</td>") == 50
    assert "refresh 299" in html and "first" not in html
    assert "The latest 50 events; 301 in all." in html


@pytest.mark.parametrize("button", ["refresh", "test", "rotate", "disconnect"])
def test_buttons_need_the_csrf_token(
    make_connection: Any, button: str, admin_user: Any, http_mock: responses.RequestsMock
) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    connection = make_connection()

    assert client.post(url(button, connection)).status_code == 403
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-1"


def test_test_connection_with_a_stored_token_no_header_can_carry_is_a_message(
    admin_client: Any, make_connection: Any, settings: Any, http_mock: Any
) -> None:
    # Stored before tokens were checked on arrival; nothing to refresh it with. Neither a 500
    # nor the token on the page: a message asking for a reconnect, and no call made.
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["CHECK_PATH"] = "me/"
    connection = make_connection(access_token="stale\r\nX-Injected: 1", refresh_token="")
    response = press(admin_client, "test", connection)
    [(level, text)] = messages_of(response)
    assert level == ERROR and "reconnect" in text.lower()
    assert "X-Injected" not in response.content.decode()
    assert not http_mock.calls
