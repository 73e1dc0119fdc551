"""The ``oauth_connect`` logger and the structured fields every one of its lines carries.

Each record has ``event`` (a stable name to filter or alert on) and, but for the lines about
many connections at once (and the deadline watchdog's), ``provider``; lines about one
connection add ``connection_id`` and ``tenant_id`` (docs/signals.md lists every event and its
fields). The message and the fields never hold a token, password or client secret: callers pass
``ProviderError.detail``, which is redacted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models import Connection

logger = logging.getLogger("oauth_connect")


def connection_fields(connection: Connection, event: str) -> dict[str, Any]:
    """``extra=`` for a line about one connection."""
    return {
        "event": event,
        "provider": connection.provider,
        "connection_id": connection.pk,
        "tenant_id": connection.tenant_id,
    }


def provider_fields(provider_id: str, event: str, **fields: Any) -> dict[str, Any]:
    """``extra=`` for a line about a provider before any connection exists (connect, callback)."""
    return {"event": event, "provider": provider_id, **fields}
