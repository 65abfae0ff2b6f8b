"""Referrals and warm hand-offs over HTTP: `/v1/referrals` (api/service/referrals.py does the work).

- `POST /v1/referrals` (a responder): refer the person your agency's briefing resolved at an incident to a
  receiving program; 201 with the referral as you may see it and its `Location`.
- `GET /v1/referrals?status=&since=&limit=` (a program's provider, or a referring agency's responder): the
  referrals your side may see, for programs that poll.
- `GET /v1/referrals/<id>`: one referral, as your side may see it (404 when it is not yours to see).
- `POST /v1/referrals/<id>/events` (`{"event", "outcome", "note"}`): one lifecycle step by the side that owns
  it (scoring/referral.py); 409 when the lifecycle does not allow it.

Every read and write is audited; the server's clock (`service.clock()`) judges consents and item expiries.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, url_for
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.service.referral_reads import MAX_LIST, referral_for, referrals_for
from api.service.referrals import NOT_YOURS, NewReferral, Step, create_referral, take_step
from api.web.auth import requires
from api.web.context import service
from api.web.errors import validated, validated_query
from api.web.ids import id_number
from scoring.item import RESPONDERS, Role
from scoring.referral import TaskStatus

blueprint = Blueprint("referrals", __name__)
READERS = (*RESPONDERS, Role.provider)
STATUSES = tuple(s.value for s in TaskStatus) + ("closed",)


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str | None = Field(default=None, pattern="^(" + "|".join(STATUSES) + ")$",
                               description="the status as your side sees it (law-enforcement roles: requested, "
                                           "accepted or closed)")
    since: AwareDatetime | None = None
    limit: int = Field(default=MAX_LIST, ge=1, le=MAX_LIST)


def _one(principal, referral_id: int) -> dict:
    current = service()
    return referral_for(current.store, principal, referral_id, current.reference_key, current.clock())


@blueprint.post("/v1/referrals")
@requires(*RESPONDERS)
def create(principal):
    body = validated(NewReferral)
    current = service()
    referral_id = create_referral(current.store, principal, body, current.clock())
    response = jsonify(referral=_one(principal, referral_id))
    response.status_code = 201
    response.headers["Location"] = url_for("referrals.read", referral_id=referral_id)
    return response


@blueprint.get("/v1/referrals")
@requires(*READERS)
def list_referrals(principal):
    query = validated_query(ListQuery)
    current = service()
    found = referrals_for(current.store, principal, current.reference_key, current.clock(), query.status, query.since,
                          query.limit)
    return jsonify(referrals=found, count=len(found))


@blueprint.get("/v1/referrals/<referral_id>")
@requires(*READERS)
def read(principal, referral_id: str):
    number = id_number(referral_id)
    if number is None:
        return _no_such_referral()
    return jsonify(referral=_one(principal, number))


@blueprint.post("/v1/referrals/<referral_id>/events")
@requires(*READERS)
def step(principal, referral_id: str):
    body = validated(Step)
    number = id_number(referral_id)
    if number is None:
        return _no_such_referral()
    current = service()
    take_step(current.store, principal, number, body, current.clock())
    return jsonify(referral=_one(principal, number))


def _no_such_referral():
    """An id that names no referral, answered as one that is not the caller's (api.web.errors: NotFound)."""
    return jsonify(error="not_found", message=NOT_YOURS), 404
