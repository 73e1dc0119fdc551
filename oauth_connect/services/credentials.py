"""Which OAuth client (id and secret) a tenant uses for a provider."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    provider: Provider,
    tenant_id: Any,
    *,
    issued_to: str = "",
    prefetched: Mapping[tuple[Any, str], ClientCredentials] | None = None,
) -> OAuthClient | None:
    """The tenant's own client credentials when it has them, else the settings' ones.

    ``issued_to`` is the client id an existing token set was issued to: a refresh must use that
    same client, even if the tenant has since added or removed its own credentials. Tokens
    issued to the settings' client are refreshed with it without a query. ``prefetched`` (from
    :func:`tenant_clients_for`) stands in for the query, for many connections at once.
    """
    if not provider.needs_oauth_client():
        return None
    settings_id, settings_secret = _settings_client(provider)
    if issued_to and issued_to == settings_id and settings_secret:
        return OAuthClient(settings_id, settings_secret, "settings")
    if prefetched is not None:
        tenant_client = prefetched.get((tenant_id, provider.provider_id))
    else:
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


def tenant_clients_for(
    wanted: Iterable[tuple[Provider, Any, str]],
) -> dict[tuple[Any, str], ClientCredentials]:
    """The tenants' own OAuth clients that :func:`oauth_client_for` would look up for each
    ``(provider, tenant_id, issued_to)``, in one query (none when no lookup is needed), keyed
    by ``(tenant_id, provider_id)``: for the connections of a batched refresh."""
    tenants: set[Any] = set()
    provider_ids: set[str] = set()
    for provider, tenant_id, issued_to in wanted:
        if not provider.needs_oauth_client():
            continue
        settings_id, settings_secret = _settings_client(provider)
        if not (issued_to and issued_to == settings_id and settings_secret):
            tenants.add(tenant_id)
            provider_ids.add(provider.provider_id)
    if not tenants:
        return {}
    rows = ClientCredentials.objects.filter(tenant_id__in=tenants, provider__in=provider_ids)
    # At most one per tenant and provider (a unique constraint).
    return {(row.tenant_id, row.provider): row for row in rows}


def _settings_client(provider: Provider) -> tuple[str, str]:
    return provider.settings.get("CLIENT_ID") or "", provider.settings.get("CLIENT_SECRET") or ""
