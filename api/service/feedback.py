"""Responder feedback: whether an item helped at an incident, accepted once per item a briefing showed.

Feedback trains the next ranker, so it is accepted only from a principal a briefing showed that item to at
that incident (a `shown_items` row, written with the briefing's audit event, api.service.disclosure), and
only once: otherwise `Forbidden(NOT_SHOWN)` (the same answer whether the item exists or not) and, for a second
feedback, `Conflict(ALREADY_GIVEN)`. The feedback row, the `shown_items` row's `feedback_id` and the audit
event are written in one transaction; `UPDATE … WHERE feedback_id IS NULL` decides between concurrent posts
(on any worker), so exactly one is accepted.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import and_, insert, select, update

from api.service.audit import append, audit_fields
from api.service.refusals import Conflict, Forbidden
from api.service.store import Store, feedback, shown_items
from scoring.item import Principal

NOT_SHOWN = "no briefing showed this item to you at this incident"
ALREADY_GIVEN = "feedback on this item at this incident was already given"


def give_feedback(store: Store, principal: Principal, incident_id: str, item_id: str, helped: bool | None,
                  outcome: str | None) -> int:
    """Store `principal`'s feedback on an item shown to it at an incident (see the module docstring); its id."""
    shown = and_(shown_items.c.principal == principal.name, shown_items.c.incident_id == incident_id,
                 shown_items.c.item_id == item_id)
    with store.engine.connect() as connection:   # refusals cost one read, never a write
        _refuse_unless_open(connection.execute(select(shown_items.c.feedback_id).where(shown)).first())
    with store.begin() as connection:            # a refusal below rolls the feedback row back
        row_id = connection.execute(insert(feedback).values(
            incident_id=incident_id, item_id=item_id, principal=principal.name,
            helped=None if helped is None else int(helped), outcome=outcome,
            created_at=datetime.now(timezone.utc).isoformat())).inserted_primary_key[0]
        claimed = connection.execute(update(shown_items).where(shown, shown_items.c.feedback_id.is_(None))
                                     .values(feedback_id=row_id)).rowcount
        if claimed != 1:                         # another request took it since the read above
            _refuse_unless_open(connection.execute(select(shown_items.c.feedback_id).where(shown)).first())
        briefing = connection.execute(select(shown_items.c.request_id).where(shown)).scalar()
        append(connection, "feedback", {**audit_fields(principal, "role"), "incident_id": incident_id,
                                        "item_id": item_id, "feedback_id": row_id, "briefing_request_id": briefing},
               principal=principal.name)
    return row_id


def _refuse_unless_open(shown) -> None:
    """Forbidden when no briefing showed the item to the caller at the incident, Conflict when its feedback was given."""
    if shown is None:
        raise Forbidden(NOT_SHOWN)
    if shown.feedback_id is not None:
        raise Conflict(ALREADY_GIVEN)
