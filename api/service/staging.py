"""SQLite bulk loads staged beside the live tables, then swapped in, so no transaction holds the write lock long.

SQLite has one writer at a time, and every briefing appends an audit event: a bulk load that wrote a
million records and their persons in one transaction would hold the write lock for many seconds, and
the briefings answered meanwhile would wait for it (past their busy timeout, fail). So on SQLite a bulk
load (`ingest` linking in batch) is written in two phases:

1. **Stage.** New tables beside `records` and `clusters` (same columns, keys and indexes), and beside
   `context_items` and `consents` when the load carries some, are filled in turns: transactions sized
   to hold the lock about `TURN_SECONDS` each (at most `STAGE_ROWS` rows, `OWNED_STAGE_ROWS` for items
   and consents), each preceded by a pause in which the writers kept waiting get the lock, as is every other
   transaction of the load (the creation of the staged tables, the swap, each drop): no two are back to back. They take
   the live rows as they were when staging began, then the load's over them (its items and consents
   upserted as `owned_upsert.upsert` does, against the staged records: none moves to another
   agency's record), then every record's person as the load's link decided it, and the review pairs it
   opens. The live tables keep serving and taking writes meanwhile; triggers on the live items and
   consents log the key of every row written or deleted from the moment staging begins.
2. **Swap**, one short transaction: the staged tables are brought up to date with the writes made
   meanwhile. Records come from the change feed: a record deleted meanwhile is deleted (with its staged
   items and consents), so an erasure wins; a record written meanwhile keeps its live row and person; if
   one of them is a record the load carries or hangs items or consents on, the load is refused whole, as
   two writers of one record must not both win. Items and consents come from the trigger's log: each
   logged row is copied from the live table (or removed, if it is gone there), and the load is refused if
   one of them is a row it carries, or if one now hangs on a record the load gives to another agency
   (`owned_upsert.refuse_strays`: attached after the load's checks). An item or consent the load resends
   that was deleted between the load's checks and the start of the log refuses it too
   (`owned_upsert.refuse_resurrection`). The caller writes the rest of the load (the `rebuild` change, the
   audit event), the staged review pairs are opened by one statement inside the database, and the live
   tables are renamed away and the staged ones take their names. The old tables (with their triggers) are
   dropped after the commit, their rows deleted in turns first.

All or nothing still: until the swap commits the live tables are untouched, and a load killed before
then leaves staged tables and triggers that the next load drops (`_drop_leftovers`; a trigger left meanwhile
only logs into its own log table). One bulk load stages at a time: it
holds an exclusive lock on the file `<store>.bulk-lock` (released by the system if the process dies), and
a second is refused at once (`StagingConflict`). The swap runs in
`Store.begin_unchecked`: DDL inside it is transactional, and the other tables' references to
`records` keep naming `records`, which is then the new table. A bulk load committed by another process
while this one was staging (one not holding that lock) makes this one fail whole too.
"""

from __future__ import annotations

import fcntl
import re
import secrets
import time
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import Connection, Table

from api.service.changes import changes_after, written_since
from api.service.owned_upsert import OWNED, carried_keys, refuse_resurrection, refuse_strays, upsert
from api.service.stewardship import open_staged_pairs
from api.service.bulk import sqlite_upsert
from api.service.store import Store, clusters, records, review_pairs

#: Records or persons per staging transaction, at most.
STAGE_ROWS = 50_000
#: How long a staging transaction should hold the write lock: each turn is sized from the pace of the one before.
TURN_SECONDS = 0.1
#: The pause before each of a load's transactions. A writer kept waiting (a briefing appending its audit event) polls
#: for the lock from SQLite's busy handler, at intervals that grow to 25 ms within its first 50 ms of waiting and
#: to 100 ms after 300 ms: transactions back to back leave it no moment to get in. Without the pause a 100,000-record
#: store's bulk load of 10,000 kept a writer waiting 0.83 s, the time of its whole write.
PAUSE_SECONDS = 0.03
#: The pause goes on, `PAUSE_SECONDS` at a time up to this long, while other connections keep committing: a
#: service answering briefings writes one audit event per briefing, and a sync worker that got one write in per
#: pause would answer about ten briefings a second while the load stages.
LONGEST_PAUSE_SECONDS = 0.2
#: The rows of a first turn; later turns grow by at most `TURN_GROWTH` times the one before.
FIRST_TURN_ROWS, TURN_GROWTH = 1_000, 4
#: SQLite's page cache while staging, in KiB (its default is 2 MB): a staged table's indexes take rows in an order
#: of their own, and a cache that holds them saves reading their pages again for every row (a 1M load's writes
#: took 40 % less time). Each staging transaction sets it, then sets back the connection's own.
STAGE_CACHE_KIB = 256 * 1024
#: Items and consents per staging transaction: each row's upsert looks up two records' agencies (about a second).
OWNED_STAGE_ROWS = 10_000
STAGED, RETIRED = "staged", "retired"
TABLES = (records, clusters)


