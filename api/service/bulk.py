"""The store's bulk path: many rows upserted in one statement run (SQLite `executemany`, PostgreSQL `COPY`).

`bulk_upsert` is for tables whose rows are replaced whole (records, clusters), inside the caller's transaction;
`row_values` and `copied` also serve the upsert of items and consents (`owned_upsert`), whose replacement is
conditional.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Sequence

from sqlalchemy import Connection, MetaData, Table


def bulk_upsert(connection: Connection, table: Table, rows: list[dict]) -> None:
    """Insert rows, replacing whole any with the same primary key, by the database's bulk path, in the
    caller's transaction: one prepared statement run for every row (SQLite `executemany`, `sqlite_upsert`),
    or `COPY` into a staging table and one `INSERT … SELECT` from it in key order (PostgreSQL: half the time of the
    copy's order, as each index and foreign-key look-up lands beside the last). A million records are
    written in seconds where multi-row `VALUES` statements compiled by SQLAlchemy take minutes. For tables
    whose rows are replaced whole (records, clusters); a row's missing columns are written as NULL."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        sqlite_upsert(connection, table, rows)
        return
    names = _column_list(table)
    staging = copied(connection, table, rows)
    [key] = table.primary_key.columns.keys()          # in key order: the key's and foreign keys' look-ups follow it
    connection.exec_driver_sql(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM "{staging.name}" '
                               f'ORDER BY "{key}" {_replacing(table)}')
    connection.exec_driver_sql(f'DROP TABLE "{staging.name}"')


def copied(connection: Connection, table: Table, rows: list[dict]) -> Table:
    """PostgreSQL: `rows` of `table` `COPY`ed into a temporary table shaped like it (dropped at the commit, or by
    the caller once read), for one `INSERT … SELECT` to write them all: the bulk path of `bulk_upsert` and of
    `owned_upsert.upsert`. Returns that table, its columns `table`'s."""
    staging = table.to_metadata(MetaData(), name=f"bulk_{table.name}")
    connection.exec_driver_sql(f'CREATE TEMP TABLE "{staging.name}" (LIKE "{table.name}") ON COMMIT DROP')
    with connection.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f'COPY "{staging.name}" ({_column_list(table)}) FROM STDIN') as copy:
            for value in row_values([c.name for c in table.columns], rows):
                copy.write_row(value)
    return staging


def sqlite_upsert(connection: Connection, table: Table, rows: list[dict], into: str | None = None) -> None:
    """`bulk_upsert` on SQLite: rows of `table` into `into` (a table shaped like it; default `table` itself)."""
    placeholders = ", ".join("?" * len(table.columns))
    connection.exec_driver_sql(f'INSERT INTO "{into or table.name}" ({_column_list(table)}) VALUES ({placeholders}) '
                               f'{_replacing(table)}', row_values([c.name for c in table.columns], rows))


def _column_list(table: Table) -> str:
    return ", ".join(f'"{c.name}"' for c in table.columns)


def row_values(names: Sequence[str], rows: list[dict]) -> list[tuple]:
    """Each row's values of `names`, in that order, as a statement's positional parameters (a name a row lacks: None)."""
    whole = itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
    values = []
    for row in rows:
        try:
            values.append(whole(row))
        except KeyError:
            values.append(tuple(row.get(name) for name in names))
    return values


def _replacing(table: Table) -> str:
    """The upsert clause that replaces a row with the same primary key whole."""
    [key] = table.primary_key.columns.keys()
    return f'ON CONFLICT ("{key}") DO UPDATE SET ' + ", ".join(
        f'"{c.name}" = excluded."{c.name}"' for c in table.columns if c.name != key)
