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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections, router, transaction

from .._internal.log import logger
from .._internal.savepoint import undone_if_refused
from .._internal.update_rows import insert_rows, update_rows
from ..exceptions import (
    OAuthConnectError,
    ProviderError,
    ReauthorizationRequired,
    TokensNotStored,
)
from ..models import IN_USE_STATUSES, Connection, ConnectionEvent
from ..providers.base import OAuthClient, Provider, TokenSet
from .credentials import oauth_client_for, tenant_clients_for
from .due import still_due
from .events import announce_event, new_event, store_event
from .locking import locked_connection
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
    # As claimed: when the row was last written, and its failure count.
    claimed_updated_at: datetime | None = None
    failures_before: int = 0
    oauth_client: OAuthClient | None = None
    asked: bool = False
    answer: TokenSet | OAuthConnectError | None = None
    # Settled: new tokens to write (with a failure, when only part of an answer was usable) ...
    refreshed: Refreshed | None = None
    # ... or a failure mark, with its event.
    mark: tuple[str, str] | None = None
    failure: OAuthConnectError | None = None
    events: list[tuple[ConnectionEvent, dict[str, Any]]] = field(default_factory=list)

    @property
    def may_have_new_tokens(self) -> bool:
        """Whether the provider may have issued tokens (spending the refresh token we hold):
        it answered with some, or it was asked and its answer never came back to us."""
        return isinstance(self.answer, TokenSet) or (self.asked and self.answer is None)


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
    rows: list[_Row] = []
    interrupted: BaseException | None = None
    try:
        with transaction.atomic(using=alias):
            rows = _claim(alias, pks, within, started, results)
            interrupted = _ask_all(rows, pool)
            # A row never asked (the pool ran out of threads) is left as it is, for next time.
            rows = [row for row in rows if row.asked or row.mark is not None]
            for row in rows:
                _settle_one(row, results)
            _write(alias, rows, results)
            if transaction.get_rollback(alias):
                # Never let atomic() roll back quietly what was reported as written.
                raise DatabaseError("The batch's transaction can't be committed.")
    except BaseException as err:
        if not any(row.asked for row in rows):
            raise
        # A database connection that broke (the usual reason) is replaced for the marks, and
        # for the batches after this one.
        connections[alias].close_if_unusable_or_obsolete()
        _lost(rows, err, results)
        if not isinstance(err, Exception):
            raise  # KeyboardInterrupt, SystemExit: recorded, and on its way
    else:
        for row in rows:
            for event, signal_kwargs in row.events:
                announce_event(event, **signal_kwargs)
        if interrupted is not None:
            raise interrupted  # once what the providers issued is stored
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
    # Only rows that may be refreshed are locked (the others are reported by
    # _report_unclaimed, as they are).
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
) -> _Row | None:
    """The row to refresh (or to mark: nothing to refresh with), or None with its result."""
    if not still_due(current, within, started):
        results[current.pk] = result_for(current, "skipped")
        return None
    claimed = current.updated_at, current.consecutive_failures
    try:
        provider = refreshable_provider(current, lambda _: True)
    except ReauthorizationRequired as err:
        row = _Row(current, current.get_provider(), *claimed)
        _mark_reauth_required(row, err)
        return row
    except OAuthConnectError as err:  # e.g. a provider no longer configured
        results[current.pk] = result_for(current, "failed", err.detail)
        return None
    if provider is None:
        results[current.pk] = result_for(current, "skipped")
        return None
    return _Row(current, provider, *claimed)


def _crashed(current: Connection, err: Exception, results: dict[int, RefreshResult]) -> None:
    logger.error(
        "Refreshing connection #%s failed unexpectedly",
        current.pk,
        exc_info=err,
        extra={"event": "refresh_crashed", "connection_id": current.pk},
    )
    results[current.pk] = result_for(current, "failed", f"Unexpected {type(err).__name__}.")


# 2. Ask -----------------------------------------------------------------------------------------


def _ask_all(rows: list[_Row], pool: Executor) -> BaseException | None:
    """Every call at once; every answer collected. An interrupt while waiting (Ctrl-C) is
    held until every answer is in, and returned, so the batch stores what the providers issued
    before it is raised: a call in flight may spend a refresh token."""
    asking: list[tuple[_Row, Future[TokenSet | OAuthConnectError]]] = []
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


def _settle_one(row: _Row, results: dict[int, RefreshResult]) -> None:
    """:func:`_settle`; a bug of ours or a provider class's costs this row only."""
    try:
        _settle(row, results)
    except DatabaseError:
        raise  # the transaction may be gone: the whole batch is recorded as lost
    except Exception as err:
        logger.exception(
            "Settling the refresh of connection #%s failed unexpectedly",
            row.current.pk,
            extra={"event": "refresh_crashed", "connection_id": row.current.pk},
        )
        row.refreshed = row.mark = None
        row.failure = None
        results[row.current.pk] = result_for(
            row.current, "failed", f"Unexpected {type(err).__name__}."
        )


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


