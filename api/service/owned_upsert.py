"""Upserting the rows a record owns (context items, consents) so that none ever moves to another agency's record.

An item or a consent hangs on one record, and so on one agency. A writer (a feed, a load) that sends an
existing item id on another agency's record would move that agency's row under its own: the replacement
is conditional on the agency in the statement itself, so no writer, and no race between two writers,
can move one; a row held back raises `OwnershipConflict`. A consent's revocation sticks (the earliest
`revoked_at` is kept).

`upsert(..., names=...)` writes into tables shaped like the live ones under other names: a SQLite bulk
load stages its items and consents beside the live tables, checked against its staged records
(`api.service.staging`).
"""

from __future__ import annotations

from sqlalchemy import TIMESTAMP, MetaData, Table, and_, case, cast, func, literal_column, or_, select

from api.service.bulk import copied, row_values
from api.service.store import consents, context_items, dialect_insert, records


#: The tables whose rows hang on a record, and their keys.
OWNED: dict[Table, str] = {context_items: "item_id", consents: "consent_id"}


def carried_keys(owned_rows: dict[Table, list[dict]]) -> dict[Table, set[str]]:
    """The keys of a load's rows of the `OWNED` tables, by table."""
    return {table: {row[OWNED[table]] for row in rows} for table, rows in owned_rows.items()}


class OwnershipConflict(ValueError):
    """A write would have moved an item or a consent to a record of another agency, or brought one back that was
    deleted after the writer's checks; nothing of it was written."""


def chunked_rows(connection, statement_for, ids: list, chunk: int = 500) -> list[tuple]:
    """The rows of `statement_for(ids)`, asked `chunk` ids at a time (bound parameters are limited)."""
    rows = []
    for start in range(0, len(ids), chunk):
        rows.extend(tuple(r) for r in connection.execute(statement_for(ids[start: start + chunk])))
    return rows


#: Above this many keys, `owners_of` reads the whole table once rather than asking for the keys 500 at a time.
SCAN_KEYS = 20_000


def owners_of(connection, table: Table, key: str, keys: list[str]) -> dict[str, str]:
    """The record each of `keys` that is stored in `table` (an `OWNED` table) hangs on. Many keys (a bulk load's
    600,000 items: 1,200 look-ups) are found by one read of the table, whose cost is bounded by the store the load
    reads whole anyway; a few are asked for."""
    if len(keys) <= SCAN_KEYS:
        return dict(chunked_rows(connection, lambda ids: select(table.c[key], table.c.record_id).where(table.c[key].in_(ids)),
                                 keys))
    wanted = set(keys)
    return {k: r for k, r in connection.execute(select(table.c[key], table.c.record_id)) if k in wanted}


def named(table: Table, names: dict[str, str] | None) -> Table:
    """`table`, or the same columns under the name `names` gives it (a staged copy)."""
    if not names or table.name not in names:
        return table
    return table.to_metadata(MetaData(), name=names[table.name])


def upsert(connection, table, key: str, rows: list[dict], chunk: int = 500, names: dict[str, str] | None = None) -> None:
    """Insert rows, replacing any with the same key (SQLite and PostgreSQL).

    A consent's revocation sticks: resending an older copy of a revoked consent keeps the
    earliest `revoked_at` (a revocation is withdrawn only by a new consent under a new id),
    compared as times. An item or a consent never moves to a record of another agency: the
    replacement is conditional on it, and `OwnershipConflict` is raised (the caller's
    transaction should roll back) if any row was held back.

    On SQLite one prepared statement runs for every row (`executemany`): a bulk load's 600,000 items
    took over three minutes as 500-row statements. A row held back changes nothing, so fewer rows changed than sent is the
    sign of one. PostgreSQL runs statements that return the rows written: more than `chunk` rows of distinct keys are
    `COPY`ed into a temporary table and written by one `INSERT … SELECT` (600,000 items as 500-row statements took
    five minutes), fewer (or a key sent twice, which one statement cannot write twice) as `chunk`-row statements.

    `names` (SQLite) writes into the tables it names instead of `table` and `records` (staged copies).
    """
    if not rows:
        return
    owned = table is context_items or table is consents
    if connection.dialect.name == "sqlite":
        target, owners = named(table, names), named(records, names)
        statement = _upsert_statement(connection, target, key, owned, consent=table is consents, owners=owners)
        compiled = statement.compile(dialect=connection.dialect)       # once, not per row, for 600,000 items
        changed = connection.exec_driver_sql(str(compiled), row_values(compiled.positiontup, rows)).rowcount
        if owned and changed != len(rows):
            _refuse_moves(connection, target, key, rows, owners)
        return
    if len(rows) > chunk and len({row[key] for row in rows}) == len(rows):
        staged = copied(connection, table, rows)
        columns = [c.name for c in table.columns]
        statement = _upsert_statement(connection, table, key, owned, consent=table is consents,
                                      source=(columns, select(*[staged.c[name] for name in columns])
                                              .order_by(staged.c.record_id)))     # as the records: each look-up beside the last
        _write_returning(connection, table, key, owned, statement, rows)
        connection.exec_driver_sql(f'DROP TABLE "{staged.name}"')
        return
    for start in range(0, len(rows), chunk):
        batch = rows[start: start + chunk]
        _write_returning(connection, table, key, owned, _upsert_statement(connection, table, key, owned, batch,
                                                                          consent=table is consents), batch)


