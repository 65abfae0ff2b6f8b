"""The steward review API (steward keys only; every successful call appends one audit event).

- `GET /v1/review/queue?reason=&agency=&min_probability=&max_probability=&status=&limit=&offset=`
  → `{"total", "pairs": [QueueEntry, ...]}`, in priority order (api.review.queue); `status` is
  `open` (default), `unsure`, `decided` or `all`; `limit` at most 200.
- `GET /v1/review/pairs/<pair_id>` → the pair's records side by side, the field-by-field
  explanation under the live matcher (the prior first; the weights sum to `match_weight`) and its
  decision history.
- `POST /v1/review/pairs/<pair_id>/decision` `{"decision": "match" | "not_a_match" | "unsure",
  "note"}` (a note is required for unsure) → 201 with what changed and the next open pair.
- `POST /v1/review/decisions/<decision_id>/undo` → the restored assignment; the pair is open again.
- `POST /v1/persons/<person_id>/split` `{"record_id", "note"}`, `POST /v1/persons/merge`
  `{"person_ids": [a, b], "note"}`, `POST /v1/persons/events/<event_id>/undo` (a split or merge
  made here).

404 for an unknown pair, decision, person, record or event (an integer id beyond `MAX_ID`, the
largest the store's Integer columns hold, is one: the routes do not match it, so it never reaches
PostgreSQL, whose INTEGER ends at 2**31 - 1, nor SQLite, whose ends at 2**63 - 1; either would fail); 409 for a refused action (already
decided, already undone, a later decision must be undone first, a contradiction with a live
decision), with the reason in `message`; 422 with field messages for a bad body or query.
Semantics: api.review.decisions.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from flask import Blueprint, abort, jsonify
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from api.review import decisions
from api.review import queue as review_queue
from api.service.stewardship import Reason
from api.service.store import MAX_ID
from api.web.auth import requires
from api.web.context import service
from api.web.errors import validated, validated_query
from scoring.item import Role

blueprint = Blueprint("review_api", __name__)
MAX_QUEUE = 200


class QueueQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason | None = None
    agency: str | None = Field(default=None, max_length=200)
    min_probability: float | None = Field(default=None, ge=0, le=1)
    max_probability: float | None = Field(default=None, ge=0, le=1)
    status: Literal["open", "unsure", "decided", "all"] = "open"
    limit: int = Field(default=50, ge=1, le=MAX_QUEUE)
    offset: int = Field(default=0, ge=0)


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    decision: Literal["match", "not_a_match", "unsure"]
    note: str | None = Field(default=None, max_length=2000, validate_default=True)

    @field_validator("note")
    @classmethod
    def _unsure_says_why(cls, value, info: ValidationInfo):
        if info.data.get("decision") == "unsure" and not value:
            raise ValueError("an unsure decision needs a note saying what is unclear")
        return value or None


class SplitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")              # ids are taken verbatim, as stored
    record_id: str = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    person_ids: list[str] = Field(min_length=2, max_length=2, description="the two persons to merge")
    note: str | None = Field(default=None, max_length=2000)


def _refused(exc: Exception):
    """KeyError → 404, ValueError → 409, with the reason."""
    message = exc.args[0] if exc.args else str(exc)
    abort(404 if isinstance(exc, KeyError) else 409, description=str(message))


@blueprint.get("/v1/review/queue")
@requires(Role.steward)
def get_queue(principal):
    query = validated_query(QueueQuery)
    current = service()
    filters = review_queue.QueueFilters(reason=query.reason, agency=query.agency, min_probability=query.min_probability,
                                        max_probability=query.max_probability, status=query.status)
    found, total = review_queue.queue(current.store, filters, query.limit, query.offset)
    decisions.audit_read(current.store, "review_queue_read", {
        "filters": query.model_dump(mode="json", exclude_none=True), "total": total,
        "pair_ids": [e.pair_id for e in found]}, principal.name)
    return jsonify(total=total, pairs=[asdict(e) for e in found])


@blueprint.get(f"/v1/review/pairs/<int(max={MAX_ID}):pair_id>")
@requires(Role.steward)
def get_pair(principal, pair_id: int):
    current = service()
    try:
        detail = decisions.pair_detail(current, pair_id)
    except KeyError as exc:
        _refused(exc)
    entry = detail.entry
    decisions.audit_read(current.store, "review_pair_read", {
        "pair_id": pair_id, "record_ids": [entry.record_id_l, entry.record_id_r],
        "candidates": [{"person_id": p, "record_id": r} for p, r in ((entry.person_id_l, entry.record_id_l),
                                                                     (entry.person_id_r, entry.record_id_r)) if p]},
        principal.name)
    return jsonify(asdict(detail))


@blueprint.post(f"/v1/review/pairs/<int(max={MAX_ID}):pair_id>/decision")
@requires(Role.steward)
def post_decision(principal, pair_id: int):
    body = validated(DecisionIn)
    try:
        result = decisions.decide(service(), pair_id, body.decision, principal.name, body.note)
    except (KeyError, ValueError) as exc:
        _refused(exc)
    return jsonify(asdict(result)), 201


@blueprint.post(f"/v1/review/decisions/<int(max={MAX_ID}):decision_id>/undo")
@requires(Role.steward)
def post_undo(principal, decision_id: int):
    try:
        result = decisions.undo(service(), decision_id, principal.name)
    except (KeyError, ValueError) as exc:
        _refused(exc)
    return jsonify(asdict(result))


@blueprint.post("/v1/persons/<person_id>/split")
@requires(Role.steward)
def post_split(principal, person_id: str):
    body = validated(SplitIn)
    try:
        return jsonify(decisions.split_record(service(), person_id, body.record_id, principal.name, body.note))
    except (KeyError, ValueError) as exc:
        _refused(exc)


@blueprint.post("/v1/persons/merge")
@requires(Role.steward)
def post_merge(principal):
    body = validated(MergeIn)
    a, b = body.person_ids
    try:
        return jsonify(decisions.merge_persons(service(), a, b, principal.name, body.note))
    except (KeyError, ValueError) as exc:
        _refused(exc)


@blueprint.post(f"/v1/persons/events/<int(max={MAX_ID}):event_id>/undo")
@requires(Role.steward)
def post_event_undo(principal, event_id: int):
    try:
        return jsonify(decisions.undo_person_event(service(), event_id, principal.name))
    except (KeyError, ValueError) as exc:
        _refused(exc)
