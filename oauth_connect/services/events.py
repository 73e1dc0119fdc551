"""Record a connection event: one row in the event log, one log line, one signal after commit."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from .._internal.log import connection_fields, logger
from .._internal.redact import printable
from ..models import Connection, ConnectionEvent
from ..signals import BY_EVENT_KIND

_LEVELS: dict[str, int] = {
    ConnectionEvent.Kind.REFRESH_FAILED: logging.WARNING,
    ConnectionEvent.Kind.REAUTH_REQUIRED: logging.WARNING,
}


def record_event(
    connection: Connection, kind: str, message: str = "", **signal_kwargs: Any
) -> ConnectionEvent:
    """Append ``kind`` to the connection's event log. ``message`` must hold no secret."""
    event = store_event(connection, kind, message)
    announce_event(event, **signal_kwargs)
    return event


def store_event(connection: Connection, kind: str, message: str = "") -> ConnectionEvent:
    """Only the row: for writes that may still be rolled back, which announce once they can't."""
    event = new_event(connection, kind, message)
    event.save()
    return event


def new_event(connection: Connection, kind: str, message: str = "") -> ConnectionEvent:
    """The row unsaved: for writes of many events at once (``_internal.update_rows``)."""
    # printable(): a provider class of the host's may quote a provider's NUL, which PostgreSQL
    # refuses; ours already pass their words through provider_words().
    return ConnectionEvent(connection=connection, kind=kind, message=printable(message))


def announce_event(event: ConnectionEvent, **signal_kwargs: Any) -> None:
    """The log line now, the signal once the transaction commits."""
    connection = event.connection
    logger.log(
        _LEVELS.get(event.kind, logging.INFO),
        "%s: %s%s",
        connection,
        event.kind,
        f" ({event.message})" if event.message else "",
        extra=connection_fields(connection, event.kind),
    )
    signal = BY_EVENT_KIND[event.kind]
    transaction.on_commit(lambda: _send(signal, event, **signal_kwargs))


def _send(signal: Signal, event: ConnectionEvent, **signal_kwargs: Any) -> None:
    """Every receiver runs even if one raises. A receiver's failure is logged, never raised: the
    change is committed by now, and the caller's refresh or API call must not fail for it.

    Our line names the receiver and the exception's type only: the receiver is the host's code,
    and its exception's text may hold anything. Django's ``django.dispatch`` logger already
    records the traceback."""
    connection = event.connection
    replies = signal.send_robust(Connection, connection=connection, event=event, **signal_kwargs)
    for receiver, reply in replies:
        if isinstance(reply, Exception):
            logger.error(
                "%s: %s, a receiver of connection_%s, raised %s",
                connection,
                getattr(receiver, "__qualname__", repr(receiver)),
                event.kind,
                type(reply).__name__,
                extra=connection_fields(connection, "signal_receiver_failed"),
            )
