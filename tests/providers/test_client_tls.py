"""The deadline over TLS, against a real TLS server on loopback: under TLS the socket a
connection reads from is not the one it opened, and an answer that says the connection will
close makes http.client forget it while the body is still coming. Neither may let a dripping
provider outlive ``HTTP_DEADLINE``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from oauth_connect.exceptions import DeadlineExceeded
from oauth_connect.providers.client import ProviderClient

DRIP = 100  # body bytes, one every 50 ms: 5 s in all, against a 1 s deadline


def self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 (its own CA), and a server context using it."""
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return cert_file, context


class DrippingTLSServer:
    """Answers one request over TLS with ``head``, then drips the body a byte at a time,
    counting what it got out before the client hung up. Bounded: DRIP bytes at most."""

    def __init__(self, context: ssl.SSLContext, head: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.context, self.head = context, head
        self.sent = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.listener.getsockname()[1]}/oauth/token/"

    def serve(self) -> None:
        try:
            raw, _address = self.listener.accept()
            with self.context.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(10)
                conn.recv(65536)
                conn.sendall(self.head)
                for _ in range(DRIP):
                    conn.sendall(b" ")
                    self.sent += 1
                    time.sleep(0.05)  # the fault being injected: a provider that drips
        except OSError:
            pass  # the client hung up: what the test wants
        finally:
            self.done.set()
            self.listener.close()


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Any]:
    cert_file, context = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_file))  # trust it, as a real CA would be
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "HTTP_TIMEOUT": 1, "HTTP_DEADLINE": 1.0}
    servers: list[DrippingTLSServer] = []

    def serve(head: bytes) -> DrippingTLSServer:
        servers.append(DrippingTLSServer(context, head))
        return servers[-1]

    yield serve
    for server in servers:
        server.thread.join(timeout=10)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
    ],
    ids=["length-and-close", "until-close", "http-1.0", "kept-alive"],
)
def test_a_dripping_tls_answer_is_cut_off_at_the_deadline(tls: Any, head: bytes) -> None:
    server = tls(head)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        ProviderClient("apicbase").post_form(server.url, {"grant_type": "refresh_token"})
    assert time.monotonic() - started < 3  # not the 5 s of the drip
    assert server.done.wait(10)
    assert server.sent < DRIP // 2
