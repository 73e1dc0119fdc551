"""oauth_connect.contrib.celery: the tasks' arguments and results, run eagerly in this process;
then the real thing: ``celery worker`` processes consuming from Redis refresh expired connections
at the live sandbox, each once, however many fan-outs run at once.

The worker tests need Redis: they run when ``CELERY_BROKER_URL`` names a Redis database they may
flush (``redis://127.0.0.1:6379/15``) and it answers, and are skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
import redis
import requests
import responses
from celery import states
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult
from django.db import OperationalError
from django.db import connection as db_connection
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from example_project.celery import app as celery_app
from oauth_connect.contrib import celery as tasks
from oauth_connect.contrib.celery import (
    refresh_connection_task,
    refresh_connections_task,
    refresh_due_connections_task,
)
from oauth_connect.models import Connection
from oauth_connect.services import bulk
from tests.conftest import TOKEN_URL, postgres_configured, token_body
from tests.e2e import conftest as e2e

# The live sandbox and a logged-in member of the organisation, as in the end-to-end tests.
sandbox = e2e.sandbox
browser = e2e.browser

DAY = 24 * 3600
ROOT = Path(__file__).resolve().parents[2]


def minutes(n: float) -> datetime:
    return timezone.now() + timedelta(minutes=n)


# refresh_connection_task ----------------------------------------------------------------------


def test_tasks_have_stable_names_for_beat_schedules() -> None:
    assert refresh_connection_task.name == "oauth_connect.refresh_connection"
    assert refresh_connections_task.name == "oauth_connect.refresh_connections"
    assert refresh_due_connections_task.name == "oauth_connect.refresh_due_connections"
    schedule = celery_app.conf.beat_schedule["oauth-connect-refresh-due-connections"]
    assert schedule["task"] in celery_app.tasks


@pytest.mark.django_db
def test_refresh_task_refreshes_a_due_connection(
    eager_celery: Any, http_mock: responses.RequestsMock, make_connection: Any, organisation: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection(label="kitchen", expires_at=minutes(10))

    result = refresh_connection_task.delay(connection.pk).get()

    assert result == {
        "connection_id": connection.pk,
        "provider": "apicbase",
        "tenant_id": organisation.pk,
        "label": "kitchen",
        "outcome": "refreshed",
        "status": "active",
        "error": "",
    }
    assert json.loads(json.dumps(result)) == result
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-2"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"expires_at": timedelta(days=2)}, id="not-due"),
        pytest.param({"status": "disconnected"}, id="disconnected"),
        pytest.param({"status": "reauth_required"}, id="awaiting-reauthorization"),
        pytest.param(
            {"status": "error", "retry_not_before": timedelta(minutes=30)}, id="backing-off"
        ),
        pytest.param({"last_refreshed_at": timedelta(0)}, id="refreshed-since-the-fan-out"),
    ],
)
@pytest.mark.django_db
def test_refresh_task_skips_a_connection_no_longer_due_without_calling_anyone(
    eager_celery: Any,
    http_mock: responses.RequestsMock,
    make_connection: Any,
    fields: dict[str, Any],
) -> None:
    fan_out_started = minutes(-1).isoformat()
    # Times are given from now.
    values = {
        name: timezone.now() + value if isinstance(value, timedelta) else value
        for name, value in fields.items()
    }
    connection = make_connection(**{"expires_at": minutes(-5), **values})

    result = refresh_connection_task.delay(connection.pk, DAY, fan_out_started).get()

    assert (result["outcome"], result["error"]) == ("skipped", "")
    assert len(http_mock.calls) == 0


@pytest.mark.django_db
def test_refresh_task_skips_a_deleted_connection(eager_celery: Any) -> None:
    result = refresh_connection_task.delay(123456).get()
    assert (result["connection_id"], result["outcome"]) == (123456, "skipped")


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        pytest.param({"status": 503, "body": "down"}, "error", id="outage"),
        pytest.param(
            {"status": 400, "json": {"error": "invalid_grant"}}, "reauth_required", id="refused"
        ),
    ],
)
@pytest.mark.django_db
def test_refresh_task_reports_a_provider_failure_and_leaves_the_retry_to_the_backoff(
    eager_celery: Any,
    http_mock: responses.RequestsMock,
    make_connection: Any,
    answer: dict[str, Any],
    status: str,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, **answer)
    connection = make_connection(expires_at=minutes(-5))

    outcome = refresh_connection_task.apply(args=(connection.pk,))

    assert outcome.state == states.SUCCESS  # not retried by Celery: one call to the provider
    assert len(http_mock.calls) == 1
    result = outcome.get()
    assert (result["outcome"], result["status"]) == ("failed", status)
    assert result["error"]
    assert "refresh-token-1" not in json.dumps(result)
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == status
    assert (stored.retry_not_before is not None) == (status == "error")


@pytest.mark.django_db
def test_refresh_task_retries_a_database_error(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection(expires_at=minutes(-5))
    attempts: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise OperationalError("database is locked")
        return bulk.refresh_one_if_due(*args, **kwargs)

    monkeypatch.setattr(tasks, "refresh_one_if_due", flaky)

    result = refresh_connection_task.apply(args=(connection.pk,)).get()

    assert len(attempts) == 2
    assert result["outcome"] == "refreshed"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param((None,), TypeError, id="no-id"),
        pytest.param((True,), TypeError, id="bool-id"),
        pytest.param(("twelve",), ValueError, id="word-id"),
        pytest.param((1, "1d"), TypeError, id="duration-text"),
        pytest.param((1, -1), ValueError, id="negative-within"),
        pytest.param((1, float("nan")), ValueError, id="nan-within"),
        pytest.param((1, DAY, "yesterday"), ValueError, id="bad-since"),
        pytest.param((1, DAY, "2025-01-01T00:00:00"), ValueError, id="naive-since"),
    ],
)
def test_refresh_task_rejects_arguments_that_would_do_the_wrong_thing(
    args: tuple[Any, ...], error: type[Exception]
) -> None:
    # Raised before anything is read: bad arguments never reach the database or the provider.
    with pytest.raises(error):
        refresh_connection_task.apply(args=args, throw=True)


# refresh_connections_task (a batch) -------------------------------------------------------------


@pytest.mark.django_db
def test_batch_task_refreshes_the_due_ones_and_reports_each(
    eager_celery: Any, http_mock: responses.RequestsMock, make_connection: Any, organisation: Any
) -> None:
    def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
        # On PostgreSQL the batch's calls run at once: answer by refresh token, not by order.
        if "refresh-bar" in request.body:
            return 503, {}, "down"
        return 200, {"Content-Type": "application/json"}, json.dumps(token_body(2))

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=token_endpoint)
    due = make_connection(label="kitchen", expires_at=minutes(10))
    failing = make_connection(label="bar", refresh_token="refresh-bar", expires_at=minutes(10))
    fresh = make_connection(label="bakery", expires_at=timezone.now() + timedelta(days=3))

    result = refresh_connections_task.delay(
        [due.pk, failing.pk, fresh.pk, 123456, due.pk]  # a deleted one, a duplicate
    ).get()

    assert json.loads(json.dumps(result)) == result
    assert (result["refreshed"], result["skipped"], result["failed"]) == (1, 2, 1)
    assert [(r["connection_id"], r["outcome"]) for r in result["connections"]] == [
        (due.pk, "refreshed"),
        (failing.pk, "failed"),
        (fresh.pk, "skipped"),
        (123456, "skipped"),
    ]
    assert result["connections"][0]["tenant_id"] == organisation.pk
    assert len(http_mock.calls) == 2
    assert Connection.objects.get(pk=due.pk).access_token == "access-token-2"
    assert Connection.objects.get(pk=failing.pk).status == "error"


@pytest.mark.django_db
def test_batch_task_retries_a_database_error_before_any_provider_call(
    http_mock: responses.RequestsMock, make_connection: Any, monkeypatch: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    connection = make_connection(expires_at=minutes(-5))
    attempts: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise OperationalError("database is locked")
        return bulk.refresh_these_if_due(*args, **kwargs)

    monkeypatch.setattr(tasks, "refresh_these_if_due", flaky)

    result = refresh_connections_task.apply(args=([connection.pk],)).get()

    assert len(attempts) == 2
    assert result["refreshed"] == 1
    assert len(http_mock.calls) == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param((None,), TypeError, id="no-ids"),
        pytest.param((7,), TypeError, id="one-id-not-a-list"),
        pytest.param(("1,2",), TypeError, id="text"),
        pytest.param(([],), ValueError, id="empty"),
        pytest.param((list(range(1, 102)),), ValueError, id="too-many"),
        pytest.param(([1, True],), TypeError, id="bool-id"),
        pytest.param(([1, "x"],), ValueError, id="word-id"),
        pytest.param(([1], -1), ValueError, id="negative-within"),
        pytest.param(([1], DAY, "2025-01-01T00:00:00"), ValueError, id="naive-since"),
    ],
)
def test_batch_task_rejects_arguments_that_would_do_the_wrong_thing(
    args: tuple[Any, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        refresh_connections_task.apply(args=args, throw=True)


# refresh_due_connections_task -----------------------------------------------------------------


@pytest.fixture
def enqueued(monkeypatch: Any) -> mock.Mock:
    """What the fan-out enqueues, instead of enqueueing it."""
    task = mock.Mock(name="refresh_connections_task")
    monkeypatch.setattr(tasks, "refresh_connections_task", task)
    return task


@pytest.mark.django_db
def test_fan_out_enqueues_a_batch_per_batch_size_due_connections(
    enqueued: mock.Mock, make_connection: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(bulk, "PAGE_SIZE", 2)  # three pages for five connections
    due = [make_connection(label=f"due{n}", expires_at=minutes(n * 60)) for n in range(-1, 3)]
    due.append(make_connection(provider="acme", expires_at=minutes(-5)))
    make_connection(label="next week", expires_at=timezone.now() + timedelta(days=7))
    make_connection(label="gone", status="disconnected", expires_at=minutes(-5))
    make_connection(label="refused", status="reauth_required", expires_at=minutes(-5))
    make_connection(label="failing", status="error", retry_not_before=minutes(9))

    summary = refresh_due_connections_task.apply(kwargs={"batch_size": 2}, throw=True).get()

    assert (summary["enqueued"], summary["batches"]) == (5, 3)
    assert (summary["within_seconds"], summary["providers"]) == (DAY, None)
    options = {"within_seconds": DAY, "not_refreshed_since": summary["started"]}
    pks = [connection.pk for connection in due]
    assert enqueued.apply_async.call_args_list == [
        mock.call(args=(batch,), kwargs=options, add_to_parent=False)
        for batch in (pks[:2], pks[2:4], pks[4:])
    ]


@pytest.mark.parametrize(
    ("providers", "listed"),
    [
        pytest.param("acme", ["acme"], id="one-id"),
        pytest.param(["apicbase"], ["apicbase"], id="list"),
        pytest.param(("acme", "apicbase"), ["acme", "apicbase"], id="tuple"),
    ],
)
@pytest.mark.django_db
def test_fan_out_only_for_the_providers_asked(
    enqueued: mock.Mock, make_connection: Any, providers: Any, listed: list[str], settings: Any
) -> None:
    settings.OAUTH_CONNECT["PROVIDERS"]["acme"] = {
        "AUTHORIZE_URL": "https://acme.test/a",
        "TOKEN_URL": "https://acme.test/t",
        "API_URL": "https://acme.test/api/",
        "CLIENT_ID": "id",
        "CLIENT_SECRET": "secret",
    }
    apicbase = make_connection(provider="apicbase", expires_at=minutes(-5))
    acme = make_connection(provider="acme", expires_at=minutes(-5))

    summary = refresh_due_connections_task.apply(
        kwargs={"within_seconds": 60, "providers": providers}, throw=True
    ).get()

    assert summary["providers"] == listed
    expected = [c.pk for c in (apicbase, acme) if c.provider in listed]
    assert [call.kwargs["args"] for call in enqueued.apply_async.call_args_list] == [(expected,)]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"within_seconds": None}, TypeError, id="no-within"),
        pytest.param({"within_seconds": float("inf")}, ValueError, id="forever"),
        pytest.param({"providers": []}, ValueError, id="no-providers"),
        pytest.param({"providers": [1]}, TypeError, id="not-ids"),
        pytest.param({"providers": ["apicbse"]}, ValueError, id="a-typo"),
        pytest.param({"batch_size": 0}, ValueError, id="empty-batches"),
        pytest.param({"batch_size": 101}, ValueError, id="huge-batches"),
        pytest.param({"batch_size": "8"}, TypeError, id="text-batch-size"),
    ],
)
def test_fan_out_rejects_arguments_that_would_do_the_wrong_thing(
    kwargs: dict[str, Any], error: type[Exception], enqueued: mock.Mock
) -> None:
    with pytest.raises(error):
        refresh_due_connections_task.apply(kwargs=kwargs, throw=True)
    enqueued.apply_async.assert_not_called()


@pytest.mark.django_db
def test_fan_outs_in_a_row_refresh_each_connection_once(
    eager_celery: Any, http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(3))
    connections = [make_connection(label=label, expires_at=minutes(-5)) for label in "ab"]

    first = refresh_due_connections_task.delay().get()
    # The new hour-long tokens are still within a day, so they are listed again, and skipped.
    second = refresh_due_connections_task.delay().get()

    assert (first["enqueued"], second["enqueued"]) == (2, 2)
    assert len(http_mock.calls) == 2
    for connection in connections:
        kinds = connection.events.values_list("kind", flat=True)
        assert list(kinds) == ["refreshed"]


# A real worker --------------------------------------------------------------------------------


def _redis_missing() -> str:
    """Why the worker tests can't run here, or "" when they can."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url:
        return (
            "needs Redis: set CELERY_BROKER_URL=redis://127.0.0.1:6379/15 "
            "(a Redis database these tests flush)"
        )
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except (redis.RedisError, ValueError) as err:
        # Not the URL itself: it may hold a password.
        return f"CELERY_BROKER_URL is set but Redis does not answer a PING ({type(err).__name__})"
    return ""


