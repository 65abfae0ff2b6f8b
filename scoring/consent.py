"""When a consent lets an item reach a requester.

A consent belongs to the person its `record_id` resolves to and covers the items that the
record's agency holds about that person in the listed categories (docs/architecture.md, "Data model"). The caller passes
only the consents of the item's person; this module checks the rest:

- in force at every moment the disclosure is judged at (the server's now and, when given, the
  incident's time: an incident time can only narrow what a consent allows, never revive a lapsed
  or revoked consent);
- naming the requester's agency or role, and the purpose;
- listing the item's *legal* category (42 CFR 2.31: a Part 2 disclosure needs a consent that
  describes the substance-use information, so only `PART2` unlocks a PART2 item, only `PHI` a
  PHI item); where the consent also lists item categories (`PHI|communication_need`), the item's
  category must be one of them. Item categories alone never unlock anything, and a consent
  listing a category Briefing does not know (a typo such as `medicl`, or `part2` in lower case)
  covers nothing: an unreadable scope must never widen to every category;
- held by the same agency as the item.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from scoring.item import CONSENT_CATEGORIES, LEGAL_CATEGORIES, Consent, ContextItem, Principal, Purpose


def is_active(consent: Consent, now: datetime) -> bool:
    """Signed into force, not past its end, not revoked (a revocation takes effect at `revoked_at`)."""
    if now < consent.valid_from:
        return False
    if consent.valid_until is not None and now >= consent.valid_until:
        return False
    return consent.revoked_at is None or now < consent.revoked_at


def lists_category(consent: Consent, item: ContextItem) -> bool:
    """The consent names the item's legal category and, if it names item categories, the item's one.

    Fails closed: a consent with any category outside the vocabulary covers nothing.
    """
    if item.legal_category.value not in consent.categories or not CONSENT_CATEGORIES.issuperset(consent.categories):
        return False
    scoped = [c for c in consent.categories if c not in LEGAL_CATEGORIES]
    return not scoped or item.category.value in scoped


def covers(consent: Consent, item: ContextItem, principal: Principal, purpose: Purpose, now: datetime,
           incident_at: datetime | None = None) -> bool:
    """Whether `consent` permits disclosing `item` to `principal` for `purpose` at `now` (and at `incident_at`)."""
    return (is_active(consent, now)
            and (incident_at is None or is_active(consent, incident_at))
            and (principal.agency in consent.recipients or principal.role.value in consent.recipients)
            and purpose in consent.purposes
            and lists_category(consent, item)
            and consent.record_agency is not None
            and consent.record_agency == item.record_agency)


def covering_consent(consents: Iterable[Consent], item: ContextItem, principal: Principal, purpose: Purpose,
                     now: datetime, incident_at: datetime | None = None) -> Consent | None:
    """The first consent that covers this disclosure (by consent id, so the choice is deterministic)."""
    for consent in sorted(consents, key=lambda c: c.consent_id):
        if covers(consent, item, principal, purpose, now, incident_at):
            return consent
    return None
