"""Bulk refresh: ``manage.py refresh_tokens`` against the floor (a bare loop that only POSTs the
same refresh requests with the same concurrency and stores nothing).

Seeds N connections due for refresh against a local threaded token endpoint that rotates
refresh tokens, then runs each configuration in a fresh process and prints wall time,
refreshes per second, the ratio to the floor, database queries per connection (SQL statements;
then with each transaction's BEGIN and COMMIT added) and the process's peak RSS. The token
endpoint runs in a process of its own, as a real provider would, answering at once: every
millisecond the run takes beyond the floor is our own work.

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
import resource
import secrets
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "oauth_connect_bench"
KEY_VARIABLE = "OAUTH_CONNECT_BENCH_KEY"


# The token endpoint -------------------------------------------------------------------------


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every answer waits ~40 ms for a delayed ACK

    latency = 0.0  # seconds the provider takes to answer; set by --latency-ms

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.latency:
            time.sleep(self.latency)  # the provider's own work, on the provider's side
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


def serve_token_endpoint(latency_ms: float) -> None:
    """Serve until killed; the first line printed is the endpoint's URL."""
    _TokenHandler.latency = latency_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()


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


class StatementCounter:
    """Counts every SQL statement on every thread (Django's own capture sees one connection),
    and apart from them the transactions (BEGIN ... COMMIT), which PostgreSQL's driver sends
    outside the cursor and SQLite's as a ``BEGIN`` statement."""

    def __init__(self) -> None:
        from django.db.backends import utils
        from django.db.backends.base.base import BaseDatabaseWrapper

        self.statements = 0
        self.commits = 0
        self._lock = threading.Lock()
        self._patched = [
            (utils.CursorWrapper, "execute"),
            (utils.CursorWrapper, "executemany"),
            (BaseDatabaseWrapper, "commit"),
        ]
        self._originals = [getattr(owner, name) for owner, name in self._patched]

    def __enter__(self) -> StatementCounter:
        counter = self
        execute, executemany, commit = self._originals

        def count(sql: str) -> None:
            if not sql.lstrip().upper().startswith("BEGIN"):
                with counter._lock:
                    counter.statements += 1

        def counted_execute(cursor: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            count(sql)
            return execute(cursor, sql, *args, **kwargs)

        def counted_executemany(cursor: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            count(sql)
            return executemany(cursor, sql, *args, **kwargs)

        def counted_commit(wrapper: Any) -> Any:
            with counter._lock:
                counter.commits += 1
            return commit(wrapper)

        for (owner, name), patched in zip(
            self._patched, [counted_execute, counted_executemany, counted_commit], strict=True
        ):
            setattr(owner, name, patched)
        return self

    def __exit__(self, *exc: Any) -> None:
        for (owner, name), original in zip(self._patched, self._originals, strict=True):
            setattr(owner, name, original)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    # ru_maxrss is the process's high-water mark, in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# One configuration, in its own process ---------------------------------------------------------


def run_floor(token_url: str, n: int, workers: int) -> dict[str, Any]:
    import requests

    local = threading.local()

    def post(_: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        session.post(
            token_url + "oauth/token/",
            data={
                "grant_type": "refresh_token",
                "refresh_token": "r",
                "client_id": "bench-client",
                "client_secret": "bench-secret",
            },
            timeout=10,
        ).raise_for_status()

    cpu, start = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, range(n)))
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu_seconds() - cpu,
        "refreshed": n,
        "statements": 0,
        "commits": 0,
    }


