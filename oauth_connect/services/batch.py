"""A batch of due connections refreshed in one transaction: how ``refresh_tokens`` and the Celery
batch task refresh on PostgreSQL.

1. **Claim.** ``SELECT ... FOR UPDATE SKIP LOCKED`` locks the batch's rows that nobody else
   holds (a row another run, worker or tenant request is changing is left to it) and each is
   checked, under its lock, to be still due. The tenants' own OAuth clients are read in one query.
2. **Ask.** Every provider call of the batch runs at once, on a thread pool at least as large as
   the batch, so no row stays locked much longer than one call's deadline (``HTTP_DEADLINE``).
   Those threads touch no database: the calling thread's one connection does all of it.
3. **Write.** All results in one ``executemany`` UPDATE per kind of change (new tokens; a failure
   mark), each value prepared by its field as ``save()`` would (tokens encrypted by their field),
   and all events in one INSERT. If the database refuses that, each row is written on its own
   (retried once, as a single refresh would be) while the locks are still held.
4. **Commit, then announce:** log lines and signals only for what was committed.

SQLite can't keep a write transaction open across HTTP calls: it refreshes row by row (``bulk``).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections, router, transaction

from .._internal.log import connection_fields, logger
from .._internal.savepoint import undone_if_refused
from .._internal.update_rows import insert_rows, update_rows
from ..exceptions import (
    AwaitingReauthorization,
    ConnectionUnavailable,
    OAuthConnectError,
    ProviderError,
    ReauthorizationRequired,
    TokensNotStored,
)
from ..models import Connection, ConnectionEvent
from ..providers.base import OAuthClient, Provider, TokenSet
from .credentials import oauth_client_for, tenant_clients_for
from .due import still_due
from .events import announce_event, new_event, record_event
from .refresh import (
    ask_provider,
    checked_answer,
    refreshable_provider,
    rotated_elsewhere,
    set_reauth_required,
)
from .results import RefreshResult, result_for
from .store import (
    REFRESHED_FIELDS,
    STATUS_FIELDS,
    Refreshed,
    apply_refreshed,
    save_status,
    set_failed,
    tokens_not_stored,
    write_refreshed,
)

Kind = ConnectionEvent.Kind
# A failure mark: the status columns and the failure count, never the tokens.
MARK_FIELDS = [*STATUS_FIELDS, "consecutive_failures"]
EVENT_FIELDS = ["connection", "kind", "message", "created_at"]


def batches_supported(alias: str | None = None) -> bool:
    """Whether the database refreshes in batches (PostgreSQL: row locks that can skip the rows
    others hold, and a transaction that may stay open across the provider calls)."""
    connection = connections[alias or router.db_for_write(Connection)]
    return (
        connection.vendor == "postgresql" and connection.features.has_select_for_update_skip_locked
    )


@dataclass
class _Row:
    """One claimed connection on its way through the batch."""

    current: Connection
    provider: Provider
    oauth_client: OAuthClient | None = None
    answer: TokenSet | OAuthConnectError | None = None
    # Settled: new tokens to write (with a failure, when only part of an answer was usable) ...
    refreshed: Refreshed | None = None
    # ... or a failure mark, with its event.
    mark: tuple[str, str] | None = None
    failure: OAuthConnectError | None = None
    events: list[tuple[ConnectionEvent, dict[str, Any]]] = field(default_factory=list)

    @property
    def issued_tokens(self) -> bool:
        """Whether the provider answered with tokens, spending the refresh token we hold."""
        return isinstance(self.answer, TokenSet)


def refresh_batch(
    pks: Sequence[int],
    within: timedelta,
    started: datetime,
    pool: Executor,
    *,
    turn: AbstractContextManager[Any] | None = None,
) -> list[RefreshResult]:
    """Refresh each of ``pks`` that is still due within ``within`` and not refreshed since
    ``started``, in one transaction; ``pool`` must run at least ``len(pks)`` calls at once.
    ``turn``, when given, is held from the claim until the last provider answer: batches that
    share a pool take turns at it, so a claimed row never waits for another batch's calls.

    Returns a result per connection, in the order of ``pks``. Provider failures are results,
    never raised. Raises ``DatabaseError`` only if nothing was asked of any provider yet (so
    the caller may retry the batch); after that, a batch the database loses is recorded as
    ``TokensNotStored`` on each connection that got new tokens, as a single refresh would.
    """
    alias = router.db_for_write(Connection)
    pks = list(dict.fromkeys(pks))  # each once, in order
    results: dict[int, RefreshResult] = {}
    rows: list[_Row] = []
    try:
        with transaction.atomic(using=alias):
            with turn or nullcontext():
                rows = _claim(alias, pks, within, started, results)
                _ask_all(rows, pool)
            for row in rows:
                _settle(row, results)
            _write(alias, rows, results)
    except Exception as err:
        if not any(row.answer is not None for row in rows):
            raise
        # A connection that broke (the usual reason) is replaced for the marks, and the
        # batches after this one.
        connections[alias].close_if_unusable_or_obsolete()
        _lost(rows, err, results)
    else:
        for row in rows:
            for event, signal_kwargs in row.events:
                announce_event(event, **signal_kwargs)
    _report_unclaimed(alias, pks, results)
    return [results[pk] for pk in pks if pk in results]


# 1. Claim ---------------------------------------------------------------------------------------


def _claim(
    alias: str,
    pks: Sequence[int],
    within: timedelta,
    started: datetime,
    results: dict[int, RefreshResult],
) -> list[_Row]:
    locked = Connection.objects.using(alias).select_for_update(skip_locked=True)
    rows = []
    for current in locked.filter(pk__in=pks):
        if not still_due(current, within, started):
            results[current.pk] = result_for(current, "skipped")
            continue
        try:
            provider = refreshable_provider(current, lambda _: True)
        except (ConnectionUnavailable, AwaitingReauthorization):
            # Disconnected or marked for reauthorization since it was listed: not a failure.
            results[current.pk] = result_for(current, "skipped")
            continue
        except ReauthorizationRequired as err:
            row = _Row(current, current.get_provider())
            _mark_reauth_required(row, err)
            rows.append(row)
            continue
        except OAuthConnectError as err:  # e.g. a provider no longer configured
            results[current.pk] = result_for(current, "failed", err.detail)
            continue
        if provider is None:
            results[current.pk] = result_for(current, "skipped")
            continue
        rows.append(_Row(current, provider))
    asking = [row for row in rows if row.mark is None]
    prefetched = tenant_clients_for(
        (row.provider, row.current.tenant_id, row.current.client_id) for row in asking
    )
    for row in asking:
        try:
            row.oauth_client = oauth_client_for(
                row.provider,
                row.current.tenant_id,
                issued_to=row.current.client_id,
                prefetched=prefetched,
            )
        except OAuthConnectError as err:  # no OAuth client configured: nothing to ask with
            results[row.current.pk] = result_for(row.current, "failed", err.detail)
            rows.remove(row)
    return rows


# 2. Ask -----------------------------------------------------------------------------------------


def _ask_all(rows: list[_Row], pool: Executor) -> None:
    asking = [row for row in rows if row.mark is None]
    futures = [pool.submit(_ask, row.provider, row.current, row.oauth_client) for row in asking]
    for row, future in zip(asking, futures, strict=True):
        row.answer = future.result()


def _ask(
    provider: Provider, current: Connection, oauth_client: OAuthClient | None
) -> TokenSet | OAuthConnectError:
    """On a pool thread: the provider's answer or its failure, as a value."""
    try:
        return ask_provider(provider, current, oauth_client)
    except OAuthConnectError as err:
        return err
    finally:
        # A provider class that reads the database anyway (it shouldn't) must not leave this
        # thread holding a connection; costs nothing otherwise.
        connections.close_all()


