"""Connecting with a username and password is throttled per user and per tenant
(``CREDENTIAL_THROTTLE``), so the connect form is no password oracle: through the real views,
counted in Django's LocMemCache (emptied before each test by conftest's ``empty_caches``), the
clock moved with ``time_machine``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

import pytest
import responses
import time_machine
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.test import Client
from django.urls import reverse
from django.utils import translation

from oauth_connect.models import Connection
from tests.conftest import NOW

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("credential_providers")]

CUSTOBAR = reverse("oauth_connect:connect", kwargs={"provider": "custobar"})
CUSTOBAR_TOKEN_URL = "https://acme.custobar.test/api/auth/access-token/"
PASSWORD = "guess-number-9f2c"  # noqa: S105 - a fake for the mocked API
WINDOW = 900
# Three minutes into a window (windows start at multiples of WINDOW since the epoch), near the
# real time so the logged-in sessions made before the clock is frozen are still valid.
WINDOW_START = datetime.fromtimestamp(NOW.timestamp() // WINDOW * WINDOW, dt_timezone.utc)
START = WINDOW_START + timedelta(minutes=3)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def refusing_provider(http_mock: responses.RequestsMock) -> responses.RequestsMock:
    """Custobar refuses every password: what someone guessing would meet."""
    http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, status=401, json={"detail": "Invalid."})
    return http_mock


@pytest.fixture
def colleague_client(organisation: Any) -> Client:
    """Another member of the same organisation, logged in."""
    bob = get_user_model().objects.create_user("bob", password="pw")
    organisation.members.add(bob)
    client = Client()
    client.force_login(bob)
    return client


def attempt(client: Client, **overrides: str) -> Any:
    form = {
        "company": "acme",
        "username": "alice",
        "password": PASSWORD,
        "label": "",
        "password_storage": "keep",
        **overrides,
    }
    return client.post(CUSTOBAR, form)


def attempts(client: Client, count: int) -> list[int]:
    return [attempt(client).status_code for _ in range(count)]


@pytest.mark.usefixtures("clock")
@pytest.mark.parametrize("accepted", [False, True], ids=["refused", "accepted"])
def test_the_sixth_attempt_by_a_user_is_refused_without_asking_the_provider(
    logged_in_client: Client, http_mock: responses.RequestsMock, accepted: bool
) -> None:
    if accepted:  # a right password counts as much as a wrong one
        http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, json={"token": "custobar-token"})
    else:
        http_mock.add(responses.GET, CUSTOBAR_TOKEN_URL, status=401, json={"detail": "No."})
    expected = 302 if accepted else 200
    for n in range(5):  # distinct labels: each accepted one is a new connection
        assert attempt(logged_in_client, label=f"l{n}").status_code == expected

    response = attempt(logged_in_client, label="l5")

    assert response.status_code == 429
    assert len(http_mock.calls) == 5
    assert Connection.objects.count() == (5 if accepted else 0)


@pytest.mark.usefixtures("clock", "refusing_provider")
def test_the_refusal_says_what_happened_and_when_to_try_again(
    logged_in_client: Client, organisation: Any, caplog: Any
) -> None:
    attempts(logged_in_client, 5)

    with caplog.at_level(logging.WARNING, logger="oauth_connect"):
        response = attempt(logged_in_client)

    message = "Too many attempts to connect. Try again in about 12 minutes."
    assert response.context["form"].non_field_errors() == [message]
    html = response.content.decode()
    assert message in html
    assert PASSWORD not in html
    assert response["Retry-After"] == str(12 * 60)
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "connect_throttled"]
    assert (record.levelno, record.provider, record.tenant_id) == (
        logging.WARNING,
        "custobar",
        organisation.pk,
    )
    assert PASSWORD not in record.getMessage() and "alice" not in record.getMessage()


@pytest.mark.usefixtures("refusing_provider")
def test_under_a_minute_left_reads_as_about_one_minute(
    logged_in_client: Client, clock: time_machine.Coordinates
) -> None:
    attempts(logged_in_client, 5)
    clock.shift(timedelta(minutes=11, seconds=30))  # 30 seconds left in the window

    response = attempt(logged_in_client)

    assert response.context["form"].non_field_errors() == [
        "Too many attempts to connect. Try again in about 1 minute."
    ]
    assert response["Retry-After"] == "30"


@pytest.mark.usefixtures("clock", "refusing_provider")
def test_the_refusal_is_translated(logged_in_client: Client) -> None:
    attempts(logged_in_client, 5)

    with translation.override("fr"):
        response = attempt(logged_in_client)

    [error] = response.context["form"].non_field_errors()
    assert error.replace("\xa0", " ") == (
        "Trop de tentatives de connexion. Réessayez dans environ 12 minutes."
    )


@pytest.mark.usefixtures("clock")
def test_a_colleague_may_still_try_until_the_tenant_limit(
    logged_in_client: Client,
    colleague_client: Client,
    refusing_provider: responses.RequestsMock,
    settings: Any,
) -> None:
    settings.OAUTH_CONNECT["CREDENTIAL_THROTTLE"] = {"USER": 5, "TENANT": 7}  # WINDOW: default
    assert attempts(logged_in_client, 6) == [200] * 5 + [429]

    # Alice's refused sixth attempt took none of the tenant's: Bob has the two left.
    assert attempts(colleague_client, 3) == [200, 200, 429]
    assert len(refusing_provider.calls) == 7


@pytest.mark.usefixtures("clock")
def test_another_tenant_is_not_held_back(
    logged_in_client: Client, other_organisation: Any, refusing_provider: responses.RequestsMock
) -> None:
    attempts(logged_in_client, 5)
    mallory = Client()
    mallory.force_login(other_organisation.members.get())

    assert attempt(mallory).status_code == 200


@pytest.mark.usefixtures("refusing_provider")
def test_the_window_ending_lets_them_try_again(
    logged_in_client: Client, clock: time_machine.Coordinates
) -> None:
    assert attempts(logged_in_client, 6) == [200] * 5 + [429]

    clock.shift(timedelta(minutes=11, seconds=59))
    assert attempt(logged_in_client).status_code == 429  # still the same window
    clock.shift(timedelta(seconds=1))
    assert attempts(logged_in_client, 6) == [200] * 5 + [429]


@pytest.mark.usefixtures("clock")
def test_no_limit_when_the_setting_is_none(
    logged_in_client: Client, refusing_provider: responses.RequestsMock, settings: Any
) -> None:
    settings.OAUTH_CONNECT["CREDENTIAL_THROTTLE"] = None

    assert attempts(logged_in_client, 30) == [200] * 30
    assert len(refusing_provider.calls) == 30


@pytest.mark.usefixtures("clock")
def test_a_form_error_is_no_attempt(
    logged_in_client: Client, refusing_provider: responses.RequestsMock
) -> None:
    # Nothing reaches the provider without a company, so nothing is learnt: it isn't counted.
    for _ in range(10):
        assert attempt(logged_in_client, company="").status_code == 200

    assert attempt(logged_in_client).status_code == 200
    assert len(refusing_provider.calls) == 1


@pytest.mark.usefixtures("clock", "refusing_provider")
def test_attempts_are_counted_in_the_configured_cache(
    logged_in_client: Client, settings: Any
) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "throttle": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "throttle",
        },
    }
    settings.OAUTH_CONNECT = {
        **settings.OAUTH_CONNECT,
        "CREDENTIAL_THROTTLE": {"CACHE": "throttle"},
    }
    attempts(logged_in_client, 5)

    caches["throttle"].clear()

    assert attempt(logged_in_client).status_code == 200


def test_a_cache_outage_lets_the_attempt_through_and_says_why(
    logged_in_client: Client,
    refusing_provider: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
) -> None:
    # Fail open: a Redis outage must not stop every tenant from connecting. The operator reads
    # why the limit lapsed.
    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("cache unreachable")

    monkeypatch.setattr(caches["default"], "add", down)
    response = attempt(logged_in_client)
    assert response.status_code == 200  # the form again, with the provider's refusal
    assert len(refusing_provider.calls) == 1
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "throttle_unavailable"]
    assert record.levelno == logging.ERROR and record.provider == "custobar"
