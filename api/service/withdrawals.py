"""Correcting and withdrawing data: retract an item, revoke a consent, erase a person's registry data.

Each is one transaction with its audit event; nothing is cached, so each change holds from the very next
request on every worker (items and consents are read per request, and the records an erasure removes go
through the change feed, api.service.changes). The endpoints and their answers: api/web/withdraw.py.

- `retract_item`: the row is kept with its new status (`retracted` or `entered_in_error`), so the retraction
  is auditable and the item is never shown (the access policy denies every item that is not active).
  Retracting an item already in that status changes nothing and is still audited.
- `revoke_consent`: a revocation only ever moves earlier: a consent already revoked at or before the given
  time keeps its time. Stored, and answered, as UTC text (api.service.times.utc_text).
- `erase_registry`: for the person's records, every item with legal category `VOLUNTARY_REGISTRY`; the
  person's voluntary-registry records (agency in `REGISTRY_AGENCIES` or source system in
  `REGISTRY_SOURCE_SYSTEMS`) with every item and consent hanging on them; and the feedback given on the
  deleted items; and the person's referrals, open or closed, with their lifecycle and the items that travelled
  (a program keeps its own clinical record; Briefing keeps no copy), and the record of whom briefings resolved
  to be the person. The records leave this worker's index at once, every other worker's through a `delete`
  change. Review decisions that name the records are kept. The audit event carries the counts and the ids,
  never the erased content.

Who: a feed of the agency of the item's or consent's record, or an admin (api.service.ownership); a feed of
another agency is refused (audited, never naming the owner). Erasure: the caller checks it is an admin.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import delete, select, update

from api.service.audit import append, audit_fields
from api.service.changes import record_change
from api.service.ownership import is_foreign_write, refuse_write
from api.service.refusals import Forbidden, NotFound
from api.service.store import (begin_writing, briefed_persons, clusters, consents, context_items, feedback, locked_row,
                               outbox, records, referrals)
from api.service.times import parse_time, utc_text
from scoring.item import Principal

REGISTRY_AGENCIES = frozenset({"REGISTRY"})
REGISTRY_SOURCE_SYSTEMS = frozenset({"VR"})
_CHUNK = 500


def is_registry_record(agency: str | None, source_system: str | None) -> bool:
    return agency in REGISTRY_AGENCIES or source_system in REGISTRY_SOURCE_SYSTEMS


def _refuse_foreign(store, principal: Principal, table, key: str, ident: str, kind: str) -> None:
    """A feed acting on another agency's item or consent: refused (403, never naming the owner) and audited.

    Checked before the write transaction, so the refusal's audit event commits on its own; `_may_write`
    checks again under the row lock (a record's agency cannot change under its items and consents).
    An unknown id passes here and is not found there.
    """
    with store.engine.connect() as connection:
        row = connection.execute(select(records.c.agency).join(table, table.c.record_id == records.c.record_id)
                                 .where(table.c[key] == ident)).first()
    if row is not None and is_foreign_write(principal, row.agency):
        refuse_write(store, principal, kind, ident, Forbidden(f"a feed of {principal.agency} may not change this {kind}: "
                                                              "it belongs to another agency"))


def _may_write(principal: Principal, agency: str | None, what: str) -> None:
    """Forbidden unless `principal` is an admin or a feed of the agency `what` belongs to (never naming it)."""
    if is_foreign_write(principal, agency):
        raise Forbidden(f"a feed of {principal.agency} may not change {what}: it belongs to another agency")


def retract_item(service, principal: Principal, item_id: str, status: str, reason: str | None) -> dict:
    """Give an item the status `status` (see the module docstring); what the caller is told."""
    _refuse_foreign(service.store, principal, context_items, "item_id", item_id, "item")
    with service.store.begin() as connection:
        row = locked_row(connection, select(context_items.c.record_id, context_items.c.status, records.c.agency)
                         .join(records, records.c.record_id == context_items.c.record_id)
                         .where(context_items.c.item_id == item_id))
        if row is None:
            raise NotFound(f"no context item {item_id!r}")
        _may_write(principal, row.agency, f"item {item_id!r}")
        previous = row.status or "active"
        changed = previous != status
        if changed:
            connection.execute(update(context_items).where(context_items.c.item_id == item_id).values(
                status=status, updated_at=datetime.now(timezone.utc).isoformat()))
        append(connection, "context_item_retract", {
            **audit_fields(principal, "role", "agency"), "item_id": item_id, "record_id": row.record_id,
            "status": status, "previous_status": previous, "changed": changed, "reason": reason},
            principal=principal.name)
    return {"item_id": item_id, "record_id": row.record_id, "status": status, "previous_status": previous,
            "changed": changed}


def revoke_consent(service, principal: Principal, consent_id: str, when: datetime, reason: str | None) -> dict:
    """Revoke a consent from `when` (UTC, not in the future), unless it is revoked earlier already; what the caller
    is told."""
    _refuse_foreign(service.store, principal, consents, "consent_id", consent_id, "consent")
    with service.store.begin() as connection:
        row = locked_row(connection, select(consents.c.record_id, consents.c.revoked_at, records.c.agency)
                         .join(records, records.c.record_id == consents.c.record_id)
                         .where(consents.c.consent_id == consent_id))
        if row is None:
            raise NotFound(f"no consent {consent_id!r}")
        _may_write(principal, row.agency, f"consent {consent_id!r}")
        previous = parse_time(row.revoked_at)
        changed = previous is None or when < previous
        effective = when if changed else previous
        if changed:
            connection.execute(update(consents).where(consents.c.consent_id == consent_id).values(
                revoked_at=utc_text(effective), updated_at=datetime.now(timezone.utc).isoformat()))
        append(connection, "consent_revoke", {
            **audit_fields(principal, "role", "agency"), "consent_id": consent_id, "record_id": row.record_id,
            "revoked_at": utc_text(effective), "previous_revoked_at": row.revoked_at, "changed": changed,
            "reason": reason}, principal=principal.name)
    return {"consent_id": consent_id, "record_id": row.record_id, "revoked_at": utc_text(effective),
            "previous_revoked_at": row.revoked_at, "changed": changed}


def erase_registry(service, principal: Principal, person_id: str, requested_by: str, reference: str) -> dict:
    """Erase a person's voluntary-registry data (see the module docstring); counts and ids of what went."""
    with service.resolver.lock:
        with service.store.begin() as connection:
            begin_writing(connection)
            person = connection.execute(select(records.c.record_id, records.c.agency, records.c.source_system)
                                        .join(clusters, clusters.c.record_id == records.c.record_id)
                                        .where(clusters.c.person_id == person_id).order_by(records.c.record_id)
                                        .with_for_update()).all()
            if not person:
                raise NotFound(f"no person {person_id!r}")
            every = [r.record_id for r in person]
            registry = [r.record_id for r in person if is_registry_record(r.agency, r.source_system)]
            item_ids = sorted(connection.execute(select(context_items.c.item_id).where(
                context_items.c.record_id.in_(every),
                (context_items.c.legal_category == "VOLUNTARY_REGISTRY") | context_items.c.record_id.in_(registry))
            ).scalars())
            consent_ids = sorted(connection.execute(select(consents.c.consent_id)
                                                    .where(consents.c.record_id.in_(registry))).scalars())
            counts = {"records": len(registry), "context_items": len(item_ids), "consents": len(consent_ids),
                      "feedback": _delete_registry_rows(connection, registry, item_ids, consent_ids),
                      "referrals": _delete_referrals(connection, person_id),
                      "briefed_persons": connection.execute(delete(briefed_persons)
                                                            .where(briefed_persons.c.person_id == person_id)).rowcount}
            append(connection, "registry_erasure", {
                **audit_fields(principal, "role"), "person_id": person_id, "requested_by": requested_by,
                "reference": reference, "deleted": counts, "record_ids": registry, "item_ids": item_ids,
                "consent_ids": consent_ids}, principal=principal.name)
        for record_id in registry:
            if record_id in service.resolver.index_.slot_of:
                service.resolver.delete_record(record_id)
    return {"person_id": person_id, **counts, "record_ids": registry, "item_ids": item_ids, "consent_ids": consent_ids}


def _delete_registry_rows(connection, registry: list[str], item_ids: list[str], consent_ids: list[str]) -> int:
    """Delete the items (and the feedback on them), the consents and the registry records, with a `delete` change
    per record; how many feedback rows went."""
    removed_feedback = 0
    for start in range(0, len(item_ids), _CHUNK):
        chunk = item_ids[start: start + _CHUNK]
        removed_feedback += connection.execute(delete(feedback).where(feedback.c.item_id.in_(chunk))).rowcount
        connection.execute(delete(context_items).where(context_items.c.item_id.in_(chunk)))
    if consent_ids:
        connection.execute(delete(consents).where(consents.c.consent_id.in_(consent_ids)))
    if registry:
        connection.execute(delete(clusters).where(clusters.c.record_id.in_(registry)))
        connection.execute(delete(records).where(records.c.record_id.in_(registry)))
    for record_id in registry:
        record_change(connection, "delete", record_id)
    return removed_feedback


def _delete_referrals(connection, person_id: str) -> int:
    """Delete the person's referrals (their events and items cascade) and the deliveries still owed about them."""
    ids = list(connection.execute(select(referrals.c.id).where(referrals.c.person_id == person_id)).scalars())
    if ids:
        connection.execute(delete(outbox).where(outbox.c.referral_id.in_(ids)))
    return connection.execute(delete(referrals).where(referrals.c.id.in_(ids))).rowcount if ids else 0