class StagingConflict(RuntimeError):
    """Another bulk load is staging, or was committed while this one was; nothing of this one was written."""


def staged_write(store: Store, snapshot: int, record_rows: list[dict], person_rows: list[dict], pair_rows: list[dict],
                 owned_rows: dict[Table, list[dict]], rest: Callable[[Connection], None],
                 moved: frozenset[str] = frozenset(), present: dict[Table, set[str]] | None = None) -> dict[str, float]:
    """Write a bulk load's records (upserted), every record's person (replacing all), its review pairs (as
    `stewardship.pair_rows` makes them) and its items and consents (`owned_rows`, by table of `OWNED`, upserted
    as `owned_upsert.upsert` does) by stage and swap; `rest(connection)` writes the remainder of the load (its
    changes, its audit event) inside the swap's transaction. `snapshot`: the last change before the load read the
    store (writes after it are caught up); `moved`: the records the load gives to another agency, on which nothing
    it does not carry may hang at the swap (`owned_upsert.refuse_strays`); `present`: the load's items and consents
    stored when it was checked, none of which may have been deleted since (`owned_upsert.refuse_resurrection`, once
    the change log runs; a deletion after that is in the log). Returns how long the write lock was held, in seconds: by the swap,
    and by the longest staging transaction."""
    with _one_at_a_time(store):
        _drop_leftovers(store)
        try:
            return _stage_and_swap(store, snapshot, record_rows, person_rows, pair_rows, owned_rows, rest, moved,
                                   present or {})
        finally:
            _drop_leftovers(store)                # a copy of every record is not left lying about


def _stage_and_swap(store: Store, snapshot: int, record_rows: list[dict], person_rows: list[dict], pair_rows: list[dict],
                    owned_rows: dict[Table, list[dict]], rest: Callable[[Connection], None],
                    moved: frozenset[str], present: dict[Table, set[str]]) -> dict[str, float]:
    suffix = secrets.token_hex(4)
    owned = tuple(table for table in OWNED if owned_rows.get(table))
    swapped = TABLES + owned                      # swapped in whole; review pairs are opened from their stage
    staged = {t.name: f"{STAGED}_{t.name}_{suffix}" for t in swapped + (review_pairs,)}
    log = f"{STAGED}_changes_{suffix}"
    with _after_a_pause(store) as connection:
        for table in swapped + (review_pairs,):
            _create_like(connection, table.name, staged, suffix)
        _log_changes(connection, owned, log, suffix)
    with store.engine.connect() as connection:
        refuse_resurrection(connection, present)
    longest = max(_copy_live(store, records, staged["records"]),
                  _write_rows(store, records, staged["records"], record_rows),
                  _write_rows(store, clusters, staged["clusters"], person_rows),
                  _write_rows(store, review_pairs, staged["review_pairs"], pair_rows),
                  *[_copy_live(store, table, staged[table.name]) for table in owned],
                  *[_write_owned(store, table, staged, owned_rows[table]) for table in owned])
    attached = {row["record_id"] for rows in owned_rows.values() for row in rows}
    touched = {row["record_id"] for row in record_rows} | attached
    with _after_a_pause(store) as connection:
        started = time.perf_counter()
        deleted = _catch_up(connection, staged, snapshot, touched)
        _catch_up_owned(connection, staged, log, owned_rows, deleted)
        refuse_strays(connection, set(moved), carried_keys(owned_rows), names=staged)
        for table in swapped:                     # the other tables' references keep naming the live tables ...
            connection.exec_driver_sql(f'ALTER TABLE "{table.name}" RENAME TO "{RETIRED}_{table.name}_{suffix}"')
        connection.exec_driver_sql("PRAGMA legacy_alter_table=OFF")
        for table in swapped:                     # ... and the staged tables' references follow their records
            connection.exec_driver_sql(f'ALTER TABLE "{staged[table.name]}" RENAME TO "{table.name}"')
        open_staged_pairs(connection, staged["review_pairs"])
        rest(connection)                          # after the renames: what it reads of records is the load's
    held = time.perf_counter() - started
    return {"swap_lock": round(held, 2), "longest_staging_lock": round(longest, 2)}


