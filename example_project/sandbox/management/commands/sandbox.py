"""``manage.py sandbox REDIRECT_URI|custobar|teletracker ...``: the sandbox, for a project of
your own.

For each OAuth callback URL it registers an OAuth client at the sandbox authorization server;
Custobar and TeleTracker (a username and password, no redirect) need nothing registered. It
prints the provider settings to paste into your project, then serves the sandbox (by default at
http://127.0.0.1:8001, beside a project on runserver's 8000) until interrupted.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from example_project.sandbox.setup import CALLBACK_PATH, register_client_for
from example_project.site_url import SANDBOX_ADDRPORT, url_for
from example_project.tenants.demo import PASSWORD, USERNAME, demo_user

# What runserver takes: PORT, or ADDRESS:PORT (an IPv6 address in brackets).
ADDRPORT = re.compile(r"(?:(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):)?[0-9]{1,5}")
# Longer, and its client's name ("Sandbox client for …") wouldn't fit its column.
MAX_REDIRECT_URI = 200
# The sandbox's fakes of the providers that take a username and password: their settings,
# given the sandbox's URL.
CREDENTIAL_PROVIDERS = {
    "custobar": {"BASE_URL": "{sandbox}/sandbox/custobar/{{company}}/"},
    "teletracker": {
        "API_URL": "{sandbox}/sandbox/teletracker/",
        "LOGIN_URL": "{sandbox}/sandbox/teletracker/auth/login",
        "REFRESH_URL": "{sandbox}/sandbox/teletracker/auth/refresh",
    },
}


class Command(BaseCommand):
    help = (
        "Register your project's OAuth callbacks at the sandbox, print the settings to paste "
        "into your project, and serve the sandbox."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "targets",
            nargs="+",
            metavar="REDIRECT_URI|custobar|teletracker",
            help="Your project's OAuth callback, e.g. "
            "http://127.0.0.1:8000/connections/apicbase/callback/ (one per OAuth provider), "
            "or custobar, teletracker for the sandbox's fakes of those.",
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
        if not ADDRPORT.fullmatch(options["addrport"]):
            raise CommandError(
                f"--addrport {options['addrport']!r} is not a port or an address and a port, "
                f"such as {SANDBOX_ADDRPORT}."
            )
        sandbox = url_for(options["addrport"])
        targets = list(dict.fromkeys(options["targets"]))  # each once: one client, one secret
        callbacks = [callback_of(target) for target in targets]  # all checked first
        call_command("migrate", interactive=False, verbosity=0)
        demo_user()  # who logs in at the sandbox
        blocks = []
        for target, callback in zip(targets, callbacks, strict=True):
            if callback is None:
                urls = {
                    k: v.format(sandbox=sandbox) for k, v in CREDENTIAL_PROVIDERS[target].items()
                }
                blocks.append(settings_block(target, sandbox, urls))
                continue
            provider_id, redirect_uri = callback
            client_id, client_secret = register_client_for(redirect_uri)
            blocks.append(
                settings_block(
                    provider_id,
                    sandbox,
                    {
                        "AUTHORIZE_URL": f"{sandbox}/sandbox/o/authorize/",
                        "TOKEN_URL": f"{sandbox}/sandbox/o/token/",
                        "REVOKE_URL": f"{sandbox}/sandbox/o/revoke_token/",
                        "API_URL": f"{sandbox}/sandbox/api/v1/",
                        "SCOPES": ["accounts", "library"],
                        "CLIENT_ID": client_id,
                        "CLIENT_SECRET": client_secret,
                    },
                )
            )
        self.stdout.write("Paste this at the end of your project's settings.py:\n\n")
        self.stdout.write("\n".join(blocks))
        self.stdout.write(f"\nThe sandbox's own login, to authorize at: {USERNAME} / {PASSWORD}.\n")
        if any(callback is None for callback in callbacks):
            self.stdout.write(
                f"Custobar and TeleTracker: log in as {USERNAME} / {PASSWORD} (Custobar's "
                "company: demo).\n"
            )
        self.stdout.flush()  # before serving: to a pipe or a file, it would wait in a buffer
        if not options["no_serve"]:
            call_command("runserver", options["addrport"], use_reloader=False)


def callback_of(target: str) -> tuple[str, str] | None:
    """For a callback URL, its provider id and the URL; None for a credential provider's id.
    A clear error for anything else, before anything is registered."""
    if target in CREDENTIAL_PROVIDERS:
        return None
    parts = urlsplit(target)
    match = CALLBACK_PATH.match(parts.path)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or match is None
        or parts.query
        or parts.fragment
        or parts.username is not None
        or len(target) > MAX_REDIRECT_URI
        or any(c in target for c in "\"'\\ \t\r\n")
    ):
        raise CommandError(
            f"{target!r} is not an oauth_connect callback URL. Give the full URL of your "
            "project's callback, such as http://127.0.0.1:8000/connections/apicbase/callback/ "
            "(where your urls.py includes oauth_connect.urls, then the provider id), or "
            "custobar or teletracker."
        )
    if match["provider"] in CREDENTIAL_PROVIDERS:
        raise CommandError(
            f"{match['provider']} connects with a username and password, not by redirect: "
            f"give {match['provider']} instead of a callback URL."
        )
    return match["provider"], target


def settings_block(provider_id: str, sandbox: str, values: dict[str, Any]) -> str:
    """Python to paste: the provider's entry in ``OAUTH_CONNECT["PROVIDERS"]``."""
    # JSON's strings and lists are Python literals too: whatever a value holds, the block
    # stays valid Python, and nothing in it runs.
    lines = "".join(
        f"    {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},\n"
        for key, value in values.items()
    )
    return (
        f"# The sandbox at {sandbox} plays this provider (printed by `manage.py sandbox`).\n"
        f'OAUTH_CONNECT["PROVIDERS"][{json.dumps(provider_id)}] = {{\n{lines}}}\n'
    )
