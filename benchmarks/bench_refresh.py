"""Bulk refresh: ``manage.py refresh_tokens`` against the floor (a bare loop that only POSTs the
same refresh requests with the same concurrency and stores nothing).

Seeds N connections due for refresh against a local threaded token endpoint that rotates
refresh tokens, then runs each configuration in a fresh process and prints wall time,
refreshes per second, database queries per connection and peak Python memory (tracemalloc).

    pip install -e ".[bench]"
    python benchmarks/bench_refresh.py                          # SQLite, N = 1,000 and 10,000
    python benchmarks/bench_refresh.py --database postgres      # PostgreSQL at 127.0.0.1:5432
    python benchmarks/bench_refresh.py --sizes 1000 --workers 8

Run by hand; it asserts nothing (targets: 8 workers within 1.5x the floor on PostgreSQL, at most
4 queries per refreshed connection, peak memory at 10k within 20 MB of 1k, 10k/1k at most 11x).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "oauth_connect_bench"


# The token endpoint -------------------------------------------------------------------------


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every answer waits ~40 ms for a delayed ACK

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps(
            {
                "access_token": secrets.token_urlsafe(24),
                "refresh_token": secrets.token_urlsafe(24),  # rotates on every refresh
                "token_type": "Bearer",
                "expires_in": 7 * 24 * 3600,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def start_token_endpoint() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


# Django ---------------------------------------------------------------------------------------


def database_settings(database: str) -> dict[str, Any]:
    if database == "postgres":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": PG_BENCH_DB,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "/tmp/oauth_connect_bench.sqlite3",  # noqa: S108 - a throwaway benchmark db
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }


def setup_django(database: str, token_url: str, key: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "oauth_connect"],
        DATABASES={"default": database_settings(database)},
        USE_TZ=True,
        OAUTH_CONNECT={
            "ENCRYPTION_KEYS": [key],
            "PROVIDERS": {
                "apicbase": {
                    "API_URL": token_url,
                    "TOKEN_URL": token_url + "oauth/token/",
                    "CLIENT_ID": "bench-client",
                    "CLIENT_SECRET": "bench-secret",
                }
            },
        },
    )
    django.setup()


def seed(n: int) -> None:
    """N connections, all due (expired a minute ago), with distinct refresh tokens."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from oauth_connect.models import Connection

    call_command("migrate", verbosity=0)
    Connection.objects.all().delete()
    user, _ = get_user_model().objects.get_or_create(username="bench")
    expired = timezone.now() - timedelta(minutes=1)
    Connection.objects.bulk_create(
        [
            Connection(
                tenant=user,
                provider="apicbase",
                label=f"c{i}",
                access_token=f"access-{i}",
                refresh_token=f"refresh-{i}",
                client_id="bench-client",
                expires_at=expired,
            )
            for i in range(n)
        ],
        batch_size=1000,
    )


class QueryCounter:
    """Counts every query on every thread (Django's own capture sees only one connection)."""

    def __init__(self) -> None:
        from django.db.backends import utils

        self.count = 0
        self._lock = threading.Lock()
        self._utils = utils
        self._execute = utils.CursorWrapper.execute
        self._executemany = utils.CursorWrapper.executemany

    def __enter__(self) -> QueryCounter:
        counter = self

        def execute(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            with counter._lock:
                counter.count += 1
            return counter._execute(cursor, *args, **kwargs)

        def executemany(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            with counter._lock:
                counter.count += 1
            return counter._executemany(cursor, *args, **kwargs)

        self._utils.CursorWrapper.execute = execute
        self._utils.CursorWrapper.executemany = executemany
        return self

    def __exit__(self, *exc: Any) -> None:
        self._utils.CursorWrapper.execute = self._execute
        self._utils.CursorWrapper.executemany = self._executemany


# One configuration, in its own process ---------------------------------------------------------


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    token_url = start_token_endpoint()
    setup_django(args.database, token_url, Fernet.generate_key().decode())
    seed(args.n)

    if args.mode == "floor":
        import requests

        local = threading.local()
        urls = [token_url + "oauth/token/"] * args.n

        def post(url: str) -> None:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            session.post(
                url,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": "r",
                    "client_id": "bench-client",
                    "client_secret": "bench-secret",
                },
                timeout=10,
            ).raise_for_status()

        tracemalloc.start()
        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(post, urls))
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        return {"seconds": elapsed, "refreshed": args.n, "queries": 0, "peak_bytes": peak}

    from datetime import timedelta

    from oauth_connect.services import refresh_due_connections

    tracemalloc.start()
    with QueryCounter() as queries:
        start = time.perf_counter()
        summary = refresh_due_connections(timedelta(days=1), workers=args.workers)
        elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    return {
        "seconds": elapsed,
        "refreshed": summary.count("refreshed"),
        "failed": summary.failed,
        "queries": queries.count,
        "peak_bytes": peak,
    }


# The driver -------------------------------------------------------------------------------


def ensure_postgres_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_BENCH_DB])
        if exists.fetchone() is None:
            admin.execute(f'CREATE DATABASE "{PG_BENCH_DB}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["ours", "floor"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        args.workers = args.workers[0]
        print(json.dumps(run_one(args)))
        return

    if args.database == "postgres":
        ensure_postgres_database()
    print(
        f"bulk refresh on {args.database}; {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    print(
        f"{'N':>6} {'workers':>7} {'what':>18} {'seconds':>8} {'refresh/s':>9} "
        f"{'queries/conn':>12} {'peak MB':>8}"
    )
    for n in args.sizes:
        for workers in args.workers:
            for mode in ("floor", "ours"):
                result = json.loads(
                    subprocess.run(  # noqa: S603 - this same script, fixed arguments
                        [
                            sys.executable,
                            __file__,
                            "--one",
                            "--database",
                            args.database,
                            "--n",
                            str(n),
                            "--workers",
                            str(workers),
                            "--mode",
                            mode,
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                        cwd=ROOT,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                what = "floor (POST only)" if mode == "floor" else "refresh_tokens"
                per_conn = result["queries"] / n
                print(
                    f"{n:>6} {workers:>7} {what:>18} {result['seconds']:>8.2f} "
                    f"{result['refreshed'] / result['seconds']:>9.0f} {per_conn:>12.2f} "
                    f"{result['peak_bytes'] / 2**20:>8.1f}"
                )


if __name__ == "__main__":
    main()
