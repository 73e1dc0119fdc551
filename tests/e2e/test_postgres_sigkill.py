"""A ``refresh_tokens`` run killed (SIGKILL) in the middle of a refresh, while it holds the
connection's row lock and waits for the token endpoint: Postgres drops its session, so nothing
stays locked or half-written, and the next run completes the refresh. Needs PostgreSQL.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import requests

from oauth_connect.models import Connection
from tests.conftest import requires_postgres

from .conftest import Sandbox, event_kinds
from .processes import (
    DEADLINE,
    TokenGate,
    lock_row,
    refresh_tokens_runs,
    row_is_locked,
    summary_of,
    wait_for,
)

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]

# Postgres notices a dead client as soon as its socket closes; allow for a loaded machine.
RELEASE_TIMEOUT = 10.0


def test_a_run_killed_mid_refresh_leaves_nothing_locked_and_the_next_run_completes_it(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    sandbox.connect(browser, "apicbase")
    connection = Connection.objects.get(tenant=organisation, provider="apicbase")
    sandbox.expire(connection)
    held = (connection.access_token, connection.refresh_token, connection.expires_at)
    mark = sandbox.mark("apicbase")

    # The run's token endpoint is the gate, which never answers it.
    with TokenGate() as gate, refresh_tokens_runs(1, gate.url) as (run,):
        wait_for(gate.requested, "the run to call the token endpoint", [run])
        assert row_is_locked(connection.pk)  # the run holds the lock across the call
        killed_at = time.monotonic()
        run.kill()
        lock_row(connection.pk, timeout=RELEASE_TIMEOUT)  # waits for Postgres to release it
        released_ms = (time.monotonic() - killed_at) * 1000
        assert run.wait(timeout=DEADLINE) == -signal.SIGKILL

    assert not row_is_locked(connection.pk)
    stored = Connection.objects.get(pk=connection.pk)
    # Not stuck: still active, with the tokens it had, and no failure or backoff recorded.
    assert stored.status == Connection.Status.ACTIVE
    assert (stored.access_token, stored.refresh_token, stored.expires_at) == held
    assert (stored.consecutive_failures, stored.retry_not_before) == (0, None)
    assert event_kinds(stored) == ["connected"]
    assert sandbox.issued_since("apicbase", mark) == 0

    with refresh_tokens_runs(1, sandbox.url) as (run,):
        summary = summary_of(run)

    assert (summary["due"], summary["refreshed"], summary["failed"]) == (1, 1, 0)
    assert sandbox.issued_since("apicbase", mark) == 1
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ACTIVE
    assert stored.refresh_token == sandbox.newest_refresh_token("apicbase").token
    assert stored.access_token == sandbox.access_tokens("apicbase").get().token
    assert event_kinds(stored) == ["connected", "refreshed"]
    print(f"\nSIGKILL: lock released after {released_ms:.0f} ms; next refresh ok")
