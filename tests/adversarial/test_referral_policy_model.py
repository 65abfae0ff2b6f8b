"""A generative model checker of the referral access policy and lifecycle, with its own oracle.

Hypothesis draws whole cases: items of every category, status and expiry, with consents aimed at
them and then spoilt or not (recipients, purposes, windows, revocations, holders, typos such as
`part2`, `medicl`); referrers of every role and basis; the service's whole referral dict seen by
every responder role; lifecycle events from either side. The oracle is written from the rules
(scoring/referral.py's transition table, 42 CFR Part 2, HIPAA), never by calling scoring/. Checked:

- `travels`: never CJI, nothing inactive or expired, never a safety flag, legal status or recent
  event; registry and operational items always; PHI under `treatment` or `agreement` or a consent;
  PART2 only under a consent in force, naming the program's agency or `provider`, for TREATMENT,
  listing PART2 and only known categories (the item's, if it lists any), held by the item's agency;
- `basis_refusal`: only responders; `treatment` only clinical; `consent` only with a consent in
  force naming the program (agency or `provider`) for TREATMENT; `follow_up_rule` never;
- `referrer_view`: law enforcement never sees outcome, business status, update time, grade, items
  or events, only requested/accepted/closed; a Part 2 program no consent held by it names to the
  viewer is, for every role, "a county co-responder team" with the coarse status, its name, kind
  and the reason nowhere in the view; clinical roles otherwise get the exact status and outcome;
  no key outside the referrer whitelist or the dict, no value altered;
- `apply`: the status moves only as the table says, never out of a closed one, each event only
  from its side, `complete` only with an outcome.

`make test` runs `FAST_CASES` per property, then puts in each fault the checker must report.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, Phase, find, given, note, settings
from hypothesis import strategies as st

import scoring.referral as lifecycle
import scoring.referral_policy as policy
from scoring.item import RESPONDERS, Category, Consent, ContextItem, LegalCategory, Principal, Purpose, Role, Status
from scoring.referral import (Basis, BusinessStatus, Event, Outcome, ProgramKind, Reason, Refused, Side, Step,
                              TaskStatus, Urgency)
from scoring.referral_policy import Program
from tests.adversarial.vocabulary import (CLINICAL, CLOSED, COARSE, LAW_ENFORCEMENT, PROGRESS, RESPONDER_ROLES,
                                         TABLE)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)
FAST_CASES = 1500
PART2_PROGRAMS = (Program("HARBOR_SUD", ProgramKind.post_overdose, True, "555-0100"),
                  Program("BAYSIDE_TREATMENT", ProgramKind.case_management, True, "555-0101"))
PROGRAMS = PART2_PROGRAMS + (Program("COUNTY_BH", ProgramKind.mobile_crisis, False, "555-0110"),
                             Program("HOUSING_HUB", ProgramKind.housing_outreach, False, "555-0120"))
RESPONDER_AGENCIES = ("METRO_PD", "COUNTY_EMS", "COUNTY_BH")
AGENCIES = RESPONDER_AGENCIES + ("HARBOR_SUD", "BAYSIDE_TREATMENT", "HOUSING_HUB")
RESPONDER_LIST = (Role.dispatcher, Role.officer, Role.co_responder, Role.ems)
RECIPIENTS = tuple(r.value for r in Role) + AGENCIES
ITEM_CATEGORIES = tuple(c.value for c in Category)
LEGAL = ("CJI", "PHI", "PART2", "VOLUNTARY_REGISTRY", "AGENCY_OPERATIONAL")
KNOWN = frozenset(LEGAL) | frozenset(ITEM_CATEGORIES)
TYPOS = ("part2", "medicl", "Medical", "PHI ", "UNKNOWN")
NEVER_TRAVEL = frozenset({"safety_flag", "legal_status", "recent_event"})
GENERIC = "a county co-responder team"
#: What a referring responder may ever see of a referral (what it sent and where it stands).
REFERRER_MAY_SEE = frozenset({"id", "status", "business_status", "outcome", "reason", "urgency", "due_by", "basis",
                              "created_at", "updated_at", "referrer_agency", "incident_id", "person", "grade",
                              "contact", "note", "program"})
LAW_ENFORCEMENT_NEVER = frozenset({"outcome", "business_status", "updated_at", "grade", "items", "events"})
#: What a clinician wrote when referring: a law-enforcement role sees none of it on a clinician's referral.
CLINICIANS_WORDS = frozenset({"reason", "basis", "contact", "note"})


# ------------------------------------------------------------------------------------ generation

def _moment(rng: random.Random, past: bool = False) -> datetime:
    """A time on the clock's edge (one second either side of now), near it, or far from it."""
    roll = rng.random()
    if roll < 0.3:
        return rng.choice([NOW, NOW - SECOND, NOW + SECOND] if not past else [NOW, NOW - SECOND])
    if roll < 0.6:
        return NOW + timedelta(days=rng.randint(-20, -1 if past else 20), hours=rng.randint(0, 23))
    return NOW + timedelta(days=rng.randint(-700, -1 if past else 400))


