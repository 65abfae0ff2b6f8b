"""Black-box attacks on the referral endpoints (issue 19) over HTTP, with ordinary keys, against `briefing serve`.

The suite is three modules over the world of tests/adversarial/referral_world.py (one real server per module):
this one (invariants 1-3, in the API, FHIR, briefings and the inbox pages), test_referral_lifecycle_attacks.py
(invariant 4) and test_referral_input_attacks.py (invariant 5). The attacker holds the keys of `KEYS`: law
enforcement (an officer and a dispatcher of METRO_PD, an officer of NORTH_PD), clinical responders (a co-responder embedded at METRO_PD, one of COUNTY_BH, an
EMS crew), the provider keys of three programs (HARBOR_SUD, a 42 CFR Part 2 post-overdose program; MOBILE_CRISIS,
not Part 2; RECOVERY_OUTREACH, a post-overdose team that is not Part 2), and a steward, admin, auditor and feed.

The cases are generated (Hypothesis, derandomised, or an exhaustive product), and every expectation comes from
the oracle written in these files from issue 19 and the lifecycle table, never from `scoring/`:

1. No clinical content of a referral or its outcome (program notes, outcome, a business status, an exact status
   beyond requested/accepted/closed, travelling items, the program identity of a Part 2 program) reaches a
   law-enforcement role through `GET /v1/referrals[/<id>]`, `POST .../events` answers, FHIR reads or a
   briefing's `engagement`.
2. A Part 2 program's involvement (name, kind, "overdose", "substance") is never visible to a referrer of any
   role without a consent, held by the program, in force, listing PART2, that names the viewer.
3. A program (or another agency) never reads or steps a referral that is not its own: the answer is the one
   for a nonexistent id, status and body (also on the program inbox pages).
4. Each lifecycle step is accepted only from the side that owns it, from the statuses the table allows; every
   refused step leaves the referral exactly as it was; steps sent at once through both workers serialise.
5. Bad ids, bodies and query strings answer 400/404/405/422 (never 500), no error carries a stack trace, and the
   server logs no unhandled error.

Written before the fixes of the four holes it found: a refusal that named the exact status to a coarse viewer, a
clinician's referral readable by its agency's officers, a post-overdose team named to law enforcement without a
consent, referral ids in non-ASCII digits.
"""


from __future__ import annotations

import http.cookiejar
import itertools
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.adversarial.referral_world import (AGENCY_KEYS, CRISIS, EVENTS, FAST, FORBIDDEN_WORDS, GENERIC, KEYS,
                                              LAW_MAY_SEE, MISSING_ID, NON_READERS, NOT_YOURS, OUTCOMES, OUTREACH,
                                              PROGRAMS, PROVIDER_OF, Person, REASONS, RESPONDER_KEYS, STARTS,
                                              STATUSES, SUD, TRACEBACK, VARIANTS, _person, assert_like_missing,
                                              brief, check_referrer_view, fhir, listing, now, read, refer,
                                              served_world, snapshot, step, text_of, whole)
from tests.adversarial.vocabulary import CLINICAL, LAW_ENFORCEMENT, WORKING


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    yield from served_world(tmp_path_factory, "referral-views")


def test_the_answers_for_a_nonexistent_referral_are_the_refusals_issue_19_names(world):
    for key, (role, _, _) in KEYS.items():
        if role in LAW_ENFORCEMENT:
            expected = {"get": 404, "step": 404, "Task": 403, "ServiceRequest": 403}
        elif role in CLINICAL or role == "provider":
            expected = dict.fromkeys(("get", "step", "Task", "ServiceRequest"), 404)
        else:
            expected = dict.fromkeys(("get", "step", "Task", "ServiceRequest"), 403)
        for channel, status in expected.items():
            got, body = world.missing[key, channel]
            assert got == status, (key, channel, got, body)
            if channel in ("get", "step") and status == 404:
                assert body == NOT_YOURS
            if channel in ("Task", "ServiceRequest"):
                OperationOutcome.model_validate(body)


# ----------------------------------------------------------------------------------------------------------------
# Invariants 1, 2 and 3: what each side sees of a referral, across generated referrals and lifecycles
# ----------------------------------------------------------------------------------------------------------------

