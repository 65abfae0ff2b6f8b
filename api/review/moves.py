"""The machinery under api.review.decisions: moving records between persons, checking and storing constraints, undo.

A *move* is `(record_id, person before, person after)`. Every function here runs inside the
caller's transaction; `put` (this worker's resolver) runs after its commit; `finish` writes the
change feed and the audit event, so it comes last in a transaction.
"""

from __future__ import annotations

import json

from sqlalchemy import insert, select, update

from api.service.audit import append
from api.service.changes import record_change
from api.service.referrals import follow_moves
from api.service.stewardship import constraints_touching
from api.service.store import RECORD_FIELDS, clusters, person_events, records, review_constraints, review_decisions


def identity(row) -> dict:
    return {"record_id": row["record_id"], **{f: row[f] for f in RECORD_FIELDS}}


def persons_of(connection, record_ids, lock: bool = False) -> dict[str, str]:
    statement = select(clusters.c.record_id, clusters.c.person_id).where(clusters.c.record_id.in_(list(record_ids)))
    return dict(connection.execute(statement.with_for_update() if lock else statement).all())


def members(connection, person_id: str) -> list[str]:
    return list(connection.execute(select(clusters.c.record_id).where(clusters.c.person_id == person_id)
                                   .order_by(clusters.c.record_id).with_for_update()).scalars())


def origin(row) -> str:
    return f"decision {row.decision_id}" if row.decision_id is not None else f"person event {row.event_id}"


def check(connection, moves: list, added: list[tuple[str, str, str]] = ()) -> None:
    """ValueError if, after `moves`, a live constraint (or one in `added`) would not hold."""
    after = {rid: to for rid, _, to in moves}
    rows = [(r.kind, r.record_id_l, r.record_id_r, origin(r)) for r in constraints_touching(connection, after)]
    rows += [(kind, left, right, "this decision") for kind, left, right in added]
    named = {x for _, left, right, _ in rows for x in (left, right)}
    current = persons_of(connection, named - set(after))
    person = {**current, **after}
    for kind, left, right, source in rows:
        if left not in person or right not in person:
            continue
        if kind == "cannot_link" and person[left] == person[right]:
            raise ValueError(f"records {left!r} and {right!r} would be one person, but {source} says they are not a "
                             "match: undo it first")
        if kind == "must_link" and person[left] != person[right]:
            raise ValueError(f"records {left!r} and {right!r} would be two persons, but {source} says they are a "
                             "match: undo it first")


def write_moves(connection, moves: list) -> None:
    """Put each moved record in its new person; referrals follow the persons (api.service.referrals.follow_moves)."""
    by_person: dict[str, list[str]] = {}
    for rid, _, to in moves:
        by_person.setdefault(to, []).append(rid)
    for to, ids in by_person.items():
        for start in range(0, len(ids), 500):
            connection.execute(update(clusters).where(clusters.c.record_id.in_(ids[start: start + 500])).values(person_id=to))
    follow_moves(connection, moves)


def put(service, moves: list) -> None:
    """This worker's resolver: each moved record under its new person (other workers follow the change feed)."""
    if not moves:
        return
    with service.store.engine.connect() as connection:
        stored = {r["record_id"]: r for r in connection.execute(
            select(records).where(records.c.record_id.in_([m[0] for m in moves]))).mappings()}
    with service.resolver.lock:
        for rid, _, to in moves:
            if rid in stored:
                service.resolver.put_record({k: v for k, v in identity(stored[rid]).items() if v is not None}, to)


def add_event(connection, kind: str, person_id: str, related: str, moves: list, reviewer: str, note: str | None,
           now: str, decision_id: int | None = None) -> int:
    return connection.execute(insert(person_events).values(
        kind=kind, person_id=person_id, related_person_id=related, records=json.dumps([list(m) for m in moves]),
        decision_id=decision_id, reviewer=reviewer, note=note, created_at=now)).inserted_primary_key[0]


