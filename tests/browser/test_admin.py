"""What an operator sees in the admin, in a real browser: the connections of every tenant with
their status, and the "Refresh now" and "Disconnect" actions run from the changelist."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from oauth2_provider.models import RefreshToken

from oauth_connect.exceptions import ReauthorizationRequired
from oauth_connect.models import Connection
from oauth_connect.services import refresh_connection
from tests.e2e.conftest import PASSWORD, Sandbox

pytest.importorskip("playwright", reason='needs the playwright package: pip install -e ".[test]"')
from playwright.sync_api import Locator, Page, expect  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/oauth_connect/connection/"


@pytest.fixture
def viewport() -> dict[str, int]:
    # A common laptop width: the changelist's nine columns must fit it.
    return {"width": 1280, "height": 900}


@pytest.fixture
def connections(site: Sandbox, organisation: Any, other_organisation: Any) -> dict[str, Connection]:
    """Connections of two organisations, made over HTTP as their members would (the browser
    flows themselves are in test_connections.py): alice's Apicbase "production" and Custobar,
    alice's Acme revoked at the sandbox (reauthorization required), mallory's TeleTracker."""
    alice = site.login("alice")
    site.connect(alice, "apicbase", label="production")
    site.connect(alice, "acme")
    site.connected_with_credentials(
        alice, "custobar", company="acme", username="alice", password=PASSWORD
    )
    mallory = site.login("mallory")
    site.connected_with_credentials(mallory, "teletracker", username="mallory", password=PASSWORD)
    by_provider = {connection.provider: connection for connection in Connection.objects.all()}
    acme = by_provider["acme"]
    RefreshToken.objects.get(token=acme.refresh_token).revoke()
    with pytest.raises(ReauthorizationRequired):
        refresh_connection(acme, force=True)
    return by_provider


@pytest.fixture
def admin_page(page: Page, site: Sandbox, operator: Any) -> Page:
    """The operator (a superuser), logged in through the admin's login form."""
    page.goto("/admin/")
    page.get_by_label(re.compile(r"^Username:?$")).fill(operator.get_username())
    page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    return page


def row(page: Page, connection: Connection) -> Locator:
    """The connection's row in the changelist (its first column links it: "#12")."""
    return page.get_by_role("row").filter(
        has=page.get_by_role("link", name=f"#{connection.pk}", exact=True)
    )


def fits_sideways(page: Page, selector: str) -> bool:
    """Whether what ``selector`` matches shows whole, without scrolling sideways."""
    return bool(
        page.evaluate(
            f"""() => {{
                const box = document.querySelector({selector!r});
                return box.scrollWidth <= box.clientWidth
                    && document.documentElement.scrollWidth <= window.innerWidth;
            }}"""
        )
    )


def run_action(page: Page, connection: Connection, action: str) -> None:
    """Tick the connection's row, choose the action in the dropdown, press Go (or Run)."""
    row(page, connection).get_by_role("checkbox").check()
    page.get_by_role("combobox", name=re.compile("^Action")).select_option(label=action)
    # "Go" until Django 6.0, "Run" since.
    page.get_by_role("button", name=re.compile(r"^(Go|Run)$")).click()


