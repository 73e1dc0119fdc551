"""Helpers for the PostgreSQL multi-process tests: the work that runs inside worker processes,
and how the test process starts, gates, watches and counts them.

Two kinds of worker: a "spawn" pool whose processes each run ``django.setup()`` before their
first task (so the tasks below may use the ORM, and this module may import models: a worker
imports it only to unpickle a task, after the setup), and ``manage.py refresh_tokens``
subprocesses, started as cron starts them. Every wait has a deadline, so a stuck worker fails
its test instead of hanging the run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import django
from django.conf import settings as django_settings
from django.core.signals import request_started
from django.db import OperationalError, transaction
from django.db import connection as db_connection

from oauth_connect import conf
from oauth_connect.models import Connection

REPO = Path(__file__).resolve().parents[2]
# No single wait in these tests may take longer than this; the whole set takes under a minute.
DEADLINE = 60.0
TOKEN_PATH = "/sandbox/o/token/"


# Inside the workers -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    """What a pool worker must change in the example project's settings, which it read afresh:
    the test database (``test_<name>``) and the test's OAUTH_CONNECT (live sandbox URLs, keys).
    """

    database_name: str
    oauth_connect: dict[str, Any]

    @classmethod
    def of_this_process(cls) -> WorkerConfig:
        return cls(db_connection.settings_dict["NAME"], django_settings.OAUTH_CONNECT)

    def apply(self) -> None:
        assert db_connection.connection is None, "a worker task started with an open connection"
        db_connection.settings_dict["NAME"] = self.database_name
        django_settings.OAUTH_CONNECT = self.oauth_connect


def call_api(config: WorkerConfig, barrier: Any, connection_pk: int) -> tuple[int, list[int], Any]:
    """In a pool worker: load the connection, wait for every other worker, then make one API
    call through ``connection.session()``. Returns the worker's pid, the status of every response
    the session received (a 401 and its retry are two) and the final response's body."""
    config.apply()
    try:
        session = Connection.objects.get(pk=connection_pk).session()
        statuses: list[int] = []
        session.hooks["response"].append(
            lambda response, **_: statuses.append(response.status_code)
        )
        barrier.wait()
        response = session.get("accounts/me/")
        body = response.json() if response.ok else response.text[:200]
        return os.getpid(), statuses, body
    finally:
        db_connection.close()


@dataclass
class WorkerPool:
    """A pool of spawned, Django-ready processes and a manager for their barriers."""

    pool: Any
    manager: Any
    size: int

    def run_at_once(self, task: Callable[..., Any], *args: Any) -> list[Any]:
        """``task(config, barrier, *args)`` once on every process of the pool. Each task waits at
        the barrier holding its process, so the tasks land on ``size`` distinct processes and
        pass the barrier together."""
        barrier = self.manager.Barrier(self.size, timeout=DEADLINE)
        config = WorkerConfig.of_this_process()
        jobs = [(config, barrier, *args)] * self.size
        return list(self.pool.starmap_async(task, jobs, chunksize=1).get(timeout=DEADLINE + 30))


@contextmanager
def spawn_pool(size: int) -> Iterator[WorkerPool]:
    """``size`` fresh interpreters (the "spawn" start method, as under gunicorn or on several
    hosts: nothing inherited from this process) running the example project's settings."""
    assert os.environ["DJANGO_SETTINGS_MODULE"] == "example_project.settings"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(size, initializer=django.setup) as pool:
        yield WorkerPool(pool, manager, size)


# Cron runs as subprocesses ------------------------------------------------------------------


def database_url() -> str:
    """DATABASE_URL for the test database, which subprocesses must use instead of the one they
    would read from the environment."""
    db = db_connection.settings_dict
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{user}{password}@{db['HOST']}{port}/{db['NAME']}"


