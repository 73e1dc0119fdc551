"""Shared fixtures. Unit tests talk to a fake provider at https://*.apicbase.test through
``responses``; end-to-end tests (tests/e2e/) point the providers at a live sandbox instead."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

import pytest
import responses as responses_lib
import time_machine
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db.models.signals import post_save
from django.utils import timezone

from example_project.tenants.models import Organisation
from oauth_connect.fields import Ciphertext, EncryptedTextField
from oauth_connect.models import Connection

KEY = Fernet.generate_key().decode()
OLD_KEY = Fernet.generate_key().decode()

AUTHORIZE_URL = "https://app.apicbase.test/oauth/authorize/"
TOKEN_URL = "https://api.apicbase.test/oauth/token/"
REVOKE_URL = "https://api.apicbase.test/oauth/revoke/"
API_URL = "https://api.apicbase.test/api/v1/"
CLIENT_ID = "settings-client-id"
CLIENT_SECRET = "settings-client-secret-value"
TELETRACKER_LOGIN_URL = "https://api.teletracker.test/auth/login"
# The frozen clock starts at the real time (to the minute), so objects a fixture made before
# freezing (with the real clock) and the frozen tests agree on what is past and future.
NOW = datetime.now(dt_timezone.utc).replace(second=0, microsecond=0)


def apicbase_settings(**overrides: Any) -> dict[str, Any]:
    return {
        "AUTHORIZE_URL": AUTHORIZE_URL,
        "TOKEN_URL": TOKEN_URL,
        "REVOKE_URL": REVOKE_URL,
        "API_URL": API_URL,
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        **overrides,
    }


def oauth_connect_settings(**overrides: Any) -> dict[str, Any]:
    return {
        "ENCRYPTION_KEYS": [KEY],
        "TENANT_RESOLVER": "example_project.tenants.resolvers.current_organisation",
        "PROVIDERS": {"apicbase": apicbase_settings()},
        **overrides,
    }


def postgres_configured() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


requires_postgres = pytest.mark.skipif(
    not postgres_configured(),
    reason="needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/test",
)


@pytest.fixture(autouse=True)
def oauth_settings(settings: Any) -> Any:
    """Every test starts from the fake-provider configuration; tests change it freely."""
    settings.OAUTH_CONNECT = oauth_connect_settings()
    # Password hashing is deliberately slow; tests log users in often.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


@pytest.fixture(autouse=True)
def fresh_http_session() -> Iterator[None]:
    """Every test starts with a new token-endpoint session on this thread. A session reads the
    environment's proxy and CA-bundle settings once per origin (as documented), and a loopback
    port one test's server used may be another test's next, with another CA bundle."""
    from oauth_connect._internal import http

    def drop() -> None:
        session = http._local.__dict__.pop("session", None)
        if session is not None:
            session.close()

    drop()
    yield
    drop()


@pytest.fixture(autouse=True)
def empty_caches() -> Iterator[None]:
    """Every test starts with empty caches: the credential-connect throttle counts attempts in
    the cache, and the same user and tenant ids come back test after test."""
    for cache in caches.all():
        cache.clear()
    yield
    for cache in caches.all():
        cache.clear()


# What a secret from these fixtures looks like in text: a log line must never hold one.
SECRET_SHAPES = re.compile(
    rf"(access|refresh)-token-\d|{re.escape(CLIENT_SECRET)}|sandbox-\w+-secret"
)


class _LogLineChecker(logging.Handler):
    """Collects each ``oauth_connect`` record that lacks its structured fields or shows a secret:
    one shaped like the fixtures' secrets, or any secret value stored during the test."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.problems: list[str] = []
        self.secrets: set[str] = set()

    def remember_secrets(self, sender: Any, instance: Any, **kwargs: Any) -> None:
        """A ``post_save`` receiver: every token, password and client secret stored is one."""
        for field in instance._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                value = instance.__dict__.get(field.attname)
                if isinstance(value, str) and not isinstance(value, Ciphertext):
                    self.secrets.update(_secret_parts(value))

    def emit(self, record: logging.LogRecord) -> None:
        # Lines about many connections at once (a crashed worker, a Celery fan-out) name none.
        about_many = getattr(record, "event", None) in {
            "batch_write_refused",
            "refresh_crashed",
            "refreshes_enqueued",
            "watchdog_failed",
        }
        needed = ("event",) if about_many else ("event", "provider")
        missing = [name for name in needed if not hasattr(record, name)]
        if missing:
            self.problems.append(f"{record.getMessage()!r} lacks extra={missing}")
        text = record.getMessage() + repr(vars(record))
        if record.exc_info:  # the traceback a handler would print, causes included
            text += logging.Formatter().formatException(record.exc_info)
        if SECRET_SHAPES.search(text) or any(secret in text for secret in self.secrets):
            self.problems.append(f"{record.getMessage()!r} shows a secret")