def test_the_operator_refreshes_and_disconnects_from_the_admin(
    site: Sandbox,
    connections: dict[str, Connection],
    admin_page: Page,
    screenshot: Callable[[Page, str], Any],
) -> None:
    page = admin_page
    apicbase = connections["apicbase"]
    page.get_by_role("link", name="Connections", exact=True).click()
    expect(page).to_have_url(re.compile(f"{CHANGELIST}$"))
    # Fold the admin's app list away (it stays folded, as for an operator): room for the columns.
    page.get_by_role("button", name="Toggle navigation").click()

    # Every tenant's connections, each with its status badge, and the provider as the
    # Connections page spells it; nothing to scroll sideways for.
    for connection in connections.values():
        expect(row(page, connection)).to_have_count(1)
    expect(row(page, connections["teletracker"])).to_contain_text("TeleTracker")
    expect(row(page, connections["acme"])).to_contain_text("Acme (generic OAuth2)")
    assert fits_sideways(page, "#changelist .results")
    expect(row(page, apicbase)).to_contain_text("Alice's Kitchen")
    expect(row(page, apicbase).get_by_text("Active", exact=True)).to_be_visible()
    expect(row(page, connections["custobar"]).get_by_text("Active", exact=True)).to_be_visible()
    expect(row(page, connections["teletracker"])).to_contain_text("Mallory's Diner")
    expect(
        row(page, connections["acme"]).get_by_text("Reauthorization required", exact=True)
    ).to_be_visible()

    # Refresh now: the sandbox issues one new token set.
    mark = site.mark("apicbase")
    run_action(page, apicbase, "Refresh now")

    expect(page.get_by_text("Refreshed 1 connection.")).to_be_visible()
    expect(row(page, apicbase).get_by_text("Active", exact=True)).to_be_visible()
    assert site.issued_since("apicbase", mark) == 1
    refreshed = Connection.objects.get(pk=apicbase.pk)
    assert refreshed.refresh_token == site.newest_refresh_token("apicbase").token

    # The connection's own page: its fields and event log, never its tokens.
    row(page, apicbase).get_by_role("link", name=f"#{apicbase.pk}", exact=True).click()
    expect(page.get_by_role("heading", name=str(apicbase))).to_be_visible()
    events = page.get_by_role("table").filter(has_text="Refreshed")
    expect(events).to_contain_text("Connected")
    body = page.locator("body")
    expect(body).to_contain_text("sandbox-apicbase-client")
    for secret in (refreshed.access_token, refreshed.refresh_token):
        expect(body).not_to_contain_text(secret)
    screenshot(page, "admin-connection")

    # Disconnect: the grant is revoked at the sandbox, the row says so.
    page.goto(CHANGELIST)
    run_action(page, apicbase, "Disconnect")

    expect(page.get_by_text("Disconnected 1 connection.")).to_be_visible()
    expect(row(page, apicbase).get_by_text("Disconnected", exact=True)).to_be_visible()
    expect(row(page, connections["custobar"]).get_by_text("Active", exact=True)).to_be_visible()
    disconnected = Connection.objects.get(pk=apicbase.pk)
    assert disconnected.status == Connection.Status.DISCONNECTED
    assert RefreshToken.objects.get(token=refreshed.refresh_token).revoked is not None
    screenshot(page, "admin-changelist")


def test_the_operator_sees_what_needs_attention_and_uses_the_connection_buttons(
    site: Sandbox,
    connections: dict[str, Connection],
    admin_page: Page,
) -> None:
    page = admin_page
    page.goto(CHANGELIST)
    counts = page.locator("#oc-status-counts")
    expect(counts).to_contain_text(re.compile(r"3\s+Active"))
    expect(counts).to_contain_text(re.compile(r"1\s+Reauthorization required"))

    # "What needs my attention?": one click on its count lists the connection to reconnect.
    counts.get_by_role("link", name=re.compile("Reauthorization required")).click()
    acme = connections["acme"]
    expect(row(page, acme)).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_have_count(1)

    # Its page: no Refresh now (only a person can bring it back), but Disconnect.
    page.goto(CHANGELIST + f"{acme.pk}/change/")
    expect(page.get_by_role("link", name="Disconnect", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Refresh now")).to_have_count(0)

    # A working connection's page: the buttons, in line with the admin's own History link.
    page.goto(CHANGELIST + f"{connections['apicbase'].pk}/change/")
    history = page.get_by_role("link", name="History").bounding_box()
    assert history is not None
    for name in ("Refresh now", "Test connection"):
        button = page.get_by_role("button", name=name).bounding_box()
        assert button is not None
        assert (button["y"], button["height"]) == (history["y"], history["height"]), name
    mark = site.mark("apicbase")
    page.get_by_role("button", name="Test connection").click()
    expect(
        page.get_by_text(re.compile(r"Apicbase accepted the token: GET accounts/me/"))
    ).to_be_visible()
    page.get_by_role("button", name="Refresh now").click()
    expect(
        page.get_by_text(re.compile(r"Refreshed: the access token now expires in"))
    ).to_be_visible()
    assert site.issued_since("apicbase", mark) == 1

    page.get_by_role("link", name="Disconnect", exact=True).click()
    expect(page.get_by_text("where Apicbase offers revocation, revoked there")).to_be_visible()
    page.get_by_role("button", name="Yes, disconnect").click()
    expect(page.get_by_text(re.compile("Disconnected: the tokens are revoked"))).to_be_visible()
    assert Connection.objects.get(pk=connections["apicbase"].pk).status == "disconnected"

    # Custobar can rotate its token; the old one stops working at once.
    custobar = connections["custobar"]
    page.goto(CHANGELIST + f"{custobar.pk}/change/")
    page.get_by_role("button", name="Rotate token").click()
    expect(page.get_by_text("Rotated: the old token no longer works.")).to_be_visible()
    assert Connection.objects.get(pk=custobar.pk).access_token != custobar.access_token
