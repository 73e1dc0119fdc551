"""TeleTracker against the sandbox's fake of it, over real HTTP: a password login returning a
bearer token and a rotating refresh token, expiry answered with 403, refresh tokens that die on
reuse, a vendor clock that is off, and many threads finding the same expired token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection as db_connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from example_project.sandbox.models import CustobarToken, TeleTrackerSession
from oauth_connect.exceptions import ReauthorizationRequired
from oauth_connect.models import Connection
from oauth_connect.services import refresh_connection
from tests.conftest import race

from .conftest import PASSWORD, Sandbox, event_kinds, record_statuses

pytestmark = pytest.mark.django_db(transaction=True)

LIFETIME = 3600  # the sandbox's token lifetime here, as the vendor's
REFRESH_LIFETIME = timedelta(days=30)
Kind = TeleTrackerSession.Kind


@pytest.fixture(autouse=True)
def token_lifetime(settings: Any) -> None:
    settings.SANDBOX_TELETRACKER_TOKEN_SECONDS = LIFETIME


@pytest.fixture
def connect_teletracker(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> Callable[..., Connection]:
    """Connect TeleTracker through the Connections page form, as alice."""

    def connect(**fields: str) -> Connection:
        values = {"username": "alice", "password": PASSWORD, **fields}
        sandbox.connected_with_credentials(browser, "teletracker", **values)
        return Connection.objects.get(tenant=organisation, provider="teletracker")

    return connect


def teletracker_url(sandbox: Sandbox, path: str) -> str:
    return sandbox.absolute(f"/sandbox/teletracker/{path}")


def newest_session() -> TeleTrackerSession:
    return TeleTrackerSession.objects.order_by("-created", "-pk")[0]


def issued(kind: str) -> int:
    return TeleTrackerSession.objects.filter(kind=kind).count()


def vehicles_status(sandbox: Sandbox, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = teletracker_url(sandbox, "api/v1/vehicles")
    return requests.get(url, headers=headers, timeout=10).status_code


def spend_refresh_token(sandbox: Sandbox, refresh_token: str) -> requests.Response:
    return requests.post(
        teletracker_url(sandbox, "auth/refresh"), data={"refresh_token": refresh_token}, timeout=10
    )


def about(moment: datetime | None, expected: datetime, slack: float = 60) -> bool:
    return moment is not None and abs((moment - expected).total_seconds()) < slack


# The sandbox itself ----------------------------------------------------------------------------


def test_the_sandbox_behaves_like_teletrackers_docs(sandbox: Sandbox, user: Any) -> None:
    login_url = teletracker_url(sandbox, "auth/login")
    refused = requests.post(login_url, data={"username": "alice", "password": "no"}, timeout=10)
    assert refused.status_code == 401
    assert refused.json() == {"success": False, "message": "Invalid username or password"}
    checked = requests.post(
        login_url, data={"username": "alice", "password": PASSWORD, "auth_only": "1"}, timeout=10
    )
    assert checked.json() == {"success": True}
    assert not TeleTrackerSession.objects.exists()

    body = requests.post(
        login_url, data={"username": "alice", "password": PASSWORD}, timeout=10
    ).json()
    assert body["success"] is True
    assert body["tokenLifetime"] == LIFETIME
    token_expiration = parse_datetime(body["tokenExpiration"])
    refresh_expiration = parse_datetime(body["refreshTokenExpiration"])
    assert token_expiration is not None and token_expiration.utcoffset() is not None
    assert about(token_expiration, timezone.now() + timedelta(seconds=LIFETIME))
    assert about(refresh_expiration, timezone.now() + REFRESH_LIFETIME)
    for missing in (None, "unknown-token"):
        assert vehicles_status(sandbox, missing) == 401
    assert vehicles_status(sandbox, body["token"]) == 200

    renewed = spend_refresh_token(sandbox, body["refreshToken"])
    assert renewed.status_code == 200
    new = renewed.json()
    assert new["token"] != body["token"] and new["refreshToken"] != body["refreshToken"]
    assert vehicles_status(sandbox, new["token"]) == 200
    reused = spend_refresh_token(sandbox, body["refreshToken"])
    assert reused.status_code == 401
    assert reused.json() == {"success": False, "message": "Invalid refresh token"}

    # An expired bearer token gets 403; an expired refresh token is refused.
    TeleTrackerSession.objects.filter(token=new["token"]).update(
        token_expires=timezone.now() - timedelta(seconds=1),
        refresh_expires=timezone.now() - timedelta(seconds=1),
    )
    assert vehicles_status(sandbox, new["token"]) == 403
    assert spend_refresh_token(sandbox, new["refreshToken"]).status_code == 401
    assert issued(Kind.LOGIN) == 1
    assert issued(Kind.REFRESH) == 1


# Connecting ------------------------------------------------------------------------------------


def test_connects_through_the_form_and_calls_the_api(
    sandbox: Sandbox, browser: requests.Session, connect_teletracker: Any
) -> None:
    connection = connect_teletracker(account_id="42", label="fleet")

    assert connection.status == Connection.Status.ACTIVE
    assert connection.label == "fleet"
    assert connection.account == {"username": "alice", "account_id": "42"}
    assert connection.has_stored_credentials
    assert about(connection.expires_at, timezone.now() + timedelta(seconds=LIFETIME))
    assert about(connection.refresh_expires_at, timezone.now() + REFRESH_LIFETIME)
    login = TeleTrackerSession.objects.get()
    assert login.kind == Kind.LOGIN
    assert login.account_id == "42"
    assert (connection.access_token, connection.refresh_token) == (
        login.token,
        login.refresh_token,
    )
    assert event_kinds(connection) == ["connected"]
    page = browser.get(sandbox.absolute("/connections/")).text
    assert f'data-connection="{connection.pk}"' in page

    session = connection.session()
    statuses = record_statuses(session)
    response = session.get("api/v1/vehicles")
    assert response.status_code == 200
    assert response.json()["results"]
    assert response.request.headers["Authorization"] == f"Bearer {login.token}"
    assert statuses == [200]
    assert TeleTrackerSession.objects.count() == 1


def test_a_wrong_password_is_a_form_error_and_stores_nothing(
    sandbox: Sandbox, browser: requests.Session
) -> None:
    page = sandbox.connect_with_credentials(
        browser, "teletracker", username="alice", password="wrong"
    )

    assert page.url == sandbox.absolute("/connections/teletracker/connect/")
    assert "TeleTracker did not accept these credentials. Check them and try again." in page.text
    assert 'name="account_id"' in page.text
    assert not Connection.objects.exists()
    assert not TeleTrackerSession.objects.exists()


# Expiry and refresh ----------------------------------------------------------------------------


def test_an_expired_token_answered_with_403_is_refreshed_once_and_retried(
    sandbox: Sandbox, connect_teletracker: Any
) -> None:
    connection = connect_teletracker()
    first = TeleTrackerSession.objects.get()

    # Past the sandbox's expiry, while our row still says the token is good for an hour.
    with time_machine.travel(timezone.now() + timedelta(seconds=LIFETIME + 60), tick=True):
        Connection.objects.filter(pk=connection.pk).update(
            expires_at=timezone.now() + timedelta(hours=1)
        )
        connection.refresh_from_db()
        session = connection.session()
        statuses = record_statuses(session)
        response = session.get("api/v1/vehicles")

        assert statuses == [403, 200]
        assert response.status_code == 200
        assert issued(Kind.REFRESH) == 1
        assert issued(Kind.LOGIN) == 1
        first.refresh_from_db()
        assert first.refresh_used_at is not None
        newest = newest_session()
        assert newest.refreshed_from == first
        stored = Connection.objects.get(pk=connection.pk)
        assert (stored.access_token, stored.refresh_token) == (newest.token, newest.refresh_token)
        assert about(stored.expires_at, timezone.now() + timedelta(seconds=LIFETIME))
        assert about(stored.refresh_expires_at, timezone.now() + REFRESH_LIFETIME)
        assert event_kinds(stored) == ["connected", "refreshed"]


def test_a_token_about_to_expire_is_refreshed_before_the_request(
    sandbox: Sandbox, connect_teletracker: Any
) -> None:
    connection = connect_teletracker()
    first = TeleTrackerSession.objects.get()
    # An hour-long token issued 59 minutes ago: within REFRESH_LEEWAY (300 s) of expiry.
    Connection.objects.filter(pk=connection.pk).update(
        expires_at=timezone.now() + timedelta(seconds=60),
        last_refreshed_at=timezone.now() - timedelta(minutes=59),
    )
    connection.refresh_from_db()

    session = connection.session()
    statuses = record_statuses(session)
    response = session.get("api/v1/vehicles")

    assert statuses == [200]  # refreshed first
    assert response.status_code == 200
    newest = newest_session()
    assert newest.kind == Kind.REFRESH and newest.refreshed_from == first
    assert response.request.headers["Authorization"] == f"Bearer {newest.token}"
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.refresh_token == newest.refresh_token
    assert about(stored.expires_at, timezone.now() + timedelta(seconds=LIFETIME))
    assert event_kinds(stored) == ["connected", "refreshed"]


def test_a_reused_refresh_token_is_recovered_by_logging_in_again(
    sandbox: Sandbox, connect_teletracker: Any
) -> None:
    connection = connect_teletracker(account_id="7")
    # Someone spends our refresh token behind our back: the one we hold is now dead.
    assert spend_refresh_token(sandbox, connection.refresh_token).status_code == 200

    assert refresh_connection(connection, force=True) is True

    assert connection.status == Connection.Status.ACTIVE
    assert issued(Kind.LOGIN) == 2
    assert issued(Kind.REFRESH) == 1  # ours was refused: only the one behind our back
    relogin = newest_session()
    assert relogin.kind == Kind.LOGIN and relogin.account_id == "7"
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.access_token, stored.refresh_token) == (relogin.token, relogin.refresh_token)
    assert event_kinds(stored) == ["connected", "refreshed"]
    message = stored.events.get(kind="refreshed").message
    assert message.startswith("Logged in again with the kept password")
    assert "refresh token was refused" in message
    assert stored.session().get("api/v1/vehicles").status_code == 200


def test_without_the_password_a_reused_refresh_token_needs_reauthorization(
    sandbox: Sandbox, browser: requests.Session, connect_teletracker: Any
) -> None:
    connection = connect_teletracker(password_storage="token_only")
    assert not connection.has_stored_credentials
    assert spend_refresh_token(sandbox, connection.refresh_token).status_code == 200

    with pytest.raises(ReauthorizationRequired) as caught:
        refresh_connection(connection, force=True)

    assert "no password is kept" in caught.value.detail
    assert connection.status == Connection.Status.REAUTH_REQUIRED
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert event_kinds(stored) == ["connected", "reauth_required"]
    assert issued(Kind.LOGIN) == 1
    assert "Needs reconnecting" in browser.get(sandbox.absolute("/connections/")).text


def test_reconnecting_through_the_form_revives_the_connection(
    sandbox: Sandbox, browser: requests.Session, connect_teletracker: Any
) -> None:
    connection = connect_teletracker(label="fleet", password_storage="token_only")
    spend_refresh_token(sandbox, connection.refresh_token)
    with pytest.raises(ReauthorizationRequired):
        refresh_connection(connection, force=True)

    revived = connect_teletracker(label="fleet")

    assert revived.pk == connection.pk
    assert revived.status == Connection.Status.ACTIVE
    assert revived.last_error == ""
    assert revived.has_stored_credentials  # this time the password is kept
    assert revived.refresh_token == newest_session().refresh_token
    assert revived.session().get("api/v1/vehicles").status_code == 200
    assert event_kinds(revived) == ["connected", "reauth_required", "connected"]


class _ReconnectControl(HTMLParser):
    """The page's "Reconnect" control: a form (method, action, inputs) or a link (href)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: tuple[str, str, dict[str, str]] | None = None
        self._form: tuple[str, str, dict[str, str]] | None = None
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._form = (values.get("method", "get").lower(), values.get("action", ""), {})
        elif tag == "input" and self._form is not None and values.get("name"):
            self._form[2][values["name"]] = values.get("value", "")
        elif tag == "a":
            self._href, self._text = values.get("href", ""), ""
        elif tag == "button":
            self._text = ""

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self.found is not None:
            return
        if tag == "a" and self._href is not None and self._text.strip() == "Reconnect":
            self.found = ("get", self._href, {})
        elif tag == "button" and self._form is not None and self._text.strip() == "Reconnect":
            self.found = self._form
        if tag == "a":
            self._href = None
        elif tag == "form":
            self._form = None


