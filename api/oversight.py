"""Responder feedback in; audit events and persons' identity records out.

`POST /v1/feedback` (officer, co_responder, ems): whether an item helped at an incident, and the
outcome; it trains the next ranker. `GET /v1/audit/events` (auditor): the audit log, newest
first, filtered by person ("who saw this person's information, when, why"), principal, incident
and time. `GET /v1/persons/<id>` (steward): a person's records, identity fields only. Every call
is itself audited.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from flask import Blueprint, abort, current_app, jsonify, request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import insert, select

from api.audit import append
from api.store import audit_events, feedback
from scoring.item import RESPONDERS, Role

blueprint = Blueprint("oversight", __name__)
MAX_EVENTS = 1_000


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incident_id: str = Field(min_length=1, max_length=200)
    item_id: str = Field(min_length=1, max_length=200)
    helped: bool | None = None
    outcome: str | None = Field(default=None, max_length=2000)


class EventQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person_id: str | None = None
    principal: str | None = None
    incident_id: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = Field(default=100, ge=1, le=MAX_EVENTS)


@blueprint.post("/v1/feedback")
def post_feedback():
    from api.app import authorise, validated

    principal = authorise(RESPONDERS - {Role.dispatcher})
    body = validated(Feedback)
    store = current_app.extensions["briefing"].store
    with store.begin() as connection:
        row_id = connection.execute(insert(feedback).values(
            incident_id=body.incident_id, item_id=body.item_id, principal=principal.name,
            helped=None if body.helped is None else int(body.helped), outcome=body.outcome,
            created_at=datetime.now(timezone.utc).isoformat())).inserted_primary_key[0]
        append(connection, "feedback", {"principal": principal.name, "role": principal.role.value,
                                        "incident_id": body.incident_id, "item_id": body.item_id}, principal=principal.name)
    return jsonify(id=row_id), 201


@blueprint.get("/v1/audit/events")
def get_audit_events():
    from api.app import authorise, invalid

    principal = authorise({Role.auditor})
    try:
        query = EventQuery.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise invalid(exc) from None
    store = current_app.extensions["briefing"].store
    statement = select(audit_events).order_by(audit_events.c.seq.desc())
    if query.principal:
        statement = statement.where(audit_events.c.principal == query.principal)
    if query.since:
        statement = statement.where(audit_events.c.at >= query.since.astimezone(timezone.utc).isoformat())
    if query.until:
        statement = statement.where(audit_events.c.at < query.until.astimezone(timezone.utc).isoformat())
    found = []
    with store.begin() as connection:
        for row in connection.execute(statement).mappings():
            payload = json.loads(row["payload"])
            if query.incident_id and payload.get("incident_id") != query.incident_id:
                continue
            if query.person_id and query.person_id not in {c.get("person_id") for c in payload.get("candidates", [])}:
                continue
            found.append({"seq": row["seq"], "at": row["at"], "request_id": row["request_id"], "principal": row["principal"],
                          "action": row["action"], **payload})
            if len(found) == query.limit:
                break
        append(connection, "audit_read", {"principal": principal.name, "filters": query.model_dump(mode="json", exclude_none=True),
                                          "events_returned": len(found)}, principal=principal.name)
    return jsonify(events=found)


@blueprint.get("/v1/persons/<person_id>")
def get_person(person_id: str):
    """A person's records, identity fields only (no context items): for stewards reviewing matches."""
    from api.app import authorise
    from api.store import RECORD_FIELDS, clusters, records

    principal = authorise({Role.steward})
    store = current_app.extensions["briefing"].store
    with store.begin() as connection:
        rows = connection.execute(select(records).join(clusters, clusters.c.record_id == records.c.record_id)
                                  .where(clusters.c.person_id == person_id).order_by(records.c.record_id)).mappings().all()
        if not rows:
            abort(404, description=f"no person {person_id!r}")
        append(connection, "person_read", {"principal": principal.name, "role": principal.role.value,
                                           "person_id": person_id, "records": [r["record_id"] for r in rows]},
               principal=principal.name)
    return jsonify(person_id=person_id, records=[{"record_id": r["record_id"], **{f: r[f] for f in RECORD_FIELDS}}
                                                 for r in rows])
