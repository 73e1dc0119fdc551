"""End-to-end fixtures: the example project's sandbox, served by a live server, stands in for
Apicbase (django-oauth-toolkit), Custobar and TeleTracker; a ``requests.Session`` stands in for
the person's browser.

Everything goes over real HTTP: the browser to our pages and to the sandbox's consent page, and
``oauth_connect`` to the sandbox's token, revocation and API endpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application, RefreshToken

from example_project.sandbox.setup import register_sandbox_clients
from oauth_connect.models import Connection
from oauth_connect.providers import registry
from tests.conftest import oauth_connect_settings

# The client ids and secrets example_project/settings.py registers at the sandbox.
CLIENTS = {
    "apicbase": ("sandbox-apicbase-client", "sandbox-apicbase-secret"),
    "acme": ("sandbox-acme-client", "sandbox-acme-secret"),
}
# Shorter than the sandbox's week-long default, so expiry is a small clock move; longer than
# oauth_connect's REFRESH_LEEWAY (300 s), so a fresh token is not due at once.
TOKEN_LIFETIME = 3600
PASSWORD = "pw"  # what tests/conftest.py's users log in with


class _FormInputs(HTMLParser):
    """The hidden inputs of the first ``<form>`` on a page, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._forms_seen = 0
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self._forms_seen += 1
            self._in_form = self._forms_seen == 1
        elif tag == "input" and self._in_form:
            values = dict(attrs)
            name = values.get("name")
            if values.get("type") == "hidden" and name:
                self.fields[name] = values.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def record_statuses(session: requests.Session) -> list[int]:
    """The status of every response ``session`` receives, retries included."""
    statuses: list[int] = []

    def record(response: requests.Response, **kwargs: Any) -> None:
        statuses.append(response.status_code)

    session.hooks["response"].append(record)
    return statuses


def event_kinds(connection: Connection) -> list[str]:
    return list(connection.events.order_by("pk").values_list("kind", flat=True))


def hidden_inputs(html: str) -> dict[str, str]:
    parser = _FormInputs()
    parser.feed(html)
    return parser.fields


@dataclass
class Sandbox:
    """The live sandbox authorization server and the ways a person and a test poke at it."""

    url: str
    applications: dict[str, Application] = field(default_factory=dict)

    def absolute(self, path: str) -> str:
        return self.url + path

    # The person's side ---------------------------------------------------------------------

    def login(self, username: str, password: str = PASSWORD) -> requests.Session:
        """A browser session logged in through the login form, CSRF cookie and all."""
        browser = requests.Session()
        page = browser.get(self.absolute("/accounts/login/"))
        page.raise_for_status()
        response = browser.post(
            self.absolute("/accounts/login/"),
            data={
                "csrfmiddlewaretoken": browser.cookies[settings.CSRF_COOKIE_NAME],
                "username": username,
                "password": password,
            },
        )
        response.raise_for_status()
        assert urlsplit(response.url).path == "/connections/", f"{username} could not log in"
        return browser

    def post(self, browser: requests.Session, path: str, **data: str) -> requests.Response:
        """Submit one of our forms, with the CSRF token Django set in the cookie."""
        return browser.post(
            self.absolute(path),
            data={"csrfmiddlewaretoken": browser.cookies[settings.CSRF_COOKIE_NAME], **data},
        )

    def connect_with_credentials(
        self, browser: requests.Session, provider: str, **fields: str
    ) -> requests.Response:
        """Fill in and submit a credential provider's connect form (Custobar, TeleTracker):
        ``fields`` are the provider's credential fields, ``label`` and ``password_storage``
        ("keep" unless given). Returns the page we end on: the Connections page on success,
        the form again (200) with its errors otherwise."""
        form = browser.get(self.absolute(f"/connections/{provider}/connect/"))
        form.raise_for_status()
        assert 'name="password_storage"' in form.text, form.text[:500]
        response = self.post(
            browser,
            f"/connections/{provider}/connect/",
            **{"label": "", "password_storage": "keep", **fields},
        )
        response.raise_for_status()
        return response

    def connected_with_credentials(
        self, browser: requests.Session, provider: str, **fields: str
    ) -> requests.Response:
        """:meth:`connect_with_credentials`, which must succeed: back on the Connections page,
        saying so."""
        page = self.connect_with_credentials(browser, provider, **fields)
        assert page.url == self.absolute("/connections/"), page.text[:2000]
        assert f"{registry.get(provider).display_name} is connected." in page.text
        return page

    def consent_page(
        self, browser: requests.Session, provider: str, label: str = "", reconnect: bool = False
    ) -> requests.Response:
        """Submit the connect form (as the Reconnect button does with ``reconnect``) and land
        on the sandbox's consent page."""
        response = self.post(
            browser,
            f"/connections/{provider}/connect/",
            label=label,
            reconnect="1" if reconnect else "",
        )
        response.raise_for_status()
        assert urlsplit(response.url).path == "/sandbox/o/authorize/", response.text[:500]
        assert 'name="allow"' in response.text, "no consent form: " + response.text[:500]
        return response

    def connect(
        self,
        browser: requests.Session,
        provider: str,
        label: str = "",
        *,
        allow: bool = True,
        reconnect: bool = False,
    ) -> requests.Response:
        """The whole authorization flow, like a person: connect form, consent page, Authorize
        (or Cancel), back to our callback. Returns the page the callback finally redirects to.
        """
        consent = self.consent_page(browser, provider, label, reconnect)
        fields = hidden_inputs(consent.text)
        if allow:
            fields["allow"] = "Authorize"
        response = browser.post(consent.url, data=fields)
        response.raise_for_status()
        self.callback_params(response, provider)  # fails unless the sandbox sent us back
        return response

    def callback_params(self, response: requests.Response, provider: str) -> dict[str, list[str]]:
        """The query the sandbox sent to our callback during ``connect``."""
        for hop in response.history:
            parts = urlsplit(hop.url)
            if parts.path == f"/connections/{provider}/callback/":
                return parse_qs(parts.query)
        visited = [hop.url for hop in response.history]
        raise AssertionError(f"the {provider} callback was never visited: {visited}")

    # The authorization server's side -------------------------------------------------------

    def access_tokens(self, provider: str) -> QuerySet[AccessToken]:
        return AccessToken.objects.filter(application=self.applications[provider])

    def refresh_tokens(self, provider: str) -> QuerySet[RefreshToken]:
        return RefreshToken.objects.filter(application=self.applications[provider])

    def mark(self, provider: str) -> int:
        """A point to count token responses from: see :meth:`issued_since`."""
        return max(self.refresh_tokens(provider).values_list("pk", flat=True), default=0)

    def issued_since(self, provider: str, mark: int) -> int:
        """How many token sets the sandbox issued after ``mark``. Counted in refresh tokens: each
        code exchange or refresh creates one, and a revoked one is kept (marked revoked), whereas
        rotation deletes the access token it replaces."""
        return self.refresh_tokens(provider).filter(pk__gt=mark).count()

    def newest_refresh_token(self, provider: str) -> RefreshToken:
        return self.refresh_tokens(provider).order_by("-created", "-pk")[0]

    def expire(self, connection: Connection) -> None:
        """Make the access token expired on both sides: in our row and at the sandbox."""
        past = timezone.now() - timedelta(minutes=1)
        AccessToken.objects.filter(token=connection.access_token).update(expires=past)
        Connection.objects.filter(pk=connection.pk).update(expires_at=past)
        connection.refresh_from_db()


