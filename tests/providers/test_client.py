"""Every way a provider endpoint can fail becomes a clear ProviderError, never a crash."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime

import pytest
import requests
import responses

from oauth_connect.exceptions import (
    ProviderConfigurationError,
    ProviderError,
    ReauthorizationRequired,
    UnusableAnswer,
)
from oauth_connect.providers.client import ProviderClient
from tests.conftest import NOW, TOKEN_URL

SECRET_BODY = {"refresh_token": "very-secret-refresh", "client_secret": "very-secret-client"}


def post(**kwargs: object) -> dict[str, object]:
    return ProviderClient("apicbase").post_form(TOKEN_URL, dict(SECRET_BODY))


def assert_no_secret(err: Exception) -> None:
    assert "very-secret" not in str(err)
    assert "very-secret" not in repr(err)


def test_json_object_is_returned(http_mock: responses.RequestsMock) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json={"access_token": "x"})
    assert post() == {"access_token": "x"}


def test_invalid_grant_means_reauthorization(http_mock: responses.RequestsMock) -> None:
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        status=400,
        # A provider that echoes our refresh token back must not leak it into the message.
        json={"error": "invalid_grant", "error_description": "token very-secret-refresh used"},
    )
    with pytest.raises(ReauthorizationRequired) as info:
        post()
    assert info.value.error_code == "invalid_grant"
    assert info.value.status_code == 400
    assert "reconnect" in str(info.value)
    assert "[redacted]" in str(info.value)
    assert_no_secret(info.value)


def test_invalid_client_is_an_operator_error(http_mock: responses.RequestsMock) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=401, json={"error": "invalid_client"})
    with pytest.raises(ProviderConfigurationError) as info:
        post()
    assert "CLIENT_ID" in str(info.value)
    assert 'OAUTH_CONNECT["PROVIDERS"]["apicbase"]' in str(info.value)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (500, "<html>oops</html>", "text/html", "HTTP 500 with a body that is not a JSON object"),
        (502, "<html>bad gateway</html>", "text/html", "(text/html)"),
        (200, "{not json", "application/json", "HTTP 200 with a body that is not a JSON"),
        (200, "[1, 2]", "application/json", "not a JSON object"),
    ],
)
def test_unusable_bodies(
    http_mock: responses.RequestsMock, status: int, body: str, content_type: str, expected: str
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=status, body=body, content_type=content_type)
    with pytest.raises(ProviderError, match=expected) as info:
        post()
    # A success status with a body we can't use is the provider's fault, not an outage.
    assert type(info.value) is (UnusableAnswer if status < 300 else ProviderError)
    assert info.value.status_code == status
    assert_no_secret(info.value)


def test_server_error_with_json(http_mock: responses.RequestsMock) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=503, json={"error": "temporarily_unavailable"})
    with pytest.raises(ProviderError, match="HTTP 503 \\(temporarily_unavailable\\)"):
        post()


@pytest.mark.parametrize(("header", "expected"), [("120", 120.0), ("", None), ("soon", None)])
def test_retry_after_is_read_on_429(
    http_mock: responses.RequestsMock, header: str, expected: float | None
) -> None:
    headers = {"Retry-After": header} if header else {}
    http_mock.add(
        responses.POST, TOKEN_URL, status=429, json={"error": "slow_down"}, headers=headers
    )
    with pytest.raises(ProviderError) as info:
        post()
    assert info.value.retry_after == expected


def test_retry_after_as_http_date(http_mock: responses.RequestsMock, frozen_now: object) -> None:
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        status=429,
        body="slow down",
        headers={"Retry-After": format_datetime(NOW + timedelta(minutes=5), usegmt=True)},
    )
    with pytest.raises(ProviderError) as info:
        post()
    assert info.value.retry_after == 300.0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (requests.ConnectTimeout("slow"), "did not answer within 10 seconds"),
        (requests.ReadTimeout("slow"), "did not answer within"),
        (requests.ConnectionError("refused"), "Could not reach the Apicbase token endpoint"),
    ],
)
def test_network_failures(
    http_mock: responses.RequestsMock, error: Exception, expected: str
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, body=error)
    with pytest.raises(ProviderError, match=expected) as info:
        post()
    assert info.value.status_code is None
    # Not chained: a transport error's text can quote the provider's bytes. Ours names it.
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert_no_secret(info.value)


def test_every_call_has_a_timeout(http_mock: responses.RequestsMock, settings: object) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json={})
    post()
    assert http_mock.calls[0].request.req_kwargs["timeout"] == 10.0


def test_provider_error_is_a_requests_http_error() -> None:
    # Callers that already catch requests.HTTPError keep working.
    assert issubclass(ProviderError, requests.HTTPError)


def test_redirects_are_not_followed(http_mock: responses.RequestsMock) -> None:
    # Following a 307 would re-send the client secret and refresh token to another host.
    http_mock.add(
        responses.POST, TOKEN_URL, status=307, headers={"Location": "https://evil.test/token"}
    )
    with pytest.raises(ProviderError, match="HTTP 307"):
        post()
    assert len(http_mock.calls) == 1


def test_cookies_from_one_call_are_not_sent_on_the_next(
    http_mock: responses.RequestsMock,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json={}, headers={"Set-Cookie": "tenant=1; Path=/"})
    http_mock.add(responses.POST, TOKEN_URL, json={})
    post()
    post()
    assert "Cookie" not in http_mock.calls[1].request.headers


def test_a_refusal_status_with_an_html_page_is_an_outage_not_a_refusal(
    http_mock: responses.RequestsMock,
) -> None:
    # A proxy's 401/403 page must not cost the tenant their connection.
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        status=403,
        body="<html>Forbidden</html>",
        content_type="text/html",
    )
    with pytest.raises(ProviderError) as info:
        ProviderClient("apicbase").post_form(TOKEN_URL, {}, refused=frozenset({401, 403}))
    assert not isinstance(info.value, ReauthorizationRequired)


def test_a_refusal_status_with_json_is_a_refusal(http_mock: responses.RequestsMock) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=401, json={"success": False})
    with pytest.raises(ReauthorizationRequired):
        ProviderClient("apicbase").post_form(TOKEN_URL, {}, refused=frozenset({401, 403}))