def _consent(rng, k: int, holder: str | None, names: tuple, purposes: tuple, categories: tuple) -> Consent:
    """A consent aimed at one disclosure (its holder, recipient names, purposes, categories), then spoilt in some
    respects or none: another holder, no recipient or purpose of the aim, a typo, a window or revocation around now."""
    chance, pick = (lambda p: rng.random() < p), rng.choice
    recipients = {pick(RECIPIENTS) for _ in range(rng.randint(0, 2))} | ({pick(names)} if chance(0.8) else set())
    wanted = {pick(purposes)} if purposes and chance(0.8) else set()
    extra = ((0.4, pick(ITEM_CATEGORIES + categories[1:])), (0.15, pick(TYPOS)), (0.2, pick(LEGAL)))
    cats = ({pick(categories)} if chance(0.85) else set()) | {c for p, c in extra if chance(p)}
    return Consent(consent_id=f"C-{k}", record_id=f"R-C{k}",
                   record_agency=holder if chance(0.85) else pick(AGENCIES + (None,)),
                   recipients=tuple(sorted(recipients)), categories=tuple(sorted(cats)),
                   purposes=tuple(sorted(wanted | {pick(list(Purpose)) for _ in range(rng.randint(0, 1))})),
                   valid_from=_moment(rng, past=chance(0.8)), valid_until=None if chance(0.5) else _moment(rng),
                   revoked_at=None if chance(0.75) else _moment(rng))


def travel_case(rng: random.Random) -> dict:
    chance, pick = (lambda p: rng.random() < p), rng.choice
    items = [ContextItem(item_id=f"I-{k}", record_id=f"R-{k}", record_agency=pick(AGENCIES) if chance(0.9) else None,
                         category=pick(ITEM_CATEGORIES), code="A", legal_category=pick(LEGAL),
                         status=Status.active if chance(0.8) else pick(list(Status)),
                         expires_at=None if chance(0.5) else _moment(rng)) for k in range(rng.randint(1, 3))]
    program = pick(PROGRAMS)
    aims = [pick(items) for _ in range(rng.randint(0, 3))]
    consents = [_consent(rng, k, aim.record_agency, (program.name, "provider"), ("TREATMENT",),
                         (aim.legal_category.value, aim.category.value)) for k, aim in enumerate(aims)]
    return {"items": items, "program": program, "basis": pick(list(Basis)), "consents": consents}


def refer_case(rng: random.Random) -> dict:
    chance, pick = (lambda p: rng.random() < p), rng.choice
    role = pick(RESPONDER_LIST) if chance(0.8) else pick(list(Role))
    referrer = Principal(name="key-1", role=role, agency=pick(RESPONDER_AGENCIES),
                         purposes=tuple(p for p in Purpose if chance(0.5)))
    program = pick(PROGRAMS)
    consent = None if chance(0.3) else _consent(rng, 0, pick(AGENCIES), (program.name, "provider"), ("TREATMENT",),
                                                (pick(LEGAL), pick(ITEM_CATEGORIES)))
    basis = Basis.consent if chance(0.4) else pick(list(Basis))
    return {"referrer": referrer, "basis": basis, "program": program, "consent": consent}