def follow_reconnect(sandbox: Sandbox, browser: requests.Session) -> requests.Response:
    """Click "Reconnect" on the Connections page, whatever kind of control it is."""
    parser = _ReconnectControl()
    parser.feed(browser.get(sandbox.absolute("/connections/")).text)
    assert parser.found is not None, "no Reconnect control on the Connections page"
    method, action, data = parser.found
    url = urljoin(sandbox.absolute("/connections/"), action)
    if method == "post":
        return browser.post(url, data=data)
    return browser.get(url, params=data)


def test_the_reconnect_button_opens_the_form_without_errors(
    sandbox: Sandbox, browser: requests.Session, connect_teletracker: Any
) -> None:
    connection = connect_teletracker(label="fleet", password_storage="token_only")
    Connection.objects.filter(pk=connection.pk).update(status=Connection.Status.REAUTH_REQUIRED)

    form = follow_reconnect(sandbox, browser)

    assert form.status_code == 200
    assert urlsplit(form.url).path == "/connections/teletracker/connect/"
    assert 'name="password"' in form.text
    assert 'value="fleet"' in form.text  # the label is kept
    # The person hasn't typed anything yet: a form full of errors reads as a failure.
    assert "This field is required." not in form.text


def test_a_password_changed_since_needs_reauthorization(
    sandbox: Sandbox, connect_teletracker: Any, user: Any
) -> None:
    connection = connect_teletracker()
    assert spend_refresh_token(sandbox, connection.refresh_token).status_code == 200
    user.set_password("changed-at-teletracker")
    user.save()

    with pytest.raises(ReauthorizationRequired):
        refresh_connection(connection, force=True)

    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert "login endpoint" in stored.last_error
    assert event_kinds(stored) == ["connected", "reauth_required"]
    assert issued(Kind.LOGIN) == 1


