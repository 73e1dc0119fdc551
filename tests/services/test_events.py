"""Signal receivers are the host's code: one that raises must not undo or fail our work."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.utils import timezone

from oauth_connect.signals import connection_refreshed
from tests.conftest import API_URL, TOKEN_URL, token_body


@pytest.fixture
def broken_receiver() -> Iterator[None]:
    def notify_billing(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("billing is down")

    connection_refreshed.connect(notify_billing, weak=False)
    yield
    connection_refreshed.disconnect(notify_billing)


def test_a_raising_receiver_is_logged_and_the_api_call_goes_on(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    broken_receiver: None,
    received: list[Any],
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, f"{API_URL}recipes/", json={"results": []})
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))

    with django_capture_on_commit_callbacks(execute=True):  # the signals go out on commit
        response = connection.session().get("recipes/")

    assert response.status_code == 200
    assert connection.access_token == "access-token-2"  # the refresh stands
    assert [name for name, _ in received] == ["refreshed"]  # the other receivers still ran
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "signal_receiver_failed"]
    assert record.levelname == "ERROR"
    assert record.getMessage().endswith(
        "notify_billing, a receiver of connection_refreshed, raised RuntimeError"
    )
    assert record.exc_info is None  # the receiver's text may hold anything: only its type
    # Django logs the traceback on its own logger, for the receiver's author.
    assert any(r.name == "django.dispatch" and r.exc_info for r in caplog.records)
