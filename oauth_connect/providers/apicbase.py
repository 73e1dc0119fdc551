"""Apicbase: OAuth 2.0 authorization code, 7-day access tokens, rotating refresh tokens.

Apicbase's API documentation (authentication guide): the token endpoint takes form-encoded
bodies with the client credentials in the body or as HTTP basic; a used refresh token answers
``invalid_grant``; library owners bring their own client credentials (``ClientCredentials``),
partners use one set.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.views.decorators.debug import sensitive_variables

from .._internal.redact import provider_words
from .base import TokenSet
from .client import ProviderClient
from .oauth2 import OAuth2Provider
from .registry import register

# Where a name for people may be, in order, in what the account endpoint answers (at its top
# level or under "user"): Apicbase's users log in with their email address.
ACCOUNT_NAME_KEYS = ("username", "email", "name")


@register
class ApicbaseProvider(OAuth2Provider):
    id = "apicbase"
    name = "Apicbase"
    default_settings: ClassVar[dict[str, Any]] = {
        **OAuth2Provider.default_settings,
        "AUTHORIZE_URL": "https://app.apicbase.com/oauth/authorize/",
        "TOKEN_URL": "https://api.apicbase.com/oauth/token/",
        "API_URL": "https://api.apicbase.com/api/v1/",
        "SCOPES": ["accounts", "library"],
        "CHECK_PATH": "accounts/me/",
    }

    @sensitive_variables()
    def account_for(self, client: ProviderClient, tokens: TokenSet) -> dict[str, Any]:
        """The person who authorized, from ``CHECK_PATH`` (``accounts/me/``) under
        ``API_URL``, when the ``accounts`` scope was granted. ``client`` is the code
        exchange's: one deadline for both, and everything that exchange sent is masked."""
        path = str(self.setting("CHECK_PATH") or "")
        if not path or "accounts" not in (tokens.scopes or self.scopes):
            return {}
        if "://" in path or path.startswith("//"):
            return {}  # the token goes to the API's own URL, as connection.session() sends it
        body = client.request_json(
            "GET",
            str(self.setting("API_URL")).rstrip("/") + "/" + path.lstrip("/"),
            headers={"Authorization": f"Bearer {tokens.access_token}"},
            secrets=[tokens.access_token, tokens.refresh_token or ""],
            what="account endpoint",
        )
        for where in (body, body.get("user")):
            if isinstance(where, dict):
                for key in ACCOUNT_NAME_KEYS:
                    name = provider_words(where.get(key), limit=100)
                    # A value that quotes a secret names nobody: not "[redacted]" on the card.
                    if name and name == client.words(where.get(key), limit=100):
                        return {"username": name}
        return {}
