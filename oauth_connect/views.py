"""The tenant-facing pages. Thin: resolve the tenant, call a service, redirect with a message."""

from __future__ import annotations

import math
from typing import Any

from django.apps import apps
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.handlers.exception import response_for_exception
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import TemplateView, View

from . import conf, services, throttle
from ._internal.log import logger, provider_fields
from .cards import ConnectionCard
from .exceptions import (
    AccessDenied,
    AlreadyCompleted,
    AuthorizationError,
    ConfigurationError,
    ConnectionBusy,
    InvalidCredentials,
)
from .forms import ConnectForm, CredentialsForm
from .models import IN_USE_STATUSES, Connection
from .providers import registry
from .providers.base import Provider
from .tenants import resolve_tenant

Status = Connection.Status


def _connections_in_admin() -> str:
    """The admin's list of connections, if the project has Django's admin at the usual name."""
    try:
        return reverse("admin:oauth_connect_connection_changelist")
    except NoReverseMatch:
        return ""


class TenantViewMixin:
    """Resolves ``self.tenant``; anonymous users go to the login page. No answer may be kept
    by a browser or proxy: they show a tenant's connections and carry its messages."""

    tenant: Any
    request: HttpRequest

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = self.dispatch_for_tenant(request, *args, **kwargs)
        except (Http404, PermissionDenied) as err:
            # Left to Django's handler, this page would be built after we return, without the
            # header below: build it here as the handler would (the project's handler403 or
            # handler404, the same log line).
            response = response_for_exception(request, err)
        add_never_cache_headers(response)
        return response

    def dispatch_for_tenant(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.tenant = resolve_tenant(request)
        if self.tenant is None:
            if not request.user.is_authenticated:
                return redirect_to_login(self.login_next_url())
            return self.no_tenant_response(request)
        response: HttpResponse = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        return response

    def no_tenant_response(self, request: HttpRequest) -> HttpResponse:
        """A logged-in person the resolver finds no tenant for (an operator who followed
        "View site", a new member not yet added): 403, with a page that says why and what to
        do, not Django's bare "Forbidden"."""
        tenant_model = apps.get_model(conf.tenant_model_label())
        can_view = request.user.is_staff and request.user.has_perm("oauth_connect.view_connection")
        context = {
            "oauth_connect_base_template": conf.get("BASE_TEMPLATE"),
            "username": request.user.get_username(),
            "tenant_name": tenant_model._meta.verbose_name,
            "admin_url": _connections_in_admin() if can_view else "",
        }
        return TemplateResponse(request, "oauth_connect/no_tenant.html", context, status=403)

    def login_next_url(self) -> str:
        """Where the login page sends an anonymous user back to: this page."""
        return self.request.get_full_path()

    def get_provider(self, provider_id: str) -> Provider:
        if not registry.is_configured(provider_id):
            raise Http404(_("No such service."))
        return registry.get(provider_id)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)  # type: ignore[misc]
        context["oauth_connect_base_template"] = conf.get("BASE_TEMPLATE")
        context["tenant"] = self.tenant
        return context

    def report_configuration_error(self, provider: Provider, err: ConfigurationError) -> None:
        """The detail names settings and tenants: it is for operators (the log), not for this
        user, who reads that the service can't be connected right now."""
        logger.error(
            "Can't connect %s for tenant %s: %s",
            provider.provider_id,
            self.tenant.pk,
            err,
            extra=provider_fields(provider.provider_id, "misconfigured", tenant_id=self.tenant.pk),
        )
        messages.error(
            self.request,
            _("%(provider)s can't be connected right now. Please contact support.")
            % {"provider": provider.display_name},
        )

    def report_busy(self, provider_name: str) -> None:
        messages.error(
            self.request,
            _("%(provider)s is busy being updated; please try again in a moment.")
            % {"provider": provider_name},
        )

    def safe_next(self, url: str) -> str:
        allowed = url_has_allowed_host_and_scheme(
            url, allowed_hosts={self.request.get_host()}, require_https=self.request.is_secure()
        )
        return url if url and allowed else ""


