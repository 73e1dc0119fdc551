"""Tenants' own OAuth client credentials (a library owner's client id and secret)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .._internal.typing import ClientCredentialsModelAdmin, ClientCredentialsModelForm
from ..models import ClientCredentials
from ..providers import registry


class ClientCredentialsForm(ClientCredentialsModelForm):
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

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        provider, client_id = cleaned.get("provider"), cleaned.get("client_id")
        shared = _settings_client_id(provider) if provider else ""
        if client_id and client_id == shared:
            # One client id, two secrets: connecting would use this one and refreshing the
            # settings' one. A tenant on the shared client needs no row here.
            self.add_error(
                "client_id",
                _(
                    "This is the client id in the settings: tenants on the shared client need "
                    "no credentials here. Enter the tenant's own client id, or delete this row."
                ),
            )
        return cleaned

    def clean_client_secret(self) -> str:
        secret = str(self.cleaned_data.get("client_secret", ""))
        if not secret and self.instance.pk is not None:
            return str(self.instance.client_secret)
        return secret


def _settings_client_id(provider_id: str) -> str:
    if not registry.is_configured(provider_id):
        return ""
    return str(registry.get(provider_id).settings.get("CLIENT_ID") or "")


@admin.register(ClientCredentials)
class ClientCredentialsAdmin(ClientCredentialsModelAdmin):
    form = ClientCredentialsForm
    list_display = ["tenant", "provider", "client_id", "updated_at"]
    list_filter = ["provider"]
    list_select_related = ["tenant"]
