"""Signals for every connection event. Each is sent once the change is committed, with
``sender=Connection``, ``connection=`` the connection and ``event=`` the ``ConnectionEvent``.

``connection_refresh_failed`` also carries ``error=`` (the exception).
"""

from django.dispatch import Signal

connection_connected = Signal()
connection_refreshed = Signal()
connection_rotated = Signal()
connection_refresh_failed = Signal()
connection_reauth_required = Signal()
connection_recovered = Signal()
connection_disconnected = Signal()

BY_EVENT_KIND = {
    "connected": connection_connected,
    "refreshed": connection_refreshed,
    "rotated": connection_rotated,
    "refresh_failed": connection_refresh_failed,
    "reauth_required": connection_reauth_required,
    "recovered": connection_recovered,
    "disconnected": connection_disconnected,
}
