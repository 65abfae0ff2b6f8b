"""Reading referrals: one referral or a list, as the caller's side may see it, each read audited.

The receiving program's providers see the whole referral: the person's opaque reference and the grade it
was matched at, the contact the referrer gave, the lifecycle with every note, and the items that travel
with it, re-judged at the read (`travels`, scoring/referral_policy.py: a retracted item or a revoked consent
stops an item travelling from then on). The referring agency's responders see `referrer_view`. Anyone else
gets 404, the answer for a referral that does not exist (audited `referral_refused`).

Lists (`referrals_for`, `GET /v1/referrals?status=&since=`, how programs that do not take webhooks poll):
a program's are those sent to it, changed since `since`; a referring agency's are those it sent, created
since `since` (its view must not show when the program acted on a referral, which an `updated_at` filter
would), and `status` filters on the status the caller sees.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select

from api.service.audit import append, audit_fields, record_event
from api.service.person_data import person_consents, person_items
from api.service.reference import person_reference
from api.service.referrals import NOT_YOURS, load_program, side_of
from api.service.refusals import NotFound
from api.service.store import Store, referral_events, referral_items, referrals
from api.service.times import utc_text
from scoring.item import LegalCategory, Principal, Role
from scoring.referral import CLOSED, WORKING, Basis, Side, TaskStatus
from scoring.referral_policy import referrer_view, travels

MAX_LIST = 200
REDISCLOSURE = "42 CFR 2.32: further disclosure of this information is prohibited without the patient's written consent"


def _whole(row, reference_key: bytes) -> dict:
    """The referral as its program sees it, without items and events (the dict `referrer_view` filters)."""
    return {"id": row.id, "status": row.status, "business_status": row.business_status, "outcome": row.outcome,
            "reason": row.reason, "urgency": row.urgency, "due_by": row.due_by, "basis": row.basis,
            "consent_id": row.consent_id, "agreement_note": row.agreement_note, "created_at": row.created_at,
            "updated_at": row.updated_at, "referrer_agency": row.referrer_agency, "referrer": row.referrer,
            "referrer_role": row.referrer_role,
            "incident_id": row.incident_id, "call_type": row.call_type, "opened_by": row.opened_by,
            "person": person_reference(row.person_id, reference_key), "grade": row.grade,
            "identity_review": bool(row.identity_review),
            "contact": json.loads(row.contact) if row.contact else None, "note": row.note, "program": row.program}


def _program_view(connection, row, whole: dict, program, now: datetime) -> dict:
    """The whole referral, with its lifecycle and the items that still travel."""
    items, consents = person_items(connection, row.person_id), person_consents(connection, row.person_id)
    chosen = set(connection.execute(select(referral_items.c.item_id).where(referral_items.c.referral_id == row.id))
                 .scalars())
    travelling = [i for i in items if i.item_id in chosen and travels(i, program, Basis(row.basis), consents, now)]
    events = connection.execute(select(referral_events).where(referral_events.c.referral_id == row.id)
                                .order_by(referral_events.c.id)).mappings().all()
    return {**whole, "program": {"name": program.name, "kind": program.kind.value, "public_line": program.public_line},
            "items": [_item(i) for i in sorted(travelling, key=lambda i: i.item_id)],
            "events": [{k: e[k] for k in ("event", "side", "principal", "status", "business_status", "outcome", "note",
                                          "at")} for e in events]}


def _item(item) -> dict:
    shown = {"category": item.category.value, "code": item.code, "text": item.text,
             "legal_category": item.legal_category.value, "agency": item.record_agency,
             "observed_at": utc_text(item.observed_at), "last_verified_at": utc_text(item.last_verified_at)}
    if item.legal_category == LegalCategory.PART2:
        shown["notice"] = REDISCLOSURE
    return shown


def _view(connection, principal: Principal, row, side: Side, reference_key: bytes, now: datetime) -> dict:
    whole, program = _whole(row, reference_key), load_program(connection, row.program)
    if side == Side.program:
        return _program_view(connection, row, whole, program, now)
    return referrer_view(whole, principal, program, person_consents(connection, row.person_id), now)


def referral_for(store: Store, principal: Principal, referral_id: int, reference_key: bytes, now: datetime) -> dict:
    """One referral as `principal`'s side may see it; audited `referral_read` (what was shown), or NotFound."""
    with store.begin() as connection:
        row = connection.execute(select(referrals).where(referrals.c.id == referral_id)).first()
        side = side_of(principal, row) if row is not None else None
        if side is not None:
            view = _view(connection, principal, row, side, reference_key, now)
            append(connection, "referral_read", {**audit_fields(principal, "agency", "role"), "referral_id": referral_id,
                                                 "side": side.value, "fields": sorted(view),
                                                 "items": len(view.get("items", ()))}, principal=principal.name)
            return view
    record_event(store, "referral_refused", {**audit_fields(principal, "agency", "role"), "referral_id": referral_id},
                 principal=principal.name)
    raise NotFound(NOT_YOURS)


#: The true statuses a view can show as another (`coarse_status`: law enforcement sees in-progress as accepted,
#: and every closed status as `closed`).
_SHOWN_AS = {TaskStatus.accepted.value: tuple(s.value for s in WORKING), "closed": tuple(s.value for s in CLOSED)}


def referrals_for(store: Store, principal: Principal, reference_key: bytes, now: datetime, status: str | None = None,
                  since: datetime | None = None, limit: int = MAX_LIST) -> list[dict]:
    """The referrals `principal`'s side may see (see the module docstring), oldest change first; audited
    `referral_list` with the ids returned."""
    as_program = principal.role == Role.provider
    query = select(referrals).where(
        referrals.c.program == principal.agency if as_program else referrals.c.referrer_agency == principal.agency)
    moment = referrals.c.updated_at if as_program else referrals.c.created_at
    if since is not None:
        query = query.where(moment >= utc_text(since))
    if status is not None:                      # in SQL, the rows whose view can show `status`; the views below
        query = query.where(referrals.c.status.in_(_SHOWN_AS.get(status, (status,))))   # are then filtered exactly
    shown = []
    with store.begin() as connection:
        for row in connection.execute(query.order_by(moment, referrals.c.id)):
            side = side_of(principal, row)
            if side is None:
                continue
            view = _view(connection, principal, row, side, reference_key, now)
            if status is None or view["status"] == status:
                shown.append(view)
            if len(shown) >= limit:
                break
        append(connection, "referral_list", {**audit_fields(principal, "agency", "role"), "status": status,
                                             "since": utc_text(since), "referrals": [v["id"] for v in shown]},
               principal=principal.name)
    return shown
