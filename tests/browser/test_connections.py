"""What a tenant's member sees on the Connections page, in a real browser: logging in, connecting
Apicbase through the sandbox's consent screen, a refresh after expiry, a grant revoked at the
provider and reconnected, and the credential forms of Custobar and TeleTracker."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone
from oauth2_provider.models import RefreshToken

from oauth_connect.exceptions import ReauthorizationRequired
from oauth_connect.models import Connection
from tests.e2e.conftest import CLIENTS, PASSWORD, Sandbox

from .conftest import log_in

pytest.importorskip("playwright", reason='needs the playwright package: pip install -e ".[test]"')
from playwright.sync_api import Locator, Page, expect  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

# What the sandbox's fakes accept (tests/e2e/test_custobar.py, test_teletracker.py): the Django
# user's own username and password, and for Custobar a company domain.
CUSTOBAR_COMPANY = "acme"
# What the page says. \s: Django's timesince uses non-breaking spaces.
CONNECTED = re.compile(r"^Connected$")
NEEDS_RECONNECT = re.compile(r"^Needs reconnecting$")
SCOPES = re.compile(r"accounts,?\slibrary")
# Token lifetimes in the sandbox fixture are an hour: "in 59 minutes" (or "1 hour").
EXPIRES_IN_AN_HOUR = re.compile(r"in\s(59\sminutes|1\shour)")
EXPIRED = re.compile(r"expired\s|in\s0\sminutes")


@pytest.fixture
def member(page: Page, site: Sandbox, user: Any, organisation: Any) -> Page:
    """The organisation's member (alice), logged in through the login form."""
    log_in(page, user.get_username())
    return page


def card(page: Page, provider_name: str) -> Locator:
    """A provider's card on the Connections page (a region named by its heading)."""
    return page.get_by_role("region", name=provider_name, exact=True)


def field(page: Page, label: str) -> Locator:
    """A form field by its whole label ("Password", not "Keep the password ...")."""
    return page.get_by_label(re.compile(rf"^{re.escape(label)}:?$"))


def messages(page: Page) -> Locator:
    return page.get_by_role("status")


def authorize_at_the_sandbox(page: Page) -> None:
    """django-oauth-toolkit's consent screen: check what is asked, click Authorize."""
    expect(page).to_have_url(re.compile(r"/sandbox/o/authorize/"))
    expect(page.get_by_text("Application requires the following permissions")).to_be_visible()
    page.get_by_role("button", name="Authorize", exact=True).click()
    expect(page).to_have_url(re.compile(r"/connections/$"))


def connect_by_consent(page: Page, provider_name: str, label: str = "") -> None:
    """From the Connections page: the card's Connect link, the connect page, the consent
    screen, and back."""
    card(page, provider_name).get_by_role("link", name=f"Connect {provider_name}").click()
    expect(page.get_by_role("heading", name=f"Connect {provider_name}")).to_be_visible()
    if label:
        field(page, "Label").fill(label)
    page.get_by_role("button", name=f"Continue to {provider_name}").click()
    authorize_at_the_sandbox(page)
    expect(messages(page)).to_contain_text(f"{provider_name} is connected.")


def open_credentials_form(page: Page, provider_name: str) -> None:
    card(page, provider_name).get_by_role("link", name=f"Connect {provider_name}").click()
    expect(page.get_by_role("heading", name=f"Connect {provider_name}")).to_be_visible()


def submit_custobar(page: Page, password: str = PASSWORD, keep_password: bool = True) -> None:
    open_credentials_form(page, "Custobar")
    field(page, "Company domain or base URL").fill(CUSTOBAR_COMPANY)
    field(page, "Username").fill("alice")
    field(page, "Password").fill(password)
    choice = "Keep the password" if keep_password else "Store only the token"
    page.get_by_role("radio", name=re.compile(f"^{choice}")).check()
    page.get_by_role("button", name="Connect Custobar").click()