def referral_dict(rng: random.Random, program: Program, viewer: Principal) -> dict:
    """The service's whole referral (api/service/referral_reads.py), items and events too, and a field no rule names."""
    pick = rng.choice
    status = pick(list(TaskStatus)).value
    referral = {
        "id": rng.randint(1, 10**6), "status": status,
        "business_status": pick([None] + [b.value for b in BusinessStatus]),
        "outcome": pick(list(Outcome)).value if status == "completed" or rng.random() < 0.2 else None,
        "reason": pick(list(Reason)).value, "urgency": pick(list(Urgency)).value,
        "due_by": "2026-03-02T12:00:00Z", "basis": pick(list(Basis)).value, "created_at": "2026-03-01T11:00:00Z",
        "updated_at": "2026-03-01T11:30:00Z", "referrer_agency": viewer.agency, "incident_id": "INC-7",
        "referrer_role": pick([None] + [r.value for r in RESPONDER_LIST]),
        "person": "P-3f9a", "grade": pick(["certain", "probable"]),
        "contact": pick([None, {"name": "J. Doe", "phone": "555-0142"}]),
        "note": pick([None, "agreed at the scene, witnessed by Ofc. Ruiz", "text first"]), "program": program.name,
        "items": [{"category": "medical", "legal_category": "PART2", "text": "methadone", "agency": program.name}],
        "events": [{"event": "accept", "side": "program", "principal": f"{program.name}-key-2", "status": "accepted",
                    "business_status": None, "outcome": None, "note": f"{program.kind.value} intake", "at": "now"}],
        "identity_review": pick([False, True]), "consent_id": pick([None, "C-0"]),
        "agreement_note": pick([None, "witnessed by Medic 7"]), "referrer": "key-1", "call_type": "overdose",
        "opened_by": pick([None, "rule:post_overdose"]), "x_new_field": f"{program.name} internal",
    }
    drop = {k for k in referral if k not in ("id", "status") and rng.random() < 0.3} if rng.random() < 0.2 else ()
    return {k: v for k, v in referral.items() if k not in drop}     # keys missing: the view must not invent them


def view_case(rng: random.Random) -> dict:
    chance, pick = (lambda p: rng.random() < p), rng.choice
    program = pick(PART2_PROGRAMS) if chance(0.75) else pick(PROGRAMS)
    viewer = Principal(name="key-1", role=pick(RESPONDER_LIST), agency=pick(RESPONDER_AGENCIES),
                       purposes=tuple(p for p in Purpose if chance(0.5)))
    consents = [_consent(rng, k, program.name, (viewer.agency, viewer.role.value),
                         tuple(p.value for p in viewer.purposes), ("PART2", pick(ITEM_CATEGORIES)))
                for k in range(rng.randint(0, 3))]
    return {"referral": referral_dict(rng, program, viewer), "viewer": viewer, "program": program,
            "consents": consents}


def _seeded(make):
    """Cases built from a seed hypothesis draws, as in test_policy_model.py (its own choices skew to the simplest)."""
    return st.randoms(use_true_random=True).map(make)


TRAVEL_CASES, REFER_CASES, VIEW_CASES = _seeded(travel_case), _seeded(refer_case), _seeded(view_case)
#: Steps from either side; an outcome with `complete` and none otherwise, save one step in ten each way.
LIFECYCLE_CASES = st.lists(st.tuples(st.sampled_from(list(Event)), st.sampled_from(list(Side)), st.sampled_from(
    list(Outcome)), st.integers(0, 9)).map(lambda s: (s[0], s[1], s[2] if (s[0] == Event.complete) != (s[3] == 0)
                                                      else None)), min_size=1, max_size=16)


