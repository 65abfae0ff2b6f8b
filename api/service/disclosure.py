"""What a briefing, a match or a FHIR $match discloses, and the record kept of it.

`compose` resolves a subject and, for a resolved person, ranks the items the access policy permits
(scoring.briefing) at the server's `now` (the incident's time only narrows), under a time budget whose
`Ticket` ends the work between its steps (api.service.budget). Responders are never told a record's or a
person's id: `opaque` turns a resolution's ids into references (api.service.reference); stewards see the ids,
and the audit log keeps them (`audited_candidates`). `query_hash` proves what was asked without storing it.

`record_briefing` writes a briefing's audit event and, in the same transaction, one `shown_items` row per
returned item (principal, incident, item: the proof feedback asks for, api.service.feedback; a resent incident
keeps the first row) and, for a resolved subject, whom it resolved (the person a referral from that incident
is about, api.service.referrals). `records_for_answer` reads the records an answer shows in the transaction that audits it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select

from api.service.audit import append, canonical
from api.service.budget import Ticket
from api.service.person_data import person_consents, person_items
from api.service.reference import person_reference, record_reference
from api.service.followups import open_follow_ups
from api.service.referrals import BriefedPerson, engaged_programs, record_briefed_person
from api.service.store import Store, records, shown_items, upsert
from matching.query import Subject
from scoring.briefing import brief
from scoring.followup import FollowUpRules
from scoring.referral_policy import engagement_notice
from scoring.item import Principal, Purpose

MAX_ITEMS = 20


def query_hash(subject: Subject) -> str:
    """A hash of the query's identifiers: the audit log proves what was asked without storing it."""
    return hashlib.sha256(canonical(subject.model_dump(mode="json", exclude_none=True)).encode()).hexdigest()


def opaque(resolution: dict, secret: bytes) -> dict:
    """`resolution` as a responder may see it: every candidate's `person_id` and `record_id` an opaque reference."""
    return {**resolution, "candidates": [{**c, "person_id": person_reference(c["person_id"], secret),
                                          "record_id": record_reference(c["record_id"], secret)}
                                         for c in resolution["candidates"]]}


def audited_candidates(candidates: list[dict]) -> list[dict]:
    """Candidates as the audit log keeps them: the real person and record ids, and the grade."""
    return [{"person_id": c["person_id"], "record_id": c["record_id"], "grade": c["grade"]} for c in candidates]


def compose(service, principal: Principal, purpose: Purpose, subject: Subject, incident: dict, incident_at: datetime,
            now: datetime, ticket: Ticket):
    """Resolve, then (for a resolved person) the permitted items ranked: (resolution, items shown, withheld, the
    audit event's disclosure fields, with `engagement`: the notices of programs working with the person,
    scoring.referral_policy.engagement_notice).

    `incident` holds `incident_id`, `call_type` and `emergency_attestation`; `incident_at` is its time, which
    fills the subject's when it has none. The policy runs at the server's `now`; the incident's time only
    narrows. `ticket.check()` between the steps ends the work once its budget has run out (api.service.budget).
    """
    subject = subject.model_copy(update={"received_at": subject.received_at or incident_at})
    resolution = service.resolver.resolve(subject)
    ticket.check()
    best = resolution.candidates[0] if resolution.candidates and resolution.status == "resolved" else None
    if best is None:
        return resolution, [], [], {}
    with service.store.engine.connect() as connection:
        items, consents = person_items(connection, best.person_id), person_consents(connection, best.person_id)
        engaged = engaged_programs(connection, best.person_id)
    ticket.check()
    # A revocation binds every disclosure from `revoked_at` on: `now` is the server's clock, so one
    # already recorded is in force here whatever time the incident claims.
    result = brief(principal, purpose, incident, best.grade, items, consents, now, service.rules, service.ranker,
                   incident_at=incident_at)
    shown_person = person_reference(best.person_id, service.reference_key)
    items_out = [_item_json(line, shown_person, k + 1) for k, line in enumerate(result.items[:MAX_ITEMS])]
    returned = {s["item_id"] for i in items_out for s in i["sources"]}     # every copy shown, merged ones too
    notices = engagement_notice(engaged, principal, consents, now)
    return resolution, items_out, result.withheld, {
        "disclosures": [d for d in result.disclosures if d["item_id"] in returned], "denied": result.denied,
        "engagement": notices}


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


def record_briefing(store: Store, payload: dict, principal: str, request_id: str, incident_id: str,
                    item_ids: list[str], shown_at: datetime, briefed: BriefedPerson | None = None,
                    follow_ups: FollowUpRules | None = None) -> None:
    """The briefing's audit event, its `shown_items` rows, whom it resolved (`briefed`, what a referral from
    the incident is about, api.service.referrals) and the follow-up tasks it opens (api.service.followups), in
    one transaction (before the answer is sent)."""
    with store.begin() as connection:
        append(connection, "briefing", payload, principal=principal, request_id=request_id)
        _record_shown(connection, principal, incident_id, item_ids, request_id, shown_at)
        if briefed is not None:
            record_briefed_person(connection, briefed)
            if follow_ups is not None:
                open_follow_ups(connection, follow_ups, briefed, shown_at)


_SHOWN = upsert(shown_items, ("principal", "incident_id", "item_id"),
                ("principal", "incident_id", "item_id", "request_id", "shown_at"), update=False)


def _record_shown(connection, principal: str, incident_id: str, item_ids: list[str], request_id: str,
                  shown_at: datetime) -> None:
    """One `shown_items` row per returned item; a row already there (a resent incident) is kept as it is."""
    rows = [{"principal": principal, "incident_id": incident_id, "item_id": item_id, "request_id": request_id,
             "shown_at": shown_at.isoformat()} for item_id in dict.fromkeys(item_ids)]
    if not rows:
        return
    connection.execute(_SHOWN, rows)


def records_for_answer(store: Store, record_ids: list[str], action: str, payload: dict, principal: str,
                       request_id: str) -> list:
    """The stored records an answer shows (mappings), read in the transaction that appends its audit event."""
    with store.begin() as connection:
        rows = connection.execute(select(records).where(records.c.record_id.in_(record_ids))).mappings().all()
        append(connection, action, payload, principal=principal, request_id=request_id)
    return rows
