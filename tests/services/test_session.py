"""connection.session(): auth header, URL handling, proactive refresh, one retry on 401."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import responses
import time_machine

from oauth_connect.exceptions import (
    ConnectionUnavailable,
    ReauthorizationRequired,
    UnsafeURLError,
)
from oauth_connect.models import Connection
from tests.conftest import API_URL, TOKEN_URL, token_body

pytestmark = pytest.mark.django_db
ME = API_URL + "accounts/me/"


def auth_of(call: Any) -> str:
    return call.request.headers["Authorization"]


def test_sends_bearer_token_to_relative_urls(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, json={"ok": True})
    http_mock.add(responses.GET, ME, json={"ok": True})
    http_mock.add(responses.GET, ME, json={"ok": True})
    session = make_connection().session()
    for url in ("accounts/me/", "/accounts/me/", ME):
        assert session.get(url).json() == {"ok": True}
    assert [auth_of(call) for call in http_mock.calls] == ["Bearer access-token-1"] * 3
    assert http_mock.calls[0].request.headers["User-Agent"].startswith("oauth-connect/")
    assert http_mock.calls[0].request.req_kwargs["timeout"] == 10.0


def test_api_url_without_trailing_slash(
    http_mock: responses.RequestsMock, make_connection: Any, settings: Any
) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["API_URL"] = API_URL.rstrip("/")
    http_mock.add(responses.GET, ME, json={})
    make_connection().session().get("accounts/me/")
    assert http_mock.calls[0].request.url == ME


def test_refuses_to_send_the_token_to_another_host(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    session = make_connection().session()
    for url in ("https://evil.test/accounts/me/", "http://api.apicbase.test/api/v1/"):
        with pytest.raises(UnsafeURLError, match="only sends its token to"):
            session.get(url)
    assert len(http_mock.calls) == 0


def test_no_database_query_per_call_while_the_token_is_valid(
    http_mock: responses.RequestsMock, make_connection: Any, django_assert_num_queries: Any
) -> None:
    for _ in range(3):
        http_mock.add(responses.GET, ME, json={})
    connection = make_connection()
    session = connection.session()
    with django_assert_num_queries(0):
        for _ in range(3):
            session.get("accounts/me/")


def test_refreshes_before_sending_when_the_token_is_about_to_expire(
    http_mock: responses.RequestsMock, make_connection: Any, frozen_now: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, ME, json={})
    # Expires within the 5-minute leeway.
    connection = make_connection(expires_at=frozen_now + timedelta(minutes=2))
    connection.session().get("accounts/me/")
    assert [call.request.method for call in http_mock.calls] == ["POST", "GET"]
    assert auth_of(http_mock.calls[1]) == "Bearer access-token-2"


def test_a_long_lived_session_refreshes_when_its_token_ages(
    http_mock: responses.RequestsMock, make_connection: Any, frozen_now: Any
) -> None:
    http_mock.add(responses.GET, ME, json={})
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, ME, json={})
    session = make_connection(expires_at=frozen_now + timedelta(hours=1)).session()
    session.get("accounts/me/")
    with time_machine.travel(frozen_now + timedelta(minutes=56), tick=False):
        session.get("accounts/me/")
    assert [auth_of(c) for c in http_mock.calls if c.request.method == "GET"] == [
        "Bearer access-token-1",
        "Bearer access-token-2",
    ]


def test_on_401_refreshes_once_and_retries_once(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, status=401)
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, ME, json={"ok": True})
    connection = make_connection()
    response = connection.session().get("accounts/me/")
    assert response.status_code == 200
    assert [auth_of(c) for c in http_mock.calls if c.request.method == "GET"] == [
        "Bearer access-token-1",
        "Bearer access-token-2",
    ]
    assert Connection.objects.get(pk=connection.pk).refresh_token == "refresh-token-2"


def test_a_second_401_is_returned_not_looped(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, status=401)
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, ME, status=401)
    response = make_connection().session().get("accounts/me/")
    assert response.status_code == 401
    assert len(http_mock.calls) == 3


def test_401_with_a_dead_grant_raises_reauthorization_required(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, status=401)
    http_mock.add(responses.POST, TOKEN_URL, status=400, json={"error": "invalid_grant"})
    connection = make_connection()
    with pytest.raises(ReauthorizationRequired):
        connection.session().get("accounts/me/")
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.REAUTH_REQUIRED


def test_request_with_a_stream_body_is_not_retried(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, ME, status=401)
    response = make_connection().session().post("accounts/me/", data=iter([b"a", b"b"]))
    assert response.status_code == 401
    assert len(http_mock.calls) == 1


def test_other_error_statuses_are_returned_untouched(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, status=403)
    assert make_connection().session().get("accounts/me/").status_code == 403
    assert len(http_mock.calls) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (Connection.Status.REAUTH_REQUIRED, ReauthorizationRequired),
        (Connection.Status.DISCONNECTED, ConnectionUnavailable),
    ],
)
def test_unusable_connection_raises_at_once(
    make_connection: Any, status: str, error: type[Exception]
) -> None:
    connection = make_connection(status=status, last_error="invalid_grant")
    with pytest.raises(error, match=f"#{connection.pk}"):
        connection.session()


def test_session_repr_has_no_token(make_connection: Any) -> None:
    session = make_connection().session()
    assert "access-token-1" not in repr(session)


def test_upload_of_a_file_is_not_retried_after_401(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    import io

    http_mock.add(responses.POST, ME, status=401)
    response = (
        make_connection()
        .session()
        .post("accounts/me/", files={"upload": ("a.txt", io.BytesIO(b"content"))})
    )
    assert response.status_code == 401
    assert len(http_mock.calls) == 1


def test_provider_outage_before_expiry_does_not_fail_requests(
    http_mock: responses.RequestsMock, make_connection: Any, frozen_now: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=503, body="down")
    http_mock.add(responses.GET, ME, json={})
    http_mock.add(responses.GET, ME, json={})
    connection = make_connection(expires_at=frozen_now + timedelta(minutes=2))
    session = connection.session()

    assert session.get("accounts/me/").status_code == 200  # tried to refresh, used the token
    assert session.get("accounts/me/").status_code == 200  # backing off: no second attempt

    assert [c.request.method for c in http_mock.calls] == ["POST", "GET", "GET"]
    assert auth_of(http_mock.calls[2]) == "Bearer access-token-1"
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.ERROR


def test_provider_outage_after_expiry_raises(
    http_mock: responses.RequestsMock, make_connection: Any, frozen_now: Any
) -> None:
    from oauth_connect.exceptions import ProviderError

    http_mock.add(responses.POST, TOKEN_URL, status=503, body="down")
    connection = make_connection(expires_at=frozen_now - timedelta(seconds=1))
    with pytest.raises(ProviderError, match="HTTP 503"):
        connection.session().get("accounts/me/")


def test_a_token_shorter_lived_than_the_leeway_is_not_refreshed_on_every_call(
    http_mock: responses.RequestsMock, make_connection: Any, frozen_now: Any
) -> None:
    # A 4-minute token under the 5-minute leeway: refresh at half its life, not at once.
    http_mock.add(responses.GET, ME, json={})
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, ME, json={})
    connection = make_connection(
        last_refreshed_at=frozen_now, expires_at=frozen_now + timedelta(minutes=4)
    )
    session = connection.session()
    session.get("accounts/me/")
    with time_machine.travel(frozen_now + timedelta(minutes=2, seconds=1), tick=False):
        session.get("accounts/me/")
    assert [c.request.method for c in http_mock.calls] == ["GET", "POST", "GET"]


def test_a_relative_url_with_a_url_in_its_query_stays_relative(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, json={})
    make_connection().session().get("accounts/me/?next=https://elsewhere.test/")
    assert http_mock.calls[0].request.url.startswith(ME + "?next=")


def test_a_netrc_entry_for_the_api_host_cannot_replace_the_token(
    http_mock: responses.RequestsMock, make_connection: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.apicbase.test login someone password elses\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    http_mock.add(responses.GET, ME, json={})
    make_connection().session().get("accounts/me/")
    assert auth_of(http_mock.calls[0]) == "Bearer access-token-1"


def test_nothing_to_refresh_with_costs_no_query_per_call_before_expiry(
    http_mock: responses.RequestsMock, make_connection: Any, django_assert_num_queries: Any
) -> None:
    # Within the refresh margin, but with no refresh token: the token is used until it
    # expires, without taking the row lock on every request to find that out again.
    from datetime import timedelta

    from django.utils import timezone

    for _ in range(3):
        http_mock.add(responses.GET, ME, json={})
    connection = make_connection(
        refresh_token="", expires_at=timezone.now() + timedelta(seconds=60)
    )
    session = connection.session()
    with django_assert_num_queries(0):
        for _ in range(3):
            assert session.get("accounts/me/").status_code == 200