class ConnectionListView(TenantViewMixin, TemplateView):
    """One card per configured provider, listing the tenant's token sets for it."""

    template_name = "oauth_connect/connection_list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        by_provider: dict[str, list[ConnectionCard]] = {}
        for connection in Connection.objects.filter(tenant=self.tenant):
            by_provider.setdefault(connection.provider, []).append(ConnectionCard(connection))
        context["providers"] = []
        for provider in registry.configured():
            cards = by_provider.get(provider.provider_id, [])
            context["providers"].append(
                {
                    "provider": provider,
                    "connections": cards,
                    "connected": any(card.can_disconnect for card in cards),
                }
            )
        return context


class ConnectView(TenantViewMixin, TemplateView):
    """GET: what will be connected. POST: start the redirect flow, or connect with the
    credentials typed, depending on the provider."""

    template_name = "oauth_connect/connect.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        provider = context["provider"] = self.get_provider(self.kwargs["provider"])
        if "form" not in context:
            initial = {
                "next": self.safe_next(self.request.GET.get("next", "")),
                "label": self.request.GET.get("label", ""),
                "reconnect": self.request.GET.get("reconnect") == "1",
            }
            context["form"] = (
                ConnectForm(initial=initial)
                if provider.uses_redirect
                else CredentialsForm(provider, initial=initial)
            )
        return context

    # Error reports (mail_admins, Sentry, the debug page) must not show a typed password.
    @method_decorator(sensitive_post_parameters())
    def post(self, request: HttpRequest, provider: str) -> HttpResponse:
        if not self.get_provider(provider).uses_redirect:
            return self.connect_with_credentials(request, provider)
        form = ConnectForm(request.POST)
        if not (form.is_valid() and self.label_is_free(form, provider)):
            return self.render_to_response(self.get_context_data(form=form))
        try:
            url = services.start_authorization(
                request,
                provider,
                self.tenant,
                label=form.cleaned_data["label"],
                next_url=self.safe_next(form.cleaned_data["next"]),
            )
        except ConfigurationError as err:
            self.report_configuration_error(self.get_provider(provider), err)
            return redirect("oauth_connect:list")
        return HttpResponseRedirect(url)

    def label_is_free(self, form: ConnectForm | CredentialsForm, provider_id: str) -> bool:
        """Unless reconnecting, the label of a working token set names one to keep, not to
        replace (which would also revoke its grant): say so on the form. One that needs
        reconnecting, or was disconnected, may be replaced."""
        label = form.cleaned_data["label"]
        taken = Connection.objects.filter(
            tenant=self.tenant,
            provider=provider_id,
            label=label,
            status__in=IN_USE_STATUSES,
        ).exists()
        if taken and not form.cleaned_data.get("reconnect"):
            name = self.get_provider(provider_id).display_name
            if label:
                message = _(
                    "“%(label)s” already names one of your %(provider)s connections: choose "
                    "another label, or use Reconnect on that one."
                ) % {"provider": name, "label": label}
            else:
                message = _(
                    "One of your %(provider)s connections has no label: give this one a label "
                    "(e.g. “development”), or use Reconnect on that one."
                ) % {"provider": name}
            form.add_error("label", message)
            return False
        return True

    def connect_with_credentials(self, request: HttpRequest, provider_id: str) -> HttpResponse:
        provider = self.get_provider(provider_id)
        form = CredentialsForm(provider, request.POST)
        if form.is_valid() and self.label_is_free(form, provider_id):
            seconds_left = throttle.count_credential_attempt(
                request.user.pk, self.tenant.pk, provider_id
            )
            if seconds_left is not None:
                return self.refuse_attempt(form, provider, seconds_left)
            try:
                services.connect_with_credentials(
                    self.tenant,
                    provider_id,
                    form.cleaned_data["label"],
                    keep_password=form.keeps_password(),
                    **form.credentials(),
                )
            except InvalidCredentials as err:
                if err.field in form.fields:
                    form.add_error(err.field, str(err))  # beside the field to correct
                else:
                    messages.error(request, str(err))
            except AuthorizationError as err:
                messages.error(request, str(err))
            except ConfigurationError as err:
                self.report_configuration_error(provider, err)
            except ConnectionBusy:
                self.report_busy(provider.display_name)
            else:
                messages.success(
                    request, _("%(provider)s is connected.") % {"provider": provider.display_name}
                )
                return HttpResponseRedirect(
                    self.safe_next(form.cleaned_data["next"]) or reverse("oauth_connect:list")
                )
        return self.render_to_response(self.get_context_data(form=form))

    def refuse_attempt(
        self, form: CredentialsForm, provider: Provider, seconds_left: int
    ) -> HttpResponse:
        """Too many attempts (``CREDENTIAL_THROTTLE``): the provider is not asked."""
        logger.warning(
            "Refused to connect %s for tenant %s: too many attempts with credentials",
            provider.provider_id,
            self.tenant.pk,
            extra=provider_fields(
                provider.provider_id, "connect_throttled", tenant_id=self.tenant.pk
            ),
        )
        minutes = math.ceil(seconds_left / 60)
        form.add_error(
            None,
            ngettext(
                "Too many attempts to connect. Try again in about %(minutes)d minute.",
                "Too many attempts to connect. Try again in about %(minutes)d minutes.",
                minutes,
            )
            % {"minutes": minutes},
        )
        response = self.render_to_response(self.get_context_data(form=form), status=429)
        response["Retry-After"] = str(seconds_left)
        return response


