"""Single-flight refresh across processes: 16 worker processes (as under gunicorn, or on several
hosts) find the same expired or rejected token at once, and the row lock lets exactly one of them
spend the refresh token at the live sandbox. Needs PostgreSQL: SQLite has no row locks and is
single-process only.

The workers are fresh interpreters (tests/e2e/processes.py), shared by the tests of this module
since starting 16 of them is most of the cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone
from oauth2_provider.models import AccessToken

from tests.conftest import requires_postgres

from .conftest import Sandbox, assert_refreshed_once, connected
from .processes import TOKEN_PATH, EndpointCalls, WorkerPool, call_api, spawn_pool

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]

PROCESSES = 16
ALICE = {"username": "alice"}


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    with spawn_pool(PROCESSES) as workers:
        yield workers


def test_processes_refresh_an_expired_connection_once(
    pool: WorkerPool, sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    connection = connected(sandbox, browser, organisation)
    sandbox.expire(connection)
    mark = sandbox.mark("apicbase")

    with EndpointCalls(TOKEN_PATH) as token_calls:
        results = pool.run_at_once(call_api, connection.pk)

    assert len({pid for pid, _, _ in results}) == PROCESSES
    # Each refreshed (or waited for the refresh) before sending: the expired token never went out.
    assert [(statuses, body) for _, statuses, body in results] == [([200], ALICE)] * PROCESSES
    assert token_calls.count == 1
    assert_refreshed_once(sandbox, connection, mark)
    succeeded = sum(statuses[-1] == 200 for _, statuses, _ in results)
    print(
        f"\nCONCURRENCY proactive: processes={len(results)} token_calls={token_calls.count} "
        f"succeeded={succeeded}"
    )


def test_processes_refresh_a_rejected_token_once(
    pool: WorkerPool, sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    connection = connected(sandbox, browser, organisation)
    # The sandbox stops accepting the access token while our expires_at still says it's good, so
    # every worker sends it and gets a 401. (Expired rather than deleted: the sandbox refuses a
    # refresh token whose access token row was deleted out of band.)
    AccessToken.objects.filter(token=connection.access_token).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    assert not connection.expires_within(timedelta(minutes=30))
    mark = sandbox.mark("apicbase")

    with EndpointCalls(TOKEN_PATH) as token_calls:
        results = pool.run_at_once(call_api, connection.pk)

    assert len({pid for pid, _, _ in results}) == PROCESSES
    # One worker refreshed; the others found the rejected token already replaced, and retried.
    assert [(statuses, body) for _, statuses, body in results] == [([401, 200], ALICE)] * PROCESSES
    assert token_calls.count == 1
    assert_refreshed_once(sandbox, connection, mark)
    rejected = sum(statuses[0] == 401 for _, statuses, _ in results)
    succeeded = sum(statuses[-1] == 200 for _, statuses, _ in results)
    print(
        f"\nCONCURRENCY 401 race: processes={len(results)} rejected={rejected} "
        f"token_calls={token_calls.count} succeeded={succeeded}"
    )