#: Lifecycle paths after creation: (side, event); `complete` takes the case's outcome.
PATHS = {
    "requested": (),
    "accepted": (("program", "accept"),),
    "identity": (("program", "accept"), ("program", "confirm_identity")),
    "contacted": (("program", "accept"), ("program", "contact_attempted")),
    "engaged": (("program", "accept"), ("program", "contact_attempted"), ("program", "engaged")),
    "completed": (("program", "accept"), ("program", "engaged"), ("program", "complete")),
    "failed": (("program", "accept"), ("program", "contact_attempted"), ("program", "fail")),
    "rejected": (("program", "reject"),),
    "cancelled": (("referrer", "cancel"),),
    "declined_by_program": (("program", "accept"), ("program", "person_declined")),
    "declined_by_referrer": (("program", "accept"), ("program", "engaged"), ("referrer", "person_declined")),
    "cancelled_in_progress": (("program", "accept"), ("program", "contact_attempted"), ("referrer", "cancel")),
}


@dataclass(frozen=True)
class Case:
    referrer: str
    variant: str
    program: str
    basis: str
    reason: str
    urgency: str
    path: str
    outcome: str
    referrer_note: bool
    contact: bool
    stepper: str                  # which key of the referring agency takes the referrer's steps


@st.composite
def cases(draw) -> Case:
    referrer = draw(st.sampled_from(("officer", "dispatcher", "co", "ems")))
    agency = KEYS[referrer][1]
    bases = ["agreement", "consent"] + (["treatment"] if KEYS[referrer][0] in CLINICAL else [])
    return Case(referrer, draw(st.sampled_from(tuple(VARIANTS))), draw(st.sampled_from((SUD, SUD, CRISIS))),
                draw(st.sampled_from(bases)), draw(st.sampled_from(REASONS)),
                draw(st.sampled_from(("warm_handoff", "follow_up"))), draw(st.sampled_from(tuple(PATHS))),
                draw(st.sampled_from(OUTCOMES)), draw(st.booleans()), draw(st.booleans()),
                draw(st.sampled_from([k for k in AGENCY_KEYS[agency] if KEYS[k][0] in LAW_ENFORCEMENT | CLINICAL])))


def check_fhir(world, viewer: str, referral_id: int, truth: dict, named: bool, canaries: list[str]) -> None:
    role = KEYS[viewer][0]
    for resource in ("Task", "ServiceRequest"):
        answer = fhir(world, viewer, resource, referral_id)
        if role in LAW_ENFORCEMENT or (truth["program"]["name"] == SUD and not named):
            assert_like_missing(world, viewer, resource, answer)
            continue
        status, body = answer
        assert status == 200, (viewer, resource, body)
        shown = text_of(body)
        assert not [c for c in canaries if c in shown], (viewer, resource, shown)
        if resource == "Task":
            Task.model_validate(body)
            assert body["status"] == truth["status"] and body["focus"] == {"reference": f"ServiceRequest/{referral_id}"}
            assert body["owner"] == {"display": truth["program"]["name"]}
            assert body.get("businessStatus", {}).get("text") == truth["business_status"]
        else:
            ServiceRequest.model_validate(body)
            assert body["performer"] == [{"display": truth["program"]["name"]}]


def check_outsiders(world, referral_id: int, program: str, referrer_agency: str, event: str) -> None:
    """Invariant 3: every program but the referral's, and every responder of another agency, gets the answer for a
    nonexistent id to a read, a step and a FHIR read; the non-reading roles get their role refusal."""
    others = [PROVIDER_OF[p] for p in PROGRAMS if p != program]
    strangers = [k for k in RESPONDER_KEYS if KEYS[k][1] != referrer_agency]
    for key in others + strangers + list(NON_READERS):
        assert_like_missing(world, key, "get", read(world, key, referral_id))
        assert_like_missing(world, key, "step", step(world, key, referral_id, event))
    for key in others[:1] + strangers[:1]:
        assert_like_missing(world, key, "Task", fhir(world, key, "Task", referral_id))


@settings(max_examples=50, **FAST)
@given(case=cases())
def test_generated_referrals_show_each_side_only_what_it_may_see(world, case: Case):
    exercise(world, case)


def test_every_consent_situation_and_referring_agency_hides_or_names_the_part2_program_as_the_oracle_says(world):
    """Exhaustive product: each consent situation x each referring agency, to the Part 2 program, the other
    parameters cycling (paths, bases, reasons, urgencies)."""
    paths, reasons = itertools.cycle(PATHS), itertools.cycle(REASONS)
    outcomes, urgencies = itertools.cycle(OUTCOMES), itertools.cycle(("warm_handoff", "follow_up"))
    count = 0
    for variant, referrer in itertools.product(VARIANTS, ("officer", "dispatcher", "co", "ems")):
        bases = ("agreement", "consent", "treatment") if KEYS[referrer][0] in CLINICAL else ("agreement", "consent")
        basis = bases[count % len(bases)]
        exercise(world, Case(referrer, variant, SUD, basis, next(reasons), next(urgencies), next(paths),
                             next(outcomes), count % 2 == 0, count % 3 == 0,
                             AGENCY_KEYS[KEYS[referrer][1]][count % len(AGENCY_KEYS[KEYS[referrer][1]])]))
        count += 1
    assert count == len(VARIANTS) * 4


