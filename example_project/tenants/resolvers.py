from __future__ import annotations

from django.http import HttpRequest

from .models import Organisation


def current_organisation(request: HttpRequest) -> Organisation | None:
    """The logged-in user's organisation (the first, in this small example)."""
    if not request.user.is_authenticated:
        return None
    return Organisation.objects.filter(members=request.user).order_by("pk").first()
