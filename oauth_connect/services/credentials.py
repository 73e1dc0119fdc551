"""Which OAuth client (id and secret) a tenant uses for a provider."""

from __future__ import annotations

from typing import Any

from ..exceptions import ConfigurationError
from ..models import ClientCredentials
from ..providers.base import OAuthClient, Provider


def require_oauth_client(provider: Provider, tenant_id: Any, *, issued_to: str = "") -> OAuthClient:
    """Like :func:`oauth_client_for`, for providers that always need a client."""
    oauth_client = oauth_client_for(provider, tenant_id, issued_to=issued_to)
    if oauth_client is None:
        raise ConfigurationError(
            f"{type(provider).__name__} must return True from needs_oauth_client().",
            provider=provider.provider_id,
        )
    return oauth_client


def oauth_client_for(
    provider: Provider, tenant_id: Any, *, issued_to: str = ""
) -> OAuthClient | None:
    """The tenant's own client credentials when it has them, else the settings' ones.

    ``issued_to`` is the client id an existing token set was issued to: a refresh must use that
    same client, even if the tenant has since added or removed its own credentials. Tokens
    issued to the settings' client are refreshed with it without a query, which keeps a bulk
    refresh at four queries per connection.
    """
    if not provider.needs_oauth_client():
        return None
    settings_id = provider.settings.get("CLIENT_ID") or ""
    settings_secret = provider.settings.get("CLIENT_SECRET") or ""
    if issued_to and issued_to == settings_id and settings_secret:
        return OAuthClient(settings_id, settings_secret, "settings")
    own = ClientCredentials.objects.filter(tenant_id=tenant_id, provider=provider.provider_id)
    tenant_client = own.first()
    candidates = []
    if tenant_client is not None:
        candidates.append(
            OAuthClient(tenant_client.client_id, tenant_client.client_secret, "tenant")
        )
    if settings_id and settings_secret:
        candidates.append(OAuthClient(settings_id, settings_secret, "settings"))
    if issued_to:
        for candidate in candidates:
            if candidate.client_id == issued_to:
                return candidate
    if candidates:
        return candidates[0]
    raise ConfigurationError(
        f"No OAuth client for {provider.provider_id}: set CLIENT_ID and CLIENT_SECRET in "
        f'OAUTH_CONNECT["PROVIDERS"]["{provider.provider_id}"], or add client credentials for '
        f"tenant {tenant_id} in the admin.",
        provider=provider.provider_id,
    )
