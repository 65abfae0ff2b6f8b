"""Searching the audit log: who saw this person's information, when, and why (`GET /v1/audit/events`).

Events come newest first, filtered by person, principal, incident, request (`request_id`: what a CAD
answer carries, so a briefing a responder saw, with its `psn-` / `ref-` references, leads to its event and
the real ids) and time (`since` / `until`: times that exist in UTC). The person filter finds every event
whose payload names the person under a `person_id` or `…_person_id` field at any depth (`names_person`):
briefing / match / FHIR match candidates, steward reads, merges, splits and undos, record writes and
registry erasures. Every search is itself audited (`audit_read`), in the transaction that reads.
"""

from __future__ import annotations

import json
from datetime import timezone

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from api.service.audit import append, audit_fields, canonical
from api.service.store import Store, audit_events
from api.service.times import in_utc_range
from scoring.item import Principal

MAX_EVENTS = 1_000


class EventQuery(BaseModel):
    """The filters of a search (the query parameters of `GET /v1/audit/events`)."""

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


def names_person(value, person_id: str) -> bool:
    """Whether `value` (an audit payload) names `person_id` in a `person_id` or `…_person_id` field, at any depth."""
    if isinstance(value, dict):
        return any(((key == "person_id" or key.endswith("_person_id"))
                    and (item == person_id or (isinstance(item, list) and person_id in item)))
                   or names_person(item, person_id) for key, item in value.items())
    if isinstance(value, list):
        return any(names_person(item, person_id) for item in value)
    return False


def search_events(store: Store, principal: Principal, query: EventQuery) -> list[dict]:
    """The events matching `query`, newest first, at most `query.limit`; the search audited as `principal`'s."""
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
        append(connection, "audit_read", {**audit_fields(principal), "filters": query.model_dump(mode="json", exclude_none=True),
                                          "events_returned": len(found)}, principal=principal.name)
    return found
