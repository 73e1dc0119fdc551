"""What oauth_connect stores: per-tenant token sets, client credentials and an event log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import conf
from .fields import EncryptedTextField

if TYPE_CHECKING:
    import requests

    from .providers.base import Provider


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    # The last refresh failed for a transient reason (network, 5xx); it will be retried.
    ERROR = "error", _("Error")
    # The provider refused the refresh token or credentials: a person must reconnect.
    REAUTH_REQUIRED = "reauth_required", _("Reauthorization required")
    DISCONNECTED = "disconnected", _("Disconnected")


#: Statuses of a token set the product uses: it has an expiry worth watching, and it is due for
#: refresh. A refused (reauth_required) or wiped (disconnected) one keeps an old, meaningless date.
IN_USE_STATUSES = (ConnectionStatus.ACTIVE, ConnectionStatus.ERROR)


class Connection(models.Model):
    """One tenant's token set for one provider. ``label`` tells several sets for one provider
    apart (e.g. "production" and "development"). Token fields read as plain strings in Python and
    are encrypted in the database."""

    Status = ConnectionStatus

    tenant = models.ForeignKey(
        conf.tenant_model_label(),
        on_delete=models.CASCADE,
        related_name="oauth_connections",
        verbose_name=_("tenant"),
    )
    provider = models.CharField(_("provider"), max_length=64)
    label = models.CharField(_("label"), max_length=100, blank=True, default="")
    status = models.CharField(
        _("status"),
        max_length=20,
        choices=ConnectionStatus.choices,
        default=ConnectionStatus.ACTIVE,
    )
    access_token = EncryptedTextField(_("access token"), blank=True, default="")
    refresh_token = EncryptedTextField(_("refresh token"), blank=True, default="")
    token_type = models.CharField(_("token type"), max_length=40, default="Bearer")
    scopes = models.TextField(_("granted scopes"), blank=True, default="")
    # Non-secret details of the account connected (username, base URL...), shown to people.
    account = models.JSONField(_("account"), default=dict, blank=True)
    # Secrets a refresh needs again (a password), as encrypted JSON; empty when not kept.
    credentials = EncryptedTextField(_("stored credentials"), blank=True, default="")
    # Which OAuth client issued these tokens: refreshes must use the same one.
    client_id = models.CharField(_("client id"), max_length=255, blank=True, default="")
    expires_at = models.DateTimeField(_("access token expires at"), null=True, blank=True)
    refresh_expires_at = models.DateTimeField(_("refresh token expires at"), null=True, blank=True)
    last_refreshed_at = models.DateTimeField(_("last refreshed at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True, default="")
    consecutive_failures = models.PositiveIntegerField(_("consecutive failures"), default=0)
    # refresh_tokens leaves a repeatedly failing connection alone until then.
    retry_not_before = models.DateTimeField(_("retry not before"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("connection")
        verbose_name_plural = _("connections")
        ordering = ["provider", "label", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "provider", "label"], name="oauth_connect_one_set_per_label"
            ),
        ]
        indexes = [
            # refresh_tokens: due connections of a status, by expiry.
            models.Index(fields=["status", "expires_at"], name="oauth_connect_due_idx"),
            models.Index(fields=["provider", "status"], name="oauth_connect_provider_idx"),
            # The admin's default order: a page of 100 without sorting every connection.
            models.Index(fields=["provider", "label", "id"], name="oauth_connect_listing_idx"),
        ]

    def __str__(self) -> str:
        label = f" ({self.label})" if self.label else ""
        return f"{self.provider_name}{label} connection #{self.pk} of tenant {self.tenant_id}"

    def __repr__(self) -> str:
        return f"<Connection #{self.pk} {self.provider!r} label={self.label!r} {self.status}>"

    def get_provider(self) -> Provider:
        """The provider this connection belongs to, configured from current settings."""
        from .providers import registry

        return registry.get(self.provider)

    @property
    def provider_name(self) -> str:
        """What users call the provider; the id when it is no longer configured, or when its
        class fails to build: ``str(connection)`` (in logs and errors) must never raise."""
        try:
            return self.get_provider().display_name
        except Exception:
            return self.provider

    @property
    def account_description(self) -> str:
        """The connected account in a few words (e.g. "alice @ acme"), from the provider."""
        from .exceptions import ConfigurationError

        try:
            return self.get_provider().describe_account(self)
        except ConfigurationError:
            return str((self.account or {}).get("username") or "")

    @property
    def has_stored_credentials(self) -> bool:
        """Whether secrets (a password) are kept; answered without decrypting them."""
        return bool(self.__dict__.get("credentials"))

    def stored_credential(self, name: str) -> str:
        """One kept secret (e.g. ``"password"``), or "" when it isn't kept."""
        if not self.credentials:
            return ""
        return str(json.loads(self.credentials).get(name) or "")

    def keep_credentials(self, secrets: dict[str, str]) -> None:
        self.credentials = json.dumps(secrets) if secrets else ""

    def refresh_margin(self, margin: timedelta) -> timedelta:
        """How long before expiry to refresh: ``margin``, but at most half the token's lifetime
        (when known), so a short-lived token isn't renewed on every use or every cron run."""
        issued, expires = self.last_refreshed_at, self.expires_at
        if issued is None or expires is None or expires <= issued:
            return margin
        return min(margin, (expires - issued) / 2)

    def refresh_due(self, margin: timedelta, now: datetime | None = None) -> bool:
        """Whether the token should be refreshed now, ``margin`` ahead of its expiry (capped by
        :meth:`refresh_margin`). False when its expiry is unknown."""
        return self.expires_within(self.refresh_margin(margin), now)

    def expires_within(self, delta: timedelta, now: datetime | None = None) -> bool:
        """Whether the access token expires within ``delta`` (False when its expiry is unknown)."""
        if self.expires_at is None:
            return False
        return self.expires_at <= (now or timezone.now()) + delta

    def session(self, **kwargs: Any) -> requests.Session:
        """A ``requests.Session`` that authenticates as this connection and keeps the token fresh.

        See :func:`oauth_connect.services.session.connection_session`.
        """
        from .services.session import connection_session

        return connection_session(self, **kwargs)

    def asession(self, **kwargs: Any) -> Any:
        """An aiohttp-based session for async code: ``await connection.asession()`` or
        ``async with connection.asession() as api``. Needs ``oauth_connect[async]``.

        See :func:`oauth_connect.services.asession.connection_asession`.
        """
        try:
            from .services.asession import connection_asession
        except ImportError as err:
            if err.name != "aiohttp":
                raise
            from .exceptions import ConfigurationError

            raise ConfigurationError(
                "connection.asession() needs aiohttp, which is not installed: "
                'pip install "oauth_connect[async]".'
            ) from err
        return connection_asession(self, **kwargs)


