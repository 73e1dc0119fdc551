"""connection.asession(): the sync session's promises, on an event loop. The API is a real
aiohttp server on a thread (tests/async_api.py); the token endpoint, called by the same refresh
code as the sync session's, is ``responses``. Each test's coroutine runs in ``async_to_sync``,
so the refresh's ``sync_to_async`` work comes back to the test's thread and its transaction."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import pytest
import responses
import time_machine
from asgiref.sync import async_to_sync
from django.utils import timezone
from yarl import URL

from oauth_connect.exceptions import (
    ConfigurationError,
    ConnectionUnavailable,
    DeadlineExceeded,
    ProviderError,
    ReauthorizationRequired,
    UnsafeURLError,
)
from oauth_connect.models import Connection
from oauth_connect.services import acheck_connection, adisconnect, arefresh_connection
from oauth_connect.services.asession import AsyncConnectionSession, close_shared_client
from tests.async_api import FakeApi, fake_api_fixture  # noqa: F401 - the fixture
from tests.conftest import TOKEN_URL, race, token_body
from tests.providers.test_client_tls import self_signed
from tests.providers.test_teletracker import answer as teletracker_answer
from tests.services.test_batch import StatementCounter

pytestmark = pytest.mark.django_db
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return async_to_sync(scenario)()


@pytest.fixture
def api_settings(settings: Any, fake_api: FakeApi) -> FakeApi:
    """Apicbase's API is the fake API."""
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["API_URL"] = fake_api.url()
    return fake_api


def token_endpoint(mock: responses.RequestsMock, *answers: tuple[int, dict[str, Any]]) -> list[Any]:
    """The token endpoint answers ``answers`` in turn (the last one from then on); returns the
    list of refresh tokens it was sent."""
    sent: list[Any] = []
    queue = list(answers)

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        sent.append(request.body)
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    mock.add_callback(responses.POST, TOKEN_URL, callback=answer)
    return sent


