"""Generic Django classes, parametrised for the type checker only.

django-stubs makes ``ModelAdmin``, ``ModelForm``, ``Field``... generic, but at run time Django's
classes can't be subscripted unless ``django_stubs_ext.monkeypatch()`` patches them, which a
reusable app must not do to its host project. So each alias is the plain class at run time and
the parametrised one when type checking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin

from ..models import ClientCredentials, Connection

if TYPE_CHECKING:
    ConnectionModelAdmin = admin.ModelAdmin[Connection]
    ClientCredentialsModelAdmin = admin.ModelAdmin[ClientCredentials]
    ClientCredentialsModelForm = forms.ModelForm[ClientCredentials]
else:
    ConnectionModelAdmin = admin.ModelAdmin
    ClientCredentialsModelAdmin = admin.ModelAdmin
    ClientCredentialsModelForm = forms.ModelForm


__all__ = [
    "ClientCredentialsModelAdmin",
    "ClientCredentialsModelForm",
    "ConnectionModelAdmin",
]
