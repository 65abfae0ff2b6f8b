"""Agency feeds: upsert or delete a record, upsert a context item or a consent.

A `feed` key writes only its own agency's data (403 otherwise); an `admin` key writes any.
Ownership: an item or a consent belongs to the agency of the record it hangs on when first
written. A feed writing an existing `item_id` / `consent_id` of another agency gets 403 "this
item belongs to another agency" / "this consent belongs to another agency", the stored row is
unchanged, and the attempt is audited as `write_refused` (principal, agency, kind, id) in a
transaction of its own, so the refusal is on record although the request wrote nothing; a feed's
refused record write or delete is audited the same way (kind `record`). Nobody, admin included,
moves an item or a consent onto a record of another agency, nor changes the agency of a record
that items or consents hang on (409). No refusal names another agency.

A feed's answer to `POST /v1/records` is `{"record_id", "created"}`: which person the record
joined, and whether it resembles anyone, are not the feed's to know (a feed posting a copy of
another agency's record would learn that the person is known there); an admin's answer adds
`person_id`, `joined` and `review_pair`. The audit event keeps them all.

A record is matched at once by the resolver (it joins a person only at `certain`, else starts one
and opens a review pair) and is resolvable by the very next briefing on this worker; the store
write, the person assignment, the review pair it opens (api.review_queue) and the audit event are
one transaction, and the in-memory change is undone if that transaction fails. A steward's live
decision about the record overrules the resolver's scores (`steward_person`): it stays with a
record it was decided to match, and never joins a person holding one it was decided not to.
Other workers pick the change up from the store's change feed before their next request
(`api.changes`). Resending the same body is safe (upsert by id).
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from flask import Blueprint, abort, current_app, jsonify
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from api.audit import append
from api.changes import record_change
from api.ingest import ConsentIn, ItemIn, OwnershipConflict, consent_row, item_row, record_row, upsert
from api.retention import begin_writing
from api.review_queue import from_resolver, open_pairs, steward_person
from api.store import clusters, consents, context_items, records
from scoring.item import Role

blueprint = Blueprint("feeds", __name__)
WRITERS = {Role.feed, Role.admin}
FIELD_LENGTH = 200               # a name, a street, a city
ALIASES_LENGTH = 2_000           # every alias of a record together


class RecordIn(BaseModel):
    """One source record (canonical fields; empty means unknown)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    record_id: str = Field(min_length=1, max_length=200)
    agency: str | None = Field(default=None, max_length=200)          # an id, like record_id
    source_system: str | None = Field(default=None, max_length=200)
    # Bounded like a person's details are: an identity field of megabytes is an attack on the resolver and the
    # steward pages, not a record (tests/adversarial/test_complexity.py).
    given_name: str | None = Field(default=None, max_length=FIELD_LENGTH)
    middle_name: str | None = Field(default=None, max_length=FIELD_LENGTH)
    family_name: str | None = Field(default=None, max_length=FIELD_LENGTH)
    name_suffix: str | None = Field(default=None, max_length=20)
    aliases: str | None = Field(default=None, max_length=ALIASES_LENGTH, description="'|'-separated names")
    dob: date | None = None
    birth_year: int | None = Field(default=None, ge=1850, le=2100)
    sex: str | None = Field(default=None, pattern="^[MFXU]$")
    phone: str | None = Field(default=None, max_length=50)
    email: str | None = Field(default=None, max_length=320)
    street: str | None = Field(default=None, max_length=FIELD_LENGTH)
    city: str | None = Field(default=None, max_length=FIELD_LENGTH)
    state: str | None = Field(default=None, max_length=FIELD_LENGTH)
    postcode: str | None = Field(default=None, max_length=20)
    ssn_last4: str | None = Field(default=None, pattern="^[0-9]{4}$")
    recorded_at: AwareDatetime | None = None


def is_foreign_write(principal, agency: str | None) -> bool:
    """True when `principal` is a feed and `agency` is not its own (admins write every agency's data)."""
    return principal.role == Role.feed and agency != principal.agency


def refuse_write(principal, kind: str, ident: str, status: int, message: str):
    """Audit a refused write as `write_refused`, then answer `status`. The audit event is committed in a
    transaction of its own: call this outside any open transaction (the refused one wrote nothing)."""
    store = current_app.extensions["briefing"].store
    with store.begin() as connection:
        append(connection, "write_refused", {"principal": principal.name, "agency": principal.agency, "kind": kind,
                                             "id": ident}, principal=principal.name)
    abort(status, description=message)


def _own_records_only(principal) -> str:
    return f"a feed of {principal.agency} may write only its own agency's records"


def _writer():
    """401/403 unless the key may write at all; done before any lookup, so strangers learn nothing."""
    from api.app import authorise

    return authorise(WRITERS)


def _record_agency(connection, record_id: str) -> str | None:
    row = connection.execute(select(records.c.agency).where(records.c.record_id == record_id)).first()
    if row is None:
        abort(409, description=f"record {record_id!r} is not in the store: send the record first")
    return row[0]


