"""What ``connection.session()`` and ``connection.asession()`` share: which URLs get the token,
when to refresh, and what a failed refresh means for the request in hand. Neither transport
(requests, aiohttp) appears here, so the two sessions can't drift apart on these rules."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.utils import timezone

from .. import conf
from .._internal.log import connection_fields, logger
from ..exceptions import (
    ConnectionBusy,
    ConnectionUnavailable,
    DeadlineExceeded,
    ProviderError,
    ReauthorizationRequired,
    TokensNotStored,
    UnsafeURLError,
)
from ..models import Connection
from .refresh import needs_reauth_message, refresh_connection, refresh_rejected_token
from .validation import sendable_token


class _Default:
    """Stands for "the setting in force", where ``None`` is a value callers choose (no
    deadline)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def raise_unless_usable(connection: Connection) -> None:
    """Raise at once for a connection no session can use as it stands."""
    if connection.status == Connection.Status.DISCONNECTED:
        raise ConnectionUnavailable(
            "It is disconnected. Connect it again from the Connections page.",
            connection=connection,
        )
    if connection.status == Connection.Status.REAUTH_REQUIRED:
        raise ReauthorizationRequired(needs_reauth_message(connection), connection=connection)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class SessionTokens:
    """A connection's token as a session uses it: the header to send, when to refresh it, and
    the refreshes themselves. The refresh methods touch the database: an async session runs
    them through ``sync_to_async``."""

    #: When (time.time()) to try a refresh before sending; None: no expiry known.
    _refresh_at: float | None

    def __init__(self, connection: Connection, deadline: float | None) -> None:
        self.deadline = conf.http_deadline() if deadline is DEFAULT else deadline
        self.connection = connection
        self.provider = connection.get_provider()
        base = self.provider.api_base_url(connection)
        self.base_url = base if base.endswith("/") else base + "/"
        self._origin = origin_of(self.base_url)
        self._leeway = conf.refresh_leeway()
        self._use_stored_token()

    def _refresh_due(self) -> bool:
        # A float comparison: the hot path builds no datetime (time-machine patches time.time).
        return self._refresh_at is not None and time.time() >= self._refresh_at

    def _resolve(self, url: str) -> str:
        # Relative paths are appended to the API URL (plain concatenation: the hot path).
        if "://" not in url or not urlsplit(url).scheme:
            return self.base_url + url.lstrip("/")
        if origin_of(url) != self._origin:
            raise UnsafeURLError(
                f"It only sends its token to {self._origin}; refusing "
                f"{origin_of(url)}. Use a plain HTTP client for other hosts.",
                connection=self.connection,
            )
        return url

    def _backing_off(self) -> bool:
        # After a failed refresh, hand the provider's refusal back as it is until the backoff
        # ends, instead of calling the token endpoint on every request.
        retry_at = self.connection.retry_not_before
        return retry_at is not None and retry_at > timezone.now()

    def _unsendable_while_backing_off(self) -> ProviderError:
        return ProviderError(
            "Its stored access token can't be sent in an HTTP header, and renewing it "
            f"failed ({self.connection.last_error}); the next try is after "
            f"{self.connection.retry_not_before:%Y-%m-%d %H:%M:%S %Z}.",
            connection=self.connection,
        )

    def _too_slow(self, deadline: float) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"The {self.provider.display_name} API did not finish answering within "
            f"{deadline:g} seconds, so the request was cut off. Pass deadline= for a longer "
            "request (None: no deadline).",
            connection=self.connection,
        )

    def _should_refresh_ahead(self) -> bool:
        """Whether a refresh ahead of expiry is worth the row lock now (no database here). Not
        while backing off with a token that still works, nor with nothing to refresh with."""
        expires_at = self.connection.expires_at
        still_valid = expires_at is not None and expires_at > timezone.now()
        if still_valid and self._backing_off():
            return False
        if (
            expires_at is not None
            and still_valid
            and not self.provider.can_refresh(self.connection)
        ):
            # Use the token until it expires, then let the refresh say so, instead of taking
            # the row lock on every request meanwhile.
            self._refresh_at = expires_at.timestamp()
            return False
        return True

    def _refresh_ahead_of_expiry(self) -> None:
        """Best effort while the token still works: a provider outage (or its backoff) must not
        fail requests the current token can still make. Once it has expired, failures raise."""
        expires_at = self.connection.expires_at
        still_valid = expires_at is not None and expires_at > timezone.now()
        try:
            refresh_connection(self.connection, due_within=self._leeway)
        except TokensNotStored:
            self._carry_on_unstored()
        except ReauthorizationRequired:
            raise
        except (ProviderError, ConnectionBusy) as err:
            if not still_valid:
                raise
            logger.warning(
                "%s: refresh ahead of expiry failed; using the current token meanwhile: %s",
                self.connection,
                err.detail,
                extra=connection_fields(self.connection, "early_refresh_failed"),
            )
        self._use_stored_token()

    def _refresh_rejected(self, rejected_access_token: str) -> None:
        """After the API refused ``rejected_access_token``: a new token, or the one another
        worker already got."""
        try:
            refresh_rejected_token(self.connection, rejected_access_token)
        except TokensNotStored:
            self._carry_on_unstored()
        self._use_stored_token()
        if not self._sendable:
            raise ConnectionUnavailable(
                "Its stored access token can't be sent in an HTTP header, and no new one could "
                "be had. Reconnect it from the Connections page.",
                connection=self.connection,
            )

    def _carry_on_unstored(self) -> None:
        # The new tokens exist only in this process now (already logged and marked): use them
        # rather than fail the request, which the old, rotated-away token can't make.
        logger.warning(
            "%s: using tokens that could not be stored",
            self.connection,
            extra=connection_fields(self.connection, "using_unstored_tokens"),
        )

    def _use_stored_token(self) -> None:
        self._access_token = self.connection.access_token
        expires_at: datetime | None = self.connection.expires_at
        margin = self.connection.refresh_margin(self._leeway)
        self._refresh_at = (expires_at - margin).timestamp() if expires_at is not None else None
        self._sendable = sendable_token(self._access_token)
        # Never built from a token a header can't carry: the HTTP client's error would quote it.
        self._authorization = (
            self.provider.authorization_header(self._access_token) if self._sendable else ""
        )