def run_refresh_tokens(workers: int) -> dict[str, Any]:
    from django.core.management import call_command, load_command_class

    load_command_class("oauth_connect", "refresh_tokens")  # imports are start-up, not refresh
    with StatementCounter() as counter:
        cpu, start = cpu_seconds(), time.perf_counter()
        # What cron runs, printing a line per connection (to /dev/null: kept in memory, the
        # output would grow with N and spoil the memory figure).
        with open(os.devnull, "w") as devnull:
            call_command(
                "refresh_tokens", "--within", "1d", "--workers", str(workers), stdout=devnull
            )
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
    from oauth_connect.models import Connection

    refreshed = Connection.objects.filter(last_refreshed_at__isnull=False).count()
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "refreshed": refreshed,
        "statements": counter.statements,
        "commits": counter.commits,
    }


# The driver -------------------------------------------------------------------------------


def ensure_postgres_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_BENCH_DB])
        if exists.fetchone() is None:
            admin.execute(f'CREATE DATABASE "{PG_BENCH_DB}"')


def child(*arguments: str) -> list[str]:
    return [sys.executable, __file__, *arguments]


def in_fresh_process(*arguments: str) -> dict[str, Any]:
    finished = subprocess.run(  # noqa: S603 - this same script, fixed arguments
        child(*arguments), capture_output=True, text=True, cwd=ROOT
    )
    if finished.returncode:
        sys.exit(f"{' '.join(arguments)} failed:\n{finished.stderr}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0,
        help="How long the token endpoint takes to answer (default 0: at once).",
    )
    # The fresh processes the driver starts:
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run", choices=["floor", "refresh_tokens"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token-url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        serve_token_endpoint(args.latency_ms)
        return
    if args.seed is not None:
        setup_django(args.database, args.token_url, os.environ[KEY_VARIABLE])
        seed(args.seed)
        print(json.dumps({"seeded": args.seed}))
        return
    if args.run:
        if args.run == "floor":
            result = run_floor(args.token_url, args.n, args.workers[0])
        else:
            setup_django(args.database, args.token_url, os.environ[KEY_VARIABLE])
            result = run_refresh_tokens(args.workers[0])
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return

    from cryptography.fernet import Fernet

    if args.database == "postgres":
        ensure_postgres_database()
    key = Fernet.generate_key().decode()
    # The provider runs in its own process, as a real one would: it doesn't share our GIL.
    server = subprocess.Popen(  # noqa: S603 - this same script, fixed arguments
        child("--serve", "--latency-ms", str(args.latency_ms)),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        token_url = server.stdout.readline().strip()  # type: ignore[union-attr]
        # The key reaches the children through the environment: not in ps, not in an error.
        os.environ[KEY_VARIABLE] = key
        common = ["--database", args.database, "--token-url", token_url]
        print(
            f"bulk refresh on {args.database}; token endpoint answers in {args.latency_ms:g} ms; "
            f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
        )
        print(
            f"{'N':>6} {'workers':>7} {'what':>17} {'seconds':>8} {'refresh/s':>9} "
            f"{'ratio':>6} {'CPU ms/conn':>11} {'queries/conn':>12} {'+BEGIN/COMMIT':>13} "
            f"{'peak RSS MB':>11}"
        )
        for n in args.sizes:
            for workers in args.workers:
                floor = in_fresh_process(
                    *common, "--run", "floor", "--n", str(n), "--workers", str(workers)
                )
                in_fresh_process(*common, "--seed", str(n))
                ours = in_fresh_process(
                    *common, "--run", "refresh_tokens", "--workers", str(workers)
                )
                for what, result in (("floor (POST only)", floor), ("refresh_tokens", ours)):
                    ratio = result["seconds"] / floor["seconds"]
                    statements = result["statements"] / n
                    round_trips = (result["statements"] + 2 * result["commits"]) / n
                    print(
                        f"{n:>6} {workers:>7} {what:>17} {result['seconds']:>8.2f} "
                        f"{result['refreshed'] / result['seconds']:>9.0f} {ratio:>6.2f} "
                        f"{result['cpu_seconds'] * 1000 / n:>11.2f} "
                        f"{statements:>12.2f} {round_trips:>13.2f} "
                        f"{result['peak_rss_mb']:>11.1f}",
                        flush=True,
                    )
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
