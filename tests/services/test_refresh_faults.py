"""The fault matrix of docs/reliability.md: every way the token endpoint can fail a refresh,
and what the connection looks like afterwards. Nothing lost, a clear error, the right status."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import requests
import responses
from django.utils import timezone

from oauth_connect.exceptions import (
    ProviderConfigurationError,
    ProviderError,
    ReauthorizationRequired,
    UnusableAnswer,
)
from oauth_connect.models import Connection
from oauth_connect.services import refresh_connection
from tests.conftest import TOKEN_URL

pytestmark = pytest.mark.django_db
ERROR, REAUTH = Connection.Status.ERROR, Connection.Status.REAUTH_REQUIRED

FAULTS = [
    # (id, response kwargs, exception, words in the message, status afterwards)
    (
        "refused",
        {"body": requests.ConnectionError("refused")},
        ProviderError,
        "Could not reach",
        ERROR,
    ),
    (
        "timeout",
        {"body": requests.ReadTimeout("slow")},
        ProviderError,
        "did not answer within",
        ERROR,
    ),
    ("500", {"status": 500, "json": {}}, ProviderError, "HTTP 500", ERROR),
    (
        "502-html",
        {"status": 502, "body": "<html>Bad gateway</html>", "content_type": "text/html"},
        ProviderError,
        "not a JSON object (text/html)",
        ERROR,
    ),
    (
        "429",
        {"status": 429, "json": {"error": "slow_down"}, "headers": {"Retry-After": "120"}},
        ProviderError,
        "HTTP 429",
        ERROR,
    ),
    (
        "200-invalid-json",
        {"status": 200, "body": "{oops", "content_type": "application/json"},
        UnusableAnswer,
        "not a JSON object",
        ERROR,
    ),
    (
        "200-no-access-token",
        {"status": 200, "json": {"token_type": "Bearer"}},
        ProviderError,
        "without an access_token",
        ERROR,
    ),
    (
        "invalid_grant",
        {"status": 400, "json": {"error": "invalid_grant"}},
        ReauthorizationRequired,
        "Someone must reconnect",
        REAUTH,
    ),
    (
        "invalid_client",
        {"status": 401, "json": {"error": "invalid_client"}},
        ProviderConfigurationError,
        "An operator must fix CLIENT_ID",
        ERROR,
    ),
]


@pytest.mark.parametrize(
    ("response", "error", "words", "status"),
    [fault[1:] for fault in FAULTS],
    ids=[fault[0] for fault in FAULTS],
)
def test_a_failed_refresh_loses_nothing_and_says_what_happened(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    response: dict[str, Any],
    error: type[Exception],
    words: str,
    status: str,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, **response)
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))

    with pytest.raises(error, match=re.escape(words)) as info:
        refresh_connection(connection)

    assert type(info.value) is error
    assert f"#{connection.pk}" in str(info.value)  # names the connection
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == status
    assert (stored.access_token, stored.refresh_token) == ("access-token-1", "refresh-token-1")
    assert words in stored.last_error
    assert stored.events.get().kind == ("reauth_required" if status == REAUTH else "refresh_failed")
    if status == ERROR:
        # Transient: retried later, not hammered.
        assert stored.retry_not_before is not None and stored.retry_not_before > timezone.now()