@blueprint.post("/v1/records")
def upsert_record():
    from api.app import validated

    principal = _writer()
    body = validated(RecordIn)
    if body.agency is not None and is_foreign_write(principal, body.agency):
        refuse_write(principal, "record", body.record_id, 403, _own_records_only(principal))
    record = body.model_dump(exclude_none=True, mode="json")
    service = current_app.extensions["briefing"]
    resolver = service.resolver
    with resolver.lock:
        existed = record["record_id"] in resolver.index_.slot_of
        with service.store.engine.connect() as connection:
            stored = connection.execute(select(records.c.agency).where(records.c.record_id == record["record_id"])).first()
            attached = stored is not None and _has_attachments(connection, record["record_id"])
        if stored is not None and is_foreign_write(principal, stored[0]):
            refuse_write(principal, "record", record["record_id"], 403,
                         f"record {record['record_id']!r} belongs to another agency")
        record.setdefault("agency", stored[0] if stored is not None else principal.agency)
        if attached and record["agency"] != stored[0]:
            abort(409, description=f"record {record['record_id']!r} has context items or consents: its agency cannot "
                                   f"change (they would move with it to another agency)")
        previous = resolver.index_.person_ids[resolver.index_.slot_of[record["record_id"]]] if existed else None
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
                append(connection, "record_upsert", {"principal": principal.name, "record_id": outcome.record_id,
                                                     "person_id": outcome.person_id, "joined": outcome.joined,
                                                     "review_pair": outcome.review_pair}, principal=principal.name)
        except Exception:
            resolver.delete_record(outcome.record_id)
            raise
    answer = {"record_id": outcome.record_id, "created": not existed}
    if principal.role != Role.feed:
        answer |= {"person_id": outcome.person_id, "joined": outcome.joined, "review_pair": outcome.review_pair}
    return jsonify(answer), 200 if existed else 201


def _has_attachments(connection, record_id: str) -> bool:
    """Whether any context item or consent hangs on the record."""
    return any(connection.execute(select(t.c.record_id).where(t.c.record_id == record_id).limit(1)).first()
               for t in (context_items, consents))


@blueprint.delete("/v1/records/<record_id>")
def delete_record(record_id: str):
    principal = _writer()
    service = current_app.extensions["briefing"]
    with service.store.engine.connect() as connection:
        row = connection.execute(select(records.c.agency).where(records.c.record_id == record_id)).first()
    if row is None:
        abort(404, description=f"no record {record_id!r}")
    if is_foreign_write(principal, row[0]):
        refuse_write(principal, "record", record_id, 403, f"record {record_id!r} belongs to another agency")
    with service.resolver.lock:
        with service.store.begin() as connection:
            connection.execute(delete(records).where(records.c.record_id == record_id))
            record_change(connection, "delete", record_id)
            append(connection, "record_delete", {"principal": principal.name, "record_id": record_id}, principal=principal.name)
        if record_id in service.resolver.index_.slot_of:
            service.resolver.delete_record(record_id)
    return "", 204


@blueprint.post("/v1/context-items")
def upsert_item():
    return _upsert_attached(ItemIn, "item_id", item_row, context_items, "context_item", "item")


@blueprint.post("/v1/consents")
def upsert_consent():
    return _upsert_attached(ConsentIn, "consent_id", consent_row, consents, "consent", "consent")


def _upsert_attached(model, key: str, to_row, table, kind: str, noun: str):
    """Items and consents: the record they hang on must exist and be the writer's agency's, and an existing
    item or consent must be the writer's agency's and stay on a record of the agency it belongs to."""
    from api.app import validated

    principal = _writer()
    body = validated(model)
    ident = getattr(body, key)
    service = current_app.extensions["briefing"]
    with service.store.begin() as connection:
        begin_writing(connection)
        target = _record_agency(connection, body.record_id)
        refusal = _refusal(connection, principal, table, key, ident, target, noun)
        if refusal is None:
            try:
                upsert(connection, table, key, [to_row(body, datetime.now(timezone.utc).isoformat())])
            except OwnershipConflict:                # another writer made it another agency's meanwhile
                refusal = _refusal(connection, principal, table, key, ident, target, noun) or \
                    (409, f"{noun} {ident!r} was written by another agency meanwhile")
            else:
                append(connection, f"{table.name}_upsert", {"principal": principal.name, key: ident,
                                                            "record_id": body.record_id}, principal=principal.name)
    if refusal is not None:
        refuse_write(principal, kind, ident, *refusal)
    return jsonify({key: ident, "record_id": body.record_id}), 200


def _refusal(connection, principal, table, key: str, ident: str, target: str | None, noun: str) -> tuple[int, str] | None:
    """Why this write of `ident` onto a record of agency `target` is refused, as (status, message); None if it is not."""
    stored = connection.execute(select(records.c.agency).select_from(table.join(records, records.c.record_id == table.c.record_id))
                                .where(table.c[key] == ident).with_for_update()).first()
    if stored is not None and is_foreign_write(principal, stored.agency):
        return 403, f"this {noun} belongs to another agency"
    if stored is not None and stored.agency != target:
        return 409, f"{noun} {ident!r} cannot move to a record of another agency"
    if is_foreign_write(principal, target):
        return 403, _own_records_only(principal)
    return None
