"""Run a task in several forked processes and receive what each sends, as it sends it.

For work that is bound by one process's CPU (the GIL) and splits into independent shares:
``refresh_tokens --processes``. Fork (not spawn): the children start from the parent's Django
setup, however the host configured it, at no start-up cost. Database connections are closed
before forking, so no child shares the parent's socket; each child opens its own.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any, cast

from django.db import connections

_DONE = "done"
_CRASHED = "crashed"


class ChildFailed(RuntimeError):
    """A child process raised or died; the others were let finish."""


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def run_forked(
    task: Callable[[int, Callable[[Any], None]], None],
    count: int,
    receive: Callable[[Any], None],
) -> None:
    """``task(index, send)`` in ``count`` child processes (index 0 to count - 1); ``receive``
    is called here, in this process, with every value a child passes to ``send`` (values must
    pickle). Raises ``ChildFailed`` once all children are finished if any of them raised or
    died, naming the exception's type only (its text may quote row values); the child's
    traceback goes to its standard error, as any crash's does."""
    context = multiprocessing.get_context("fork")
    connections.close_all()
    readers: dict[Pipe, multiprocessing.process.BaseProcess] = {}
    for index in range(count):
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(task, index, writer), daemon=True)
        child.start()
        writer.close()  # the child's end: EOF here once the child exits
        readers[reader] = child
    failures: list[str] = []
    finished: set[Pipe] = set()
    error: BaseException | None = None
    while len(finished) < len(readers):
        for ready in wait([r for r in readers if r not in finished]):
            reader = cast(Pipe, ready)
            try:
                kind, value = reader.recv()
            except EOFError:
                finished.add(reader)
                continue
            except Exception as err:  # a message that doesn't unpickle, a broken pipe
                failures.append(f"unreadable message ({type(err).__name__})")
                finished.add(reader)
                continue
            if kind == _DONE:
                continue
            if kind == _CRASHED:
                failures.append(value)
            elif error is None:
                try:
                    receive(value)
                except BaseException as err:  # e.g. a broken stdout: stop reporting, drain
                    error = err
    for reader, process in readers.items():
        process.join()
        reader.close()
        if process.exitcode != 0 and not failures:
            failures.append(f"exit code {process.exitcode}")
    if error is not None:
        raise error
    if failures:
        raise ChildFailed(f"{len(failures)} of {count} processes failed: {', '.join(failures)}.")


def _child(task: Callable[[int, Callable[[Any], None]], None], index: int, writer: Pipe) -> None:
    try:
        task(index, lambda value: writer.send(("value", value)))
        writer.send((_DONE, None))
    except BaseException as err:
        writer.send((_CRASHED, type(err).__name__))
        raise
    finally:
        connections.close_all()
        writer.close()