REDIS_MISSING = _redis_missing()
requires_redis = pytest.mark.skipif(bool(REDIS_MISSING), reason=REDIS_MISSING)


def database_url_for_workers() -> str:
    """DATABASE_URL for a process that must use this test's database."""
    database = db_connection.settings_dict
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{database['NAME']}"  # the file-based test database
    assert database["ENGINE"] == "django.db.backends.postgresql", database["ENGINE"]
    user = quote(database["USER"] or "", safe="")
    if database["PASSWORD"]:
        user += ":" + quote(database["PASSWORD"], safe="")
    host = f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
    return f"postgres://{user}@{host}/{quote(database['NAME'], safe='')}"


@dataclass
class Workers:
    """``celery worker`` processes and everything they printed."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs)

    def stop(self) -> None:
        """Warm shutdown: each worker finishes the task at hand, logs it, and exits."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def check_running(self, doing: str) -> None:
        for process in self.processes:
            if process.poll() is not None:
                pytest.fail(
                    f"a worker exited ({process.returncode}) {doing}:\n{self.log()[-5000:]}"
                )


@pytest.fixture
def celery_workers(
    sandbox: e2e.Sandbox, settings: Any, tmp_path: Path, monkeypatch: Any
) -> Iterator[Workers]:
    """Real worker processes (4 threads each; two processes on PostgreSQL, one on SQLite, which
    is single-process only) configured from the environment alone, like a deployment: this test's
    database, the live sandbox as every provider, this test's encryption key."""
    broker_url = os.environ["CELERY_BROKER_URL"]
    with redis.Redis.from_url(broker_url) as client:
        client.flushdb()  # no task or result left by an earlier run
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DATABASE_URL": database_url_for_workers(),
        "SITE_URL": sandbox.url,
        "OAUTH_CONNECT_KEYS": ",".join(settings.OAUTH_CONNECT["ENCRYPTION_KEYS"]),
        "APICBASE_SANDBOX": "true",
        "CELERY_RESULT_BACKEND": broker_url,
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    workers = Workers()
    try:
        for n in range(2 if postgres_configured() else 1):
            log = tmp_path / f"worker{n}.log"
            workers.logs.append(log)
            with log.open("wb") as output:
                workers.processes.append(
                    subprocess.Popen(
                        [
                            *(sys.executable, "-m", "celery", "-A", "example_project", "worker"),
                            *("--pool=threads", "-c", "4", "--loglevel=INFO"),
                            # Reserve no more than it runs, so both workers get tasks.
                            "--prefetch-multiplier=1",
                            *("-n", f"oauth-connect-test-{n}@%h"),
                            # Skip waiting for other workers' gossip at start-up.
                            *("--without-mingle", "--without-gossip", "--without-heartbeat"),
                        ],
                        cwd=ROOT,
                        env=env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield workers
    finally:
        workers.stop()
        with redis.Redis.from_url(broker_url) as client:
            client.flushdb()


class StoredResults:
    """Every task result the workers store, as they store it: the Redis result backend publishes
    each on a channel named after its key."""

    def __init__(self) -> None:
        self.backend = celery_app.backend
        self.client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(self.backend.task_keyprefix + b"*")

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()

    def wait_for(self, count: int, workers: Workers, deadline: float) -> list[dict[str, Any]]:
        """The first ``count`` finished results, waiting until ``deadline`` at most."""
        finished: dict[str, dict[str, Any]] = {}
        while len(finished) < count:
            workers.check_running(f"with {len(finished)} of {count} tasks finished")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{len(finished)} of {count} tasks finished:\n{workers.log()[-5000:]}")
            message = self.pubsub.get_message(timeout=min(remaining, 1.0))
            if message is not None:
                meta = self.backend.decode_result(message["data"])
                if meta["status"] in states.READY_STATES:
                    finished[meta["task_id"]] = meta
        return list(finished.values())


@pytest.fixture
def stored_results() -> Iterator[StoredResults]:
    results = StoredResults()
    yield results
    results.close()


def wait_for(result: AsyncResult, workers: Workers, deadline: float) -> Any:
    while True:
        workers.check_running(f"while task {result.id} was pending")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"task {result.id} is still {result.state}:\n{workers.log()[-5000:]}")
        try:
            return result.get(timeout=min(remaining, 1.0))
        except ResultTimeout:
            continue


@requires_redis
@pytest.mark.django_db(transaction=True)
def test_workers_refresh_each_due_connection_once_however_many_fan_outs(
    sandbox: e2e.Sandbox,
    browser: requests.Session,
    organisation: Any,
    celery_workers: Workers,
    stored_results: StoredResults,
    settings: Any,
) -> None:
    for label in ("kitchen", "bar", "bakery", "fresh", "revoked"):
        sandbox.connect(browser, "apicbase", label=label)
    sandbox.connect(browser, "acme")
    by_name = {c.label or c.provider: c for c in Connection.objects.filter(tenant=organisation)}
    fresh, revoked = by_name.pop("fresh"), by_name.pop("revoked")
    expired = list(by_name.values())  # three Apicbase connections and an Acme one
    # Its grant was revoked at the provider: refreshing it fails, and it awaits a person.
    RefreshToken.objects.get(token=revoked.refresh_token).revoke()
    for connection in [*expired, revoked]:
        sandbox.expire(connection)
    marks = {provider: sandbox.mark(provider) for provider in ("apicbase", "acme")}
    # Rotation deletes the access tokens the workers will send: remember them now.
    sent = list(AccessToken.objects.values_list("token", flat=True))

    # Two fan-outs at once, as from two beat schedulers: each lists every connection (the fresh
    # one too: its token expires within a day) and enqueues them in batches of two.
    fan_outs = [
        refresh_due_connections_task.apply_async(kwargs={"batch_size": 2}) for _ in range(2)
    ]
    deadline = time.monotonic() + 30
    summaries = [wait_for(fan_out, celery_workers, deadline) for fan_out in fan_outs]
    batches = sum(summary["batches"] for summary in summaries)
    finished = stored_results.wait_for(len(fan_outs) + batches, celery_workers, deadline)

    outcomes: dict[int, Counter[str]] = defaultdict(Counter)
    for meta in finished:
        assert meta["status"] == states.SUCCESS, meta
        for result in meta["result"].get("connections", []):  # not in a fan-out's summary
            outcomes[result["connection_id"]][result["outcome"]] += 1
    # Each expired connection refreshed by one task, the other finding it fresh under the lock.
    assert {c.pk: outcomes[c.pk] for c in expired} == {
        c.pk: Counter(refreshed=1, skipped=1) for c in expired
    }
    assert outcomes[fresh.pk] == Counter(skipped=2)
    # The fan-out that listed second may have found the revoked one awaiting a person already.
    assert outcomes[revoked.pk] in (Counter(failed=1), Counter(failed=1, skipped=1))
    assert sorted(summary["enqueued"] for summary in summaries) in ([5, 6], [6, 6])
    assert batches == sum((summary["enqueued"] + 1) // 2 for summary in summaries)

    # At the sandbox: one token response per expired connection, none for the others.
    assert sandbox.issued_since("apicbase", marks["apicbase"]) == 3
    assert sandbox.issued_since("acme", marks["acme"]) == 1
    for connection in expired:
        stored = Connection.objects.get(pk=connection.pk)
        assert e2e.event_kinds(stored) == ["connected", "refreshed"]
        assert stored.session().get("accounts/me/").json() == {"username": "alice"}
    assert e2e.event_kinds(fresh) == ["connected"]
    assert Connection.objects.get(pk=revoked.pk).status == Connection.Status.REAUTH_REQUIRED
    assert e2e.event_kinds(revoked) == ["connected", "reauth_required"]
    assert sandbox.issued_since("apicbase", marks["apicbase"]) == 3  # the API calls needed none

    # Nothing secret reached the workers' output.
    celery_workers.stop()  # so every line is written
    log = celery_workers.log()
    assert log.count("succeeded in") == len(finished)
    secrets = [
        *sent,
        *AccessToken.objects.values_list("token", flat=True),
        *RefreshToken.objects.values_list("token", flat=True),
        *(secret for _, secret in e2e.CLIENTS.values()),
        *settings.OAUTH_CONNECT["ENCRYPTION_KEYS"],
    ]
    assert secrets
    assert [secret for secret in secrets if secret in log] == []
