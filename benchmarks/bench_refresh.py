"""Bulk refresh: ``manage.py refresh_tokens`` against the floor (a bare loop that only POSTs the
same refresh requests with the same concurrency and stores nothing).

Seeds N connections due for refresh against a local threaded token endpoint that rotates
refresh tokens and answers after ``--latency-ms``, then runs each contender in a fresh process:
the floor, then ``refresh_tokens`` (once per ``--lanes`` and ``--processes`` value),
interleaved, for ``--rounds`` rounds. It prints medians: wall time; the ratio to the floor (the
median of each round's ratio); our CPU and PostgreSQL's per refresh; SQL statements per
refreshed connection (then with each transaction's BEGIN and COMMIT added); the most database
connections open at once; peak RSS. The token endpoint runs in a process of its own, as a real
provider would (``--server-processes K``: from K processes).

    pip install -e ".[bench]"
    python benchmarks/bench_refresh.py --database postgres --sizes 1000 --workers 8
    python benchmarks/bench_refresh.py --database postgres --latency-ms 200 \
        --sizes 1000 10000 --workers 8 32 64 --rounds 3
    python benchmarks/bench_refresh.py --database sqlite --sizes 1000 10000 --workers 1 8

CPU is measured as process CPU time (user + system, all threads): ours with getrusage() in the
process that runs refresh_tokens (and its children, with --processes); PostgreSQL's as the
summed /proc times of every ``postgres`` process, with its children's (a backend that exits is
reaped by the postmaster and counted there), less its idle rate (measured for 2 s before the
run) times the run's length. Run it where nothing else uses PostgreSQL meanwhile.

Run by hand; it asserts nothing. Targets: at 200 ms, at most 1.10x the floor at 8, 32 and 64
workers with at most 4 database connections; at once, 8 workers within 1.5x the floor on
PostgreSQL; at most 3 ms of our CPU and 1 ms of PostgreSQL's per refresh; at most 1 statement
per refreshed connection on PostgreSQL; peak memory flat from 1,000 to 10,000.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import signal
import statistics
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


def serve_token_endpoint(latency_ms: float, processes: int = 1) -> None:
    """Serve until killed; the first line printed is the endpoint's URL. With ``processes`` > 1
    the listening socket is shared by that many forked processes, each accepting on its own."""
    _TokenHandler.latency = latency_ms / 1000
    # Room for every worker's connection at once (socketserver's default backlog is 5).
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    for _ in range(processes - 1):
        if os.fork() == 0:
            break  # a child: serve
    else:
        signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
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


class ConnectionCounter:
    """The most database connections this process had open at once."""

    def __init__(self) -> None:
        from django.db.backends.base.base import BaseDatabaseWrapper

        self.open = self.most = 0
        self._lock = threading.Lock()
        self._originals = (BaseDatabaseWrapper.connect, BaseDatabaseWrapper.close)

    def __enter__(self) -> ConnectionCounter:
        from django.db.backends.base.base import BaseDatabaseWrapper

        counter = self
        connect, close = self._originals

        def counted_connect(wrapper: Any) -> Any:
            result = connect(wrapper)
            with counter._lock:
                counter.open += 1
                counter.most = max(counter.most, counter.open)
            return result

        def counted_close(wrapper: Any) -> Any:
            was_open = wrapper.connection is not None
            result = close(wrapper)
            if was_open and wrapper.connection is None:
                with counter._lock:
                    counter.open -= 1
            return result

        BaseDatabaseWrapper.connect = counted_connect  # type: ignore[method-assign]
        BaseDatabaseWrapper.close = counted_close  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        from django.db.backends.base.base import BaseDatabaseWrapper

        BaseDatabaseWrapper.connect, BaseDatabaseWrapper.close = self._originals  # type: ignore[method-assign]


class PostgresConnectionWatcher:
    """The most connections to the benchmark database open at once, child processes' too, as
    PostgreSQL counts them (polled every 10 ms on a connection of its own, not counted)."""

    def __init__(self) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PostgresConnectionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as watcher:
            while not self._stop.wait(0.01):
                (count,) = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                    [PG_BENCH_DB],
                ).fetchone()  # type: ignore[misc]
                self.most = max(self.most, count)


def cpu_seconds() -> float:
    """This process's CPU time and that of its children that have exited (--processes)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def postgres_cpu_seconds() -> float:
    """User + system time of every ``postgres`` process, its reaped children's included."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue  # exited meanwhile
        if stat[stat.index("(") + 1 : stat.rindex(")")] != "postgres":
            continue
        # After the name: state is field 3; utime, stime, cutime, cstime are fields 14 to 17.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_idle_cpu_rate(seconds: float = 2.0) -> float:
    """PostgreSQL's CPU seconds per second while nobody uses it."""
    before = postgres_cpu_seconds()
    time.sleep(seconds)
    return (postgres_cpu_seconds() - before) / seconds