class CallbackView(TenantViewMixin, View):
    def login_next_url(self) -> str:
        """The list page, not this one: this URL's query holds the authorization code, which
        must not travel on in the login page's URL (its logs, its Referer). A code is short-lived
        and single-use anyway: after logging in, the user starts again from the list."""
        return reverse("oauth_connect:list")

    def get(self, request: HttpRequest, provider: str) -> HttpResponse:
        provider_obj = self.get_provider(provider)
        try:
            result = services.complete_authorization(request, provider, self.tenant, request.GET)
        except AlreadyCompleted:
            # Back (or a reload) after a consent that went through: the card says it all.
            return redirect("oauth_connect:list")
        except AccessDenied as err:
            messages.info(request, str(err))  # the person's own choice, not a failure
            return redirect("oauth_connect:list")
        except AuthorizationError as err:
            messages.error(request, str(err))
            return redirect("oauth_connect:list")
        except ConfigurationError as err:
            # E.g. the tenant's own client credentials removed while the user was away.
            self.report_configuration_error(provider_obj, err)
            return redirect("oauth_connect:list")
        except ConnectionBusy:
            self.report_busy(provider_obj.display_name)
            return redirect("oauth_connect:list")
        messages.success(
            request, _("%(provider)s is connected.") % {"provider": provider_obj.display_name}
        )
        return HttpResponseRedirect(
            self.safe_next(result.next_url) or reverse("oauth_connect:list")
        )


class DisconnectView(TenantViewMixin, TemplateView):
    """GET: ask for confirmation (a page, so it works without JavaScript). POST: disconnect."""

    template_name = "oauth_connect/disconnect.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["card"] = ConnectionCard(self.get_connection())
        return context

    def get_connection(self) -> Connection:
        return get_object_or_404(
            Connection.objects.exclude(status=Status.DISCONNECTED),
            pk=self.kwargs["pk"],
            tenant=self.tenant,
        )

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        connection = self.get_connection()
        try:
            services.disconnect(connection)
        except ConnectionBusy:
            self.report_busy(connection.provider_name)
            return redirect("oauth_connect:list")
        messages.success(
            request,
            _("%(provider)s is disconnected.") % {"provider": connection.provider_name},
        )
        return redirect("oauth_connect:list")
