"""A provider that stalls, against real sockets: no request through ``connection.session()``
outlives its deadline, and a refresh stuck on a dripping token endpoint holds the connection's
row lock no longer than ``HTTP_DEADLINE`` (PostgreSQL), so the tenant's other workers are not
queued behind it for longer."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connections, transaction
from django.utils import timezone

from oauth_connect.exceptions import DeadlineExceeded
from oauth_connect.models import Connection
from oauth_connect.services import refresh_connection
from tests.conftest import apicbase_settings, oauth_connect_settings, requires_postgres
from tests.hostile_server import (
    HostileServer,
    drip,
    head,
    hostile_server_fixture,  # noqa: F401 - the fixture
    json_response,
)

DEADLINE = 1.0
SLOW_ANSWER = json_response(200, {"ok": True})  # about 110 bytes: 11 s at 10 bytes a second


@pytest.fixture
def api(hostile_server: HostileServer, settings: Any) -> HostileServer:
    """The hostile server as both Apicbase's API and its token endpoint."""
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={
            "apicbase": apicbase_settings(
                API_URL=hostile_server.url("/api/"), TOKEN_URL=hostile_server.url()
            )
        },
        HTTP_TIMEOUT=1,
        HTTP_DEADLINE=DEADLINE,
    )
    return hostile_server


@pytest.mark.django_db
def test_a_dripping_api_answer_is_cut_off_at_the_deadline(
    api: HostileServer, make_connection: Any
) -> None:
    api.answer(drip(SLOW_ANSWER, step=1, every=0.1))
    connection = make_connection()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        connection.session().get("me/")
    assert time.monotonic() - started < 5  # not the 11 s the drip takes
    exchange = api.finished()
    assert exchange.hung_up and exchange.sent < len(SLOW_ANSWER) // 2
    assert "did not finish answering within 1 seconds" in str(info.value)
    assert "deadline=" in str(info.value)  # what to do about it
    assert str(connection.pk) in str(info.value)
    # An API that is slow says nothing about the tokens: the connection is untouched.
    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.status, stored.consecutive_failures) == (Connection.Status.ACTIVE, 0)


@pytest.mark.django_db
def test_a_body_only_the_close_would_end_is_never_returned_cut(
    api: HostileServer, make_connection: Any
) -> None:
    # No Content-Length, no chunks: to http.client the deadline's cut looks like the end of the
    # body. The session must not hand the fragment back as a 200.
    body = b'{"results": [' + b'{"id": 1}, ' * 20 + b"{}]}"
    api.answer(
        head(200, [("Content-Type", "application/json"), ("Connection", "close")]),
        drip(body, step=1, every=0.1),
    )
    with pytest.raises(DeadlineExceeded):
        make_connection().session().get("me/")
    assert api.finished().hung_up


@pytest.mark.django_db
def test_a_request_may_lift_or_lengthen_the_deadline(
    api: HostileServer, make_connection: Any
) -> None:
    # 1.6 s of drip: past the session's deadline, within the one this request asks for.
    api.answer(drip(SLOW_ANSWER, step=10, every=0.15))
    api.answer(drip(SLOW_ANSWER, step=10, every=0.15))
    session = make_connection().session()
    assert session.get("me/", deadline=None).json() == {"ok": True}
    assert session.get("me/", deadline=30).json() == {"ok": True}


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_stalled_refresh_holds_the_row_lock_no_longer_than_the_deadline(
    api: HostileServer, make_connection: Any
) -> None:
    api.answer(drip(SLOW_ANSWER, step=1, every=0.1))
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    failures: list[BaseException] = []

    def refresh() -> None:
        try:
            refresh_connection(connection)
        except BaseException as err:
            failures.append(err)
        finally:
            connections.close_all()

    worker = threading.Thread(target=refresh)
    worker.start()
    api.arrived()  # the worker holds the row lock and waits on the token endpoint
    waited_from = time.monotonic()
    # Another worker of the same tenant queues on the row lock, allowing itself the deadline
    # plus a margin for the database's work: it gets the lock, long before the 11 s drip ends.
    try:
        with transaction.atomic(), connections["default"].cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", ["4000ms"])
            Connection.objects.select_for_update().get(pk=connection.pk)
            waited = time.monotonic() - waited_from
    except OperationalError:  # pragma: no cover - what the test is here to catch
        pytest.fail("the stalled refresh held the row lock past the deadline")
    worker.join(timeout=10)
    assert waited < DEADLINE + 3
    [failure] = failures
    assert isinstance(failure, DeadlineExceeded)
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ERROR and stored.access_token == "access-token-1"