# ---------------------------------------------------------------------------------------- oracle

def in_force(c: Consent) -> bool:
    return (c.valid_from <= NOW and (c.valid_until is None or NOW < c.valid_until)
            and (c.revoked_at is None or NOW < c.revoked_at))


def names_the_program(c: Consent, program: Program) -> bool:
    """In force, to the program (its agency or the provider role), for TREATMENT."""
    return (in_force(c) and (program.name in c.recipients or "provider" in c.recipients)
            and Purpose.TREATMENT in c.purposes)


def consent_sends(c: Consent, item: ContextItem, program: Program) -> bool:
    """42 CFR 2.31 / HIPAA: the consent describes the item (legal category, readable scope) and its holder holds it."""
    cats = set(c.categories)
    scoped = cats & set(ITEM_CATEGORIES)
    return (names_the_program(c, program) and item.legal_category.value in cats and cats <= KNOWN
            and (not scoped or item.category.value in scoped)
            and c.record_agency is not None and c.record_agency == item.record_agency)


def may_travel(item: ContextItem, program: Program, basis: Basis, consents: list[Consent]) -> bool:
    if (item.status.value != "active" or (item.expires_at is not None and item.expires_at <= NOW)
            or item.category.value in NEVER_TRAVEL):
        return False
    legal = item.legal_category.value
    if legal in ("VOLUNTARY_REGISTRY", "AGENCY_OPERATIONAL"):
        return True
    if legal == "PHI" and basis.value in ("treatment", "agreement"):
        return True
    if legal in ("PHI", "PART2"):
        return any(consent_sends(c, item, program) for c in consents)
    return False                                     # CJI: a program is not a criminal-justice agency


def may_refer(referrer: Principal, basis: Basis, program: Program, consent: Consent | None) -> bool:
    role, basis = referrer.role.value, basis.value                  # follow_up_rule: a rule's, never a responder's
    return role in RESPONDER_ROLES and (basis == "agreement" or (basis == "treatment" and role in CLINICAL) or (
        basis == "consent" and consent is not None and names_the_program(consent, program)))


def names_to_viewer(c: Consent, program: Program, viewer: Principal) -> bool:
    """A consent held by the Part 2 program that lets the viewer know of its involvement."""
    return (c.record_agency == program.name and in_force(c) and "PART2" in c.categories and set(c.categories) <= KNOWN
            and (viewer.agency in c.recipients or viewer.role.value in c.recipients)
            and any(p in c.purposes for p in viewer.purposes))


def next_state(state: tuple, event: str, side: str, outcome: str | None) -> tuple | None:
    """The (status, business status, outcome) after the step, or None where the lifecycle refuses it."""
    status, business, _ = state
    sides, froms, to, step_business = TABLE[event]
    if side not in sides or status not in froms or (event == "complete") != (outcome is not None):
        return None
    if step_business and (business is None or PROGRESS.index(step_business) >= PROGRESS.index(business)):
        business = step_business
    return (to or status, business, outcome)


# ------------------------------------------------------------------------------------ the checkers

def check_travel(case, seen: Counter) -> list[str]:
    out = []
    for item in case["items"]:
        got = policy.travels(item, case["program"], case["basis"], case["consents"], NOW)
        want = may_travel(item, case["program"], case["basis"], case["consents"])
        seen[(item.legal_category.value, got)] += 1
        if got != want:
            out.append(f"travels({item.item_id}: {item.legal_category.value}/{item.category.value}, "
                       f"{case['program'].name}, {case['basis'].value}) is {got}, the rules say {want}")
    return out


def check_refer(case, seen: Counter) -> list[str]:
    refusal = policy.basis_refusal(case["referrer"], case["basis"], case["program"], case["consent"], NOW)
    want = may_refer(case["referrer"], case["basis"], case["program"], case["consent"])
    seen[(case["basis"].value, refusal is None)] += 1
    if (refusal is None) != want or (refusal is not None and not (isinstance(refusal, str) and refusal)):
        return [f"{case['referrer'].role.value} on {case['basis'].value}: refusal {refusal!r}, the rules allow {want}"]
    return []


