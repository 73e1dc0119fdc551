"""A refresh whose new tokens the database refuses to store: never a silent loss."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.db import connection as db
from django.utils import timezone

from oauth_connect.exceptions import TokensNotStored
from oauth_connect.models import Connection
from oauth_connect.services import refresh_connection
from tests.conftest import TOKEN_URL, token_body

pytestmark = pytest.mark.django_db

TRIGGERS = {
    # Refuse any UPDATE that writes the access token, as a full disk or a broken replica would.
    "sqlite": [
        """CREATE TRIGGER refuse_tokens BEFORE UPDATE OF access_token
           ON oauth_connect_connection BEGIN SELECT RAISE(ABORT, 'disk is full'); END""",
    ],
    "postgresql": [
        """CREATE FUNCTION refuse_tokens() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'disk is full'; END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER refuse_tokens BEFORE UPDATE OF access_token
           ON oauth_connect_connection FOR EACH ROW EXECUTE FUNCTION refuse_tokens()""",
    ],
}


@pytest.fixture
def refusing_database() -> Iterator[None]:
    """The real database refuses to store tokens (the test's transaction drops the trigger)."""
    statements = TRIGGERS.get(db.vendor)
    if statements is None:
        pytest.skip(f"no trigger written for {db.vendor}")
    with db.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    yield


def test_tokens_the_database_refuses_are_reported_not_dropped(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    refusing_database: None,
    caplog: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Two attempts: the write is retried once before giving up.
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))

    with pytest.raises(TokensNotStored, match="storing them failed") as info:
        refresh_connection(connection)

    assert f"#{connection.pk}" in str(info.value)
    # An operator sees it: status, last error and an event.
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ERROR
    assert "storing them failed" in stored.last_error
    assert stored.events.get().kind == "refresh_failed"
    assert stored.access_token == "access-token-1"  # the database kept what it had
    # Logged at error level, without any token.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "storing them failed" in errors[0].getMessage()
    for secret in ("access-token-1", "refresh-token-1", "access-token-2", "refresh-token-2"):
        assert secret not in caplog.text
    # This process still holds the new tokens, so its session can go on working.
    assert connection.access_token == "access-token-2"


def test_the_write_is_tried_twice_and_the_failure_count_kept(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    refusing_database: None,
    monkeypatch: Any,
) -> None:
    from oauth_connect.services import store as store_module

    attempts = []
    write = store_module._write_tokens

    def counting(*args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        write(*args, **kwargs)

    monkeypatch.setattr(store_module, "_write_tokens", counting)
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection(
        expires_at=timezone.now() - timedelta(minutes=1),
        status=Connection.Status.ERROR,
        consecutive_failures=4,
    )
    with pytest.raises(TokensNotStored):
        refresh_connection(connection)
    assert len(attempts) == 2
    assert Connection.objects.get(pk=connection.pk).consecutive_failures == 5


def test_a_session_goes_on_with_tokens_that_could_not_be_stored(
    http_mock: responses.RequestsMock, make_connection: Any, refusing_database: None
) -> None:
    from tests.conftest import API_URL

    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, API_URL + "accounts/me/", json={})
    connection = make_connection(expires_at=timezone.now() + timedelta(minutes=1))

    response = connection.session().get("accounts/me/")

    # The old access token was rotated away: only the unstored new one can make the request.
    assert response.status_code == 200
    assert http_mock.calls[1].request.headers["Authorization"] == "Bearer access-token-2"
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.ERROR


def test_a_rotation_the_database_refuses_is_marked_too(
    http_mock: responses.RequestsMock, make_connection: Any, refusing_database: None, settings: Any
) -> None:
    import json

    from oauth_connect.services import rotate_token

    settings.OAUTH_CONNECT["PROVIDERS"]["custobar"] = {"BASE_URL": "https://{company}.cb.test/"}
    http_mock.add(
        responses.POST, "https://acme.cb.test/api/auth/new-access-token/", json={"token": "t2"}
    )
    connection = make_connection(
        provider="custobar",
        expires_at=None,
        refresh_token="",
        account={"company": "acme", "base_url": "https://acme.cb.test/", "username": "alice"},
        credentials=json.dumps({"password": "pw-1234"}),
    )
    with pytest.raises(TokensNotStored):
        rotate_token(connection)
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ERROR  # committed, on PostgreSQL too
    assert stored.events.get().kind == "refresh_failed"
    assert connection.access_token == "t2"


