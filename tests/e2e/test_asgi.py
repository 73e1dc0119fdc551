"""The example project under uvicorn, started as docs/example-project.md says, serving its async
view (``/recipes/async/``, through ``connection.asession()``) and its sync twin (``/recipes/``)
to hundreds of requests at once, with the live sandbox as Apicbase.

Runs on SQLite and on PostgreSQL (``DATABASE_URL``). On PostgreSQL uvicorn runs with Django's
connection pool (``DATABASE_POOL_SIZE``): each ASGI request in flight holds a database
connection, and 200 of them would exceed the server's default ``max_connections`` of 100.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone
from oauth2_provider.models import AccessToken

from oauth_connect.models import Connection
from tests.conftest import postgres_configured, race

from .asgi import WAIT, AsgiSite, uvicorn_serving
from .conftest import Sandbox, assert_refreshed_once, connected

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 200


@pytest.fixture
def asgi_site(sandbox: Sandbox) -> Iterator[AsgiSite]:
    """``uvicorn example_project.asgi:application``, pointing at the sandbox like the rest of the
    example project."""
    arguments = ["example_project.asgi:application"]
    with uvicorn_serving(arguments, SITE_URL=sandbox.url, DATABASE_POOL_SIZE="30") as site:
        yield site


RECIPES = {"results": [{"id": 1, "name": "Tomato soup"}, {"id": 2, "name": "Focaccia"}]}


def test_requests_finding_an_expired_token_refresh_it_once(
    asgi_site: AsgiSite, sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    connection = connected(sandbox, browser, organisation)
    sandbox.expire(connection)
    mark = sandbox.mark("apicbase")

    answers = asgi_site.get_all(browser, ["/recipes/async/"] * REQUESTS)

    assert answers == [(200, RECIPES)] * REQUESTS
    assert_refreshed_once(sandbox, connection, mark)


def test_a_storm_of_401s_refreshes_once(
    asgi_site: AsgiSite, sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    """Our row says the token is good; the sandbox has expired it: every request meets a 401."""
    connection = connected(sandbox, browser, organisation)
    AccessToken.objects.filter(token=connection.access_token).update(
        expires=timezone.now() - timedelta(minutes=1)
    )
    mark = sandbox.mark("apicbase")

    answers = asgi_site.get_all(browser, ["/recipes/async/"] * REQUESTS)

    assert answers == [(200, RECIPES)] * REQUESTS
    assert_refreshed_once(sandbox, connection, mark)


def test_a_token_about_to_expire_is_refreshed_before_the_call(
    asgi_site: AsgiSite, sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    connection = connected(sandbox, browser, organisation)
    # Within REFRESH_LEEWAY (five minutes) in our row, for a token issued an hour ago; still
    # valid at the sandbox.
    Connection.objects.filter(pk=connection.pk).update(
        expires_at=timezone.now() + timedelta(minutes=2),
        last_refreshed_at=timezone.now() - timedelta(hours=1),
    )
    mark = sandbox.mark("apicbase")

    answers = asgi_site.get_all(browser, ["/recipes/async/"] * 50)

    assert answers == [(200, RECIPES)] * 50
    assert_refreshed_once(sandbox, connection, mark)


def test_sync_and_async_views_racing_refresh_once(
    asgi_site: AsgiSite, sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    """The async view and its sync twin (run by Django on threads) in one uvicorn process, and
    on PostgreSQL sync workers of another process (this one) too."""
    connection = connected(sandbox, browser, organisation)
    sandbox.expire(connection)
    mark = sandbox.mark("apicbase")
    paths = ["/recipes/async/", "/recipes/"] * (REQUESTS // 2)

    sync_outcomes: list[Any] = []
    if postgres_configured():

        def sync_worker() -> int:
            session = Connection.objects.get(pk=connection.pk).session()
            return int(session.get("library/recipes/").status_code)

        racer = threading.Thread(target=lambda: sync_outcomes.extend(race(8, sync_worker)))
        racer.start()
    answers = asgi_site.get_all(browser, paths)
    if postgres_configured():
        racer.join(WAIT)
        assert sync_outcomes == [200] * 8

    assert answers == [(200, RECIPES)] * REQUESTS
    assert_refreshed_once(sandbox, connection, mark)


@pytest.mark.parametrize(
    "status", [Connection.Status.REAUTH_REQUIRED, Connection.Status.DISCONNECTED]
)
def test_an_unusable_connection_sends_the_person_to_the_connections_page(
    asgi_site: AsgiSite,
    sandbox: Sandbox,
    browser: requests.Session,
    organisation: Any,
    status: str,
) -> None:
    connection = connected(sandbox, browser, organisation)
    Connection.objects.filter(pk=connection.pk).update(status=status)

    ((code, headers),) = asgi_site.get_all(browser, ["/recipes/async/"])

    assert code == 302
    assert headers["Location"] == "/connections/"
