"""Per-call overhead of ``connection.session()`` against a plain ``requests.Session``,
requests-oauthlib's ``OAuth2Session`` and Authlib's ``OAuth2Session``.

A local keep-alive HTTP server on 127.0.0.1 answers a small JSON body; each client makes the
same sequential GETs with a valid token. Calls are interleaved in rounds (a, b, c, d, a, b, ...)
so drift on the machine hits every client alike. Prints the median microseconds per call and
the ratio of each to the plain session (the floor).

    pip install -e ".[bench]"
    python benchmarks/bench_session.py            # 5,000 calls per client
    python benchmarks/bench_session.py --calls 20000

Run by hand; it asserts nothing (targets: b/a <= 1.05, b no slower than c or d).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SESSIONS: dict[str, Any] = {}
BODY = json.dumps({"results": [{"id": 1, "name": "Tomato soup"}]}).encode()


class JSONHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body leave in separate writes; with Nagle's algorithm on, each call would
    # wait ~40 ms for the client's delayed ACK and every client would measure the same stall.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def start_server() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), JSONHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


def setup_django(api_url: str) -> Any:
    """A throwaway Django with an in-memory database and one valid connection."""
    import django
    from cryptography.fernet import Fernet
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "oauth_connect",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
        OAUTH_CONNECT={
            "ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
            "PROVIDERS": {
                "apicbase": {
                    "API_URL": api_url,
                    "TOKEN_URL": api_url + "oauth/token/",
                    "CLIENT_ID": "bench-client",
                    "CLIENT_SECRET": "bench-secret",
                }
            },
        },
    )
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from oauth_connect.models import Connection

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create(username="bench")
    connection = Connection.objects.create(
        tenant=user,
        provider="apicbase",
        access_token="bench-access-token",
        refresh_token="bench-refresh-token",
        expires_at=timezone.now() + timedelta(days=7),
    )
    return Connection.objects.get(pk=connection.pk)


def clients(api_url: str, connection: Any) -> dict[str, Callable[[], Any]]:
    # The benchmark server is plain HTTP on loopback; requests-oauthlib refuses that unless told.
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    import requests
    from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
    from requests_oauthlib import OAuth2Session as OAuthlibSession

    token = {
        "access_token": "bench-access-token",
        "refresh_token": "bench-refresh-token",
        "token_type": "Bearer",
        "expires_in": 7 * 24 * 3600,
        "expires_at": time.time() + 7 * 24 * 3600,
    }
    url = api_url + "library/recipes/"

    plain = requests.Session()
    plain.headers["Authorization"] = "Bearer bench-access-token"
    ours = connection.session()
    oauthlib = OAuthlibSession(
        "bench-client",
        token=token,
        auto_refresh_url=api_url + "oauth/token/",
        auto_refresh_kwargs={"client_id": "bench-client", "client_secret": "bench-secret"},
        token_updater=lambda new_token: None,
    )
    authlib = AuthlibSession(
        "bench-client",
        "bench-secret",
        token=token,
        token_endpoint=api_url + "oauth/token/",
    )
    global SESSIONS
    SESSIONS = {"a": plain, "b": ours, "c": oauthlib, "d": authlib}
    return {
        "(a) requests.Session, fixed header (floor)": lambda: plain.get(url, timeout=10),
        "(b) connection.session()": lambda: ours.get("library/recipes/"),
        "(c) requests-oauthlib OAuth2Session": lambda: oauthlib.get(url, timeout=10),
        "(d) Authlib OAuth2Session": lambda: authlib.get(url, timeout=10),
    }


class CannedAdapter:
    """A transport that answers every request in-process: what remains is each client's own
    per-call work (header handling, URL building, token checks), without the network's noise."""

    def __init__(self) -> None:
        import requests

        self._requests = requests

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = self._requests.Response()
        response.status_code = 200
        response._content = BODY
        response.headers["Content-Type"] = "application/json"
        response.request = request
        response.url = request.url
        return response

    def close(self) -> None:
        pass


def canned(calls_sessions: dict[str, Any], api_url: str) -> None:
    for session in calls_sessions.values():
        session.mount(api_url, CannedAdapter())


def measure(calls: dict[str, Callable[[], Any]], n: int, rounds: int) -> dict[str, list[float]]:
    for call in calls.values():  # warm up connections and caches
        for _ in range(50):
            call().raise_for_status()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    per_round = max(n // rounds, 1)
    for _ in range(rounds):
        for name, call in calls.items():
            bucket = samples[name]
            for _ in range(per_round):
                start = time.perf_counter_ns()
                call()
                bucket.append((time.perf_counter_ns() - start) / 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per client")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    args = parser.parse_args()

    api_url = start_server()
    connection = setup_django(api_url)

    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    calls = clients(api_url, connection)
    with CaptureQueriesContext(db) as queries:
        samples = measure(calls, args.calls, args.rounds)

    print(
        f"{args.calls} sequential GETs per client, {args.rounds} interleaved rounds; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    report("Over HTTP to a local keep-alive server", samples)
    print(f"database queries during the run: {len(queries)}")

    canned(SESSIONS, api_url)
    with CaptureQueriesContext(db) as queries:
        samples = measure(calls, args.calls, args.rounds)
    report("Client side only (in-process transport: each client's own per-call cost)", samples)
    print(f"database queries during the run: {len(queries)}")


def report(title: str, samples: dict[str, list[float]]) -> None:
    floor = statistics.median(samples[next(iter(samples))])
    print(f"\n{title}")
    print(f"{'client':45} {'median µs':>10} {'p90 µs':>8} {'ratio':>6}")
    for name, values in samples.items():
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:45} {median:10.1f} {p90:8.1f} {median / floor:6.3f}")


if __name__ == "__main__":
    main()
