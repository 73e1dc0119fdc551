"""The example project on any host and port, and ``manage.py sandbox`` for a project of one's
own: the sandbox's side of the quickstart (whose literal run is tests/docs/test_quickstart.py)."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from oauth2_provider.models import Application

from example_project.sandbox.setup import register_sandbox_clients
from example_project.site_url import binds_every_interface, site_url, url_for
from oauth_connect.models import Connection

from .conftest import CLIENTS, Sandbox

pytestmark = pytest.mark.django_db(transaction=True)

CALLBACK = "http://127.0.0.1:8000/connections/apicbase/callback/"


# Where the example project is served ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["manage.py", "runserver"], "http://127.0.0.1:8000"),
        (["manage.py", "runserver", "9000"], "http://127.0.0.1:9000"),
        (["manage.py", "runserver", "--noreload", "0.0.0.0:8080"], "http://127.0.0.1:8080"),
        (["manage.py", "runserver", "0:8080"], "http://127.0.0.1:8080"),
        (["manage.py", "runserver", "localhost:8002"], "http://localhost:8002"),
        (["manage.py", "runserver", "[::1]:8003"], "http://[::1]:8003"),
        (["manage.py", "sandbox", CALLBACK], "http://127.0.0.1:8001"),
        (["manage.py", "sandbox", CALLBACK, "--addrport", "8005"], "http://127.0.0.1:8005"),
        (["manage.py", "sandbox", "--addrport=localhost:8006", CALLBACK], "http://localhost:8006"),
        (["manage.py", "migrate"], "http://127.0.0.1:8000"),
        (["gunicorn", "example_project.wsgi"], "http://127.0.0.1:8000"),
        # Options' values are not the address; other commands that mention one are not it.
        (["manage.py", "runserver", "-v", "2"], "http://127.0.0.1:8000"),
        (["manage.py", "runserver", "--settings", "x.y", "9000"], "http://127.0.0.1:9000"),
        (["manage.py", "runserver", "--verbosity=2", "9001"], "http://127.0.0.1:9001"),
        (["manage.py", "test", "sandbox"], "http://127.0.0.1:8000"),
        (["pytest", "-k", "sandbox"], "http://127.0.0.1:8000"),
    ],
)
def test_the_site_url_is_where_runserver_was_told_to_listen(argv: list[str], expected: str) -> None:
    assert site_url(None, argv) == expected


def test_a_configured_site_url_wins() -> None:
    assert site_url("https://demo.example/", ["manage.py", "runserver", "9000"]) == (
        "https://demo.example"
    )


def test_listening_on_every_interface_allows_any_host_name() -> None:
    assert binds_every_interface(["manage.py", "runserver", "0.0.0.0:8000"])
    assert binds_every_interface(["manage.py", "runserver", "0:8000"])
    assert not binds_every_interface(["manage.py", "runserver", "8000"])
    assert not binds_every_interface(["manage.py", "runserver", "127.0.0.1:8000"])


def test_a_browser_on_this_machine_reaches_a_server_on_every_interface_on_loopback() -> None:
    assert url_for("0.0.0.0:9000") == "http://127.0.0.1:9000"
    assert url_for("nonsense") == "http://127.0.0.1:8000"


def test_the_example_project_connects_on_a_port_setup_demo_was_not_told_of(
    sandbox: Sandbox, browser: requests.Session, organisation: Any, settings: Any
) -> None:
    # setup_demo ran for runserver's default port; runserver was then given the live
    # server's port (SITE_URL follows it).
    register_sandbox_clients("http://127.0.0.1:8000")
    settings.SITE_URL = sandbox.url
    application = Application.objects.get(client_id=CLIENTS["apicbase"][0])

    page = sandbox.connect(browser, "apicbase")

    assert "Apicbase is connected." in page.text
    assert Connection.objects.get(tenant=organisation).status == Connection.Status.ACTIVE
    # Accepted for the request, never saved: the registration is what setup_demo made.
    application.refresh_from_db()
    assert application.redirect_uris == "http://127.0.0.1:8000/connections/apicbase/callback/"


def authorize(
    browser: requests.Session,
    sandbox: Sandbox,
    client_id: str,
    redirect_uri: str,
    headers: dict[str, str] | None = None,
) -> str:
    """The sandbox's answer to an authorization request: its consent page, or its refusal."""
    query = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": "accounts",
        "code_challenge": "x" * 43,
        "code_challenge_method": "S256",
        "state": "s",
    }
    url = sandbox.absolute("/sandbox/o/authorize/?" + urlencode(query))
    return browser.get(url, headers=headers).text


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://elsewhere.example:{port}/connections/apicbase/callback/",  # another host
        "http://localhost:{other}/connections/apicbase/callback/",  # another port
        "https://localhost:{port}/connections/apicbase/callback/",  # another scheme
        "http://localhost:{port}/connections/apicbase/callback/?next=/admin/",  # a query
        "http://localhost:{port}/connections/apicbase/callback/#x",  # a fragment
        "http://localhost:{port}/connections/apicbase/elsewhere/",  # not the callback
        "http://localhost:{port}/other/apicbase/callback/",  # not where the callback is
        "http://localhost:{port}/connections/acme/callback/",  # another client's callback
        "http://evil.example@localhost:{port}/connections/apicbase/callback/",  # user info
        "http://localhost:{port}\\@evil.example/connections/apicbase/callback/",
        "http://localhost:{port}/connections/apicbase/callback/../../x/",
    ],
)
def test_only_the_served_sites_own_callback_for_that_client_is_accepted(
    sandbox: Sandbox, browser: requests.Session, settings: Any, redirect_uri: str
) -> None:
    register_sandbox_clients("http://127.0.0.1:8000")
    settings.SITE_URL = sandbox.url
    port = sandbox.url.rsplit(":", 1)[1]
    uri = redirect_uri.format(port=port, other=int(port) + 1)

    page = authorize(browser, sandbox, CLIENTS["apicbase"][0], uri)

    assert 'name="allow"' not in page  # no consent: django-oauth-toolkit refuses
    application = Application.objects.get(client_id=CLIENTS["apicbase"][0])
    assert application.redirect_uris == "http://127.0.0.1:8000/connections/apicbase/callback/"


