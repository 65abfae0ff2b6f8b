"""A generative model checker of the access policy (issue 15), with its own oracle.

Hypothesis draws whole briefings: a principal (every role, several agencies, any purposes), a
purpose, an incident (every call type, an incident time around the server's clock, an EMS
attestation or none) and a person's items (every legal and item category, statuses, validity
windows, serious-threat bases in any case, copies that merge) and consents (every category, legal
and item, recipients by agency and role, purposes, windows, revocations, holding agencies).
`scoring.briefing.brief` decides; `oracle` below says what the law allows, written from the rules
of issue 15 and the team's agreed behaviours, never by calling scoring/policy.py or
scoring/consent.py. Every output is checked:

- a PART2 item is released only under a consent whose categories list PART2 (and, where it
  lists item categories, the item's), naming the requester (agency or role) and the purpose, in
  force at the server's clock and at the incident's time, held by the item's agency; or to EMS
  for EMERGENCY on a configured medical-emergency call type with an attestation, which is logged;
- a PHI item likewise needs a PHI consent, or clinical care (co-responder, EMS; TREATMENT or
  EMERGENCY), or a clinician's serious-threat disclosure (any case of the basis) that lives at
  most 14 days, to law enforcement for THREAT;
- CJI only to law enforcement; nothing to a role that is not a responder or for a purpose the key
  lacks; nothing inactive, expired or under a lapsed or revoked consent, at either time;
- a withheld PART2 or CJI item is never mentioned (not counted in `withheld`); only withheld live
  PHI is counted; every shown copy (`sources`) was itself permitted; every denial is in the audit list.

`make test` runs a fast sample (`FAST_CASES`); tests/bench/test_policy_model_bench.py runs
>= 100,000 cases and writes its count and violations for BENCHMARKS.md.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from scoring.briefing import brief
from scoring.item import Category, Consent, ContextItem, LegalCategory, Principal, Purpose, Role, Status
from scoring.rules import Rules
from tests.adversarial.vocabulary import CALL_TYPES, CLINICAL, LAW_ENFORCEMENT, MEDICAL_EMERGENCIES, RESPONDER_ROLES

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
FAST_CASES = 2500
AGENCIES = ("METRO_PD", "COUNTY_EMS", "COUNTY_BH", "HARBOR_SUD")
ROLES = tuple(Role)
ITEM_CATEGORIES = tuple(c.value for c in Category)
LEGAL_CATEGORIES = tuple(c.value for c in LegalCategory)
THREAT_CAP = timedelta(days=14)
BASES = (None, "serious_threat", "SERIOUS_THREAT", "Serious_Threat", "consent", "hipaa_treatment",
         "part2_medical_emergency")
ATTESTATIONS = (None, "", "   ", "\u200b\u200b", "--", "Medic 7, R. Diaz: unresponsive patient, suspected overdose",
                "EMT K. Lee attests: seizure, unknown medication")
SOURCES = ("clinician", "officer", "caregiver", "self", None)
RESPONDER_LIST = (Role.dispatcher, Role.officer, Role.co_responder, Role.ems)
RECIPIENTS = tuple(r.value for r in Role) + AGENCIES
CONSENT_CATEGORIES = LEGAL_CATEGORIES + ITEM_CATEGORIES + ("UNKNOWN", "part2", "medicl", "Medical")   # typos too
SECOND = timedelta(seconds=1)
RULES = Rules.load()


# ------------------------------------------------------------------------------------ generation

def make_case(rng: random.Random) -> dict:
    """One briefing's inputs, drawn from `rng` (hypothesis supplies it, so a failure reproduces).

    Skewed towards the interesting: mostly responders, purposes the key has, consents aimed at one
    of the case's items and then spoilt in one respect or none, times on the exact boundaries
    (the server's now, the incident's time, one second either side), expiries near verification.
    """
    pick, chance = rng.choice, (lambda p: rng.random() < p)
    focus = pick(["threat", "ems"]) if chance(0.3) else None     # the two rare releases get a share of their own
    role = (pick([Role.officer, Role.dispatcher]) if focus == "threat" else Role.ems if focus == "ems"
            else pick(RESPONDER_LIST) if chance(0.8) else pick(ROLES))
    principal = Principal(name="key-1", role=role, agency=pick(AGENCIES),
                          purposes=tuple(p for p in Purpose if chance(0.6)))
    purpose = pick(principal.purposes) if principal.purposes and chance(0.75) else pick(list(Purpose))
    if focus and chance(0.9):
        purpose = Purpose.THREAT if focus == "threat" else Purpose.EMERGENCY
        principal = principal.model_copy(update={"purposes": tuple(set(principal.purposes) | {purpose})})
    legal_weights = {"threat": (1, 6, 1, 1, 1), "ems": (1, 1, 6, 1, 1)}.get(focus, (1, 1, 1, 1, 1))
    incident_at = (None if chance(0.3) else pick([NOW, NOW - SECOND, NOW + timedelta(hours=23)]) if chance(0.2)
                   else NOW - timedelta(days=rng.randint(0, 600), hours=rng.randint(0, 23)))
    instants = [NOW, NOW + SECOND, NOW - SECOND] + ([incident_at, incident_at + SECOND, incident_at - SECOND]
                                                   if incident_at else [])

    def moment(past: bool = False) -> datetime:
        if chance(0.25):
            return pick(instants)
        if chance(0.25):
            return NOW + timedelta(days=rng.randint(-20, -1 if past else 20), hours=rng.randint(0, 23))
        return NOW + timedelta(days=rng.randint(-700, -1 if past else 400))

    def maybe(p_none: float = 0.5, past: bool = False) -> datetime | None:
        return None if chance(p_none) else moment(past)

    items = []
    for k in range(rng.randint(1, 6)):
        verified, observed = maybe(past=chance(0.9)), maybe(past=True)      # a feed may date a verification ahead
        roll = rng.random()
        expires = (None if roll < 0.4 else moment() if roll < 0.7
                   else (verified or observed or NOW) + timedelta(days=rng.randint(0, 20), seconds=pick([0, 1, -1])))
        items.append(ContextItem(
            item_id=f"I-{k}", record_id=f"R-{k}", record_agency=pick(AGENCIES) if chance(0.9) else None,
            category=pick(ITEM_CATEGORIES), code=pick(["A", "B"]),
            legal_category=rng.choices(LEGAL_CATEGORIES, legal_weights)[0],
            status=Status.active if chance(0.8) else pick(list(Status)),
            disclosure_basis=pick(BASES[1:4]) if focus == "threat" and chance(0.6) else pick(BASES),
            source_type="clinician" if chance(0.4) else pick(SOURCES), observed_at=observed, last_verified_at=verified,
            expires_at=expires))
    consents = []
    for k in range(rng.randint(0, 4)):
        aim = pick(items) if chance(0.7) else None
        recipients = {pick(RECIPIENTS) for _ in range(rng.randint(0, 2))}
        purposes = {pick(list(Purpose)) for _ in range(rng.randint(0, 2))}
        categories = {pick(CONSENT_CATEGORIES) for _ in range(rng.randint(0, 2))}
        agency = pick(AGENCIES) if chance(0.8) else None
        if aim is not None:
            agency = aim.record_agency if chance(0.9) else agency
            recipients |= {pick([role.value, principal.agency])} if chance(0.8) else set()
            purposes |= {purpose} if chance(0.8) else set()
            categories |= {aim.legal_category.value} if chance(0.8) else set()
            if chance(0.4):
                categories |= {aim.category.value if chance(0.7) else pick(ITEM_CATEGORIES)}
        consents.append(Consent(
            consent_id=f"C-{k}", record_id=f"R-C{k}", record_agency=agency, recipients=tuple(sorted(recipients)),
            purposes=tuple(sorted(purposes)), categories=tuple(sorted(categories)),
            valid_from=moment(past=chance(0.7)), valid_until=maybe(0.4), revoked_at=maybe(0.7)))
    call_type = pick(sorted(MEDICAL_EMERGENCIES)) if focus == "ems" and chance(0.6) else pick(CALL_TYPES)
    incident = {"incident_id": "INC-1", "call_type": call_type,
                "emergency_attestation": pick(ATTESTATIONS[1:]) if chance(0.75) else None}
    return {"principal": principal, "purpose": purpose, "items": items, "consents": consents, "incident": incident,
            "incident_at": incident_at}


def cases():
    """Hypothesis strategy of cases: hypothesis draws one seed per case and `make_case` builds it.

    A seeded `random.Random` rather than hypothesis's recorded choices: those lean towards the
    simplest values (every `random()` near 0), which would skew the case mix this checker is
    built on, and cost ten times more per case. A failing case is printed in full (`note`).
    """
    return st.randoms(use_true_random=True).map(make_case)


# ---------------------------------------------------------------------------------------- oracle

def _times(case) -> list[datetime]:
    return [NOW] + ([case["incident_at"]] if case["incident_at"] is not None else [])


def consent_grants(c: Consent, item: ContextItem, case) -> bool:
    """42 CFR 2.31 / HIPAA authorisation, as the issue states it."""
    who, purpose = case["principal"], case["purpose"]
    in_force = all(c.valid_from <= t and (c.valid_until is None or t < c.valid_until)
                   and (c.revoked_at is None or t < c.revoked_at) for t in _times(case))
    if set(c.categories) - set(LEGAL_CATEGORIES) - set(ITEM_CATEGORIES):
        return False                    # a scope Briefing cannot read releases nothing (a typo must not widen it)
    listed_items = {x for x in c.categories if x in ITEM_CATEGORIES}
    describes = item.legal_category.value in c.categories and (not listed_items or item.category.value in listed_items)
    return (in_force and describes and purpose in c.purposes
            and (who.agency in c.recipients or who.role.value in c.recipients)
            and c.record_agency is not None and c.record_agency == item.record_agency)


def live(item: ContextItem, case) -> bool:
    return item.status == Status.active and (item.expires_at is None or all(item.expires_at > t for t in _times(case)))


def serious_threat(item: ContextItem) -> bool:
    return ((item.disclosure_basis or "").upper() == "SERIOUS_THREAT" and item.source_type == "clinician"
            and item.expires_at is not None
            and item.expires_at - min(item.last_verified_at or item.observed_at or NOW, NOW) <= THREAT_CAP)


def oracle(item: ContextItem, case) -> set[str]:
    """The bases on which `item` may reach the case's requester (empty: it must not)."""
    who, purpose = case["principal"], case["purpose"]
    role = who.role.value
    if role not in RESPONDER_ROLES or purpose not in who.purposes or not live(item, case):
        return set()
    legal = item.legal_category.value
    if legal in ("VOLUNTARY_REGISTRY", "AGENCY_OPERATIONAL"):
        return {"any responder"}
    if legal == "CJI":
        return {"law enforcement"} if role in LAW_ENFORCEMENT else set()
    bases = {c.consent_id for c in case["consents"] if consent_grants(c, item, case)}
    if legal == "PHI":
        if role in CLINICAL and purpose in (Purpose.TREATMENT, Purpose.EMERGENCY):
            bases.add("care")
        if role in LAW_ENFORCEMENT and purpose == Purpose.THREAT and serious_threat(item):
            bases.add("serious threat")
    if legal == "PART2":
        attested = any(ch.isalnum() for ch in (case["incident"]["emergency_attestation"] or ""))
        if role == "ems" and purpose == Purpose.EMERGENCY and case["incident"]["call_type"] in MEDICAL_EMERGENCIES and attested:
            bases.add("2.51")
    return bases


