"""Disconnect: revoke at the provider where it can, wipe the tokens, keep the history."""

from __future__ import annotations

import logging

from ..exceptions import OAuthConnectError
from ..models import Connection, ConnectionEvent
from ..providers.client import ProviderClient
from .credentials import oauth_client_for
from .events import record_event
from .refresh import locked_connection

logger = logging.getLogger("oauth_connect")


def disconnect(connection: Connection) -> None:
    """Revoke ``connection``'s tokens at the provider (best effort: a failure is recorded in the
    event log but doesn't stop the disconnect), then wipe them and mark it ``disconnected``.
    ``connection`` is updated in place."""
    with locked_connection(connection.pk) as current:
        note = _revoke(current)
        current.access_token = ""
        current.refresh_token = ""
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


def _revoke(connection: Connection) -> str:
    if connection.status == Connection.Status.DISCONNECTED:
        return "Already disconnected."
    try:
        provider = connection.get_provider()
        if not (connection.access_token or connection.refresh_token):
            return "No tokens to revoke."
        oauth_client = oauth_client_for(
            provider, connection.tenant_id, issued_to=connection.client_id
        )
        client = ProviderClient(provider.provider_id, connection=connection)
        if provider.revoke(client, connection, oauth_client):
            return f"Tokens revoked at {provider.display_name}."
        return f"{provider.display_name} offers no revocation; tokens wiped here."
    except OAuthConnectError as err:
        logger.warning(
            "%s: revocation failed: %s",
            connection,
            err,
            extra={"connection_id": connection.pk, "provider": connection.provider},
        )
        return f"Revocation failed ({err.detail}); tokens wiped here anyway."
