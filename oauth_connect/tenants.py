"""Which tenant a request acts for. ``OAUTH_CONNECT["TENANT_RESOLVER"]`` names the function."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.module_loading import import_string

from . import conf


def logged_in_user(request: HttpRequest) -> Any:
    """The default resolver: the logged-in user is the tenant (``OAUTH_CONNECT_TENANT_MODEL``
    left at ``AUTH_USER_MODEL``)."""
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def resolve_tenant(request: HttpRequest) -> Any:
    """The tenant for ``request``, or None when there is none (anonymous user, no membership)."""
    resolver = import_string(conf.get("TENANT_RESOLVER"))
    return resolver(request)