def exercise(world, case: Case) -> None:
    """Make the referral `case` describes, walk its path, and check every side's view of it (invariants 1-3)."""
    person = world.persons[case.variant]
    tag = uuid.uuid4().hex[:8]
    referrer_note = f"REFNOTE-{tag} please call after noon" if case.referrer_note else None
    contact = ({"name": f"CONTACTNAME-{tag}", "phone": "614-555-0000", "where": "by the library"}
               if case.contact else None)
    _, created = refer(world, case.referrer, person, case.program, case.reason, case.urgency, case.basis,
                       note=referrer_note, contact=contact)
    referral_id = created["referral"]["id"]
    agency = KEYS[case.referrer][1]
    viewers = AGENCY_KEYS[agency]
    grant = VARIANTS[case.variant]
    named = {v: grant is not None and grant.names(v) for v in viewers}
    canaries = [f"ITEMCANARY-{case.variant}"]                 # every item the person has, travelling or not
    at_creation = whole(world, referral_id, case.program)
    check_referrer_view(world, case.referrer, created["referral"], at_creation, named[case.referrer], canaries)
    stepped = []                                              # the answers to the referrer's own steps
    for number, (side, event) in enumerate(PATHS[case.path]):
        key = PROVIDER_OF[case.program] if side == "program" else case.stepper
        if side == "program":
            note = f"PROGNOTE-{tag}-{number} disclosed relapse, overdose history"
            canaries.append(f"PROGNOTE-{tag}-{number}")
        else:
            note = f"REFSTEP-{tag}-{number}"
        status, answer = step(world, key, referral_id, event, case.outcome if event == "complete" else None, note)
        assert status == 200, (case, event, answer)
        if side == "referrer":
            stepped.append((key, answer["referral"]))
    truth = whole(world, referral_id, case.program)
    assert truth["referrer_agency"] == agency and len(truth["events"]) == 1 + len(PATHS[case.path])
    travelled = {i["text"] for i in truth["items"]}
    assert f"ITEMCANARY-{case.variant}-VR" in travelled          # registry items always go with a referral
    assert f"ITEMCANARY-{case.variant}-P2" not in travelled      # Part 2: no consent names the program for it
    if "complete" in [e for _, e in PATHS[case.path]]:
        assert truth["outcome"] == case.outcome
    for key, answer in stepped:                               # the referrer's step was the last: the truth holds
        check_referrer_view(world, key, answer, truth, named[key], canaries)
    for viewer in viewers:
        status, answer = read(world, viewer, referral_id)
        assert status == 200, answer
        check_referrer_view(world, viewer, answer["referral"], truth, named[viewer], canaries)
        status, listed = listing(world, viewer, since=truth["created_at"])
        assert status == 200 and answer["referral"] in listed["referrals"], (viewer, listed)
        check_fhir(world, viewer, referral_id, truth, named[viewer], canaries)
    check_outsiders(world, referral_id, case.program, agency, PATHS[case.path][-1][1] if PATHS[case.path] else "accept")
    assert whole(world, referral_id, case.program)["events"] == truth["events"], "an outsider stepped it"


def test_every_status_filter_of_every_reader_agrees_with_its_own_views(world):
    """`GET /v1/referrals?status=` filters on the status the caller sees: a law-enforcement role never finds a
    referral by an exact status (in-progress, completed, …), and nobody finds another side's referral."""
    statuses = STATUSES + ("closed",)
    readers = [k for k in KEYS if k not in NON_READERS]
    seen_by = {}
    for key in readers:
        status, everything = listing(world, key)
        assert status == 200
        seen_by[key] = {r["id"]: r for r in everything["referrals"]}
        for r in everything["referrals"]:
            if KEYS[key][0] == "provider":
                assert r["program"]["name"] == KEYS[key][1]
            else:
                assert r["referrer_agency"] == KEYS[key][1]
            if KEYS[key][0] in LAW_ENFORCEMENT:
                assert r["status"] in ("requested", "accepted", "closed") and set(r) <= LAW_MAY_SEE, r
        for wanted in statuses:
            status, some = listing(world, key, status=wanted)
            assert status == 200
            assert {r["id"] for r in some["referrals"]} == {i for i, r in seen_by[key].items()
                                                            if r["status"] == wanted}, (key, wanted)
    for key in readers:                       # no two sides' lists overlap except a program's and the referrer's
        for other in readers:
            if KEYS[key][1] != KEYS[other][1] and "provider" not in (KEYS[key][0], KEYS[other][0]):
                assert not set(seen_by[key]) & set(seen_by[other]), (key, other)
    for p in PROGRAMS:
        for q in PROGRAMS:
            if p != q:
                assert not set(seen_by[PROVIDER_OF[p]]) & set(seen_by[PROVIDER_OF[q]])


