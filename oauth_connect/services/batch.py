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

from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections, router, transaction

from .._internal.log import logger
from .._internal.savepoint import undone_if_refused
from ..exceptions import (
    OAuthConnectError,
    ProviderError,
    ReauthorizationRequired,
)
from ..models import IN_USE_STATUSES, Connection, ConnectionEvent
from ..providers.base import OAuthClient, Provider, TokenSet
from .batch_row import BatchRow
from .batch_write import record_lost_batch, report_unclaimed, write_batch
from .credentials import oauth_client_for, tenant_clients_for
from .due import still_due
from .events import announce_event
from .refresh import (
    ask_provider,
    checked_answer,
    refreshable_provider,
    rotated_elsewhere,
    set_reauth_required,
)
from .results import RefreshResult, result_for
from .store import (
    apply_refreshed,
    set_failed,
)

Kind = ConnectionEvent.Kind


def batches_supported(alias: str | None = None) -> bool:
    """Whether the database refreshes in batches (PostgreSQL: row locks that can skip the rows
    others hold, and a transaction that may stay open across the provider calls)."""
    connection = connections[alias or router.db_for_write(Connection)]
    return (
        connection.vendor == "postgresql" and connection.features.has_select_for_update_skip_locked
    )


def refresh_batch(
    pks: Sequence[int],
    within: timedelta,
    started: datetime,
    pool: Executor,
) -> list[RefreshResult]:
    """Refresh each of ``pks`` that is still due within ``within`` and not refreshed since
    ``started``, in one transaction; ``pool`` must run at least ``len(pks)`` calls at once.

    Returns a result per connection, in the order of ``pks``. Provider failures are results,
    never raised. Raises (a ``DatabaseError``, say) only while no provider was asked anything,
    so the caller may retry the batch; after that, a batch the database loses is recorded as
    ``TokensNotStored`` on each connection that may have got new tokens, as a single refresh
    would be.
    """
    alias = router.db_for_write(Connection)
    pks = list(dict.fromkeys(pks))  # each once, in order
    results: dict[int, RefreshResult] = {}
    rows: list[BatchRow] = []
    interrupted: BaseException | None = None
    try:
        with transaction.atomic(using=alias):
            rows = _claim(alias, pks, within, started, results)
            interrupted = _ask_all(rows, pool)
            # A row never asked (the pool ran out of threads) is left as it is, for next time.
            rows = [row for row in rows if row.asked or row.mark is not None]
            for row in rows:
                _settle_one(row, results)
            write_batch(alias, rows, results)
            if transaction.get_rollback(alias):
                # Never let atomic() roll back quietly what was reported as written.
                raise DatabaseError("The batch's transaction can't be committed.")
    except BaseException as err:
        if not any(row.asked for row in rows):
            raise
        # A database connection that broke (the usual reason) is replaced for the marks, and
        # for the batches after this one.
        connections[alias].close_if_unusable_or_obsolete()
        record_lost_batch(rows, err, results)
        if not isinstance(err, Exception):
            raise  # KeyboardInterrupt, SystemExit: recorded, and on its way
    else:
        for row in rows:
            for event, signal_kwargs in row.events:
                announce_event(event, **signal_kwargs)
        if interrupted is not None:
            raise interrupted  # once what the providers issued is stored
    report_unclaimed(alias, pks, results)
    return [results[pk] for pk in pks if pk in results]


# 1. Claim ---------------------------------------------------------------------------------------


def _claim(
    alias: str,
    pks: Sequence[int],
    within: timedelta,
    started: datetime,
    results: dict[int, RefreshResult],
) -> list[BatchRow]:
    # Only rows that may be refreshed are locked (the others are reported by
    # report_unclaimed, as they are).
    locked = Connection.objects.using(alias).select_for_update(skip_locked=True)
    rows = []
    for current in locked.filter(pk__in=pks, status__in=IN_USE_STATUSES):
        try:
            row = _claimed_row(current, within, started, results)
        except DatabaseError:
            raise  # nothing was asked yet: the caller may retry the batch
        except Exception as err:  # a provider class's bug (can_refresh, say) costs its row only
            _crashed(current, err, results)
            continue
        if row is not None:
            rows.append(row)
    asking = [row for row in rows if row.mark is None]
    try:
        prefetched: dict[tuple[Any, str], Any] | None = tenant_clients_for(
            (row.provider, row.current.tenant_id, row.current.client_id) for row in asking
        )
    except DatabaseError:
        raise  # nothing was asked yet: the caller may retry the batch
    except Exception:  # a provider class's bug: each row looks its client up (and fails) alone
        prefetched = None
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
        except DatabaseError:
            raise
        except Exception as err:
            _crashed(row.current, err, results)
            rows.remove(row)
    return rows


def _claimed_row(
    current: Connection, within: timedelta, started: datetime, results: dict[int, RefreshResult]
) -> BatchRow | None:
    """The row to refresh (or to mark: nothing to refresh with), or None with its result."""
    if not still_due(current, within, started):
        results[current.pk] = result_for(current, "skipped")
        return None
    claimed = current.updated_at, current.consecutive_failures
    try:
        provider = refreshable_provider(current, lambda _: True)
    except ReauthorizationRequired as err:
        row = BatchRow(current, current.get_provider(), *claimed)
        _mark_reauth_required(row, err)
        return row
    except OAuthConnectError as err:  # e.g. a provider no longer configured
        results[current.pk] = result_for(current, "failed", err.detail)
        return None
    if provider is None:
        results[current.pk] = result_for(current, "skipped")
        return None
    return BatchRow(current, provider, *claimed)


