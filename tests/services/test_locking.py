"""The connection lock's wait is bounded: a worker queued behind a holder that takes longer than
any refresh may (the provider deadline plus a margin) gives up with ``ConnectionBusy``, having
changed nothing and called no provider."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.db import connection as db_connection
from django.db import connections, router, transaction
from django.utils import timezone

from oauth_connect import conf
from oauth_connect.exceptions import ConnectionBusy
from oauth_connect.models import Connection
from oauth_connect.services import disconnect, refresh_connection
from oauth_connect.services.locking import _process_lock
from tests.conftest import requires_postgres

DEADLINE = 0.3  # HTTP_DEADLINE in these tests; the margin is set to 0, so that is the wait


@pytest.fixture(autouse=True)
def short_lock_wait(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "HTTP_DEADLINE": DEADLINE}
    monkeypatch.setattr(conf, "LOCK_WAIT_MARGIN", 0.0)


def expired(make_connection: Any) -> Connection:
    connection: Connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    return connection


def assert_untouched(connection: Connection) -> None:
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ACTIVE
    assert (stored.access_token, stored.refresh_token) == ("access-token-1", "refresh-token-1")
    assert (stored.consecutive_failures, stored.retry_not_before, stored.last_error) == (
        0,
        None,
        "",
    )
    assert not stored.events.exists()


@pytest.mark.django_db
def test_a_thread_of_this_process_waits_a_bounded_time(
    make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    # Another thread of this process is in the middle of a change (the per-process lock every
    # change takes first, on every database). No token endpoint is registered: a call would fail.
    connection = expired(make_connection)
    holder = _process_lock((router.db_for_write(Connection), connection.pk))
    with holder.lock:
        started = time.monotonic()
        with pytest.raises(ConnectionBusy) as info:
            refresh_connection(connection)
        waited = time.monotonic() - started
    assert waited >= DEADLINE * 0.9
    assert f"Connection #{connection.pk} is being changed by another worker" in str(info.value)
    assert "HTTP_DEADLINE" in str(info.value) and "Nothing was changed" in str(info.value)
    assert_untouched(connection)


@pytest.fixture
def row_lock_elsewhere(db: None) -> Iterator[Any]:
    """``hold(pk)``: another database session takes the connection's row lock and keeps it until
    the test ends (PostgreSQL)."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    def hold(pk: int) -> None:
        locked = threading.Event()

        def run() -> None:
            try:
                with transaction.atomic():
                    Connection.objects.select_for_update().get(pk=pk)
                    locked.set()
                    release.wait(timeout=30)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        assert locked.wait(timeout=10)

    yield hold
    release.set()
    for thread in threads:
        thread.join(timeout=10)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_queued_on_the_row_lock_gives_up_in_bounded_time(
    make_connection: Any, http_mock: responses.RequestsMock, row_lock_elsewhere: Any
) -> None:
    connection = expired(make_connection)
    row_lock_elsewhere(connection.pk)
    started = time.monotonic()
    with pytest.raises(ConnectionBusy):
        refresh_connection(connection)
    # PostgreSQL's lock_timeout ended the wait, not a test timeout: generous, as the machine
    # may be loaded, but far from the 30 s the holder would keep it.
    assert DEADLINE * 0.9 <= time.monotonic() - started < 10
    assert_untouched(connection)

    # Disconnecting queues on the same lock: busy too, and nothing wiped.
    with pytest.raises(ConnectionBusy):
        disconnect(connection)
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-1"


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_the_bound_does_not_leak_into_the_callers_transaction(
    make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection()  # valid: nothing to refresh, but the lock is taken
    with transaction.atomic(), db_connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '7s'")
        assert refresh_connection(connection) is False
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "7s"


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_the_bound_does_not_leak_into_a_transaction_with_autocommit_off(
    make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection()
    transaction.set_autocommit(False)
    try:
        with db_connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '7s'")
            assert refresh_connection(connection) is False
            cursor.execute("SHOW lock_timeout")
            assert cursor.fetchone()[0] == "7s"
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_timed_out_wait_inside_the_callers_transaction_leaves_its_value(
    make_connection: Any, http_mock: responses.RequestsMock, row_lock_elsewhere: Any
) -> None:
    connection = expired(make_connection)
    row_lock_elsewhere(connection.pk)
    with transaction.atomic(), db_connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '7s'")
        with pytest.raises(ConnectionBusy):
            refresh_connection(connection)
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "7s"
