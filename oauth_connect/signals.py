"""Signals for every connection event, one per ``ConnectionEvent.Kind`` (see docs/signals.md).

Each is sent once the change is committed (``transaction.on_commit``), in the thread that made
it, with ``sender=Connection`` and these keyword arguments:

- ``connection``: the ``Connection`` as stored after the change;
- ``event``: the ``ConnectionEvent`` just recorded (``kind``, ``message``, ``created_at``);
- ``error`` (``connection_refresh_failed`` and ``connection_reauth_required`` only): the
  exception that caused it. A ``ReauthorizationRequired`` for ``connection_reauth_required``; a
  ``ProviderError``, or ``TokensNotStored`` when the database refused new tokens, for
  ``connection_refresh_failed``.

``connection_connected``: new tokens stored by connecting or reconnecting.
``connection_refreshed``: a refresh stored new tokens.
``connection_rotated``: ``rotate_token`` stored a new token.
``connection_refresh_failed``: a refresh or rotation failed for a reason that may pass.
``connection_reauth_required``: the provider refused the grant; a person must reconnect.
``connection_recovered``: a refresh or rotation succeeded after failures.
``connection_disconnected``: ``disconnect`` wiped the tokens.

Receivers should accept ``**kwargs``.
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
