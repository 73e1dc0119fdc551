"""Revoke a connection's tokens at the provider, best effort."""

from __future__ import annotations

from typing import NamedTuple

from .._internal.log import connection_fields, logger
from ..exceptions import EncryptionKeyError, OAuthConnectError
from ..models import Connection
from ..providers.base import TokenSet
from ..providers.client import ProviderClient
from .credentials import oauth_client_for


class Revocation(NamedTuple):
    revoked: bool
    note: str  # what happened, in words for the event log


def revoke_at_provider(connection: Connection) -> Revocation:
    """Ask the provider to revoke ``connection``'s tokens, and say whether it did. Never raises
    for a provider or key failure: revocation is a courtesy that must not stop a disconnect or
    a reconnect."""
    try:
        if not (connection.access_token or connection.refresh_token):
            return Revocation(False, "No tokens to revoke.")
        provider = connection.get_provider()
        oauth_client = oauth_client_for(
            provider, connection.tenant_id, issued_to=connection.client_id
        )
        client = ProviderClient(provider.provider_id, connection=connection)
        if provider.revoke(client, connection, oauth_client):
            return Revocation(True, f"Tokens revoked at {provider.display_name}.")
        return Revocation(False, f"{provider.display_name} offers no revocation.")
    except OAuthConnectError as err:
        logger.warning(
            "%s: revocation failed: %s",
            connection,
            err.detail,
            extra=connection_fields(connection, "revocation_failed"),
        )
        return Revocation(False, f"Revocation failed ({err.detail}).")


def previous_grant(connection: Connection, replaced_by: TokenSet) -> Connection | None:
    """A detached copy of ``connection`` holding its current tokens, to revoke once
    ``replaced_by`` is stored; None when there is nothing to revoke, or when the provider may
    have handed back the same grant (same refresh token, or none at all: revoking would then
    kill the live one)."""
    if connection.status == Connection.Status.DISCONNECTED or not replaced_by.refresh_token:
        return None
    try:
        if connection.refresh_token in ("", replaced_by.refresh_token):
            return None
    except EncryptionKeyError:
        return None  # unreadable: nothing we could send to the provider anyway
    stored = connection.__dict__
    return Connection(
        pk=connection.pk,
        tenant_id=connection.tenant_id,
        provider=connection.provider,
        label=connection.label,
        client_id=connection.client_id,
        access_token=stored.get("access_token", ""),
        refresh_token=stored.get("refresh_token", ""),
    )
