"""The example project on any host and port, and ``manage.py sandbox`` for a project of one's
own: the sandbox's side of the quickstart (whose literal run is tests/docs/test_quickstart.py)."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import check_password
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
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    # setup_demo ran for runserver's default port; the project now runs on the live server's.
    register_sandbox_clients("http://127.0.0.1:8000")
    application = Application.objects.get(client_id=CLIENTS["apicbase"][0])
    assert sandbox.absolute("/") not in application.redirect_uris

    page = sandbox.connect(browser, "apicbase")

    assert "Apicbase is connected." in page.text
    assert Connection.objects.get(tenant=organisation).status == Connection.Status.ACTIVE
    application.refresh_from_db()
    assert application.redirect_uris.split() == [
        "http://127.0.0.1:8000/connections/apicbase/callback/",
        sandbox.absolute("/connections/apicbase/callback/"),
    ]


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://elsewhere.example/connections/apicbase/callback/",  # another site
        "{site}/connections/apicbase/callback/?next=/admin/",  # a query of its own
        "{site}/connections/apicbase/elsewhere/",  # not a callback
        "{site}/connections/acme/callback/",  # another provider's client
    ],
)
def test_only_the_serving_sites_own_callback_for_that_client_is_accepted(
    sandbox: Sandbox, browser: requests.Session, redirect_uri: str
) -> None:
    register_sandbox_clients("http://127.0.0.1:8000")
    before = Application.objects.get(client_id=CLIENTS["apicbase"][0]).redirect_uris
    query = {
        "client_id": CLIENTS["apicbase"][0],
        "redirect_uri": redirect_uri.format(site=sandbox.url),
        "response_type": "code",
        "scope": "accounts",
        "code_challenge": "x" * 43,
        "code_challenge_method": "S256",
        "state": "s",
    }
    page = browser.get(sandbox.absolute("/sandbox/o/authorize/?" + urlencode(query)))
    assert 'name="allow"' not in page.text  # no consent: django-oauth-toolkit refuses
    assert Application.objects.get(client_id=CLIENTS["apicbase"][0]).redirect_uris == before


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
    # The secret printed is the one the sandbox checks (it keeps a hash of it).
    assert check_password(apicbase["CLIENT_SECRET"], application.client_secret)
    # The login the reader authorizes with exists.
    assert authenticate(username="demo", password="demo") is not None


def test_asking_again_keeps_the_client_and_gives_it_a_new_secret() -> None:
    first = printed_settings(sandbox_command(CALLBACK))["apicbase"]
    second = printed_settings(sandbox_command(CALLBACK))["apicbase"]
    assert second["CLIENT_ID"] == first["CLIENT_ID"]
    assert second["CLIENT_SECRET"] != first["CLIENT_SECRET"]
    assert Application.objects.filter(client_id=first["CLIENT_ID"]).count() == 1


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
    ],
)
def test_anything_but_a_callback_url_is_refused_and_registers_nothing(redirect_uri: str) -> None:
    before = Application.objects.count()
    with pytest.raises(CommandError, match="is not an oauth_connect callback URL"):
        sandbox_command(redirect_uri)
    assert Application.objects.count() == before