def test_a_forged_host_header_is_not_where_the_sandbox_thinks_it_is(
    sandbox: Sandbox, browser: requests.Session, settings: Any
) -> None:
    # runserver 0.0.0.0 allows any Host: the callback must match where it was told to listen,
    # not what the request claims.
    settings.ALLOWED_HOSTS = ["*"]
    settings.SITE_URL = sandbox.url
    register_sandbox_clients("http://127.0.0.1:8000")
    forged = "http://evil.example/connections/apicbase/callback/"
    page = authorize(
        browser, sandbox, CLIENTS["apicbase"][0], forged, headers={"Host": "evil.example"}
    )
    assert 'name="allow"' not in page


# manage.py sandbox ------------------------------------------------------------------------------


def sandbox_command(*arguments: str) -> str:
    out = io.StringIO()
    call_command("sandbox", *arguments, "--no-serve", stdout=out)
    return out.getvalue()


def printed_settings(output: str) -> dict[str, Any]:
    """The providers a reader's settings hold once they paste what the command printed."""
    pasted = output.split(":\n", 1)[1].rsplit("\nThe sandbox's own login", 1)[0]
    namespace: dict[str, Any] = {"OAUTH_CONNECT": {"PROVIDERS": {}}}
    exec(pasted, namespace)  # noqa: S102 - what a reader pastes into their settings
    providers: dict[str, Any] = namespace["OAUTH_CONNECT"]["PROVIDERS"]
    return providers


def test_the_sandbox_command_registers_a_projects_callback_and_prints_its_settings() -> None:
    output = sandbox_command(CALLBACK, "--addrport", "127.0.0.1:8011")

    assert output.startswith("Paste this at the end of your project's settings.py:\n")
    assert output.rstrip().endswith("The sandbox's own login, to authorize at: demo / demo.")
    apicbase = printed_settings(output)["apicbase"]
    assert apicbase["AUTHORIZE_URL"] == "http://127.0.0.1:8011/sandbox/o/authorize/"
    assert apicbase["TOKEN_URL"] == "http://127.0.0.1:8011/sandbox/o/token/"
    assert apicbase["API_URL"] == "http://127.0.0.1:8011/sandbox/api/v1/"
    application = Application.objects.get(client_id=apicbase["CLIENT_ID"])
    assert application.redirect_uris == CALLBACK
    assert application.client_type == Application.CLIENT_CONFIDENTIAL
    assert application.authorization_grant_type == Application.GRANT_AUTHORIZATION_CODE
    # The secret printed is the one the sandbox checks.
    assert application.client_secret == apicbase["CLIENT_SECRET"]
    # The login the reader authorizes with exists.
    assert authenticate(username="demo", password="demo") is not None