def check_view(case, seen: Counter) -> list[str]:
    referral, viewer, program = case["referral"], case["viewer"], case["program"]
    view, out = policy.referrer_view(dict(referral), viewer, program, list(case["consents"]), NOW), []
    role, keys = viewer.role.value, set(view)
    hidden = program.part2 and not any(names_to_viewer(c, program, viewer) for c in case["consents"])
    seen[(program.part2, hidden, role in LAW_ENFORCEMENT)] += 1
    if not keys <= (set(referral) & REFERRER_MAY_SEE) | {"program"}:
        out.append(f"keys outside the whitelist or the referral: {sorted(keys - (set(referral) & REFERRER_MAY_SEE))}")
    out += [f"{k} altered: {view[k]!r}" for k in keys - {"program", "status"} if view[k] != referral.get(k)]
    if role in LAW_ENFORCEMENT or hidden:
        if keys & LAW_ENFORCEMENT_NEVER:
            out.append(f"{role} (hidden={hidden}) sees {sorted(keys & LAW_ENFORCEMENT_NEVER)}")
        if view.get("status") != COARSE[referral["status"]]:
            out.append(f"{role} (hidden={hidden}) sees status {view.get('status')!r} of {referral['status']!r}")
        if role in LAW_ENFORCEMENT and referral.get("referrer_role") not in LAW_ENFORCEMENT and keys & CLINICIANS_WORDS:
            out.append(f"{role} sees {sorted(keys & CLINICIANS_WORDS)} of a {referral.get('referrer_role')}'s referral")
    else:
        for key in ("status", "outcome", "business_status"):
            if key in referral and view.get(key, "<missing>") != referral[key]:
                out.append(f"clinical {role} sees {key} {view.get(key, '<missing>')!r}, not {referral[key]!r}")
    if hidden:
        text = json.dumps(view)
        out += [f"a Part 2 program no consent names is disclosed: {secret!r} in the view"
                for secret in (program.name, program.kind.value, referral.get("reason")) if secret and secret in text]
        if view.get("program") != {"name": GENERIC, "public_line": program.public_line}:
            out.append(f"hidden program shown as {view.get('program')!r}")
    elif (view.get("program") or {}).get("name") != program.name:
        out.append(f"a program the viewer may know is withheld: {view.get('program')!r}")
    return out


def check_lifecycle(steps, seen: Counter) -> list[str]:
    state, mine, out = lifecycle.State(TaskStatus.requested), ("requested", None, None), []
    for event, side, outcome in steps:
        want = next_state(mine, event.value, side.value, outcome.value if outcome else None)
        try:
            after = lifecycle.apply(state, event, side, outcome)
        except Refused:
            after = None
        got = None if after is None else (after.status.value, after.business_status and after.business_status.value,
                                          after.outcome and after.outcome.value)
        seen[got[0] if got else "refused"] += 1
        if mine[0] in CLOSED and got is not None:
            out.append(f"closed {mine[0]} changed by {side.value} {event.value} to {got}")
        if got != want:
            out.append(f"{mine} + {side.value} {event.value} ({outcome}): {got}, the table says {want}")
            break
        if after is not None:
            state, mine = after, got
    return out


# ---------------------------------------------------------------------------------------- tests

def _holds(checker, cases) -> Counter:
    seen: Counter = Counter()

    @settings(max_examples=FAST_CASES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cases)
    def run(case):
        note(repr(case))
        violations = checker(case, seen)
        assert not violations, violations

    run()
    return seen         # what the sample reached: a checker that never sees a case checks nothing


