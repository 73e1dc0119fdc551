"""The sandbox's OAuth2 validator: django-oauth-toolkit's, which also accepts the example
project's own callback on the port this server was started on.

``setup_demo`` registers the callbacks of the address it was told (``SITE_URL``, by default
runserver's 8000). Started on another port, the project's own clients would be refused with
"Mismatching redirect URI". This accepts, for one authorization request and without saving
it, a callback that is:

- one of the example project's own sandbox clients' (``setup.own_sandbox_clients``);
- on this server's own port (``SITE_URL``: where ``runserver`` was told to listen), under a
  loopback name or ``SITE_URL``'s host. Never the request's Host header, which anyone can set;
- exactly oauth_connect's callback path for that client's provider.

Any other redirect URI must be registered, as for any client (``manage.py sandbox``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.urls import reverse
from oauth2_provider.oauth2_validators import OAuth2Validator

from .setup import own_sandbox_clients

# Names a browser on this machine uses for it (urlsplit gives IPv6 hosts without brackets).
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PLAIN_NETLOC = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]+)?|\[[0-9A-Fa-f:]+\](:[0-9]+)?")


class SandboxValidator(OAuth2Validator):
    def validate_redirect_uri(
        self, client_id: str, redirect_uri: str, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        if is_own_callback(client_id, redirect_uri):
            return True
        return bool(
            super().validate_redirect_uri(client_id, redirect_uri, request, *args, **kwargs)
        )


def is_own_callback(client_id: str, redirect_uri: str) -> bool:
    """Whether ``redirect_uri`` is the example project's own callback for ``client_id``, on
    the port it serves (see the module's docstring)."""
    site = urlsplit(settings.SITE_URL)
    target = urlsplit(redirect_uri)
    # Nothing but scheme, host, port and path, spelled plainly: no user info, backslash,
    # query or fragment for a browser and this check to read differently.
    if not PLAIN_NETLOC.fullmatch(target.netloc) or (
        redirect_uri != f"{target.scheme}://{target.netloc}{target.path}"
    ):
        return False
    try:
        same_port = target.port == site.port
    except ValueError:  # a port out of range
        return False
    if target.scheme != site.scheme or not same_port:
        return False
    if target.hostname not in LOOPBACK | {site.hostname}:
        return False
    for provider_id, options in own_sandbox_clients().items():
        if options["CLIENT_ID"] == client_id:
            callback = reverse("oauth_connect:callback", kwargs={"provider": provider_id})
            return target.path == callback
    return False
