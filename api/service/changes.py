"""Keeping every worker's index current: a change feed in the store, applied before each request.

Each write of a record (feed, ingest) and each key revocation appends a row to `changes` in the
same transaction.
Before a request that resolves, a worker reads the changes after the last one it applied (one
indexed query) and applies them to its in-memory index: the record as stored, under the person
the store assigned. A bulk load appends one `rebuild`: a fresh index is then built off the request
path (api.service.rebuild) while requests keep being answered from the current one, which keeps
applying every later change, so a record deleted or erased is never answered from either index.
So a write through any worker is seen by the next request to every worker.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import bindparam, func, insert, select

from api.service.audit import hold_audit_lock
from api.service.store import RECORD_FIELDS, changes, clusters, records


def record_change(connection, op: str, record_id: str | None = None) -> None:
    # Changes must commit in seq order, or a worker that read past a later seq would never apply an earlier one
    # committed after it. SQLite's single writer gives that order; on PostgreSQL the audit chain's lock does.
    # It is held to the commit: take it last in a transaction (after any row locks) so it cannot deadlock.
    hold_audit_lock(connection)
    connection.execute(insert(changes).values(record_id=record_id, op=op, at=datetime.now(timezone.utc).isoformat()))


def latest(connection) -> int:
    return connection.execute(select(func.coalesce(func.max(changes.c.seq), 0))).scalar()


def apply_changes(service) -> int:
    """Apply the changes after `service.applied`; returns how many were read.

    `upsert` / `delete` of a record: the record as stored goes into (or out of) the index;
    `rebuild`: a fresh index is asked of `service.rebuilder` (built in the background, swapped in
    when ready); `keys`: the worker forgets the keys it knew.
    """
    with service.changes_lock, service.store.engine.connect() as connection:
        rows = changes_after(connection, service.applied)
        if not rows:
            return 0
        if any(r.op == "keys" for r in rows):
            service.keys.clear()
        rebuilds = [r.seq for r in rows if r.op == "rebuild"]
        if rebuilds:
            service.rebuilder.request(rebuilds[-1])
        apply_rows(connection, service.resolver, rows)
        service.applied = rows[-1].seq
    return len(rows)


_AFTER = select(changes).where(changes.c.seq > bindparam("seq")).order_by(changes.c.seq)


def changes_after(connection, seq: int) -> list:
    """The change rows after `seq`, oldest first (read before every request: a statement built once)."""
    return connection.execute(_AFTER, {"seq": seq}).all()


def written_since(connection, seq: int) -> tuple[set[str], set[str]]:
    """(records written after change `seq` that are still stored, records deleted after it that are gone)."""
    ids = {r.record_id for r in changes_after(connection, seq) if r.op in ("upsert", "delete")}
    stored = {record_id for chunk in _chunks(sorted(ids)) for (record_id,) in connection.execute(
        select(records.c.record_id).where(records.c.record_id.in_(chunk)))}
    return stored, ids - stored


def _chunks(ids: list[str], size: int = 500):
    for start in range(0, len(ids), size):
        yield ids[start: start + size]


def apply_rows(connection, resolver, rows) -> None:
    """Put each changed record, as the store now holds it, into `resolver`'s index (or take it out)."""
    with resolver.lock:
        for row in rows:
            if row.op not in ("upsert", "delete"):
                continue
            stored = connection.execute(select(records, clusters.c.person_id).join(
                clusters, clusters.c.record_id == records.c.record_id).where(records.c.record_id == row.record_id)
            ).mappings().first()
            if stored is None:
                if row.record_id in resolver.index_.slot_of:
                    resolver.delete_record(row.record_id)
            else:
                fields = {f: stored[f] for f in ("record_id",) + RECORD_FIELDS if stored[f] is not None}
                resolver.put_record(fields, stored["person_id"])
