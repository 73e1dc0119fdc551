"""Store what a refresh or rotation got: the tokens and their events in one write, retried
once, and never lost silently: a write the database refuses is logged and marked.

Called with the connection's row lock held (see ``locking``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from .. import conf
from .._internal.log import connection_fields, logger
from .._internal.redact import printable
from .._internal.savepoint import undone_if_refused
from ..exceptions import ConnectionUnavailable, ProviderError, TokensNotStored
from ..models import Connection, ConnectionEvent
from ..providers.base import TokenSet
from .events import announce_event, record_event, store_event

Status = Connection.Status
Kind = ConnectionEvent.Kind


def store_refreshed(
    current: Connection,
    tokens: TokenSet,
    kind: str = ConnectionEvent.Kind.REFRESHED,
    *,
    failure: ProviderError | None = None,
) -> None:
    """Store ``tokens`` over ``current``'s, with a ``kind`` event; or, with ``failure``, store
    the part of an unusable answer worth keeping (see ``validation.CheckedTokens.salvage``)
    and mark the connection failed, in the same write."""
    write_refreshed(apply_refreshed(current, tokens, kind, failure=failure))


@dataclass
class Refreshed:
    """Tokens applied to a connection in memory, not yet written: what ``write_refreshed``
    writes for one row, and the batched refresh (``services.batch``) for many at once."""

    current: Connection
    kind: str
    note: str
    recovered: bool
    failures_before: int
    failure: ProviderError | None

    def events(self) -> list[tuple[str, str]]:
        """The events to append: (kind, message) pairs."""
        events = [(self.kind, self.note)]
        if self.recovered:
            events.append((Kind.RECOVERED, "Refreshed after earlier failures."))
        return events

    def signal_kwargs(self) -> dict[str, Any]:
        return {} if self.failure is None else {"error": self.failure}


def apply_refreshed(
    current: Connection,
    tokens: TokenSet,
    kind: str = ConnectionEvent.Kind.REFRESHED,
    *,
    failure: ProviderError | None = None,
) -> Refreshed:
    """Put ``tokens`` (and, with ``failure``, the failure mark) on ``current`` in memory."""
    now = timezone.now()
    recovered = failure is None and (
        current.consecutive_failures > 0 or current.status == Status.ERROR
    )
    if failure is None or tokens.access_token != current.access_token:
        current.last_refreshed_at = now
    current.access_token = tokens.access_token
    if tokens.refresh_token is not None:
        # A rotating provider has just invalidated the old refresh token: it must be replaced
        # in the same transaction as the access token, along with its expiry (the old one's
        # date says nothing about the new token; None means unknown, so it is always tried).
        current.refresh_token = tokens.refresh_token
        current.refresh_expires_at = tokens.refresh_expires_at
    if tokens.scopes is not None:
        current.scopes = " ".join(tokens.scopes)
    current.token_type = tokens.token_type
    current.expires_at = tokens.expires_at
    failures_before = current.consecutive_failures
    note = tokens.note
    if failure is None:
        current.status = Status.ACTIVE
        current.last_error = ""
        current.consecutive_failures = 0
        current.retry_not_before = None
    else:
        set_failed(current, failure)
        kind, note = Kind.REFRESH_FAILED, failure.detail
    return Refreshed(current, kind, note, recovered, failures_before, failure)


def write_refreshed(applied: Refreshed, *, announce: bool = True) -> list[ConnectionEvent]:
    """Write one row's applied tokens and their events, retried once; a write the database
    refuses twice is logged, marked, and raised as ``TokensNotStored``. Returns the events
    written; with ``announce=False`` the caller announces them (after its own commit)."""
    current = applied.current
    try:
        return _write_tokens(applied, announce)
    except DatabaseError as refused:
        try:
            _unless_deleted(current)
        except DatabaseError as err:  # the database is gone altogether
            raise tokens_not_stored(current, err, applied.failures_before) from refused
        try:
            # Once more: many write failures are momentary (a deadlock victim, a failover).
            return _write_tokens(applied, announce)
        except DatabaseError as err:
            raise tokens_not_stored(current, err, applied.failures_before) from err


def set_failed(current: Connection, err: ProviderError) -> None:
    """Mark ``current`` (in memory) as failed for a transient reason, backing off."""
    current.consecutive_failures += 1
    delay = conf.retry_delay(current.consecutive_failures)
    if err.retry_after is not None:
        # Honour the provider's Retry-After, but never park a connection longer than the cap
        # (capped as a number first: a timedelta of 10**20 seconds overflows).
        cap = conf.max_retry_delay()
        delay = max(delay, timedelta(seconds=min(err.retry_after, cap.total_seconds())))
    current.status = Status.ERROR
    current.last_error = printable(err.detail)
    current.retry_not_before = timezone.now() + delay


def _unless_deleted(current: Connection) -> None:
    """A row deleted meanwhile (possible on SQLite, which has no row lock) is not a storage
    failure: the connection is gone, and must not come back with fresh tokens."""
    if not Connection.objects.using(current._state.db).filter(pk=current.pk).exists():
        raise ConnectionUnavailable(
            f"Connection #{current.pk} was deleted while it was being refreshed; nothing stored."
        )


def _write_tokens(applied: Refreshed, announce: bool) -> list[ConnectionEvent]:
    """The tokens and their events, all or nothing. Announced (log line, signal) only once
    written, so a write that is rolled back and retried announces once."""
    current = applied.current
    alias = current._state.db
    connection = transaction.get_connection(alias)
    if not connection.in_atomic_block:
        # No row lock's transaction around us (SQLite): a short one of our own.
        with transaction.atomic(using=alias):
            events = _write_tokens_and_events(applied)
    else:
        # Inside the row lock's transaction: a refused write must leave it usable for the
        # retry and the failure mark.
        with undone_if_refused(alias):
            events = _write_tokens_and_events(applied)
    if announce:
        for event in events:
            announce_event(event, **applied.signal_kwargs())
    return events


# What a refresh changes; saving only these keeps the UPDATE small (and leaves the rest of the
# row, e.g. the tenant's kept password, exactly as stored).
REFRESHED_FIELDS = [
    "access_token",
    "refresh_token",
    "refresh_expires_at",
    "scopes",
    "token_type",
    "expires_at",
    "last_refreshed_at",
    "status",
    "last_error",
    "consecutive_failures",
    "retry_not_before",
    "updated_at",
]


# What a failure mark changes (``save_status``); the tokens stay exactly as stored.
STATUS_FIELDS = ["status", "last_error", "retry_not_before", "updated_at"]


def _write_tokens_and_events(applied: Refreshed) -> list[ConnectionEvent]:
    applied.current.save(update_fields=REFRESHED_FIELDS)
    return [store_event(applied.current, kind, note) for kind, note in applied.events()]


def tokens_not_stored(
    current: Connection, err: BaseException, failures_before: int, *, mark: bool = True
) -> TokensNotStored:
    """The provider rotated, we couldn't store the result: never let that pass quietly. Log it
    (the error's type only: database messages can quote row values), and mark the connection
    for operators if the database takes that much (and ``mark`` says the row is still the one
    the provider answered for)."""
    detail = (
        f"The provider issued new tokens, but storing them failed ({type(err).__name__}). The "
        "stored refresh token may no longer work: if the next refresh is refused, reconnect."
    )
    logger.error(
        "%s: %s",
        current,
        detail,
        extra=connection_fields(current, "not_stored"),
    )
    failure = TokensNotStored(detail, connection=current)
    if not mark:
        return failure
    try:
        with transaction.atomic(using=current._state.db):
            current.status = Status.ERROR
            current.last_error = detail
            current.consecutive_failures = failures_before + 1
            current.retry_not_before = None
            save_status(current, "consecutive_failures")
            record_event(current, Kind.REFRESH_FAILED, detail, error=failure)
    except DatabaseError:
        logger.error(
            "%s: could not mark the connection either",
            current,
            extra=connection_fields(current, "not_stored_not_marked"),
        )
    return failure


def save_status(current: Connection, *extra_fields: str) -> None:
    # Only status columns: the tokens we hold stay exactly as stored.
    fields = [*STATUS_FIELDS, *extra_fields]
    current.save(update_fields=fields)