def connected(sandbox: Sandbox, browser: requests.Session, organisation: Any) -> Connection:
    """The organisation's Apicbase connection, connected through the sandbox."""
    sandbox.connect(browser, "apicbase")
    return Connection.objects.get(tenant=organisation, provider="apicbase")


def assert_refreshed_once(sandbox: Sandbox, connection: Connection, mark: int) -> None:
    """The sandbox issued one token set since ``mark``, and it is the one we store."""
    assert sandbox.issued_since("apicbase", mark) == 1
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ACTIVE
    assert stored.refresh_token == sandbox.newest_refresh_token("apicbase").token
    assert sandbox.refresh_tokens("apicbase").filter(revoked__isnull=True).count() == 1
    assert sandbox.access_tokens("apicbase").get().token == stored.access_token
    assert event_kinds(stored) == ["connected", "refreshed"]


@pytest.fixture
def sandbox(live_server: Any, settings: Any, oauth_settings: Any) -> Sandbox:
    """Point the "apicbase", "acme", "custobar" and "teletracker" providers at the sandbox on the
    live server, as example_project/settings.py does for runserver, and register the OAuth
    clients there."""
    url = live_server.url
    common = {
        "AUTHORIZE_URL": f"{url}/sandbox/o/authorize/",
        "TOKEN_URL": f"{url}/sandbox/o/token/",
        "REVOKE_URL": f"{url}/sandbox/o/revoke_token/",
        "API_URL": f"{url}/sandbox/api/v1/",
    }
    apicbase_id, apicbase_secret = CLIENTS["apicbase"]
    acme_id, acme_secret = CLIENTS["acme"]
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={
            "apicbase": {**common, "CLIENT_ID": apicbase_id, "CLIENT_SECRET": apicbase_secret},
            "acme": {
                **common,
                "NAME": "Acme (generic OAuth2)",
                "CLIENT_ID": acme_id,
                "CLIENT_SECRET": acme_secret,
                "CLIENT_AUTH": "basic",
                "SCOPES": ["accounts"],
            },
            "custobar": {"BASE_URL": f"{url}/sandbox/custobar/{{company}}/"},
            "teletracker": {
                "API_URL": f"{url}/sandbox/teletracker/",
                "LOGIN_URL": f"{url}/sandbox/teletracker/auth/login",
                "REFRESH_URL": f"{url}/sandbox/teletracker/auth/refresh",
            },
        }
    )
    # django-oauth-toolkit reloads its oauth2_settings on the setting_changed signal.
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "ACCESS_TOKEN_EXPIRE_SECONDS": TOKEN_LIFETIME,
    }
    by_client = {app.client_id: app for app in register_sandbox_clients(url)}
    return Sandbox(
        url=url,
        applications={
            provider: by_client[client_id] for provider, (client_id, _) in CLIENTS.items()
        },
    )


@pytest.fixture
def browser(sandbox: Sandbox, user: Any, organisation: Any) -> Iterator[requests.Session]:
    """The organisation's member, logged in to the live server."""
    session = sandbox.login(user.get_username())
    yield session
    session.close()
