"""Agency feeds: upsert or delete a record, upsert a context item or a consent.

A `feed` key writes only its own agency's data (403 otherwise); an `admin` key writes any. A
record is matched at once by the resolver (it joins a person only at `certain`, else starts one
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

from flask import Blueprint, abort, current_app, g, jsonify
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from api.audit import append
from api.changes import record_change
from api.ingest import consent_row, item_row, record_row, upsert
from api.review_queue import from_resolver, open_pairs, steward_person
from api.store import clusters, records
from scoring.item import Consent, ContextItem, Role

blueprint = Blueprint("feeds", __name__)
WRITERS = {Role.feed, Role.admin}


class RecordIn(BaseModel):
    """One source record (canonical fields; empty means unknown)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    record_id: str = Field(min_length=1, max_length=200)
    agency: str | None = None
    source_system: str | None = None
    given_name: str | None = None
    middle_name: str | None = None
    family_name: str | None = None
    name_suffix: str | None = None
    aliases: str | None = None
    dob: date | None = None
    birth_year: int | None = Field(default=None, ge=1850, le=2100)
    sex: str | None = Field(default=None, pattern="^[MFXU]$")
    phone: str | None = None
    email: str | None = None
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postcode: str | None = None
    ssn_last4: str | None = Field(default=None, pattern="^[0-9]{4}$")
    recorded_at: AwareDatetime | None = None


def _writer_for(agency: str | None):
    """The writing principal, if it may write `agency`'s data (call `_writer` before any lookup)."""
    principal = g.get("principal") or _writer()
    if principal.role == Role.feed and agency not in (None, principal.agency):
        abort(403, description=f"a feed of {principal.agency} may not write {agency}'s data")
    return principal


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

    _writer()
    body = validated(RecordIn)
    principal = _writer_for(body.agency)
    record = body.model_dump(exclude_none=True, mode="json")
    record.setdefault("agency", principal.agency)
    service = current_app.extensions["briefing"]
    resolver = service.resolver
    with resolver.lock:
        existed = record["record_id"] in resolver.index_.slot_of
        with service.store.engine.connect() as connection:
            stored = connection.execute(select(records.c.agency).where(records.c.record_id == record["record_id"])).first()
        if stored is not None and principal.role == Role.feed and stored[0] != principal.agency:
            abort(403, description=f"record {record['record_id']!r} belongs to {stored[0]}")
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
    return jsonify(record_id=outcome.record_id, person_id=outcome.person_id, joined=outcome.joined,
                   review_pair=outcome.review_pair), 200 if existed else 201


@blueprint.delete("/v1/records/<record_id>")
def delete_record(record_id: str):
    _writer()
    service = current_app.extensions["briefing"]
    with service.store.engine.connect() as connection:
        row = connection.execute(select(records.c.agency).where(records.c.record_id == record_id)).first()
    if row is None:
        abort(404, description=f"no record {record_id!r}")
    principal = _writer_for(row[0])
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
    return _upsert_attached(ContextItem, "item_id", item_row, "context_items")


@blueprint.post("/v1/consents")
def upsert_consent():
    return _upsert_attached(Consent, "consent_id", consent_row, "consents")


def _upsert_attached(model, key: str, to_row, table_name: str):
    """Items and consents: the record they hang on must exist and belong to the writer's agency."""
    from api.app import validated
    from api.store import metadata

    _writer()
    body = validated(model)
    service = current_app.extensions["briefing"]
    with service.store.begin() as connection:
        principal = _writer_for(_record_agency(connection, body.record_id))
        upsert(connection, metadata.tables[table_name], key, [to_row(body, datetime.now(timezone.utc).isoformat())])
        append(connection, f"{table_name}_upsert", {"principal": principal.name, key: getattr(body, key),
                                                    "record_id": body.record_id}, principal=principal.name)
    return jsonify({key: getattr(body, key), "record_id": body.record_id}), 200
