"""TeleTracker: a username and password login returning a 1-hour bearer token and a rotating
refresh token, each with its own expiry.

TeleTracker's API documentation ("Get a Bearer Token"): ``POST /auth/login`` with ``username``,
``password`` and optional ``account_id``; ``POST /auth/refresh`` with ``refresh_token`` returns
a new token AND a new refresh token (the old one then fails). Answers carry ``success``, ``token``,
``tokenExpiration``, ``tokenLifetime`` (seconds), ``refreshToken``, ``refreshTokenExpiration``.
"Compute expiry from tokenLifetime and your own clock": the vendor's clock may differ from ours.
An expired token gets 401 *or* 403.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from .._internal.redact import provider_words
from ..exceptions import ProviderError, ReauthorizationRequired
from .base import CredentialField, CredentialGrant, Provider, TokenSet, expiry_from_lifetime
from .registry import register

if TYPE_CHECKING:
    from ..models import Connection
    from .client import ProviderClient

# What the auth endpoints answer for a wrong password or a used/expired refresh token.
REFUSED = frozenset({400, 401, 403})


@register
class TeleTrackerProvider(Provider):
    id = "teletracker"
    name = "TeleTracker"
    expired_token_statuses = frozenset({401, 403})
    default_settings: ClassVar[dict[str, Any]] = {
        **Provider.default_settings,
        "API_URL": "https://api.teletracker.net/",
        "LOGIN_URL": "https://api.teletracker.net/auth/login",
        "REFRESH_URL": "https://api.teletracker.net/auth/refresh",
        "CHECK_PATH": "api/v1/vehicles",
    }
    required_settings = ("API_URL", "LOGIN_URL", "REFRESH_URL")
    credential_fields = (
        CredentialField("username", _("Username")),
        CredentialField("password", _("Password"), secret=True),
        CredentialField(
            "account_id",
            _("Account id"),
            required=False,
            help_text=_("Only if your user can access more than one account."),
        ),
    )

    @sensitive_variables()
    def connect_with_credentials(
        self, client: ProviderClient, credentials: dict[str, str]
    ) -> CredentialGrant:
        account = {"username": credentials["username"]}
        if credentials.get("account_id"):
            account["account_id"] = credentials["account_id"]
        return CredentialGrant(
            tokens=self._login(client, account, credentials["password"]),
            account=account,
            secrets={"password": credentials["password"]},
        )

    def can_refresh(self, connection: Connection) -> bool:
        return bool(connection.refresh_token) or connection.has_stored_credentials

    @sensitive_variables()
    def refresh(
        self, client: ProviderClient, connection: Connection, oauth_client: Any
    ) -> TokenSet:
        reason = "the refresh token has expired"
        refresh_expires_at = connection.refresh_expires_at
        if connection.refresh_token and (
            refresh_expires_at is None or refresh_expires_at > timezone.now()
        ):
            try:
                body = client.post_form(
                    str(self.setting("REFRESH_URL")),
                    {"refresh_token": connection.refresh_token},
                    refused=REFUSED,
                )
                return self._tokens(body, secrets=[connection.refresh_token])
            except ReauthorizationRequired as err:
                reason = f"the refresh token was refused ({err.detail})"
        password = connection.stored_credential("password")
        if not password:
            raise ReauthorizationRequired(
                f"TeleTracker: {reason}, and no password is kept to log in again. Someone must "
                "reconnect.",
                connection=connection,
            )
        tokens = self._login(client, connection.account, password)
        return replace(tokens, note=f"Logged in again with the kept password: {reason}.")

    # Helpers ----------------------------------------------------------------------------------

    @sensitive_variables()
    def _login(self, client: ProviderClient, account: dict[str, Any], password: str) -> TokenSet:
        data = {"username": str(account.get("username", "")), "password": password}
        if account.get("account_id"):
            data["account_id"] = str(account["account_id"])
        body = client.post_form(
            str(self.setting("LOGIN_URL")), data, what="login endpoint", refused=REFUSED
        )
        return self._tokens(body, secrets=[password])

    @sensitive_variables()
    def _tokens(self, body: dict[str, Any], secrets: list[str]) -> TokenSet:
        success = body.get("success")
        token, refresh_token = body.get("token"), body.get("refreshToken")
        sent_tokens = any(isinstance(value, str) and value for value in (token, refresh_token))
        if success is False or (success is not True and not sent_tokens):
            # The vendor's own words may echo what we sent: provider_words scrubs them (and
            # bounds them) before they reach an error, the event log or a page.
            message = provider_words(body.get("message"), secrets, limit=200)
            said = f" ({message})" if message else ""
            raise ProviderError(
                f"TeleTracker answered success: {_shown(success, secrets)}{said}.",
                provider=self.provider_id,
            )
        if not sent_tokens:
            raise ProviderError(
                "TeleTracker answered without a token or a refreshToken.",
                provider=self.provider_id,
            )
        expires_at = expiry_from_lifetime(body.get("tokenLifetime"))
        # Each answer rotates both (the old refresh token is spent by now): one that is missing
        # or not a string becomes "", which the service layer's check refuses while storing
        # the other one.
        return TokenSet(
            access_token=token if isinstance(token, str) else "",
            refresh_token=refresh_token if isinstance(refresh_token, str) else "",
            expires_at=expires_at,
            refresh_expires_at=_refresh_expiry(body, expires_at),
            note=(
                ""
                if success is True
                else f"TeleTracker answered success: {_shown(success, secrets)}, with tokens."
            ),
        )


def _shown(success: Any, secrets: list[str]) -> str:
    if success is None or isinstance(success, bool):
        return repr(success)
    return repr(provider_words(success, secrets, limit=40))


def _refresh_expiry(body: dict[str, Any], expires_at: datetime | None) -> datetime | None:
    """When the refresh token expires, on our clock. Both expirations are on the vendor's clock,
    so their difference is true whatever its skew: add it to our own token expiry."""
    token_expiration = _parse(body.get("tokenExpiration"))
    refresh_expiration = _parse(body.get("refreshTokenExpiration"))
    if refresh_expiration is None:
        return None
    if token_expiration is not None and expires_at is not None:
        try:
            return expires_at + (refresh_expiration - token_expiration)
        except OverflowError:
            # Dates millennia apart: nonsense, but the tokens must still be stored (the old
            # refresh token is spent), so the expiry is just unknown.
            return None
    return refresh_expiration


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None or timezone.is_naive(parsed):
        return None
    return parsed
