"""docs/quickstart.md, run for real: the key the page makes is the one the settings use, the
page's settings and URLs serve the Connections page, and a person connects through a real
OAuth2 authorization server (the example project's sandbox, posing as Apicbase on its own live
server) before the page's view calls the API and its cron line refreshes the token."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import time_machine
from cryptography.fernet import Fernet
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.db import connection as db_connection
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.test.testcases import LiveServerThread
from oauth2_provider.models import AccessToken
from oauth2_provider.views.mixins import OAuthLibMixin

import example_project.tenants
import example_project.tenants.models
from example_project.sandbox.setup import register_client
from example_project.sandbox.views import RECIPES
from oauth_connect import checks
from oauth_connect.models import Connection
from oauth_connect.providers.apicbase import ApicbaseProvider
from tests.docs.harness import DOCS, _cron_command
from tests.e2e.conftest import event_kinds, hidden_inputs

pytestmark = pytest.mark.django_db(transaction=True)

# What the reader registers at Apicbase (step 3), on the test client's host.
CALLBACK = "http://testserver/connections/apicbase/callback/"
CLIENT_ID = "quickstart-client-id"
CLIENT_SECRET = "quickstart-client-secret"
WEEK = 7 * 24 * 3600


@pytest.fixture
def tenants_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader's ``tenants`` app, which the page assumes: the example project's organisations
    (app label ``tenants``). The page itself adds ``tenants/resolvers.py``."""
    monkeypatch.setitem(sys.modules, "tenants", example_project.tenants)
    monkeypatch.setitem(sys.modules, "tenants.models", example_project.tenants.models)


class _SandboxURLs(WSGIHandler):
    """Serves the example project's URLs whatever ROOT_URLCONF the page installed: this server
    is "Apicbase", a different site from the reader's."""

    def get_response(self, request: HttpRequest) -> HttpResponse:
        request.urlconf = "example_project.urls"
        return super().get_response(request)


@pytest.fixture
def apicbase(
    monkeypatch: pytest.MonkeyPatch, settings: Any, transactional_db: None
) -> Iterator[str]:
    """Apicbase, as far as this test knows: the sandbox authorization server and API on a live
    server of its own, issuing 7-day tokens like Apicbase, with the reader's application
    registered (step 3). Its URL."""
    # django-oauth-toolkit reloads its settings on the setting_changed signal, but each view
    # keeps the first OAuthLibCore it built (and the token lifetime in it) unless told not to.
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "ACCESS_TOKEN_EXPIRE_SECONDS": WEEK,
        "ALWAYS_RELOAD_OAUTHLIB_CORE": True,
    }
    server = LiveServerThread("localhost", lambda app: _SandboxURLs())
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    url = f"http://localhost:{server.port}"
    monkeypatch.setattr(
        ApicbaseProvider,
        "default_settings",
        {
            **ApicbaseProvider.default_settings,
            "AUTHORIZE_URL": f"{url}/sandbox/o/authorize/",
            "TOKEN_URL": f"{url}/sandbox/o/token/",
            "API_URL": f"{url}/sandbox/api/v1/",
        },
    )
    register_client("The reader's site", CLIENT_ID, CLIENT_SECRET, CALLBACK)
    monkeypatch.setenv("APICBASE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("APICBASE_CLIENT_SECRET", CLIENT_SECRET)
    yield url
    server.terminate()
    forget_oauthlib_cores()  # the next test's sandbox builds its own, with its own lifetime


def forget_oauthlib_cores() -> None:
    """Drop the OAuthLibCore each django-oauth-toolkit view keeps once it has built one."""
    views = [OAuthLibMixin]
    for view in views:
        views.extend(view.__subclasses__())
        if "_oauthlib_core" in vars(view):
            delattr(view, "_oauthlib_core")


def key_maker(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], str]:
    """Runs the page's ``python -c ...`` line for real, then does what the page asks of the
    reader: puts the key it printed in the environment as OAUTH_CONNECT_KEY."""

    def run(arguments: list[str]) -> str:
        assert arguments[0] == "-c", arguments
        finished = subprocess.run(  # noqa: S603 - this interpreter, the page's own command
            [sys.executable, *arguments], capture_output=True, text=True, timeout=60, check=True
        )
        monkeypatch.setenv("OAUTH_CONNECT_KEY", finished.stdout.strip())
        return finished.stdout

    return run


