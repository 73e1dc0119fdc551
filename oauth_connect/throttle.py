"""How often one user, and one tenant, may try to connect with a username and password.

The connect form passes what was typed to the provider and says whether it was accepted: without
a limit it is a password oracle. Attempts are counted in Django's cache
(``OAUTH_CONNECT["CREDENTIAL_THROTTLE"]``) in fixed windows of ``WINDOW`` seconds, each counter's
key naming its window, so a count never outlives it even where ``incr`` resets the expiry.
"""

from __future__ import annotations

import math
import time
from typing import Any

from django.core.cache import caches

from . import conf
from ._internal.log import logger, provider_fields


def count_credential_attempt(user_pk: Any, tenant_pk: Any, provider_id: str) -> int | None:
    """Count one attempt to connect ``provider_id`` with credentials by the user ``user_pk`` for
    the tenant ``tenant_pk``, before the provider is called (accepted or refused, it counts the
    same; the limits are across providers).

    Returns None when the attempt may go ahead, or the seconds until the window ends when the
    user's or the tenant's limit is used up. An attempt the user's own limit refuses leaves the
    tenant's count alone, so one user can't use up the tenant's attempts beyond their own."""
    limits = conf.credential_throttle()
    if limits is None:
        return None
    try:
        return _count(limits, user_pk, tenant_pk)
    except Exception:
        # The cache is down. Failing open keeps every tenant able to connect meanwhile; the
        # provider's own lockout still stands, and operators read why the limit lapsed.
        logger.exception(
            "Credential connects are not throttled: the %r cache failed",
            limits["CACHE"],
            extra=provider_fields(provider_id, "throttle_unavailable", tenant_id=tenant_pk),
        )
        return None


def _count(limits: dict[str, Any], user_pk: Any, tenant_pk: Any) -> int | None:
    window = int(limits["WINDOW"])
    now = time.time()
    index = int(now // window)
    seconds_left = max(math.ceil((index + 1) * window - now), 1)
    for scope, pk in (("user", user_pk), ("tenant", tenant_pk)):
        key = f"oauth_connect:credential_attempts:{scope}:{pk}:{index}"
        if _incremented(limits["CACHE"], key, timeout=window) > int(limits[scope.upper()]):
            return seconds_left
    return None


def _incremented(alias: str, key: str, timeout: int) -> int:
    """``key``'s count plus one. ``add`` then ``incr`` is atomic where the cache is shared
    (Redis, Memcached): two workers never both read 4 and both write 5."""
    cache = caches[alias]
    cache.add(key, 0, timeout)
    try:
        return int(cache.incr(key))
    except ValueError:  # gone between add and incr (expired, evicted): this is the first
        cache.add(key, 1, timeout)
        return 1
