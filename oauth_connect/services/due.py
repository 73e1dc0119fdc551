"""Which connections a bulk refresh takes: listed by a query, then re-checked under the lock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from ..models import IN_USE_STATUSES, Connection


def due_connections(
    within: timedelta,
    *,
    providers: list[str] | None = None,
    tenant: Any = None,
    now: datetime | None = None,
) -> QuerySet[Connection]:
    """Connections whose access token expires within ``within`` and that can be refreshed now
    (not disconnected or awaiting reauthorization, not backing off after failures)."""
    now = now or timezone.now()
    queryset = Connection.objects.filter(
        status__in=IN_USE_STATUSES,
        expires_at__lte=now + within,
    ).filter(Q(retry_not_before__isnull=True) | Q(retry_not_before__lte=now))
    if providers:
        queryset = queryset.filter(provider__in=providers)
    if tenant is not None:
        queryset = queryset.filter(tenant=tenant)
    return queryset


def still_due(current: Connection, within: timedelta, started: datetime) -> bool:
    """Whether ``current``, as read under its lock by a run that started at ``started``, is
    still to be refreshed by that run."""
    now = timezone.now()
    backing_off = current.retry_not_before is not None and current.retry_not_before > now
    # Refreshed since this run started (by a concurrent run, cron on another host): a token
    # that lives less than `within` would otherwise look due again and be refreshed twice.
    fresh = current.last_refreshed_at is not None and current.last_refreshed_at >= started
    return current.refresh_due(within, now) and not backing_off and not fresh
