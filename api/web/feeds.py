"""Agency feeds: `POST /v1/records`, `DELETE /v1/records/<id>`, `POST /v1/context-items`, `POST /v1/consents`.

A `feed` key writes only its own agency's data (403 otherwise); an `admin` key writes any. A feed writing
another agency's record, item or consent gets 403 and the attempt is audited (`write_refused`); moving an
item or a consent onto a record of another agency, or changing the agency of a record that items or consents
hang on, is 409 for everyone; 409 too for an item or a consent on a record not in the store. No refusal names
another agency. `POST /v1/records` answers 201 when the record is new, 200 when it replaced one: a feed is
told `{"record_id", "created"}`, an admin `person_id`, `joined` and `review_pair` too. The writes, their
ownership rules, linking and auditing: api/service/feed_writes.py.
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, jsonify
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.service import feed_writes
from api.service.ingest import ConsentIn, ItemIn
from api.service.ownership import WRITERS
from api.web.auth import requires
from api.web.context import service
from api.web.errors import validated

blueprint = Blueprint("feeds", __name__)
FIELD_LENGTH = 200               # a name, a street, a city
ALIASES_LENGTH = 2_000           # every alias of a record together


class RecordIn(BaseModel):
    """One source record (canonical fields; empty means unknown)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    record_id: str = Field(min_length=1, max_length=200)
    agency: str | None = Field(default=None, max_length=200)          # an id, like record_id
    source_system: str | None = Field(default=None, max_length=200)
    # Bounded like a person's details are: an identity field of megabytes is an attack on the resolver and the
    # steward pages, not a record (tests/adversarial/test_complexity.py).
    given_name: str | None = Field(default=None, max_length=FIELD_LENGTH)
    middle_name: str | None = Field(default=None, max_length=FIELD_LENGTH)
    family_name: str | None = Field(default=None, max_length=FIELD_LENGTH)
    name_suffix: str | None = Field(default=None, max_length=20)
    aliases: str | None = Field(default=None, max_length=ALIASES_LENGTH, description="'|'-separated names")
    dob: date | None = None
    birth_year: int | None = Field(default=None, ge=1850, le=2100)
    sex: str | None = Field(default=None, pattern="^[MFXU]$")
    phone: str | None = Field(default=None, max_length=50)
    email: str | None = Field(default=None, max_length=320)
    street: str | None = Field(default=None, max_length=FIELD_LENGTH)
    city: str | None = Field(default=None, max_length=FIELD_LENGTH)
    state: str | None = Field(default=None, max_length=FIELD_LENGTH)
    postcode: str | None = Field(default=None, max_length=20)
    ssn_last4: str | None = Field(default=None, pattern="^[0-9]{4}$")
    recorded_at: AwareDatetime | None = None


@blueprint.post("/v1/records")
@requires(*WRITERS)
def upsert_record(principal):
    body = validated(RecordIn)
    answer, created = feed_writes.write_record(service(), principal, body.model_dump(exclude_none=True, mode="json"))
    return jsonify(answer), 201 if created else 200


@blueprint.delete("/v1/records/<record_id>")
@requires(*WRITERS)
def delete_record(principal, record_id: str):
    feed_writes.delete_record(service(), principal, record_id)
    return "", 204


@blueprint.post("/v1/context-items")
@requires(*WRITERS)
def upsert_item(principal):
    return jsonify(feed_writes.write_attached(service(), principal, validated(ItemIn), feed_writes.ITEMS)), 200


@blueprint.post("/v1/consents")
@requires(*WRITERS)
def upsert_consent(principal):
    return jsonify(feed_writes.write_attached(service(), principal, validated(ConsentIn), feed_writes.CONSENTS)), 200
