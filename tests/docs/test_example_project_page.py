"""docs/example-project.md: setup_demo does what the page says, and says what the page shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from oauth2_provider.models import Application

from example_project import settings as example_settings
from example_project.tenants.models import Organisation
from tests.e2e.asgi import uvicorn_serving


def serves_under_uvicorn(arguments: list[str]) -> None:
    """The page's uvicorn command serves the project (on a free port, not 8000): the login page,
    and the async view, which sends a stranger to log in."""
    assert arguments[-2:] == ["--port", "8000"]
    with uvicorn_serving(arguments[:-2]) as site:
        (answer,) = site.get_all(requests.Session(), ["/recipes/async/"])
    assert answer[0] == 302
    assert answer[1]["Location"] == "/accounts/login/?next=/recipes/async/"


@pytest.mark.django_db
def test_setup_demo_prepares_the_demo_login_and_the_sandbox_clients(
    run_docs_page: Callable[..., Any], settings: Any
) -> None:
    settings.SITE_URL = "http://127.0.0.1:8000"
    settings.OAUTH_CONNECT = example_settings.OAUTH_CONNECT  # the sandbox-backed providers
    run = run_docs_page("example-project.md", commands={"uvicorn": serves_under_uvicorn})

    [printed] = run.output_of("setup_demo")
    assert printed.strip() == run.output_of("Ready.").strip()
    demo = authenticate(username="demo", password="demo")
    assert demo is not None and demo.is_superuser
    assert Organisation.objects.get(members=demo).name == "Demo Kitchen"
    own = Application.objects.exclude(name__startswith="Sandbox client for")
    registered = own.values_list("client_id", "redirect_uris")
    assert set(registered) == {
        ("sandbox-apicbase-client", "http://127.0.0.1:8000/connections/apicbase/callback/"),
        ("sandbox-acme-client", "http://127.0.0.1:8000/connections/acme/callback/"),
    }

    # The sandbox for another project: registered, printed, and not served (--no-serve).
    [printed] = run.output_of("manage.py sandbox")
    assert printed.startswith("Paste this at the end of your project's settings.py:")
    assert '"API_URL": "http://127.0.0.1:8001/sandbox/api/v1/",' in printed
    assert '"BASE_URL": "http://127.0.0.1:8001/sandbox/custobar/{company}/",' in printed
    other = Application.objects.filter(name__startswith="Sandbox client for")
    assert list(other.values_list("redirect_uris", flat=True)) == [
        "http://127.0.0.1:8000/connections/apicbase/callback/"
    ]
    # A URL that isn't a callback: the error the page shows, and nothing registered.
    with pytest.raises(CommandError) as refused:
        call_command("sandbox", "http://127.0.0.1:8000/connections/", "--no-serve")
    assert f"CommandError: {refused.value}" == run.output_of("CommandError:").strip()
    assert Application.objects.count() == 3