@contextmanager
def _one_at_a_time(store: Store) -> Iterator[None]:
    """Hold the store's bulk-load lock (`<database file>.bulk-lock`) or refuse at once."""
    database = store.engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(Path(database).with_name(Path(database).name + ".bulk-lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StagingConflict(f"another bulk load is being written into this store ({handle.name} is held): "
                                  f"nothing of this one was written; run it again when that one has finished") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _drop_leftovers(store: Store) -> None:
    """Drop the change triggers and staged tables of loads that never swapped and tables retired by loads that did
    (under the lock). Triggers first: one left on a live table would log every write into a table dropped. A table's
    own indexes go one at a time before it, then its rows in turns (`_empty_in_turns`), and each drop is preceded by
    a pause for other writers (`_yield_to_writers`; the first drop after a swap would otherwise follow it back to
    back): dropping a million-record table whole holds the write lock about a second."""
    found = []
    with store.engine.connect() as connection:
        for kind, name in connection.exec_driver_sql(
                "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'table') ORDER BY type = 'table'").all():
            if not re.fullmatch(rf"({STAGED}|{RETIRED})_\w+_[0-9a-f]{{8}}", name):
                continue
            if kind == "table":
                found += [("index", index) for (index,) in connection.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (name,))]
            found.append((kind, name))
    for kind, name in found:
        if kind == "table":
            _empty_in_turns(store, name)
        with _after_a_pause(store) as connection:
            connection.exec_driver_sql(f'DROP {kind.upper()} IF EXISTS "{name}"')


def _empty_in_turns(store: Store, table: str) -> float:
    """Delete the rows of `table` (one being dropped) in rowid order, in turns (`_in_turns`); the longest
    transaction's seconds. Dropping a table frees every page of it and of its key's index at once: a retired
    million-record table held the write lock 1.2 s, where its rows deleted in turns hold it about a turn at a time
    and the drop of the empty table next to nothing."""
    def delete(connection: Connection, rows: int) -> bool:
        (bound,) = connection.exec_driver_sql(f'SELECT max(r) FROM (SELECT rowid AS r FROM "{table}" ORDER BY rowid '
                                              f'LIMIT ?)', (rows,)).one()
        if bound is None:
            return True
        connection.exec_driver_sql(f'DELETE FROM "{table}" WHERE rowid <= ?', (bound,))
        return False

    return _in_turns(store, STAGE_ROWS, delete)


def _log_changes(connection: Connection, owned: tuple[Table, ...], log: str, suffix: str) -> None:
    """Log the key of every row of the `owned` live tables written or deleted from now on (by anyone, a cascade
    included) in the table `log`, so the swap can bring their staged copies up to date."""
    if not owned:
        return
    # No key on the log: an upsert's conflict handling would override a trigger's OR IGNORE (SQLite's rule).
    connection.exec_driver_sql(f'CREATE TABLE "{log}" (tbl TEXT NOT NULL, key TEXT NOT NULL)')
    for table in owned:
        key = OWNED[table]
        for event, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")), ("DELETE", ("OLD",))):
            logged = " ".join(f"INSERT INTO \"{log}\" VALUES ('{table.name}', {row}.\"{key}\");" for row in rows)
            connection.exec_driver_sql(f'CREATE TRIGGER "{STAGED}_log_{table.name}_{event.lower()}_{suffix}" '
                                       f'AFTER {event} ON "{table.name}" BEGIN {logged} END')


def _create_like(connection: Connection, live: str, staged: dict, suffix: str) -> None:
    """`staged[live]`: `live`'s columns, keys and indexes; a reference to another staged table names that one,
    so staged tables left by a killed load still hold together."""
    (ddl,) = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                        (live,)).one()
    ddl = re.sub(rf'^CREATE TABLE ("?){live}\1', f'CREATE TABLE "{staged[live]}"', ddl)
    for other, name in staged.items():
        ddl = re.sub(rf'REFERENCES ("?){other}\1 ', f'REFERENCES "{name}" ', ddl)
    connection.exec_driver_sql(ddl)
    for (ddl,) in connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (live,)).all():
        match = re.match(rf'^CREATE (UNIQUE )?INDEX ("?)(\w+?)(?:_[0-9a-f]{{8}})*\2 ON ("?){live}\4', ddl)
        if match is None:
            raise RuntimeError(f"cannot stage an index of {live}: {ddl}")
        unique, _, name, _ = match.groups()
        connection.exec_driver_sql(f'CREATE {unique or ""}INDEX "{name}_{suffix}" ON "{staged[live]}"' + ddl[match.end():])