def submit_teletracker(page: Page, password: str = PASSWORD) -> None:
    open_credentials_form(page, "TeleTracker")
    field(page, "Username").fill("alice")
    field(page, "Password").fill(password)
    page.get_by_role("radio", name=re.compile("^Keep the password")).check()
    page.get_by_role("button", name="Connect TeleTracker").click()


def tab_to(page: Page, target: Locator, most: int = 40) -> None:
    """Press Tab from the top of the page until ``target`` has the focus, as a keyboard user
    would; fail if it never does (not reachable with the keyboard)."""
    page.locator("body").focus()
    for _ in range(most):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{target} can't be reached with Tab")


def revoke_at_the_sandbox(site: Sandbox, connection: Connection, provider: str) -> None:
    """The tenant withdraws our access at the provider: RFC 7009 revocation of the grant."""
    client_id, client_secret = CLIENTS[provider]
    response = requests.post(
        site.absolute("/sandbox/o/revoke_token/"),
        data={
            "token": connection.refresh_token,
            "token_type_hint": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert RefreshToken.objects.get(token=connection.refresh_token).revoked is not None


def test_logging_in_lands_on_the_connections_page(
    page: Page, site: Sandbox, user: Any, organisation: Any
) -> None:
    page.goto("/connections/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/connections/$"))
    field(page, "Username").fill("alice")
    field(page, "Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Please enter a correct username and password")).to_be_visible()

    field(page, "Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(re.compile(r"/connections/$"))
    expect(page.get_by_role("heading", name="Connections", level=1)).to_be_visible()
    for name in ("Apicbase", "Custobar", "TeleTracker"):
        expect(card(page, name)).to_contain_text("Not connected.")
        expect(card(page, name).get_by_role("link", name=f"Connect {name}")).to_be_visible()


def test_apicbase_connects_through_the_consent_screen(
    member: Page, site: Sandbox, organisation: Any
) -> None:
    page = member

    connect_by_consent(page, "Apicbase", label="production")

    apicbase = card(page, "Apicbase")
    expect(apicbase.get_by_text(CONNECTED)).to_be_visible()
    expect(apicbase).to_contain_text("production")
    expect(apicbase).to_contain_text(SCOPES, use_inner_text=True)
    expect(apicbase).to_contain_text(EXPIRES_IN_AN_HOUR, use_inner_text=True)
    expect(apicbase.get_by_text("Disconnect", exact=True)).to_be_visible()
    expect(apicbase.get_by_role("button", name="Reconnect")).to_have_count(0)
    expect(apicbase.get_by_role("link", name="Add another Apicbase connection")).to_be_visible()
    connection = Connection.objects.get(tenant=organisation, provider="apicbase")
    assert connection.status == Connection.Status.ACTIVE
    assert connection.label == "production"
    assert connection.session().get("accounts/me/").json() == {"username": "alice"}


def test_disconnect_asks_first_and_can_be_done_with_the_keyboard(
    member: Page, site: Sandbox, organisation: Any, screenshot: Callable[[Page, str], Any]
) -> None:
    page = member
    connect_by_consent(page, "Apicbase", label="production")
    connection = Connection.objects.get(tenant=organisation, provider="apicbase")

    # Cancel first: nothing happens.
    card(page, "Apicbase").get_by_role("link", name="Disconnect").click()
    expect(page.get_by_role("heading", name="Disconnect Apicbase?")).to_be_visible()
    expect(page.locator(".oc-facts")).to_contain_text("production")
    screenshot(page, "disconnect")
    page.get_by_role("link", name="Cancel").click()
    expect(card(page, "Apicbase").get_by_text(CONNECTED)).to_be_visible()

    # Then with the keyboard alone: Tab from the top of the page to the link, Enter; Tab to
    # the confirmation button, Enter.
    tab_to(page, card(page, "Apicbase").get_by_role("link", name="Disconnect"))
    page.keyboard.press("Enter")
    tab_to(page, page.get_by_role("button", name="Disconnect Apicbase"))
    page.keyboard.press("Enter")

    expect(messages(page)).to_contain_text("Apicbase is disconnected.")
    apicbase = card(page, "Apicbase")
    expect(apicbase.get_by_text("Disconnected", exact=True)).to_be_visible()
    expect(apicbase.get_by_role("button", name="Reconnect")).to_be_visible()
    expect(apicbase.get_by_role("link", name="Connect Apicbase")).to_be_visible()
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.status, stored.access_token) == (Connection.Status.DISCONNECTED, "")
    assert RefreshToken.objects.get(token=connection.refresh_token).revoked is not None


