"""Operators' view of every connection: what needs attention, and buttons to act.

Token fields are never rendered: they are excluded from every form and list.

- ``connections``: the connection list (counts, badges, filters, search, bulk actions).
- ``buttons``: the buttons on a connection's page (Refresh now, Test connection, Rotate
  token, Disconnect).
- ``filters``: the list's filters and the tenant search.
- ``credentials``: tenants' own OAuth client credentials.
"""

from .connections import ConnectionAdmin
from .credentials import ClientCredentialsAdmin

__all__ = ["ClientCredentialsAdmin", "ConnectionAdmin"]
