"""Refresh every due connection (what ``manage.py refresh_tokens`` runs).

Rows are read in pages of primary keys, so memory stays flat however many connections there
are, and handed to worker threads. Each worker refreshes under the row lock and re-checks that
the connection is still due, so several runs at once (cron on several hosts) refresh each
connection once between them.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Q, QuerySet
from django.utils import timezone

from .._internal.log import logger
from ..exceptions import (
    AwaitingReauthorization,
    ConnectionBusy,
    ConnectionUnavailable,
    OAuthConnectError,
)
from ..models import IN_USE_STATUSES, Connection
from .refresh import refresh_when

PAGE_SIZE = 500


@dataclass
class RefreshResult:
    """What happened to one connection."""

    connection_id: int
    provider: str
    tenant_id: Any
    label: str
    # "refreshed", "skipped" (no longer due: another run got there first), "failed", "due" (dry run)
    outcome: str
    status: str
    error: str = ""


@dataclass
class RefreshSummary:
    """Counts per outcome, and each result unless the run was told not to keep them (so a run
    over any number of connections stays in constant memory)."""

    counts: Counter[str] = field(default_factory=Counter)
    results: list[RefreshResult] = field(default_factory=list)
    keep_results: bool = True

    def add(self, result: RefreshResult) -> None:
        self.counts[result.outcome] += 1
        if self.keep_results:
            self.results.append(result)

    def count(self, outcome: str) -> int:
        return self.counts[outcome]

    @property
    def failed(self) -> int:
        return self.count("failed")

    def as_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "due": self.counts.total(),
            "refreshed": self.count("refreshed"),
            "skipped": self.count("skipped"),
            "failed": self.failed,
        }
        if self.keep_results:
            report["connections"] = [vars(result) for result in self.results]
        return report


def due_connections(
    within: timedelta,
    *,
    providers: list[str] | None = None,
    tenant: Any = None,
    now: datetime | None = None,
) -> QuerySet[Connection]:
    """Connections whose access token expires within ``within`` and that can be refreshed now
    (not disconnected or awaiting reauthorization, not backing off after failures)."""
    now = now or timezone.now()
    queryset = Connection.objects.filter(
        status__in=IN_USE_STATUSES,
        expires_at__lte=now + within,
    ).filter(Q(retry_not_before__isnull=True) | Q(retry_not_before__lte=now))
    if providers:
        queryset = queryset.filter(provider__in=providers)
    if tenant is not None:
        queryset = queryset.filter(tenant=tenant)
    return queryset


def refresh_due_connections(
    within: timedelta,
    *,
    providers: list[str] | None = None,
    tenant: Any = None,
    workers: int = 1,
    dry_run: bool = False,
    on_result: Callable[[RefreshResult], None] | None = None,
    keep_results: bool = True,
) -> RefreshSummary:
    """Refresh every due connection with ``workers`` threads; report each result to
    ``on_result`` as it happens (from worker threads, one at a time). With
    ``keep_results=False`` the summary holds only counts: memory stays flat however many
    connections are due."""
    now = timezone.now()
    summary = RefreshSummary(keep_results=keep_results)
    report_lock = threading.Lock()

    def report(result: RefreshResult) -> None:
        with report_lock:
            summary.add(result)
            if on_result is not None:
                on_result(result)

    pks = _pages(due_connections(within, providers=providers, tenant=tenant, now=now))
    if dry_run:
        for pk in pks:
            connection = Connection.objects.get(pk=pk)
            if _is_due(connection, within, now):
                report(_result(connection, "due"))
        return summary

    def refresh_one(pk: int) -> None:
        try:
            result = _refresh_if_due(pk, within, started=now)
        except Exception as err:
            # One broken row must not stop the run or kill a worker thread.
            logger.exception(
                "Refreshing connection #%s failed unexpectedly",
                pk,
                extra={"event": "refresh_crashed", "connection_id": pk},
            )
            result = _result(Connection(pk=pk), "failed", f"Unexpected {type(err).__name__}.")
        report(result)

    _run_in_threads(pks, refresh_one, workers)
    return summary


def refresh_one_if_due(
    pk: int, within: timedelta, *, not_refreshed_since: datetime | None = None
) -> RefreshResult:
    """Refresh connection ``pk`` if, under its row lock, it is still due within ``within``, not
    backing off, and not refreshed since ``not_refreshed_since`` (default: now). The step every
    ``refresh_tokens`` worker and Celery task runs; never raises for a provider failure."""
    return _refresh_if_due(pk, within, started=not_refreshed_since or timezone.now())


def due_connection_ids(
    within: timedelta,
    *,
    providers: list[str] | None = None,
    tenant: Any = None,
    now: datetime | None = None,
) -> Iterator[int]:
    """Primary keys of :func:`due_connections`, in keyset pages (flat memory, no open cursor)."""
    return _pages(due_connections(within, providers=providers, tenant=tenant, now=now))


def _refresh_if_due(pk: int, within: timedelta, started: datetime) -> RefreshResult:
    connection = Connection(pk=pk)
    try:
        refreshed = refresh_when(connection, lambda current: _is_due(current, within, started))
    except (ConnectionUnavailable, AwaitingReauthorization) as err:
        # Disconnected, deleted or marked for reauthorization since we listed it: not a failure
        # of this run. Report the row as it is (the bare instance above holds only defaults).
        return _result(err.connection or connection, "skipped")
    except ConnectionBusy as err:
        # Another worker has held it past any refresh's deadline: it is that worker's to finish
        # (or, if stuck, the next run's to retry). Said, not counted as this run's failure.
        row = Connection.objects.filter(pk=pk).first() or connection
        return _result(row, "skipped", err.detail)
    except OAuthConnectError as err:
        return _result(err.connection or connection, "failed", err.detail)
    return _result(connection, "refreshed" if refreshed else "skipped")


def _is_due(current: Connection, within: timedelta, started: datetime) -> bool:
    now = timezone.now()
    backing_off = current.retry_not_before is not None and current.retry_not_before > now
    # Refreshed since this run started (by a concurrent run, cron on another host): a token
    # that lives less than `within` would otherwise look due again and be refreshed twice.
    fresh = current.last_refreshed_at is not None and current.last_refreshed_at >= started
    return current.refresh_due(within, now) and not backing_off and not fresh


def _result(connection: Connection, outcome: str, error: str = "") -> RefreshResult:
    return RefreshResult(
        connection_id=connection.pk,
        provider=connection.__dict__.get("provider", ""),
        tenant_id=connection.__dict__.get("tenant_id"),
        label=connection.__dict__.get("label", ""),
        outcome=outcome,
        status=connection.__dict__.get("status", "") if connection.tenant_id else "",
        error=error,
    )


def _pages(queryset: QuerySet[Connection]) -> Iterator[int]:
    # Keyset pagination over primary keys: bounded memory, and no cursor held open while
    # workers write (SQLite would block them).
    last = 0
    while True:
        page = list(
            queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:PAGE_SIZE]
        )
        yield from page
        if len(page) < PAGE_SIZE:
            return
        last = page[-1]


def _run_in_threads(items: Iterator[int], work: Callable[[int], None], workers: int) -> None:
    """``work(item)`` for every item on ``workers`` threads. The first exception ``work`` raises
    (e.g. a broken stdout pipe while reporting) is raised here once every thread has stopped;
    workers keep draining the queue meanwhile, so the producer never blocks on a dead pool."""
    if workers <= 1:
        for item in items:
            work(item)
        return
    todo: queue.Queue[int | None] = queue.Queue(maxsize=workers * 4)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while (item := todo.get()) is not None:
                if errors:
                    continue  # stop working, keep draining
                try:
                    work(item)
                except BaseException as err:
                    errors.append(err)
        finally:
            # Each thread has its own database connection; close it, or it leaks per run.
            connections.close_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for item in items:
        todo.put(item)
    for _ in threads:
        todo.put(None)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
