"""Disconnect: revoke at the provider where it can, wipe the tokens, keep the history."""

from __future__ import annotations

from ..models import Connection, ConnectionEvent
from .events import record_event
from .locking import locked_connection
from .revoke import revoke_at_provider


def disconnect(connection: Connection) -> bool:
    """Revoke ``connection``'s tokens at the provider (best effort: a failure is recorded in the
    event log but doesn't stop the disconnect), then wipe them and mark it ``disconnected``.
    Returns whether the provider revoked them. ``connection`` is updated in place."""
    revoked = False
    with locked_connection(connection.pk) as current:
        if current.status == Connection.Status.DISCONNECTED:
            note = "Already disconnected."
        else:
            revoked, note = revoke_at_provider(current)
            if not revoked:
                note += " Tokens wiped here anyway."
        current.access_token = ""
        current.refresh_token = ""
        # A disconnected connection has no use for a kept password: don't hold on to it.
        current.keep_credentials({})
        current.expires_at = None
        current.refresh_expires_at = None
        current.status = Connection.Status.DISCONNECTED
        current.last_error = ""
        current.consecutive_failures = 0
        current.retry_not_before = None
        current.save()
        record_event(current, ConnectionEvent.Kind.DISCONNECTED, note)
    for field in Connection._meta.concrete_fields:
        setattr(connection, field.attname, getattr(current, field.attname))
    return revoked
