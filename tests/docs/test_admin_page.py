"""docs/admin.md: the page's samples run (the permission groups, then a ModelAdmin subclass), and
the admin behaves as the page says for the users they made. The page's tables (columns,
filters, buttons, actions and their messages) are checked against the admin itself."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import responses
from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import result_headers
from django.contrib.auth import get_user_model
from django.contrib.messages import ERROR, SUCCESS
from django.test import Client
from django.urls import path, reverse

from oauth_connect.models import Connection
from tests.conftest import API_URL, REVOKE_URL, TOKEN_URL, token_body
from tests.docs.harness import DOCS, PageRun

PAGE = "admin.md"
CHANGELIST = "admin:oauth_connect_connection_changelist"
CUSTOBAR_BASE = "https://acme.custobar.test/"


def url(name: str, connection: Connection) -> str:
    return reverse(f"admin:oauth_connect_connection_{name}", args=[connection.pk])


def section(heading: str) -> str:
    text = (DOCS / PAGE).read_text()
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(heading: str) -> list[list[str]]:
    """The body rows of the tables in the page's section ``heading``, as cells."""
    rows = []
    for line in section(heading).splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[1:] if rows else rows


def documented_names(heading: str) -> list[str]:
    """The first cell of each row (a header row excepted), without its ** or backticks."""
    rows = [row for row in table_rows(heading) if row[0] not in ("column", "button", "action")]
    return [row[0].strip("*`") for row in rows]


def documented_message(heading: str, name: str) -> str:
    [row] = [row for row in table_rows(heading) if row[0].strip("*") == name]
    return row[-1].strip('"')


def messages_of(response: Any) -> list[tuple[int, str]]:
    return [(m.level, str(m).replace("\xa0", " ")) for m in response.context["messages"]]


def action_names(response: Any) -> list[str]:
    form = response.context.get("action_form")
    if form is None:
        return []
    return [str(label) for value, label in form.fields["action"].choices if value]


def has_buttons(html: str) -> bool:
    return ">Refresh now</button>" in html


def custobar(make_connection: Callable[..., Connection], **fields: Any) -> Connection:
    values = {
        "provider": "custobar",
        "expires_at": None,
        "refresh_token": "",
        "account": {"company": "acme", "base_url": CUSTOBAR_BASE, "username": "alice"},
        "credentials": json.dumps({"password": "custobar-password"}),
        **fields,
    }
    return make_connection(**values)


@pytest.fixture
def staff() -> Callable[[str], Any]:
    def make(username: str) -> Any:
        return get_user_model().objects.create_user(username, password="pw", is_staff=True)

    return make


@pytest.fixture
def admin_registry_restored() -> Iterator[None]:
    """The page registers its own ConnectionAdmin subclass; put the original back after."""
    # Load the project's URLconf first, as a project does before any request: the admin's URLs
    # are built from the ModelAdmins registered at that moment, and must stay the original's.
    reverse(CHANGELIST)
    original = admin.site._registry[Connection]
    yield
    admin.site._registry[Connection] = original


def serve_admin_site(settings: Any) -> None:
    """A URLconf built from the admin site as it is now, as a project's urls.py is at start-up
    (after every admin.py has run)."""
    module = types.ModuleType("docs_admin_urls")
    module.urlpatterns = [path("admin/", admin.site.urls)]  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    settings.ROOT_URLCONF = module.__name__


# The page, run -----------------------------------------------------------------------------------


def test_the_groups_and_the_subclass_do_what_the_page_says(
    run_docs_page: Callable[..., PageRun],
    settings: Any,
    staff: Callable[[str], Any],
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
    admin_registry_restored: None,
) -> None:
    olivia, sam = staff("olivia"), staff("sam")
    connection = make_connection(label="production")
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    documented_actions = documented_names("## Actions on several connections")

    run_docs_page("admin.md", namespace={"olivia": olivia, "sam": sam})

    # olivia (view and change) sees the list with its actions, and presses a button.
    client = Client()
    client.force_login(olivia)
    changelist = client.get(reverse(CHANGELIST))
    assert changelist.status_code == 200
    assert action_names(changelist) == documented_actions
    assert has_buttons(client.get(url("change", connection)).content.decode())
    pressed = client.post(url("refresh", connection), follow=True)
    assert [level for level, _ in messages_of(pressed)] == [SUCCESS]
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-2"

    # sam (view only) sees the same list and page, without actions or buttons, and can't act.
    client.force_login(sam)
    changelist = client.get(reverse(CHANGELIST))
    assert changelist.status_code == 200
    assert action_names(changelist) == []
    assert not has_buttons(client.get(url("change", connection)).content.decode())
    for button in ("refresh", "test", "rotate", "disconnect"):
        assert client.post(url(button, connection)).status_code == 403
    assert client.get(url("disconnect", connection)).status_code == 403
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.ACTIVE
    assert len(http_mock.calls) == 1

    # The subclass serves the list once the URLconf is built, with its column and the buttons.
    subclass = admin.site._registry[Connection]
    assert type(subclass).__name__ == "OperatorsConnectionAdmin"
    serve_admin_site(settings)
    client.force_login(olivia)
    changelist = client.get(reverse(CHANGELIST))
    headers = [header["text"] for header in result_headers(changelist.context["cl"])]
    assert headers[-1].capitalize() == "Consecutive failures"
    assert [str(count["label"]) for count in changelist.context["status_counts"]]
    assert has_buttons(client.get(url("change", connection)).content.decode())


# The page's tables, against the admin ------------------------------------------------------------


@pytest.fixture
def both_providers(credential_providers: None) -> None:
    """Apicbase (the test one, with a revocation endpoint) and Custobar."""


