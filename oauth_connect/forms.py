from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


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