def test_only_what_the_rules_allow_travels_to_a_program_and_never_part2_without_its_consent():
    seen = _holds(check_travel, TRAVEL_CASES)
    for legal in ("PART2", "PHI", "VOLUNTARY_REGISTRY"):       # the sample reaches both answers
        assert seen[(legal, True)] and seen[(legal, False)], seen
    assert not seen[("CJI", True)]


def test_only_responders_refer_and_only_on_a_basis_their_role_or_a_consent_gives():
    seen = _holds(check_refer, REFER_CASES)
    for basis in ("agreement", "consent", "treatment"):
        assert seen[(basis, True)] and seen[(basis, False)], seen


def test_a_referrer_sees_only_its_roles_fields_and_an_unconsented_part2_program_stays_unnamed():
    seen = _holds(check_view, VIEW_CASES)
    for hidden, police in ((True, True), (True, False), (False, True), (False, False)):
        assert seen[(True, hidden, police)], seen                # part2 programs both named and not, to both kinds


def test_a_referral_moves_only_as_the_transition_table_says_and_a_closed_one_never_again():
    seen = _holds(check_lifecycle, LIFECYCLE_CASES)
    assert all(seen[s] for s in ("accepted", "in-progress", "completed", "failed", "rejected", "cancelled")), seen


# ------------------------------------------------------------------ the checker must be able to fail

def _put(name, value):
    """A fault: a policy module's global replaced, or a lifecycle step (`name` an Event) rewritten."""
    return lambda mp: (mp.setitem(lifecycle.STEPS, name, value) if isinstance(name, Event)
                       else mp.setattr(policy, name, value))


_travels, _lapsed = policy.travels, (lambda c, now: c.valid_from <= now)
TRAVEL, REFER, VIEW = (check_travel, TRAVEL_CASES), (check_refer, REFER_CASES), (check_view, VIEW_CASES)
FAULTS = {    # name: (how the fault is put in, the checker that must report it, its cases)
    "part2_under_any_consent": (_put("covering_consent", lambda cs, *a: next(iter(cs), None)), *TRAVEL),
    "agreement_sends_part2": (_put("travels", lambda item, program, basis, *a: _travels(item, program, basis, *a) or (
        basis == Basis.agreement and item.legal_category == LegalCategory.PART2 and item.status == Status.active)),
        *TRAVEL),
    "revoked_consent_refers": (_put("is_active", _lapsed), *REFER),
    "treatment_from_police": (_put("CLINICAL", RESPONDERS), *REFER),
    "revoked_consent_names": (_put("is_active", _lapsed), *VIEW),
    "typo_names_the_program": (_put("CONSENT_CATEGORIES", KNOWN | frozenset(TYPOS)), *VIEW),
    "police_see_the_outcome": (_put("LAW_ENFORCEMENT_FIELDS", policy.LAW_ENFORCEMENT_FIELDS + ("outcome",)), *VIEW),
    "police_read_a_clinicians_note": (_put("CLINICAL_AUTHORS_FIELDS", ()), *VIEW),
    "hidden_program_keeps_its_reason": (_put("HIDDEN_PROGRAM_FIELDS", policy.HIDDEN_PROGRAM_FIELDS + ("reason",)),
                                        *VIEW),
    "referrer_accepts": (_put(Event.accept, Step(frozenset(Side), frozenset({TaskStatus.requested}),
                                                 TaskStatus.accepted)), check_lifecycle, LIFECYCLE_CASES),
    "rejected_reopens": (_put(Event.accept, Step(frozenset({Side.program}), frozenset(
        {TaskStatus.requested, TaskStatus.rejected}), TaskStatus.accepted)), check_lifecycle, LIFECYCLE_CASES),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_checker_reports_each_fault_when_it_is_put_in(monkeypatch, fault):
    put_in, checker, cases = FAULTS[fault]
    put_in(monkeypatch)
    # `find` raises NoSuchExample (the test fails) when no case of the sample is reported
    find(cases, lambda case: bool(checker(case, Counter())), settings=settings(
        max_examples=FAST_CASES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow],
        phases=[Phase.generate]))
