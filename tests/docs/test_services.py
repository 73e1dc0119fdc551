"""docs/services.md: its samples run against the live sandbox (Apicbase, Custobar and TeleTracker
fakes served by a live server), and every function and exception it lists is the code's own."""

from __future__ import annotations

import inspect
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import requests
from celery.exceptions import Retry
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from example_project.celery import app as celery_app
from example_project.sandbox.models import CustobarToken
from example_project.sandbox.views import RECIPES
from oauth_connect import exceptions, services
from oauth_connect.models import Connection
from oauth_connect.services import connect_with_credentials
from tests.docs.harness import DOCS, PageRun
from tests.e2e.conftest import PASSWORD, Sandbox, event_kinds

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = (DOCS / "services.md").read_text()
RECIPE_NAMES = [recipe["name"] for recipe in RECIPES]


@pytest.fixture
def tenant_setup(sandbox: Sandbox, browser: requests.Session, organisation: Any) -> dict[str, Any]:
    """What the page assumes: the organisation connected Apicbase as "production" (and as
    "development", which is due for refresh), and Custobar (company acme)."""
    sandbox.connect(browser, "apicbase", label="production")
    sandbox.connect(browser, "apicbase", label="development")
    development = Connection.objects.get(provider="apicbase", label="development")
    # Issued 50 minutes ago for an hour: due within a day, and past half its lifetime.
    Connection.objects.filter(pk=development.pk).update(
        last_refreshed_at=timezone.now() - timedelta(minutes=50),
        expires_at=timezone.now() + timedelta(minutes=10),
    )
    shop = connect_with_credentials(
        organisation, "custobar", company="acme", username="alice", password=PASSWORD
    )
    return {"development": development, "shop_token": shop.access_token}


@dataclass
class RanPage:
    run: PageRun
    printed: str  # what the samples printed
    apicbase_issued: int  # token sets the sandbox's Apicbase issued while the page ran


@pytest.fixture
def services_page(
    run_docs_page: Callable[..., PageRun],
    sandbox: Sandbox,
    tenant_setup: dict[str, Any],
    organisation: Any,
    eager_celery: Any,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[RanPage]:
    mark = sandbox.mark("apicbase")
    try:
        run = run_docs_page("services.md", namespace={"org": organisation, "password": PASSWORD})
        yield RanPage(run, capsys.readouterr().out, sandbox.issued_since("apicbase", mark))
    finally:
        # The page's task goes with its module: the next run registers its own.
        celery_app.tasks.pop("myapp.tasks.sync_recipes", None)


def test_services_page(
    services_page: RanPage, sandbox: Sandbox, user: Any, tenant_setup: dict[str, Any]
) -> None:
    run, printed = services_page.run, services_page.printed
    ns = run.namespace
    # Calling an API: relative paths, with or without a slash, reach the sandbox's API.
    assert ns["me"] == {"username": user.get_username()}
    assert ns["recipes"] == {"results": RECIPES}
    assert ns["api"].timeout == 30
    # The happy path of the error-handling sample, and of the threads sample.
    assert ns["names"] == RECIPE_NAMES
    assert ns["pages"] == [{"username": "alice"}, {"results": RECIPES}]
    # Refreshing on demand: not due, then forced; refresh_when's predicate was false.
    assert ns["refreshed"] is False
    assert ns["forced"] is True
    assert ns["renewed"] is False
    # Checking: the printed sentence is the one the page shows, up to the milliseconds.
    shown = run.output_of("Apicbase accepted the token").strip()
    assert re.fullmatch(re.escape(shown).replace(r"12\ ms", r"\d+\ ms"), printed.strip()), printed
    # Connecting with credentials: TeleTracker connected, password kept.
    assert ns["problem"] == ""
    fleet = Connection.objects.get(provider="teletracker", label="fleet")
    assert fleet.status == Connection.Status.ACTIVE
    assert fleet.account == {"username": "alice"}
    assert fleet.has_stored_credentials
    # Rotating: Custobar's old token stopped working, the new one is the sandbox's valid one.
    shop = ns["shop"]
    assert shop.access_token != tenant_setup["shop_token"]
    assert CustobarToken.objects.get(token=tenant_setup["shop_token"]).revoked_at is not None
    assert shop.access_token == CustobarToken.objects.get(revoked_at=None).token
    assert event_kinds(shop) == ["connected", "rotated"]
    # Bulk: both listed; only development was past half its lifetime. Nothing failed, so
    # nothing was printed.
    summary = ns["summary"]
    assert {(r.label, r.outcome) for r in summary.results} == {
        ("development", "refreshed"),
        ("production", "skipped"),
    }
    # Celery: the task ran (eagerly) and returned the recipes.
    assert ns["result"].get() == RECIPE_NAMES
    # Two token sets issued at Apicbase: the forced refresh and the bulk one.
    assert services_page.apicbase_issued == 2
    # Disconnecting: revoked at the sandbox, wiped here, history kept.
    connection = ns["connection"]
    assert connection.status == Connection.Status.DISCONNECTED
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.access_token, stored.refresh_token, stored.expires_at) == ("", "", None)
    development = Connection.objects.get(pk=tenant_setup["development"].pk)
    live = sandbox.refresh_tokens("apicbase").filter(revoked__isnull=True)
    assert [token.token for token in live] == [development.refresh_token]
    assert stored.events.get(kind="disconnected").message == "Tokens revoked at Apicbase."


