"""A savepoint that undoes a refused write and leaves the surrounding transaction usable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, Error, transaction


@contextmanager
def undone_if_refused(alias: str | None) -> Iterator[None]:
    """Inside a transaction: if the block raises ``DatabaseError``, roll back to where it began
    (its on_commit callbacks too) and re-raise, so the transaction can go on, e.g. to retry or
    to record the failure while the row locks are still held.

    Unlike a nested ``atomic`` block, the savepoint is never released: it ends with the
    transaction, and a RELEASE would cost a statement on every write that goes well.
    """
    connection = transaction.get_connection(alias)
    callbacks_before = len(connection.run_on_commit)
    savepoint = connection.savepoint()  # (transaction.savepoint() is deprecated in 6.1)
    try:
        yield
    except DatabaseError:
        # As an atomic block does when it rolls back its savepoint. A failed save() marked the
        # whole transaction for rollback (which would refuse even the ROLLBACK TO); the
        # savepoint undoes it all, including on_commit callbacks queued meanwhile (e.g. by a
        # post_save receiver), which Django forgets only for atomic's own.
        transaction.set_rollback(False, using=alias)
        try:
            connection.savepoint_rollback(savepoint)
        except Error:
            transaction.set_rollback(True, using=alias)
            raise
        del connection.run_on_commit[callbacks_before:]
        raise
