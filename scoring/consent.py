"""When a consent lets an item reach a requester.

A consent belongs to the person its `record_id` resolves to and covers the items that the
record's agency holds about that person in the listed categories (DESIGN.md). The caller passes
only the consents of the item's person; this module checks the rest: active at the moment of
the request, naming the requester's agency or role, the purpose, the item's legal or item
category, and the same holding agency.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from scoring.item import Consent, ContextItem, Principal, Purpose


def is_active(consent: Consent, now: datetime) -> bool:
    """Signed into force, not past its end, not revoked (a revocation takes effect at `revoked_at`)."""
    if now < consent.valid_from:
        return False
    if consent.valid_until is not None and now >= consent.valid_until:
        return False
    return consent.revoked_at is None or now < consent.revoked_at


def covers(consent: Consent, item: ContextItem, principal: Principal, purpose: Purpose, now: datetime) -> bool:
    """Whether `consent` permits disclosing `item` to `principal` for `purpose` at `now`."""
    return (is_active(consent, now)
            and (principal.agency in consent.recipients or principal.role.value in consent.recipients)
            and purpose in consent.purposes
            and (item.legal_category.value in consent.categories or item.category.value in consent.categories)
            and consent.record_agency is not None
            and consent.record_agency == item.record_agency)


def covering_consent(consents: Iterable[Consent], item: ContextItem, principal: Principal, purpose: Purpose,
                     now: datetime) -> Consent | None:
    """The first consent that covers this disclosure (by consent id, so the choice is deterministic)."""
    for consent in sorted(consents, key=lambda c: c.consent_id):
        if covers(consent, item, principal, purpose, now):
            return consent
    return None