def _mark_failed(row: _Row, err: ProviderError) -> None:
    set_failed(row.current, err)
    row.mark, row.failure = (Kind.REFRESH_FAILED, err.detail), err


def _mark_reauth_required(row: _Row, err: ReauthorizationRequired) -> None:
    set_reauth_required(row.current, err)
    row.mark, row.failure = (Kind.REAUTH_REQUIRED, err.detail), err


# 3. Write ---------------------------------------------------------------------------------------


def _signal_kwargs(row: _Row) -> dict[str, Any]:
    return {} if row.failure is None else {"error": row.failure}


def _write(alias: str, rows: list[_Row], results: dict[int, RefreshResult]) -> None:
    for row in rows:
        if row.refreshed is not None:
            pairs = row.refreshed.events()
        else:
            pairs = [row.mark] if row.mark is not None else []
        row.events = [
            (new_event(row.current, kind, note), _signal_kwargs(row)) for kind, note in pairs
        ]
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
        if transaction.get_rollback(alias) or not connections[alias].is_usable():
            raise  # the transaction is gone (the connection with it): recorded as lost
        logger.warning(
            "Writing a batch of %s refreshes failed (%s); writing them one by one",
            len(rows),
            type(err).__name__,
            extra={"event": "batch_write_refused", "connections": len(rows)},
        )
        for row in rows:
            _write_one(alias, row, results)


def _write_one(alias: str, row: _Row, results: dict[int, RefreshResult]) -> None:
    """One row of a refused batch, as a single refresh writes it: its own savepoint, tokens
    retried once and marked ``TokensNotStored`` if refused again. Announced after the
    batch's commit, like the rest."""
    current = row.current
    row.events = []
    try:
        if row.refreshed is not None:
            events = write_refreshed(row.refreshed, announce=False)
            row.events = [(event, row.refreshed.signal_kwargs()) for event in events]
        elif row.mark is not None:
            with undone_if_refused(alias):
                save_status(current, "consecutive_failures")
                kind, note = row.mark
                row.events = [(store_event(current, kind, note), _signal_kwargs(row))]
    except TokensNotStored as err:
        results[current.pk] = result_for(current, "failed", err.detail)
    except DatabaseError as err:
        if transaction.get_rollback(alias):
            raise  # the transaction is gone: the whole batch is recorded as lost
        logger.exception(
            "Recording the refresh of connection #%s failed",
            current.pk,
            extra={"event": "refresh_crashed", "connection_id": current.pk},
        )
        results[current.pk] = result_for(current, "failed", f"Unexpected {type(err).__name__}.")


def _lost(rows: list[_Row], err: BaseException, results: dict[int, RefreshResult]) -> None:
    """The batch's transaction is gone (a failed COMMIT, a dropped connection, an interrupt)
    after the providers were asked. Each connection that may have got new tokens is logged
    and marked as a single refresh's would be: under its lock again, and only if no one has
    refreshed it since. The others' failures are retried by the next run."""
    for row in rows:
        current = row.current
        if row.may_have_new_tokens:
            results[current.pk] = result_for(current, "failed", _record_lost(row, err).detail)
        elif row.mark is not None or row.failure is not None:
            logger.error(
                "%s: recording the refresh failed (%s)",
                current,
                type(err).__name__,
                extra={"event": "refresh_crashed", "connection_id": current.pk},
            )
            detail = row.failure.detail if row.failure is not None else ""
            results[current.pk] = result_for(current, "failed", detail)


def _record_lost(row: _Row, err: BaseException) -> TokensNotStored:
    try:
        with locked_connection(row.current.pk) as latest:
            unchanged = latest.updated_at == row.claimed_updated_at
            return tokens_not_stored(latest, err, latest.consecutive_failures, mark=unchanged)
    except (OAuthConnectError, DatabaseError):
        # Gone, held past any refresh's deadline, or the database is down: logged, unmarked.
        return tokens_not_stored(row.current, err, row.failures_before, mark=False)


def _report_unclaimed(alias: str, pks: Sequence[int], results: dict[int, RefreshResult]) -> None:
    """Rows the claim passed over: another worker holds them (it is refreshing them, or will
    have by the next run), they may not be refreshed now (disconnected, awaiting a person), or
    they were deleted. Read without a lock, and only when there are any."""
    missing = [pk for pk in pks if pk not in results]
    if not missing:
        return
    try:
        found = {row.pk: row for row in Connection.objects.using(alias).filter(pk__in=missing)}
    except DatabaseError:
        found = {}  # the batch is done: a report without labels beats a lost one
    for pk in missing:
        results[pk] = result_for(found.get(pk) or Connection(pk=pk), "skipped")