def test_an_expired_token_is_refreshed_and_the_card_shows_it(
    member: Page, site: Sandbox, organisation: Any
) -> None:
    page = member
    connect_by_consent(page, "Apicbase")
    connection = Connection.objects.get(tenant=organisation, provider="apicbase")
    # Connected two hours ago, and the token has just expired (here and at the sandbox).
    Connection.objects.filter(pk=connection.pk).update(
        last_refreshed_at=timezone.now() - timedelta(hours=2)
    )
    site.expire(connection)
    page.reload()
    apicbase = card(page, "Apicbase")
    expect(apicbase).to_contain_text(EXPIRED, use_inner_text=True)
    expect(apicbase).to_contain_text(
        re.compile(r"Last refreshed\s+2\shours ago"), use_inner_text=True
    )
    mark = site.mark("apicbase")

    # The product's backend calls the API: the token is refreshed before the request.
    response = connection.session().get("accounts/me/")

    assert response.status_code == 200
    assert response.json() == {"username": "alice"}
    assert site.issued_since("apicbase", mark) == 1
    page.reload()
    expect(apicbase).to_contain_text(EXPIRES_IN_AN_HOUR, use_inner_text=True)
    expect(apicbase).to_contain_text(re.compile(r"Last refreshed\s+just now"), use_inner_text=True)
    expect(apicbase.get_by_text(CONNECTED)).to_be_visible()


def test_a_grant_revoked_at_the_sandbox_asks_for_reconnect_and_reconnect_works(
    member: Page, site: Sandbox, organisation: Any
) -> None:
    page = member
    connect_by_consent(page, "Apicbase", label="production")
    connection = Connection.objects.get(tenant=organisation, provider="apicbase")
    revoke_at_the_sandbox(site, connection, "apicbase")

    # The next API call gets 401, the refresh is refused (invalid_grant): reauthorization.
    with pytest.raises(ReauthorizationRequired):
        connection.session().get("accounts/me/")

    page.reload()
    apicbase = card(page, "Apicbase")
    expect(apicbase.get_by_text(NEEDS_RECONNECT)).to_be_visible()
    expect(apicbase).to_contain_text("Apicbase no longer accepts")
    reconnect = apicbase.get_by_role("button", name="Reconnect")
    expect(reconnect).to_be_visible()

    reconnect.click()
    authorize_at_the_sandbox(page)

    expect(messages(page)).to_contain_text("Apicbase is connected.")
    expect(apicbase.get_by_text(CONNECTED)).to_be_visible()
    expect(apicbase).to_contain_text("production")  # the same connection, label kept
    expect(apicbase.get_by_role("button", name="Reconnect")).to_have_count(0)
    revived = Connection.objects.get(tenant=organisation, provider="apicbase")
    assert revived.pk == connection.pk
    assert revived.status == Connection.Status.ACTIVE
    assert revived.session().get("accounts/me/").status_code == 200


