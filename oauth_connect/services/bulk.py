"""Refresh every due connection (what ``manage.py refresh_tokens`` runs).

Rows are read in pages of primary keys, so memory stays flat however many connections there
are. Every refresh happens under the row lock after re-checking that the connection is still
due, so several runs at once (cron on several hosts) refresh each connection once between them.

- PostgreSQL: in batches (``batch``), one transaction each, on at most ``MAX_LANES`` database
  connections whatever ``workers`` says.
- Other databases (SQLite): row by row on ``workers`` threads, each with its own connection.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, router
from django.db.models import QuerySet
from django.db.models.functions import Mod
from django.utils import timezone

from .._internal.forked import can_fork, run_forked
from .._internal.log import logger
from ..exceptions import (
    AwaitingReauthorization,
    ConnectionBusy,
    ConnectionUnavailable,
    OAuthConnectError,
)
from ..models import Connection
from .batch import batches_supported, refresh_batch
from .due import due_connections, still_due
from .refresh import refresh_when
from .results import RefreshResult, RefreshSummary, result_for

__all__ = [
    "RefreshResult",
    "RefreshSummary",
    "due_connection_ids",
    "due_connections",
    "refresh_due_connections",
    "refresh_one_if_due",
    "refresh_these_if_due",
]

PAGE_SIZE = 500
# Lanes: threads that each refresh one batch at a time on a database connection of their own,
# the batch's provider calls on a pool of the lane's share of ``workers``. A batch waits for its
# slowest call, so several smaller batches in flight at staggered times keep the provider calls
# flowing (as ``workers`` plain threads would); but each lane is a database connection, and a
# batch under 8 rows costs more than one statement per connection.
MAX_LANES = 4
MIN_BATCH = 8


def lanes_for(workers: int) -> int:
    """How many lanes ``workers`` provider calls at once are split into."""
    return max(1, min(MAX_LANES, workers // MIN_BATCH))


def refresh_due_connections(
    within: timedelta,
    *,
    providers: list[str] | None = None,
    tenant: Any = None,
    workers: int = 1,
    processes: int = 1,
    dry_run: bool = False,
    on_result: Callable[[RefreshResult], None] | None = None,
    keep_results: bool = True,
) -> RefreshSummary:
    """Refresh every due connection, ``workers`` provider calls at once; report each result to
    ``on_result`` as it happens (from worker threads, one at a time). With
    ``keep_results=False`` the summary holds only counts: memory stays flat however many
    connections are due.

    ``processes`` > 1 (PostgreSQL, on systems that fork) splits the due connections, the
    workers and the ``MAX_LANES`` database connections (at least one each) between that many
    forked processes, for when one process's CPU is the limit (fast token endpoints). Not
    inside a transaction."""
    if processes > 1 and not dry_run:
        return _refresh_in_processes(
            within, providers, tenant, workers, processes, on_result, keep_results
        )
    return _refresh_due(within, providers, tenant, workers, dry_run, on_result, keep_results)


def _refresh_due(
    within: timedelta,
    providers: list[str] | None,
    tenant: Any,
    workers: int,
    dry_run: bool,
    on_result: Callable[[RefreshResult], None] | None,
    keep_results: bool,
    *,
    partition: tuple[int, int] | None = None,
    now: datetime | None = None,
    lanes: int | None = None,
) -> RefreshSummary:
    now = now or timezone.now()
    summary = RefreshSummary(keep_results=keep_results)
    report_lock = threading.Lock()

    def report(result: RefreshResult) -> None:
        with report_lock:
            summary.add(result)
            if on_result is not None:
                on_result(result)

    due = due_connections(within, providers=providers, tenant=tenant, now=now)
    if partition is not None:
        index, count = partition
        due = due.alias(partition=Mod("pk", count)).filter(partition=index)
    pks = _pages(due)
    if dry_run:
        for pk in pks:
            connection = Connection.objects.get(pk=pk)
            if still_due(connection, within, now):
                report(result_for(connection, "due"))
        return summary
    if batches_supported():
        lanes = lanes_for(workers) if lanes is None else lanes
        _refresh_in_batches(pks, within, now, workers, report, lanes)
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
            result = result_for(Connection(pk=pk), "failed", f"Unexpected {type(err).__name__}.")
        report(result)

    _run_in_threads(pks, refresh_one, workers)
    return summary


def _refresh_in_processes(
    within: timedelta,
    providers: list[str] | None,
    tenant: Any,
    workers: int,
    processes: int,
    on_result: Callable[[RefreshResult], None] | None,
    keep_results: bool,
) -> RefreshSummary:
    if not batches_supported():
        raise ValueError("Refreshing in several processes needs PostgreSQL.")
    if not can_fork():
        raise ValueError("Refreshing in several processes needs a system that can fork.")
    if processes > workers:
        raise ValueError(f"{processes} processes need at least as many workers ({workers}).")
    if connections[router.db_for_write(Connection)].in_atomic_block:
        raise ValueError("Refreshing in several processes can't run inside a transaction.")
    now = timezone.now()  # one start for all: what "refreshed since the run started" means
    summary = RefreshSummary(keep_results=keep_results)
    shares = [
        workers // processes + (1 if n < workers % processes else 0) for n in range(processes)
    ]

    # The lanes (database connections) are shared out too: MAX_LANES in all (one per process
    # when there are more processes than that).
    lanes = [max(1, min(lanes_for(share), MAX_LANES // processes)) for share in shares]

    def task(index: int, send: Callable[[Any], None]) -> None:
        _refresh_due(
            within,
            providers,
            tenant,
            workers=shares[index],
            dry_run=False,
            on_result=send,
            keep_results=False,  # results go to the parent as they come
            partition=(index, processes),
            now=now,
            lanes=lanes[index],
        )

    def receive(result: RefreshResult) -> None:
        summary.add(result)
        if on_result is not None:
            on_result(result)

    run_forked(task, processes, receive)
    return summary


def refresh_these_if_due(
    pks: Sequence[int], within: timedelta, *, not_refreshed_since: datetime | None = None
) -> list[RefreshResult]:
    """:func:`refresh_one_if_due` for each of ``pks``: on PostgreSQL as one batch (one
    transaction, all the provider calls at once), elsewhere one after the other. What the
    Celery batch task runs. On PostgreSQL it raises (a ``DatabaseError``, say) only while no
    provider was asked anything; elsewhere a database error stops it at that connection. A
    retry is safe either way: what was refreshed is skipped."""
    started = not_refreshed_since or timezone.now()
    pks = list(dict.fromkeys(pks))  # each once, in order
    if not pks:
        return []
    if batches_supported():
        with ThreadPoolExecutor(len(pks), thread_name_prefix="oauth_connect-refresh") as pool:
            return refresh_batch(pks, within, started, pool)
    return [_refresh_if_due(pk, within, started) for pk in pks]


def refresh_one_if_due(
    pk: int, within: timedelta, *, not_refreshed_since: datetime | None = None
) -> RefreshResult:
    """Refresh connection ``pk`` if, under its row lock, it is still due within ``within``, not
    backing off, and not refreshed since ``not_refreshed_since`` (default: now). Never raises
    for a provider failure."""
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
        refreshed = refresh_when(connection, lambda current: still_due(current, within, started))
    except (ConnectionUnavailable, AwaitingReauthorization) as err:
        # Disconnected, deleted or marked for reauthorization since we listed it: not a failure
        # of this run. Report the row as it is (the bare instance above holds only defaults).
        return result_for(err.connection or connection, "skipped")
    except ConnectionBusy as err:
        # Another worker has held it past any refresh's deadline: it is that worker's to finish
        # (or, if stuck, the next run's to retry). Said, not counted as this run's failure.
        row = Connection.objects.filter(pk=pk).first() or connection
        return result_for(row, "skipped", err.detail)
    except OAuthConnectError as err:
        return result_for(err.connection or connection, "failed", err.detail)
    return result_for(connection, "refreshed" if refreshed else "skipped")


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


def _refresh_in_batches(
    pks: Iterator[int],
    within: timedelta,
    started: datetime,
    workers: int,
    report: Callable[[RefreshResult], None],
    lanes: int,
) -> None:
    """``workers`` provider calls at once, in ``lanes`` lanes: each takes batches of its share
    of the workers from the listing, with a pool as large as its share, so every call of a
    batch runs at once and no batch holds its locks longer than one call. The first lane runs
    on the calling thread (and its database connection), the others on threads of their own."""
    lanes = max(1, min(lanes, workers))
    shares = [workers // lanes + (1 if lane < workers % lanes else 0) for lane in range(lanes)]
    take = _Dispenser(pks)
    errors: list[BaseException] = []

    def refresh(batch: list[int], pool: ThreadPoolExecutor) -> None:
        try:
            results = refresh_batch(batch, within, started, pool)
        except Exception as err:
            # A batch the database refused before any provider was asked: nothing changed. A
            # connection that broke is replaced for the next batch.
            connections[router.db_for_write(Connection)].close_if_unusable_or_obsolete()
            for n, pk in enumerate(batch):
                logger.error(
                    "Refreshing connection #%s failed unexpectedly",
                    pk,
                    exc_info=n == 0,  # one traceback for the batch
                    extra={"event": "refresh_crashed", "connection_id": pk},
                )
            results = [
                result_for(Connection(pk=pk), "failed", f"Unexpected {type(err).__name__}.")
                for pk in batch
            ]
        for result in results:
            report(result)

    def lane(share: int) -> None:
        with ThreadPoolExecutor(share, thread_name_prefix="oauth_connect-refresh") as pool:
            try:
                while batch := take(share):
                    refresh(batch, pool)
            except BaseException as err:  # a broken stdout while reporting, a failed listing
                errors.append(err)
                take.stop()  # the other lanes finish their batch, and stop

    def other_lane(share: int) -> None:
        try:
            lane(share)
        finally:
            # This lane's database connection: close it, or it leaks per run.
            connections.close_all()

    threads = [threading.Thread(target=other_lane, args=(share,)) for share in shares[1:]]
    for thread in threads:
        thread.start()
    try:
        lane(shares[0])
    finally:
        take.stop()  # on Ctrl-C too: the others finish their batch and stop
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


class _Dispenser:
    """Hands out the listed primary keys, a batch at a time, to whichever lane asks; the lane
    that finds none left lists the next page, on its own database connection."""

    def __init__(self, items: Iterator[int]) -> None:
        self._items = items
        self._lock = threading.Lock()
        self._stopped = False

    def __call__(self, size: int) -> list[int]:
        with self._lock:
            if self._stopped:
                return []
            return list(itertools.islice(self._items, size))

    def stop(self) -> None:
        with self._lock:
            self._stopped = True


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
