"""Prepare the example project: migrate, a demo login, an organisation, sandbox OAuth clients."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from example_project.sandbox.setup import register_sandbox_clients
from example_project.tenants.demo import demo_user


class Command(BaseCommand):
    help = "Migrate and create the demo user (demo/demo), its organisation and sandbox clients."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        demo_user()
        register_sandbox_clients(settings.SITE_URL)
        self.stdout.write(
            self.style.SUCCESS(
                "Ready. Run `python manage.py runserver`, open it (http://127.0.0.1:8000/ by "
                "default; any host and port works) and log in as demo / demo."
            )
        )
