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
person's records, identity fields only. Every call is itself audited. The work is the service's:
api/service/feedback.py, api/service/audit_search.py and api/service/person_data.py.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from api.service.audit_search import EventQuery, search_events
from api.service.feedback import give_feedback
from api.service.person_data import person_identity
from api.web.auth import requires
from api.web.context import service
from api.web.errors import validated, validated_query
from scoring.item import RESPONDERS, Role

blueprint = Blueprint("oversight", __name__)


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incident_id: str = Field(min_length=1, max_length=200)
    item_id: str = Field(min_length=1, max_length=200)
    helped: bool | None = None
    outcome: str | None = Field(default=None, max_length=2000)


@blueprint.post("/v1/feedback")
@requires(*(RESPONDERS - {Role.dispatcher}))
def post_feedback(principal):
    body = validated(Feedback)
    row_id = give_feedback(service().store, principal, body.incident_id, body.item_id, body.helped, body.outcome)
    return jsonify(id=row_id), 201


@blueprint.get("/v1/audit/events")
@requires(Role.auditor)
def get_audit_events(principal):
    query = validated_query(EventQuery)
    return jsonify(events=search_events(service().store, principal, query))


@blueprint.get("/v1/persons/<person_id>")
@requires(Role.steward)
def get_person(principal, person_id: str):
    """A person's records, identity fields only (no context items): for stewards reviewing matches."""
    return jsonify(person_id=person_id, records=person_identity(service().store, principal, person_id))
