"""check_connection: one cheap authenticated call, through the product's own session."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import responses
from django.utils import timezone

from oauth_connect.exceptions import ProviderError, ReauthorizationRequired, UnsupportedOperation
from oauth_connect.models import Connection
from oauth_connect.services import check_connection
from tests.conftest import API_URL, TOKEN_URL, token_body

pytestmark = pytest.mark.django_db
ME = API_URL + "accounts/me/"


def test_a_working_token_passes(http_mock: responses.RequestsMock, make_connection: Any) -> None:
    http_mock.add(responses.GET, ME, json={"id": 1})
    connection = make_connection()

    message = check_connection(connection)

    assert message.startswith("Apicbase accepted the token: GET accounts/me/ answered HTTP 200")
    assert http_mock.calls[0].request.headers["Authorization"] == "Bearer access-token-1"


def test_an_expired_token_is_refreshed_before_the_call(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, ME, json={"id": 1})
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))

    check_connection(connection)

    assert http_mock.calls[1].request.headers["Authorization"] == "Bearer access-token-2"
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-2"


def test_a_revoked_grant_marks_the_connection_for_reauthorization(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, status=401)
    http_mock.add(responses.POST, TOKEN_URL, status=400, json={"error": "invalid_grant"})
    connection = make_connection()

    with pytest.raises(ReauthorizationRequired):
        check_connection(connection)

    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.REAUTH_REQUIRED


def test_a_token_refused_even_after_a_refresh_is_reported(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, status=401)
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, ME, status=401)
    connection = make_connection()

    with pytest.raises(ProviderError, match=r"refused the token \(HTTP 401") as info:
        check_connection(connection)

    assert f"#{connection.pk}" in str(info.value)
    assert "access-token" not in str(info.value)


def test_an_api_error_is_reported_with_its_status(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, status=503)
    with pytest.raises(ProviderError, match="answered HTTP 503 to GET accounts/me/"):
        check_connection(make_connection())


def test_a_provider_without_a_check_path_says_what_to_set(
    make_connection: Any, settings: Any
) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["CHECK_PATH"] = ""
    with pytest.raises(UnsupportedOperation, match=r'\["apicbase"\]\["CHECK_PATH"\]'):
        check_connection(make_connection())


def test_an_unreachable_api_is_a_provider_error_not_a_crash(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    import requests

    http_mock.add(responses.GET, ME, body=requests.ConnectionError("refused"))
    with pytest.raises(ProviderError, match=r"Could not reach Apicbase for GET accounts/me/"):
        check_connection(make_connection())


def test_a_redirect_is_not_the_api_accepting_the_token(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, ME, status=302, headers={"Location": "https://login.test/"})
    with pytest.raises(ProviderError, match="answered HTTP 302"):
        check_connection(make_connection())


INTROSPECT_URL = "https://api.apicbase.test/oauth/introspect/"


@pytest.fixture
def introspection_only(settings: Any) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"].update(
        {"CHECK_PATH": "", "INTROSPECT_URL": INTROSPECT_URL}
    )


def test_without_a_check_path_the_token_is_introspected(
    http_mock: responses.RequestsMock, make_connection: Any, introspection_only: None
) -> None:
    http_mock.add(responses.POST, INTROSPECT_URL, json={"active": True})

    message = check_connection(make_connection())

    assert message.startswith("Apicbase accepted the token: its introspection endpoint")
    sent = http_mock.calls[0].request.body
    assert "token=access-token-1" in sent and "token_type_hint=access_token" in sent


def test_an_inactive_token_is_refreshed_once_then_reported(
    http_mock: responses.RequestsMock, make_connection: Any, introspection_only: None
) -> None:
    http_mock.add(responses.POST, INTROSPECT_URL, json={"active": False})
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.POST, INTROSPECT_URL, json={"active": False})
    connection = make_connection()

    with pytest.raises(ProviderError, match="inactive, even after a refresh"):
        check_connection(connection)

    assert "token=access-token-2" in http_mock.calls[2].request.body


def test_the_admin_offers_test_connection_only_where_it_can(
    make_connection: Any, settings: Any
) -> None:
    from oauth_connect.services import can_check

    connection = make_connection()
    assert can_check(connection)
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["CHECK_PATH"] = ""
    assert not can_check(connection)