# ----------------------------------------------------------------------------------------------------------------
# Invariants 1 and 2 through a briefing's `engagement`
# ----------------------------------------------------------------------------------------------------------------

def _engaged(world) -> dict[str, set[str]]:
    """person reference -> the programs with a referral or task about them accepted or in progress (their lists)."""
    engaged: dict[str, set[str]] = {}
    for program, key in PROVIDER_OF.items():
        status, answer = listing(world, key)
        assert status == 200 and answer["count"] < 200, "the list was cut at its limit: the oracle would miss some"
        for r in answer["referrals"]:
            if r["status"] in WORKING:
                engaged.setdefault(r["person"], set()).add(program)
    return engaged


def check_engagement(world, viewer: str, person: Person, engaged: set[str], answer: dict) -> None:
    notices = answer["engagement"]
    where = f"{viewer} briefed about {person.tag} (engaged: {sorted(engaged)}): {notices}"
    for notice in notices:
        assert set(notice) <= {"message", "public_line", "program"}, where
        assert notice["message"].startswith(GENERIC[0].upper() + GENERIC[1:]), where
    expected_lines = sorted({PROGRAMS[p][2] for p in engaged})
    assert sorted({n["public_line"] for n in notices}) == expected_lines, where
    shown = text_of(notices).lower()
    for word in ("reason", "outcome", "prognote", "itemcanary", "refnote"):
        assert word not in shown, where
    sud_named = SUD in engaged and person.grant is not None and person.grant.names(viewer)
    if not sud_named:
        assert not [w for w in FORBIDDEN_WORDS if w in shown], where
    names = {n.get("program") for n in notices} - {None}
    assert names <= ({CRISIS} & engaged) | ({SUD} if sud_named else set()), where


def test_a_briefing_tells_every_responder_only_that_a_team_is_engaged_and_names_a_part2_program_only_under_consent(
        world):
    """For every consent situation (product): the Part 2 program engaged, or the crisis team, or both, or neither;
    then every responder role (the referring agency's and another's) is briefed about the person."""
    plans = itertools.cycle([("accepted", "requested"), ("engaged", "accepted"), ("accepted", "accepted"),
                             ("completed", "engaged"), ("requested", "completed")])
    for variant, (sud_path, crisis_path) in zip(VARIANTS, plans):
        person = world.persons[variant]
        for program, path in ((SUD, sud_path), (CRISIS, crisis_path)):
            _, created = refer(world, "officer", person, program, note=f"engagement set-up {path}")
            for side, event in PATHS[path]:
                assert step(world, PROVIDER_OF[program], created["referral"]["id"], event,
                            "other" if event == "complete" else None, "PROGNOTE engagement")[0] == 200
    engaged = _engaged(world)
    for variant in VARIANTS:
        person = world.persons[variant]
        for viewer in RESPONDER_KEYS:
            check_engagement(world, viewer, person, engaged.get(person.reference, set()), brief(world, viewer, person))


def test_a_post_overdose_team_that_is_not_part2_is_not_named_to_law_enforcement_without_consent(world):
    person = _person(world, "outreach")
    _, created = refer(world, "officer", person, OUTREACH, reason="post_overdose_outreach")
    assert step(world, "outreach", created["referral"]["id"], "accept")[0] == 200
    for viewer in ("officer", "dispatcher", "north"):
        notices = brief(world, viewer, person)["engagement"]
        assert notices and all("program" not in n for n in notices), (viewer, notices)


# ----------------------------------------------------------------------------------------------------------------
# Follow-up tasks: only their program sees them; the briefing names no Part 2 team
# ----------------------------------------------------------------------------------------------------------------

def _task_of(world, program: str, person: Person, call_type: str) -> dict:
    status, answer = listing(world, PROVIDER_OF[program], since=(now() - timedelta(minutes=2)).isoformat())
    tasks = [r for r in answer["referrals"] if r["person"] == person.reference and r["opened_by"].startswith("rule:")
             and r["call_type"] == call_type]
    assert len(tasks) == 1, (program, call_type, [t["id"] for t in tasks])
    return tasks[0]


