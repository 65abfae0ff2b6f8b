"""`POST /v1/briefings`: resolve the incident's subject, then the permitted items, ranked and explained.

The request and response shapes are issue 5's. Only responder roles may call it, for a purpose
their key grants. Every call appends one audit event (who, why, which incident, a hash of the
query identifiers, candidates and grades, items returned, items withheld with reasons, the
disclosure basis, and the model and policy versions), written before the answer is sent, and in
the same transaction one `shown_items` row per returned item (principal, incident, item: the
proof `POST /v1/feedback` asks for; a resent incident keeps the first row).

Time: the access policy judges consents and expiries at the server's clock (`service.clock()`,
fixed when the app is made; no request can choose it). The incident's `received_at` is recorded
in the audit event and can only narrow what is disclosed (an item or consent must be live at both
times); one more than a day ahead of the server's clock, or more than 30 years before it, is
refused with 422 at `incident.received_at`. `emergency_attestation` (who attests the medical
emergency, and why) is what lets EMS use the 42 CFR 2.51 exception on a medical-emergency call;
it is logged with each disclosure it allowed.

Answers never name a record's source: every `record_id` and `person_id` a responder is told is an
opaque reference (`ref-…`, `psn-…`, api.reference), for `/v1/match` too (stewards, who review records, get real ids; the
audit log keeps them). An item's `sources` name the agencies of its copies, and every copy there
was itself permitted to this requester (the ranking merges permitted items only): a Part 2 item
released under a consent or the 2.51 exception shows the program that holds it, since the
consent names that discloser and the recipient may know it; a withheld item is never mentioned.

The work runs under a time budget (default 250 ms): past it the answer is 200 with resolution
status `unavailable` and no person data, so a slow store never holds up dispatch. Overdue work is
cancelled between its steps and never queued (api.budget): while every thread is held by a stall,
new briefings answer `unavailable` at once, and fresh ones are served as soon as the stall ends.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Literal

from flask import Blueprint, current_app, jsonify
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from api.audit import append, canonical
from api.budget import Ticket
from api.person_data import person_consents, person_items
from api.reference import person_reference, record_reference
from api.store import shown_items
from matching.query import Subject
from scoring.briefing import brief
from scoring.item import RESPONDERS, Purpose, Role

CALL_TYPES = Literal["disturbance", "welfare_check", "overdose", "suicidal_person", "mental_health_crisis", "trespass",
                     "domestic", "medical", "missing_person", "other"]
MAX_ITEMS = 20
#: How far from the server's clock an incident's `received_at` may be.
AHEAD = timedelta(days=1)
BACK = timedelta(days=round(30 * 365.2425))

blueprint = Blueprint("briefings", __name__)


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")
    street: str | None = None
    city: str | None = None
    postcode: str | None = None


class Incident(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)     # stored in varchar(200) columns (shown_items, feedback)
    call_type: CALL_TYPES
    received_at: AwareDatetime
    location: Location | None = None
    callback_phone: str | None = None


class BriefingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incident: Incident
    subject: Subject
    purpose: Purpose
    emergency_attestation: str | None = Field(
        default=None, min_length=1, max_length=500,
        description="who attests a medical emergency and why (EMS: needed for Part 2 items without consent, "
                    "42 CFR 2.51; logged with each such disclosure)")


@blueprint.post("/v1/briefings")
def create_briefing():
    from api.app import authorise, unprocessable, validated

    principal = authorise(RESPONDERS)
    body = validated(BriefingRequest)
    service = current_app.extensions["briefing"]
    now = service.clock()
    received = body.incident.received_at
    if received > now + AHEAD or received < now - BACK:
        raise unprocessable({"incident.received_at": "must be within 1 day ahead of and 30 years before the "
                                                     f"server's clock ({now.isoformat(timespec='seconds')})"})
    if body.purpose not in principal.purposes:
        return jsonify(error="forbidden", message=f"this key may not claim purpose {body.purpose.value}"), 403
    request_id = uuid.uuid4().hex
    outcome = service.pool.run(lambda ticket: _compose(service, principal, body, now, ticket), service.budget_seconds)
    if outcome.done:
        resolution, items_out, withheld, audit_items = outcome.value
        answer = resolution.to_dict()
    else:
        # Never block dispatch: answer now; late work is cancelled and nothing of it is disclosed.
        answer, items_out, withheld = {"status": "unavailable", "candidates": []}, [], []
        audit_items = {"note": f"budget of {service.budget_seconds * 1000:.0f} ms exceeded" if outcome.status == "overdue"
                       else "every briefing thread is busy with overdue work; not started"}
    with service.store.begin() as connection:
        append(connection, "briefing", {
            "principal": principal.name, "agency": principal.agency, "role": principal.role.value,
            "purpose": body.purpose.value, "incident_id": body.incident.id, "call_type": body.incident.call_type,
            "received_at": received.isoformat(), "judged_at": now.isoformat(),
            **({"emergency_attestation": body.emergency_attestation} if body.emergency_attestation else {}),
            "query_hash": _query_hash(body.subject), "status": answer["status"],
            "candidates": [{"person_id": c["person_id"], "record_id": c["record_id"], "grade": c["grade"]}
                           for c in answer["candidates"]],
            "items_returned": [i["item_id"] for i in items_out], **audit_items, "versions": service.versions,
        }, principal=principal.name, request_id=request_id)
        _record_shown(connection, principal.name, body.incident.id, [i["item_id"] for i in items_out], request_id, now)
    return jsonify({"incident_id": body.incident.id, "request_id": request_id,
                    "resolution": opaque(answer, service.reference_key), "items": items_out, "withheld": withheld,
                    "versions": service.versions})


def _compose(service, principal, body: BriefingRequest, now: datetime, ticket: Ticket):
    """Resolve, then (for a resolved person) the permitted items ranked: what the answer and its audit event need.

    The policy runs at the server's `now`; the incident's time only narrows. `ticket.check()` between
    the steps ends the work once its budget has run out (api.budget).
    """
    subject = body.subject.model_copy(update={"received_at": body.subject.received_at or body.incident.received_at})
    resolution = service.resolver.resolve(subject)
    ticket.check()
    incident = {"incident_id": body.incident.id, "call_type": body.incident.call_type,
                "emergency_attestation": body.emergency_attestation}
    best = resolution.candidates[0] if resolution.candidates and resolution.status == "resolved" else None
    if best is None:
        return resolution, [], [], {}
    with service.store.engine.connect() as connection:
        items, consents = person_items(connection, best.person_id), person_consents(connection, best.person_id)
    ticket.check()
    # A revocation binds every disclosure from `revoked_at` on: `now` is the server's clock, so one
    # already recorded is in force here whatever time the incident claims.
    result = brief(principal, body.purpose, incident, best.grade, items, consents, now, service.rules, service.ranker,
                   incident_at=body.incident.received_at)
    shown_person = person_reference(best.person_id, service.reference_key)
    items_out = [_item_json(line, shown_person, k + 1) for k, line in enumerate(result.items[:MAX_ITEMS])]
    returned = {s["item_id"] for i in items_out for s in i["sources"]}     # every copy shown, merged ones too
    return resolution, items_out, result.withheld, {
        "disclosures": [d for d in result.disclosures if d["item_id"] in returned], "denied": result.denied}


def _item_json(line, person_id: str, position: int) -> dict:
    head = line.head
    return {"item_id": line.item_id, "person_id": person_id, "rank": position, "score": line.score,
            "category": line.category, "code": line.code, "text": line.text,
            "sources": [{"item_id": s["item_id"], "agency": s["agency"], "source_type": s["source_type"]} for s in line.sources],
            "corroboration": line.corroboration, "observed_at": _iso(head.observed_at),
            "last_verified_at": _iso(head.last_verified_at), "status": head.status.value,
            "why": [{"term": t["term"], "contribution": t["contribution"]} for t in line.terms],
            "notices": ([line.presented_as] if line.presented_as != "fact" else []) + list(line.flags)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def opaque(resolution: dict, secret: bytes) -> dict:
    """`resolution` as a responder may see it: every candidate's `person_id` and `record_id` an opaque reference."""
    return {**resolution, "candidates": [{**c, "person_id": person_reference(c["person_id"], secret),
                                          "record_id": record_reference(c["record_id"], secret)}
                                         for c in resolution["candidates"]]}


