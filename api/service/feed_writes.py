"""What agency feeds write: upsert or delete a record, upsert a context item or a consent (api/web/feeds.py).

Ownership (api.service.ownership): an item or a consent belongs to the agency of the record it hangs on
when first written. A feed writing an existing `item_id` / `consent_id` of another agency is refused
("this item belongs to another agency" / "this consent belongs to another agency"), the stored row is
unchanged, and the attempt is audited as `write_refused`; a feed's refused record write or delete is audited
the same way (kind `record`). Nobody, admin included, moves an item or a consent onto a record of another
agency, nor changes the agency of a record that items or consents hang on (`Conflict`). No refusal names
another agency.

A feed is told of a record write only `{"record_id", "created"}`: which person the record joined, and
whether it resembles anyone, are not the feed's to know (a feed posting a copy of another agency's record
would learn that the person is known there); an admin is told `person_id`, `joined` and `review_pair` too.
The audit event keeps them all.

A record is matched at once by the resolver (it joins a person only at `certain`, else starts one and opens
a review pair) and is resolvable by the very next briefing on this worker; the store write, the person
assignment, the review pair it opens (api.service.stewardship) and the audit event are one transaction, and the
in-memory change is undone if that transaction fails. A steward's live decision about the record overrules
the resolver's scores (`steward_person`): it stays with a record it was decided to match, and never joins a
person holding one it was decided not to. Other workers pick the change up from the store's change feed
before their next request (api.service.changes). Resending the same body is safe (upsert by id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Table, delete, select

from api.service.audit import append, audit_fields
from api.service.changes import record_change
from api.service.ingest import consent_row, item_row, record_row
from api.service.owned_upsert import OwnershipConflict, upsert
from api.service.ownership import is_foreign_write, own_records_only, refuse_write
from api.service.refusals import Conflict, Forbidden, NotFound, Refusal
from api.service.stewardship import from_resolver, open_pairs, steward_person
from api.service.store import begin_writing, clusters, consents, context_items, records
from scoring.item import Principal, Role


@dataclass(frozen=True)
class Attached:
    """A kind of row that hangs on a record: its table, id column, stored row, and names in refusals."""

    table: Table
    key: str
    to_row: Callable
    kind: str                   # in `write_refused` events
    noun: str                   # in refusals' messages


ITEMS = Attached(context_items, "item_id", item_row, "context_item", "item")
CONSENTS = Attached(consents, "consent_id", consent_row, "consent", "consent")


def write_record(service, principal: Principal, record: dict) -> tuple[dict, bool]:
    """Upsert `record` (canonical fields, None left out) as `principal`: (what the writer is told, whether it is new)."""
    record_id = record["record_id"]
    if "agency" in record and is_foreign_write(principal, record["agency"]):
        refuse_write(service.store, principal, "record", record_id, Forbidden(own_records_only(principal)))
    resolver = service.resolver
    with resolver.lock:
        existed = record_id in resolver.index_.slot_of
        with service.store.engine.connect() as connection:
            stored = connection.execute(select(records.c.agency).where(records.c.record_id == record_id)).first()
            attached = stored is not None and _has_attachments(connection, record_id)
        if stored is not None and is_foreign_write(principal, stored[0]):
            refuse_write(service.store, principal, "record", record_id,
                         Forbidden(f"record {record_id!r} belongs to another agency"))
        record.setdefault("agency", stored[0] if stored is not None else principal.agency)
        if attached and record["agency"] != stored[0]:
            raise Conflict(f"record {record_id!r} has context items or consents: its agency cannot change (they "
                           f"would move with it to another agency)")
        outcome = _link_and_store(service, resolver, principal, record, existed)
    answer = {"record_id": outcome.record_id, "created": not existed}
    if principal.role != Role.feed:
        answer |= {"person_id": outcome.person_id, "joined": outcome.joined, "review_pair": outcome.review_pair}
    return answer, not existed


def _link_and_store(service, resolver, principal: Principal, record: dict, existed: bool):
    """Resolve the record into `resolver` (this worker's index, whose lock the caller holds), then store it, its
    person, its review pair, the change and the audit event in one transaction; the index change is undone if
    that fails. An index swapped in meanwhile (api.service.rebuild) gets the record from the change feed."""
    previous = resolver.index_.person_of(record["record_id"]) if existed else None
    outcome = resolver.update_record(record) if existed else resolver.add_record(record)
    now = datetime.now(timezone.utc).isoformat()
    try:
        with service.store.begin() as connection:
            person, joined = steward_person(connection, outcome.record_id, outcome.person_id,
                                            resolver.index_.person_id_set, previous)
            if person != outcome.person_id:            # a steward's decision overrules the scores
                resolver.put_record(record, person)
                outcome.person_id, outcome.joined = person, joined
            upsert(connection, records, "record_id", [record_row(record, now)])
            upsert(connection, clusters, "record_id", [{"record_id": outcome.record_id, "person_id": outcome.person_id}])
            if outcome.review_pair:
                open_pairs(connection, [from_resolver(outcome.review_pair)], "new_record", now)
            record_change(connection, "upsert", outcome.record_id)
            append(connection, "record_upsert", {**audit_fields(principal), "record_id": outcome.record_id,
                                                 "person_id": outcome.person_id, "joined": outcome.joined,
                                                 "review_pair": outcome.review_pair}, principal=principal.name)
    except Exception:
        resolver.delete_record(outcome.record_id)
        raise
    return outcome


def _has_attachments(connection, record_id: str) -> bool:
    """Whether any context item or consent hangs on the record."""
    return any(connection.execute(select(t.c.record_id).where(t.c.record_id == record_id).limit(1)).first()
               for t in (context_items, consents))


def delete_record(service, principal: Principal, record_id: str) -> None:
    """Delete a record (a feed: of its own agency) from the store and from every worker's index."""
    with service.store.engine.connect() as connection:
        row = connection.execute(select(records.c.agency).where(records.c.record_id == record_id)).first()
    if row is None:
        raise NotFound(f"no record {record_id!r}")
    if is_foreign_write(principal, row[0]):
        refuse_write(service.store, principal, "record", record_id,
                     Forbidden(f"record {record_id!r} belongs to another agency"))
    resolver = service.resolver
    with resolver.lock:
        with service.store.begin() as connection:
            connection.execute(delete(records).where(records.c.record_id == record_id))
            record_change(connection, "delete", record_id)
            append(connection, "record_delete", {**audit_fields(principal), "record_id": record_id},
                   principal=principal.name)
        if record_id in resolver.index_.slot_of:
            resolver.delete_record(record_id)


def write_attached(service, principal: Principal, body, what: Attached) -> dict:
    """Upsert an item or a consent (`body`, an ItemIn or ConsentIn): the record it hangs on must exist and be the
    writer's agency's, and an existing one must be the writer's agency's and stay on a record of the agency it
    belongs to. What the writer is told: its id and its record's."""
    ident = getattr(body, what.key)
    with service.store.begin() as connection:
        begin_writing(connection)
        target = _record_agency(connection, body.record_id)
        refusal = _refusal(connection, principal, what, ident, target)
        if refusal is None:
            try:
                upsert(connection, what.table, what.key, [what.to_row(body, datetime.now(timezone.utc).isoformat())])
            except OwnershipConflict:                # another writer made it another agency's meanwhile
                refusal = _refusal(connection, principal, what, ident, target) or \
                    Conflict(f"{what.noun} {ident!r} was written by another agency meanwhile")
            else:
                append(connection, f"{what.table.name}_upsert", {**audit_fields(principal), what.key: ident,
                                                                 "record_id": body.record_id}, principal=principal.name)
    if refusal is not None:
        refuse_write(service.store, principal, what.kind, ident, refusal)
    return {what.key: ident, "record_id": body.record_id}


def _record_agency(connection, record_id: str) -> str | None:
    row = connection.execute(select(records.c.agency).where(records.c.record_id == record_id)).first()
    if row is None:
        raise Conflict(f"record {record_id!r} is not in the store: send the record first")
    return row[0]


def _refusal(connection, principal: Principal, what: Attached, ident: str, target: str | None) -> Refusal | None:
    """Why this write of `ident` onto a record of agency `target` is refused; None if it is not."""
    table = what.table
    stored = connection.execute(select(records.c.agency).select_from(table.join(records, records.c.record_id == table.c.record_id))
                                .where(table.c[what.key] == ident).with_for_update()).first()
    if stored is not None and is_foreign_write(principal, stored.agency):
        return Forbidden(f"this {what.noun} belongs to another agency")
    if stored is not None and stored.agency != target:
        return Conflict(f"{what.noun} {ident!r} cannot move to a record of another agency")
    if is_foreign_write(principal, target):
        return Forbidden(own_records_only(principal))
    return None