def test_the_list_has_the_documented_columns_filters_and_actions(
    admin_client: Client, make_connection: Callable[..., Connection], both_providers: None
) -> None:
    make_connection()

    response = admin_client.get(reverse(CHANGELIST))

    cl = response.context["cl"]
    # After the checkbox; the admin's CSS capitalises them.
    headers = [str(header["text"]).capitalize() for header in result_headers(cl)][1:]
    assert headers == documented_names("## The connection list")
    filters = re.findall(r"^- \*\*(By [^*]+)\*\*", section("## The connection list"), re.M)
    assert filters == [f"By {spec.title}" for spec in cl.filter_specs]
    assert action_names(response) == documented_names("## Actions on several connections")
    counts = [str(count["label"]) for count in response.context["status_counts"]]
    assert counts == ["Active", "Error", "Reauthorization required", "Disconnected"] + [
        "Expiring within a day"
    ]


def test_nobody_adds_or_deletes_connections(
    admin_client: Client, make_connection: Callable[..., Connection]
) -> None:
    connection = make_connection()
    assert admin_client.get(reverse("admin:oauth_connect_connection_add")).status_code == 403
    assert admin_client.get(url("delete", connection)).status_code == 403
    assert Connection.objects.filter(pk=connection.pk).exists()


def test_the_buttons_and_their_messages_are_the_documented_ones(
    admin_client: Client,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
    frozen_now: datetime,
    both_providers: None,
) -> None:
    heading = "## A connection's page"
    apicbase = make_connection(label="production")
    rotatable = custobar(make_connection)
    html = admin_client.get(url("change", rotatable)).content.decode()
    for button in documented_names(heading):
        assert f">{button}</button>" in html or f">{button}</a>" in html, button

    def press(button: str, connection: Connection) -> str:
        response = admin_client.post(url(button, connection), follow=True)
        [(level, text)] = messages_of(response)
        assert level == SUCCESS, text
        return text

    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2, expires_in=7 * 24 * 3600))
    assert press("refresh", apicbase) == documented_message(heading, "Refresh now")

    http_mock.add(responses.GET, API_URL + "accounts/me/", json={"id": 7})
    tested = re.sub(r"\(\d+ ms\)", "(84 ms)", press("test", apicbase))
    assert tested == documented_message(heading, "Test connection")

    http_mock.add(
        responses.POST, CUSTOBAR_BASE + "api/auth/new-access-token/", json={"token": "t2"}
    )
    assert press("rotate", rotatable) == documented_message(heading, "Rotate token")

    confirmation = admin_client.get(url("disconnect", apicbase)).content.decode()
    assert "Yes, disconnect" in confirmation
    http_mock.add(responses.POST, REVOKE_URL, body="")
    assert press("disconnect", apicbase) == documented_message(heading, "Disconnect")
    event = Connection.objects.get(pk=apicbase.pk).events.latest("pk")
    assert event.message.startswith("Tokens revoked at Apicbase.")

    # Disconnected: no buttons any more.
    assert not has_buttons(admin_client.get(url("change", apicbase)).content.decode())


def test_a_failing_button_says_why_and_names_the_connection(
    admin_client: Client, make_connection: Callable[..., Connection], both_providers: None
) -> None:
    # Rotating without the kept password: the page says the button needs it.
    connection = custobar(make_connection, credentials="")

    response = admin_client.post(url("rotate", connection), follow=True)

    [(level, text)] = messages_of(response)
    assert level == ERROR
    assert f"#{connection.pk}" in text and "needs the password" in text


def test_the_actions_and_their_messages_are_the_documented_ones(
    admin_client: Client,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
    both_providers: None,
) -> None:
    heading = "## Actions on several connections"
    apicbase = [make_connection(label=f"set-{n}", refresh_token=f"r-{n}") for n in range(2)]
    credential = [custobar(make_connection, label=f"set-{n}") for n in range(2)]
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(
        responses.POST, CUSTOBAR_BASE + "api/auth/new-access-token/", json={"token": "t2"}
    )
    http_mock.add(responses.POST, REVOKE_URL, body="")

    def run(action: str, connections: list[Connection]) -> str:
        response = admin_client.post(
            reverse(CHANGELIST),
            {"action": action, "_selected_action": [c.pk for c in connections]},
            follow=True,
        )
        [(level, text)] = messages_of(response)
        assert level == SUCCESS, text
        return text

    choices = dict(
        (str(label), value)
        for value, label in admin_client.get(reverse(CHANGELIST))
        .context["action_form"]
        .fields["action"]
        .choices
    )
    for name, connections in [
        ("Refresh now", apicbase),
        ("Rotate token", credential),
        ("Forget kept password (keep only the token)", credential),
        ("Disconnect", apicbase),  # at once: no confirmation page
    ]:
        assert run(choices[name], connections) == documented_message(heading, name)

    assert all(not c.has_stored_credentials for c in Connection.objects.filter(provider="custobar"))
    assert set(Connection.objects.filter(provider="apicbase").values_list("status", flat=True)) == {
        "disconnected"
    }


def test_the_expiring_count_leaves_out_what_already_expired(
    admin_client: Client, make_connection: Callable[..., Connection], frozen_now: datetime
) -> None:
    make_connection(label="soon", expires_at=frozen_now + timedelta(hours=3))
    make_connection(label="gone", expires_at=frozen_now - timedelta(minutes=1))
    make_connection(label="error", status="error", expires_at=frozen_now + timedelta(hours=3))

    counts = admin_client.get(reverse(CHANGELIST)).context["status_counts"]

    assert {str(c["label"]): c["count"] for c in counts}["Expiring within a day"] == 2
