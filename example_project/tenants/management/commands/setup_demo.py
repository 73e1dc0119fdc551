"""Prepare the example project: migrate, a demo login, an organisation, sandbox OAuth clients."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from example_project.sandbox.setup import register_sandbox_clients
from example_project.tenants.models import Organisation


class Command(BaseCommand):
    help = "Migrate and create the demo user (demo/demo), its organisation and sandbox clients."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username="demo", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password("demo")
            user.save()
        organisation, _ = Organisation.objects.get_or_create(name="Demo Kitchen")
        organisation.members.add(user)
        register_sandbox_clients(settings.SITE_URL)
        self.stdout.write(
            self.style.SUCCESS(
                f"Ready. Run `python manage.py runserver`, open {settings.SITE_URL}/ and log in as "
                "demo / demo."
            )
        )
