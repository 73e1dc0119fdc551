"""Record a connection event: one row in the event log, one log line, one signal after commit."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from ..models import Connection, ConnectionEvent
from ..signals import BY_EVENT_KIND

logger = logging.getLogger("oauth_connect")

_LEVELS = {
    ConnectionEvent.Kind.REFRESH_FAILED: logging.WARNING,
    ConnectionEvent.Kind.REAUTH_REQUIRED: logging.WARNING,
}


def record_event(
    connection: Connection, kind: str, message: str = "", **signal_kwargs: Any
) -> ConnectionEvent:
    """Append ``kind`` to the connection's event log. ``message`` must hold no secret."""
    event = ConnectionEvent.objects.create(connection=connection, kind=kind, message=message)
    logger.log(
        _LEVELS.get(kind, logging.INFO),
        "%s: %s%s",
        connection,
        kind,
        f" ({message})" if message else "",
        extra={
            "connection_id": connection.pk,
            "provider": connection.provider,
            "tenant_id": connection.tenant_id,
            "event": kind,
        },
    )
    signal = BY_EVENT_KIND[kind]
    transaction.on_commit(
        lambda: signal.send(Connection, connection=connection, event=event, **signal_kwargs)
    )
    return event
