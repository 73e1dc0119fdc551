"""What a tenant's user is told about one connection, in plain words (the Connections page).

Operators get the technical detail (``last_error``, the event log) in the admin; here a person
reads whether the connection works and, if not, what to do about it.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Any

from django.utils.translation import gettext as _

from ._internal.ago import time_ago, time_until
from .exceptions import ConfigurationError
from .models import Connection

Status = Connection.Status
_SHOWN_FIELDS = frozenset(
    {"pk", "label", "status", "account_description", "expires_at", "last_refreshed_at"}
)


class ConnectionCard:
    """One token set as shown on the Connections page."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __getattr__(self, name: str) -> Any:
        # The connection's fields a template may show. Only these: a template override must
        # not be one typo away from rendering a token or a kept password.
        if name in _SHOWN_FIELDS:
            return getattr(self.connection, name)
        raise AttributeError(f"A connection card shows no {name!r}.")

    @cached_property
    def provider_name(self) -> str:
        return self.connection.provider_name

    @cached_property
    def status_label(self) -> str:
        if self.connection.status == Status.ERROR and self.expired:
            return _("Not working: renewal failing")
        labels: dict[str, str] = {
            Status.ACTIVE: _("Connected"),
            Status.ERROR: _("Connected, renewal failing"),
            Status.REAUTH_REQUIRED: _("Needs reconnecting"),
            Status.DISCONNECTED: _("Disconnected"),
        }
        return labels.get(self.connection.status) or str(self.connection.get_status_display())

    @cached_property
    def uses_redirect(self) -> bool:
        try:
            return self.connection.get_provider().uses_redirect
        except ConfigurationError:
            return True

    @cached_property
    def reason(self) -> str:
        """Why the connection doesn't work as it should, and what to do; empty if it does."""
        name = self.provider_name
        if self.connection.status == Status.REAUTH_REQUIRED:
            if self.uses_redirect:
                return _(
                    "%(name)s no longer accepts the access you gave: it may have been withdrawn "
                    "there, or it expired. Reconnect to give access again."
                ) % {"name": name}
            return _(
                "%(name)s no longer accepts the stored login: the password may have changed, or "
                "it was not kept. Reconnect with your %(name)s login."
            ) % {"name": name}
        if self.connection.status == Status.ERROR:
            reason = _(
                "Renewing access to %(name)s failed at the last attempt (it could not be reached, "
                "or answered unexpectedly). It is retried automatically."
            ) % {"name": name}
            if self.expired:
                reason += " " + _("If it keeps failing, reconnect.")
            return reason
        return ""

    @property
    def can_reconnect(self) -> bool:
        if self.connection.status == Status.ERROR:
            return self.expired  # not working any more: the person may not want to wait
        return self.connection.status in (Status.REAUTH_REQUIRED, Status.DISCONNECTED)

    @property
    def works(self) -> bool:
        """Whether the product can use it: its expiry and last refresh are worth showing."""
        return self.connection.status in (Status.ACTIVE, Status.ERROR)

    @property
    def can_disconnect(self) -> bool:
        return self.connection.status != Status.DISCONNECTED

    @property
    def expired(self) -> bool:
        return self.connection.expires_within(timedelta(0))

    @property
    def scope_list(self) -> list[str]:
        return self.connection.scopes.split()

    @property
    def refreshed_ago(self) -> str:
        """ "just now", "5 minutes ago"; "not yet" for tokens never renewed."""
        refreshed = self.connection.last_refreshed_at
        return time_ago(refreshed) if refreshed else _("not yet")

    @property
    def token_expiry(self) -> str:
        """When the access token stops working, in words."""
        expires_at = self.connection.expires_at
        if expires_at is None:
            return _("no expiry given")
        if self.expired:
            return _("expired %(ago)s") % {"ago": time_ago(expires_at)}
        return _("expires in %(time)s") % {"time": time_until(expires_at)}
