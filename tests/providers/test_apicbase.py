from __future__ import annotations

from typing import Any

from tests.conftest import API_URL, TOKEN_URL, apicbase_settings, token_body
from tests.providers.contract import ProviderContract


class TestApicbase(ProviderContract):
    provider_id = "apicbase"
    api_url = API_URL
    refresh_url = TOKEN_URL

    def provider_settings(self) -> dict[str, Any]:
        return apicbase_settings()

    def refresh_answer(self, n: int) -> dict[str, Any]:
        return token_body(n, expires_in=604800)  # Apicbase: a week

    def dead_grant_answer(self) -> tuple[int, dict[str, Any]]:
        # Apicbase's docs: a used refresh token answers invalid_grant.
        return 400, {"error": "invalid_grant"}