def peak_rss_mb() -> float:
    # ru_maxrss is the high-water mark, in KiB on Linux: this process's, or its largest child's.
    return (
        max(
            resource.getrusage(who).ru_maxrss
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        )
        / 1024
    )


# One contender, in its own process --------------------------------------------------------------


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
        "postgres_cpu_seconds": 0.0,
        "refreshed": n,
        "statements": 0,
        "commits": 0,
        "connections": 0,
    }


def run_refresh_tokens(
    database: str, workers: int, lanes: int | None, processes: int
) -> dict[str, Any]:
    from django.core.management import call_command, load_command_class

    from oauth_connect.services import bulk

    if lanes is not None:
        bulk.MAX_LANES = lanes
    load_command_class("oauth_connect", "refresh_tokens")  # imports are start-up, not refresh
    measure_postgres = database == "postgres"
    from contextlib import nullcontext

    watcher = PostgresConnectionWatcher() if measure_postgres else nullcontext()
    # PostgreSQL's own background work (checkpointer, WAL writer, autovacuum) runs meanwhile:
    # measured idle first, and subtracted for the run's length.
    idle_rate = postgres_idle_cpu_rate() if measure_postgres else 0.0
    with StatementCounter() as counter, ConnectionCounter() as connections, watcher:
        postgres_cpu = postgres_cpu_seconds() if measure_postgres else 0.0
        cpu, start = cpu_seconds(), time.perf_counter()
        # What cron runs, printing a line per connection (to /dev/null: kept in memory, the
        # output would grow with N and spoil the memory figure).
        with open(os.devnull, "w") as devnull:
            call_command(
                *("refresh_tokens", "--within", "1d", "--workers", str(workers)),
                *("--processes", str(processes)),
                stdout=devnull,
            )
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
        from django.db import connections as django_connections

        django_connections.close_all()  # so its backend's CPU is counted, reaped
        time.sleep(0.2)  # the postmaster reaps the exited backends
        if measure_postgres:
            postgres_cpu = postgres_cpu_seconds() - postgres_cpu - idle_rate * (elapsed + 0.2)
    from oauth_connect.models import Connection

    refreshed = Connection.objects.filter(last_refreshed_at__isnull=False).count()
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "postgres_cpu_seconds": postgres_cpu,
        "refreshed": refreshed,
        "statements": counter.statements,
        "commits": counter.commits,
        # PostgreSQL's count covers child processes; ours, this process's only (SQLite).
        "connections": watcher.most
        if isinstance(watcher, PostgresConnectionWatcher)
        else connections.most,
        # Counted in this process only: with --processes, the children's aren't.
        "counted": processes == 1,
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
        "--lanes",
        type=int,
        nargs="+",
        default=[],
        help="Run refresh_tokens once per value of services.bulk.MAX_LANES (default: as shipped).",
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[1],
        help="Run refresh_tokens once per --processes value (default: 1).",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--server-processes",
        type=int,
        default=1,
        help="Processes the token endpoint answers from (default 1).",
    )
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
        serve_token_endpoint(args.latency_ms, args.server_processes)
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
            lanes = args.lanes[0] if args.lanes else None
            result = run_refresh_tokens(args.database, args.workers[0], lanes, args.processes[0])
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return
    drive(args)


