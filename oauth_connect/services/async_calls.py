"""The service calls an async view needs, as coroutines. Each runs its sync twin on a thread
through ``sync_to_async``, thread-sensitive as Django's async ORM is (under ASGI, the request's
own thread and database connection), so the row lock, the provider call and the writes behave
exactly as they do in a sync view. ``connection`` is updated in place, as by the sync form."""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import sync_to_async

from ..models import Connection
from .check import check_connection
from .disconnect import disconnect
from .refresh import refresh_connection, rotate_token


async def arefresh_connection(
    connection: Connection, force: bool = False, *, due_within: timedelta | None = None
) -> bool:
    """:func:`refresh_connection`, awaitable."""
    refresh = sync_to_async(refresh_connection, thread_sensitive=True)
    return await refresh(connection, force, due_within=due_within)


async def acheck_connection(connection: Connection) -> str:
    """:func:`check_connection`, awaitable."""
    return await sync_to_async(check_connection, thread_sensitive=True)(connection)


async def arotate_token(connection: Connection) -> None:
    """:func:`rotate_token`, awaitable."""
    await sync_to_async(rotate_token, thread_sensitive=True)(connection)


async def adisconnect(connection: Connection) -> bool:
    """:func:`disconnect`, awaitable."""
    return await sync_to_async(disconnect, thread_sensitive=True)(connection)
