"""Network faults against real sockets: nothing listening, and a server that never answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from oauth_connect.exceptions import ProviderError
from oauth_connect.providers.client import ProviderClient


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A local port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_connection_refused(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/oauth/token/"
    with pytest.raises(ProviderError, match="Could not reach the Apicbase token endpoint") as info:
        ProviderClient("apicbase").post_form(url, {"refresh_token": "secret-refresh-token"})
    assert info.value.status_code is None
    assert "secret-refresh-token" not in str(info.value)


def test_timeout_uses_the_setting(silent_server: int, settings: Any) -> None:
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "HTTP_TIMEOUT": 0.2}
    url = f"http://127.0.0.1:{silent_server}/oauth/token/"
    with pytest.raises(ProviderError, match="did not answer within 0.2 seconds"):
        ProviderClient("apicbase").post_form(url, {"refresh_token": "secret-refresh-token"})
