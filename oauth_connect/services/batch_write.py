"""Writing a batched refresh (``batch``): every result at once, row by row if the database
refuses that, and what is recorded when the batch's transaction is lost."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import DatabaseError, connections, transaction

from .._internal.log import logger
from .._internal.savepoint import undone_if_refused
from .._internal.update_rows import insert_rows, update_rows
from ..exceptions import OAuthConnectError, TokensNotStored
from ..models import Connection
from .batch_row import BatchRow
from .events import new_event, store_event
from .locking import locked_connection
from .results import RefreshResult, result_for
from .store import REFRESHED_FIELDS, STATUS_FIELDS, save_status, tokens_not_stored, write_refreshed

# A failure mark: the status columns and the failure count, never the tokens.
MARK_FIELDS = [*STATUS_FIELDS, "consecutive_failures"]
EVENT_FIELDS = ["connection", "kind", "message", "created_at"]


def write_batch(alias: str, rows: list[BatchRow], results: dict[int, RefreshResult]) -> None:
    """Every row's change and events in three statements (new tokens, failure marks, events);
    row by row if the database refuses them. Raises if the transaction itself is gone."""
    for row in rows:
        if row.refreshed is not None:
            pairs = row.refreshed.events()
        else:
            pairs = [row.mark] if row.mark is not None else []
        row.events = [
            (new_event(row.current, kind, note), row.signal_kwargs()) for kind, note in pairs
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


def _write_one(alias: str, row: BatchRow, results: dict[int, RefreshResult]) -> None:
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
                row.events = [(store_event(current, kind, note), row.signal_kwargs())]
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


def record_lost_batch(
    rows: list[BatchRow], err: BaseException, results: dict[int, RefreshResult]
) -> None:
    """The batch's transaction is gone (a failed COMMIT, a dropped connection, an interrupt)
    after the providers were asked. Each connection that may have got new tokens is logged
    and marked as a single refresh's would be: under its lock again, and only if no one has
    refreshed it since. The others' failures are retried by the next run."""
    for row in rows:
        current = row.current
        if row.may_have_new_tokens:
            results[current.pk] = result_for(current, "failed", record_lost(row, err).detail)
        elif row.mark is not None or row.failure is not None:
            logger.error(
                "%s: recording the refresh failed (%s)",
                current,
                type(err).__name__,
                extra={"event": "refresh_crashed", "connection_id": current.pk},
            )
            detail = row.failure.detail if row.failure is not None else ""
            results[current.pk] = result_for(current, "failed", detail)


def record_lost(row: BatchRow, err: BaseException) -> TokensNotStored:
    try:
        with locked_connection(row.current.pk) as latest:
            unchanged = latest.updated_at == row.claimed_updated_at
            return tokens_not_stored(latest, err, latest.consecutive_failures, mark=unchanged)
    except (OAuthConnectError, DatabaseError):
        # Gone, held past any refresh's deadline, or the database is down: logged, unmarked.
        return tokens_not_stored(row.current, err, row.failures_before, mark=False)


def report_unclaimed(alias: str, pks: Sequence[int], results: dict[int, RefreshResult]) -> None:
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
