"""The connection list's filters, and which tenant fields its search looks at."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..exceptions import ConfigurationError
from ..models import IN_USE_STATUSES, Connection
from ..providers import registry

IN_USE = IN_USE_STATUSES


def expiring_within_a_day(now: datetime) -> Q:
    """The filter "Expiring within a day" and the count atop the list, alike."""
    return Q(status__in=IN_USE, expires_at__gt=now, expires_at__lte=now + timedelta(days=1))


class ExpiringSoonFilter(admin.SimpleListFilter):
    title = _("access token expiry")
    parameter_name = "expiring"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("day", _("Expiring within a day")), ("expired", _("Expired"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "day":
            return queryset.filter(expiring_within_a_day(now))
        if self.value() == "expired":
            return queryset.filter(status__in=IN_USE, expires_at__lte=now)
        return queryset


def tenant_search_fields() -> list[str]:
    """The tenant model's fields people search by, whichever of these it has."""
    tenant_model = Connection._meta.get_field("tenant").related_model
    names = {field.name for field in tenant_model._meta.get_fields()}
    candidates = [getattr(tenant_model, "USERNAME_FIELD", None), "name", "email", "slug"]
    return [*dict.fromkeys(name for name in candidates if name and name in names)]


class ProviderFilter(admin.SimpleListFilter):
    """The configured providers, from settings: the default filter would ask the database for
    every distinct provider on each page view (a full scan at 100,000 connections)."""

    title = _("provider")
    parameter_name = "provider"

    NOT_CONFIGURED = "-"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            # By the name people know it by, as on the Connections page.
            *(
                (provider_id, _display_name(provider_id))
                for provider_id in registry.configured_ids()
            ),
            # Left over from a provider since removed from settings: still worth finding.
            (self.NOT_CONFIGURED, _("Not configured any more")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == self.NOT_CONFIGURED:
            return queryset.exclude(provider__in=registry.configured_ids())
        if self.value():
            return queryset.filter(provider=self.value())
        return queryset


def _display_name(provider_id: str) -> str:
    """The provider's name; its id while its settings are broken (the checks say why), so the
    list still opens."""
    try:
        return registry.get(provider_id).display_name
    except ConfigurationError:
        return provider_id
