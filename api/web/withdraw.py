"""Correcting and withdrawing data: retract an item, revoke a consent, erase a person's registry data.

Every call is one transaction with its audit event (api/service/withdrawals.py does the work); nothing
is cached, so each change holds from the very next request on every worker (items and consents are read
per request, and the records an erasure removes go through the change feed, `api.service.changes`).

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
answered, as UTC (api.service.times.utc_text). A revocation only ever
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

from datetime import timezone
from typing import Literal

from flask import Blueprint, jsonify, request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from api.service import withdrawals
from api.service.ownership import WRITERS
from api.service.times import in_utc_range
from api.web.auth import requires
from api.web.context import service
from api.web.errors import unprocessable, validated
from scoring.item import Role

blueprint = Blueprint("withdraw", __name__)


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


def _optional_body(model):
    """The JSON body as `model`; an empty body is the model's defaults."""
    if not request.get_data(cache=True).strip():
        return model()
    return validated(model)


@blueprint.post("/v1/context-items/<item_id>/retract")
@requires(*WRITERS)
def retract_item(principal, item_id: str):
    body = _optional_body(RetractIn)
    return jsonify(withdrawals.retract_item(service(), principal, item_id, body.status, body.reason))


@blueprint.post("/v1/consents/<consent_id>/revoke")
@requires(*WRITERS)
def revoke_consent(principal, consent_id: str):
    body = _optional_body(RevokeIn)
    now = service().clock()        # the policy's clock: a revocation binds from then on
    if body.revoked_at is not None and body.revoked_at > now:
        raise unprocessable({"revoked_at": "a revocation cannot take effect in the future"})
    when = (body.revoked_at or now).astimezone(timezone.utc)
    return jsonify(withdrawals.revoke_consent(service(), principal, consent_id, when, body.reason))


@blueprint.post("/v1/persons/<person_id>/erase-registry")
@requires(Role.admin)
def erase_registry(principal, person_id: str):
    body = validated(ErasureIn)
    return jsonify(withdrawals.erase_registry(service(), principal, person_id, body.requested_by, body.reference))
