"""A provider configured from settings only keeps the same contract."""

from __future__ import annotations

from typing import Any

from tests.conftest import token_body
from tests.providers.contract import ProviderContract


class TestGenericOAuth2(ProviderContract):
    provider_id = "acme"
    api_url = "https://api.acme.test/v2/"
    refresh_url = "https://login.acme.test/oauth/token"

    def provider_settings(self) -> dict[str, Any]:
        return {
            "AUTHORIZE_URL": "https://login.acme.test/oauth/authorize",
            "TOKEN_URL": self.refresh_url,
            "API_URL": self.api_url,
            "CLIENT_ID": "settings-client-id",
            "CLIENT_SECRET": "acme-secret",
            "CLIENT_AUTH": "basic",
        }

    def refresh_answer(self, n: int) -> dict[str, Any]:
        return token_body(n)

    def dead_grant_answer(self) -> tuple[int, dict[str, Any]]:
        return 400, {"error": "invalid_grant", "error_description": "Token revoked"}