def test_an_expired_refresh_token_is_replaced_by_logging_in_again(
    sandbox: Sandbox, connect_teletracker: Any
) -> None:
    connection = connect_teletracker()

    with time_machine.travel(timezone.now() + REFRESH_LIFETIME + timedelta(days=1), tick=True):
        response = connection.session().get("api/v1/vehicles")

        assert response.status_code == 200
        assert issued(Kind.REFRESH) == 0  # known dead on our clock: not even tried
        assert issued(Kind.LOGIN) == 2
        stored = Connection.objects.get(pk=connection.pk)
        assert stored.refresh_token == newest_session().refresh_token
        assert about(stored.refresh_expires_at, timezone.now() + REFRESH_LIFETIME)
        message = stored.events.get(kind="refreshed").message
        assert "the refresh token has expired" in message


@pytest.mark.parametrize("skew", [-3600, 3600], ids=["vendor-behind", "vendor-ahead"])
def test_a_vendor_clock_that_is_off_does_not_move_our_expiries(
    sandbox: Sandbox, connect_teletracker: Any, settings: Any, skew: int
) -> None:
    settings.SANDBOX_TELETRACKER_CLOCK_SKEW_SECONDS = skew

    connection = connect_teletracker()

    # What the vendor reported is an hour off...
    login = TeleTrackerSession.objects.get()
    assert login.token_expires - timezone.now() > timedelta(seconds=LIFETIME - 60)
    # ...but our expiries come from tokenLifetime and our own clock.
    assert about(connection.expires_at, timezone.now() + timedelta(seconds=LIFETIME))
    assert about(connection.refresh_expires_at, timezone.now() + REFRESH_LIFETIME)
    session = connection.session()
    statuses = record_statuses(session)
    assert session.get("api/v1/vehicles").status_code == 200
    assert statuses == [200]
    assert TeleTrackerSession.objects.count() == 1  # no premature refresh
    assert event_kinds(Connection.objects.get(pk=connection.pk)) == ["connected"]


