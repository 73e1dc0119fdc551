"""Several ``refresh_tokens`` runs at once, as cron on several hosts starts them: between them
they refresh each due connection exactly once at the live sandbox, and their summaries add up.
Needs PostgreSQL (row locks shared by separate processes).

The runs are real ``manage.py`` subprocesses on the test database; the sandbox's live server runs
in this process and they reach it over HTTP.
"""

from __future__ import annotations

import secrets
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from oauth_connect.models import Connection
from tests.conftest import requires_postgres

from .conftest import CLIENTS, Sandbox, event_kinds
from .processes import (
    TOKEN_PATH,
    EndpointCalls,
    backends_waiting_for,
    refresh_tokens_runs,
    summary_of,
    table_locked,
    wait_for,
)

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]

RUNS = 3
WORKERS = 4  # threads per run
CONNECTIONS = 30


def expired_connections(
    sandbox: Sandbox, browser: requests.Session, organisation: Any, user: Any, count: int
) -> list[Connection]:
    """``count`` expired Apicbase connections, each holding its own live grant at the sandbox:
    the first connected through the authorization flow, the others granted at the sandbox
    directly (as the flow would, minus the browser round trips)."""
    sandbox.connect(browser, "apicbase")
    first = Connection.objects.get(tenant=organisation, provider="apicbase")
    past = timezone.now() - timedelta(minutes=1)
    application = sandbox.applications["apicbase"]
    for number in range(2, count + 1):
        access = AccessToken.objects.create(
            user=user,
            application=application,
            token=secrets.token_urlsafe(30),
            expires=past,
            scope=first.scopes,
        )
        refresh = RefreshToken.objects.create(
            user=user,
            application=application,
            token=secrets.token_urlsafe(30),
            access_token=access,
        )
        Connection.objects.create(
            tenant=organisation,
            provider="apicbase",
            label=f"kitchen {number}",
            access_token=access.token,
            refresh_token=refresh.token,
            scopes=first.scopes,
            client_id=CLIENTS["apicbase"][0],
            expires_at=past,
        )
    sandbox.expire(first)
    return list(Connection.objects.filter(tenant=organisation).order_by("pk"))


@pytest.mark.parametrize(
    "processes",
    [
        pytest.param(1, id="threads"),
        # Each run splits its connections and workers between two forked processes.
        pytest.param(2, id="processes"),
    ],
)
def test_concurrent_runs_refresh_each_due_connection_once(
    sandbox: Sandbox, browser: requests.Session, organisation: Any, user: Any, processes: int
) -> None:
    connections = expired_connections(sandbox, browser, organisation, user, CONNECTIONS)
    spent = {connection.pk: connection.refresh_token for connection in connections}
    mark = sandbox.mark("apicbase")

    with (
        EndpointCalls(TOKEN_PATH) as token_calls,
        refresh_tokens_runs(
            RUNS, sandbox.url, "--workers", str(WORKERS), "--processes", str(processes)
        ) as runs,
    ):
        # The starting gate: each run (each of its processes) begins by listing the due
        # connections, and waits here until all of them do, so they really run at once
        # whatever their start-up times.
        listers = RUNS * processes
        with table_locked(Connection):
            wait_for(lambda: backends_waiting_for(Connection) >= listers, "the runs to list", runs)
        summaries = [summary_of(run) for run in runs]

    for summary in summaries:
        assert summary["failed"] == 0, summary
        assert summary["due"] == CONNECTIONS  # all listed: a fresh token expires within a day
        assert summary["refreshed"] + summary["skipped"] == summary["due"]
    assert sum(summary["refreshed"] for summary in summaries) == CONNECTIONS
    refreshed_by = Counter(
        result["connection_id"]
        for summary in summaries
        for result in summary["connections"]
        if result["outcome"] == "refreshed"
    )
    assert refreshed_by == Counter(dict.fromkeys(spent, 1))  # each by exactly one run

    # At the sandbox: one token call per connection, each spending that connection's grant.
    assert token_calls.count == CONNECTIONS
    assert sandbox.issued_since("apicbase", mark) == CONNECTIONS
    live = set(
        sandbox.refresh_tokens("apicbase")
        .filter(revoked__isnull=True)
        .values_list("token", flat=True)
    )
    stored = Connection.objects.filter(pk__in=spent)
    assert {connection.refresh_token for connection in stored} == live
    assert len(live) == CONNECTIONS
    assert not RefreshToken.objects.filter(token__in=spent.values(), revoked__isnull=True).exists()
    for connection in stored:
        assert connection.status == Connection.Status.ACTIVE
        assert connection.expires_at > timezone.now() + timedelta(minutes=30)
        assert event_kinds(connection).count("refreshed") == 1

    split = "+".join(str(summary["refreshed"]) for summary in summaries)
    print(
        f"\nCONCURRENCY cron: runs={RUNS} workers_per_run={WORKERS} processes_per_run={processes} "
        f"connections={CONNECTIONS} "
        f"token_calls={token_calls.count} refreshed_sum={sum(refreshed_by.values())} "
        f"(per run {split}) failed=0"
    )
