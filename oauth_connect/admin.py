"""Operators' view of every connection: what needs attention, and buttons to act.

Token fields are never rendered: they are excluded from every form and list.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import smart_split, unescape_string_literal
from django.utils.timesince import timeuntil
from django.utils.translation import gettext_lazy as _

from . import services
from .exceptions import OAuthConnectError
from .models import ClientCredentials, Connection, ConnectionEvent
from .providers import registry

STATUS_COLOURS = {
    Connection.Status.ACTIVE: "#1a7f37",
    Connection.Status.ERROR: "#9a6700",
    Connection.Status.REAUTH_REQUIRED: "#cf222e",
    Connection.Status.DISCONNECTED: "#57606a",
}


class ExpiringSoonFilter(admin.SimpleListFilter):
    title = _("access token expiry")
    parameter_name = "expiring"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("day", _("Expiring within a day")), ("expired", _("Expired"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "day":
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + timedelta(days=1))
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        return queryset


def _tenant_search_fields() -> list[str]:
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

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(provider_id, provider_id) for provider_id in registry.configured_ids()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(provider=self.value())
        return queryset


class ConnectionEventInline(admin.TabularInline):
    model = ConnectionEvent
    fields = ["created_at", "kind", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-created_at", "-pk"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "tenant",
        "provider",
        "label",
        "account_name",
        "status_badge",
        "expires_in",
        "last_refreshed_at",
        "short_error",
    ]
    list_filter = ["status", ProviderFilter, ExpiringSoonFilter]
    list_select_related = ["tenant"]
    # A filtered page needn't count every connection again for "N total" (a full scan).
    show_full_result_count = False
    actions = ["refresh_now", "rotate_token", "forget_password", "disconnect"]
    inlines = [ConnectionEventInline]
    # Never the token fields: they are not in any form, list or detail page.
    fields = [
        "tenant",
        "provider",
        "label",
        "status",
        "account",
        "password_kept",
        "token_type",
        "scopes",
        "client_id",
        "expires_at",
        "refresh_expires_at",
        "last_refreshed_at",
        "consecutive_failures",
        "retry_not_before",
        "last_error",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    @admin.display(description=_("account"))
    def account_name(self, obj: Connection) -> str:
        return obj.account_description or "—"

    @admin.display(description=_("password kept"), boolean=True)
    def password_kept(self, obj: Connection) -> bool | None:
        """Whether a password is kept to renew the token; None (unknown icon) for providers
        that connect by redirect and never hold one."""
        if not obj.account:
            return None
        return obj.has_stored_credentials

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Connections are made by authorizing at the provider, never typed in.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting would leave the tokens valid at the provider and drop the event log:
        # operators use the Disconnect action, which revokes and keeps the history.
        return False

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        # Shows the search box; get_search_results below does the searching.
        return [*(f"tenant__{name}" for name in _tenant_search_fields()), "label", "provider"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Connection], search_term: str
    ) -> tuple[QuerySet[Connection], bool]:
        # Each word must match the tenant's name (or username, email, slug), the label or the
        # provider. Tenants are searched in their own (small) table first: joining every
        # connection to its tenant to compare names would scan and join 100,000 rows.
        tenant_model = Connection._meta.get_field("tenant").related_model
        for word in smart_split(search_term):
            word = unescape_string_literal(word) if word[:1] in "'\"" else word
            tenant_matches = Q()
            for name in _tenant_search_fields():
                tenant_matches |= Q(**{f"{name}__icontains": word})
            tenants = tenant_model._default_manager.filter(tenant_matches).values("pk")
            queryset = queryset.filter(
                Q(tenant__in=tenants) | Q(label__icontains=word) | Q(provider__icontains=word)
            )
        return queryset, False

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Connection) -> str:
        colour = STATUS_COLOURS.get(obj.status, "#57606a")
        return format_html(
            '<span style="color:#fff;background:{};padding:1px 6px;border-radius:8px">{}</span>',
            colour,
            obj.get_status_display(),
        )

    @admin.display(description=_("expires in"), ordering="expires_at")
    def expires_in(self, obj: Connection) -> str:
        if obj.expires_at is None:
            return "—"
        if obj.expires_at <= timezone.now():
            return str(_("expired"))
        return timeuntil(obj.expires_at)

    @admin.display(description=_("last error"))
    def short_error(self, obj: Connection) -> str:
        return obj.last_error[:80] + ("…" if len(obj.last_error) > 80 else "")

    @admin.action(description=_("Refresh now"), permissions=["change"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        done, failed = 0, 0
        for connection in queryset:
            try:
                services.refresh_connection(connection, force=True)
                done += 1
            except OAuthConnectError as err:
                failed += 1
                self.message_user(request, str(err), messages.ERROR)
        if done:
            self.message_user(request, _("Refreshed %d connection(s).") % done, messages.SUCCESS)

    @admin.action(description=_("Rotate token"), permissions=["change"])
    def rotate_token(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        done = 0
        for connection in queryset:
            try:
                services.rotate_token(connection)
                done += 1
            except OAuthConnectError as err:
                self.message_user(request, str(err), messages.ERROR)
        if done:
            self.message_user(
                request, _("Rotated the token of %d connection(s).") % done, messages.SUCCESS
            )

    @admin.action(
        description=_("Forget kept password (keep only the token)"), permissions=["change"]
    )
    def forget_password(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        count = sum(services.forget_credentials(connection) for connection in queryset)
        self.message_user(
            request,
            _(
                "Forgot the kept password of %d connection(s). When their token stops working, "
                "someone must reconnect."
            )
            % count,
            messages.SUCCESS,
        )

    @admin.action(description=_("Disconnect"), permissions=["change"])
    def disconnect(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        count = 0
        for connection in queryset:
            services.disconnect(connection)
            count += 1
        self.message_user(request, _("Disconnected %d connection(s).") % count, messages.SUCCESS)


class ClientCredentialsForm(forms.ModelForm):
    client_secret = forms.CharField(
        label=_("client secret"),
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text=_("Leave empty to keep the stored secret."),
    )

    class Meta:
        model = ClientCredentials
        fields = ["tenant", "provider", "client_id", "client_secret"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Never send the stored secret back to the browser.
        self.initial.pop("client_secret", None)
        self.fields["client_secret"].required = self.instance.pk is None

    def clean_client_secret(self) -> str:
        secret = self.cleaned_data.get("client_secret", "")
        if not secret and self.instance.pk is not None:
            return self.instance.client_secret
        return secret


@admin.register(ClientCredentials)
class ClientCredentialsAdmin(admin.ModelAdmin):
    form = ClientCredentialsForm
    list_display = ["tenant", "provider", "client_id", "updated_at"]
    list_filter = ["provider"]
    list_select_related = ["tenant"]
