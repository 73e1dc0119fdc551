"""Every error oauth_connect raises, under one root: ``OAuthConnectError``.

Messages are written for the person who meets them (what failed, for which connection, what to do)
and never contain a secret: they are built from our own words and the provider's ``error`` fields,
and :func:`oauth_connect._internal.redact.redact` scrubs any secret a provider echoes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from .models import Connection


class OAuthConnectError(Exception):
    """Root of every oauth_connect error. ``connection`` and ``provider`` say where it happened."""

    def __init__(
        self,
        message: str,
        *,
        connection: Connection | None = None,
        provider: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        #: What went wrong, without naming the connection (that is what ``last_error`` stores).
        self.detail = message
        self.connection = connection
        self.provider = provider or (connection.provider if connection is not None else None)

    @property
    def message(self) -> str:
        """The full message: the connection it concerns (if any), then the detail."""
        if self.connection is not None and self.connection.pk is not None:
            return f"{self.connection}: {self.detail}"
        return self.detail

    def __str__(self) -> str:
        return self.message


class ConfigurationError(OAuthConnectError, ImproperlyConfigured):
    """A setting is missing or wrong; the message names the setting to fix."""


class EncryptionKeyError(ConfigurationError):
    """A stored secret can't be decrypted with any key in ``OAUTH_CONNECT["ENCRYPTION_KEYS"]``."""


class TokensNotStored(OAuthConnectError):
    """The provider issued new tokens but the database refused to store them. With a rotating
    provider the stored refresh token is now dead: the connection is marked ``error`` (and will
    need reconnecting if the next refresh is refused). Logged at error level."""


class ConnectionUnavailable(OAuthConnectError):
    """The connection can't be used as it stands (disconnected): a person must reconnect it."""


class UnsupportedOperation(OAuthConnectError):
    """The provider (or this connection) can't do what was asked, e.g. rotate a token without a
    stored password. The message says what would make it possible."""


class ConnectionBusy(OAuthConnectError):
    """Another worker has held the connection's row lock for longer than any refresh may take
    (the provider deadline plus a margin, see ``HTTP_DEADLINE``): this worker stopped waiting.
    Nothing was changed; trying again shortly is safe."""


class UnsafeURLError(OAuthConnectError, ValueError):
    """A request through ``connection.session()`` aimed at a host other than the provider's API,
    which would hand that host the tenant's token."""


class ProviderError(OAuthConnectError, requests.HTTPError):
    """The provider failed or answered something we can't use. Transient unless a subclass says
    otherwise: the connection keeps its tokens and is retried later.

    ``status_code`` is the provider's HTTP status (None when no response arrived) and
    ``error_code`` the OAuth2 ``error`` field when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        connection: Connection | None = None,
        provider: str | None = None,
        status_code: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, connection=connection, provider=provider)
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after = retry_after


class DeadlineExceeded(ProviderError, requests.Timeout):
    """The provider took longer than ``HTTP_DEADLINE`` (or the session's ``deadline``) to answer
    in full, however steadily it dripped: the call was cut off. Transient, like any outage."""


class UnusableAnswer(ProviderError):
    """The provider answered, but with something we can't use or store: too big, not JSON, a
    token an HTTP header can't carry, a value too long for its column. ``recorded`` is True
    when the connection's failure is already stored (with whatever of the answer could be)."""

    recorded = False


class ProviderConfigurationError(ProviderError):
    """The provider rejected our client credentials (``invalid_client``): an operator must fix the
    client id/secret in settings or the tenant's client credentials. The connection is marked
    ``error`` and retried with backoff, so it recovers by itself once the client is fixed."""


class ReauthorizationRequired(ProviderError):
    """The provider refused the refresh token or stored credentials (``invalid_grant``): a person
    must reconnect. The connection's status is ``reauth_required``."""


class AwaitingReauthorization(ReauthorizationRequired):
    """The connection was already ``reauth_required``: nobody called the provider."""


class AuthorizationError(OAuthConnectError):
    """The authorization callback can't complete; the message is safe to show the user."""


class InvalidState(AuthorizationError):
    """The callback's ``state`` is missing, unknown, reused, expired, or bound to someone else."""


class AlreadyCompleted(InvalidState):
    """The callback of an authorization this session already completed came again (the
    browser's Back button, a reload): the connection is made; there is nothing to do."""


class AccessDenied(AuthorizationError):
    """The user (or the provider) declined the authorization."""


class InvalidCredentials(AuthorizationError, ValueError):
    """Connecting with credentials failed because of what was typed: missing or unknown fields,
    or the provider refused them. ``field`` names the offending field when there is one."""

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.field = field