def drive(args: argparse.Namespace) -> None:
    from cryptography.fernet import Fernet

    if args.database == "postgres":
        ensure_postgres_database()
    key = Fernet.generate_key().decode()
    lanes: list[int | None] = args.lanes or [None]  # None: as shipped
    # The provider runs in its own process, as a real one would: it doesn't share our GIL.
    server = subprocess.Popen(  # noqa: S603 - this same script, fixed arguments
        child(
            "--serve",
            *("--latency-ms", str(args.latency_ms)),
            *("--server-processes", str(args.server_processes)),
        ),
        stdout=subprocess.PIPE,
        start_new_session=True,  # its own process group, for the forked servers
        text=True,
        cwd=ROOT,
    )
    runs: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    try:
        token_url = server.stdout.readline().strip()  # type: ignore[union-attr]
        # The key reaches the children through the environment: not in ps, not in an error.
        os.environ[KEY_VARIABLE] = key
        common = ["--database", args.database, "--token-url", token_url]
        print(
            f"bulk refresh on {args.database}; token endpoint answers in {args.latency_ms:g} ms; "
            f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.rounds} rounds, "
            "interleaved; medians",
            flush=True,
        )
        for round_number in range(args.rounds):
            for n in args.sizes:
                for workers in args.workers:
                    floor = in_fresh_process(
                        *common, "--run", "floor", "--n", str(n), "--workers", str(workers)
                    )
                    floor["ratio"] = 1.0
                    runs.setdefault((n, workers, "floor (POST only)"), []).append(floor)
                    contenders = [
                        (lane_count, processes)
                        for lane_count in lanes
                        for processes in args.processes
                        if processes <= workers
                    ]
                    for lane_count, processes in contenders:
                        in_fresh_process(*common, "--seed", str(n))
                        ours = in_fresh_process(
                            *common,
                            *("--run", "refresh_tokens", "--workers", str(workers)),
                            *(("--lanes", str(lane_count)) if lane_count else ()),
                            *("--processes", str(processes)),
                        )
                        ours["ratio"] = ours["seconds"] / floor["seconds"]
                        if ours["refreshed"] != n:
                            print(f"only {ours['refreshed']} of {n} refreshed", file=sys.stderr)
                        what = "refresh_tokens"
                        if len(lanes) > 1:
                            what += f" L{lane_count}"
                        if processes > 1:
                            what += f" P{processes}"
                        runs.setdefault((n, workers, what), []).append(ours)
            print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    finally:
        server.terminate()
    print_table(runs)


def print_table(runs: dict[tuple[int, int, str], list[dict[str, Any]]]) -> None:
    print(
        f"| {'N':>6} | {'workers':>7} | {'what':>17} | {'seconds':>8} | {'refresh/s':>9} | "
        f"{'ratio':>6} | {'CPU ms/refresh':>14} | {'PG CPU ms/refresh':>17} | "
        f"{'statements/conn':>15} | {'+BEGIN/COMMIT':>13} | {'DB conns':>8} | "
        f"{'peak RSS MB':>11} |"
    )
    for (n, workers, what), results in runs.items():

        def median(key: str, results: list[dict[str, Any]] = results) -> float:
            return statistics.median(result[key] for result in results)

        seconds = median("seconds")
        counted = all(result.get("counted", True) for result in results)
        statements = f"{median('statements') / n:>15.2f}" if counted else f"{'-':>15}"
        round_trips = (
            f"{(median('statements') + 2 * median('commits')) / n:>13.2f}"
            if counted
            else f"{'-':>13}"
        )
        print(
            f"| {n:>6} | {workers:>7} | {what:>17} | {seconds:>8.2f} | {n / seconds:>9.0f} | "
            f"{median('ratio'):>6.2f} | {median('cpu_seconds') * 1000 / n:>14.2f} | "
            f"{median('postgres_cpu_seconds') * 1000 / n:>17.2f} | {statements} | "
            f"{round_trips} | {median('connections'):>8.0f} | "
            f"{median('peak_rss_mb'):>11.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