def connect_at_apicbase(client: Client, apicbase: str, person: Any) -> Connection:
    """What step 8 describes: Connect Apicbase, Continue to Apicbase, authorize, come back."""
    page = client.get("/connections/")
    assert "Not connected." in page.text
    assert "Connect Apicbase" in page.text
    form = client.get("/connections/apicbase/connect/")
    assert "<li>accounts</li>" in form.text and "<li>library</li>" in form.text
    assert "Continue to Apicbase" in form.text

    to_apicbase = client.post("/connections/apicbase/connect/", {"label": ""})
    assert to_apicbase.status_code == 302
    authorize_url = to_apicbase["Location"]
    assert authorize_url.startswith(f"{apicbase}/sandbox/o/authorize/?")
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [CALLBACK]
    # ... which is what step 3 says to register, on the reader's host.
    assert f"`https://YOUR-HOST{urlsplit(CALLBACK).path}`" in (DOCS / "quickstart.md").read_text()

    # The person, logged in at Apicbase (a session of its own), authorizes.
    at_apicbase = Client()
    at_apicbase.force_login(person)
    browser = requests.Session()
    browser.cookies.set("sessionid", at_apicbase.cookies["sessionid"].value)
    consent = browser.get(authorize_url)
    assert 'name="allow"' in consent.text, consent.text[:500]
    back = browser.post(
        consent.url,
        data={**hidden_inputs(consent.text), "allow": "Authorize"},
        allow_redirects=False,
    )
    assert back.status_code == 302, back.text[:500]
    callback = urlsplit(back.headers["Location"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == CALLBACK

    landed = client.get(callback.path, parse_qs(callback.query), follow=True)
    assert landed.redirect_chain[-1][0] == "/connections/"
    assert "Apicbase is connected." in landed.text
    return Connection.objects.get(provider="apicbase")


def test_quickstart_from_install_to_an_api_call_and_a_refresh(
    run_docs_page: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    tenants_app: None,
    apicbase: str,
    user: Any,
    organisation: Any,
    settings: Any,
    django_user_model: Any,
) -> None:
    settings.LOGIN_URL = "/accounts/login/"  # where the reader's people log in
    run = run_docs_page("quickstart.md", commands={"python": key_maker(monkeypatch)})

    # Step 2: the command shown is the one the system check suggests, and what it printed is
    # the key the settings now hold.
    [key_command] = [b.code.strip() for b, _ in run.outputs if b.code.startswith("python -c")]
    assert key_command == checks.KEYGEN
    key = run.output_of("Fernet.generate_key()")[0].strip()
    assert len(key) == 44 and key.endswith("=")
    assert settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] == [key]
    # Step 5: check said what the page says it says.
    [check_output] = run.output_of("python manage.py check")
    assert check_output.strip() == run.output_of("System check identified").strip()
    # Step 7: the page's settings ask for no migration that isn't applied; three tables.
    [migrate_output] = run.output_of("python manage.py migrate")
    assert "No migrations to apply." in migrate_output
    tables = db_connection.introspection.table_names()
    assert sorted(t for t in tables if t.startswith("oauth_connect_")) == [
        "oauth_connect_clientcredentials",
        "oauth_connect_connection",
        "oauth_connect_connectionevent",
    ]
    # Step 4: without a tenant, the login page or 403.
    anonymous = Client().get("/connections/")
    assert anonymous.status_code == 302
    assert anonymous["Location"] == "/accounts/login/?next=/connections/"
    no_organisation = Client()
    no_organisation.force_login(django_user_model.objects.create_user("bob"))
    assert no_organisation.get("/connections/").status_code == 403
    # Step 8: the link.
    assert (
        run.output_of("{% url 'oauth_connect:list' %}").strip()
        == '<a href="/connections/">Connections</a>'
    )
    # Step 10, run before anyone connected: nothing to do, and said so.
    [cron_output] = run.output_of("refresh_tokens")
    assert cron_output.strip() == "0 due, 0 refreshed, 0 skipped, 0 failed"

    # Step 8, in a browser: with the page's settings and URLs, against "Apicbase".
    client = Client()
    client.force_login(user)
    connection = connect_at_apicbase(client, apicbase, user)
    assert connection.tenant == organisation
    assert connection.label == ""
    assert connection.status == Connection.Status.ACTIVE
    assert connection.scopes == "accounts library"
    lifetime = connection.expires_at - connection.last_refreshed_at
    assert abs(lifetime.total_seconds() - WEEK) < 60
    issued = AccessToken.objects.get(token=connection.access_token)
    assert issued.application.client_id == CLIENT_ID
    # Stored encrypted with the key step 2 made.
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT access_token FROM oauth_connect_connection")
        [(stored,)] = cursor.fetchall()
    assert stored != connection.access_token
    assert Fernet(key).decrypt(stored.encode()).decode() == connection.access_token

    # Step 9: the page's view calls the API as the organisation.
    request = RequestFactory().get("/recipes/")
    request.user = user
    response = run.output_of("def recipes(request)").recipes(request)
    assert response.status_code == 200
    assert json.loads(response.content) == {"results": RECIPES}

    # Step 10: the cron line leaves the token alone until its last day, then renews it.
    [cron] = [block for block, _ in run.outputs if block.language == "cron"]
    arguments = shlex.split(_cron_command(cron.code.strip()))
    assert arguments[:2] == ["python", "manage.py"]

    def cron_runs_on(day: datetime) -> list[str]:
        out = io.StringIO()
        with time_machine.travel(day, tick=True):
            call_command(*arguments[2:], stdout=out)
        return out.getvalue().splitlines()

    assert cron_runs_on(connection.expires_at - timedelta(days=2)) == [
        "0 due, 0 refreshed, 0 skipped, 0 failed"
    ]
    assert cron_runs_on(connection.expires_at - timedelta(hours=12)) == [
        f"apicbase #{connection.pk}: refreshed",
        "1 due, 1 refreshed, 0 skipped, 0 failed",
    ]
    renewed = Connection.objects.get(pk=connection.pk)
    assert renewed.access_token != connection.access_token
    assert renewed.expires_at > connection.expires_at
    assert event_kinds(renewed) == ["connected", "refreshed"]
