"""The generic OAuth2 provider's requests and parsing (RFC 6749, RFC 7636, RFC 7009)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from oauth_connect._internal.pkce import make_verifier, s256_challenge
from oauth_connect.exceptions import ProviderError
from oauth_connect.providers import OAuthClient, registry
from oauth_connect.providers.client import ProviderClient
from tests.conftest import (
    AUTHORIZE_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    TOKEN_URL,
    apicbase_settings,
    oauth_connect_settings,
    token_body,
)

CLIENT = OAuthClient(CLIENT_ID, CLIENT_SECRET)


def form(call: Any) -> dict[str, list[str]]:
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    return parse_qs(call.request.body)


def test_authorization_url_carries_the_flow_parameters() -> None:
    provider = registry.get("apicbase")
    url = provider.authorization_url(
        oauth_client=CLIENT,
        redirect_uri="https://app.test/cb/",
        state="the-state",
        code_challenge="the-challenge",
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == AUTHORIZE_URL
    assert parse_qs(parts.query) == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": ["https://app.test/cb/"],
        "state": ["the-state"],
        "scope": ["accounts library"],
        "code_challenge": ["the-challenge"],
        "code_challenge_method": ["S256"],
    }
    # Scopes joined with a space travel as "+" as in Apicbase's docs.
    assert "scope=accounts+library" in url


def test_authorization_url_without_pkce_and_custom_separator(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": apicbase_settings(PKCE=False, SCOPE_SEPARATOR=",")}
    )
    url = registry.get("apicbase").authorization_url(
        oauth_client=CLIENT, redirect_uri="https://app.test/cb/", state="s", code_challenge="c"
    )
    query = parse_qs(urlsplit(url).query)
    assert "code_challenge" not in query
    assert query["scope"] == ["accounts,library"]


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert 43 <= len(make_verifier()) <= 128


def test_code_exchange_posts_a_form_with_client_credentials_in_the_body(
    http_mock: responses.RequestsMock, frozen_now: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    tokens = registry.get("apicbase").exchange_code(
        ProviderClient("apicbase"),
        code="the-code",
        redirect_uri="https://app.test/cb/",
        code_verifier="the-verifier",
        oauth_client=CLIENT,
    )
    assert form(http_mock.calls[0]) == {
        "grant_type": ["authorization_code"],
        "code": ["the-code"],
        "redirect_uri": ["https://app.test/cb/"],
        "code_verifier": ["the-verifier"],
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
    }
    assert "Authorization" not in http_mock.calls[0].request.headers
    assert tokens.access_token == "access-token-1"
    assert tokens.refresh_token == "refresh-token-1"
    # Expiry from expires_in on our own clock.
    assert tokens.expires_at == frozen_now + timedelta(seconds=3600)
    assert tokens.scopes == ["accounts", "library"]


def test_basic_client_authentication(http_mock: responses.RequestsMock, settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": apicbase_settings(CLIENT_AUTH="basic")}
    )
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(1))
    registry.get("apicbase").exchange_code(
        ProviderClient("apicbase"),
        code="c",
        redirect_uri="https://app.test/cb/",
        code_verifier="v",
        oauth_client=CLIENT,
    )
    request = http_mock.calls[0].request
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    body = form(http_mock.calls[0])
    assert "client_secret" not in body and "client_id" not in body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"access_token": "a"}, {"refresh_token": None, "scopes": ["accounts", "library"]}),
        ({"access_token": "a", "token_type": "bearer"}, {"token_type": "Bearer"}),
        ({"access_token": "a", "scope": "accounts"}, {"scopes": ["accounts"]}),
        ({"access_token": "a", "expires_in": "oops"}, {"expires_at": None}),
        ({"access_token": "a", "token_type": "MAC"}, {"token_type": "MAC"}),
    ],
)
def test_token_response_parsing(body: dict[str, Any], expected: dict[str, Any]) -> None:
    tokens = registry.get("apicbase").parse_token_response(
        body, requested_scopes=["accounts", "library"]
    )
    for key, value in expected.items():
        assert getattr(tokens, key) == value


@pytest.mark.parametrize("body", [{}, {"access_token": ""}, {"access_token": 42}])
def test_token_response_without_access_token_is_a_provider_error(body: dict[str, Any]) -> None:
    with pytest.raises(ProviderError, match="without an access_token"):
        registry.get("apicbase").parse_token_response(body, requested_scopes=None)
