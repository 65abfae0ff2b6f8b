"""Correcting and withdrawing data: retract an item, revoke a consent, erase a person's registry data.

Every call is one transaction with its audit event; nothing is cached, so each change holds from
the very next request on every worker (items and consents are read per request, and the records
an erasure removes go through the change feed, `api.changes`).

`POST /v1/context-items/<item_id>/retract` — feed of the item's record's agency, or admin.
Body (optional): `{"reason": "...", "status": "retracted" | "entered_in_error"}` (default
`retracted`). The row is kept with its new status (so the retraction is auditable and the item is
never shown: the access policy denies every item that is not active, `DENY_NOT_ACTIVE`, and does
not mention it to the requester). A later upsert of the same `item_id` through
`POST /v1/context-items` or `briefing ingest` replaces the row, status included: the feed is the
authority on its own data, so it may reinstate an item by sending it again as active — that
upsert is itself audited — and a feed that resends old copies must send the retraction too.
Answer 200 `{"item_id", "record_id", "status", "previous_status", "changed"}`; retracting an
item already in that status changes nothing and is still audited. 404 unknown item; 403 a feed
of another agency (or any feed, for a record without an agency: only admin may act on those),
with a message that never names the agency the item belongs to.

`POST /v1/consents/<consent_id>/revoke` — same writers. Body (optional): `{"revoked_at": aware
time not in the future, "reason": "..."}`; `revoked_at` defaults to now and is stored, and
answered, as UTC (api.ingest.utc_text). A revocation only ever
moves earlier: a consent already revoked at or before the given time keeps its time. Answer
200 `{"consent_id", "record_id", "revoked_at", "previous_revoked_at", "changed"}`. The access
policy treats a consent as active while `now < revoked_at`, where `now` is the time the
briefing is evaluated at. A resent consent upsert replaces `revoked_at` like any other field.

`POST /v1/persons/<person_id>/erase-registry` — admin only. Body `{"requested_by": "...",
"reference": "..."}` (who asked, and the request's reference, for the record). Deletes, for the
person's records (the records clustered under `person_id`): every context item with legal
category `VOLUNTARY_REGISTRY`; the person's voluntary-registry records (agency in
`REGISTRY_AGENCIES` or source system in `REGISTRY_SOURCE_SYSTEMS`, as the synthetic county marks
them: `REGISTRY` / `VR`) with every item and consent hanging on them; and the feedback given on
the deleted items (it is about them). The records leave the resolver's index at once on this
worker and, through a `delete` change written in the same transaction, on every other worker.
Review decisions that name the records are kept (labels; record ids only). Answer 200
`{"person_id", "records", "context_items", "consents", "feedback", "record_ids", "item_ids",
"consent_ids"}` (counts and ids; ids are not personal data here); 404 unknown person. The audit
event carries the request's `requested_by` and `reference`, the counts and the ids — never the
erased content.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from flask import Blueprint, abort, current_app, jsonify, request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, select, update

from api.audit import append
from api.changes import record_change
from api.feeds import is_foreign_write, refuse_write
from api.ingest import in_utc_range, utc_text
from api.retention import begin_writing, parse_time
from api.store import clusters, consents, context_items, feedback, records
from scoring.item import Role

blueprint = Blueprint("withdraw", __name__)
WRITERS = {Role.feed, Role.admin}
REGISTRY_AGENCIES = frozenset({"REGISTRY"})
REGISTRY_SOURCE_SYSTEMS = frozenset({"VR"})
_CHUNK = 500


class RetractIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str | None = Field(default=None, max_length=1000)
    status: Literal["retracted", "entered_in_error"] = "retracted"


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    revoked_at: AwareDatetime | None = None
    reason: str | None = Field(default=None, max_length=1000)

    @field_validator("revoked_at")
    @classmethod
    def _in_utc_range(cls, value):
        return in_utc_range(value)


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    requested_by: str = Field(min_length=1, max_length=200)
    reference: str = Field(min_length=1, max_length=200)


def is_registry_record(agency: str | None, source_system: str | None) -> bool:
    return agency in REGISTRY_AGENCIES or source_system in REGISTRY_SOURCE_SYSTEMS


def _optional_body(model):
    """The JSON body as `model`; an empty body is the model's defaults."""
    from api.app import validated

    if not request.get_data(cache=True).strip():
        return model()
    return validated(model)


def _refuse_foreign(principal, table, key: str, ident: str, kind: str) -> None:
    """A feed acting on another agency's item or consent: refused (403, never naming the owner) and audited.

    Checked before the write transaction, so the refusal's audit event commits on its own; `_may_write`
    checks again under the row lock (a record's agency cannot change under its items and consents).
    An unknown id passes here and is 404 there.
    """
    with current_app.extensions["briefing"].store.engine.connect() as connection:
        row = connection.execute(select(records.c.agency).join(table, table.c.record_id == records.c.record_id)
                                 .where(table.c[key] == ident)).first()
    if row is not None and is_foreign_write(principal, row.agency):
        refuse_write(principal, kind, ident, 403, f"a feed of {principal.agency} may not change this {kind}: "
                                                  "it belongs to another agency")


def _may_write(principal, agency: str | None, what: str) -> None:
    """403 unless `principal` is an admin or a feed of the agency `what` belongs to (the message never names it)."""
    if is_foreign_write(principal, agency):
        abort(403, description=f"a feed of {principal.agency} may not change {what}: it belongs to another agency")


