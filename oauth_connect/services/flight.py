"""Single flight within one event loop: the coroutines that find a connection's token expired
(or refused) at the same moment wait for one of them to refresh it, then all use the result.

The database row lock already makes a refresh happen once across threads and processes, but
each waiter would still take a thread and a database round trip to learn that. Here the first
coroutine refreshes (through ``sync_to_async``, under that same row lock) and publishes the
connection's new state; the others, waiting on an ``asyncio.Lock``, adopt it without touching
the database.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import weakref
from typing import Any

from django.db import router

from ..models import Connection


class Flight:
    """One connection's refreshes in one event loop. ``version`` counts what was published:
    a session that saw an older version adopts ``state`` before its next request."""

    __slots__ = ("loop", "lock", "version", "state", "error", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # held, so the loop's id (part of the key) can't be reused meanwhile
        self.lock = asyncio.Lock()
        self.version = 0
        #: The connection's fields as the last refresh in this loop left them.
        self.state: dict[str, Any] | None = None
        #: What that refresh raised, if it failed: the coroutines that waited for it get it too.
        self.error: BaseException | None = None

    def publish(self, connection: Connection, error: BaseException | None = None) -> None:
        self.state = {
            field.attname: connection.__dict__[field.attname]
            for field in Connection._meta.concrete_fields
            if field.attname in connection.__dict__
        }
        self.error = error
        self.version += 1

    def copy_to(self, connection: Connection) -> None:
        if self.state is not None:
            connection.__dict__.update(self.state)

    def newer_than(self, connection: Connection) -> bool:
        """Whether the published state holds tokens newer than ``connection``'s, which was
        loaded before that refresh (or by another request)."""
        if self.state is None:
            return False
        published = self.state.get("last_refreshed_at")
        loaded = connection.last_refreshed_at
        return published is not None and (loaded is None or published > loaded)


_flights: weakref.WeakValueDictionary[tuple[int, str, int], Flight] = weakref.WeakValueDictionary()
_flights_guard = threading.Lock()  # several loops may run in several threads


def flight_for(connection: Connection) -> Flight:
    """The running loop's flight for ``connection``, shared by every session on it; kept while
    some session holds it."""
    loop = asyncio.get_running_loop()
    key = (id(loop), router.db_for_write(Connection), connection.pk)
    with _flights_guard:
        flight = _flights.get(key)
        if flight is None or flight.loop is not loop:
            flight = _flights[key] = Flight(loop)
        return flight


def copy_of(error: BaseException) -> BaseException:
    """The error another coroutine's refresh raised, as a new object: raising one object in
    many coroutines would tangle their tracebacks together."""
    try:
        duplicate = copy.copy(error)
    except Exception:
        return error
    duplicate.__traceback__ = None
    return duplicate
