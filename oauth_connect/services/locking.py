"""The lock every change to a connection's tokens takes, so only one happens at a time.

A database row lock (``SELECT ... FOR UPDATE``) held for the duration of the change, across
threads, processes and hosts; released by the database if the holder dies. On databases without
row locks (SQLite) a per-process lock does the job for the threads of one process.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import OperationalError, connections, router, transaction
from django.db.models import QuerySet

from .. import conf
from ..exceptions import ConnectionBusy, ConnectionUnavailable
from ..models import Connection


class _ProcessLock:
    __slots__ = ("lock", "__weakref__")

    def __init__(self) -> None:
        self.lock = threading.Lock()


_process_locks: weakref.WeakValueDictionary[tuple[str, int], _ProcessLock] = (
    weakref.WeakValueDictionary()
)
_process_locks_guard = threading.Lock()


def _process_lock(key: tuple[str, int]) -> _ProcessLock:
    with _process_locks_guard:
        lock = _process_locks.get(key)
        if lock is None:
            lock = _process_locks[key] = _ProcessLock()
        return lock


@contextmanager
def locked_connection(pk: int) -> Iterator[Connection]:
    """The connection's current row, locked against other refreshes until the block ends.

    Waits at most ``conf.lock_wait()`` seconds in all (the provider deadline plus a margin:
    longer than any holder needs), then raises ``ConnectionBusy`` having changed nothing.
    """
    alias = router.db_for_write(Connection)
    wait = conf.lock_wait()
    waiting_since = time.monotonic()
    holder = _process_lock((alias, pk))  # keep a strong reference while we hold the lock
    if not holder.lock.acquire(timeout=wait):
        raise _busy(pk, wait)
    try:
        connection = connections[alias]
        if connection.features.has_select_for_update:
            # A transaction of the caller's (atomic, or autocommit turned off) outlives ours.
            callers = connection.in_atomic_block or not connection.get_autocommit()
            left = max(wait - (time.monotonic() - waiting_since), 0.001)
            with transaction.atomic(using=alias):
                with _lock_timeout(alias, left, restore=callers):
                    try:
                        current = _load(Connection.objects.using(alias).select_for_update(), pk)
                    except OperationalError as err:
                        if _sqlstate(err) == LOCK_NOT_AVAILABLE:
                            raise _busy(pk, wait) from err
                        raise
                yield current
        else:
            # No row locks (SQLite): the process lock serialises us, and no transaction stays
            # open across the provider call, so an auth server sharing the database file can
            # write meanwhile. Writes below use their own short transactions.
            yield _load(Connection.objects.using(alias), pk)
    finally:
        holder.lock.release()


# PostgreSQL's SQLSTATE for "lock_timeout expired".
LOCK_NOT_AVAILABLE = "55P03"


def _sqlstate(err: OperationalError) -> str | None:
    cause = err.__cause__
    # psycopg 3 says sqlstate; psycopg2 says pgcode.
    return getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)


@contextmanager
def _lock_timeout(alias: str, seconds: float, *, restore: bool) -> Iterator[None]:
    """PostgreSQL waits for a row lock forever unless told otherwise: bound the wait for the
    lock below. ``SET LOCAL`` ends with the transaction; inside a transaction of the caller's
    (``restore``), which outlives ours, the caller's own value is put back once the lock is
    ours (a failed wait rolls our savepoint back, and the value with it)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        yield
        return
    milliseconds = f"{max(round(seconds * 1000), 1)}ms"
    with connection.cursor() as cursor:
        previous = None
        if restore:
            cursor.execute("SHOW lock_timeout")
            previous = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [milliseconds])
    yield
    if previous is not None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])


def _busy(pk: int, waited: float) -> ConnectionBusy:
    return ConnectionBusy(
        f"Connection #{pk} is being changed by another worker, which has held it for more "
        f"than {waited:g} seconds (HTTP_DEADLINE plus {conf.LOCK_WAIT_MARGIN:g}). Nothing was "
        "changed; try again shortly."
    )


def _load(queryset: QuerySet[Connection], pk: int) -> Connection:
    try:
        return queryset.get(pk=pk)
    except Connection.DoesNotExist as err:
        raise ConnectionUnavailable(f"Connection #{pk} no longer exists.") from err
