"""The admin: what operators see (never a token), the filters, and the actions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import responses
from django.contrib.messages import ERROR, SUCCESS
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from example_project.tenants.models import Organisation
from oauth_connect.models import ClientCredentials, Connection, ConnectionEvent
from tests.conftest import REVOKE_URL, TOKEN_URL, token_body

Status = Connection.Status
ACCESS = "access-secret-in-admin-5e1f"
REFRESH = "refresh-secret-in-admin-8a0c"
CHANGELIST = "admin:oauth_connect_connection_changelist"


def changelist_url(query: str = "") -> str:
    return reverse(CHANGELIST) + (f"?{query}" if query else "")


def change_url(connection: Connection) -> str:
    return reverse("admin:oauth_connect_connection_change", args=[connection.pk])


def listed(response: Any) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


def messages_of(response: Any) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


def stored_secret(pk: int) -> str:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT client_secret FROM oauth_connect_clientcredentials WHERE id = %s", [pk]
        )
        return cursor.fetchone()[0]


def reload(connection: Connection) -> Connection:
    return Connection.objects.get(pk=connection.pk)


@pytest.fixture
def secret_connection(make_connection: Callable[..., Connection]) -> Connection:
    return make_connection(label="prod", access_token=ACCESS, refresh_token=REFRESH)


# The changelist --------------------------------------------------------------------------------


def test_changelist_shows_status_badges(
    admin_client: Any, make_connection: Callable[..., Connection]
) -> None:
    make_connection(label="ok")
    make_connection(label="dead", status=Status.REAUTH_REQUIRED, last_error="invalid_grant")
    make_connection(label="flaky", status=Status.ERROR, last_error="HTTP 503")

    response = admin_client.get(changelist_url())

    assert response.status_code == 200
    html = response.content.decode()
    for text in ["Active", "Reauthorization required", "Error", "invalid_grant", "HTTP 503"]:
        assert text in html
    assert "border-radius:8px" in html  # rendered as a badge, not escaped text
    assert "&lt;span" not in html


def test_changelist_filters_by_status(
    admin_client: Any, make_connection: Callable[..., Connection]
) -> None:
    make_connection(label="ok")
    dead = make_connection(label="dead", status=Status.REAUTH_REQUIRED)

    response = admin_client.get(changelist_url("status=reauth_required"))

    assert response.status_code == 200
    assert listed(response) == {dead.pk}


def test_changelist_filters_by_provider(
    admin_client: Any, make_connection: Callable[..., Connection]
) -> None:
    make_connection()
    acme = make_connection(provider="acme")

    response = admin_client.get(changelist_url("provider=acme"))

    assert listed(response) == {acme.pk}


def test_changelist_filters_connections_expiring_within_a_day(
    admin_client: Any, make_connection: Callable[..., Connection], frozen_now: datetime
) -> None:
    soon = make_connection(label="soon", expires_at=frozen_now + timedelta(hours=3))
    make_connection(label="later", expires_at=frozen_now + timedelta(days=2))
    expired = make_connection(label="expired", expires_at=frozen_now - timedelta(minutes=1))
    make_connection(label="unknown", expires_at=None)

    within_a_day = admin_client.get(changelist_url("expiring=day"))
    already_expired = admin_client.get(changelist_url("expiring=expired"))

    assert listed(within_a_day) == {soon.pk}
    assert listed(already_expired) == {expired.pk}
    assert "Expiring within a day" in within_a_day.content.decode()


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("Mallory", {"theirs", "theirs-custobar"}),
        ("mallory diner", {"theirs", "theirs-custobar"}),  # every word, in any case
        ('"Mallory\'s Diner"', {"theirs", "theirs-custobar"}),  # a quoted phrase
        ("Mallory custobar", {"theirs-custobar"}),  # the tenant and the provider
        ("staging", {"ours-staging"}),  # the label
        ("Mallory staging", set()),
        ("nobody", set()),
        ('"Mallory', set()),  # an unbalanced quote is searched as typed, not a server error
    ],
)
def test_changelist_searches_tenant_label_and_provider(
    admin_client: Any,
    make_connection: Callable[..., Connection],
    other_organisation: Organisation,
    search: str,
    expected: set[str],
) -> None:
    connections = {
        "ours": make_connection(),
        "ours-staging": make_connection(label="staging"),
        "theirs": make_connection(tenant=other_organisation),
        "theirs-custobar": make_connection(tenant=other_organisation, provider="custobar"),
    }
    from urllib.parse import urlencode

    response = admin_client.get(changelist_url(urlencode({"q": search})))

    assert response.status_code == 200
    assert listed(response) == {connections[name].pk for name in expected}


def test_search_without_tenant_name_fields_searches_labels_only(
    admin_client: Any, make_connection: Callable[..., Connection], monkeypatch: Any
) -> None:
    from oauth_connect.admin import connections

    monkeypatch.setattr(connections, "tenant_search_fields", lambda: [])
    make_connection(label="staging")
    assert listed(admin_client.get(changelist_url("q=Mallory"))) == set()
    assert len(listed(admin_client.get(changelist_url("q=staging")))) == 1


def test_connections_of_a_provider_removed_from_settings_can_be_found(
    admin_client: Any, make_connection: Callable[..., Connection]
) -> None:
    make_connection()
    leftover = make_connection(provider="retired")
    response = admin_client.get(changelist_url("provider=-"))
    assert listed(response) == {leftover.pk}
    assert "Not configured any more" in response.content.decode()


def test_changelist_and_change_page_never_show_tokens(
    admin_client: Any, secret_connection: Connection
) -> None:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, refresh_token FROM oauth_connect_connection WHERE id = %s",
            [secret_connection.pk],
        )
        ciphertexts = cursor.fetchone()

    pages = [admin_client.get(changelist_url()), admin_client.get(change_url(secret_connection))]

    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        for secret in [ACCESS, REFRESH, *ciphertexts]:
            assert secret not in html


def test_change_page_shows_event_log_and_last_error(
    admin_client: Any, make_connection: Callable[..., Connection]
) -> None:
    connection = make_connection(
        status=Status.ERROR, last_error="The token endpoint answered HTTP 503."
    )
    ConnectionEvent.objects.create(
        connection=connection,
        kind=ConnectionEvent.Kind.REFRESH_FAILED,
        message="The token endpoint answered HTTP 503.",
    )
    ConnectionEvent.objects.create(
        connection=connection, kind=ConnectionEvent.Kind.CONNECTED, message="Connected by alice"
    )

    response = admin_client.get(change_url(connection))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Connected by alice" in html
    assert "Refresh failed" in html
    assert html.count("The token endpoint answered HTTP 503.") >= 2  # last_error and the event


def test_connections_cannot_be_added_in_the_admin(
    admin_client: Any, make_connection: Callable[..., Connection]
) -> None:
    make_connection()
    add_url = reverse("admin:oauth_connect_connection_add")

    changelist = admin_client.get(changelist_url())

    assert changelist.status_code == 200
    assert changelist.context["has_add_permission"] is False
    assert add_url not in changelist.content.decode()
    assert admin_client.get(add_url).status_code == 403


@pytest.mark.parametrize(
    "query",
    [
        "",
        "status__exact=error",
        "status__exact=reauth_required",
        "provider=custobar",
        "expiring=day",
        "expiring=expired&provider=apicbase",
        "q=Mallory",
        "o=7.-1",  # sorted by expiry, then by the row's own string
        "p=2",
    ],
)
def test_changelist_queries_do_not_grow_with_connections(
    admin_client: Any, organisation: Organisation, other_organisation: Organisation, query: str
) -> None:
    # Every filter, with a full page of 100 (and more behind it) against a handful: the same
    # number of queries, so 100,000 connections cost what 10 do (benchmarks/bench_admin.py).
    from oauth_connect import crypto
    from oauth_connect.fields import Ciphertext

    statuses = [Status.ACTIVE, Status.ERROR, Status.REAUTH_REQUIRED, Status.DISCONNECTED]
    providers = ["apicbase", "custobar", "teletracker"]
    token = Ciphertext(crypto.encrypt("a-token"))  # encrypted once: stored as it is

    def add_connections(start: int, stop: int) -> None:
        Connection.objects.bulk_create(
            Connection(
                tenant=organisation if n % 2 else other_organisation,
                provider=providers[n % 3],
                label=f"set-{n}",
                status=statuses[n % 4],
                account={"company": f"c{n}", "username": f"u{n}"} if n % 3 == 1 else {},
                last_error="Refused." if n % 4 else "",
                access_token=token,
                refresh_token=token,
                expires_at=timezone.now() + timedelta(hours=n % 48 - 12),
            )
            for n in range(start, stop)
        )

    def count_queries() -> int:
        with CaptureQueriesContext(db) as queries:
            response = admin_client.get(changelist_url(query))
        assert response.status_code == 200
        sql = [query["sql"] for query in queries.captured_queries]
        # Nothing that reads every row on each view: no DISTINCT scan for the provider filter,
        # no second unfiltered COUNT for "N total".
        assert not any("DISTINCT" in statement for statement in sql), sql
        return len(queries)

    add_connections(0, 12)
    few = count_queries()
    add_connections(12, 1300)
    many = count_queries()

    # The session, the user, the counts per status, the filtered count, the page.
    assert many == few == 5
    if query in ("", "p=2"):
        assert len(admin_client.get(changelist_url(query)).context["cl"].result_list) == 100


# Actions -------------------------------------------------------------------------------------


def run_action(admin_client: Any, action: str, *connections: Connection) -> Any:
    return admin_client.post(
        changelist_url(),
        {"action": action, "_selected_action": [c.pk for c in connections]},
        follow=True,
    )


def test_refresh_now_refreshes_and_stores_new_tokens(
    admin_client: Any,
    secret_connection: Connection,
    http_mock: responses.RequestsMock,
    frozen_now: datetime,
) -> None:
    # Not due for days: "Refresh now" refreshes anyway.
    Connection.objects.filter(pk=secret_connection.pk).update(
        expires_at=frozen_now + timedelta(days=5)
    )
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))

    response = run_action(admin_client, "refresh_now", secret_connection)

    assert response.status_code == 200
    assert len(http_mock.calls) == 1
    assert f"refresh_token={REFRESH}" in http_mock.calls[0].request.body
    connection = reload(secret_connection)
    assert connection.access_token == "access-token-2"
    assert connection.refresh_token == "refresh-token-2"
    assert connection.last_refreshed_at == frozen_now
    assert messages_of(response) == [(SUCCESS, "Refreshed 1 connection.")]
    assert "access-token-2" not in response.content.decode()


def test_refresh_now_failure_shows_error_and_requires_reauth(
    admin_client: Any, secret_connection: Connection, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        status=400,
        json={"error": "invalid_grant", "error_description": f"{REFRESH} is revoked"},
    )

    response = run_action(admin_client, "refresh_now", secret_connection)

    assert response.status_code == 200
    (level, text), *others = messages_of(response)
    assert others == []
    assert level == ERROR
    assert f"#{secret_connection.pk}" in text
    assert "invalid_grant" in text
    assert REFRESH not in response.content.decode()
    connection = reload(secret_connection)
    assert connection.status == Status.REAUTH_REQUIRED
    assert connection.refresh_token == REFRESH


def test_disconnect_revokes_and_wipes_tokens(
    admin_client: Any, secret_connection: Connection, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(responses.POST, REVOKE_URL, body="")

    response = run_action(admin_client, "disconnect", secret_connection)

    assert response.status_code == 200
    assert len(http_mock.calls) == 1
    assert f"token={REFRESH}" in http_mock.calls[0].request.body
    connection = reload(secret_connection)
    assert connection.status == Status.DISCONNECTED
    assert connection.access_token == ""
    assert connection.refresh_token == ""
    assert connection.expires_at is None
    assert messages_of(response) == [(SUCCESS, "Disconnected 1 connection.")]
    assert connection.events.filter(kind=ConnectionEvent.Kind.DISCONNECTED).exists()


# Client credentials ----------------------------------------------------------------------------


def test_add_client_credentials_stores_the_secret_encrypted(
    admin_client: Any, organisation: Organisation
) -> None:
    response = admin_client.post(
        reverse("admin:oauth_connect_clientcredentials_add"),
        {
            "tenant": organisation.pk,
            "provider": "apicbase",
            "client_id": "tenant-client",
            "client_secret": "tenant-secret-3f9d",
        },
    )

    assert response.status_code == 302
    credentials = ClientCredentials.objects.get()
    assert credentials.client_id == "tenant-client"
    assert credentials.client_secret == "tenant-secret-3f9d"
    assert "tenant-secret-3f9d" not in stored_secret(credentials.pk)


def test_add_client_credentials_requires_a_secret(
    admin_client: Any, organisation: Organisation
) -> None:
    response = admin_client.post(
        reverse("admin:oauth_connect_clientcredentials_add"),
        {"tenant": organisation.pk, "provider": "apicbase", "client_id": "c", "client_secret": ""},
    )

    assert response.status_code == 200
    assert "client_secret" in response.context["adminform"].form.errors
    assert not ClientCredentials.objects.exists()


def test_client_credentials_cannot_reuse_the_settings_client_id(
    admin_client: Any, organisation: Organisation
) -> None:
    # The same client id with another secret would connect with one secret and refresh with
    # the other.
    from tests.conftest import CLIENT_ID

    response = admin_client.post(
        reverse("admin:oauth_connect_clientcredentials_add"),
        {
            "tenant": organisation.pk,
            "provider": "apicbase",
            "client_id": CLIENT_ID,
            "client_secret": "another-secret",
        },
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["client_id"]
    assert "This is the client id in the settings" in errors[0]
    assert not ClientCredentials.objects.exists()


@pytest.fixture
def credentials(organisation: Organisation) -> ClientCredentials:
    return ClientCredentials.objects.create(
        tenant=organisation,
        provider="apicbase",
        client_id="tenant-client",
        client_secret="stored-secret-c0ffee",
    )


def change_credentials_url(credentials: ClientCredentials) -> str:
    return reverse("admin:oauth_connect_clientcredentials_change", args=[credentials.pk])


def test_client_credentials_change_page_never_shows_the_secret(
    admin_client: Any, credentials: ClientCredentials
) -> None:
    response = admin_client.get(change_credentials_url(credentials))

    assert response.status_code == 200
    html = response.content.decode()
    assert "tenant-client" in html
    assert "stored-secret-c0ffee" not in html
    assert stored_secret(credentials.pk) not in html


def test_client_credentials_empty_secret_keeps_the_stored_one(
    admin_client: Any, credentials: ClientCredentials, organisation: Organisation
) -> None:
    response = admin_client.post(
        change_credentials_url(credentials),
        {
            "tenant": organisation.pk,
            "provider": "apicbase",
            "client_id": "renamed-client",
            "client_secret": "",
        },
    )

    assert response.status_code == 302
    credentials = ClientCredentials.objects.get(pk=credentials.pk)
    assert credentials.client_id == "renamed-client"
    assert credentials.client_secret == "stored-secret-c0ffee"


def test_client_credentials_new_secret_replaces_the_stored_one(
    admin_client: Any, credentials: ClientCredentials, organisation: Organisation
) -> None:
    response = admin_client.post(
        change_credentials_url(credentials),
        {
            "tenant": organisation.pk,
            "provider": "apicbase",
            "client_id": "tenant-client",
            "client_secret": "rotated-secret-beef",
        },
    )

    assert response.status_code == 302
    credentials = ClientCredentials.objects.get(pk=credentials.pk)
    assert credentials.client_secret == "rotated-secret-beef"
    assert "rotated-secret-beef" not in stored_secret(credentials.pk)


def test_view_only_staff_cannot_run_actions_or_delete(
    client: Any, secret_connection: Connection
) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client.force_login(viewer)

    assert client.get(changelist_url()).status_code == 200
    response = run_action(client, "disconnect", secret_connection)

    # The action isn't offered to this user, so nothing happens to the connection.
    assert reload(secret_connection).status == Connection.Status.ACTIVE
    assert response.status_code in (200, 302)
    delete_url = reverse("admin:oauth_connect_connection_delete", args=[secret_connection.pk])
    assert client.get(delete_url).status_code == 403


@pytest.mark.parametrize("action", ["disconnect", "forget_password", "refresh_now"])
def test_a_busy_connection_is_a_message_in_every_bulk_action(
    admin_client: Any,
    secret_connection: Connection,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    action: str,
) -> None:
    # Another thread of this process holds the connection (its per-process lock, taken first
    # on every database): the action waits its bounded time, then says so, changing nothing.
    from django.db import router

    from oauth_connect import conf
    from oauth_connect.services.locking import _process_lock

    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "HTTP_DEADLINE": 0.05}
    monkeypatch.setattr(conf, "LOCK_WAIT_MARGIN", 0.0)
    holder = _process_lock((router.db_for_write(Connection), secret_connection.pk))
    with holder.lock:
        response = run_action(admin_client, action, secret_connection)

    assert response.status_code == 200
    [(level, text)] = [m for m in messages_of(response) if m[0] == ERROR]
    assert "is being changed by another worker" in text
    assert reload(secret_connection).access_token == ACCESS
