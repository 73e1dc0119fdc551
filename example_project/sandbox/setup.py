"""Registers the example project's OAuth clients at the sandbox authorization server."""

from __future__ import annotations

from django.conf import settings
from oauth2_provider.models import Application


def register_sandbox_clients(site_url: str) -> list[Application]:
    """Create or update one sandbox OAuth application per sandbox-backed provider, redirecting
    to ``site_url``'s callback. Returns them."""
    applications = []
    for provider_id, options in settings.OAUTH_CONNECT["PROVIDERS"].items():
        if "/sandbox/" not in options.get("TOKEN_URL", ""):
            continue
        applications.append(
            register_client(
                f"{provider_id} sandbox client",
                options["CLIENT_ID"],
                options["CLIENT_SECRET"],
                f"{site_url}/connections/{provider_id}/callback/",
            )
        )
    return applications


def register_client(
    name: str, client_id: str, client_secret: str, redirect_uri: str
) -> Application:
    """Create or update one confidential authorization-code client at the sandbox."""
    application, _ = Application.objects.update_or_create(
        client_id=client_id,
        defaults={
            "name": name,
            "client_secret": client_secret,
            "client_type": Application.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
            "redirect_uris": redirect_uri,
            "algorithm": "",
        },
    )
    return application
