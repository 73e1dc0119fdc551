"""refresh_due_connections: what is due, concurrent runs, races, worker failures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import responses

from oauth_connect.models import Connection
from oauth_connect.services import refresh_due_connections
from tests.conftest import TOKEN_URL, token_body

DAY = timedelta(days=1)


@pytest.mark.django_db
def test_runs_starting_together_refresh_a_connection_once(
    http_mock: responses.RequestsMock, make_connection: Any, frozen_now: Any
) -> None:
    # Tokens that live an hour stay "due" under --within 1d after a refresh; a second run that
    # started at the same moment must still not refresh them again.
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection(expires_at=frozen_now + timedelta(minutes=30))

    first = refresh_due_connections(DAY)
    second = refresh_due_connections(DAY)

    assert (first.count("refreshed"), second.count("skipped")) == (1, 1)
    assert second.count("refreshed") == 0
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-2"


@pytest.mark.django_db
def test_connection_marked_for_reauthorization_meanwhile_is_skipped_not_failed(
    make_connection: Any, frozen_now: Any, monkeypatch: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection(expires_at=frozen_now + timedelta(minutes=30))
    from oauth_connect.services import bulk

    listed = bulk._pages

    def list_then_change(queryset: Any) -> Any:
        pks = list(listed(queryset))
        # Between listing and locking, another run found the grant dead.
        Connection.objects.filter(pk=connection.pk).update(status="reauth_required")
        return iter(pks)

    monkeypatch.setattr(bulk, "_pages", list_then_change)
    summary = refresh_due_connections(DAY)
    assert (summary.count("skipped"), summary.failed) == (1, 0)


@pytest.mark.django_db(transaction=True)
def test_a_failing_reporter_stops_the_run_instead_of_hanging(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.assert_all_requests_are_fired = False
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    from django.utils import timezone

    for n in range(6):
        make_connection(label=f"l{n}", expires_at=timezone.now() + timedelta(minutes=5))

    def broken_pipe(result: Any) -> None:
        raise BrokenPipeError("stdout closed")

    with pytest.raises(BrokenPipeError):
        refresh_due_connections(DAY, workers=2, on_result=broken_pipe)


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["reauth_required", "disconnected"])
def test_a_skipped_result_reports_the_row_as_it_is(
    make_connection: Any, status: str, http_mock: responses.RequestsMock
) -> None:
    from oauth_connect.services import refresh_one_if_due

    connection = make_connection(status=status)
    result = refresh_one_if_due(connection.pk, DAY)
    assert (result.outcome, result.provider, result.status) == ("skipped", "apicbase", status)
    assert result.tenant_id == connection.tenant_id


@pytest.mark.django_db
def test_a_deleted_row_is_skipped_with_no_status(http_mock: responses.RequestsMock) -> None:
    from oauth_connect.services import refresh_one_if_due

    result = refresh_one_if_due(987654, DAY)
    assert (result.outcome, result.status) == ("skipped", "")


@pytest.mark.django_db(transaction=True)
def test_one_worker_costs_at_most_four_statements_per_connection(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    # Outside a test transaction, as cron runs it. Transaction control (BEGIN, COMMIT) aside:
    # the row read under its lock, the tokens written, the event appended; on PostgreSQL (a
    # batch of one) the savepoint that lets a refused write be retried inside the lock's
    # transaction, and no lock_timeout: a batch skips the rows others hold instead of waiting.
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    for n in range(3):
        http_mock.add(responses.POST, TOKEN_URL, json=token_body(n + 2))
        make_connection(label=f"l{n}", expires_at=timezone.now() + timedelta(minutes=5))

    with CaptureQueriesContext(db) as captured:
        summary = refresh_due_connections(DAY)

    assert summary.count("refreshed") == 3
    statements = [
        # An executemany is recorded as "N times: UPDATE ...": one statement all the same.
        query["sql"].split(" times: ")[-1].split()[0]
        for query in captured.captured_queries
        if query["sql"].split()[0] not in ("BEGIN", "COMMIT")
    ]
    per_connection = ["SELECT", "UPDATE", "INSERT"]
    if db.vendor == "postgresql":
        per_connection = ["SELECT", "SAVEPOINT", "UPDATE", "INSERT"]
    assert statements == ["SELECT"] + per_connection * 3  # the first SELECT lists the due ones


@pytest.mark.django_db
def test_a_run_can_keep_only_counts(
    http_mock: responses.RequestsMock, make_connection: Any, frozen_now: Any
) -> None:
    # What refresh_tokens does outside --json: each result is printed as it comes, and the
    # summary holds counts only, so memory doesn't grow with the number of connections.
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    make_connection(label="due", expires_at=frozen_now + timedelta(minutes=5))
    make_connection(label="broken", expires_at=frozen_now + timedelta(minutes=5), status="error")
    http_mock.add(responses.POST, TOKEN_URL, status=503)
    seen = []

    summary = refresh_due_connections(DAY, keep_results=False, on_result=seen.append)

    assert summary.results == []
    assert (summary.count("refreshed"), summary.failed) == (1, 1)
    assert summary.as_dict() == {"due": 2, "refreshed": 1, "skipped": 0, "failed": 1}
    assert sorted(result.outcome for result in seen) == ["failed", "refreshed"]
