"""The admin changelist at scale: 100,000 connections, 100 per page, every filter.

Seeds the example project's database with N connections (once; reused while N matches) spread
over 1,000 tenants, four statuses and three providers, then requests the changelist as a
logged-in superuser through Django's test client (the whole middleware and template stack),
and prints the median render time and the number of queries for each filter.

    pip install -e ".[bench]"
    python benchmarks/bench_admin.py                        # SQLite file in the temp directory
    python benchmarks/bench_admin.py --database postgres    # PostgreSQL at 127.0.0.1:5432

Run by hand; it asserts nothing (target: well under a second; the constant number of queries
is asserted by tests/test_admin.py::test_changelist_queries_do_not_grow_with_connections).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "oauth_connect_admin_bench"
SQLITE_PATH = Path(tempfile.gettempdir()) / "oauth_connect_admin_bench.sqlite3"

QUERIES = [
    ("everything, first page", ""),
    ("status: error", "status__exact=error"),
    ("status: reauthorization required", "status__exact=reauth_required"),
    ("provider: custobar", "provider=custobar"),
    ("expiring within a day", "expiring=day"),
    ("error + custobar + expired", "status__exact=error&provider=custobar&expiring=expired"),
    ("search a tenant's name", "q=Tenant+0042"),
    ("sorted by expiry", "o=7"),
    ("last page", "p={last_page}"),
]


def setup(database: str) -> None:
    if database == "postgres":
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_BENCH_DB])
            if found.fetchone() is None:
                admin.execute(f'CREATE DATABASE "{PG_BENCH_DB}"')
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{PG_BENCH_DB}"
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{SQLITE_PATH}"
    os.environ["DEBUG"] = "false"  # as in production: no query log kept in memory
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(n: int) -> None:
    from django.utils import timezone

    from example_project.tenants.models import Organisation
    from oauth_connect import crypto
    from oauth_connect.fields import Ciphertext
    from oauth_connect.models import Connection

    if Connection.objects.count() == n:
        return
    print(f"seeding {n:,} connections (once)...", flush=True)
    Connection.objects.all().delete()
    Organisation.objects.all().delete()
    tenants = Organisation.objects.bulk_create(
        Organisation(name=f"Tenant {t:04d}") for t in range(1000)
    )
    # One ciphertext for every row: encrypting 200,000 tokens would only slow the seeding.
    token = Ciphertext(crypto.encrypt("benchmark-token"))
    statuses = ["active"] * 90 + ["error"] * 5 + ["reauth_required"] * 3 + ["disconnected"] * 2
    providers = ["apicbase", "custobar", "teletracker"]
    now = timezone.now()
    batch = []
    for i in range(n):
        provider = providers[i % 3]
        batch.append(
            Connection(
                tenant=tenants[i % 1000],
                provider=provider,
                label=f"set-{i}",
                status=statuses[i % 100],
                account={"company": f"company-{i}", "username": "ops"}
                if provider != "apicbase"
                else {},
                last_error="The provider refused the refresh token." if i % 100 >= 90 else "",
                access_token=token,
                refresh_token=token,
                expires_at=now + timedelta(minutes=(i * 7) % (3 * 24 * 60) - 12 * 60),
                last_refreshed_at=now - timedelta(minutes=i % 600),
            )
        )
        if len(batch) == 5000:
            Connection.objects.bulk_create(batch)
            batch = []
    Connection.objects.bulk_create(batch)


class QueryLog(list[tuple[str, float]]):
    """An execute wrapper that notes each query and its milliseconds."""

    def __call__(self, execute: Any, sql: str, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, *args)
        finally:
            self.append((sql, (time.perf_counter() - start) * 1000))


def measure(rounds: int, verbose: bool) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    from oauth_connect.models import Connection

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    setup_test_environment()  # so responses carry their context (the changelist's row count)
    client = Client()
    client.force_login(user)
    changelist = reverse("admin:oauth_connect_connection_changelist")
    total = Connection.objects.count()
    last_page = (total + 99) // 100

    print(f"{'changelist':<34} {'rows':>7} {'median ms':>9} {'max ms':>7} {'queries':>7}")
    for title, query in QUERIES:
        url = f"{changelist}?{query.format(last_page=last_page)}" if query else changelist
        response = client.get(url)  # warm: templates compiled, caches filled
        assert response.status_code == 200, (url, response.status_code)
        queries = QueryLog()
        with connection.execute_wrapper(queries):
            response = client.get(url)
        if verbose:
            for sql, ms in queries:
                print(f"    {ms:7.1f} ms  {sql[:150]}")
        timings = []
        for _ in range(rounds):
            start = time.perf_counter()
            client.get(url)
            timings.append((time.perf_counter() - start) * 1000)
        print(
            f"{title:<34} {response.context['cl'].result_count:>7} "
            f"{statistics.median(timings):>9.1f} {max(timings):>7.1f} {len(queries):>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--verbose", action="store_true", help="Print each query and its time.")
    args = parser.parse_args()

    setup(args.database)
    seed(args.connections)
    print(
        f"admin changelist on {args.database}, {args.connections:,} connections; "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    measure(args.rounds, args.verbose)


if __name__ == "__main__":
    main()