@blueprint.post("/v1/context-items/<item_id>/retract")
def retract_item(item_id: str):
    from api.app import authorise

    principal = authorise(WRITERS)
    body = _optional_body(RetractIn)
    _refuse_foreign(principal, context_items, "item_id", item_id, "item")
    store = current_app.extensions["briefing"].store
    with store.begin() as connection:
        begin_writing(connection)
        row = connection.execute(select(context_items.c.record_id, context_items.c.status, records.c.agency)
                                 .join(records, records.c.record_id == context_items.c.record_id)
                                 .where(context_items.c.item_id == item_id).with_for_update()).first()
        if row is None:
            abort(404, description=f"no context item {item_id!r}")
        _may_write(principal, row.agency, f"item {item_id!r}")
        previous = row.status or "active"
        changed = previous != body.status
        if changed:
            connection.execute(update(context_items).where(context_items.c.item_id == item_id).values(
                status=body.status, updated_at=datetime.now(timezone.utc).isoformat()))
        append(connection, "context_item_retract", {
            "principal": principal.name, "role": principal.role.value, "agency": principal.agency, "item_id": item_id,
            "record_id": row.record_id, "status": body.status, "previous_status": previous, "changed": changed,
            "reason": body.reason}, principal=principal.name)
    return jsonify(item_id=item_id, record_id=row.record_id, status=body.status, previous_status=previous,
                   changed=changed)


@blueprint.post("/v1/consents/<consent_id>/revoke")
def revoke_consent(consent_id: str):
    from api.app import authorise, unprocessable

    principal = authorise(WRITERS)
    body = _optional_body(RevokeIn)
    now = current_app.extensions["briefing"].clock()        # the policy's clock: a revocation binds from then on
    if body.revoked_at is not None and body.revoked_at > now:
        raise unprocessable({"revoked_at": "a revocation cannot take effect in the future"})
    when = (body.revoked_at or now).astimezone(timezone.utc)
    _refuse_foreign(principal, consents, "consent_id", consent_id, "consent")
    store = current_app.extensions["briefing"].store
    with store.begin() as connection:
        begin_writing(connection)
        row = connection.execute(select(consents.c.record_id, consents.c.revoked_at, records.c.agency)
                                 .join(records, records.c.record_id == consents.c.record_id)
                                 .where(consents.c.consent_id == consent_id).with_for_update()).first()
        if row is None:
            abort(404, description=f"no consent {consent_id!r}")
        _may_write(principal, row.agency, f"consent {consent_id!r}")
        previous = parse_time(row.revoked_at)
        changed = previous is None or when < previous
        effective = when if changed else previous
        if changed:
            connection.execute(update(consents).where(consents.c.consent_id == consent_id).values(
                revoked_at=utc_text(effective), updated_at=datetime.now(timezone.utc).isoformat()))
        append(connection, "consent_revoke", {
            "principal": principal.name, "role": principal.role.value, "agency": principal.agency,
            "consent_id": consent_id, "record_id": row.record_id, "revoked_at": utc_text(effective),
            "previous_revoked_at": row.revoked_at, "changed": changed, "reason": body.reason}, principal=principal.name)
    return jsonify(consent_id=consent_id, record_id=row.record_id, revoked_at=utc_text(effective),
                   previous_revoked_at=row.revoked_at, changed=changed)


@blueprint.post("/v1/persons/<person_id>/erase-registry")
def erase_registry(person_id: str):
    from api.app import authorise, validated

    principal = authorise({Role.admin})
    body = validated(ErasureIn)
    service = current_app.extensions["briefing"]
    with service.resolver.lock:
        with service.store.begin() as connection:
            begin_writing(connection)
            person = connection.execute(select(records.c.record_id, records.c.agency, records.c.source_system)
                                        .join(clusters, clusters.c.record_id == records.c.record_id)
                                        .where(clusters.c.person_id == person_id).order_by(records.c.record_id)
                                        .with_for_update()).all()
            if not person:
                abort(404, description=f"no person {person_id!r}")
            every = [r.record_id for r in person]
            registry = [r.record_id for r in person if is_registry_record(r.agency, r.source_system)]
            item_ids = sorted(connection.execute(select(context_items.c.item_id).where(
                context_items.c.record_id.in_(every),
                (context_items.c.legal_category == "VOLUNTARY_REGISTRY") | context_items.c.record_id.in_(registry))
            ).scalars())
            consent_ids = sorted(connection.execute(select(consents.c.consent_id)
                                                    .where(consents.c.record_id.in_(registry))).scalars())
            removed_feedback = 0
            for start in range(0, len(item_ids), _CHUNK):
                chunk = item_ids[start: start + _CHUNK]
                removed_feedback += connection.execute(delete(feedback).where(feedback.c.item_id.in_(chunk))).rowcount
                connection.execute(delete(context_items).where(context_items.c.item_id.in_(chunk)))
            if consent_ids:
                connection.execute(delete(consents).where(consents.c.consent_id.in_(consent_ids)))
            if registry:
                connection.execute(delete(clusters).where(clusters.c.record_id.in_(registry)))
                connection.execute(delete(records).where(records.c.record_id.in_(registry)))
            for record_id in registry:
                record_change(connection, "delete", record_id)
            counts = {"records": len(registry), "context_items": len(item_ids), "consents": len(consent_ids),
                      "feedback": removed_feedback}
            append(connection, "registry_erasure", {
                "principal": principal.name, "role": principal.role.value, "person_id": person_id,
                "requested_by": body.requested_by, "reference": body.reference, "deleted": counts,
                "record_ids": registry, "item_ids": item_ids, "consent_ids": consent_ids}, principal=principal.name)
        for record_id in registry:
            if record_id in service.resolver.index_.slot_of:
                service.resolver.delete_record(record_id)
    return jsonify(person_id=person_id, **counts, record_ids=registry, item_ids=item_ids, consent_ids=consent_ids)
