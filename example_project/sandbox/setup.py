"""Registers OAuth clients at the sandbox authorization server: the example project's own, and
(``manage.py sandbox``) a reader's project's."""

from __future__ import annotations

import re
import secrets

from django.conf import settings
from oauth2_provider.models import Application

# The path oauth_connect's callback has (oauth_connect.urls), wherever a project includes it.
CALLBACK_PATH = re.compile(r"(?:/[\w-]+)*/(?P<provider>[\w-]+)/callback/\Z", re.ASCII)


def register_sandbox_clients(site_url: str) -> list[Application]:
    """Create or update one sandbox OAuth application per sandbox-backed provider, redirecting
    to ``site_url``'s callback. Returns them."""
    applications = []
    for provider_id, options in own_sandbox_clients().items():
        applications.append(
            register_client(
                f"{provider_id} sandbox client",
                options["CLIENT_ID"],
                options["CLIENT_SECRET"],
                f"{site_url}/connections/{provider_id}/callback/",
            )
        )
    return applications


def own_sandbox_clients() -> dict[str, dict[str, str]]:
    """The example project's providers that the sandbox plays, by provider id."""
    return {
        provider_id: options
        for provider_id, options in settings.OAUTH_CONNECT["PROVIDERS"].items()
        if "/sandbox/" in options.get("TOKEN_URL", "")
    }


def register_client(
    name: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    *,
    hash_client_secret: bool = True,
) -> Application:
    """Create or update one confidential authorization-code client at the sandbox."""
    application, _ = Application.objects.update_or_create(
        client_id=client_id,
        defaults={
            "name": name,
            "client_secret": client_secret,
            "hash_client_secret": hash_client_secret,
            "client_type": Application.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
            "redirect_uris": redirect_uri,
            "algorithm": "",
        },
    )
    return application


def register_client_for(redirect_uri: str) -> tuple[str, str]:
    """A client for another project, redirecting to ``redirect_uri``: its id and secret. Asked
    again (the sandbox restarted), the same redirect URI gets the same client and secret, so
    the settings pasted into that project keep working. The secret is kept readable for that:
    it guards nothing but this sandbox."""
    name = f"Sandbox client for {redirect_uri}"
    existing = Application.objects.filter(name=name, hash_client_secret=False).first()
    if existing is not None:
        return existing.client_id, existing.client_secret
    client_id, client_secret = f"sandbox-{secrets.token_hex(8)}", secrets.token_urlsafe(24)
    register_client(name, client_id, client_secret, redirect_uri, hash_client_secret=False)
    return client_id, client_secret
