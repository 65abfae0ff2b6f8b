"""Referral access policy: who may refer, what travels to the program, and what each side sees afterwards.

Default deny, like scoring/policy.py, and written as whitelists so a field added to a referral is shown to
no one until a rule names it.

- **Who may refer, on what basis.** A responder role, for a program that exists. `treatment` (HIPAA 45 CFR
  164.506(c)) only from a clinical role (co-responder, EMS); `consent` only with a consent of the person,
  in force now, that names the program (its agency or the `provider` role) and the purpose TREATMENT;
  `agreement` (the person agreed at the scene) from any responder, with a note of who witnessed it.
- **What travels (minimum necessary).** Only the categories a program acts on (`TRAVELLING_CATEGORIES`:
  how to communicate, triggers, what worked, service and housing context, medical and developmental needs;
  never safety flags, legal status or recent events), only active items not expired, and by legal category:
  voluntary-registry and agency-operational items; never CJI (a program is not a criminal-justice agency);
  PHI under `treatment` or `agreement`, or a consent covering PHI to the program; Part 2 only under a consent
  that lists PART2 and names the program (42 CFR 2.31: an agreement at the scene is never enough).
  Re-judged at every read, so a retraction or a revoked consent stops an item travelling from then on.
- **What the referring side sees.** The program's providers see the whole referral. The referring agency's
  responders see what they sent and where it stands: clinical roles the FHIR status, business status and
  outcome; law-enforcement roles only requested, accepted or closed (`coarse_status`), never an outcome,
  a contact or a note. Where the program is a Part 2 program and no consent of the person, held by the
  program, names the viewer and lists PART2 (`names_program`), every referrer sees only "a county
  co-responder team" and its public line, with the coarse status and no reason: that the person is in
  touch with a substance-use program is itself what 42 CFR Part 2 protects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from scoring.consent import covering_consent, is_active
from scoring.item import (CLINICAL, CONSENT_CATEGORIES, LAW_ENFORCEMENT, RESPONDERS, Category, Consent, ContextItem,
                          LegalCategory, Principal, Purpose, Role, Status)
from scoring.referral import Basis, ProgramKind, coarse_status, TaskStatus

TRAVELLING_CATEGORIES = frozenset({
    Category.communication_need, Category.sensory_need, Category.trauma_trigger, Category.effective_approach,
    Category.ineffective_approach, Category.cognitive_developmental, Category.medical, Category.service_connection,
    Category.housing_context})
GENERIC_PROGRAM = "a county co-responder team"
#: Kinds of program whose involvement alone tells a law-enforcement role something clinical (an overdose).
TOLD_POLICE_ONLY_BY_CONSENT = frozenset({ProgramKind.post_overdose})

#: What each viewer may see of a referral (the keys of the service's full referral dict).
REFERRER_FIELDS = ("id", "status", "business_status", "outcome", "reason", "urgency", "due_by", "basis", "created_at",
                   "updated_at", "referrer_agency", "incident_id", "person", "grade", "contact", "note", "program")
LAW_ENFORCEMENT_FIELDS = ("id", "status", "reason", "urgency", "due_by", "basis", "created_at", "referrer_agency",
                          "incident_id", "person", "contact", "note", "program")
HIDDEN_PROGRAM_FIELDS = ("id", "status", "urgency", "due_by", "created_at", "referrer_agency", "incident_id", "person",
                         "contact", "note", "program")
#: What a clinician wrote when referring (why, on what basis, whom to contact, the note): never shown to a
#: law-enforcement role of the same agency, who sees that clinician's referral only as it stands.
CLINICAL_AUTHORS_FIELDS = ("reason", "basis", "contact", "note")
LAW_ENFORCEMENT_ROLE_NAMES = frozenset(r.value for r in LAW_ENFORCEMENT)


@dataclass(frozen=True)
class Program:
    """A receiving program: an agency whose `provider` keys work its referrals."""

    name: str                    # its agency, as its keys carry it
    kind: ProgramKind
    part2: bool                  # a 42 CFR Part 2 program (its involvement is itself protected)
    public_line: str             # the line responders are given to reach it (or the county team that fronts it)

    def principal(self) -> Principal:
        """The program as a recipient of disclosures: a consent may name its agency or the `provider` role."""
        return Principal(name=self.name, role=Role.provider, agency=self.name, purposes=(Purpose.TREATMENT,))


def basis_refusal(referrer: Principal, basis: Basis, program: Program, consent: Consent | None,
                  now: datetime) -> str | None:
    """Why `referrer` may not refer to `program` on `basis` (the request field's message), or None when it may."""
    if referrer.role not in RESPONDERS:
        return f"role {referrer.role.value} may not refer"
    if basis == Basis.follow_up_rule:
        return "basis 'follow_up_rule' is for the tasks follow-up rules open: use 'agreement', 'consent' or 'treatment'"
    if basis == Basis.treatment and referrer.role not in CLINICAL:
        return "basis 'treatment' (HIPAA 164.506) is a clinician's: use 'agreement' or 'consent'"
    if basis == Basis.consent and (consent is None or not names_recipient(consent, program.principal(), now)):
        return (f"no consent of this person in force names program {program.name} "
                "(or the provider role) for TREATMENT")
    return None


def names_recipient(consent: Consent, recipient: Principal, now: datetime) -> bool:
    """The consent is in force now and names the recipient (agency or role) for one of its purposes."""
    return (is_active(consent, now)
            and (recipient.agency in consent.recipients or recipient.role.value in consent.recipients)
            and any(p in consent.purposes for p in recipient.purposes))


def travels(item: ContextItem, program: Program, basis: Basis, consents: Iterable[Consent], now: datetime) -> bool:
    """Whether `item` goes with a referral to `program` on `basis` at `now` (see the module docstring)."""
    if item.status != Status.active or (item.expires_at is not None and item.expires_at <= now):
        return False
    if item.category not in TRAVELLING_CATEGORIES:
        return False
    legal = item.legal_category
    if legal in (LegalCategory.VOLUNTARY_REGISTRY, LegalCategory.AGENCY_OPERATIONAL):
        return True
    if legal == LegalCategory.PHI and basis in (Basis.treatment, Basis.agreement):
        return True
    if legal in (LegalCategory.PHI, LegalCategory.PART2):
        return covering_consent(consents, item, program.principal(), Purpose.TREATMENT, now) is not None
    return False


def names_program(consent: Consent, program: Program, viewer: Principal, now: datetime) -> bool:
    """A consent of the person, held by `program`, that lets `viewer` know of the program's involvement: in
    force, listing PART2 for a Part 2 program or PHI for another (and only known categories: an unreadable
    scope covers nothing), naming the viewer's agency or role and one of the viewer's purposes."""
    category = LegalCategory.PART2 if program.part2 else LegalCategory.PHI
    return (consent.record_agency == program.name
            and category.value in consent.categories
            and CONSENT_CATEGORIES.issuperset(consent.categories)
            and names_recipient(consent, viewer, now))


def engagement_notice(engaged: Iterable[Program], viewer: Principal, consents: Iterable[Consent],
                      now: datetime) -> list[dict]:
    """What a responder's briefing says of the programs working with the person (accepted or in progress): for
    each, only that a county co-responder team is engaged and its public line; its name too where the viewer may
    know it: not a Part 2 program, nor to a law-enforcement role a post-overdose team (`TOLD_POLICE_ONLY_BY_CONSENT`:
    its involvement tells of an overdose), unless a consent names the disclosure to the viewer. Never a reason, an
    outcome or a note."""
    consents = list(consents)
    notices = []
    for program in sorted(set(engaged), key=lambda p: p.name):
        private = program.part2 or (viewer.role in LAW_ENFORCEMENT and program.kind in TOLD_POLICE_ONLY_BY_CONSENT)
        named = not private or any(names_program(c, program, viewer, now) for c in consents)
        notice = {"message": f"{GENERIC_PROGRAM[0].upper()}{GENERIC_PROGRAM[1:]} is engaged with this person; "
                             f"reach it via {program.public_line}", "public_line": program.public_line}
        if named:
            notice["program"] = program.name
        if notice not in notices:
            notices.append(notice)
    return notices


def referrer_view(referral: dict, viewer: Principal, program: Program, consents: Iterable[Consent],
                  now: datetime) -> dict:
    """What a responder of the referring agency sees of `referral` (the service's full dict): a clinician sees
    what it sent and where it stands; a law-enforcement role the status only as requested, accepted or closed,
    and of a referral a clinician made (`referrer_role`) none of what the clinician wrote; of a Part 2 program
    no consent names to the viewer, only the generic team."""
    hidden = program.part2 and not any(names_program(c, program, viewer, now) for c in consents)
    if hidden:
        fields, shown_program = HIDDEN_PROGRAM_FIELDS, {"name": GENERIC_PROGRAM, "public_line": program.public_line}
    else:
        fields = LAW_ENFORCEMENT_FIELDS if viewer.role in LAW_ENFORCEMENT else REFERRER_FIELDS
        shown_program = {"name": program.name, "kind": program.kind.value, "public_line": program.public_line}
    if viewer.role in LAW_ENFORCEMENT and referral.get("referrer_role") not in LAW_ENFORCEMENT_ROLE_NAMES:
        fields = tuple(f for f in fields if f not in CLINICAL_AUTHORS_FIELDS)   # a clinician's (or unknown) referral
    view = {k: referral[k] for k in fields if k in referral}
    view["program"] = shown_program
    if hidden or viewer.role in LAW_ENFORCEMENT:
        view["status"] = coarse_status(TaskStatus(referral["status"]))
    return view
