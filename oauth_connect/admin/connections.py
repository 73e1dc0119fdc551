"""The connection list: what needs attention first, then each connection's state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator, smart_split, unescape_string_literal
from django.utils.timezone import localtime
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import services
from .._internal.ago import time_ago, time_until
from ..exceptions import ConfigurationError, OAuthConnectError
from ..models import Connection
from .buttons import ConnectionButtons, refresh_outcome
from .filters import (
    IN_USE,
    ExpiringSoonFilter,
    ProviderFilter,
    expiring_within_a_day,
    tenant_search_fields,
)

STATUS_COLOURS: dict[str, str] = {
    Connection.Status.ACTIVE: "#1a7f37",
    Connection.Status.ERROR: "#9a6700",
    Connection.Status.REAUTH_REQUIRED: "#cf222e",
    Connection.Status.DISCONNECTED: "#57606a",
}


# A connection refreshed hourly logs hundreds of events a month: its page shows the latest.
EVENTS_SHOWN = 50


@admin.register(Connection)
class ConnectionAdmin(ConnectionButtons):
    # Short columns: at 1280 pixels the list fits without scrolling sideways.
    list_display = [
        "number",
        "tenant",
        "provider_name",
        "label",
        "account_name",
        "status_badge",
        "expires_in",
        "refreshed",
        "short_error",
    ]
    list_filter = ["status", ProviderFilter, ExpiringSoonFilter]
    empty_value_display = "—"  # as the columns computed here say "nothing"
    list_select_related = ["tenant"]
    # A filtered page needn't count every connection again for "N total" (a full scan).
    show_full_result_count = False
    actions = ["refresh_now", "rotate_token", "forget_password", "disconnect"]
    # Never the token fields: they are not in any form, list or detail page.
    fields = readonly_fields = (
        "tenant",
        "provider_name",
        "label",
        "status",
        "account_details",
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
        "event_log",
    )

    @admin.display(description=_("event log"))
    def event_log(self, obj: Connection) -> str:
        """The latest events, newest first, as a table (read-only, bounded: an inline formset
        of every event made a busy connection's page megabytes long)."""
        events = list(obj.events.order_by("-created_at", "-pk")[: EVENTS_SHOWN + 1])
        if not events:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    date_format(localtime(event.created_at), "DATETIME_FORMAT"),
                    event.get_kind_display(),
                    event.message,
                )
                for event in events[:EVENTS_SHOWN]
            ),
        )
        more = ""
        if len(events) > EVENTS_SHOWN:
            more = format_html(
                "<p>{}</p>",
                _("The latest %(shown)d events; %(total)d in all.")
                % {"shown": EVENTS_SHOWN, "total": obj.events.count()},
            )
        return format_html(
            '<table class="oc-events"><thead><tr><th scope="col">{}</th><th scope="col">{}</th>'
            '<th scope="col">{}</th></tr></thead><tbody>{}</tbody></table>{}',
            _("when"),
            _("event"),
            _("message"),
            rows,
            more,
        )

    @admin.display(description="#", ordering="pk")
    def number(self, obj: Connection) -> str:
        return f"#{obj.pk}"

    @admin.display(description=_("last refreshed"), ordering="last_refreshed_at")
    def refreshed(self, obj: Connection) -> str:
        """How long ago, in words (the exact time is on the connection's page): a date and
        time in full would widen the list past a laptop's screen."""
        if obj.last_refreshed_at is None:
            return "—"
        return format_html(
            '<span title="{}">{}</span>',
            date_format(localtime(obj.last_refreshed_at), "DATETIME_FORMAT"),
            time_ago(obj.last_refreshed_at),
        )

    @admin.display(description=_("provider"), ordering="provider")
    def provider_name(self, obj: Connection) -> str:
        """As the Connections page spells it ("TeleTracker"), not the settings key."""
        return obj.provider_name

    @admin.display(description=_("account"))
    def account_name(self, obj: Connection) -> str:
        """The account in words ("alice @ acme"), as the provider describes it, never the
        stored JSON."""
        return obj.account_description or "—"

    @admin.display(description=_("account"))
    def account_details(self, obj: Connection) -> str:
        """The account in words, then what else the provider told about it (a base URL, say),
        one "name: value" each: never the stored JSON. Nothing secret is kept there."""
        described = self.account_name(obj)
        details = format_html_join(
            ", ",
            "{}: {}",
            (
                (str(key).replace("_", " "), value)
                for key, value in (obj.account or {}).items()
                # Not what the description already says ("alice @ acme").
                if isinstance(value, str | int)
                and not isinstance(value, bool)
                and str(value) not in described
            ),
        )
        if not details:
            return described
        return format_html("{}<br><small>{}</small>", described, details)

    @admin.display(description=_("password kept"))
    def password_kept(self, obj: Connection) -> str:
        """Whether a password is kept to renew the token; providers that connect by redirect
        never hold one."""
        try:
            by_redirect = obj.get_provider().uses_redirect
        except ConfigurationError:  # no longer configured: say what is stored
            by_redirect = False
        if by_redirect:
            return str(_("not used: connects by redirect"))
        return str(_("yes") if obj.has_stored_credentials else _("no"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Connections are made by authorizing at the provider, never typed in.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting would leave the tokens valid at the provider and drop the event log:
        # operators use the Disconnect action, which revokes and keeps the history.
        return False

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        # Shows the search box; get_search_results below does the searching.
        return [*(f"tenant__{name}" for name in tenant_search_fields()), "label", "provider"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Connection], search_term: str
    ) -> tuple[QuerySet[Connection], bool]:
        # Each word must match the tenant's name (or username, email, slug), the label or the
        # provider. Tenants are searched in their own (small) table first: joining every
        # connection to its tenant to compare names would scan and join 100,000 rows.
        tenant_model = Connection._meta.get_field("tenant").related_model
        name_fields = tenant_search_fields()
        for word in smart_split(search_term):
            if word[:1] in ("'", '"') and len(word) > 1 and word[0] == word[-1]:
                word = unescape_string_literal(word)  # a quoted phrase, as Django's search
            if not word:
                continue
            matches = Q(label__icontains=word) | Q(provider__icontains=word)
            if name_fields:
                tenant_matches = Q()
                for name in name_fields:
                    tenant_matches |= Q(**{f"{name}__icontains": word})
                # The base manager: a tenant hidden by a custom default manager is still one.
                tenants = tenant_model._base_manager.filter(tenant_matches).values("pk")
                matches |= Q(tenant__in=tenants)
            queryset = queryset.filter(matches)
        return queryset, False

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Connection) -> str:
        colour = STATUS_COLOURS.get(obj.status, "#57606a")
        return format_html(
            '<span style="display:inline-block;color:#fff;background:{};padding:1px 6px;'
            'border-radius:8px">{}</span>',
            colour,
            obj.get_status_display(),
        )

    @admin.display(description=_("expires in"), ordering="expires_at")
    def expires_in(self, obj: Connection) -> str:
        if obj.expires_at is None or obj.status not in IN_USE:
            return "—"
        if obj.expires_within(timedelta(0)):
            return str(_("expired"))
        return time_until(obj.expires_at)

    @admin.display(description=_("last error"))
    def short_error(self, obj: Connection) -> str:
        if not obj.last_error:
            return "—"
        # May break anywhere (a host:port is one long word): the column takes the width left.
        return format_html(
            '<span style="overflow-wrap:anywhere">{}</span>', Truncator(obj.last_error).chars(60)
        )

    # What needs attention, at the top of the list -------------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        extra_context = {**(extra_context or {}), "status_counts": self.status_counts()}
        return super().changelist_view(request, extra_context)

    def status_counts(self) -> list[dict[str, Any]]:
        """Connections per status, and those expiring within a day: one query, whatever the
        number of connections, each linking to its filter."""
        counts = Connection.objects.aggregate(
            expiring=Count("pk", filter=expiring_within_a_day(timezone.now())),
            **{status: Count("pk", filter=Q(status=status)) for status in Connection.Status},
        )
        rows = [
            {
                "label": status.label,
                "count": counts[status.value],
                "query": f"status__exact={status.value}",
                "status": status.value,
            }
            for status in Connection.Status
        ]
        rows.append(
            {
                "label": _("Expiring within a day"),
                "count": counts["expiring"],
                "query": "expiring=day",
                "status": "expiring",
            }
        )
        return rows

    # Actions on several connections -------------------------------------------------------------

    def _each(
        self, request: HttpRequest, queryset: QuerySet[Connection], act: Callable[[Connection], Any]
    ) -> int:
        """``act`` on each connection; each failure is an error message. Returns the successes:
        a step that returns False did nothing (and has said why)."""
        done = 0
        for connection in queryset:
            try:
                if act(connection) is not False:
                    done += 1
            except OAuthConnectError as err:
                self.message_user(request, str(err), messages.ERROR)
        return done

    @admin.action(description=_("Refresh now"), permissions=["change"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        def refresh(connection: Connection) -> bool:
            refreshed = services.refresh_connection(connection, force=True)
            if not refreshed:
                # Said one by one: "nothing to renew with" and "renewed elsewhere" differ.
                self.message_user(
                    request, f"{connection}: {refresh_outcome(connection, False)}", messages.INFO
                )
            return refreshed

        done = self._each(request, queryset, refresh)
        if done:
            self.message_user(
                request,
                ngettext(
                    "Refreshed %(count)d connection.", "Refreshed %(count)d connections.", done
                )
                % {"count": done},
                messages.SUCCESS,
            )

    @admin.action(description=_("Rotate token"), permissions=["change"])
    def rotate_token(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        done = self._each(request, queryset, services.rotate_token)
        if done:
            self.message_user(
                request,
                ngettext(
                    "Rotated the token of %(count)d connection.",
                    "Rotated the tokens of %(count)d connections.",
                    done,
                )
                % {"count": done},
                messages.SUCCESS,
            )

    @admin.action(
        description=_("Forget kept password (keep only the token)"), permissions=["change"]
    )
    def forget_password(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        # False from forget_credentials: no password was kept, so nothing to count.
        count = self._each(request, queryset, services.forget_credentials)
        self.message_user(
            request,
            ngettext(
                "Forgot the kept password of %(count)d connection. When its token stops "
                "working, someone must reconnect.",
                "Forgot the kept passwords of %(count)d connections. When their tokens stop "
                "working, someone must reconnect.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(description=_("Disconnect"), permissions=["change"])
    def disconnect(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        def disconnect(connection: Connection) -> None:
            services.disconnect(connection)  # revoked or only wiped here: disconnected either way

        count = self._each(request, queryset, disconnect)
        self.message_user(
            request,
            ngettext(
                "Disconnected %(count)d connection.", "Disconnected %(count)d connections.", count
            )
            % {"count": count},
            messages.SUCCESS,
        )