def start_refresh_tokens(site_url: str, *args: str) -> subprocess.Popen[str]:
    """``manage.py refresh_tokens --json`` in a new process: the example project's settings on
    the test database and the test's encryption keys, with every sandbox provider's URLs (token
    endpoint included) built from ``site_url``, as example_project/settings.py does."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DATABASE_URL": database_url(),
        "SITE_URL": site_url,
        "OAUTH_CONNECT_KEYS": ",".join(conf.encryption_keys()),
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, str(REPO / "manage.py"), "refresh_tokens", "--json", *args]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@contextmanager
def refresh_tokens_runs(count: int, site_url: str, *args: str) -> Iterator[list[Any]]:
    """``count`` runs of :func:`start_refresh_tokens`; any still running at the end is killed."""
    runs: list[subprocess.Popen[str]] = []
    try:
        runs.extend(start_refresh_tokens(site_url, *args) for _ in range(count))
        yield runs
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
            run.wait(timeout=DEADLINE)
            for pipe in (run.stdout, run.stderr):
                if pipe is not None:
                    pipe.close()


def summary_of(run: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait for a run to finish and return its JSON summary; fail with its stderr otherwise."""
    try:
        stdout, stderr = run.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        run.kill()
        stdout, stderr = run.communicate()
        raise AssertionError(f"refresh_tokens still running after {DEADLINE}s:\n{stderr}") from None
    assert run.returncode == 0, (
        f"refresh_tokens exited with {run.returncode}:\n{stderr}{stdout[:2000]}"
    )
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary


def wait_for(
    ready: threading.Event | Callable[[], bool],
    what: str,
    watched: list[Any],
    timeout: float = DEADLINE,
) -> None:
    """Until ``ready`` is set (an event) or true (a condition, checked every 20 ms). Fails after
    ``timeout`` seconds, or as soon as a process in ``watched`` has exited: it would never get
    there."""
    deadline = time.monotonic() + timeout
    while not (ready.wait(0.02) if isinstance(ready, threading.Event) else ready()):
        for process in watched:
            if process.poll() is not None:
                _, stderr = process.communicate()
                raise AssertionError(f"waiting for {what}, a worker exited:\n{stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout}s")
        if not isinstance(ready, threading.Event):
            time.sleep(0.02)


# The database side ----------------------------------------------------------------------------


@contextmanager
def table_locked(model: Any) -> Iterator[None]:
    """Hold ``model``'s table in ACCESS EXCLUSIVE mode: whoever reads it waits until the block
    ends, which makes a starting gate for processes that all begin by listing its rows."""
    table = db_connection.ops.quote_name(model._meta.db_table)
    with transaction.atomic(), db_connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield


def backends_waiting_for(model: Any) -> int:
    """How many database sessions are queued for a lock on ``model``'s table (pg_locks is read
    live, unlike pg_stat_activity, which is a snapshot for the whole transaction)."""
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
            [model._meta.db_table],
        )
        (waiting,) = cursor.fetchone()
    return int(waiting)


def row_is_locked(pk: int) -> bool:
    """Whether another session holds the connection's row lock (FOR UPDATE NOWAIT fails)."""
    try:
        with transaction.atomic():
            Connection.objects.select_for_update(nowait=True).get(pk=pk)
    except OperationalError:
        return True
    return False


def lock_row(pk: int, timeout: float) -> None:
    """Take the connection's row lock and let it go, waiting for it up to ``timeout`` seconds
    (Postgres's lock_timeout: no polling). Raises OperationalError if it stays locked."""
    with transaction.atomic(), db_connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{int(timeout * 1000)}ms"])
        Connection.objects.select_for_update().get(pk=pk)


# The HTTP side ----------------------------------------------------------------------------------


class EndpointCalls:
    """Counts the requests the live server receives for ``path``, failed ones too. The live
    server runs in this process, so Django's ``request_started`` signal sees every request, from
    whichever process it came."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> EndpointCalls:
        request_started.connect(self._seen, weak=False, dispatch_uid=id(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        request_started.disconnect(dispatch_uid=id(self))

    def _seen(self, sender: Any, environ: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if environ is not None and environ.get("PATH_INFO") == self.path:
            with self._lock:
                self.count += 1


class TokenGate:
    """An HTTP server on 127.0.0.1 that holds every request it receives: ``requested`` is set as
    soon as one arrives, and it is answered (503) only once ``release`` is set, at the latest when
    the block ends."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.release = threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                gate.requested.set()
                gate.release.wait(DEADLINE)
                with suppress(OSError):  # the caller may be gone (killed)
                    self.send_error(503)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> TokenGate:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
