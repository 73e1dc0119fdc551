"""Every oauth_connect setting, read lazily at use time so ``override_settings`` just works.

Settings live in one dict, ``settings.OAUTH_CONNECT``, plus ``settings.OAUTH_CONNECT_TENANT_MODEL``
(the model connections belong to; default ``AUTH_USER_MODEL``). Nothing here is cached: reading a
dict key is cheap and a cache would go stale under ``override_settings``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

from .exceptions import ConfigurationError

DEFAULTS: dict[str, Any] = {
    "ENCRYPTION_KEYS": [],
    "TENANT_RESOLVER": "oauth_connect.tenants.logged_in_user",
    "PROVIDERS": {},
    "BASE_TEMPLATE": "oauth_connect/base.html",
    # How long a user may take at the provider's consent screen before the state expires.
    "STATE_TTL": 600,
    # Refresh this many seconds before the access token expires, so a request never races expiry.
    "REFRESH_LEEWAY": 300,
    # Seconds for every call we make to a provider (token endpoint and API alike).
    "HTTP_TIMEOUT": 10,
    # After N consecutive transient failures, refresh_tokens waits BASE * 2**(N-1), capped at MAX.
    "RETRY_BACKOFF": 60,
    "RETRY_BACKOFF_MAX": 6 * 3600,
}


def _section() -> dict[str, Any]:
    value = getattr(settings, "OAUTH_CONNECT", {})
    if not isinstance(value, dict):
        raise ConfigurationError("settings.OAUTH_CONNECT must be a dict.")
    return value


def get(key: str) -> Any:
    """One key of ``settings.OAUTH_CONNECT``, or its default."""
    return _section().get(key, DEFAULTS[key])


def tenant_model_label() -> str:
    """``"app_label.ModelName"`` of the model that owns connections."""
    return getattr(settings, "OAUTH_CONNECT_TENANT_MODEL", settings.AUTH_USER_MODEL)


def encryption_keys() -> list[str]:
    return list(get("ENCRYPTION_KEYS"))


def provider_settings(provider_id: str) -> dict[str, Any]:
    """The ``PROVIDERS[provider_id]`` dict (empty when the provider is not configured)."""
    return dict(get("PROVIDERS").get(provider_id) or {})


def configured_provider_ids() -> list[str]:
    return list(get("PROVIDERS"))


def refresh_leeway() -> timedelta:
    return timedelta(seconds=get("REFRESH_LEEWAY"))


def state_ttl() -> timedelta:
    return timedelta(seconds=get("STATE_TTL"))


def http_timeout() -> float:
    return float(get("HTTP_TIMEOUT"))


def max_retry_delay() -> timedelta:
    return timedelta(seconds=get("RETRY_BACKOFF_MAX"))


def retry_delay(consecutive_failures: int) -> timedelta:
    """How long refresh_tokens leaves a connection alone after it failed N times in a row."""
    exponent = min(max(consecutive_failures - 1, 0), 30)
    return min(timedelta(seconds=get("RETRY_BACKOFF") * 2**exponent), max_retry_delay())
