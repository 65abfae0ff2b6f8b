"""`POST /v1/briefings`: resolve the incident's subject, then the permitted items, ranked and explained.

The request and response shapes are issue 5's. Only responder roles may call it, for a purpose
their key grants. Every call appends one audit event (who, why, which incident, a hash of the
query identifiers, candidates and grades, items returned, items withheld with reasons, the
disclosure basis, and the model and policy versions), written before the answer is sent. The work
runs under a time budget (default 250 ms): past it the answer is 200 with resolution status
`unavailable` and no person data, so a slow store never holds up dispatch.
"""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import Literal

from flask import Blueprint, current_app, jsonify
from pydantic import AwareDatetime, BaseModel, ConfigDict

from api.audit import append, canonical
from api.person_data import person_consents, person_items
from matching.query import Subject
from scoring.briefing import brief
from scoring.item import RESPONDERS, Purpose, Role

CALL_TYPES = Literal["disturbance", "welfare_check", "overdose", "suicidal_person", "mental_health_crisis", "trespass",
                     "domestic", "medical", "missing_person", "other"]
MAX_ITEMS = 20
# Threads start on first use, so a gunicorn worker forked from a preloaded master gets its own.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="briefing")

blueprint = Blueprint("briefings", __name__)


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")
    street: str | None = None
    city: str | None = None
    postcode: str | None = None


class Incident(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    call_type: CALL_TYPES
    received_at: AwareDatetime
    location: Location | None = None
    callback_phone: str | None = None


class BriefingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incident: Incident
    subject: Subject
    purpose: Purpose


@blueprint.post("/v1/briefings")
def create_briefing():
    from api.app import authorise, validated

    principal = authorise(RESPONDERS)
    body = validated(BriefingRequest)
    service = current_app.extensions["briefing"]
    if body.purpose not in principal.purposes:
        return jsonify(error="forbidden", message=f"this key may not claim purpose {body.purpose.value}"), 403
    request_id = uuid.uuid4().hex
    future = _POOL.submit(_compose, service, principal, body)
    try:
        resolution, items_out, withheld, audit_items = future.result(timeout=service.budget_seconds)
        answer = resolution.to_dict()
    except FutureTimeout:
        # Never block dispatch: answer now; the late result is dropped and nothing of it is disclosed.
        answer, items_out, withheld = {"status": "unavailable", "candidates": []}, [], []
        audit_items = {"note": f"budget of {service.budget_seconds * 1000:.0f} ms exceeded"}
    with service.store.begin() as connection:
        append(connection, "briefing", {
            "principal": principal.name, "agency": principal.agency, "role": principal.role.value,
            "purpose": body.purpose.value, "incident_id": body.incident.id, "call_type": body.incident.call_type,
            "query_hash": _query_hash(body.subject), "status": answer["status"],
            "candidates": [{"person_id": c["person_id"], "record_id": c["record_id"], "grade": c["grade"]}
                           for c in answer["candidates"]],
            "items_returned": [i["item_id"] for i in items_out], **audit_items, "versions": service.versions,
        }, principal=principal.name, request_id=request_id)
    return jsonify({"incident_id": body.incident.id, "request_id": request_id, "resolution": answer,
                    "items": items_out, "withheld": withheld, "versions": service.versions})


def _compose(service, principal, body: BriefingRequest):
    """Resolve, then (for a resolved person) the permitted items ranked: what the answer and its audit event need."""
    subject = body.subject.model_copy(update={"received_at": body.subject.received_at or body.incident.received_at})
    resolution = service.resolver.resolve(subject)
    incident = {"incident_id": body.incident.id, "call_type": body.incident.call_type}
    best = resolution.candidates[0] if resolution.candidates and resolution.status == "resolved" else None
    if best is None:
        return resolution, [], [], {}
    with service.store.engine.connect() as connection:
        items, consents = person_items(connection, best.person_id), person_consents(connection, best.person_id)
    # Consents are judged at the incident's time, but a revocation already recorded binds every
    # later disclosure, even for an incident received before it (a revocation takes effect at once).
    asked_at = datetime.now(timezone.utc)
    consents = [c for c in consents if c.revoked_at is None or c.revoked_at > asked_at]
    result = brief(principal, body.purpose, incident, best.grade, items, consents, body.incident.received_at,
                   service.rules, service.ranker)
    items_out = [_item_json(line, best.person_id, k + 1) for k, line in enumerate(result.items[:MAX_ITEMS])]
    returned = {i["item_id"] for i in items_out}
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


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Subject
    purpose: Purpose


@blueprint.post("/v1/match")
def match():
    """Resolution only (who is this?), no context items; for responders and stewards."""
    from api.app import authorise, validated

    principal = authorise(RESPONDERS | {Role.steward})
    body = validated(MatchRequest)
    service = current_app.extensions["briefing"]
    if principal.role != Role.steward and body.purpose not in principal.purposes:
        return jsonify(error="forbidden", message=f"this key may not claim purpose {body.purpose.value}"), 403
    resolution = service.resolver.resolve(body.subject).to_dict()
    request_id = uuid.uuid4().hex
    with service.store.begin() as connection:
        append(connection, "match", {
            "principal": principal.name, "agency": principal.agency, "role": principal.role.value,
            "purpose": body.purpose.value, "query_hash": _query_hash(body.subject), "status": resolution["status"],
            "candidates": [{"person_id": c["person_id"], "record_id": c["record_id"], "grade": c["grade"]}
                           for c in resolution["candidates"]], "versions": service.versions,
        }, principal=principal.name, request_id=request_id)
    return jsonify({"request_id": request_id, "resolution": resolution, "versions": service.versions})


def _query_hash(subject: Subject) -> str:
    """A hash of the query's identifiers: the audit log proves what was asked without storing it."""
    return hashlib.sha256(canonical(subject.model_dump(mode="json", exclude_none=True)).encode()).hexdigest()