def test_custobar_and_teletracker_connect_through_their_forms(
    member: Page, site: Sandbox, organisation: Any
) -> None:
    page = member

    submit_custobar(page, keep_password=False)

    expect(messages(page)).to_contain_text("Custobar is connected.")
    custobar = card(page, "Custobar")
    expect(custobar.get_by_text(CONNECTED)).to_be_visible()
    expect(custobar).to_contain_text("alice @ acme")

    submit_teletracker(page)

    expect(messages(page)).to_contain_text("TeleTracker is connected.")
    teletracker = card(page, "TeleTracker")
    expect(teletracker.get_by_text(CONNECTED)).to_be_visible()
    expect(teletracker).to_contain_text("alice")
    expect(teletracker).to_contain_text(EXPIRES_IN_AN_HOUR, use_inner_text=True)
    expect(custobar.get_by_text(CONNECTED)).to_be_visible()  # still
    stored = {c.provider: c for c in Connection.objects.filter(tenant=organisation)}
    assert set(stored) == {"custobar", "teletracker"}
    assert not stored["custobar"].has_stored_credentials  # "Store only the token"
    assert stored["teletracker"].has_stored_credentials  # "Keep the password"
    assert stored["custobar"].session().get("api/customers/").status_code == 200
    assert stored["teletracker"].session().get("api/v1/vehicles").status_code == 200


@pytest.mark.parametrize(
    ("provider_name", "submit"),
    [("Custobar", submit_custobar), ("TeleTracker", submit_teletracker)],
    ids=["custobar", "teletracker"],
)
def test_a_wrong_password_shows_the_forms_error(
    member: Page, site: Sandbox, provider_name: str, submit: Callable[..., None]
) -> None:
    page = member

    submit(page, password="wrong-pw-5x1")

    expect(page).to_have_url(re.compile(r"/connect/$"))
    expect(
        page.get_by_text(
            f"{provider_name} did not accept these credentials. Check them and try again."
        )
    ).to_be_visible()
    expect(field(page, "Username")).to_have_value("alice")  # the form again, to correct
    expect(field(page, "Password")).to_have_value("")  # the password is not sent back
    body = page.locator("body")
    for leak in ("wrong-pw-5x1", "Traceback", '{"', '"success"', '"detail"'):
        expect(body).not_to_contain_text(leak)
    assert not Connection.objects.exists()


def test_the_connections_page_with_every_kind_of_connection(
    member: Page,
    site: Sandbox,
    organisation: Any,
    screenshot: Callable[[Page, str], Any],
) -> None:
    """Apicbase active, the generic OAuth2 provider revoked (Reconnect), Custobar and
    TeleTracker active: the README's picture of the Connections page."""
    page = member
    connect_by_consent(page, "Apicbase", label="production")
    connect_by_consent(page, "Acme (generic OAuth2)")
    acme = Connection.objects.get(tenant=organisation, provider="acme")
    revoke_at_the_sandbox(site, acme, "acme")
    with pytest.raises(ReauthorizationRequired):
        acme.session().get("accounts/me/")
    submit_custobar(page)
    expect(messages(page)).to_contain_text("Custobar is connected.")
    submit_teletracker(page)
    expect(messages(page)).to_contain_text("TeleTracker is connected.")

    page.goto("/connections/")

    for name in ("Apicbase", "Custobar", "TeleTracker"):
        expect(card(page, name).get_by_text(CONNECTED)).to_be_visible()
    acme_card = card(page, "Acme (generic OAuth2)")
    expect(acme_card.get_by_text(NEEDS_RECONNECT)).to_be_visible()
    expect(acme_card.get_by_role("button", name="Reconnect")).to_be_visible()
    screenshot(page, "connections")


def test_a_missing_field_is_marked_beside_it(
    member: Page, site: Sandbox, screenshot: Callable[[Page, str], Any]
) -> None:
    page = member
    open_credentials_form(page, "Custobar")
    field(page, "Company domain or base URL").fill(CUSTOBAR_COMPANY)
    field(page, "Password").fill(PASSWORD)
    page.get_by_role("button", name="Connect Custobar").click()

    username = field(page, "Username")
    error = page.locator(".oc-field-invalid .oc-field-errors")
    expect(error).to_have_text("This field is required.")
    # Right under the field it is about, inside the field's own block.
    field_box, error_box = username.bounding_box(), error.bounding_box()
    assert field_box is not None and error_box is not None
    assert 0 <= error_box["y"] - (field_box["y"] + field_box["height"]) < 16
    screenshot(page, "custobar-missing-field")
    assert not Connection.objects.exists()
