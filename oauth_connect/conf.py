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
    # Seconds each socket operation of a call to a provider may take (token endpoint and API
    # alike): the wait to connect, and the wait for each next piece of the answer.
    "HTTP_TIMEOUT": 10,
    # Seconds one whole exchange with a provider may take, however slowly it answers (a refresh
    # and the login it falls back to count together). None: HTTP_TIMEOUT + 5.
    "HTTP_DEADLINE": None,
    # The largest answer read from a provider's token, login or revocation endpoint.
    "MAX_RESPONSE_BYTES": 1024 * 1024,
    # Connecting with a username and password: at most USER attempts per user and TENANT per
    # tenant in WINDOW seconds, counted in the CACHE alias. None: no limit.
    "CREDENTIAL_THROTTLE": {"USER": 5, "TENANT": 20, "WINDOW": 900, "CACHE": "default"},
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


def http_deadline() -> float:
    deadline = get("HTTP_DEADLINE")
    return http_timeout() + 5 if deadline is None else float(deadline)


#: Beyond the provider's deadline, what a worker waiting for a connection's row lock allows the
#: holder for its own database work before giving up (``ConnectionBusy``).
LOCK_WAIT_MARGIN = 5.0


def lock_wait() -> float:
    """Seconds a worker waits for a connection's row lock: the holder's provider deadline plus
    a margin for its database work."""
    return http_deadline() + LOCK_WAIT_MARGIN


def max_response_bytes() -> int:
    return int(get("MAX_RESPONSE_BYTES"))


def credential_throttle() -> dict[str, Any] | None:
    """The ``CREDENTIAL_THROTTLE`` setting over its defaults; None when throttling is off."""
    value = get("CREDENTIAL_THROTTLE")
    if value is None:
        return None
    return {**DEFAULTS["CREDENTIAL_THROTTLE"], **value}


def max_retry_delay() -> timedelta:
    return timedelta(seconds=get("RETRY_BACKOFF_MAX"))


def retry_delay(consecutive_failures: int) -> timedelta:
    """How long refresh_tokens leaves a connection alone after it failed N times in a row."""
    exponent = min(max(consecutive_failures - 1, 0), 30)
    return min(timedelta(seconds=get("RETRY_BACKOFF") * 2**exponent), max_retry_delay())
