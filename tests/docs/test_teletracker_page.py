"""docs/providers/teletracker.md, against the sandbox's fake TeleTracker on a live server: the
settings and their table, the connect form as described, connecting and calling from code, a
403 retried, a refresh ahead of expiry, and what an expired refresh token leads to with and
without the password. The clock moves with time_machine; the live server shares it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
import time_machine
from django.contrib.auth import get_user_model
from django.utils import timezone

from example_project.sandbox.models import TeleTrackerSession
from example_project.sandbox.teletracker import VEHICLES
from oauth_connect.exceptions import ProviderError, ReauthorizationRequired
from oauth_connect.models import Connection
from oauth_connect.providers.teletracker import TeleTrackerProvider
from oauth_connect.services import check_connection, disconnect, forget_credentials
from tests.docs.provider_pages import (
    assert_table_tells_the_truth,
    page_says,
    point_samples_at,
)
from tests.e2e.conftest import PASSWORD, Sandbox, event_kinds, record_statuses

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "providers/teletracker.md"
USERNAME = "dispatch@example.com"  # the TeleTracker user of the page's sample
DISPATCH_PASSWORD = "dispatch-pw-41"  # noqa: S105 - the sandbox's
HOUR = timedelta(seconds=3600)  # the sandbox's token lifetime, like TeleTracker's
REFRESH_LIFETIME = timedelta(days=30)  # the sandbox's refresh token lifetime


@pytest.fixture
def page(
    run_docs_page: Callable[..., Any],
    sandbox: Sandbox,
    organisation: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    settings.SANDBOX_TELETRACKER_TOKEN_SECONDS = int(HOUR.total_seconds())
    get_user_model().objects.create_user(USERNAME, password=DISPATCH_PASSWORD)
    point_samples_at(monkeypatch, sandbox.url)
    names = {"organisation": organisation, "password": DISPATCH_PASSWORD}
    return run_docs_page("providers/teletracker.md", namespace=names)


def about(moment: Any, expected: Any) -> bool:
    return moment is not None and abs((moment - expected).total_seconds()) < 60


def test_the_settings_table_tells_the_truth(page: Any) -> None:
    applied = page.output_of('"teletracker": {}')["OAUTH_CONNECT"]
    provider = TeleTrackerProvider("teletracker", applied["PROVIDERS"]["teletracker"])
    assert provider.settings["LOGIN_URL"] == "https://api.teletracker.net/auth/login"
    assert_table_tells_the_truth(PAGE, TeleTrackerProvider)


def test_connecting_and_calling_as_shown(page: Any) -> None:
    connection = page.namespace["connection"]
    assert connection.label == "fleet"
    assert connection.account == {"username": USERNAME, "account_id": "42"}
    assert connection.has_stored_credentials
    login = TeleTrackerSession.objects.get()
    assert login.account_id == "42"
    assert (connection.access_token, connection.refresh_token) == (login.token, login.refresh_token)
    assert about(connection.expires_at, timezone.now() + HOUR)
    assert about(connection.refresh_expires_at, timezone.now() + REFRESH_LIFETIME)
    assert page.namespace["vehicles"] == {"results": VEHICLES}
    assert check_connection(connection).startswith(
        "TeleTracker accepted the token: GET api/v1/vehicles answered HTTP 200"
    )


def test_an_expired_token_answered_with_403_is_refreshed_and_retried(page: Any) -> None:
    connection = page.namespace["connection"]
    first_refresh_token = connection.refresh_token
    # TeleTracker's clock says the token is dead while ours still trusts it.
    TeleTrackerSession.objects.update(token_expires=timezone.now() - timedelta(seconds=1))

    session = connection.session()
    statuses = record_statuses(session)
    assert session.get("api/v1/vehicles").json() == {"results": VEHICLES}

    assert statuses == [403, 200]
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.refresh_token != first_refresh_token  # rotated
    assert event_kinds(stored) == ["connected", "refreshed"]


def test_a_token_about_to_expire_is_refreshed_before_the_request(page: Any) -> None:
    connection = page.namespace["connection"]
    with time_machine.travel(timezone.now() + HOUR - timedelta(seconds=240), tick=True):
        session = connection.session()
        statuses = record_statuses(session)
        assert session.get("api/v1/vehicles").status_code == 200

    assert statuses == [200]  # refreshed first: the old token was never sent again
    assert TeleTrackerSession.objects.filter(kind=TeleTrackerSession.Kind.REFRESH).count() == 1


def test_an_expired_refresh_token_logs_in_again_with_the_kept_password(page: Any) -> None:
    connection = page.namespace["connection"]
    with time_machine.travel(timezone.now() + REFRESH_LIFETIME + timedelta(days=1), tick=True):
        assert connection.session().get("api/v1/vehicles").status_code == 200

    stored = Connection.objects.get(pk=connection.pk)
    assert event_kinds(stored) == ["connected", "refreshed"]
    message = stored.events.first().message
    assert message == "Logged in again with the kept password: the refresh token has expired."
    assert page_says(PAGE, message)
    assert not TeleTrackerSession.objects.filter(kind=TeleTrackerSession.Kind.REFRESH).exists()


def test_without_the_password_an_expired_refresh_token_needs_reconnecting(page: Any) -> None:
    connection = page.namespace["connection"]
    forget_credentials(connection)
    with (
        time_machine.travel(timezone.now() + REFRESH_LIFETIME + timedelta(days=1), tick=True),
        pytest.raises(ReauthorizationRequired) as refused,
    ):
        connection.session().get("api/v1/vehicles")

    assert refused.value.detail == (
        "TeleTracker: the refresh token has expired, and no password is kept to log in again. "
        "Someone must reconnect."
    )
    assert page_says(PAGE, refused.value.detail)
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.REAUTH_REQUIRED


def test_an_unsuccessful_answer_is_a_provider_error(page: Any) -> None:
    provider = TeleTrackerProvider("teletracker")
    with pytest.raises(ProviderError) as failed:
        provider._tokens({"success": False, "message": "Service unavailable"}, secrets=[])
    assert str(failed.value) == "TeleTracker answered success: False (Service unavailable)."
    assert page_says(PAGE, str(failed.value))


def test_the_connect_form_is_as_described(
    page: Any,
    sandbox: Sandbox,
    browser: requests.Session,
    organisation: Any,
) -> None:
    form = browser.get(sandbox.absolute("/connections/teletracker/connect/")).text
    for text in (
        "Username",
        "Password",
        "Account id",
        "Only if your user can access more than one account.",
        "Label",
        "Keep the password (encrypted), so the connection can renew itself",
        "Store only the token: when it stops working, someone must reconnect",
    ):
        assert text in form and page_says(PAGE, text), text
    wrong = sandbox.connect_with_credentials(
        browser, "teletracker", username="alice", password="wrong"
    )
    refused = "TeleTracker did not accept these credentials. Check them and try again."
    assert refused in wrong.text and page_says(PAGE, refused)

    sandbox.connected_with_credentials(browser, "teletracker", username="alice", password=PASSWORD)
    connection = Connection.objects.get(tenant=organisation, provider="teletracker", label="")
    disconnect(connection)
    assert not connection.has_stored_credentials
    message = connection.events.first().message
    assert message == "TeleTracker offers no revocation. Tokens wiped here anyway."
    assert page_says(PAGE, message)
