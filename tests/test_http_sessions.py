"""The sessions oauth_connect builds (``_internal/http.py``) honour the environment's proxy
settings as requests does (``HTTP_PROXY``/``HTTPS_PROXY``, ``NO_PROXY``), reading them once per
session and origin instead of on every call. Against a real loopback server playing the proxy."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from oauth_connect._internal import http
from oauth_connect.exceptions import ProviderError
from oauth_connect.providers.client import ProviderClient
from tests.hostile_server import (
    HostileServer,
    hostile_server_fixture,  # noqa: F401 - the fixture
    json_response,
)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_proxy_from_the_environment_carries_the_call(
    hostile_server: HostileServer, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{hostile_server.port}")
    hostile_server.answer(json_response(200, {"access_token": "a"}))
    client = ProviderClient("apicbase", session=http.TimeoutSession())

    assert client.post_form("http://provider.test/oauth/token/", {"x": "1"}) == {
        "access_token": "a"
    }
    # A proxy is asked for the absolute URL.
    assert hostile_server.finished().request_line.startswith("POST http://provider.test/oauth/")


def test_no_proxy_is_honoured(
    hostile_server: HostileServer, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    url = f"http://localhost:{hostile_server.port}/oauth/token/"
    with pytest.raises(ProviderError, match="Could not reach"):  # through the dead proxy
        ProviderClient("apicbase", session=http.TimeoutSession()).post_form(url, {"x": "1"})

    clean_environment.setenv("NO_PROXY", "localhost")
    hostile_server.answer(json_response(200, {"access_token": "a"}))
    session = http.TimeoutSession()
    assert ProviderClient("apicbase", session=session).post_form(url, {"x": "1"})
    assert hostile_server.finished().request_line.startswith("POST /oauth/token/")


def test_the_environment_is_read_once_per_session_and_origin(
    hostile_server: HostileServer,
    clean_environment: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    real = http.get_environ_proxies

    def counting(url: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(url)
        return real(url, *args, **kwargs)

    clean_environment.setattr(http, "get_environ_proxies", counting)
    session = http.TimeoutSession()
    for _ in range(3):
        hostile_server.answer(json_response(200, {"ok": True}, keep_alive=True), keep_alive=True)
    for _ in range(3):
        assert session.get(hostile_server.url("/a"), timeout=5).json() == {"ok": True}
    assert len(reads) == 1
    # Another origin (a tenant's own Custobar host, say) is read for itself.
    hostile_server.answer(json_response(200, {"ok": True}))
    session.get(f"http://localhost:{hostile_server.port}/b", timeout=5)
    assert len(reads) == 2


def test_a_per_call_no_proxy_falls_back_to_requests_own_reading(
    hostile_server: HostileServer, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    hostile_server.answer(json_response(200, {"ok": True}))
    response = http.TimeoutSession().get(
        hostile_server.url("/a"), proxies={"no_proxy": "127.0.0.1"}, timeout=5
    )
    assert response.json() == {"ok": True}
