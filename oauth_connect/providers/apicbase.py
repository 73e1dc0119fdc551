"""Apicbase: OAuth 2.0 authorization code, 7-day access tokens, rotating refresh tokens.

Apicbase's API documentation (authentication guide): the token endpoint takes form-encoded
bodies with the client credentials in the body or as HTTP basic; a used refresh token answers
``invalid_grant``; library owners bring their own client credentials (``ClientCredentials``),
partners use one set.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urljoin

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
        """The person who authorized, from ``CHECK_PATH`` (``accounts/me/``), when the
        ``accounts`` scope was granted."""
        path = self.setting("CHECK_PATH")
        if not path or "accounts" not in (tokens.scopes or self.scopes):
            return {}
        body = client.request_json(
            "GET",
            urljoin(str(self.setting("API_URL")), str(path)),
            headers={"Authorization": f"Bearer {tokens.access_token}"},
            secrets=[tokens.access_token],
            what="account endpoint",
        )
        for where in (body, body.get("user")):
            if isinstance(where, dict):
                for key in ACCOUNT_NAME_KEYS:
                    name = provider_words(where.get(key), [tokens.access_token], limit=100)
                    if name:
                        return {"username": name}
        return {}
