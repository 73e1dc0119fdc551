"""The lock every change to a connection's tokens takes, so only one happens at a time.

A database row lock (``SELECT ... FOR UPDATE``) held for the duration of the change, across
threads, processes and hosts; released by the database if the holder dies. On databases without
row locks (SQLite) a per-process lock does the job for the threads of one process.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, router, transaction
from django.db.models import QuerySet

from ..exceptions import ConnectionUnavailable
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
    """The connection's current row, locked against other refreshes until the block ends."""
    alias = router.db_for_write(Connection)
    holder = _process_lock((alias, pk))  # keep a strong reference while we hold the lock
    with holder.lock:
        if connections[alias].features.has_select_for_update:
            with transaction.atomic(using=alias):
                yield _load(Connection.objects.using(alias).select_for_update(), pk)
        else:
            # No row locks (SQLite): the process lock serialises us, and no transaction stays
            # open across the provider call, so an auth server sharing the database file can
            # write meanwhile. Writes below use their own short transactions.
            yield _load(Connection.objects.using(alias), pk)


def _load(queryset: QuerySet[Connection], pk: int) -> Connection:
    try:
        return queryset.get(pk=pk)
    except Connection.DoesNotExist as err:
        raise ConnectionUnavailable(f"Connection #{pk} no longer exists.") from err
