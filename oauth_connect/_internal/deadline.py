"""A hard limit on how long an exchange with a provider may take, whatever the provider does.

``requests``' ``timeout`` bounds each socket read, not the call: a server that drips one byte
every half second keeps a call going for as long as it likes. So every connection our sessions
open is watched: while a :func:`deadline_scope` is active on a thread, the sockets that thread
sends on are registered, and one watchdog thread shuts them down when the scope outlives its
deadline. The blocked read then fails at once, and the caller learns from :attr:`Deadline.passed`
that the deadline, not the network, ended it.

One watchdog thread per process, started on first use (and again after a fork), keeps a heap of
deadlines; arming and disarming cost a lock and a heap push, so bulk refreshes pay nothing
noticeable for it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .log import logger


class Deadline:
    """A point on the monotonic clock that several calls (say, a refresh and the login it
    falls back to) share: each gets whatever time is left."""

    __slots__ = ("seconds", "at", "passed", "_sockets", "_idle")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        #: True once the watchdog has cut this deadline's connections.
        self.passed = False
        self._sockets: list[Any] = []
        #: True while no scope arms it: nothing registers with it, and the watchdog skips it.
        self._idle = True

    def remaining(self) -> float:
        return max(self.at - time.monotonic(), 0.0)

    def __repr__(self) -> str:
        return f"<Deadline {self.seconds:g}s, {self.remaining():.2f}s left>"


_local = threading.local()


@contextmanager
def deadline_scope(deadline: Deadline) -> Iterator[Deadline]:
    """Within the block, every connection this thread sends on is cut when ``deadline``
    passes. Scopes nest: the innermost one applies."""
    if not deadline._idle:  # already armed by an enclosing scope: that one disarms it
        yield deadline
        return
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    _watchdog().arm(deadline)
    try:
        yield deadline
    finally:
        _watchdog().disarm(deadline)
        _local.deadline = previous


def watch(sock_or_connection: Any) -> None:
    """Register a socket (or an HTTP connection, whose ``sock`` is read when the deadline
    passes) with the thread's current deadline, if there is one."""
    deadline: Deadline | None = getattr(_local, "deadline", None)
    if deadline is None:
        return
    watchdog = _watchdog()
    with watchdog.lock:
        if deadline._idle:
            return
        deadline._sockets.append(sock_or_connection)
    if deadline.passed:  # it passed while the connection was being made
        _cut(watchdog, deadline)


def _cut(watchdog: _Watchdog, deadline: Deadline) -> None:
    # Under the lock, so that a call finishing at this very moment either disarms first (and
    # nothing is cut) or sees ``passed`` once it has: the thread's next call never has its
    # kept-alive connection shut by a late cut. (A session shared between threads, which
    # requests doesn't support anyway, could still see another thread's cut.) A shutdown
    # doesn't block.
    with watchdog.lock:
        if deadline._idle:
            return
        deadline.passed = True
        targets, deadline._sockets = deadline._sockets, []
        for target in targets:
            sock = _socket_of(target)
            if sock is None:
                continue
            # The plain socket's shutdown, even under TLS: it ends the blocked read at once
            # without touching the SSL object another thread is using. OSError: already closed.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _socket_of(target: Any) -> socket.socket | None:
    """The OS socket under a socket, an HTTP connection (``.sock``) or urllib3's TLS-in-TLS
    transport (``.socket``, through an HTTPS proxy); None when there is none (yet)."""
    for _ in range(3):
        if isinstance(target, socket.socket):
            return target
        target = getattr(target, "sock", None) or getattr(target, "socket", None)
        if target is None:
            return None
    return None


class _Watchdog:
    def __init__(self) -> None:
        # Per instance, not per module: a child process starts afresh, never with a lock that
        # a parent's thread held at the fork.
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.heap: list[tuple[float, int, Deadline]] = []
        self.order = itertools.count()
        self.wakeup = threading.Condition(self.lock)
        self.thread = threading.Thread(target=self.run, name="oauth_connect-deadlines", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive()

    def arm(self, deadline: Deadline) -> None:
        with self.wakeup:
            deadline._idle = False
            heapq.heappush(self.heap, (deadline.at, next(self.order), deadline))
            if self.heap[0][2] is deadline:
                self.wakeup.notify()

    def disarm(self, deadline: Deadline) -> None:
        # Left in the heap (removing from its middle costs more); skipped when its time comes.
        with self.wakeup:
            deadline._idle = True
            deadline._sockets = []

    def run(self) -> None:
        # Nothing may end this loop: without it no deadline in the process is enforced.
        while True:
            try:
                self._once()
            except Exception:  # pragma: no cover - a bug here must not stop the others
                logger.exception(
                    "The deadline watchdog failed; carrying on", extra={"event": "watchdog_failed"}
                )

    def _once(self) -> None:
        """Cut the deadlines that have passed, or sleep until the next one (or a new one)."""
        due: list[Deadline] = []
        with self.wakeup:
            now = time.monotonic()
            while self.heap and (self.heap[0][2]._idle or self.heap[0][0] <= now):
                _at, _order, deadline = heapq.heappop(self.heap)
                if not deadline._idle:
                    due.append(deadline)
            if not due:
                # Capped: a deadline of 1e10 (or inf) seconds is a value callers may pass, and
                # too long a wait raises OverflowError. Waking once a minute costs nothing.
                self.wakeup.wait(min(self.heap[0][0] - now, 60.0) if self.heap else None)
        for deadline in due:
            _cut(self, deadline)


_instance: _Watchdog | None = None


def _watchdog() -> _Watchdog:
    global _instance
    if _instance is None or not _instance.alive():  # none yet, forked since, or it died
        with _start_guard:
            if _instance is None or not _instance.alive():
                _instance = _Watchdog()
    return _instance


_start_guard = threading.Lock()


def _after_fork_in_child() -> None:
    # The parent's watchdog thread doesn't exist here; neither may a lock it held at the fork.
    global _instance, _start_guard
    _instance = None
    _start_guard = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