def test_the_same_callback_twice_is_one_client() -> None:
    output = sandbox_command(CALLBACK, CALLBACK)
    assert output.count('OAUTH_CONNECT["PROVIDERS"]["apicbase"]') == 1
    assert Application.objects.filter(name__startswith="Sandbox client for").count() == 1


def test_restarting_the_sandbox_prints_the_same_settings() -> None:
    # What the reader pasted yesterday still works today.
    first = printed_settings(sandbox_command(CALLBACK))["apicbase"]
    second = printed_settings(sandbox_command(CALLBACK))["apicbase"]
    assert second == first
    assert Application.objects.filter(client_id=first["CLIENT_ID"]).count() == 1


def test_custobar_and_teletracker_need_no_registration_only_their_urls() -> None:
    output = sandbox_command("custobar", "teletracker", "--addrport", "8012")
    providers = printed_settings(output)
    assert providers == {
        "custobar": {"BASE_URL": "http://127.0.0.1:8012/sandbox/custobar/{company}/"},
        "teletracker": {
            "API_URL": "http://127.0.0.1:8012/sandbox/teletracker/",
            "LOGIN_URL": "http://127.0.0.1:8012/sandbox/teletracker/auth/login",
            "REFRESH_URL": "http://127.0.0.1:8012/sandbox/teletracker/auth/refresh",
        },
    }
    assert "Custobar and TeleTracker: log in as demo / demo (Custobar's company: demo)." in output
    assert not Application.objects.filter(name__startswith="Sandbox client for").exists()


def test_a_credential_providers_callback_url_is_refused_with_what_to_give_instead() -> None:
    with pytest.raises(CommandError, match="give custobar instead of a callback URL"):
        sandbox_command("http://127.0.0.1:8000/connections/custobar/callback/")


@pytest.mark.parametrize("addrport", ["8001\n", "host name:8001", "'x':1", "http://a:1"])
def test_an_address_runserver_would_not_take_is_refused_first(addrport: str) -> None:
    with pytest.raises(CommandError, match="is not a port or an address and a port"):
        sandbox_command(CALLBACK, "--addrport", addrport)
    assert not Application.objects.exists()


def test_several_callbacks_get_a_client_and_a_block_each() -> None:
    acme = "http://127.0.0.1:8000/integrations/acme/callback/"
    providers = printed_settings(sandbox_command(CALLBACK, acme))
    assert sorted(providers) == ["acme", "apicbase"]
    assert providers["acme"]["CLIENT_ID"] != providers["apicbase"]["CLIENT_ID"]
    assert Application.objects.get(client_id=providers["acme"]["CLIENT_ID"]).redirect_uris == acme


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "127.0.0.1:8000/connections/apicbase/callback/",  # no scheme
        "ftp://127.0.0.1/connections/apicbase/callback/",
        "http://127.0.0.1:8000/connections/apicbase/",  # not the callback
        "http://127.0.0.1:8000/connections/apicbase/callback/?x=1",
        'http://127.0.0.1:8000/connections/apicbase/callback/"+__import__("os")+"/',
        'http://127.0.0.1:8000/connections/ap"icbase/callback/',
        "http://user:pw@evil.example/connections/apicbase/callback/",  # user info
        "http://127.0.0.1:8000/connections/\u00dfpicbase/callback/",  # not a provider id
        "http://127.0.0.1:8000/connections/apicbase/callback/#x",
        "http://127.0.0.1:8000/" + "x/" * 100 + "apicbase/callback/",  # too long to name
    ],
)
def test_anything_but_a_callback_url_is_refused_and_registers_nothing(redirect_uri: str) -> None:
    before = Application.objects.count()
    with pytest.raises(CommandError, match="is not an oauth_connect callback URL"):
        sandbox_command(redirect_uri)
    assert Application.objects.count() == before
