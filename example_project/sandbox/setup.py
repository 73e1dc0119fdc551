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
        application, _ = Application.objects.get_or_create(
            client_id=options["CLIENT_ID"],
            defaults={"name": f"{provider_id} sandbox client"},
        )
        application.name = f"{provider_id} sandbox client"
        application.client_secret = options["CLIENT_SECRET"]
        application.client_type = Application.CLIENT_CONFIDENTIAL
        application.authorization_grant_type = Application.GRANT_AUTHORIZATION_CODE
        application.redirect_uris = f"{site_url}/connections/{provider_id}/callback/"
        application.algorithm = ""
        application.save()
        applications.append(application)
    return applications
