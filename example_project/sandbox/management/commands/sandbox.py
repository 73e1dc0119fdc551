"""``manage.py sandbox REDIRECT_URI``: the sandbox, for a project of your own.

Registers an OAuth client at the sandbox authorization server for your project's callback,
prints the provider settings to paste into your project, and serves the sandbox (by default at
http://127.0.0.1:8001, beside a project on runserver's 8000) until interrupted.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from example_project.sandbox.setup import CALLBACK_PATH, register_client_for
from example_project.site_url import SANDBOX_ADDRPORT, url_for
from example_project.tenants.demo import PASSWORD, USERNAME, demo_user


class Command(BaseCommand):
    help = (
        "Register your project's OAuth callback at the sandbox, print the settings to paste "
        "into your project, and serve the sandbox."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "redirect_uris",
            nargs="+",
            metavar="REDIRECT_URI",
            help="Your project's callback, e.g. "
            "http://127.0.0.1:8000/connections/apicbase/callback/ (one per provider).",
        )
        parser.add_argument(
            "--addrport",
            default=SANDBOX_ADDRPORT,
            help=f"Where the sandbox listens (default {SANDBOX_ADDRPORT}).",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Register and print the settings, but don't start the server.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        targets = [provider_for(uri) for uri in options["redirect_uris"]]
        call_command("migrate", interactive=False, verbosity=0)
        demo_user()  # who logs in at the sandbox to authorize
        sandbox = url_for(options["addrport"])
        blocks = []
        for provider_id, redirect_uri in targets:
            client_id, client_secret = register_client_for(redirect_uri)
            blocks.append(settings_block(provider_id, sandbox, client_id, client_secret))
        self.stdout.write("Paste this at the end of your project's settings.py:\n\n")
        self.stdout.write("\n".join(blocks))
        self.stdout.write(f"\nThe sandbox's own login, to authorize at: {USERNAME} / {PASSWORD}.\n")
        self.stdout.flush()  # before serving: to a pipe or a file, it would wait in a buffer
        if not options["no_serve"]:
            call_command("runserver", options["addrport"], use_reloader=False)


def provider_for(redirect_uri: str) -> tuple[str, str]:
    """The provider id a callback URL is for, and the URL; a clear error for anything else."""
    parts = urlsplit(redirect_uri)
    match = CALLBACK_PATH.match(parts.path)
    if parts.scheme not in ("http", "https") or not parts.netloc or match is None or parts.query:
        raise CommandError(
            f"{redirect_uri!r} is not an oauth_connect callback URL. Give the full URL of your "
            "project's callback, such as http://127.0.0.1:8000/connections/apicbase/callback/ "
            "(where your urls.py includes oauth_connect.urls, then the provider id)."
        )
    return match["provider"], redirect_uri


def settings_block(provider_id: str, sandbox: str, client_id: str, client_secret: str) -> str:
    return (
        f"# The sandbox at {sandbox} plays this provider (printed by `manage.py sandbox`).\n"
        f'OAUTH_CONNECT["PROVIDERS"]["{provider_id}"] = {{\n'
        f'    "AUTHORIZE_URL": "{sandbox}/sandbox/o/authorize/",\n'
        f'    "TOKEN_URL": "{sandbox}/sandbox/o/token/",\n'
        f'    "REVOKE_URL": "{sandbox}/sandbox/o/revoke_token/",\n'
        f'    "API_URL": "{sandbox}/sandbox/api/v1/",\n'
        f'    "SCOPES": ["accounts", "library"],\n'
        f'    "CLIENT_ID": "{client_id}",\n'
        f'    "CLIENT_SECRET": "{client_secret}",\n'
        "}\n"
    )