# More of the hostile tester's cases --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", [307, 308, 302])
def test_a_redirect_from_the_revocation_endpoint_is_no_revocation(
    api: HostileServer, make_connection: Any, settings: Any, status: int
) -> None:
    from oauth_connect.services import disconnect

    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["REVOKE_URL"] = api.url("/revoke/")
    api.answer(
        head(status, [("Location", "http://127.0.0.1:9/elsewhere"), ("Content-Length", "0")])
    )
    connection = make_connection()
    assert disconnect(connection) is False  # wiped here, not revoked there
    assert len(api.exchanges) == 1  # the redirect was not followed
    assert f"answered HTTP {status}" in connection.events.latest("pk").message


@pytest.mark.django_db
def test_a_revocation_echoing_the_client_secret_in_its_status_line_is_masked(
    api: HostileServer, make_connection: Any, settings: Any, caplog: Any
) -> None:
    from oauth_connect.services import disconnect
    from tests.conftest import CLIENT_SECRET

    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["REVOKE_URL"] = api.url("/revoke/")
    api.answer(f"HTTP/1.1 2xx {CLIENT_SECRET}\r\n\r\n".encode())
    connection = make_connection()
    assert disconnect(connection) is False
    event = connection.events.latest("pk")
    assert "Revocation failed" in event.message and CLIENT_SECRET not in event.message
    assert CLIENT_SECRET not in caplog.text


@pytest.mark.django_db
def test_the_body_of_a_401_that_is_retried_is_never_read(
    api: HostileServer, make_connection: Any
) -> None:
    import tracemalloc

    from tests.conftest import token_body
    from tests.hostile_server import MIB, repeated

    huge = 64 * MIB
    api.answer(
        head(401, [("Content-Length", str(huge)), ("Connection", "close")]), repeated(b"x", huge)
    )
    api.answer(json_response(200, token_body(2)))
    api.answer(json_response(200, {"ok": True}))
    session = make_connection().session()
    tracemalloc.start()
    try:
        assert session.get("me/").json() == {"ok": True}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB
    assert api.finished(1).sent < huge // 4


@pytest.mark.django_db
def test_a_stall_in_the_middle_of_a_body_reads_as_a_timeout(
    api: HostileServer, make_connection: Any, settings: Any
) -> None:
    from oauth_connect.exceptions import ProviderError
    from tests.hostile_server import Send

    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "HTTP_TIMEOUT": 0.3, "HTTP_DEADLINE": 5}
    api.answer(
        head(200, [("Content-Length", "100"), ("Connection", "close")]),
        b'{"access',
        Send(lambda: [b""], 0, every=1.0),  # then nothing for a second, past HTTP_TIMEOUT
    )
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(ProviderError, match=r"did not answer within 0.3 seconds \(HTTP_TIMEOUT\)"):
        refresh_connection(connection)


@pytest.mark.django_db
def test_a_garbled_api_answer_to_the_check_says_so_and_quotes_no_token(
    api: HostileServer, make_connection: Any, settings: Any
) -> None:
    from oauth_connect.exceptions import ProviderError
    from oauth_connect.services import check_connection

    settings.OAUTH_CONNECT["PROVIDERS"]["apicbase"]["CHECK_PATH"] = "me/"
    api.answer(b"HTTP/1.1 2xx Bearer access-token-1\r\n\r\n")
    with pytest.raises(ProviderError) as info:
        check_connection(make_connection())
    assert "broke off or garbled its answer to GET me/" in str(info.value)
    assert "access-token-1" not in str(info.value) and info.value.__cause__ is None