def test_the_sandbox_reports_skewed_timestamps(sandbox: Sandbox, user: Any, settings: Any) -> None:
    settings.SANDBOX_TELETRACKER_CLOCK_SKEW_SECONDS = -3600
    body = requests.post(
        teletracker_url(sandbox, "auth/login"),
        data={"username": "alice", "password": PASSWORD},
        timeout=10,
    ).json()

    assert body["tokenLifetime"] == LIFETIME
    # An hour behind: read naively, the token would expire right now.
    assert about(parse_datetime(body["tokenExpiration"]), timezone.now())
    assert vehicles_status(sandbox, body["token"]) == 200


def test_concurrent_requests_on_an_expired_connection_refresh_once(
    sandbox: Sandbox, connect_teletracker: Any
) -> None:
    connection = connect_teletracker()
    past = timezone.now() - timedelta(minutes=1)
    TeleTrackerSession.objects.filter(token=connection.access_token).update(token_expires=past)
    Connection.objects.filter(pk=connection.pk).update(expires_at=past)
    workers = 8

    def call_api() -> tuple[int, Any]:
        response = Connection.objects.get(pk=connection.pk).session().get("api/v1/vehicles")
        return response.status_code, response.json()["results"][0]["id"]

    results = race(workers, call_api)

    assert results == [(200, 501)] * workers
    assert issued(Kind.REFRESH) == 1
    assert issued(Kind.LOGIN) == 1
    stored = Connection.objects.get(pk=connection.pk)
    newest = newest_session()
    assert (stored.access_token, stored.refresh_token) == (newest.token, newest.refresh_token)
    assert event_kinds(stored) == ["connected", "refreshed"]


