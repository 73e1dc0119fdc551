from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from django import forms
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from .providers.base import Provider


class ConnectForm(forms.Form):
    """What a user chooses before being sent to the provider."""

    label = forms.SlugField(
        label=_("Label"),
        required=False,
        max_length=100,
        help_text=_(
            "Optional. Tells several connections to the same service apart, e.g. "
            "'production' and 'development'."
        ),
    )
    next = forms.CharField(required=False, widget=forms.HiddenInput, max_length=2048)
    # Set by the Reconnect buttons: replacing the token set with this label is then the point.
    reconnect = forms.BooleanField(required=False, widget=forms.HiddenInput)


KEEP, TOKEN_ONLY = "keep", "token_only"
PASSWORD_STORAGE_CHOICES = [
    (KEEP, _("Keep the password (encrypted), so the connection can renew itself")),
    (TOKEN_ONLY, _("Store only the token: when it stops working, someone must reconnect")),
]


class CredentialsForm(forms.Form):
    """The connect form of a provider that takes credentials; one field per
    ``provider.credential_fields``, then the label and the password choice."""

    def __init__(self, provider: Provider, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provider = provider
        for spec in provider.credential_fields:
            widget = forms.PasswordInput(render_value=False) if spec.secret else None
            self.fields[spec.name] = forms.CharField(
                label=spec.label,
                required=spec.required,
                help_text=spec.help_text,
                max_length=500,
                widget=widget,
                strip=not spec.secret,
            )
        self.fields["label"] = copy.deepcopy(ConnectForm.base_fields["label"])
        self.fields["reconnect"] = copy.deepcopy(ConnectForm.base_fields["reconnect"])
        self.fields["next"] = copy.deepcopy(ConnectForm.base_fields["next"])
        self.fields["password_storage"] = forms.ChoiceField(
            label=_("Password storage"),
            choices=PASSWORD_STORAGE_CHOICES,
            initial=KEEP,
            widget=forms.RadioSelect,
        )

    def keeps_password(self) -> bool:
        return bool(self.cleaned_data["password_storage"] == KEEP)

    def credentials(self) -> dict[str, str]:
        return {
            spec.name: self.cleaned_data.get(spec.name) or ""
            for spec in self.provider.credential_fields
        }
