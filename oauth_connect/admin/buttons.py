"""The buttons on a connection's admin page: each acts on that one connection (POST, change
permission) and reports its result as a message."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseNotAllowed
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _

from .. import services
from .._internal.ago import time_until
from .._internal.typing import ConnectionModelAdmin
from ..exceptions import OAuthConnectError
from ..models import Connection


class ConnectionButtons(ConnectionModelAdmin):
    """Mixed into ``ConnectionAdmin``; the templates are admin/oauth_connect/connection/."""

    def get_urls(self) -> list[Any]:
        def button(view: Any, name: str) -> Any:
            return path(
                f"<path:object_id>/{name}/",
                self.admin_site.admin_view(view),
                name=f"oauth_connect_connection_{name.replace('-', '_')}",
            )

        return [
            button(self.refresh_view, "refresh"),
            button(self.check_view, "test"),
            button(self.rotate_view, "rotate"),
            button(self.disconnect_view, "disconnect"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> Any:
        connection = self.get_object(request, unquote(object_id))
        extra_context = {
            **(extra_context or {}),
            "can_rotate": connection is not None and _supports_rotation(connection),
            "can_refresh": connection is not None and _can_refresh(connection),
            "can_test": connection is not None and _can_check(connection),
            "can_act": connection is not None and self.has_change_permission(request, connection),
            # Every field is read-only: there is nothing to save, only buttons to press.
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _button(self, request: HttpRequest, object_id: str, act: Any) -> HttpResponseBase:
        """Run ``act(connection)`` for a button on the connection's page (POST, change
        permission), report its result as a message and go back to the page."""
        connection = self.get_object(request, unquote(object_id))
        if connection is None:
            raise Http404(_("No such connection."))
        if not self.has_change_permission(request, connection):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            message = act(connection)
        except OAuthConnectError as err:
            self.message_user(request, str(err), messages.ERROR)
        else:
            self.message_user(request, message, messages.SUCCESS)
        return redirect(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", connection.pk)

    def refresh_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        def refresh(connection: Connection) -> str:
            refreshed = services.refresh_connection(connection, force=True)
            return refresh_outcome(connection, refreshed)

        return self._button(request, object_id, refresh)

    def check_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        return self._button(request, object_id, services.check_connection)

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        def rotate(connection: Connection) -> str:
            services.rotate_token(connection)
            return str(_("Rotated: the old token no longer works."))

        return self._button(request, object_id, rotate)

    def disconnect_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        connection = self.get_object(request, unquote(object_id))
        if connection is None:
            raise Http404(_("No such connection."))
        if request.method == "GET" and self.has_change_permission(request, connection):
            # Disconnecting revokes the grant at the provider: confirm first, without JavaScript.
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "connection": connection,
                "title": _("Disconnect %(connection)s?") % {"connection": connection},
            }
            return TemplateResponse(
                request, "admin/oauth_connect/connection/disconnect_confirmation.html", context
            )

        def disconnect(connection: Connection) -> str:
            if services.disconnect(connection):
                return str(
                    _("Disconnected: the tokens are revoked and wiped; the history is kept.")
                )
            return str(
                _(
                    "Disconnected: the tokens are wiped here but were not revoked at the provider "
                    "(the event log says why); the history is kept."
                )
            )

        return self._button(request, object_id, disconnect)


def refresh_outcome(connection: Connection, refreshed: bool) -> str:
    """What a forced refresh did, in words: ``refresh_connection`` returns False both when there
    is nothing to renew the token with and when another process had just renewed it."""
    if refreshed:
        message = _("Refreshed: the access token now expires %(when)s.")
    elif connection.get_provider().can_refresh(connection):
        message = _(
            "Already refreshed: another process renewed the token a moment ago; it now expires "
            "%(when)s."
        )
    else:
        message = _(
            "Not refreshed: this connection has nothing to renew its token with. The current "
            "token still works; it expires %(when)s."
        )
    return str(message) % {"when": _expiry_text(connection)}


def _can_check(connection: Connection) -> bool:
    try:
        return services.can_check(connection)
    except OAuthConnectError:
        return False


def _supports_rotation(connection: Connection) -> bool:
    try:
        return connection.get_provider().supports_rotation
    except OAuthConnectError:
        return False


def _expiry_text(connection: Connection) -> str:
    if connection.expires_at is None:
        return str(_("never (no expiry given)"))
    return str(_("in %(when)s")) % {"when": time_until(connection.expires_at)}


def _can_refresh(connection: Connection) -> bool:
    """Whether **Refresh now** can do anything: not for a connection waiting for a person to
    reconnect (the provider refused its grant), nor one with nothing to renew its token with."""
    if connection.status not in (Connection.Status.ACTIVE, Connection.Status.ERROR):
        return False
    try:
        return connection.get_provider().can_refresh(connection)
    except Exception:  # not configured any more, or a provider class's bug: no button, no 500
        return False
