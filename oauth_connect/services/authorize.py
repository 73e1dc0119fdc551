"""The OAuth2 authorization-code flow: the redirect to the provider and the callback.

Each redirect gets a fresh ``state`` stored in the user's Django session together with the
tenant, provider, label and PKCE verifier it was made for. The callback pops it (so it is
single-use, even when the callback fails), checks it, and only then exchanges the code.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.http import HttpRequest, QueryDict
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from .. import conf
from .._internal.log import logger, provider_fields
from .._internal.pkce import make_verifier, s256_challenge
from .._internal.redact import provider_words
from ..exceptions import (
    AccessDenied,
    AlreadyCompleted,
    AuthorizationError,
    ConfigurationError,
    InvalidState,
    ProviderConfigurationError,
    ProviderError,
    ReauthorizationRequired,
)
from ..models import Connection
from ..providers import registry
from ..providers.base import TokenSet
from ..providers.client import ProviderClient
from ..providers.oauth2 import OAuth2Provider
from .connect import save_grant, usable_grant
from .credentials import require_oauth_client

SESSION_KEY = "oauth_connect_pending"
# Authorizations completed in this session (a digest of each state, never the state itself):
# a callback that comes again (the browser's Back button) is recognised, not reported as an
# unknown link.
COMPLETED_KEY = "oauth_connect_completed"
MAX_COMPLETED = 10
# A user may start a few flows in parallel tabs; more than this and the oldest is dropped.
MAX_PENDING = 5
# No legitimate state or code is longer; longer values are rejected before any lookup.
MAX_PARAM_LENGTH = 2048


@dataclass
class PendingAuthorization:
    # The state and the verifier are secrets until the callback: never in a repr.
    state: str = field(repr=False)
    provider: str
    tenant: str
    label: str
    code_verifier: str = field(repr=False)
    redirect_uri: str
    next_url: str
    client_id: str
    created: float


@dataclass
class AuthorizationResult:
    connection: Connection
    next_url: str


def oauth2_provider(provider_id: str) -> OAuth2Provider:
    provider = registry.get(provider_id)
    if not isinstance(provider, OAuth2Provider):
        raise ConfigurationError(
            f"{provider.display_name} doesn't connect through an authorization redirect.",
            provider=provider_id,
        )
    return provider


@sensitive_variables()  # the PKCE verifier
def start_authorization(
    request: HttpRequest, provider_id: str, tenant: Any, *, label: str = "", next_url: str = ""
) -> str:
    """Remember a new pending authorization in the session; return the provider URL to visit."""
    provider = oauth2_provider(provider_id)
    oauth_client = require_oauth_client(provider, tenant.pk)
    redirect_uri = provider.settings.get("REDIRECT_URI") or request.build_absolute_uri(
        reverse("oauth_connect:callback", kwargs={"provider": provider_id})
    )
    pending = PendingAuthorization(
        state=secrets.token_urlsafe(32),
        provider=provider_id,
        tenant=str(tenant.pk),
        label=label,
        code_verifier=make_verifier(),
        redirect_uri=redirect_uri,
        next_url=next_url,
        client_id=oauth_client.client_id,
        created=time.time(),
    )
    stored = _live_pending(request)
    stored[pending.state] = asdict(pending)
    request.session[SESSION_KEY] = dict(list(stored.items())[-MAX_PENDING:])
    return provider.authorization_url(
        oauth_client=oauth_client,
        redirect_uri=redirect_uri,
        state=pending.state,
        code_challenge=s256_challenge(pending.code_verifier),
    )


@sensitive_variables()  # the code, the PKCE verifier and the tokens
def complete_authorization(
    request: HttpRequest, provider_id: str, tenant: Any, params: QueryDict
) -> AuthorizationResult:
    """Check the callback's state, exchange its code, and store the connection.

    Raises an ``AuthorizationError`` (safe to show the user) and stores nothing when anything
    is wrong.
    """
    state = _single(params, "state")
    pending = _pop_pending(request, state)
    if pending.provider != provider_id or pending.tenant != str(tenant.pk):
        raise InvalidState(
            _(
                "This authorization was started for another account or service. Please start "
                "again from the Connections page."
            ),
            provider=provider_id,
        )
    provider = oauth2_provider(provider_id)
    # Every parameter is checked (once, well-formed) before any of them is acted on.
    error = _single(params, "error", required=False)
    description = _single(params, "error_description", required=False)
    code = _single(params, "code", required=False)
    if error:
        raise _denied(provider, error, description)
    code = _single(params, "code")
    oauth_client = require_oauth_client(provider, tenant.pk, issued_to=pending.client_id)
    # One client, one deadline (HTTP_DEADLINE) for the exchange and the account lookup after it.
    client = ProviderClient(provider_id)
    try:
        tokens = provider.exchange_code(
            client,
            code=code,
            redirect_uri=pending.redirect_uri,
            code_verifier=pending.code_verifier,
            oauth_client=oauth_client,
        )
        tokens = usable_grant(provider, tokens)
    except ProviderError as err:
        raise _exchange_failed(provider, err) from err
    except ConfigurationError:
        raise
    except Exception as err:
        # A provider class's bug must not answer the tenant with a 500 (whose debug page
        # would show this frame's secrets): it is an exchange that failed.
        failure = ProviderError(
            f"{type(provider).__name__}.exchange_code() failed unexpectedly "
            f"({type(err).__name__}).",
            provider=provider_id,
        )
        raise _exchange_failed(provider, failure) from err
    connection = save_grant(
        tenant,
        provider_id,
        pending.label,
        tokens,
        client_id=oauth_client.client_id,
        account=_account_of(provider, client, tokens),
        note=f"Authorized with scopes: {' '.join(tokens.scopes or []) or 'none stated'}. "
        f"{tokens.note}".strip(),
    )
    completed = [*(request.session.get(COMPLETED_KEY) or []), _digest(state)]
    request.session[COMPLETED_KEY] = completed[-MAX_COMPLETED:]
    return AuthorizationResult(connection=connection, next_url=pending.next_url)


def _account_of(
    provider: OAuth2Provider, client: ProviderClient, tokens: TokenSet
) -> dict[str, Any]:
    """``provider.account_for``; nothing, if asking fails. The name is for people to read:
    a slow or broken account endpoint must not cost the tenant the grant it just gave."""
    try:
        return provider.account_for(client, tokens)
    except Exception as err:
        logger.info(
            "%s: the connected account couldn't be named (%s)",
            provider.display_name,
            type(err).__name__,
            extra=provider_fields(provider.provider_id, "account_unnamed"),
        )
        return {}


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _live_pending(request: HttpRequest) -> dict[str, dict[str, Any]]:
    stored = request.session.get(SESSION_KEY) or {}
    oldest = time.time() - conf.state_ttl().total_seconds()
    return {key: value for key, value in stored.items() if value.get("created", 0) >= oldest}


def _pop_pending(request: HttpRequest, state: str) -> PendingAuthorization:
    stored = dict(request.session.get(SESSION_KEY) or {})
    raw = stored.pop(state, None)
    request.session[SESSION_KEY] = stored
    if raw is None and _digest(state) in (request.session.get(COMPLETED_KEY) or []):
        raise AlreadyCompleted(_("This authorization is already complete."))
    if raw is None:
        raise InvalidState(
            _(
                "This authorization link is unknown or was already used. Please start again from "
                "the Connections page."
            )
        )
    pending = PendingAuthorization(**raw)
    if time.time() - pending.created > conf.state_ttl().total_seconds():
        raise InvalidState(
            _(
                "The authorization took too long and expired. Please start again from the "
                "Connections page."
            ),
            provider=pending.provider,
        )
    return pending


def _single(params: QueryDict, name: str, *, required: bool = True) -> str:
    values = params.getlist(name)
    if len(values) > 1:
        raise AuthorizationError(
            # Translators: %(name)s is an OAuth parameter, e.g. "code".
            _("The authorization response carried %(name)s more than once. Please start again.")
            % {"name": name}
        )
    value = values[0] if values else ""
    if len(value) > MAX_PARAM_LENGTH or not value.isprintable():
        raise AuthorizationError(
            # Translators: %(name)s is an OAuth parameter, e.g. "code".
            _("The authorization response carried a malformed %(name)s. Please start again.")
            % {"name": name}
        )
    if required and not value:
        if name == "state":
            raise InvalidState(
                _(
                    "The authorization response had no state. Please start again from the "
                    "Connections page."
                )
            )
        raise AuthorizationError(
            # Translators: %(name)s is an OAuth parameter, e.g. "code".
            _("The authorization response had no %(name)s. Please start again.") % {"name": name}
        )
    return value


def _exchange_failed(provider: OAuth2Provider, err: ProviderError) -> AuthorizationError:
    """What the user reads when the code exchange fails. Operator details (hosts, settings)
    go to the log, not to the page."""
    name = provider.display_name
    if isinstance(err, ReauthorizationRequired):
        # invalid_grant at this step: the code expired (Apicbase: after a minute) or was used.
        return AuthorizationError(
            _(
                "%(provider)s did not accept the authorization (it expired or was already used). "
                "Please try again."
            )
            % {"provider": name},
            provider=provider.provider_id,
        )
    level = logging.ERROR if isinstance(err, ProviderConfigurationError) else logging.WARNING
    logger.log(
        level,
        "Code exchange with %s failed: %s",
        provider.provider_id,
        err.detail,
        extra=provider_fields(provider.provider_id, "code_exchange_failed"),
    )
    if isinstance(err, ProviderConfigurationError):
        return AuthorizationError(
            _("%(provider)s can't be connected right now. Please contact support.")
            % {"provider": name},
            provider=provider.provider_id,
        )
    return AuthorizationError(
        _(
            "%(provider)s could not be reached or answered unexpectedly, so nothing was "
            "connected. Please try again later."
        )
        % {"provider": name},
        provider=provider.provider_id,
    )


def _denied(provider: OAuth2Provider, error: str, description: str) -> AuthorizationError:
    name = provider.display_name
    if error == "access_denied":
        return AccessDenied(
            _("Access to %(provider)s was declined, so nothing was connected.")
            % {"provider": name},
            provider=provider.provider_id,
        )
    error, description = provider_words(error, limit=100), provider_words(description, limit=200)
    detail = f"{error}: {description}" if description else error
    return AuthorizationError(
        # Translators: %(detail)s is the provider's own error code and description.
        _("%(provider)s reported an error (%(detail)s), so nothing was connected.")
        % {"provider": name, "detail": detail},
        provider=provider.provider_id,
    )
