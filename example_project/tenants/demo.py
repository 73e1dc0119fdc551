"""The demo login and its organisation, which the example project and its sandbox share."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from .models import Organisation

USERNAME = PASSWORD = "demo"


def demo_user() -> AbstractBaseUser:
    """The ``demo`` / ``demo`` superuser, member of the organisation "Demo Kitchen"; created
    the first time."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if created:
        user.set_password(PASSWORD)
        user.save()
    organisation, _ = Organisation.objects.get_or_create(name="Demo Kitchen")
    organisation.members.add(user)
    return user
