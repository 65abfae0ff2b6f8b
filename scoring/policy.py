"""Access policy: may this principal see this item for this purpose, and why (default deny).

One decision per (principal, purpose, item), with a reason code for the audit log. The rules are
docs/architecture.md's, as issue 15 tightened them:

- Only responder roles (dispatcher, officer, co_responder, ems) ever see context items, and only
  for a purpose their key grants. Items that are not active, or are expired, never pass.
- Time: `now` is the server's clock (the service injects it; no request can set it). When the
  incident's own time `incident_at` is given, an item and a consent must be live at *both*
  moments: the incident's time can narrow what is disclosed, never widen it.
- `VOLUNTARY_REGISTRY` and `AGENCY_OPERATIONAL`: every responder role.
- `CJI`: law-enforcement roles only.
- `PHI`: clinicians (co_responder, ems) for treatment or emergency; anyone else only under a
  covering consent that lists PHI (scoring.consent), or law enforcement for purpose THREAT under a
  clinician-authored serious-threat disclosure (`disclosure_basis` SERIOUS_THREAT, compared
  without regard to case) that expires within `SERIOUS_THREAT_MAX_DAYS` of its verification:
  HIPAA 45 CFR 164.512(j) allows it for a serious and *imminent* threat, so the disclosure must be
  short-lived.
- `PART2`: only under a consent that lists PART2 and names the requester (agency or role) and the
  purpose; or to EMS, for purpose EMERGENCY, on a call type of the configured medical-emergency
  list (`medical_emergencies`, rules.toml `[policy]`), with the requester's attestation
  (`incident["emergency_attestation"]`): 42 CFR 2.51. The fields that exception requires, the
  attestation among them, are returned in `Decision.log` for the audit record.

A withheld item may be mentioned to the requester ("1 item withheld: …") only when
`Decision.disclose_existence` is true. It is false for every withheld Part 2 and CJI item (that
such a record exists is itself protected), for inactive and expired items, and for roles that see
no items at all.
"""

from __future__ import annotations

import re

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable

from scoring.consent import covering_consent
from scoring.item import CLINICAL, LAW_ENFORCEMENT, RESPONDERS, Consent, ContextItem, LegalCategory, Principal, Purpose, Role, Status

SERIOUS_THREAT = "SERIOUS_THREAT"
SERIOUS_THREAT_MAX_DAYS = 14
ATTESTED = re.compile(r"[^\W_]")          # an attestation holds at least one letter or digit


@dataclass(frozen=True)
class Decision:
    permitted: bool
    reason: str
    disclose_existence: bool = False
    consent_id: str | None = None
    log: dict = field(default_factory=dict)


def _deny(reason: str, disclose: bool = False) -> Decision:
    return Decision(False, reason, disclose)


def decide(principal: Principal, purpose: Purpose, item: ContextItem, consents: Iterable[Consent], now: datetime,
           incident: dict | None = None, *, incident_at: datetime | None = None,
           medical_emergencies: Collection[str] = ()) -> Decision:
    """The decision for one item.

    `consents`: those of the item's person; `now`: the server's clock; `incident_at`: the incident's
    time (narrows only); `incident`: id, call type and the requester's emergency attestation, for
    the 42 CFR 2.51 exception and its log; `medical_emergencies`: the call types it may apply to
    (none by default: the exception fails closed unless configured).
    """
    if principal.role not in RESPONDERS:
        return _deny("DENY_ROLE_SEES_NO_ITEMS")
    if purpose not in principal.purposes:
        return _deny("DENY_PURPOSE_NOT_GRANTED")
    if item.status != Status.active:
        return _deny("DENY_NOT_ACTIVE")
    if item.expires_at is not None and (item.expires_at <= now or (incident_at is not None and item.expires_at <= incident_at)):
        return _deny("DENY_EXPIRED")
    legal = item.legal_category
    if legal == LegalCategory.VOLUNTARY_REGISTRY:
        return Decision(True, "PERMIT_VOLUNTARY_REGISTRY")
    if legal == LegalCategory.AGENCY_OPERATIONAL:
        return Decision(True, "PERMIT_AGENCY_OPERATIONAL")
    if legal == LegalCategory.CJI:
        if principal.role in LAW_ENFORCEMENT:
            return Decision(True, "PERMIT_CJI_LAW_ENFORCEMENT")
        return _deny("DENY_CJI_NOT_LAW_ENFORCEMENT")
    if legal == LegalCategory.PHI:
        return _phi(principal, purpose, item, consents, now, incident_at)
    if legal == LegalCategory.PART2:
        return _part2(principal, purpose, item, consents, now, incident_at, incident or {}, medical_emergencies)
    return _deny("DENY_UNKNOWN_CATEGORY")


def is_serious_threat_disclosure(item: ContextItem, now: datetime) -> bool:
    """A clinician's serious-threat disclosure that expires within the cap of its verification (or observation).

    The cap runs from the verification or from `now`, whichever is earlier: a verification dated in
    the future must not stretch a disclosure past the cap.
    """
    start = min(item.last_verified_at or item.observed_at or now, now)
    return ((item.disclosure_basis or "").upper() == SERIOUS_THREAT and item.source_type == "clinician"
            and item.expires_at is not None and item.expires_at - start <= timedelta(days=SERIOUS_THREAT_MAX_DAYS))


def _phi(principal: Principal, purpose: Purpose, item: ContextItem, consents: Iterable[Consent], now: datetime,
         incident_at: datetime | None) -> Decision:
    if principal.role in CLINICAL and purpose in (Purpose.TREATMENT, Purpose.EMERGENCY):
        return Decision(True, "PERMIT_PHI_CARE")
    consent = covering_consent(consents, item, principal, purpose, now, incident_at)
    if consent is not None:
        return Decision(True, "PERMIT_PHI_CONSENT", consent_id=consent.consent_id)
    if principal.role in LAW_ENFORCEMENT and purpose == Purpose.THREAT and is_serious_threat_disclosure(item, now):
        return Decision(True, "PERMIT_PHI_SERIOUS_THREAT")
    return _deny("DENY_PHI_NO_BASIS", disclose=True)


def _part2(principal: Principal, purpose: Purpose, item: ContextItem, consents: Iterable[Consent], now: datetime,
           incident_at: datetime | None, incident: dict, medical_emergencies: Collection[str]) -> Decision:
    consent = covering_consent(consents, item, principal, purpose, now, incident_at)
    if consent is not None:
        return Decision(True, "PERMIT_PART2_CONSENT", consent_id=consent.consent_id,
                        log={"consent_id": consent.consent_id,
                             "redisclosure_notice": "42 CFR 2.32: further disclosure prohibited without consent"})
    attestation = (incident.get("emergency_attestation") or "").strip()
    attestation = attestation if ATTESTED.search(attestation) else ""      # words, not blanks or invisible characters
    if (principal.role == Role.ems and purpose == Purpose.EMERGENCY and incident.get("call_type") in medical_emergencies
            and attestation):
        return Decision(True, "PERMIT_PART2_MEDICAL_EMERGENCY", log={
            "exception": "42 CFR 2.51 medical emergency",
            "disclosed_to": principal.name,
            "recipient_agency": principal.agency,
            "disclosing_agency": item.record_agency,
            "item_id": item.item_id,
            "disclosed_at": now.isoformat(),
            "nature_of_emergency": incident.get("call_type"),
            "incident_id": incident.get("incident_id"),
            "attestation": attestation,
        })
    return _deny("DENY_PART2_NO_CONSENT")