def test_sends_the_token_to_relative_and_absolute_api_urls(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()

    async def scenario() -> list[Any]:
        api = await connection.asession()
        bodies = []
        for url in ("accounts/me/", "/accounts/me/", api_settings.url("accounts/me/")):
            response = await api.get(url)
            bodies.append(await response.json())
        return bodies

    assert run(scenario) == [{"path": "/accounts/me/", "method": "GET"}] * 3
    assert api_settings.tokens_seen() == ["Bearer access-token-1"] * 3


def test_the_async_with_forms(api_settings: FakeApi, make_connection: Any) -> None:
    connection = make_connection()

    async def scenario() -> tuple[int, Any]:
        async with connection.asession() as api, api.post("items/", json={"a": 1}) as response:
            return response.status, await response.json()

    assert run(scenario) == (200, {"path": "/items/", "method": "POST"})


def test_refuses_to_send_the_token_to_another_origin(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()

    async def scenario() -> None:
        api = await connection.asession()
        for url in ("https://evil.test/api/v1/", f"http://localhost:{api_settings.port}/api/v1/"):
            with pytest.raises(UnsafeURLError, match="only sends its token to"):
                await api.get(url)

    run(scenario)
    assert api_settings.calls == []


def test_no_database_statement_per_call_while_the_token_is_valid(
    api_settings: FakeApi, make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = make_connection()

    async def scenario() -> None:
        api = await connection.asession()
        for _ in range(20):
            (await api.get("accounts/me/")).raise_for_status()

    with StatementCounter().counting(monkeypatch) as counter:
        run(scenario)
    assert counter.statements == []
    assert counter.connected == []
    assert len(api_settings.calls) == 20


def test_refreshes_before_sending_when_the_token_is_about_to_expire(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection(expires_at=timezone.now() + timedelta(minutes=2))
    sent = token_endpoint(http_mock, (200, token_body(2)))
    api_settings.accepted = {"access-token-2"}

    async def scenario() -> int:
        api = await connection.asession()
        return (await api.get("accounts/me/")).status

    assert run(scenario) == 200
    assert len(sent) == 1
    assert api_settings.tokens_seen() == ["Bearer access-token-2"]
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-2"


def test_a_long_lived_session_refreshes_when_its_token_ages(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection()
    sent = token_endpoint(http_mock, (200, token_body(2)))
    api_settings.accepted = {"access-token-1", "access-token-2"}

    async def scenario(api: AsyncConnectionSession) -> None:
        (await api.get("accounts/me/")).raise_for_status()

    async def whole() -> None:
        api = await connection.asession()
        await scenario(api)
        with time_machine.travel(timezone.now() + timedelta(minutes=58)):
            await scenario(api)

    run(whole)
    assert len(sent) == 1
    assert api_settings.tokens_seen() == ["Bearer access-token-1", "Bearer access-token-2"]


def test_on_401_refreshes_once_and_retries_once(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection()
    sent = token_endpoint(http_mock, (200, token_body(2)))
    api_settings.accepted = {"access-token-2"}

    async def scenario() -> int:
        return (await (await connection.asession()).get("accounts/me/")).status

    assert run(scenario) == 200
    assert len(sent) == 1
    assert api_settings.tokens_seen() == ["Bearer access-token-1", "Bearer access-token-2"]


def test_a_second_401_is_returned_not_looped(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection()
    sent = token_endpoint(http_mock, (200, token_body(2)))
    api_settings.accepted = set()

    async def scenario() -> int:
        return (await (await connection.asession()).get("accounts/me/")).status

    assert run(scenario) == 401
    assert len(sent) == 1
    assert len(api_settings.calls) == 2


def test_the_providers_own_expired_statuses_count(
    api_settings: FakeApi, credential_providers: None, make_connection: Any, settings: Any
) -> None:
    """TeleTracker answers an expired token with 403 as well as 401."""
    settings.OAUTH_CONNECT["PROVIDERS"]["teletracker"]["API_URL"] = api_settings.url()
    connection = make_connection(provider="teletracker")
    api_settings.accepted = {"access-token-2"}
    api_settings.refused_status = 403
    with responses.RequestsMock() as mock:
        mock.add(
            responses.POST,
            "https://api.teletracker.test/auth/refresh",
            json=teletracker_answer(2),
        )

        async def scenario() -> int:
            return (await (await connection.asession()).get("units/")).status

        status = run(scenario)
    assert status == 200, api_settings.calls
    assert api_settings.tokens_seen() == ["Bearer access-token-1", "Bearer access-token-2"]


def test_many_coroutines_with_an_expired_token_refresh_once(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    sent = token_endpoint(http_mock, (200, token_body(2)))
    api_settings.accepted = {"access-token-2"}

    async def one() -> int:
        # Each coroutine its own session, as each request of an async view would have.
        loaded = await Connection.objects.aget(pk=connection.pk)
        return (await (await loaded.asession()).get("accounts/me/")).status

    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(200))))

    assert run(scenario) == [200] * 200
    assert len(sent) == 1
    assert set(api_settings.tokens_seen()) == {"Bearer access-token-2"}


def test_a_401_storm_refreshes_once_and_the_waiters_touch_no_database(
    api_settings: FakeApi,
    make_connection: Any,
    http_mock: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = make_connection()
    sent = token_endpoint(http_mock, (200, token_body(2)))
    api_settings.accepted = {"access-token-2"}

    async def scenario() -> list[int]:
        sessions = [await connection.asession() for _ in range(200)]
        responses_ = await asyncio.gather(*(api.get("accounts/me/") for api in sessions))
        return [response.status for response in responses_]

    with StatementCounter().counting(monkeypatch) as counter:
        assert run(scenario) == [200] * 200
    assert len(sent) == 1
    assert api_settings.tokens_seen().count("Bearer access-token-2") == 200
    # One refresh's statements (read, write, event), not one round trip per waiting coroutine.
    assert 0 < len(counter.statements) < 20, counter.statements


def test_a_refused_grant_reaches_every_waiting_coroutine_with_one_call(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    sent = token_endpoint(http_mock, (400, {"error": "invalid_grant"}))

    async def one() -> Any:
        try:
            await (await connection.asession()).get("accounts/me/")
        except ReauthorizationRequired as err:
            return err
        return None

    async def scenario() -> list[Any]:
        return list(await asyncio.gather(*(one() for _ in range(50))))

    outcomes = run(scenario)
    assert all(isinstance(outcome, ReauthorizationRequired) for outcome in outcomes)
    assert len({id(outcome) for outcome in outcomes}) == 50  # one object each
    assert len(sent) == 1
    assert api_settings.calls == []
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.REAUTH_REQUIRED


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (Connection.Status.DISCONNECTED, ConnectionUnavailable),
        (Connection.Status.REAUTH_REQUIRED, ReauthorizationRequired),
    ],
)
def test_an_unusable_connection_raises_what_the_sync_session_raises(
    make_connection: Any, status: str, error: type[Exception]
) -> None:
    connection = make_connection(status=status, last_error="The grant was revoked.")
    with pytest.raises(error) as sync_error:
        connection.session()
    with pytest.raises(error) as async_error:
        connection.asession()
    assert str(async_error.value) == str(sync_error.value)


def test_a_provider_outage_before_expiry_does_not_fail_requests(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection(expires_at=timezone.now() + timedelta(minutes=2))
    sent = token_endpoint(http_mock, (503, {"error": "down"}))

    async def scenario() -> list[int]:
        api = await connection.asession()
        return [(await api.get("accounts/me/")).status for _ in range(3)]

    assert run(scenario) == [200, 200, 200]
    assert len(sent) == 1  # then backing off
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.ERROR


def test_a_provider_outage_after_expiry_raises(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    token_endpoint(http_mock, (503, {"error": "down"}))

    async def scenario() -> None:
        await (await connection.asession()).get("accounts/me/")

    with pytest.raises(ProviderError):
        run(scenario)
    assert api_settings.calls == []


def test_a_401_while_backing_off_is_handed_back_without_a_refresh(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection(
        status=Connection.Status.ERROR,
        retry_not_before=timezone.now() + timedelta(minutes=5),
        last_error="The token endpoint answered 503.",
    )
    api_settings.accepted = set()

    async def scenario() -> int:
        return (await (await connection.asession()).get("accounts/me/")).status

    assert run(scenario) == 401
    assert len(api_settings.calls) == 1


def test_a_body_that_cannot_be_sent_twice_is_not_retried(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()
    api_settings.accepted = set()

    async def body() -> Any:
        yield b"chunk"

    async def scenario() -> int:
        return (await (await connection.asession()).post("upload/", data=body())).status

    assert run(scenario) == 401
    assert len(api_settings.calls) == 1


def test_redirects_are_followed_within_the_api_only(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()
    elsewhere = f"http://localhost:{api_settings.port}/api/v1/accounts/me/"

    async def scenario() -> tuple[Any, Any]:
        api = await connection.asession()
        inside = await api.get("redirect/", params={"to": "/api/v1/accounts/me/"})
        outside = await api.get("redirect/", params={"to": elsewhere})
        return (inside.status, await inside.json(), len(inside.history)), (
            outside.status,
            outside.headers["Location"],
        )

    inside, outside = run(scenario)
    assert inside == (200, {"path": "/accounts/me/", "method": "GET"}, 1)
    assert outside == (302, elsewhere)
    assert api_settings.tokens_seen() == ["Bearer access-token-1"] * 3


def test_the_deadline_cuts_a_slow_body(api_settings: FakeApi, make_connection: Any) -> None:
    connection = make_connection()
    api_settings.drip_pause = 0.1  # 5 s for the whole body

    async def scenario() -> None:
        await (await connection.asession()).get("drip/", deadline=0.5)

    with pytest.raises(DeadlineExceeded, match="within 0.5 seconds") as caught:
        run(scenario)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert caught.value.connection == connection


def test_a_streamed_body_is_the_callers_to_read(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()
    api_settings.drip_pause = 0.001

    async def scenario() -> bytes:
        api = await connection.asession()
        async with api.get("drip/", stream=True, deadline=5) as response:
            return await response.content.read()

    assert run(scenario) == b"." * 50


def test_errors_and_reprs_never_show_the_token(api_settings: FakeApi, make_connection: Any) -> None:
    connection = make_connection()

    async def scenario() -> tuple[str, str]:
        api = await connection.asession()
        response = await api.get("status/500")
        try:
            response.raise_for_status()
        except Exception as err:
            return repr(err), repr(api)
        raise AssertionError("no error for a 500")

    error, session = run(scenario)
    assert "access-token-1" not in error and "[redacted]" in error
    assert "access-token-1" not in session


def test_the_callers_authorization_header_never_replaces_the_token(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()

    async def scenario() -> None:
        api = await connection.asession()
        await api.get("accounts/me/", headers={"authorization": "Bearer mine", "X-Extra": "1"})

    run(scenario)
    assert api_settings.tokens_seen() == ["Bearer access-token-1"]


@pytest.mark.django_db(transaction=True)
def test_sync_threads_and_coroutines_racing_refresh_once(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    """Eight threads on connection.session() and 100 coroutines on connection.asession() find
    the same expired token at once: one refresh (SQLite here, so the per-process lock decides;
    tests/e2e/test_asgi.py races processes on PostgreSQL)."""
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    sent = token_endpoint(http_mock, (200, token_body(2)))
    http_mock.add_passthru(api_settings.url())
    api_settings.accepted = {"access-token-2"}
    start = threading.Event()

    def sync_worker() -> int:
        start.wait(30)
        session = Connection.objects.get(pk=connection.pk).session()
        return int(session.get("accounts/me/").status_code)

    async def async_workers() -> list[int]:
        loaded = await Connection.objects.aget(pk=connection.pk)
        sessions = [await loaded.asession() for _ in range(100)]
        start.set()
        results = await asyncio.gather(*(api.get("accounts/me/") for api in sessions))
        return [response.status for response in results]

    outcomes: list[Any] = []
    racer = threading.Thread(target=lambda: outcomes.extend(race(8, sync_worker)))
    racer.start()
    try:
        statuses = async_to_sync(async_workers)()
    finally:
        start.set()
        racer.join(60)
    assert statuses == [200] * 100
    assert outcomes == [200] * 8
    assert len(sent) == 1


def test_the_async_service_calls(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["CHECK_PATH"] = "accounts/me/"
    http_mock.add_passthru(api_settings.url())
    connection = make_connection()
    sent = token_endpoint(http_mock, (200, token_body(2)))
    api_settings.accepted = {"access-token-1", "access-token-2"}
    http_mock.add(responses.POST, "https://api.apicbase.test/oauth/revoke/")

    async def scenario() -> tuple[bool, str, bool]:
        refreshed = await arefresh_connection(connection, force=True)
        checked = await acheck_connection(connection)
        revoked = await adisconnect(connection)
        return refreshed, checked, revoked

    refreshed, checked, revoked = run(scenario)
    assert refreshed and revoked and len(sent) == 1
    assert "accepted the token" in checked
    assert connection.status == Connection.Status.DISCONNECTED
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.DISCONNECTED


def test_without_the_async_extra_asession_says_what_to_install(
    make_connection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "oauth_connect.services.asession", raising=False)
    monkeypatch.delitem(sys.modules, "oauth_connect._internal.aio_client", raising=False)
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # what an import of a missing one meets
    with pytest.raises(ConfigurationError, match=r'pip install "oauth_connect\[async\]"'):
        make_connection().asession()


def test_a_netrc_entry_for_the_api_host_neither_replaces_the_token_nor_fails(
    api_settings: FakeApi, make_connection: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-password\n")
    monkeypatch.setenv("NETRC", str(netrc))
    connection = make_connection()

    async def scenario() -> int:
        return (await (await connection.asession()).get("accounts/me/")).status

    assert run(scenario) == 200
    assert api_settings.tokens_seen() == ["Bearer access-token-1"]


def test_the_environments_proxy_is_used(
    api_settings: FakeApi, make_connection: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """The fake API plays the proxy: the API's host doesn't resolve, so only a request sent
    through the proxy can reach it."""
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["API_URL"] = (
        "http://api.unresolvable.test/api/v1/"
    )
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{api_settings.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    connection = make_connection()

    async def scenario() -> int:
        return (await (await connection.asession()).get("accounts/me/")).status

    assert run(scenario) == 200
    assert api_settings.calls == [("GET", "/accounts/me/", "Bearer access-token-1")]


def test_without_a_deadline_each_wait_for_data_has_the_timeout(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()
    api_settings.drip_pause = 1.0  # a byte a second: longer than the timeout

    async def scenario() -> None:
        api = await connection.asession(timeout=0.3)
        await api.get("drip/", deadline=None)

    with pytest.raises(aiohttp.ServerTimeoutError):
        run(scenario)


def test_a_form_holding_a_file_is_not_resent_empty_after_a_401(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()
    api_settings.accepted = set()

    async def scenario() -> int:
        api = await connection.asession()
        upload = {"file": io.BytesIO(b"file contents")}
        return (await api.post("upload/", data=upload)).status

    assert run(scenario) == 401  # handed back: no refresh, no second, empty, upload
    assert len(api_settings.calls) == 1


def test_a_307_is_not_followed_with_a_body_already_sent(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()

    async def body() -> Any:
        yield b"chunk"

    async def scenario() -> tuple[int, int]:
        api = await connection.asession()
        to = {"to": "/api/v1/items/", "status": "307"}
        streamed = await api.post("redirect/", params=to, data=body())
        resent = await api.post("redirect/", params=to, json={"a": 1})
        return streamed.status, resent.status

    assert run(scenario) == (307, 200)
    assert [path for _, path, _ in api_settings.calls] == ["/redirect/", "/redirect/", "/items/"]


def test_a_redirect_loop_ends_in_too_many_redirects(
    api_settings: FakeApi, make_connection: Any
) -> None:
    connection = make_connection()

    async def scenario() -> None:
        await (await connection.asession()).get("loop/")

    with pytest.raises(aiohttp.TooManyRedirects) as caught:
        run(scenario)
    assert "access-token-1" not in repr(caught.value)
    assert len(api_settings.calls) == 31  # the first request and requests' 30 redirects


def test_one_slow_api_does_not_hold_up_another(
    api_settings: FakeApi,
    make_connection: Any,
    other_organisation: Any,
    credential_providers: None,
    settings: Any,
) -> None:
    """101 calls in flight to a slow API, more than a host's share of the event loop's
    connections, and one to another API with a short deadline: it goes straight through."""
    slow = make_connection()
    api_settings.drip_pause = 0.04  # two seconds a body
    other_api = FakeApi()
    other_api.accepted = {"access-token-1"}
    other_api.start()
    try:
        settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["API_URL"] = api_settings.url()
        settings.OAUTH_CONNECT["PROVIDERS"]["teletracker"]["API_URL"] = other_api.url()
        fast = make_connection(tenant=other_organisation, provider="teletracker")

        async def scenario() -> int:
            slow_api, fast_api = await slow.asession(), await fast.asession()
            stuck = [asyncio.ensure_future(slow_api.get("drip/")) for _ in range(101)]
            await asyncio.sleep(0.3)  # let them all connect: an event loop's own clock
            status = (await fast_api.get("vehicles/", deadline=1)).status
            await asyncio.gather(*stuck)
            return status

        assert run(scenario) == 200
    finally:
        other_api.stop()


def test_the_callers_own_aiohttp_arguments(
    api_settings: FakeApi, make_connection: Any, http_mock: responses.RequestsMock
) -> None:
    connection = make_connection()
    sent = token_endpoint(http_mock, (200, token_body(2)))
    api_settings.accepted = {"access-token-2"}

    async def scenario() -> list[Any]:
        api = await connection.asession()
        # raise_for_status applies after the refresh and retry, not to the first 401.
        refreshed = await api.get("accounts/me/", raise_for_status=True)
        unfollowed = await api.get("redirect/", params={"to": "/x/"}, allow_redirects=False)
        with_timeouts = [
            await api.get("accounts/me/", timeout=5),
            await api.get("accounts/me/", timeout=aiohttp.ClientTimeout(total=5)),
        ]
        as_task = await asyncio.create_task(api.get(URL(api_settings.url("accounts/me/"))))
        head = await api.request("head", "redirect/", params={"to": "/api/v1/accounts/me/"})
        return [
            refreshed.status,
            unfollowed.status,
            *(response.status for response in with_timeouts),
            as_task.status,
            head.method,
        ]

    assert run(scenario) == [200, 302, 200, 200, 200, "HEAD"]
    assert len(sent) == 1


def test_a_deadline_of_zero_sends_nothing(api_settings: FakeApi, make_connection: Any) -> None:
    connection = make_connection()

    async def scenario() -> None:
        await (await connection.asession()).get("accounts/me/", deadline=0)

    with pytest.raises(DeadlineExceeded):
        run(scenario)
    assert api_settings.calls == []


def test_all_proxy_and_no_proxy_ranges_as_requests_reads_them(
    api_settings: FakeApi, make_connection: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["API_URL"] = (
        "http://api.unresolvable.test/api/v1/"
    )
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{api_settings.port}")
    via_proxy = make_connection()

    async def through() -> int:
        connection = await Connection.objects.aget(pk=via_proxy.pk)
        return (await (await connection.asession()).get("accounts/me/")).status

    assert run(through) == 200

    # A proxy that isn't there, bypassed for loopback addresses by a range.
    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["API_URL"] = api_settings.url()
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")
    assert run(through) == 200
    assert len(api_settings.calls) == 2


def test_requests_ca_bundle_is_trusted(
    make_connection: Any, monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Any
) -> None:
    certificate, context = self_signed(tmp_path)
    api = FakeApi(tls=context)
    api.start()
    try:
        settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["API_URL"] = api.url()
        connection = make_connection()

        async def scenario() -> int:
            return (await (await connection.asession()).get("accounts/me/")).status

        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            run(scenario)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
        assert run(scenario) == 200
    finally:
        api.stop()


def test_closing_the_shared_client_by_hand_leaves_nothing_pending(
    api_settings: FakeApi, make_connection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    connection = make_connection()

    async def scenario() -> None:
        await (await connection.asession()).get("accounts/me/")

    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            loop.run_until_complete(scenario())
            loop.run_until_complete(close_shared_client())
    finally:
        loop.close()
    del loop
    gc.collect()
    assert [record.getMessage() for record in caplog.records if record.name == "asyncio"] == []