def constrain(connection, added: list, now: str, decision_id: int | None = None, event_id: int | None = None) -> None:
    if added:
        connection.execute(insert(review_constraints), [
            {"kind": kind, "record_id_l": left, "record_id_r": right, "decision_id": decision_id, "event_id": event_id,
             "created_at": now} for kind, left, right in added])


def finish(connection, moves: list, action: str, payload: dict, reviewer: str) -> None:
    """Last in the transaction: the change feed (one upsert per moved record), then the audit event."""
    for rid in dict.fromkeys(m[0] for m in moves):
        record_change(connection, "upsert", rid)
    append(connection, action, payload, principal=reviewer)


def candidates(moves: list, *record_persons: tuple[str, str]) -> list[dict]:
    """Persons and records an action touched, as `candidates` (so GET /v1/audit/events?person_id= finds it)."""
    seen = dict.fromkeys([(p, r) for r, p in record_persons] + [(m[1], m[0]) for m in moves] + [(m[2], m[0]) for m in moves])
    return [{"person_id": p, "record_id": r} for p, r in seen if p]


def merge_plan(connection, a: str, b: str) -> tuple[str, str, list[str], list[str]]:
    """(kept, merged, kept's records, merged's records): the larger person keeps its id, a tie the smaller id."""
    records_a, records_b = members(connection, a), members(connection, b)
    if len(records_b) > len(records_a) or (len(records_b) == len(records_a) and b < a):
        return b, a, records_b, records_a
    return a, b, records_a, records_b


def later_blockers(connection, created_at: str, touched: set[str], decision_id: int | None = None,
           event_id: int | None = None) -> None:
    """ValueError naming a later live decision or person-page split/merge that touched any of `touched`."""
    statement = select(review_decisions).where(review_decisions.c.undone_at.is_(None),
                                               review_decisions.c.created_at >= created_at)
    for row in connection.execute(statement.order_by(review_decisions.c.id.desc())):
        if row.id == decision_id or (decision_id is not None and row.id < decision_id):
            continue
        theirs = {row.record_id_l, row.record_id_r} | {m[0] for m in json.loads(row.moves or "[]")}
        if theirs & touched:
            raise ValueError(f"decision {row.id} ({row.decision}, {row.created_at}) came later and touches record "
                             f"{sorted(theirs & touched)[0]!r}: undo it first")
    events = select(person_events).where(person_events.c.undone_at.is_(None), person_events.c.decision_id.is_(None),
                                         person_events.c.created_at >= created_at)
    for row in connection.execute(events.order_by(person_events.c.event_id.desc())):
        if row.event_id == event_id or (event_id is not None and row.event_id < event_id):
            continue
        theirs = {m[0] for m in json.loads(row.records)} | {x for c in connection.execute(
            select(review_constraints.c.record_id_l, review_constraints.c.record_id_r)
            .where(review_constraints.c.event_id == row.event_id)) for x in c}
        if theirs & touched:
            raise ValueError(f"the {row.kind} of person event {row.event_id} ({row.created_at}) came later and touches "
                             f"record {sorted(theirs & touched)[0]!r}: undo it first")


def restore(connection, moves: list, now: str, reviewer: str, decision_id: int | None, event_id: int | None) -> list:
    """Undo `moves` (checked: nothing moved them since, the constraints left still hold); the restoring moves."""
    current = persons_of(connection, [m[0] for m in moves], lock=True)
    for rid, _, after in moves:
        if rid in current and current[rid] != after:
            raise ValueError(f"record {rid!r} has been put in person {current[rid]} since (by a link or a feed), not "
                             f"{after}: decide again instead")
    restore = [(rid, after, before) for rid, before, after in moves if rid in current]
    owner = (review_constraints.c.decision_id == decision_id if decision_id is not None
             else review_constraints.c.event_id == event_id)
    connection.execute(update(review_constraints).where(owner, review_constraints.c.undone_at.is_(None)).values(undone_at=now))
    check(connection, restore)
    write_moves(connection, restore)
    if event_id is not None:
        connection.execute(update(person_events).where(person_events.c.event_id == event_id).values(
            undone_at=now, undone_by=reviewer))
    return restore