def _secret_parts(value: str) -> list[str]:
    """The secret strings in a stored value: itself, or a kept-credentials JSON's values. Short
    ones ("pw") would match ordinary words."""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    parts = parsed.values() if isinstance(parsed, dict) else [parsed]
    return [str(part) for part in parts if isinstance(part, str) and len(part) >= 8]


@pytest.fixture(autouse=True)
def log_lines_are_structured_and_secret_free() -> Iterator[None]:
    """Every test doubles as a check of the ``oauth_connect`` logger's contract (docs/signals.md):
    each line carries ``event`` and ``provider`` in ``extra`` and never a token or secret."""
    checker = _LogLineChecker()
    oauth_logger = logging.getLogger("oauth_connect")
    level = oauth_logger.level
    oauth_logger.setLevel(logging.DEBUG)  # whatever the project's LOGGING says: check every line
    oauth_logger.addHandler(checker)
    post_save.connect(checker.remember_secrets, weak=False)
    try:
        yield
    finally:
        post_save.disconnect(checker.remember_secrets)
        oauth_logger.removeHandler(checker)
        oauth_logger.setLevel(level)
    assert not checker.problems, checker.problems


@pytest.fixture
def eager_celery() -> Iterator[Any]:
    """The example project's Celery app, running tasks in this process when sent (no broker)
    and raising their errors; yields the app."""
    from example_project.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def credential_providers(settings: Any) -> None:
    """Apicbase, and the fake Custobar and TeleTracker of the credential-provider tests."""
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={
            "apicbase": apicbase_settings(),
            "custobar": {"BASE_URL": "https://{company}.custobar.test/"},
            "teletracker": {
                "API_URL": "https://api.teletracker.test/",
                "LOGIN_URL": TELETRACKER_LOGIN_URL,
                "REFRESH_URL": "https://api.teletracker.test/auth/refresh",
            },
        }
    )


@pytest.fixture
def http_mock() -> Iterator[responses_lib.RequestsMock]:
    """``responses`` for HTTP edge cases; every registered response must be used."""
    with responses_lib.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def frozen_now() -> Iterator[datetime]:
    """The clock stands still at NOW (no sleeping: move it with ``time_machine``)."""
    with time_machine.travel(NOW, tick=False):
        yield NOW


@pytest.fixture
def user(db: None) -> Any:
    return get_user_model().objects.create_user("alice", password="pw")


@pytest.fixture
def organisation(user: Any) -> Organisation:
    organisation = Organisation.objects.create(name="Alice's Kitchen")
    organisation.members.add(user)
    return organisation


@pytest.fixture
def other_organisation(db: None) -> Organisation:
    other = get_user_model().objects.create_user("mallory", password="pw")
    organisation = Organisation.objects.create(name="Mallory's Diner")
    organisation.members.add(other)
    return organisation


@pytest.fixture
def make_connection(organisation: Organisation) -> Callable[..., Connection]:
    """Create a stored connection; by default an active Apicbase one valid for an hour."""

    def make(**fields: Any) -> Connection:
        values: dict[str, Any] = {
            "tenant": organisation,
            "provider": "apicbase",
            "access_token": "access-token-1",
            "refresh_token": "refresh-token-1",
            "scopes": "accounts library",
            "client_id": CLIENT_ID,
            "expires_at": timezone.now() + timedelta(hours=1),
            **fields,
        }
        connection = Connection.objects.create(**values)
        return Connection.objects.get(pk=connection.pk)  # as loaded from the database

    return make


@pytest.fixture
def logged_in_client(client: Any, user: Any, organisation: Organisation) -> Any:
    client.force_login(user)
    return client


def token_body(n: int = 2, **extra: Any) -> dict[str, Any]:
    """A token endpoint answer issuing access-token-N / refresh-token-N for an hour."""
    return {
        "access_token": f"access-token-{n}",
        "refresh_token": f"refresh-token-{n}",
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "accounts library",
        **extra,
    }


@pytest.fixture
def received() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every oauth_connect signal sent during the test, in order. Signals go out on commit:
    wrap the action in ``django_capture_on_commit_callbacks(execute=True)``."""
    from oauth_connect import signals

    log: list[tuple[str, dict[str, Any]]] = []
    receivers = []
    for name, signal in signals.BY_EVENT_KIND.items():

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            log.append((_name, kwargs))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield log
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def race(threads: int, action: Callable[[], Any]) -> list[Any]:
    """Run ``action`` in ``threads`` threads released at the same moment; return what each
    returned (or raised). Each thread closes its own database connection."""
    import threading

    from django.db import connection as db_connection

    barrier = threading.Barrier(threads, timeout=30)
    outcomes: list[Any] = []

    def worker() -> None:
        try:
            barrier.wait()
            outcomes.append(action())
        except Exception as err:  # reported by the caller's assertions
            outcomes.append(err)
        finally:
            db_connection.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in workers), "a racing thread is stuck"
    return outcomes
