"""Registers OAuth clients at the sandbox authorization server: the example project's own, and
(``manage.py sandbox``) a reader's project's."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from oauth2_provider.models import Application

# The path oauth_connect's callback has (oauth_connect.urls), wherever a project includes it.
CALLBACK_PATH = re.compile(r"(?:/[\w-]+)*/(?P<provider>[\w-]+)/callback/\Z")


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


def register_client_for(redirect_uri: str) -> tuple[str, str]:
    """A client for another project, redirecting to ``redirect_uri``: its id and secret. The
    same redirect URI keeps its client (and gets a new secret) when asked again, so settings
    pasted earlier only need the new secret."""
    name = f"Sandbox client for {redirect_uri}"
    existing = Application.objects.filter(name=name).first()
    client_id = existing.client_id if existing else f"sandbox-{secrets.token_hex(8)}"
    client_secret = secrets.token_urlsafe(24)
    register_client(name, client_id, client_secret, redirect_uri)
    return client_id, client_secret


def allow_own_callback(request: HttpRequest) -> None:
    """Before an authorization request is checked: if it comes from one of the example
    project's own clients and asks to return to the site serving this sandbox, register that
    callback. ``setup_demo`` registered the callback of the host and port it was told of; this
    lets the project run on any other without setting anything up again. Another site's
    redirect URI still has to be registered (``manage.py sandbox``)."""
    client_id = request.GET.get("client_id", "")
    redirect_uri = request.GET.get("redirect_uri", "")
    target = urlsplit(redirect_uri)
    match = CALLBACK_PATH.match(target.path)
    if (
        match is None
        or target.query
        or f"{target.scheme}://{target.netloc}" != f"{request.scheme}://{request.get_host()}"
    ):
        return
    options = own_sandbox_clients().get(match["provider"])
    if options is None or options["CLIENT_ID"] != client_id:
        return
    application = Application.objects.filter(client_id=client_id).first()
    if application is not None and redirect_uri not in application.redirect_uris.split():
        application.redirect_uris = f"{application.redirect_uris} {redirect_uri}".strip()
        application.save(update_fields=["redirect_uris"])