# Settling each answer (in memory) ----------------------------------------------------------


def _settle(row: _Row, results: dict[int, RefreshResult]) -> None:
    current, answer = row.current, row.answer
    if row.mark is not None:
        pass  # marked at claim time: nothing to refresh with
    elif isinstance(answer, TokenSet):
        to_store, failure = checked_answer(answer, row.provider, current)
        if to_store is not None:
            row.refreshed = apply_refreshed(current, to_store, failure=failure)
            row.failure = failure
        elif failure is not None:
            _mark_failed(row, failure)
    elif isinstance(answer, ReauthorizationRequired):
        if rotated_elsewhere(current):
            # Another deployment rotated it without our lock: its tokens are adopted.
            results[current.pk] = result_for(current, "skipped")
            return
        _mark_reauth_required(row, answer)
    elif isinstance(answer, ProviderError):
        _mark_failed(row, answer)
    else:  # another OAuthConnectError (e.g. configuration): reported, not marked
        row.failure = answer
    if row.failure is None:
        results[current.pk] = result_for(current, "refreshed")
    else:
        results[current.pk] = result_for(current, "failed", row.failure.detail)


def _mark_failed(row: _Row, err: ProviderError) -> None:
    set_failed(row.current, err)
    row.mark, row.failure = (Kind.REFRESH_FAILED, err.detail), err