def kill_grant(connection: Connection, *, our_clock_too: bool) -> None:
    """The tenant revoked our access at Apicbase: the access token stops working there (and,
    with ``our_clock_too``, we know it expired), the refresh token is refused."""
    past = timezone.now() - timedelta(minutes=1)
    AccessToken.objects.filter(token=connection.access_token).update(expires=past)
    RefreshToken.objects.get(token=connection.refresh_token).revoke()
    if our_clock_too:
        Connection.objects.filter(pk=connection.pk).update(expires_at=past)


@pytest.mark.parametrize("our_clock_too", [True, False], ids=["expired", "rejected-with-401"])
def test_recipe_names_returns_none_when_apicbase_refuses_the_refresh_token(
    services_page: RanPage, tenant_setup: dict[str, Any], our_clock_too: bool
) -> None:
    recipe_names = services_page.run.namespace["recipe_names"]
    development = Connection.objects.get(pk=tenant_setup["development"].pk)
    kill_grant(development, our_clock_too=our_clock_too)

    assert recipe_names(development) is None

    stored = Connection.objects.get(pk=development.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert "invalid_grant" in stored.last_error
    # Later calls raise at once: the session isn't even made, nothing more is recorded.
    assert recipe_names(stored) is None
    assert event_kinds(stored) == ["connected", "refreshed", "reauth_required"]


def test_fetch_all_refreshes_an_expired_token_once_for_all_threads(
    services_page: RanPage, sandbox: Sandbox, tenant_setup: dict[str, Any]
) -> None:
    fetch_all = services_page.run.namespace["fetch_all"]
    development = Connection.objects.get(pk=tenant_setup["development"].pk)
    sandbox.expire(development)
    mark = sandbox.mark("apicbase")

    pages = fetch_all(development, ["accounts/me/", "library/recipes/"] * 4)

    assert pages == [{"username": "alice"}, {"results": RECIPES}] * 4
    assert sandbox.issued_since("apicbase", mark) == 1


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/auth/login"  # nothing listens there any more


def test_connect_fleet_says_what_went_wrong(
    services_page: RanPage, organisation: Any, settings: Any
) -> None:
    connect_fleet = services_page.run.namespace["connect_fleet"]
    fleet = Connection.objects.get(provider="teletracker", label="fleet")

    assert connect_fleet(organisation, "alice", "wrong") == (
        "TeleTracker did not accept these credentials. Check them and try again."
    )
    assert connect_fleet(organisation, "alice", "") == (
        "Password is required to connect TeleTracker."
    )
    providers = settings.OAUTH_CONNECT["PROVIDERS"]
    settings.OAUTH_CONNECT = {
        **settings.OAUTH_CONNECT,
        "PROVIDERS": {
            **providers,
            "teletracker": {**providers["teletracker"], "LOGIN_URL": closed_port_url()},
        },
    }
    assert connect_fleet(organisation, "alice", PASSWORD) == (
        "TeleTracker can't be reached right now. Please try again later."
    )
    # Nothing was stored by the failures: the fleet connection is as the page left it.
    assert Connection.objects.get(pk=fleet.pk).access_token == fleet.access_token
    assert event_kinds(fleet) == ["connected"]


def test_sync_recipes_task_gives_up_on_reauthorization_and_retries_provider_errors(
    services_page: RanPage, tenant_setup: dict[str, Any], settings: Any
) -> None:
    from myapp.tasks import sync_recipes  # the page's module, installed for this test

    development = Connection.objects.get(pk=tenant_setup["development"].pk)
    Connection.objects.filter(pk=development.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    providers = settings.OAUTH_CONNECT["PROVIDERS"]
    settings.OAUTH_CONNECT = {
        **settings.OAUTH_CONNECT,
        "PROVIDERS": {
            **providers,
            "apicbase": {**providers["apicbase"], "TOKEN_URL": closed_port_url()},
        },
    }
    # The token endpoint is down: the task asks Celery to retry in a minute (an eager task
    # with task_eager_propagates raises the Retry instead of scheduling it).
    with pytest.raises(Retry) as caught:
        sync_recipes.delay(development.pk)
    assert isinstance(caught.value.exc, exceptions.ProviderError)
    assert caught.value.when == 60
    stored = Connection.objects.get(pk=development.pk)
    assert stored.status == Connection.Status.ERROR
    assert stored.consecutive_failures == 1

    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "PROVIDERS": providers}
    kill_grant(stored, our_clock_too=True)
    assert sync_recipes.delay(development.pk).get() is None
    assert Connection.objects.get(pk=development.pk).status == "reauth_required"


# What the page lists is what the code has ---------------------------------------------------


def documented_signature(name: str) -> str:
    """The ``name(...) -> T`` signature as the page writes it first, whitespace normalised."""
    text = " ".join(PAGE.split())
    match = re.search(rf"`{name}(\([^`]*\)(?: -> [^`]+)?)`", text)
    assert match, f"docs/services.md gives no signature for {name}"
    return match.group(1).replace("( ", "(").replace(" )", ")")


def code_signature(function: Callable[..., Any]) -> str:
    parameters = []
    star_added = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not star_added:
            parameters.append("*")
            star_added = True
        if parameter.kind is parameter.VAR_KEYWORD:
            star_added = True
            parameters.append(f"**{parameter.name}")
        elif parameter.default is parameter.empty:
            parameters.append(parameter.name)
        else:
            parameters.append(f"{parameter.name}={parameter.default!r}")
    returns = inspect.signature(function).return_annotation
    return f"({', '.join(parameters).replace(chr(39), chr(34))}) -> {returns}"


@pytest.mark.parametrize("name", services.__all__)
def test_every_service_function_is_on_the_page_with_its_signature(name: str) -> None:
    assert documented_signature(name) == code_signature(getattr(services, name))


def exception_classes() -> list[str]:
    return sorted(
        name
        for name, value in vars(exceptions).items()
        if isinstance(value, type)
        and issubclass(value, exceptions.OAuthConnectError)
        and value.__module__ == exceptions.__name__
    )


def test_every_exception_is_in_the_table() -> None:
    table = PAGE.split("## Exceptions", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    listed = sorted(re.match(r"\| `(\w+)`", row).group(1) for row in rows)  # type: ignore[union-attr]
    assert listed == exception_classes()
