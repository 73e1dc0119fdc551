"""Celery tasks that keep tokens fresh: the Celery counterpart of ``manage.py refresh_tokens``.

Install with ``pip install oauth_connect[celery]``, have your worker import this module
(``CELERY_IMPORTS = ["oauth_connect.contrib.celery"]``) and schedule
``oauth_connect.refresh_due_connections`` with Celery beat, e.g. every 15 minutes.

- ``refresh_due_connections_task`` lists the connections due within ``within_seconds`` and
  enqueues one ``refresh_connections_task`` per batch of ``batch_size`` connections; it
  refreshes nothing itself.
- ``refresh_connections_task`` refreshes the connections of one batch that are still due when
  it runs: on PostgreSQL as ``refresh_tokens`` does, in one transaction with every provider
  call at once (a thread each); elsewhere one after the other. It returns what happened to
  each as a small JSON-able dict.
- ``refresh_connection_task`` does the same for one connection, for your own code's use.

Safe on many workers and with overlapping fan-outs: every refresh takes the connection's row lock
and re-checks under it that the connection is still due, not refreshed since the fan-out started
and not backing off, exactly as ``refresh_tokens`` does. A duplicate or late message finds a
fresh token and reports ``skipped`` without calling the provider.

Retries: a provider failure (network, 5xx, 429, a refused grant) is not retried by Celery. It is
recorded on the connection with the package's own backoff (``RETRY_BACKOFF``, the provider's
``Retry-After``), and a later fan-out retries it once that has passed; a Celery retry on top
would ignore that backoff. A connection another worker holds is reported ``skipped``, for the
next fan-out. Only a database error (``OperationalError``, ``InterfaceError``: a dropped
connection, a busy SQLite file) that struck before any provider was asked is retried, with
exponential backoff and jitter, because it leaves nothing recorded (one that strikes after is
recorded on the connections, as ``refresh_tokens`` records it). The fan-out is never retried:
the next beat run lists the connections again.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

# The same per-connection re-check and paging that refresh_tokens runs.
from .._internal.log import logger
from ..providers import registry
from ..services.bulk import (
    RefreshResult,
    due_connection_ids,
    refresh_one_if_due,
    refresh_these_if_due,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WITHIN_SECONDS",
    "MAX_BATCH_SIZE",
    "REFRESH_CONNECTION",
    "REFRESH_CONNECTIONS",
    "REFRESH_DUE_CONNECTIONS",
    "refresh_connection_task",
    "refresh_connections_task",
    "refresh_due_connections_task",
]

# Stable task names, for beat schedules and task routes, whatever the module path.
REFRESH_CONNECTION = "oauth_connect.refresh_connection"
REFRESH_CONNECTIONS = "oauth_connect.refresh_connections"
REFRESH_DUE_CONNECTIONS = "oauth_connect.refresh_due_connections"
# Connections per batch task: as many provider calls at once as refresh_tokens' --workers 8.
DEFAULT_BATCH_SIZE = 8
# A batch runs a thread per connection: a bigger one is a mistake (or a hostile message).
MAX_BATCH_SIZE = 100
# refresh_tokens' default --within; a token is still never refreshed before half its lifetime.
DEFAULT_WITHIN_SECONDS = 24 * 3600


# A database error leaves nothing recorded (both tasks raise one only before any provider was
# asked): retried with exponential backoff and jitter.
_RETRY_DATABASE_ERRORS: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "max_retries": 5,
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
}


@shared_task(name=REFRESH_CONNECTION, **_RETRY_DATABASE_ERRORS)
def refresh_connection_task(
    connection_id: int,
    within_seconds: float = DEFAULT_WITHIN_SECONDS,
    not_refreshed_since: str | None = None,
) -> dict[str, Any]:
    """Refresh connection ``connection_id`` if, under its row lock, its access token expires
    within ``within_seconds`` (capped at half the token's lifetime), it isn't backing off after
    failures, and it wasn't refreshed since ``not_refreshed_since`` (an ISO 8601 time; the
    fan-out passes its start).

    Returns ``{"connection_id", "provider", "tenant_id", "label", "outcome", "status",
    "error"}`` where ``outcome`` is ``"refreshed"``, ``"skipped"`` (not due, refreshed by someone
    else, disconnected, deleted or awaiting reauthorization) or ``"failed"`` (the provider
    failed or refused; ``error`` says why, without secrets, and the connection records it).
    """
    within = _within(within_seconds)
    since = _since(not_refreshed_since) if not_refreshed_since is not None else timezone.now()
    return _as_dict(
        refresh_one_if_due(_connection_id(connection_id), within, not_refreshed_since=since)
    )


@shared_task(name=REFRESH_CONNECTIONS, **_RETRY_DATABASE_ERRORS)
def refresh_connections_task(
    connection_ids: list[int],
    within_seconds: float = DEFAULT_WITHIN_SECONDS,
    not_refreshed_since: str | None = None,
) -> dict[str, Any]:
    """:func:`refresh_connection_task` for a batch of at most ``MAX_BATCH_SIZE`` connections:
    on PostgreSQL in one transaction, every provider call at once.

    Returns ``{"refreshed", "skipped", "failed", "connections"}``: the counts, and one
    :func:`refresh_connection_task` result per connection.
    """
    pks = _connection_ids(connection_ids)
    within = _within(within_seconds)
    since = _since(not_refreshed_since) if not_refreshed_since is not None else timezone.now()
    results = [
        _as_dict(result) for result in refresh_these_if_due(pks, within, not_refreshed_since=since)
    ]
    counts = {outcome: 0 for outcome in ("refreshed", "skipped", "failed")}
    for result in results:
        counts[result["outcome"]] += 1
    return {**counts, "connections": results}


def _as_dict(result: RefreshResult) -> dict[str, Any]:
    as_dict = vars(result)
    tenant_id = as_dict["tenant_id"]
    if not (tenant_id is None or isinstance(tenant_id, (int, str))):
        as_dict["tenant_id"] = str(tenant_id)  # e.g. a UUID primary key, for any serializer
    return as_dict


@shared_task(name=REFRESH_DUE_CONNECTIONS)
def refresh_due_connections_task(
    within_seconds: float = DEFAULT_WITHIN_SECONDS,
    providers: Iterable[str] | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Enqueue ``refresh_connections_task`` for every ``batch_size`` connections (at most
    ``MAX_BATCH_SIZE``) whose access token expires within ``within_seconds`` (default a day)
    and that can be refreshed now, optionally only for ``providers`` (a provider id or a list).

    Connections are read in pages of primary keys, so memory stays flat however many there are.
    Returns ``{"enqueued", "batches", "within_seconds", "providers", "started"}``.
    """
    within = _within(within_seconds)
    provider_ids = _providers(providers)
    size = _batch_size(batch_size)
    started = timezone.now()
    options = {"within_seconds": within.total_seconds(), "not_refreshed_since": started.isoformat()}
    enqueued = batches = 0
    due = due_connection_ids(within, providers=provider_ids, now=started)
    while batch := list(itertools.islice(due, size)):
        # Not added to this task's result: a fleet of connections would bloat it.
        refresh_connections_task.apply_async(args=(batch,), kwargs=options, add_to_parent=False)
        enqueued += len(batch)
        batches += 1
    logger.info(
        "Enqueued %s connection refreshes in %s batches",
        enqueued,
        batches,
        extra={"event": "refreshes_enqueued", "enqueued": enqueued, "batches": batches},
    )
    return {
        "enqueued": enqueued,
        "batches": batches,
        "within_seconds": within.total_seconds(),
        "providers": provider_ids,
        "started": started.isoformat(),
    }