@pytest.mark.parametrize("call_type,program,briefer", [("overdose", SUD, "officer"), ("overdose", SUD, "ems"),
                                                        ("mental_health_crisis", CRISIS, "dispatcher"),
                                                        ("suicidal_person", CRISIS, "co")])
def test_a_follow_up_task_is_seen_and_stepped_only_by_its_program(world, call_type, program, briefer):
    person = _person(world, f"followup-{call_type}-{briefer}", agencies=(KEYS[briefer][1],), plant=False)
    brief(world, briefer, person, call_type)
    task = _task_of(world, program, person, call_type)
    assert task["grade"] and task["basis"] == "follow_up_rule"
    readers = [k for k in KEYS if k not in NON_READERS and k != PROVIDER_OF[program]]
    for key in readers:                              # the briefer's own agency included: a rule's task has no referrer
        assert_like_missing(world, key, "get", read(world, key, task["id"]))
        for event in EVENTS:
            assert_like_missing(world, key, "step", step(world, key, task["id"], event,
                                                          "other" if event == "complete" else None))
        if KEYS[key][0] not in LAW_ENFORCEMENT:
            assert_like_missing(world, key, "Task", fhir(world, key, "Task", task["id"]))
        status, listed = listing(world, key)
        assert task["id"] not in [r["id"] for r in listed["referrals"]]
    assert whole(world, task["id"], program)["events"] == task["events"], "an outsider stepped the task"
    assert step(world, PROVIDER_OF[program], task["id"], "accept")[0] == 200
    for viewer in RESPONDER_KEYS:
        notices = brief(world, viewer, person)["engagement"]
        assert [n["public_line"] for n in notices] == [PROGRAMS[program][2]], (viewer, notices)
        shown = text_of(notices).lower()
        if program == SUD:
            assert all("program" not in n for n in notices), (viewer, notices)
            assert not [w for w in FORBIDDEN_WORDS if w in shown], (viewer, notices)
        assert "post_overdose" not in shown and "follow" not in shown and "rule" not in shown, (viewer, notices)



# ----------------------------------------------------------------------------------------------------------------
# Invariant 3 in the browser: the program inbox pages
# ----------------------------------------------------------------------------------------------------------------

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""

    def go(self, method: str, path: str, form: dict | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode({**form, "csrf_token": self.token}).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with self.opener.open(request, timeout=30) as response:
                text = response.read().decode()
                status = response.status
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        assert not TRACEBACK.search(text), (method, path, text[:1000])
        found = TOKEN.search(text)
        self.token = found.group(1) if found else self.token
        return status, text

    def sign_in(self, key: str) -> None:
        self.go("GET", "/review/login")
        status, text = self.go("POST", "/review/login", {"key": key})
        assert status == 200 and "inbox" in text.lower(), text[:300]


def test_another_programs_referral_is_no_such_referral_on_the_inbox_pages(world):
    person = _person(world, "inbox", agencies=("METRO_PD",), plant=False)
    theirs = {}
    for start in ("requested", "accepted", "engaged", "completed"):
        _, created = refer(world, "officer", person, CRISIS, note=f"INBOXNOTE-{start}")
        for _, event, outcome in STARTS[start]:
            assert step(world, "crisis", created["referral"]["id"], event, outcome)[0] == 200
        theirs[start] = created["referral"]["id"]
    browser = Browser(world.base)
    browser.sign_in(world.keys["sud"])
    _, inbox = browser.go("GET", "/review/inbox")
    missing_page = browser.go("GET", f"/review/inbox/{MISSING_ID}")
    assert missing_page[0] == 404
    for start, referral_id in theirs.items():
        assert f"referral-link-{referral_id}\"" not in inbox and "INBOXNOTE" not in inbox
        status, page = browser.go("GET", f"/review/inbox/{referral_id}")
        assert (status, page.replace(str(referral_id), "N")) == \
               (missing_page[0], missing_page[1].replace(str(MISSING_ID), "N")), (start, page[:400])
        before = whole(world, referral_id, CRISIS)
        for event in ("accept", "reject", "engaged", "complete", "person_declined"):
            form = {"event": event, "note": "why not", **({"outcome": "other"} if event == "complete" else {})}
            status, page = browser.go("POST", f"/review/inbox/{referral_id}/step", form)
            missing_status, missing = browser.go("POST", f"/review/inbox/{MISSING_ID}/step", form)
            assert (status, page.replace(str(referral_id), "N")) == \
                   (missing_status, missing.replace(str(MISSING_ID), "N")) and status == 404, (start, event, page[:400])
            assert "INBOXNOTE" not in page and CRISIS not in page, (start, event, page[:400])
        assert snapshot(whole(world, referral_id, CRISIS)) == snapshot(before)