def refuse_the_first_recovered_event(monkeypatch: Any) -> list[str]:
    """The database refuses the first "recovered" event: by then the tokens and the
    "refreshed" row are written, and must be rolled back with it."""
    from django.db import DatabaseError

    from oauth_connect.services import store as store_module

    store_event = store_module.store_event
    refusals: list[str] = []

    def refusing(connection: Any, kind: str, message: str = "") -> Any:
        if kind == "recovered" and not refusals:
            refusals.append(kind)
            raise DatabaseError("deadlock detected")
        return store_event(connection, kind, message)

    monkeypatch.setattr(store_module, "store_event", refusing)
    return refusals


@pytest.mark.parametrize(
    "in_transaction",
    [
        # Inside an outer transaction, as under PostgreSQL's row lock: the retry rolls back to
        # a savepoint.
        pytest.param(True, id="savepoint"),
        # No transaction around the refresh, as on SQLite in production: its own transaction.
        pytest.param(False, id="own-transaction", marks=pytest.mark.django_db(transaction=True)),
    ],
)
def test_a_write_refused_once_is_stored_and_announced_once(
    in_transaction: bool,
    http_mock: responses.RequestsMock,
    make_connection: Any,
    received: list[Any],
    django_capture_on_commit_callbacks: Any,
    monkeypatch: Any,
    caplog: Any,
) -> None:
    caplog.set_level(logging.INFO, logger="oauth_connect")
    refusals = refuse_the_first_recovered_event(monkeypatch)
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection(
        expires_at=timezone.now() - timedelta(minutes=1),
        status=Connection.Status.ERROR,
        consecutive_failures=2,
    )
    if db.vendor == "sqlite":  # PostgreSQL always refreshes inside the row lock's transaction
        assert db.in_atomic_block is in_transaction

    with django_capture_on_commit_callbacks(execute=True):
        assert refresh_connection(connection) is True

    assert refusals == ["recovered"]
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.access_token, stored.status) == ("access-token-2", Connection.Status.ACTIVE)
    assert sorted(stored.events.values_list("kind", flat=True)) == ["recovered", "refreshed"]
    assert sorted(name for name, _ in received) == ["recovered", "refreshed"]
    logged = [r.getMessage() for r in caplog.records if r.name == "oauth_connect"]
    assert sum(": refreshed" in line for line in logged) == 1
    assert sum(": recovered" in line for line in logged) == 1


def test_commit_callbacks_of_a_rolled_back_write_are_dropped(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: Any,
) -> None:
    # A project's post_save receiver that acts on commit (a webhook, a cache purge) must run
    # once for the write that stayed, not also for the one rolled back.
    from django.db import transaction
    from django.db.models.signals import post_save

    refuse_the_first_recovered_event(monkeypatch)
    committed: list[str] = []

    def on_save(sender: Any, instance: Connection, **kwargs: Any) -> None:
        token = instance.access_token
        transaction.on_commit(lambda: committed.append(token))

    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection(
        expires_at=timezone.now() - timedelta(minutes=1), status=Connection.Status.ERROR
    )
    post_save.connect(on_save, sender=Connection)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            refresh_connection(connection)
    finally:
        post_save.disconnect(on_save, sender=Connection)

    assert committed == ["access-token-2"]


def test_a_connection_deleted_during_its_refresh_is_not_brought_back(
    http_mock: responses.RequestsMock, make_connection: Any, caplog: Any
) -> None:
    from oauth_connect.exceptions import ConnectionUnavailable

    if db.features.has_select_for_update:
        pytest.skip("the row lock makes a concurrent delete wait until the refresh is stored")
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))

    def delete_then_answer(request: Any) -> tuple[int, dict[str, str], str]:
        # Someone deletes the row while the provider answers (SQLite has no row lock).
        Connection.objects.filter(pk=connection.pk).delete()
        return 200, {"Content-Type": "application/json"}, json.dumps(token_body(2))

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=delete_then_answer)

    with pytest.raises(ConnectionUnavailable, match="deleted while it was being refreshed"):
        refresh_connection(connection)

    assert not Connection.objects.filter(pk=connection.pk).exists()
    assert "storing them failed" not in caplog.text