def _write_returning(connection, table, key: str, owned: bool, statement, rows: list[dict]) -> None:
    """Run an upsert `statement` of `rows` (PostgreSQL); of an owned table, raise `OwnershipConflict` naming the
    rows it held back (those it did not return as inserted or replaced)."""
    if not owned:
        connection.execute(statement)
        return
    written = set(connection.execute(statement.returning(table.c[key])).scalars())
    _held_back(table, key, [row[key] for row in rows if row[key] not in written])


def _upsert_statement(connection, table, key: str, owned: bool, batch: list[dict] | None = None,
                      consent: bool = False, owners: Table = records, source: tuple | None = None):
    """`upsert`'s statement: of `batch` as one multi-row VALUES, of `source` ((columns, select)) as `INSERT … SELECT`,
    or without either one row's parameters (executemany). `consent`: `table` holds consents; `owners`: the records the
    rows hang on."""
    statement = dialect_insert(connection)(table)
    if batch is not None:
        statement = statement.values(batch)
    elif source is not None:
        statement = statement.from_select(*source)
    updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name != key}
    if consent:
        stored, sent = table.c.revoked_at, statement.excluded.revoked_at
        kept, given = _as_time(connection, stored), _as_time(connection, sent)
        earlier = or_(kept < given, and_(kept == given, stored <= sent))
        updates["revoked_at"] = case((and_(stored.is_not(None), or_(sent.is_(None), earlier)), stored), else_=sent)
    return statement.on_conflict_do_update(index_elements=[key], set_=updates,
                                           where=_same_agency(table, owners) if owned else None)


def _refuse_moves(connection, table, key: str, rows: list[dict], owners: Table = records) -> None:
    """Raise `OwnershipConflict` naming the rows an `executemany` upsert held back: those still stored on a record
    of another agency than the record sent (the rows it replaced now hang on the record sent)."""
    sent = {row[key]: row["record_id"] for row in rows}
    stored = dict(chunked_rows(connection, lambda ids: select(table.c[key], table.c.record_id).where(table.c[key].in_(ids)),
                               list(sent)))
    agency = dict(chunked_rows(connection, lambda ids: select(owners.c.record_id, owners.c.agency).where(owners.c.record_id.in_(ids)),
                               list(set(sent.values()) | set(stored.values()))))
    held = [k for k in sent if agency.get(stored.get(k)) != agency.get(sent[k])]
    if not held:
        raise RuntimeError(f"{table.name}: the store changed fewer rows than were sent, and none was held back")
    _held_back(table, key, held)


def _held_back(table, key: str, held: list[str]) -> None:
    if held:
        raise OwnershipConflict(f"{table.name}: {', '.join(map(repr, held[:5]))}{' ...' if len(held) > 5 else ''} "
                                f"would move to a record of another agency; an item or consent never does")


def _as_time(connection, column):
    """A stored time text as a time SQL can compare (rows written before `utc_text` may carry any offset)."""
    if connection.dialect.name == "postgresql":
        return cast(column, TIMESTAMP(timezone=True))
    return func.julianday(column)


def _same_agency(table, owners: Table = records):
    """The upsert's condition for replacing a row: the record it hangs on and the record sent (in `owners`) have one agency."""
    def agency(column: str):
        return select(owners.c.agency).where(owners.c.record_id == literal_column(column)).scalar_subquery()

    return agency(f'"{table.name}".record_id').is_not_distinct_from(agency("excluded.record_id"))


def refuse_strays(connection, moved: set[str], carried: dict[Table, set[str]], names: dict[str, str] | None = None) -> None:
    """Raise `OwnershipConflict` if an item or consent that a load does not carry (`carried`: keys by table) hangs
    on a record the load gives to another agency (`moved`): another writer attached it after the load's checks,
    which refuse such a move while anything hangs on the record. `names`: as for `upsert`."""
    for table, key in OWNED.items():
        target = named(table, names)
        hung = chunked_rows(connection, lambda ids: select(target.c[key], target.c.record_id).where(target.c.record_id.in_(ids)),
                            sorted(moved))
        strays = sorted((k, r) for k, r in hung if k not in carried.get(table, set()))
        if strays:
            raise OwnershipConflict(f"{table.name}: {strays[0][0]!r} was attached to record {strays[0][1]!r} while the load "
                                    f"ran, and the load gives that record to another agency; an item or consent never "
                                    f"moves to a record of another agency: nothing was written, run the load again")


def refuse_resurrection(connection, present: dict[Table, set[str]]) -> None:
    """Raise `OwnershipConflict` if an item or consent a load carries, stored when the load was checked (`present`:
    keys by table), is gone: deleted since (an erasure, a retention purge), which the load would undo."""
    for table, key in OWNED.items():
        keys = sorted(present.get(table, ()))
        found = owners_of(connection, table, key, keys)
        gone = [k for k in keys if k not in found]
        if gone:
            raise OwnershipConflict(f"{table.name}: {gone[0]!r} ({len(gone)} in all) was deleted while the load ran, and "
                                    f"the load would bring it back: nothing was written; run the load again")
