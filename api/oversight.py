"""Responder feedback in; audit events and persons' identity records out.

`POST /v1/feedback` (officer, co_responder, ems): whether an item helped at an incident, and the
outcome; it trains the next ranker, so it is accepted only from a principal a briefing showed that
item to at that incident (a `shown_items` row, written by `POST /v1/briefings`), and only once:
otherwise 403 "no briefing showed this item to you at this incident" (the same answer whether the
item exists or not), and 409 for a second feedback. The feedback row, the `shown_items` row's
`feedback_id` and the audit event are written in one transaction; `UPDATE … WHERE feedback_id IS
NULL` decides between concurrent posts (on any worker), so exactly one is accepted.

`GET /v1/audit/events` (auditor): the audit log, newest first, filtered by person ("who saw this
person's information, when, why"), principal, incident, request (`request_id`: what a CAD answer
carries, so a briefing a responder saw, with its `psn-` / `ref-` references, leads to its event and
the real ids) and time (`since` / `until`: times that exist
in UTC, else 422). The person filter finds every event whose payload names the person under a
`person_id` or `…_person_id` field at any depth:
briefing / match / FHIR match candidates, steward reads (`person_read`, the review pages' reads),
merges, splits and undos, record writes and registry erasures. `GET /v1/persons/<id>` (steward): a
person's records, identity fields only. Every call is itself audited.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from flask import Blueprint, abort, current_app, jsonify, request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import and_, insert, select, update

from api.audit import append, canonical
from api.ingest import in_utc_range
from api.store import audit_events, feedback, shown_items
from scoring.item import RESPONDERS, Role

blueprint = Blueprint("oversight", __name__)
MAX_EVENTS = 1_000
NOT_SHOWN = "no briefing showed this item to you at this incident"
ALREADY_GIVEN = "feedback on this item at this incident was already given"


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incident_id: str = Field(min_length=1, max_length=200)
    item_id: str = Field(min_length=1, max_length=200)
    helped: bool | None = None
    outcome: str | None = Field(default=None, max_length=2000)


class EventQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person_id: str | None = Field(default=None, max_length=200)
    principal: str | None = Field(default=None, max_length=200)
    incident_id: str | None = Field(default=None, max_length=200)
    request_id: str | None = Field(default=None, max_length=64)     # the `request_id` every answer carries
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = Field(default=100, ge=1, le=MAX_EVENTS)

    # `0001-01-01T00:00:00+23:59` is a valid time with no UTC equivalent: 422 naming it, not an OverflowError
    _utc_range = field_validator("since", "until", mode="after")(in_utc_range)


@blueprint.post("/v1/feedback")
def post_feedback():
    from api.app import authorise, validated

    principal = authorise(RESPONDERS - {Role.dispatcher})
    body = validated(Feedback)
    store = current_app.extensions["briefing"].store
    shown = and_(shown_items.c.principal == principal.name, shown_items.c.incident_id == body.incident_id,
                 shown_items.c.item_id == body.item_id)
    with store.engine.connect() as connection:   # refusals cost one read, never a write
        _refuse_unless_open(connection.execute(select(shown_items.c.feedback_id).where(shown)).first())
    with store.begin() as connection:            # an abort below rolls the feedback row back
        row_id = connection.execute(insert(feedback).values(
            incident_id=body.incident_id, item_id=body.item_id, principal=principal.name,
            helped=None if body.helped is None else int(body.helped), outcome=body.outcome,
            created_at=datetime.now(timezone.utc).isoformat())).inserted_primary_key[0]
        claimed = connection.execute(update(shown_items).where(shown, shown_items.c.feedback_id.is_(None))
                                     .values(feedback_id=row_id)).rowcount
        if claimed != 1:                         # another request took it since the read above
            _refuse_unless_open(connection.execute(select(shown_items.c.feedback_id).where(shown)).first())
        briefing = connection.execute(select(shown_items.c.request_id).where(shown)).scalar()
        append(connection, "feedback", {"principal": principal.name, "role": principal.role.value,
                                        "incident_id": body.incident_id, "item_id": body.item_id,
                                        "feedback_id": row_id, "briefing_request_id": briefing},
               principal=principal.name)
    return jsonify(id=row_id), 201


def _refuse_unless_open(shown) -> None:
    """403 when no briefing showed the item to the caller at the incident, 409 when its feedback was given."""
    if shown is None:
        abort(403, description=NOT_SHOWN)
    if shown.feedback_id is not None:
        abort(409, description=ALREADY_GIVEN)


def names_person(value, person_id: str) -> bool:
    """Whether `value` (an audit payload) names `person_id` in a `person_id` or `…_person_id` field, at any depth."""
    if isinstance(value, dict):
        return any(((key == "person_id" or key.endswith("_person_id"))
                    and (item == person_id or (isinstance(item, list) and person_id in item)))
                   or names_person(item, person_id) for key, item in value.items())
    if isinstance(value, list):
        return any(names_person(item, person_id) for item in value)
    return False


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
    if query.request_id:
        statement = statement.where(audit_events.c.request_id == query.request_id)
    if query.since:
        statement = statement.where(audit_events.c.at >= query.since.astimezone(timezone.utc).isoformat())
    if query.until:
        statement = statement.where(audit_events.c.at < query.until.astimezone(timezone.utc).isoformat())
    for wanted in (query.person_id, query.incident_id):
        if wanted:                            # the payload is canonical JSON: the id appears as this JSON string
            statement = statement.where(audit_events.c.payload.contains(canonical(wanted), autoescape=True))
    found = []
    with store.begin() as connection:
        for row in connection.execute(statement).mappings():
            payload = json.loads(row["payload"])
            if query.incident_id and payload.get("incident_id") != query.incident_id:
                continue
            if query.person_id and not names_person(payload, query.person_id):
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