def _mark_reauth_required(row: _Row, err: ReauthorizationRequired) -> None:
    set_reauth_required(row.current, err)
    row.mark, row.failure = (Kind.REAUTH_REQUIRED, err.detail), err


# 3. Write ---------------------------------------------------------------------------------------


def _write(alias: str, rows: list[_Row], results: dict[int, RefreshResult]) -> None:
    for row in rows:
        signal_kwargs = {} if row.failure is None else {"error": row.failure}
        if row.refreshed is not None:
            pairs = row.refreshed.events()
        else:
            pairs = [row.mark] if row.mark is not None else []
        row.events = [(new_event(row.current, kind, note), signal_kwargs) for kind, note in pairs]
    try:
        with undone_if_refused(alias):
            update_rows(
                [row.current for row in rows if row.refreshed], REFRESHED_FIELDS, using=alias
            )
            update_rows(
                [row.current for row in rows if row.mark is not None], MARK_FIELDS, using=alias
            )
            events = [event for row in rows for event, _ in row.events]
            insert_rows(events, EVENT_FIELDS, using=alias)
    except DatabaseError as err:
        logger.warning(
            "Writing a batch of %s refreshes failed (%s); writing them one by one",
            len(rows),
            type(err).__name__,
            extra={"event": "batch_write_refused", "connections": len(rows)},
        )
        for row in rows:
            row.events = []  # each row written below announces its own
            _write_one(alias, row, results)


def _write_one(alias: str, row: _Row, results: dict[int, RefreshResult]) -> None:
    """One row of a refused batch, as a single refresh writes it: its own savepoint, tokens
    retried once and marked ``TokensNotStored`` if refused again."""
    current = row.current
    try:
        if row.refreshed is not None:
            write_refreshed(row.refreshed)
        elif row.mark is not None:
            with undone_if_refused(alias):
                save_status(current, "consecutive_failures")
                kind, note = row.mark
                record_event(current, kind, note, error=row.failure)
    except TokensNotStored as err:
        results[current.pk] = result_for(current, "failed", err.detail)
    except DatabaseError as err:
        logger.exception(
            "Recording the refresh of connection #%s failed",
            current.pk,
            extra={"event": "refresh_crashed", "connection_id": current.pk},
        )
        results[current.pk] = result_for(current, "failed", f"Unexpected {type(err).__name__}.")


def _lost(rows: list[_Row], err: Exception, results: dict[int, RefreshResult]) -> None:
    """The batch's transaction is gone (a failed COMMIT, a dropped connection) after the
    providers were asked. Each connection that got new tokens is logged and, if the database
    takes it, marked, as a single refresh does; the others' failures are retried next run."""
    for row in rows:
        current = row.current
        if row.refreshed is None and row.mark is None and not row.issued_tokens:
            continue  # nothing to record was lost: its result stands
        if row.issued_tokens:
            before = (
                row.refreshed.failures_before
                if row.refreshed is not None
                else current.consecutive_failures
            )
            failure = tokens_not_stored(current, err, before)
            results[current.pk] = result_for(current, "failed", failure.detail)
        else:
            logger.error(
                "%s: recording the refresh failed (%s)",
                current,
                type(err).__name__,
                extra=connection_fields(current, "refresh_crashed"),
            )
            results[current.pk] = result_for(current, "failed", f"Unexpected {type(err).__name__}.")


def _report_unclaimed(alias: str, pks: Sequence[int], results: dict[int, RefreshResult]) -> None:
    """Rows the claim skipped: another worker holds them (it is refreshing them, or will have
    by the next run), or they were deleted. Read without a lock, only when there are any."""
    missing = [pk for pk in pks if pk not in results]
    if not missing:
        return
    found = {row.pk: row for row in Connection.objects.using(alias).filter(pk__in=missing)}
    for pk in missing:
        results[pk] = result_for(found.get(pk) or Connection(pk=pk), "skipped")