# Arguments arrive through a serializer (JSON by default) from beat schedules and other code:
# reject what would silently do the wrong thing.


def _connection_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"connection_id must be an integer, not {type(value).__name__}.")
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"connection_id must be an integer, not {value!r}.") from err


def _connection_ids(value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"connection_ids must be a list of integers, not {type(value).__name__}.")
    if not 1 <= len(value) <= MAX_BATCH_SIZE:
        raise ValueError(f"connection_ids must hold 1 to {MAX_BATCH_SIZE} ids, not {len(value)}.")
    return [_connection_id(pk) for pk in value]


def _batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"batch_size must be an integer, not {type(value).__name__}.")
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be 1 to {MAX_BATCH_SIZE}, not {value}.")
    return value


def _within(value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"within_seconds must be a number of seconds, not {type(value).__name__}.")
    if not 0 <= value < float("inf"):
        raise ValueError(f"within_seconds must be 0 or more, not {value!r}.")
    return timedelta(seconds=value)


def _since(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"not_refreshed_since must be an ISO 8601 string, not {value!r}.")
    since = datetime.fromisoformat(value)
    if timezone.is_naive(since):
        raise ValueError(f"not_refreshed_since must carry a UTC offset: {value!r}.")
    return since


def _providers(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]  # one provider id, not its letters
    providers = list(value)
    if not providers:
        # Refreshing every provider because a computed list came out empty would surprise.
        raise ValueError("providers is empty: name at least one, or pass None for all.")
    if not all(isinstance(provider, str) for provider in providers):
        raise TypeError(f"providers must be provider ids, not {providers!r}.")
    unknown = [provider for provider in providers if not registry.is_configured(provider)]
    if unknown:
        # A typo would otherwise enqueue nothing, and look like "nothing was due".
        raise ValueError(
            f"Unknown provider id(s) {unknown}: configured are {registry.configured_ids()}."
        )
    return providers
