"""Apicbase: OAuth 2.0 authorization code, 7-day access tokens, rotating refresh tokens.

Apicbase's API documentation (authentication guide): the token endpoint takes form-encoded
bodies with the client credentials in the body or as HTTP basic; a used refresh token answers
``invalid_grant``; library owners bring their own client credentials (``ClientCredentials``),
partners use one set.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .oauth2 import OAuth2Provider
from .registry import register


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