class ClientCredentials(models.Model):
    """A tenant's own OAuth client for a provider (e.g. an Apicbase library owner's client id and
    secret). When a tenant has none, the ``CLIENT_ID``/``CLIENT_SECRET`` settings are used."""

    tenant = models.ForeignKey(
        conf.tenant_model_label(),
        on_delete=models.CASCADE,
        related_name="oauth_client_credentials",
        verbose_name=_("tenant"),
    )
    provider = models.CharField(_("provider"), max_length=64)
    client_id = models.CharField(_("client id"), max_length=255)
    client_secret = EncryptedTextField(_("client secret"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("client credentials")
        verbose_name_plural = _("client credentials")
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "provider"], name="oauth_connect_one_client_per_provider"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} client {self.client_id} of tenant {self.tenant_id}"

    def __repr__(self) -> str:
        return f"<ClientCredentials #{self.pk} {self.provider!r} client_id={self.client_id!r}>"


class EventKind(models.TextChoices):
    CONNECTED = "connected", _("Connected")
    REFRESHED = "refreshed", _("Refreshed")
    ROTATED = "rotated", _("Token rotated")
    REFRESH_FAILED = "refresh_failed", _("Refresh failed")
    REAUTH_REQUIRED = "reauth_required", _("Reauthorization required")
    RECOVERED = "recovered", _("Recovered")
    DISCONNECTED = "disconnected", _("Disconnected")


class ConnectionEvent(models.Model):
    """Append-only history of a connection. ``message`` never holds a secret."""

    Kind = EventKind

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="events", verbose_name=_("connection")
    )
    kind = models.CharField(_("kind"), max_length=32, choices=EventKind.choices)
    message = models.TextField(_("message"), blank=True, default="")
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("connection event")
        verbose_name_plural = _("connection events")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.created_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("Connection events are append-only; record a new event instead.")
        super().save(*args, **kwargs)