def _crashed(current: Connection, err: Exception, results: dict[int, RefreshResult]) -> None:
    logger.error(
        "Refreshing connection #%s failed unexpectedly",
        current.pk,
        exc_info=err,
        extra={"event": "refresh_crashed", "connection_id": current.pk},
    )
    results[current.pk] = result_for(current, "failed", f"Unexpected {type(err).__name__}.")


# 2. Ask -----------------------------------------------------------------------------------------


def _ask_all(rows: list[BatchRow], pool: Executor) -> BaseException | None:
    """Every call at once; every answer collected. An interrupt while waiting (Ctrl-C) is
    held until every answer is in, and returned, so the batch stores what the providers issued
    before it is raised: a call in flight may spend a refresh token."""
    asking: list[tuple[BatchRow, Future[TokenSet | OAuthConnectError]]] = []
    interrupted: BaseException | None = None
    try:
        for row in rows:
            if row.mark is None:
                future = pool.submit(_ask, row.provider, row.current, row.oauth_client)
                row.asked = True
                asking.append((row, future))
    except Exception:  # noqa: S110 - the pool can't start another call: the rest wait, unasked
        pass
    except BaseException as err:  # Ctrl-C: what was asked is collected and stored first
        interrupted = err
    for row, future in asking:
        while row.answer is None:
            try:
                row.answer = future.result()
            except BaseException as err:  # noqa: BLE001 - told apart below
                if future.done() and future.exception() is err:  # the call's own failure
                    row.answer = ProviderError(
                        f"The call to {row.provider.display_name} failed unexpectedly "
                        f"({type(err).__name__}).",
                        connection=row.current,
                    )
                elif interrupted is None:
                    interrupted = err  # an interrupt while waiting: wait on
    return interrupted


def _ask(
    provider: Provider, current: Connection, oauth_client: OAuthClient | None
) -> TokenSet | OAuthConnectError:
    """On a pool thread: the provider's answer or its failure, as a value. The database is
    out of bounds here: the batch holds the row's lock on another connection, so a provider
    class that wrote the row would wait for itself."""
    try:
        with _no_database():
            return ask_provider(provider, current, oauth_client)
    except OAuthConnectError as err:
        return err
    finally:
        # Refusing a query comes after connecting: don't leave this thread holding one.
        connections.close_all()


class DatabaseUseRefused(RuntimeError):
    """A provider class used the database during a batched refresh (see ``_ask``)."""


@contextmanager
def _no_database() -> Iterator[None]:
    def refuse(*args: Any) -> Any:
        raise DatabaseUseRefused(
            "A provider's refresh() must not use the database: in a batched refresh it runs "
            "on a thread of its own while the batch holds the connection's row lock."
        )

    with ExitStack() as stack:
        for alias in connections:
            stack.enter_context(connections[alias].execute_wrapper(refuse))
        yield


# Settling each answer (in memory) ----------------------------------------------------------


def _settle_one(row: BatchRow, results: dict[int, RefreshResult]) -> None:
    """:func:`_settle`; a bug of ours or a provider class's costs this row only."""
    try:
        _settle(row, results)
    except DatabaseError:
        raise  # the transaction may be gone: the whole batch is recorded as lost
    except Exception as err:
        row.refreshed = row.mark = row.failure = None  # nothing of it is written
        _crashed(row.current, err, results)


def _settle(row: BatchRow, results: dict[int, RefreshResult]) -> None:
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
        if _rotated_elsewhere(current):
            # Another deployment rotated it without our lock: its tokens are adopted.
            results[current.pk] = result_for(current, "skipped")
            return
        _mark_reauth_required(row, answer)
    elif isinstance(answer, ProviderError):
        _mark_failed(row, answer)
    elif isinstance(answer, OAuthConnectError):  # e.g. configuration: reported, not marked
        row.failure = answer
    if row.failure is None:
        results[current.pk] = result_for(current, "refreshed")
    else:
        results[current.pk] = result_for(current, "failed", row.failure.detail)


def _rotated_elsewhere(current: Connection) -> bool:
    """``refresh.rotated_elsewhere``, in a savepoint: a query the database refuses costs this
    row's check only (the grant is then taken as refused, which it was)."""
    alias = current._state.db or router.db_for_write(Connection)
    try:
        with undone_if_refused(alias):
            return rotated_elsewhere(current)
    except DatabaseError:
        if transaction.get_rollback(alias):
            raise  # the transaction is gone: the batch is recorded as lost
        return False


def _mark_failed(row: BatchRow, err: ProviderError) -> None:
    set_failed(row.current, err)
    row.mark, row.failure = (Kind.REFRESH_FAILED, err.detail), err


def _mark_reauth_required(row: BatchRow, err: ReauthorizationRequired) -> None:
    set_reauth_required(row.current, err)
    row.mark, row.failure = (Kind.REAUTH_REQUIRED, err.detail), err
