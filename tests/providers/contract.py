"""The contract every provider keeps, as tests. A provider's test module subclasses
``ProviderContract`` and supplies only its fixtures (class attributes and the few methods at the
top); the tests run the real service layer against the provider's endpoints mocked with
``responses``."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import responses
from django.utils import timezone

from oauth_connect.exceptions import ProviderError, ReauthorizationRequired
from oauth_connect.models import Connection
from oauth_connect.providers import registry
from oauth_connect.services import refresh_connection
from tests.conftest import oauth_connect_settings


@pytest.mark.django_db
class ProviderContract:
    #: The provider id under test.
    provider_id: ClassVar[str]
    #: Where relative API paths go, and the header scheme expected on API calls.
    api_url: ClassVar[str]
    header_scheme: ClassVar[str] = "Bearer"
    #: Statuses on which the session refreshes and retries once.
    expired_token_statuses: ClassVar[tuple[int, ...]] = (401,)
    #: The endpoint a refresh calls.
    refresh_method: ClassVar[str] = responses.POST
    refresh_url: ClassVar[str]

    def provider_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def refresh_answer(self, n: int) -> dict[str, Any]:
        """The JSON body of a refresh that issues access-token-N (and refresh-token-N)."""
        raise NotImplementedError

    def dead_grant_answer(self) -> tuple[int, dict[str, Any]]:
        """Status and JSON body with which the provider refuses the stored grant."""
        raise NotImplementedError

    #: Whether a refresh gives the access token an expiry (Custobar's tokens have none).
    refresh_sets_expiry = True

    def connection_fields(self) -> dict[str, Any]:
        """Extra stored fields a connection of this provider has (credentials, account...)."""
        return {}

    # Shared fixtures --------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def configured(self, settings: Any) -> None:
        settings.OAUTH_CONNECT = oauth_connect_settings(
            PROVIDERS={self.provider_id: self.provider_settings()}
        )

    @pytest.fixture
    def expired_connection(self, make_connection: Any) -> Connection:
        return make_connection(
            provider=self.provider_id,
            expires_at=timezone.now() - timedelta(minutes=1),
            **self.connection_fields(),
        )

    def add_refresh(self, mock: responses.RequestsMock, status: int, body: Any) -> None:
        mock.add(
            self.refresh_method,
            self.refresh_url,
            status=status,
            body=json.dumps(body),
            content_type="application/json",
        )

    # The contract -----------------------------------------------------------------------------

    def test_registry_serves_the_provider(self) -> None:
        provider = registry.get(self.provider_id)
        assert provider.provider_id == self.provider_id
        assert provider.header_scheme == self.header_scheme
        assert set(provider.expired_token_statuses) == set(self.expired_token_statuses)

    def test_refresh_stores_the_new_tokens(
        self, http_mock: responses.RequestsMock, expired_connection: Connection
    ) -> None:
        self.add_refresh(http_mock, 200, self.refresh_answer(2))
        assert refresh_connection(expired_connection) is True
        stored = Connection.objects.get(pk=expired_connection.pk)
        assert stored.access_token == "access-token-2"
        assert stored.status == Connection.Status.ACTIVE
        if self.refresh_sets_expiry:
            assert stored.expires_at is not None and stored.expires_at > timezone.now()
        else:
            assert stored.expires_at is None

    def test_dead_grant_requires_reauthorization(
        self, http_mock: responses.RequestsMock, expired_connection: Connection
    ) -> None:
        status, body = self.dead_grant_answer()
        self.add_refresh(http_mock, status, body)
        with pytest.raises(ReauthorizationRequired):
            refresh_connection(expired_connection)
        stored = Connection.objects.get(pk=expired_connection.pk)
        assert stored.status == Connection.Status.REAUTH_REQUIRED

    @pytest.mark.parametrize("status", [500, 502])
    def test_server_errors_are_transient_and_keep_the_tokens(
        self, http_mock: responses.RequestsMock, expired_connection: Connection, status: int
    ) -> None:
        http_mock.add(
            self.refresh_method,
            self.refresh_url,
            status=status,
            body="<html>error</html>",
            content_type="text/html",
        )
        with pytest.raises(ProviderError) as info:
            refresh_connection(expired_connection)
        assert not isinstance(info.value, ReauthorizationRequired)
        stored = Connection.objects.get(pk=expired_connection.pk)
        assert stored.status == Connection.Status.ERROR
        assert stored.access_token == "access-token-1"

    def test_malformed_answer_is_a_provider_error(
        self, http_mock: responses.RequestsMock, expired_connection: Connection
    ) -> None:
        http_mock.add(
            self.refresh_method,
            self.refresh_url,
            status=200,
            body="{oops",
            content_type="application/json",
        )
        with pytest.raises(ProviderError):
            refresh_connection(expired_connection)
        assert Connection.objects.get(pk=expired_connection.pk).status == Connection.Status.ERROR

    def test_session_authenticates_and_retries_after_an_expired_token_answer(
        self, http_mock: responses.RequestsMock, make_connection: Any
    ) -> None:
        url = self.api_url + "things/"
        for status in sorted(self.expired_token_statuses):  # each one the provider uses
            connection = make_connection(
                provider=self.provider_id, label=f"got-{status}", **self.connection_fields()
            )
            calls_before = len(http_mock.calls)
            http_mock.add(responses.GET, url, status=status)
            self.add_refresh(http_mock, 200, self.refresh_answer(2))
            http_mock.add(responses.GET, url, json={"ok": True})

            response = connection.session().get("things/")

            assert response.json() == {"ok": True}, status
            sent = [
                call.request.headers["Authorization"]
                for call in http_mock.calls[calls_before:]
                if call.request.url == url
            ]
            assert sent == [
                f"{self.header_scheme} access-token-1",
                f"{self.header_scheme} access-token-2",
            ], status

    def test_no_secret_in_repr_or_errors(
        self, http_mock: responses.RequestsMock, expired_connection: Connection
    ) -> None:
        status, body = self.dead_grant_answer()
        self.add_refresh(http_mock, status, body)
        with pytest.raises(ReauthorizationRequired) as info:
            refresh_connection(expired_connection)
        for text in (
            repr(expired_connection),
            str(expired_connection),
            str(info.value),
            expired_connection.last_error,
        ):
            assert "access-token-1" not in text and "refresh-token-1" not in text
