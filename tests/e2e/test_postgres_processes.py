"""Single-flight refresh across processes: several worker processes (as under gunicorn, or cron on
several hosts) find the same expired token at once, and the row lock lets exactly one of them
spend the refresh token. Needs PostgreSQL: SQLite has no row locks and is single-process only.

Each worker is a fresh interpreter (the "spawn" start method) that runs ``django.setup()`` with
the test settings and the test database, loads the connection and calls the live sandbox.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import django
import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection as db_connection

from oauth_connect.models import Connection
from tests.conftest import requires_postgres

from .conftest import Sandbox

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 6


def call_api_in_worker(
    database_name: str, oauth_connect: dict[str, Any], connection_pk: int, barrier: Any
) -> tuple[int, int, Any]:
    """Runs in a worker process, after ``django.setup()``: one API call through the connection.
    Returns the worker's pid, the response status and its body."""
    # The worker read example_project.settings afresh: point it at the test database before it
    # connects anywhere, and at the live sandbox with the test's encryption keys.
    assert db_connection.connection is None
    django_settings.DATABASES["default"]["NAME"] = database_name
    django_settings.OAUTH_CONNECT = oauth_connect
    try:
        session = Connection.objects.get(pk=connection_pk).session()
        barrier.wait()
        response = session.get("accounts/me/")
        return os.getpid(), response.status_code, response.json()
    finally:
        db_connection.close()


def test_processes_refresh_an_expired_connection_once(
    sandbox: Sandbox, browser: requests.Session, organisation: Any, settings: Any
) -> None:
    sandbox.connect(browser, "apicbase")
    connection = Connection.objects.get(tenant=organisation, provider="apicbase")
    sandbox.expire(connection)
    mark = sandbox.mark("apicbase")
    # What the workers' django.setup() will load.
    assert os.environ["DJANGO_SETTINGS_MODULE"] == "example_project.settings"
    args = (db_connection.settings_dict["NAME"], settings.OAUTH_CONNECT, connection.pk)

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        # Each worker blocks at the barrier holding one task, so the tasks land on 6 processes.
        barrier = manager.Barrier(WORKERS, timeout=60)
        # django.setup runs before a worker unpickles its first task, so importing this module
        # there (for call_api_in_worker) finds the app registry ready.
        with context.Pool(WORKERS, initializer=django.setup) as pool:
            results = pool.starmap(call_api_in_worker, [(*args, barrier)] * WORKERS, chunksize=1)

    assert len({pid for pid, _, _ in results}) == WORKERS
    assert [(status, body) for _, status, body in results] == [
        (200, {"username": "alice"})
    ] * WORKERS
    assert sandbox.issued_since("apicbase", mark) == 1
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.refresh_token == sandbox.newest_refresh_token("apicbase").token
    assert sandbox.access_tokens("apicbase").get().token == stored.access_token
    kinds = list(stored.events.order_by("pk").values_list("kind", flat=True))
    assert kinds == ["connected", "refreshed"]