def _copy_live(store: Store, table, staged: str) -> float:
    """The live rows into `staged` in rowid order, in turns (`_in_turns`); the longest transaction's seconds."""
    last = -1

    def copy(connection: Connection, rows: int) -> bool:
        nonlocal last
        (bound,) = connection.exec_driver_sql(f'SELECT max(r) FROM (SELECT rowid AS r FROM "{table.name}" '
                                              f'WHERE rowid > ? ORDER BY rowid LIMIT ?)', (last, rows)).one()
        if bound is None:
            return True
        connection.exec_driver_sql(         # OR REPLACE: a record deleted and written again meanwhile comes twice
            f'INSERT OR REPLACE INTO "{staged}" SELECT * FROM "{table.name}" WHERE rowid > ? AND rowid <= ?',
            (last, bound))
        last = bound
        return False

    return _in_turns(store, STAGE_ROWS, copy)


def _write_owned(store: Store, table: Table, staged: dict, rows: list[dict]) -> float:
    """Upsert the load's `rows` of an `OWNED` table into its staged copy, checked against the staged records (an
    item or consent never moves to another agency's record), in turns of at most `OWNED_STAGE_ROWS`; the longest
    transaction's seconds."""
    return _slices_in_turns(store, _by_key(rows, OWNED[table]), OWNED_STAGE_ROWS, lambda connection, part: upsert(
        connection, table, OWNED[table], part, names=staged))


def _write_rows(store: Store, table, staged: str, rows: list[dict]) -> float:
    """Upsert `rows` (dicts of `table`'s columns) into `staged`, in turns of at most `STAGE_ROWS`; the longest
    transaction's seconds."""
    [key] = table.primary_key.columns.keys()
    if all(key in row for row in rows):           # not review pairs: the store numbers them in the order written
        rows = _by_key(rows, key)
    return _slices_in_turns(store, rows, STAGE_ROWS,
                            lambda connection, part: sqlite_upsert(connection, table, part, into=staged))


def _slices_in_turns(store: Store, rows: list[dict], most: int, write: Callable[[Connection, list[dict]], None]) -> float:
    """`write(connection, part)` for consecutive parts of `rows`, in turns (`_in_turns`) of at most `most` rows."""
    start = 0

    def next_part(connection: Connection, count: int) -> bool:
        nonlocal start
        write(connection, rows[start: start + count])
        start += count
        return start >= len(rows)

    return _in_turns(store, most, next_part) if rows else 0.0


def _in_turns(store: Store, most: int, write: Callable[[Connection, int], bool]) -> float:
    """Call `write(connection, rows)`, which writes up to `rows` more rows and says whether it has written them all,
    once per staging transaction until it has: each transaction sized to hold the write lock about `TURN_SECONDS`
    (from the last one's pace; at most `most` rows) and preceded by a pause in which the writers kept waiting get
    the lock (`_yield_to_writers`), so no turn follows the load's transaction before it back to back. Returns the
    longest transaction's seconds."""
    rows, longest = min(most, FIRST_TURN_ROWS), 0.0
    while True:
        with _staging(store) as (connection, began):
            done = write(connection, rows)
        held = time.perf_counter() - began
        longest = max(longest, held)
        if done:
            return longest
        rows = max(1, min(most, rows * TURN_GROWTH, int(rows * TURN_SECONDS / max(held, 1e-6))))


def _yield_to_writers(watcher: Connection) -> None:
    """Leave the write lock to others for `PAUSE_SECONDS`, and `PAUSE_SECONDS` more while other connections keep
    committing (SQLite's `data_version`, read on `watcher`), up to `LONGEST_PAUSE_SECONDS` in all."""
    paused, seen = 0.0, _data_version(watcher)
    while paused < LONGEST_PAUSE_SECONDS:
        time.sleep(PAUSE_SECONDS)
        paused += PAUSE_SECONDS
        now = _data_version(watcher)
        if now == seen:
            return
        seen = now