def mentionable(item: ContextItem, case) -> bool:
    """A withheld item the requester may be told exists: live PHI (never PART2, CJI, inactive or expired)."""
    who = case["principal"]
    return (who.role.value in RESPONDER_ROLES and case["purpose"] in who.purposes and live(item, case)
            and item.legal_category.value == "PHI" and not oracle(item, case))


# ------------------------------------------------------------------------------------ the checker

def check(case, reasons: Counter | None = None) -> list[str]:
    """Brief the case and return every violation of the invariants (empty: it holds)."""
    result = brief(case["principal"], case["purpose"], case["incident"], "certain", case["items"], case["consents"], NOW,
                   RULES, None, incident_at=case["incident_at"])
    by_id = {i.item_id: i for i in case["items"]}
    allowed = {i.item_id: oracle(i, case) for i in case["items"]}
    out = []
    shown = {s["item_id"] for line in result.items for s in line.sources}
    disclosed = {d["item_id"]: d for d in result.disclosures}
    for item_id in shown | set(disclosed):
        if not allowed[item_id]:
            out.append(f"LEAK {by_id[item_id].legal_category.value} item {item_id}: {disclosed.get(item_id, {}).get('reason')}")
    for item_id, bases in allowed.items():
        if bases and item_id not in shown:
            out.append(f"over-denial: {item_id} ({by_id[item_id].legal_category.value}) may reach by {sorted(bases)}")
    for item_id, d in disclosed.items():
        if reasons is not None:
            reasons[d["reason"]] += 1
        item, bases = by_id[item_id], allowed[item_id]
        if d["consent_id"] is not None and d["consent_id"] not in bases:
            out.append(f"{item_id} released under consent {d['consent_id']}, which does not grant it")
        if item.legal_category.value == "PART2" and d["consent_id"] is None:
            log = d.get("log", {})
            if "2.51" not in bases or d["reason"] != "PERMIT_PART2_MEDICAL_EMERGENCY":
                out.append(f"PART2 {item_id} released without consent outside 42 CFR 2.51: {d['reason']}")
            elif (log.get("attestation") != case["incident"]["emergency_attestation"].strip()
                  or log.get("nature_of_emergency") not in MEDICAL_EMERGENCIES or log.get("disclosed_to") != "key-1"
                  or log.get("disclosing_agency") != item.record_agency or log.get("incident_id") != "INC-1"
                  or not log.get("disclosed_at")):
                out.append(f"PART2 {item_id} under 2.51 without the required log fields: {log}")
    for d in result.denied:
        if reasons is not None:
            reasons[d["reason"]] += 1
    if {d["item_id"] for d in result.denied} != set(by_id) - set(disclosed):
        out.append("the audit's denied list does not name every withheld item")
    for w in result.withheld:
        if any(word in w["reason"] for word in ("PART2", "CJI")):
            out.append(f"a withheld Part 2 or CJI item is mentioned: {w}")
    expected = sum(mentionable(i, case) for i in case["items"])
    if sum(w["count"] for w in result.withheld) != expected:
        out.append(f"withheld counts {result.withheld} != {expected} mentionable (live PHI) items")
    return out


