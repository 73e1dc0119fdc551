"""Storing a new grant, and connecting providers that take credentials instead of a redirect."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from .._internal.log import connection_fields, logger, provider_fields
from ..exceptions import (
    AuthorizationError,
    ConfigurationError,
    InvalidCredentials,
    OAuthConnectError,
    ReauthorizationRequired,
    UnusableAnswer,
)
from ..models import Connection, ConnectionEvent
from ..providers import registry
from ..providers.base import Provider, TokenSet
from ..providers.client import ProviderClient
from .events import record_event
from .locking import locked_connection
from .revoke import previous_grant, revoke_at_provider
from .validation import check_tokens

#: As long as the connect form allows: what a person types, not a document.
MAX_CREDENTIAL_LENGTH = 500
# C0 controls and DEL: NUL is refused by PostgreSQL, CR/LF would end a header line, and no
# username, password or account id has any. Lone surrogates can't even be encoded.
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


@sensitive_variables()
def connect_with_credentials(
    tenant: Any,
    provider_id: str,
    label: str = "",
    *,
    keep_password: bool = True,
    **credentials: str,
) -> Connection:
    """Exchange ``credentials`` (the provider's ``credential_fields``, e.g. ``username`` and
    ``password``) for tokens and store the connection; return it.

    ``keep_password=False`` stores only the tokens: when they stop working, a person must
    reconnect. Raises ``InvalidCredentials`` (missing, unknown or refused credentials), another
    ``AuthorizationError`` (the provider failed: try again later) or ``ConfigurationError``,
    storing nothing.
    """
    provider = registry.get(provider_id)
    if provider.uses_redirect or not provider.credential_fields:
        raise ConfigurationError(
            f"{provider.display_name} connects through an authorization redirect, not with "
            "credentials.",
            provider=provider_id,
        )
    cleaned = _validated(provider, credentials)
    try:
        grant = provider.connect_with_credentials(ProviderClient(provider_id), cleaned)
        grant = replace(grant, tokens=usable_grant(provider, grant.tokens))
    except (InvalidCredentials, ConfigurationError):
        raise
    except ReauthorizationRequired as err:
        message = _("%(provider)s did not accept these credentials. Check them and try again.")
        if not all(value.isascii() for value in cleaned.values()):
            # We send them in UTF-8 (RFC 7617 §2.1); a server expecting another encoding
            # refuses characters beyond ASCII even when they are right.
            message += " " + _(
                "If they are right, the characters outside ASCII in them (such as “Ł” or "
                "“€”) may be the cause: %(provider)s may not accept them over its API."
            )
        raise InvalidCredentials(
            message % {"provider": provider.display_name}, provider=provider_id
        ) from err
    except Exception as err:
        # An outage, a hostile answer or a provider class's bug, not the tenant's typing: the
        # detail (hosts, settings) is for operators.
        logger.warning(
            "Connecting %s failed: %s",
            provider_id,
            err.detail if isinstance(err, OAuthConnectError) else type(err).__name__,
            extra=provider_fields(provider_id, "connect_failed", tenant_id=tenant.pk),
        )
        raise AuthorizationError(
            _(
                "%(provider)s could not be reached or answered unexpectedly, so nothing was "
                "connected. Please try again later."
            )
            % {"provider": provider.display_name},
            provider=provider_id,
        ) from err
    return save_grant(
        tenant,
        provider_id,
        label,
        grant.tokens,
        account=grant.account,
        credentials=grant.secrets if keep_password else {},
        note=f"Connected as {grant.account.get('username') or 'the given account'}; "
        f"password {'kept (encrypted)' if keep_password else 'not kept'}. "
        f"{grant.tokens.note}".strip(),
    )


def forget_credentials(connection: Connection) -> bool:
    """Drop the kept password (the operator's "store only the token" choice, made later).
    Returns whether there was one. The connection keeps working until its token stops."""
    with locked_connection(connection.pk) as current:
        had = current.has_stored_credentials
        if had:
            current.keep_credentials({})
            current.save(update_fields=["credentials", "updated_at"])
            logger.info(
                "%s: kept password forgotten",
                current,
                extra=connection_fields(current, "credentials_forgotten"),
            )
    connection.keep_credentials({})
    return had


def save_grant(
    tenant: Any,
    provider_id: str,
    label: str,
    tokens: TokenSet,
    *,
    client_id: str = "",
    account: dict[str, Any] | None = None,
    credentials: dict[str, str] | None = None,
    note: str = "",
) -> Connection:
    """Store a newly granted token set as the tenant's (provider, label) connection, creating it
    or replacing what it held, and revoke the grant it replaces."""
    connection, _created = Connection.objects.get_or_create(
        tenant=tenant, provider=provider_id, label=label
    )
    # Under the refresh lock, so a refresh of the grant being replaced can't write over it.
    with locked_connection(connection.pk) as current:
        replaced = previous_grant(current, replaced_by=tokens)
        current.access_token = tokens.access_token
        if tokens.refresh_token is not None:
            # None: the provider sent none this time (some re-consents don't); keep ours.
            current.refresh_token = tokens.refresh_token
        current.token_type = tokens.token_type
        current.scopes = " ".join(tokens.scopes or [])
        current.client_id = client_id
        current.account = account or {}
        current.keep_credentials(credentials or {})
        current.expires_at = tokens.expires_at
        current.refresh_expires_at = tokens.refresh_expires_at
        current.last_refreshed_at = timezone.now()
        current.status = Connection.Status.ACTIVE
        current.last_error = ""
        current.consecutive_failures = 0
        current.retry_not_before = None
        current.save()
        if replaced is not None:
            # The grant this one replaces would otherwise stay valid at the provider, out of
            # reach of any later disconnect.
            note = f"{note} Previous grant: {revoke_at_provider(replaced).note}".strip()
        record_event(current, ConnectionEvent.Kind.CONNECTED, note)
    return current


def usable_grant(provider: Provider, tokens: TokenSet) -> TokenSet:
    """``tokens`` of a new grant, checked (``validation.check_tokens``): an ``UnusableAnswer``
    when either token is unusable (nothing is stored then), else the tokens with their
    descriptive values made safe and a note saying what was replaced."""
    checked = check_tokens(tokens, provider)
    if not checked.usable:
        raise UnusableAnswer(
            f"{provider.display_name} issued tokens that can't be used: {checked.problem}. "
            "Nothing was stored.",
            provider=provider.provider_id,
        )
    return checked.noted_tokens


@sensitive_variables()
def _validated(provider: Provider, credentials: dict[str, str]) -> dict[str, str]:
    fields = {field.name: field for field in provider.credential_fields}
    unknown = sorted(set(credentials) - set(fields))
    if unknown:
        raise InvalidCredentials(
            _("%(provider)s takes %(fields)s; not %(unknown)s.")
            % {
                "provider": provider.display_name,
                "fields": ", ".join(fields),
                "unknown": ", ".join(unknown),
            },
            field=unknown[0],
            provider=provider.provider_id,
        )
    cleaned = {}
    for name, field in fields.items():
        value = str(credentials.get(name) or "")
        if not field.secret:
            value = value.strip()  # a password's spaces are part of it
        if len(value) > MAX_CREDENTIAL_LENGTH or _CONTROL.search(value):
            raise InvalidCredentials(
                _(
                    "%(field)s can't be longer than %(limit)d characters or contain control "
                    "characters."
                )
                % {"field": field.label, "limit": MAX_CREDENTIAL_LENGTH},
                field=name,
                provider=provider.provider_id,
            )
        if field.required and not value:
            raise InvalidCredentials(
                _("%(field)s is required to connect %(provider)s.")
                % {"field": field.label, "provider": provider.display_name},
                field=name,
                provider=provider.provider_id,
            )
        if value:
            cleaned[name] = value
    return cleaned