def _data_version(connection: Connection) -> int:
    """SQLite's count that changes whenever another connection commits to the database."""
    (version,) = connection.exec_driver_sql("PRAGMA data_version").one()
    return version


@contextmanager
def _after_a_pause(store: Store) -> Iterator[Connection]:
    """One of the load's transactions (`Store.begin_unchecked`), begun after a pause for the writers kept waiting
    (`_yield_to_writers`). Every transaction of a load goes through here, so no two are back to back: a writer
    waiting for the lock polls past the moment between two such (SQLite's busy handler) and waits for both."""
    with store.engine.connect() as watcher:
        _yield_to_writers(watcher)
    with store.begin_unchecked() as connection:
        yield connection


@contextmanager
def _staging(store: Store) -> Iterator[tuple[Connection, float]]:
    """One staging transaction (`_after_a_pause`) with a page cache of `STAGE_CACHE_KIB`, and when it got the lock."""
    with _after_a_pause(store) as connection:
        began = time.perf_counter()
        (own,) = connection.exec_driver_sql("PRAGMA cache_size").one()
        connection.exec_driver_sql(f"PRAGMA cache_size=-{STAGE_CACHE_KIB}")
        try:
            yield connection, began
        finally:
            connection.exec_driver_sql(f"PRAGMA cache_size={own}")


def _by_key(rows: list[dict], key: str) -> list[dict]:
    """`rows` in the order of their `key`, rows of one key in the order sent (the last sent wins, as before): a
    B-tree filled in key order writes each page once, where rows in the file's order land all over it."""
    return sorted(rows, key=itemgetter(key))


def _catch_up(connection: Connection, staged: dict, snapshot: int, touched: set[str]) -> set[str]:
    """Bring the staged tables up to date with the record writes committed since `snapshot` (see the module
    docstring); refuse the load if one of them touched a record the load carries or hangs items on. Returns the
    records deleted meanwhile."""
    if any(r.op == "rebuild" for r in changes_after(connection, snapshot)):
        raise StagingConflict("another bulk load was written while this one was being staged: nothing of this "
                              "one was written; run it again")
    written, deleted = written_since(connection, snapshot)
    clash = sorted((written | deleted) & touched)
    if clash:
        raise StagingConflict(f"record {clash[0]!r} ({len(clash)} in all), which this load carries or hangs items on, "
                              f"was written or deleted while the load was being staged: nothing of it was written; "
                              f"run it again")
    for record_id in deleted:
        for table in TABLES:
            connection.exec_driver_sql(f'DELETE FROM "{staged[table.name]}" WHERE record_id = ?', (record_id,))
        connection.exec_driver_sql(f'DELETE FROM "{staged["review_pairs"]}" WHERE record_id_l = ? OR record_id_r = ?',
                                   (record_id, record_id))
    for record_id in written:
        for table in TABLES:
            connection.exec_driver_sql(f'INSERT OR REPLACE INTO "{staged[table.name]}" '
                                       f'SELECT * FROM "{table.name}" WHERE record_id = ?', (record_id,))
    return deleted


def _catch_up_owned(connection: Connection, staged: dict, log: str, owned_rows: dict[Table, list[dict]],
                    deleted: set[str]) -> None:
    """Bring the staged items and consents up to date with the live rows written or deleted since staging began
    (`_log_changes`) and with the records deleted meanwhile; refuse the load if a row it carries was among them."""
    for table in OWNED:
        if table.name not in staged:
            continue
        key = OWNED[table]
        changed = [k for (k,) in connection.exec_driver_sql(f'SELECT DISTINCT key FROM "{log}" WHERE tbl = ? ORDER BY key',
                                                            (table.name,))]
        clash = sorted(set(changed) & {row[key] for row in owned_rows[table]})
        if clash:
            raise StagingConflict(f"{table.name} {clash[0]!r} ({len(clash)} in all), which this load carries, was written "
                                  f"or withdrawn while the load was being staged: nothing of it was written; run it again")
        for value in changed:
            connection.exec_driver_sql(f'DELETE FROM "{staged[table.name]}" WHERE "{key}" = ?', (value,))
            connection.exec_driver_sql(f'INSERT INTO "{staged[table.name]}" SELECT * FROM "{table.name}" WHERE "{key}" = ?',
                                       (value,))
        for record_id in deleted:
            connection.exec_driver_sql(f'DELETE FROM "{staged[table.name]}" WHERE record_id = ?', (record_id,))