def _record_shown(connection, principal: str, incident_id: str, item_ids: list[str], request_id: str,
                  shown_at: datetime) -> None:
    """One `shown_items` row per returned item; a row already there (a resent incident) is kept as it is."""
    rows = [{"principal": principal, "incident_id": incident_id, "item_id": item_id, "request_id": request_id,
             "shown_at": shown_at.isoformat()} for item_id in dict.fromkeys(item_ids)]
    if not rows:
        return
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    connection.execute(insert(shown_items).on_conflict_do_nothing(index_elements=["principal", "incident_id", "item_id"]),
                       rows)


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Subject
    purpose: Purpose


@blueprint.post("/v1/match")
def match():
    """Resolution only (who is this?), no context items; for responders (opaque record references) and stewards."""
    from api.app import authorise, validated

    principal = authorise(RESPONDERS | {Role.steward})
    body = validated(MatchRequest)
    service = current_app.extensions["briefing"]
    if principal.role != Role.steward and body.purpose not in principal.purposes:
        return jsonify(error="forbidden", message=f"this key may not claim purpose {body.purpose.value}"), 403
    resolution = service.resolver.resolve(body.subject).to_dict()
    shown = resolution if principal.role == Role.steward else opaque(resolution, service.reference_key)
    request_id = uuid.uuid4().hex
    with service.store.begin() as connection:
        append(connection, "match", {
            "principal": principal.name, "agency": principal.agency, "role": principal.role.value,
            "purpose": body.purpose.value, "query_hash": _query_hash(body.subject), "status": resolution["status"],
            "candidates": [{"person_id": c["person_id"], "record_id": c["record_id"], "grade": c["grade"]}
                           for c in resolution["candidates"]], "versions": service.versions,
        }, principal=principal.name, request_id=request_id)
    return jsonify({"request_id": request_id, "resolution": shown, "versions": service.versions})


def _query_hash(subject: Subject) -> str:
    """A hash of the query's identifiers: the audit log proves what was asked without storing it."""
    return hashlib.sha256(canonical(subject.model_dump(mode="json", exclude_none=True)).encode()).hexdigest()
