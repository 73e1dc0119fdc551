"""The batched refresh on PostgreSQL (``services.batch``): what a batch costs the database, how
many connections a run holds, what a tenant's request waits for, every outcome in one batch, and
a batch write the database refuses or loses. Needs PostgreSQL: SQLite refreshes row by row."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
import responses
from django.db import DatabaseError, OperationalError, transaction
from django.db import connection as db_connection
from django.db.backends import utils
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from oauth_connect.models import Connection
from oauth_connect.services import (
    batch,
    batch_write,
    refresh_connection,
    refresh_due_connections,
    store,
)
from oauth_connect.services.batch_row import BatchRow
from oauth_connect.services.bulk import refresh_these_if_due
from tests.conftest import TOKEN_URL, requires_postgres, token_body

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]

DAY = timedelta(days=1)


def due(make_connection: Any, count: int, **fields: Any) -> list[Connection]:
    """``count`` expired connections, each with its own refresh token (refresh-N)."""
    expired = timezone.now() - timedelta(minutes=1)
    return [
        make_connection(
            label=f"c{n}", refresh_token=f"refresh-{n}", **{"expires_at": expired, **fields}
        )
        for n in range(count)
    ]


def answer_by_refresh_token(
    answers: dict[str, tuple[int, dict[str, Any]]],
) -> Callable[[Any], tuple[int, dict[str, str], str]]:
    """A token endpoint that answers each refresh token as ``answers`` says (default: new
    tokens named after it)."""

    def respond(request: Any) -> tuple[int, dict[str, str], str]:
        (sent,) = parse_qs(request.body)["refresh_token"]
        status, body = answers.get(
            sent,
            (200, token_body(2, access_token=f"new-{sent}", refresh_token=f"next-{sent}")),
        )
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    return respond


class StatementCounter:
    """Every SQL statement on every thread (Django's capture sees one connection's), and the
    threads that opened a database connection."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.connected: list[str] = []
        self._lock = threading.Lock()

    @contextmanager
    def counting(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[StatementCounter]:
        execute, executemany = utils.CursorWrapper.execute, utils.CursorWrapper.executemany
        connect = BaseDatabaseWrapper.connect
        counter = self

        def count(sql: str) -> None:
            with counter._lock:
                counter.statements.append(sql.split()[0].upper())

        def counted_execute(cursor: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            count(sql)
            return execute(cursor, sql, *args, **kwargs)

        def counted_executemany(cursor: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            count(sql)
            return executemany(cursor, sql, *args, **kwargs)

        def counted_connect(wrapper: Any) -> Any:
            with counter._lock:
                counter.connected.append(threading.current_thread().name)
            return connect(wrapper)

        monkeypatch.setattr(utils.CursorWrapper, "execute", counted_execute)
        monkeypatch.setattr(utils.CursorWrapper, "executemany", counted_executemany)
        monkeypatch.setattr(BaseDatabaseWrapper, "connect", counted_connect)
        yield self
        monkeypatch.undo()


# What a batch costs -------------------------------------------------------------------------


def test_a_batch_costs_four_statements_whatever_its_size(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    from django.test.utils import CaptureQueriesContext

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    connections = due(make_connection, 8)

    with CaptureQueriesContext(db_connection) as captured:
        results = refresh_these_if_due([c.pk for c in connections], DAY)

    assert [result.outcome for result in results] == ["refreshed"] * 8
    statements = [
        query["sql"].split(" times: ")[-1].split()[0]  # an executemany is one statement
        for query in captured.captured_queries
        if query["sql"] not in ("BEGIN", "COMMIT")
    ]
    # Claim the rows, the savepoint a refused write rolls back to, every row's tokens in one
    # executemany, every event in one INSERT: half a statement per connection.
    assert statements == ["SELECT", "SAVEPOINT", "UPDATE", "INSERT"]
    for connection in Connection.objects.filter(pk__in=[c.pk for c in connections]):
        n = connection.label[1:]
        assert (connection.access_token, connection.refresh_token) == (
            f"new-refresh-{n}",
            f"next-refresh-{n}",
        )
        assert connection.events.get().kind == "refreshed"
    raw = Connection.objects.filter(pk=connections[0].pk).values_list("access_token", flat=True)
    assert "new-refresh" not in raw[0]  # written through the field: encrypted


def test_a_run_costs_at_most_one_statement_per_refreshed_connection(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    due(make_connection, 16)

    with StatementCounter().counting(monkeypatch) as counter:
        summary = refresh_due_connections(DAY, workers=8)

    assert summary.count("refreshed") == 16
    # The listing, then two batches of eight: 9 statements for 16 connections.
    assert Counter(counter.statements) == Counter(
        {"SELECT": 3, "SAVEPOINT": 2, "UPDATE": 2, "INSERT": 2}
    )
    assert len(counter.statements) <= 16


def test_64_workers_hold_at_most_four_database_connections(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 64 threads each with a connection of its own would come near a stock PostgreSQL's 100.
    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    due(make_connection, 100)

    with StatementCounter().counting(monkeypatch) as counter:
        summary = refresh_due_connections(DAY, workers=64)

    assert summary.count("refreshed") == 100
    # Four lanes of 16: this thread's connection (already open here) and three more. The 64
    # threads that call the provider never touch the database.
    assert len(counter.connected) == 3
    assert not [name for name in counter.connected if name.startswith("oauth_connect-refresh")]
    assert len(http_mock.calls) == 100


# What a tenant's request waits for ----------------------------------------------------------


def test_a_tenant_request_waits_for_the_batch_and_uses_its_tokens(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    (connection,) = due(make_connection, 1)
    calling = threading.Event()
    waiting = threading.Event()
    answered = answer_by_refresh_token({})

    def slow_provider(request: Any) -> Any:
        # The batch has claimed the row and holds its lock until it commits: the request
        # queues behind it.
        calling.set()
        assert waiting.wait(10), "the tenant's request never queued for the row"
        return answered(request)

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=slow_provider)
    batch_done: list[Any] = []
    runner = threading.Thread(
        target=closing_connection(
            lambda: batch_done.append(refresh_these_if_due([connection.pk], DAY))
        )
    )
    runner.start()
    try:
        # (Not probed with a lock of our own: the batch would skip a row we held.)
        assert calling.wait(10), "the batch never called the provider"
        tenant_view = Connection.objects.get(pk=connection.pk)
        request = threading.Thread(
            target=closing_connection(lambda: refresh_connection(tenant_view))
        )
        request.start()
        _wait_until_waiting_for_a_lock()
        waiting.set()
        request.join(10)
    finally:
        waiting.set()
        runner.join(10)

    assert batch_done[0][0].outcome == "refreshed"
    # The request found the fresh tokens under the lock: no second call, none refused.
    assert len(http_mock.calls) == 1
    assert tenant_view.access_token == "new-refresh-0"
    assert tenant_view.status == Connection.Status.ACTIVE


def test_a_row_another_worker_holds_is_skipped_without_waiting(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    (held, free) = due(make_connection, 2)
    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    release = threading.Event()
    locked = threading.Event()

    def hold() -> None:
        with transaction.atomic():
            Connection.objects.select_for_update().get(pk=held.pk)
            locked.set()
            release.wait(10)
        db_connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        results = refresh_these_if_due([held.pk, free.pk], DAY)
    finally:
        release.set()
        holder.join(10)

    assert [(r.connection_id, r.outcome) for r in results] == [
        (held.pk, "skipped"),
        (free.pk, "refreshed"),
    ]
    assert (results[0].provider, results[0].label, results[0].status) == (
        "apicbase",
        "c0",
        "active",
    )
    assert len(http_mock.calls) == 1  # only for the free one
    assert Connection.objects.get(pk=held.pk).refresh_token == "refresh-0"


# Every outcome in one batch ------------------------------------------------------------------


def test_every_outcome_in_one_batch_is_recorded_and_announced_after_commit(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    received: list[tuple[str, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="oauth_connect")
    expired = timezone.now() - timedelta(minutes=1)
    fine, refused, down, garbled, recovering = due(make_connection, 5)
    Connection.objects.filter(pk=recovering.pk).update(status="error", consecutive_failures=2)
    later = make_connection(label="later", expires_at=timezone.now() + timedelta(days=3))
    gone = make_connection(label="gone", status="disconnected", expires_at=expired)
    waiting = make_connection(label="waiting", status="reauth_required", expires_at=expired)
    http_mock.add_callback(
        responses.POST,
        TOKEN_URL,
        callback=answer_by_refresh_token(
            {
                "refresh-1": (400, {"error": "invalid_grant"}),
                "refresh-2": (503, {"error": "temporarily_unavailable"}),
                # An access token no header can carry; its refresh token is fine and kept.
                "refresh-3": (200, token_body(9, access_token="bad token\n")),
            }
        ),
    )
    pks = [c.pk for c in (fine, refused, down, garbled, recovering, later, gone, waiting)]

    results = {r.connection_id: r for r in refresh_these_if_due(pks, DAY)}

    assert {pk: results[pk].outcome for pk in pks} == {
        fine.pk: "refreshed",
        refused.pk: "failed",
        down.pk: "failed",
        garbled.pk: "failed",
        recovering.pk: "refreshed",
        later.pk: "skipped",
        gone.pk: "skipped",
        waiting.pk: "skipped",
    }
    assert len(http_mock.calls) == 5
    stored = {c.pk: c for c in Connection.objects.filter(pk__in=pks)}
    assert stored[fine.pk].access_token == "new-refresh-0"
    assert stored[refused.pk].status == "reauth_required"
    assert stored[refused.pk].refresh_token == "refresh-1"
    assert (stored[down.pk].status, stored[down.pk].consecutive_failures) == ("error", 1)
    assert stored[down.pk].retry_not_before is not None
    assert stored[down.pk].refresh_token == "refresh-2"  # a failure mark leaves tokens alone
    assert stored[garbled.pk].status == "error"
    assert stored[garbled.pk].refresh_token == "refresh-token-9"  # salvaged: it was spent
    assert stored[garbled.pk].access_token == "access-token-1"
    assert (stored[recovering.pk].status, stored[recovering.pk].consecutive_failures) == (
        "active",
        0,
    )
    kinds = {pk: list(stored[pk].events.values_list("kind", flat=True)) for pk in pks}
    assert kinds[fine.pk] == ["refreshed"]
    assert kinds[refused.pk] == ["reauth_required"]
    assert kinds[down.pk] == kinds[garbled.pk] == ["refresh_failed"]
    assert sorted(kinds[recovering.pk]) == ["recovered", "refreshed"]
    assert kinds[later.pk] == kinds[gone.pk] == kinds[waiting.pk] == []
    # Signals went out once the batch committed, one per event, failures with their error.
    assert Counter(name for name, _ in received) == Counter(
        {"refreshed": 2, "recovered": 1, "reauth_required": 1, "refresh_failed": 2}
    )
    assert all(
        "error" in kwargs
        for name, kwargs in received
        if name != "refreshed" and name != "recovered"
    )
    for _, kwargs in received:
        assert kwargs["event"].pk is not None
        assert kwargs["connection"].pk == kwargs["event"].connection_id
    logged = [r.getMessage() for r in caplog.records if r.name == "oauth_connect"]
    assert sum(": refreshed" in line for line in logged) == 2


def test_a_tenant_client_is_read_once_for_the_batch(
    http_mock: responses.RequestsMock, make_connection: Any, organisation: Any
) -> None:
    from django.test.utils import CaptureQueriesContext

    from oauth_connect.models import ClientCredentials

    ClientCredentials.objects.create(
        tenant=organisation, provider="apicbase", client_id="own-id", client_secret="own-secret"
    )
    sent: list[str] = []
    answered = answer_by_refresh_token({})

    def record(request: Any) -> Any:
        sent.append(parse_qs(request.body)["client_id"][0])
        return answered(request)

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=record)
    connections = due(make_connection, 4, client_id="own-id")

    with CaptureQueriesContext(db_connection) as captured:
        results = refresh_these_if_due([c.pk for c in connections], DAY)

    assert [r.outcome for r in results] == ["refreshed"] * 4
    assert sent == ["own-id"] * 4
    selects = [q for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    assert len(selects) == 2  # the claim, and the tenant's client for all four


# A write the database refuses, or loses ---------------------------------------------------------


def test_a_batch_write_the_database_refuses_is_written_row_by_row(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    monkeypatch: pytest.MonkeyPatch,
    received: list[tuple[str, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="oauth_connect")
    http_mock.add_callback(
        responses.POST,
        TOKEN_URL,
        callback=answer_by_refresh_token({"refresh-2": (503, {"error": "down"})}),
    )
    connections = due(make_connection, 4)
    update_rows = batch_write.update_rows
    refused: list[int] = []

    def refuse_once(rows: Any, *args: Any, **kwargs: Any) -> None:
        update_rows(rows, *args, **kwargs)  # written, then refused: the savepoint undoes it
        if not refused:
            refused.append(len(rows))
            raise OperationalError("deadlock detected")

    monkeypatch.setattr(batch_write, "update_rows", refuse_once)
    # ... and one row's own write is refused twice: it alone is marked.
    write = store._write_tokens_and_events

    def refuse_row_3(applied: Any) -> Any:
        if applied.current.pk == connections[3].pk:
            raise OperationalError("could not serialize access")
        return write(applied)

    monkeypatch.setattr(store, "_write_tokens_and_events", refuse_row_3)

    results = refresh_these_if_due([c.pk for c in connections], DAY)

    assert refused == [3]
    assert [r.outcome for r in results] == ["refreshed", "refreshed", "failed", "failed"]
    assert "storing them failed" in results[3].error
    stored = {c.label: c for c in Connection.objects.filter(pk__in=[c.pk for c in connections])}
    assert [stored[f"c{n}"].access_token for n in (0, 1)] == ["new-refresh-0", "new-refresh-1"]
    assert stored["c2"].status == "error"
    assert stored["c3"].status == "error"
    assert "storing them failed" in stored["c3"].last_error
    for label in ("c0", "c1"):
        assert list(stored[label].events.values_list("kind", flat=True)) == ["refreshed"]
    assert Counter(name for name, _ in received) == Counter(refreshed=2, refresh_failed=2)
    warnings = [r for r in caplog.records if getattr(r, "event", "") == "batch_write_refused"]
    assert len(warnings) == 1
    assert "OperationalError" in warnings[0].getMessage()


def test_a_batch_whose_database_connection_dies_after_the_calls_marks_what_it_lost(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    connections = due(make_connection, 2)
    backend: list[int] = []
    answered = answer_by_refresh_token({})

    def kill_the_batch_connection(request: Any) -> Any:
        # The provider answers, but the batch's database session is gone meanwhile.
        if len(backend) == 1:
            with psycopg.connect(_database_url(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [backend[0]])
            backend.append(-1)
        return answered(request)

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=kill_the_batch_connection)
    outcome: list[Any] = []

    def run() -> None:
        db_connection.ensure_connection()
        backend.append(db_connection.connection.info.backend_pid)
        outcome.append(refresh_these_if_due([connections[0].pk], DAY))
        # The next batch gets a new database connection and goes well.
        outcome.append(refresh_these_if_due([connections[1].pk], DAY))
        db_connection.close()

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(30)

    lost, next_batch = outcome
    assert lost[0].outcome == "failed"
    assert "storing them failed" in lost[0].error
    stored = Connection.objects.get(pk=connections[0].pk)
    assert stored.status == "error"
    assert "storing them failed" in stored.last_error
    assert stored.refresh_token == "refresh-0"  # never stored: it's logged, and marked
    assert next_batch[0].outcome == "refreshed"


def test_a_database_error_before_any_call_is_raised_and_changes_nothing(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (connection,) = due(make_connection, 1)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(batch, "tenant_clients_for", refuse)

    with pytest.raises(DatabaseError):
        refresh_these_if_due([connection.pk], DAY)
    assert len(http_mock.calls) == 0
    assert Connection.objects.get(pk=connection.pk).refresh_token == "refresh-0"


def test_the_pool_must_be_as_large_as_the_batch_for_the_lock_bound(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    # Every call of a batch runs at once: the last one is not queued behind the others.
    connections = due(make_connection, 6)
    arrived = threading.Barrier(6, timeout=10)
    answered = answer_by_refresh_token({})

    def together(request: Any) -> Any:
        arrived.wait()  # breaks (and fails the call) unless all six are in flight at once
        return answered(request)

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=together)
    with ThreadPoolExecutor(6) as pool:
        results = batch.refresh_batch([c.pk for c in connections], DAY, timezone.now(), pool)
    assert [r.outcome for r in results] == ["refreshed"] * 6


def test_a_provider_class_bug_costs_its_row_only(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    connections = due(make_connection, 3)
    from oauth_connect.services import refresh as refresh_module

    checked = refresh_module.checked_answer

    def broken_for_the_second(tokens: Any, provider: Any, current: Any) -> Any:
        if current.pk == connections[1].pk:
            raise KeyError("a bug of ours")
        return checked(tokens, provider, current)

    monkeypatch.setattr(batch, "checked_answer", broken_for_the_second)

    results = refresh_these_if_due([c.pk for c in connections], DAY)

    assert [r.outcome for r in results] == ["refreshed", "failed", "refreshed"]
    assert results[1].error == "Unexpected KeyError."
    assert Connection.objects.get(pk=connections[0].pk).access_token == "new-refresh-0"
    assert Connection.objects.get(pk=connections[2].pk).access_token == "new-refresh-2"


def test_a_provider_class_that_returns_no_token_set_fails_its_row(
    make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_connect.providers.apicbase import ApicbaseProvider

    monkeypatch.setattr(ApicbaseProvider, "refresh", lambda self, client, current, oauth: None)
    (connection,) = due(make_connection, 1)

    (result,) = refresh_these_if_due([connection.pk], DAY)

    assert result.outcome == "failed"
    assert "returned NoneType, not a TokenSet" in result.error
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.status, stored.consecutive_failures) == ("error", 1)


class _PoolThatBreaks(ThreadPoolExecutor):
    """Runs the first call, then can't start another (as when threads run out)."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if getattr(self, "submitted", False):
            raise RuntimeError("can't start new thread")
        self.submitted = True
        return super().submit(*args, **kwargs)


def test_a_pool_that_runs_out_of_threads_stores_what_was_asked(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    asked, never_asked = due(make_connection, 2)

    with _PoolThatBreaks(2) as pool:
        results = batch.refresh_batch([asked.pk, never_asked.pk], DAY, timezone.now(), pool)

    # The provider spent the first one's refresh token: its new one is stored. The second was
    # never asked: left for the next run.
    assert [(r.connection_id, r.outcome) for r in results] == [
        (asked.pk, "refreshed"),
        (never_asked.pk, "skipped"),
    ]
    assert Connection.objects.get(pk=asked.pk).refresh_token == "next-refresh-0"
    assert Connection.objects.get(pk=never_asked.pk).refresh_token == "refresh-1"
    assert len(http_mock.calls) == 1


def test_ctrl_c_while_the_calls_are_in_flight_stores_their_tokens_then_stops(
    make_connection: Any, monkeypatch: pytest.MonkeyPatch, http_mock: responses.RequestsMock
) -> None:
    from concurrent.futures import Future

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    (connection,) = due(make_connection, 1)
    result = Future.result
    interrupts: list[int] = []

    def interrupted_once(future: Any, *args: Any, **kwargs: Any) -> Any:
        if not interrupts:  # Ctrl-C reaches the thread waiting for the answer
            interrupts.append(1)
            raise KeyboardInterrupt
        return result(future, *args, **kwargs)

    monkeypatch.setattr(Future, "result", interrupted_once)
    with ThreadPoolExecutor(1) as pool, pytest.raises(KeyboardInterrupt):
        batch.refresh_batch([connection.pk], DAY, timezone.now(), pool)
    monkeypatch.undo()

    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.refresh_token, stored.status) == ("next-refresh-0", "active")
    assert stored.events.get().kind == "refreshed"


def test_a_provider_class_that_writes_the_database_fails_its_row_instead_of_deadlocking(
    make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_connect.providers.apicbase import ApicbaseProvider

    def writes_its_row(self: Any, client: Any, current: Any, oauth: Any) -> Any:
        # It would wait for the row lock the batch holds, for ever.
        Connection.objects.filter(pk=current.pk).update(label="touched")

    monkeypatch.setattr(ApicbaseProvider, "refresh", writes_its_row)
    (connection,) = due(make_connection, 1)

    (result,) = refresh_these_if_due([connection.pk], DAY)

    assert result.outcome == "failed"
    assert "refresh() failed unexpectedly (DatabaseUseRefused)" in result.error
    assert Connection.objects.get(pk=connection.pk).label == "c0"


def test_a_provider_class_bug_before_the_calls_costs_its_row_only(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_connect.providers.apicbase import ApicbaseProvider

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    connections = due(make_connection, 3)
    can_refresh = ApicbaseProvider.can_refresh

    def broken_for_the_second(self: Any, current: Any) -> bool:
        if current.pk == connections[1].pk:
            raise KeyError("a bug")
        return can_refresh(self, current)

    monkeypatch.setattr(ApicbaseProvider, "can_refresh", broken_for_the_second)

    results = refresh_these_if_due([c.pk for c in connections], DAY)

    assert [r.outcome for r in results] == ["refreshed", "failed", "refreshed"]
    assert results[1].error == "Unexpected KeyError."


def test_a_lost_batch_leaves_alone_a_row_refreshed_since(make_connection: Any) -> None:
    # Between the lost batch and its marking, another worker refreshed the row: the marking
    # must not undo that.
    (connection,) = due(make_connection, 1)
    claimed = Connection.objects.get(pk=connection.pk)
    row = BatchRow(
        claimed, claimed.get_provider(), claimed_updated_at=claimed.updated_at, asked=True
    )
    refreshed_elsewhere = Connection.objects.get(pk=connection.pk)
    refreshed_elsewhere.refresh_token = "refreshed-since"
    refreshed_elsewhere.save()

    failure = batch_write.record_lost(row, OperationalError("server closed the connection"))

    assert "storing them failed (OperationalError)" in failure.detail
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.status, stored.refresh_token) == ("active", "refreshed-since")
    assert not stored.events.exists()


def test_a_listing_that_fails_in_another_lane_fails_the_run(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_connect.services import bulk

    http_mock.assert_all_requests_are_fired = False
    http_mock.add_callback(responses.POST, TOKEN_URL, callback=answer_by_refresh_token({}))
    due(make_connection, 40)
    listed = bulk._pages

    def failing_after_a_page(queryset: Any) -> Any:
        pages = listed(queryset)
        for _ in range(10):
            yield next(pages)
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(bulk, "_pages", failing_after_a_page)

    with pytest.raises(OperationalError):
        refresh_due_connections(DAY, workers=32)  # four lanes of eight
    assert len(http_mock.calls) <= 10  # at most what was listed


def test_a_refused_grant_whose_re_read_fails_costs_that_row_only(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_mock.add_callback(
        responses.POST,
        TOKEN_URL,
        callback=answer_by_refresh_token({"refresh-1": (400, {"error": "invalid_grant"})}),
    )
    connections = due(make_connection, 3)

    def refused(current: Any) -> bool:
        with db_connection.cursor() as cursor:  # a statement the database refuses
            cursor.execute("SELECT 1 / 0")
        return False

    monkeypatch.setattr(batch, "rotated_elsewhere", refused)

    results = refresh_these_if_due([c.pk for c in connections], DAY)

    assert [r.outcome for r in results] == ["refreshed", "failed", "refreshed"]
    stored = {c.label: c for c in Connection.objects.filter(pk__in=[c.pk for c in connections])}
    assert stored["c1"].status == "reauth_required"
    assert stored["c0"].access_token == "new-refresh-0"
    assert stored["c2"].access_token == "new-refresh-2"


# Helpers ------------------------------------------------------------------------------------------


def closing_connection(action: Callable[[], Any]) -> Callable[[], None]:
    """``action`` for a thread of its own, which closes its database connection after."""

    def run() -> None:
        try:
            action()
        finally:
            db_connection.close()

    return run


def _database_url() -> str:
    settings = db_connection.settings_dict
    return (
        f"postgresql://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
    )


def _wait_until_waiting_for_a_lock() -> None:
    def someone_waits() -> bool:
        with db_connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            (waiting,) = cursor.fetchone()
        return bool(waiting)

    _poll(someone_waits, "the tenant's request to queue for the row lock")


def _poll(condition: Callable[[], bool], what: str) -> None:
    # Polls the database (no clock to freeze: another thread's progress is awaited).
    import time

    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"waited 10 s for {what}"
        time.sleep(0.01)