# ---------------------------------------------------------------------------------------- tests

def test_the_oracles_medical_emergencies_are_the_configured_ones():
    assert RULES.medical_emergency_call_types == MEDICAL_EMERGENCIES


def test_policy_model_fast_sample_has_no_violations():
    reasons: Counter = Counter()

    @settings(max_examples=FAST_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(cases())
    def run(case):
        note(repr(case))
        violations = check(case, reasons)
        assert not violations, violations

    run()
    # the sample reaches every kind of release and refusal (a checker that never sees one checks nothing)
    for reason in ("PERMIT_PART2_CONSENT", "PERMIT_PART2_MEDICAL_EMERGENCY", "PERMIT_PHI_CONSENT", "PERMIT_PHI_CARE",
                   "PERMIT_PHI_SERIOUS_THREAT", "PERMIT_CJI_LAW_ENFORCEMENT", "DENY_PART2_NO_CONSENT", "DENY_EXPIRED",
                   "DENY_CJI_NOT_LAW_ENFORCEMENT", "DENY_PHI_NO_BASIS"):
        assert reasons[reason] > 0, (reason, reasons)


def _item_categories_unlock(monkeypatch):        # finding 1
    import scoring.consent

    monkeypatch.setattr(scoring.consent, "lists_category",
                        lambda c, item: item.legal_category.value in c.categories or item.category.value in c.categories)


def _judged_at_the_incident_time(monkeypatch):   # finding 2
    import scoring.briefing

    decide = scoring.briefing.decide
    monkeypatch.setattr(scoring.briefing, "decide", lambda who, purpose, item, consents, now, incident, incident_at=None,
                        **kw: decide(who, purpose, item, consents, incident_at or now, incident, **kw))


def _ems_exception_on_every_call(monkeypatch):   # the EMS exception on trespass and other
    import scoring.briefing

    decide = scoring.briefing.decide
    monkeypatch.setattr(scoring.briefing, "decide", lambda *a, **kw: decide(*a, **{**kw, "medical_emergencies": CALL_TYPES}))


def _long_lived_threats(monkeypatch):            # a serious-threat disclosure that is not imminent
    import scoring.policy

    monkeypatch.setattr(scoring.policy, "SERIOUS_THREAT_MAX_DAYS", 20)


def _withheld_part2_mentioned(monkeypatch):      # "1 item withheld" about a Part 2 record
    import dataclasses

    import scoring.policy

    part2 = scoring.policy._part2
    monkeypatch.setattr(scoring.policy, "_part2", lambda *a: (lambda d: d if d.permitted else dataclasses.replace(
        d, disclose_existence=True))(part2(*a)))


def _typo_widens_the_scope(monkeypatch):         # second review: `PART2|medicl` covered every Part 2 item
    import scoring.consent

    monkeypatch.setattr(scoring.consent, "lists_category", lambda c, item: item.legal_category.value in c.categories and (
        not [x for x in c.categories if x in ITEM_CATEGORIES] or item.category.value in c.categories))


def _blank_attestation(monkeypatch):             # second review: an invisible attestation unlocked 2.51
    import re

    import scoring.policy

    monkeypatch.setattr(scoring.policy, "ATTESTED", re.compile(r"."))


@pytest.mark.parametrize("fault", [_item_categories_unlock, _judged_at_the_incident_time, _ems_exception_on_every_call,
                                   _long_lived_threats, _withheld_part2_mentioned, _typo_widens_the_scope,
                                   _blank_attestation])
def test_the_checker_catches_each_fault_the_issue_found_when_it_is_put_back(monkeypatch, fault):
    # The checker must be able to fail: with a fault re-introduced it has to report a violation.
    fault(monkeypatch)
    found = []

    @settings(max_examples=FAST_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate])
    @given(cases())
    def run(case):
        found.extend(check(case))
        if found:
            raise _Found

    with pytest.raises(_Found):
        run()
    assert found


class _Found(Exception):
    """Stops the search at the first violation."""
