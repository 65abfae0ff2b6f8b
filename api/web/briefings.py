"""`POST /v1/briefings`: resolve the incident's subject, then the permitted items, ranked and explained.

The request and response shapes are issue 5's. Only responder roles may call it, for a purpose
their key grants. The work is api/service/disclosure.py's. Every call appends one audit event (who, why, which incident, a hash of the
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
opaque reference (`ref-…`, `psn-…`, api.service.reference), for `/v1/match` too (stewards, who review records, get real ids; the
audit log keeps them). An item's `sources` name the agencies of its copies, and every copy there
was itself permitted to this requester (the ranking merges permitted items only): a Part 2 item
released under a consent or the 2.51 exception shows the program that holds it, since the
consent names that discloser and the recipient may know it; a withheld item is never mentioned.

The work runs under a time budget (default 250 ms): past it the answer is 200 with resolution
status `unavailable` and no person data, so a slow store never holds up dispatch. Overdue work is
cancelled between its steps and never queued (api.service.budget): while every thread is held by a stall,
new briefings answer `unavailable` at once, and fresh ones are served as soon as the stall ends.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

from flask import Blueprint, jsonify
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.service.audit import audit_fields, record_event
from api.service.disclosure import audited_candidates, compose, opaque, query_hash, record_briefing
from api.service.referrals import BriefedPerson
from api.web.auth import requires
from api.web.context import service
from api.web.errors import unprocessable, validated
from matching.query import Subject
from scoring.item import RESPONDERS, CallType, Purpose, Role

CALL_TYPES = Literal[tuple(c.value for c in CallType)]     # the vocabulary's one home: scoring.item.CallType
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
@requires(*RESPONDERS)
def create_briefing(principal):
    body = validated(BriefingRequest)
    current = service()
    now = current.clock()
    received = body.incident.received_at
    if received > now + AHEAD or received < now - BACK:
        raise unprocessable({"incident.received_at": "must be within 1 day ahead of and 30 years before the "
                                                     f"server's clock ({now.isoformat(timespec='seconds')})"})
    if body.purpose not in principal.purposes:
        return jsonify(error="forbidden", message=f"this key may not claim purpose {body.purpose.value}"), 403
    request_id = uuid.uuid4().hex
    incident = {"incident_id": body.incident.id, "call_type": body.incident.call_type,
                "emergency_attestation": body.emergency_attestation}
    outcome = current.pool.run(lambda ticket: compose(current, principal, body.purpose, body.subject, incident, received,
                                                      now, ticket), current.budget_seconds)
    if outcome.done:
        resolution, items_out, withheld, audit_items = outcome.value
        answer = resolution.to_dict()
    else:
        # Never block dispatch: answer now; late work is cancelled and nothing of it is disclosed.
        answer, items_out, withheld = {"status": "unavailable", "candidates": []}, [], []
        audit_items = {"note": f"budget of {current.budget_seconds * 1000:.0f} ms exceeded" if outcome.status == "overdue"
                       else "every briefing thread is busy with overdue work; not started"}
    record_briefing(current.store, {
        **audit_fields(principal, "agency", "role"),
        "purpose": body.purpose.value, "incident_id": body.incident.id, "call_type": body.incident.call_type,
        "received_at": received.isoformat(), "judged_at": now.isoformat(),
        **({"emergency_attestation": body.emergency_attestation} if body.emergency_attestation else {}),
        "query_hash": query_hash(body.subject), "status": answer["status"],
        "candidates": audited_candidates(answer["candidates"]),
        "items_returned": [i["item_id"] for i in items_out], **audit_items, "versions": current.versions,
    }, principal.name, request_id, body.incident.id, [i["item_id"] for i in items_out], now,
        _briefed(principal, body.incident, answer, request_id, now), current.follow_ups)
    return jsonify({"incident_id": body.incident.id, "request_id": request_id,
                    "resolution": opaque(answer, current.reference_key), "items": items_out, "withheld": withheld,
                    "engagement": audit_items.get("engagement", []), "versions": current.versions})


def _briefed(principal, incident: Incident, answer: dict, request_id: str, now) -> BriefedPerson | None:
    """Whom the briefing resolved (the person a referral from this incident is about), or None."""
    if answer["status"] != "resolved" or not answer["candidates"]:
        return None
    best = answer["candidates"][0]
    return BriefedPerson(principal, incident.id, incident.call_type, incident.received_at, best["person_id"], best["grade"],
                         request_id, now)


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Subject
    purpose: Purpose


@blueprint.post("/v1/match")
@requires(*RESPONDERS, Role.steward)
def match(principal):
    """Resolution only (who is this?), no context items; for responders (opaque record references) and stewards."""
    body = validated(MatchRequest)
    current = service()
    if principal.role != Role.steward and body.purpose not in principal.purposes:
        return jsonify(error="forbidden", message=f"this key may not claim purpose {body.purpose.value}"), 403
    resolution = current.resolver.resolve(body.subject).to_dict()
    shown = resolution if principal.role == Role.steward else opaque(resolution, current.reference_key)
    request_id = uuid.uuid4().hex
    record_event(current.store, "match", {
        **audit_fields(principal, "agency", "role"),
        "purpose": body.purpose.value, "query_hash": query_hash(body.subject), "status": resolution["status"],
        "candidates": audited_candidates(resolution["candidates"]), "versions": current.versions,
    }, principal=principal.name, request_id=request_id)
    return jsonify({"request_id": request_id, "resolution": shown, "versions": current.versions})
