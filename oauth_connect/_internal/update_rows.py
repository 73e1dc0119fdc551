"""Many rows updated with one statement: ``UPDATE ... WHERE pk = %s`` run for each row through
``executemany`` (psycopg sends the rows in one pipeline).

Not Django's ``bulk_update``: its ``CASE WHEN pk = ... THEN ...`` per column costs the database
about as much as the round trips it saves. Like ``bulk_update`` (and unlike ``save()``), it sends
no ``pre_save``/``post_save`` signal.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections
from django.db.models import Model


def update_rows(rows: Sequence[Model], field_names: Sequence[str], *, using: str) -> None:
    """Write ``field_names`` of every row in ``rows`` (instances of one model), each value
    prepared as ``save()`` prepares it: the field's ``pre_save`` (``auto_now``, an encrypted
    field's ciphertext) then ``get_db_prep_save`` (an encrypted field's encryption)."""
    if not rows:
        return
    meta = rows[0]._meta
    connection = connections[using]
    by_name = {field.name: field for field in meta.concrete_fields}
    fields = [by_name[name] for name in field_names]
    primary_key = by_name[meta.pk.name]
    quote = connection.ops.quote_name
    # Concrete fields always have a column (the stubs allow None).
    assignments = ", ".join(f"{quote(str(field.column))} = %s" for field in fields)
    where = f"{quote(str(primary_key.column))} = %s"
    # Only quoted names are formatted in; every value is a parameter.
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {where}"  # noqa: S608
    params = [
        [field.get_db_prep_save(field.pre_save(row, add=False), connection) for field in fields]
        + [primary_key.get_db_prep_value(row.pk, connection)]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