# Secrets ---------------------------------------------------------------------------------------

SECRET_PASSWORD = "s3cret-pass-9f2"


@pytest.mark.parametrize("provider", ["teletracker", "custobar"])
def test_no_password_or_token_in_the_database_admin_or_logs(
    sandbox: Sandbox,
    organisation: Any,
    client: Any,
    caplog: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="oauth_connect")
    bob = get_user_model().objects.create_user("bob", password=SECRET_PASSWORD)
    organisation.members.add(bob)
    browser = sandbox.login("bob", SECRET_PASSWORD)
    fields = {"username": "bob", "password": SECRET_PASSWORD}
    if provider == "custobar":
        fields["company"] = "acme"
    wrong = sandbox.connect_with_credentials(browser, provider, **{**fields, "password": "x"})
    assert wrong.url.endswith("/connect/")
    sandbox.connected_with_credentials(browser, provider, **fields)
    connection = Connection.objects.get(provider=provider)
    api = "api/v1/vehicles" if provider == "teletracker" else "api/customers/"
    assert connection.session().get(api).status_code == 200
    assert refresh_connection(connection, force=True) is True  # a refresh is logged too
    assert connection.session().get(api).status_code == 200
    if provider == "teletracker":
        sessions = TeleTrackerSession.objects.all()
        secrets = [s.token for s in sessions] + [s.refresh_token for s in sessions]
    else:
        secrets = list(CustobarToken.objects.values_list("token", flat=True))
    secrets.append(SECRET_PASSWORD)
    assert connection.access_token in secrets

    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM oauth_connect_connection WHERE id = %s", [connection.pk])
        row = " ".join(str(value) for value in cursor.fetchone())
    operator = get_user_model().objects.create_superuser("operator", password="operator-pw")
    client.force_login(operator)
    admin_page = client.get(f"/admin/oauth_connect/connection/{connection.pk}/change/")
    assert admin_page.status_code == 200
    admin_html = admin_page.content.decode()
    assert "bob" in admin_html  # the right page
    events = " ".join(connection.events.values_list("message", flat=True))
    logs = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
    assert f"{connection.provider_name} connection #{connection.pk}" in caplog.text  # logged

    for secret in secrets:
        assert secret not in row, "a secret is stored in clear"
        assert secret not in admin_html, "the admin shows a secret"
        assert secret not in events, "an event message holds a secret"
        assert secret not in logs, "a secret was logged"
