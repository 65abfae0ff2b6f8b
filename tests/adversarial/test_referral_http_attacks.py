"""Black-box attacks on the referral endpoints (issue 19) over HTTP, with ordinary keys, against `briefing serve`.

One real server (gunicorn, tests/served.py `serving`) over a small synthetic county (tests/loaded_county.py) runs
for the whole module. The attacker holds the keys of `KEYS`: law enforcement (an officer and a dispatcher of
METRO_PD, an officer of NORTH_PD), clinical responders (a co-responder embedded at METRO_PD, one of COUNTY_BH, an
EMS crew), the provider keys of three programs (HARBOR_SUD, a 42 CFR Part 2 post-overdose program; MOBILE_CRISIS,
not Part 2; RECOVERY_OUTREACH, a post-overdose team that is not Part 2), and a steward, admin, auditor and feed.

The cases are generated (Hypothesis, derandomised, or an exhaustive product), and every expectation comes from
the oracle written in this file from issue 19 and the lifecycle table, never from `scoring/`:

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
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from sqlalchemy import insert, select

from api.service.keys import create_key
from api.service.referrals import register_program
from api.service.store import briefed_persons, clusters, consents, context_items, records
from scoring.item import Purpose, Role
from scoring.referral import ProgramKind
from scoring.referral_policy import Program
from tests.adversarial.vocabulary import CLINICAL, LAW_ENFORCEMENT
from tests.loaded_county import loaded_county, stored_subject
from tests.served import serving

# ----------------------------------------------------------------------------------------------------------------
# The world: programs, keys, and the oracle's vocabulary (written from issue 19, not imported from scoring/)
# ----------------------------------------------------------------------------------------------------------------

SUD, CRISIS, OUTREACH = "HARBOR_SUD", "MOBILE_CRISIS", "RECOVERY_OUTREACH"
PROGRAMS = {SUD: ("post_overdose", True, "555-0199"), CRISIS: ("mobile_crisis", False, "555-0101"),
            OUTREACH: ("post_overdose", False, "555-0177")}
PROVIDER_OF = {SUD: "sud", CRISIS: "crisis", OUTREACH: "outreach"}

#: name -> (role, agency, purposes)
KEYS = {
    "officer": ("officer", "METRO_PD", ("LAW", "EMERGENCY")),
    "dispatcher": ("dispatcher", "METRO_PD", ("EMERGENCY", "LAW")),
    "co_metro": ("co_responder", "METRO_PD", ("TREATMENT", "EMERGENCY")),     # a clinician embedded in the PD
    "co": ("co_responder", "COUNTY_BH", ("TREATMENT", "EMERGENCY")),
    "ems": ("ems", "COUNTY_EMS", ("EMERGENCY", "TREATMENT")),
    "north": ("officer", "NORTH_PD", ("LAW", "EMERGENCY")),
    "sud": ("provider", SUD, ()),
    "crisis": ("provider", CRISIS, ()),
    "outreach": ("provider", OUTREACH, ()),
    "steward": ("steward", "DATA_OFFICE", ()),
    "admin": ("admin", "DATA_OFFICE", ()),
    "auditor": ("auditor", "OVERSIGHT", ()),
    "feed": ("feed", "METRO_PD", ()),
}
RESPONDER_KEYS = tuple(k for k, (role, _, _) in KEYS.items() if role in LAW_ENFORCEMENT | CLINICAL)
NON_READERS = ("steward", "admin", "auditor", "feed")
BRIEF_PURPOSE = {"officer": "LAW", "dispatcher": "LAW", "north": "LAW", "co_metro": "TREATMENT", "co": "TREATMENT",
                 "ems": "TREATMENT"}
#: The referring agencies' keys (one of each agency briefs every person, so all of them may refer).
AGENCY_KEYS = {"METRO_PD": ("officer", "dispatcher", "co_metro"), "COUNTY_BH": ("co",), "COUNTY_EMS": ("ems",)}
BRIEFER = {"METRO_PD": "officer", "COUNTY_BH": "co", "COUNTY_EMS": "ems"}

GENERIC = "a county co-responder team"
NOT_YOURS = {"error": "not_found", "message": "no referral with this id is open to you"}
FORBIDDEN_WORDS = ("harbor", "overdose", "substance", "part 2", "part2", "sud")
STATUSES = ("requested", "accepted", "in-progress", "completed", "rejected", "cancelled", "failed")
WORKING, OPEN = ("accepted", "in-progress"), ("requested", "accepted", "in-progress")
COARSE = {"requested": "requested", "accepted": "accepted", "in-progress": "accepted", "completed": "closed",
          "rejected": "closed", "cancelled": "closed", "failed": "closed"}
OUTCOMES = ("engaged_in_services", "declined_services", "unable_to_contact", "transported", "other")
REASONS = ("crisis_stabilisation", "mental_health_follow_up", "post_overdose_outreach", "substance_use_treatment",
           "case_management", "peer_support", "housing_assistance")
#: The lifecycle, from issue 19 / the SDOHCC Task: event -> (sides, from statuses, to status (None: stays), business).
TABLE = {
    "accept": ({"program"}, ("requested",), "accepted", None),
    "reject": ({"program"}, ("requested",), "rejected", None),
    "confirm_identity": ({"program"}, WORKING, None, "identity_confirmed"),
    "contact_attempted": ({"program"}, WORKING, "in-progress", "contact_attempted"),
    "engaged": ({"program"}, WORKING, "in-progress", "engaged"),
    "complete": ({"program"}, WORKING, "completed", None),
    "fail": ({"program"}, WORKING, "failed", None),
    "cancel": ({"referrer"}, OPEN, "cancelled", None),
    "person_declined": ({"program", "referrer"}, OPEN, "cancelled", None),
}
EVENTS = tuple(TABLE)
#: The business statuses from the least to the furthest progress: the business status is the furthest reached.
PROGRESS = ("identity_confirmed", "contact_attempted", "engaged")
#: What a referring responder may ever see of a referral, and what a law-enforcement one may.
REFERRER_MAY_SEE = frozenset({"id", "status", "business_status", "outcome", "reason", "urgency", "due_by", "basis",
                              "created_at", "updated_at", "referrer_agency", "incident_id", "person", "grade",
                              "contact", "note", "program"})
LAW_MAY_SEE = frozenset({"id", "status", "reason", "urgency", "due_by", "basis", "created_at", "referrer_agency",
                         "incident_id", "person", "contact", "note", "program"})
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|sqlalchemy\.|sqlite3\.|psycopg")
MISSING_ID = 2_000_000_000                # below the routes' MAX_ID, never reached by this module's referrals
FAST = dict(deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck))


@dataclass(frozen=True)
class Grant:
    """A Part 2 consent planted on a person, as this file states its meaning."""
    holder: str                   # the agency of the record that holds it
    recipients: tuple[str, ...]
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    from_days: float = -100
    until_days: float | None = 300
    revoked_days: float | None = None

    def names(self, key: str) -> bool:
        """Whether it lets `key` know of HARBOR_SUD's involvement (issue 19: a consent naming that disclosure)."""
        role, agency, purposes = KEYS[key]
        return (self.holder == SUD and "PART2" in self.categories
                and set(self.categories) <= {"PART2", "PHI", "service_connection"}       # an unreadable scope: nothing
                and self.from_days <= 0 and (self.until_days is None or self.until_days > 0)
                and (self.revoked_days is None or self.revoked_days > 0)
                and (role in self.recipients or agency in self.recipients)
                and bool(set(self.purposes) & set(purposes)))


EVERYONE = ("METRO_PD", "COUNTY_BH", "COUNTY_EMS", "NORTH_PD", "officer", "dispatcher", "co_responder", "ems")
ALL_PURPOSES = ("EMERGENCY", "LAW", "TREATMENT", "THREAT")
#: One person per consent situation.
VARIANTS: dict[str, Grant | None] = {
    "none": None,
    "metro_law": Grant(SUD, ("METRO_PD",), ("LAW",), ("PART2",)),
    "clinical_roles": Grant(SUD, ("co_responder", "ems"), ("TREATMENT",), ("PART2",)),
    "officer_role": Grant(SUD, ("officer",), ("EMERGENCY",), ("PART2", "service_connection")),
    "no_part2": Grant(SUD, EVERYONE, ALL_PURPOSES, ("PHI",)),
    "revoked": Grant(SUD, EVERYONE, ALL_PURPOSES, ("PART2",), revoked_days=-1),
    "expired": Grant(SUD, EVERYONE, ALL_PURPOSES, ("PART2",), from_days=-300, until_days=-2),
    "future": Grant(SUD, EVERYONE, ALL_PURPOSES, ("PART2",), from_days=5),
    "held_elsewhere": Grant("COUNTY_BH", EVERYONE, ALL_PURPOSES, ("PART2",)),
    "typo": Grant(SUD, EVERYONE, ALL_PURPOSES, ("PART2", "medicl")),
    "wrong_purpose": Grant(SUD, ("METRO_PD", "COUNTY_BH", "COUNTY_EMS"), ("THREAT",), ("PART2",)),
    "north_only": Grant(SUD, ("NORTH_PD",), ("LAW",), ("PART2",)),
}


@dataclass
class Person:
    tag: str
    person_id: str
    reference: str                        # psn-… as the service shows it
    subject: dict
    incidents: dict[str, str] = field(default_factory=dict)      # agency -> an incident its briefing resolved
    grant: Grant | None = None


@dataclass
class World:
    base: str
    store: object
    keys: dict[str, str]
    log: object
    persons: dict[str, Person]            # VARIANTS' persons, plus "life", "fuzz", "followup-*", "outreach", "inbox"
    spare: list                           # unused persons' (record_id, person_id), for tests that need a fresh one
    missing: dict = field(default_factory=dict)   # (key, channel) -> the answer for a nonexistent id
    lives: dict = field(default_factory=dict)     # program -> Lifecycle (invariant 4's referrals)
    fuzz_referral: int | None = None


# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------

def raw(base: str, method: str, path: str, key: str | None = None, data: bytes | None = None,
        content_type: str = "application/json") -> tuple[int, str, str]:
    """(status, content type, text) of one request; HTTP errors are answers too."""
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def call(world: World, method: str, path: str, key: str | None, body=None) -> tuple[int, dict]:
    status, _, text = raw(world.base, method, path, world.keys[key] if key else None,
                          json.dumps(body).encode() if body is not None else None)
    assert not TRACEBACK.search(text), f"{method} {path} as {key}: a stack trace: {text[:500]}"
    return status, (json.loads(text) if text else {})


def read(world, key, referral_id):
    return call(world, "GET", f"/v1/referrals/{referral_id}", key)


def step(world, key, referral_id, event, outcome=None, note=None):
    body = {"event": event, **({"outcome": outcome} if outcome else {}), **({"note": note} if note else {})}
    return call(world, "POST", f"/v1/referrals/{referral_id}/events", key, body)


def listing(world, key, **query):
    return call(world, "GET", "/v1/referrals" + ("?" + urllib.parse.urlencode(query) if query else ""), key)


def fhir(world, key, resource, referral_id):
    return call(world, "GET", f"/fhir/{resource}/{referral_id}", key)


def whole(world, referral_id, program) -> dict:
    """The referral as its program sees it (the oracle's view of the truth)."""
    status, answer = read(world, PROVIDER_OF[program], referral_id)
    assert status == 200, answer
    return answer["referral"]


def now() -> datetime:
    return datetime.now(timezone.utc)


def briefing(world, key, subject: dict, call_type="welfare_check") -> tuple[int, dict, str]:
    """A briefing by `key` about `subject` on a new incident: (status, answer, incident id)."""
    incident = f"INC-{key}-{uuid.uuid4().hex[:10]}"
    status, answer = call(world, "POST", "/v1/briefings", key, {
        "incident": {"id": incident, "call_type": call_type, "received_at": (now() - timedelta(minutes=1)).isoformat()},
        "subject": subject, "purpose": BRIEF_PURPOSE[key]})
    return status, answer, incident


def brief(world, key, person: Person, call_type="welfare_check") -> dict:
    """A briefing by `key` about `person` on a new incident; the answer (it must resolve `person`)."""
    status, answer, incident = briefing(world, key, person.subject, call_type)
    assert status == 200, answer
    assert answer["resolution"]["status"] == "resolved", answer["resolution"]
    assert answer["resolution"]["candidates"][0]["person_id"] == person.reference, "resolved another person"
    answer["incident_id"] = incident
    return answer


def refer(world, key, person: Person, program, reason="crisis_stabilisation", urgency="warm_handoff",
          basis="agreement", note=None, contact=None, expect=201) -> tuple[int, dict]:
    agency = KEYS[key][1]
    body = {"incident_id": person.incidents[agency], "program": program, "reason": reason, "urgency": urgency,
            "basis": basis}
    if urgency == "follow_up":
        body["due_within_hours"] = 48
    if basis == "agreement":
        body["agreement_note"] = "witnessed by the unit: the person agreed to be contacted"
    if basis == "consent":
        body["consent_id"] = f"{person.tag}-provider-consent"
    if note:
        body["note"] = note
    if contact:
        body["contact"] = contact
    status, answer = call(world, "POST", "/v1/referrals", key, body)
    assert status == expect, (key, body, answer)
    return status, answer


def text_of(value) -> str:
    return json.dumps(value, sort_keys=True)


# ----------------------------------------------------------------------------------------------------------------
# The module's server
# ----------------------------------------------------------------------------------------------------------------

def _plant(store, person: Person) -> None:
    """Records of the person at HARBOR_SUD, COUNTY_BH and REGISTRY with canary items of every legal kind that
    travels, a consent letting `provider` keys receive PHI (basis `consent`), and the person's Part 2 grant."""
    t, stamp = person.tag, now().isoformat()
    day = lambda d: (now() + timedelta(days=d)).isoformat()     # noqa: E731
    with store.begin() as connection:
        for agency in (SUD, "COUNTY_BH", "REGISTRY"):
            connection.execute(insert(records).values(record_id=f"{t}-{agency}", agency=agency, given_name="X",
                                                      ingested_at=stamp))
            connection.execute(insert(clusters).values(record_id=f"{t}-{agency}", person_id=person.person_id))
        for suffix, agency, category, legal in (("VR", "REGISTRY", "communication_need", "VOLUNTARY_REGISTRY"),
                                                ("PHI", "COUNTY_BH", "medical", "PHI"),
                                                ("P2", SUD, "service_connection", "PART2")):
            connection.execute(insert(context_items).values(
                item_id=f"{t}-{suffix}", record_id=f"{t}-{agency}", category=category, code=f"CODE_{suffix}",
                text=f"ITEMCANARY-{t}-{suffix}", legal_category=legal, status="active", updated_at=stamp))
        connection.execute(insert(consents).values(
            consent_id=f"{t}-provider-consent", record_id=f"{t}-COUNTY_BH", recipients="provider",
            purposes="TREATMENT", categories="PHI", valid_from=day(-50), updated_at=stamp))
        g = person.grant
        if g is not None:
            connection.execute(insert(consents).values(
                consent_id=f"{t}-part2-consent", record_id=f"{t}-{g.holder}", recipients="|".join(g.recipients),
                purposes="|".join(g.purposes), categories="|".join(g.categories), valid_from=day(g.from_days),
                valid_until=day(g.until_days) if g.until_days is not None else None,
                revoked_at=day(g.revoked_days) if g.revoked_days is not None else None, updated_at=stamp))


def _person(world: World, tag: str, agencies=("METRO_PD", "COUNTY_BH", "COUNTY_EMS"), plant=True) -> Person:
    """A fresh person of the county that a briefing resolves at `probable` or better, briefed by one key of each
    of `agencies` (so that each of them may refer the person)."""
    while world.spare:
        record_id, person_id = world.spare.pop(0)
        person = Person(tag, person_id, "", stored_subject(world.store, record_id), grant=VARIANTS.get(tag))
        for agency in agencies:
            status, answer, incident = briefing(world, BRIEFER[agency], person.subject)
            candidates = answer.get("resolution", {}).get("candidates") or []
            if (status != 200 or answer["resolution"]["status"] != "resolved"
                    or candidates[0]["grade"] not in ("certain", "probable")
                    or person.reference not in ("", candidates[0]["person_id"])):
                break
            person.reference, person.incidents[agency] = candidates[0]["person_id"], incident
        else:
            with world.store.engine.connect() as connection:
                resolved = set(connection.execute(select(briefed_persons.c.person_id).where(
                    briefed_persons.c.incident_id.in_(list(person.incidents.values())))).scalars())
            if resolved != {person_id}:
                continue
            if plant:
                _plant(world.store, person)
            world.persons[tag] = person
            return person
    raise AssertionError("the county has no more persons that resolve")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("referral-http-attacks")
    db, store = loaded_county(directory, 150, 29)
    for name, (kind, part2, line) in PROGRAMS.items():
        register_program(store, Program(name, ProgramKind(kind), part2, line), by="test")
    keys = {name: create_key(store, f"atk-{name}", Role(role), agency, [Purpose(p) for p in purposes])
            for name, (role, agency, purposes) in KEYS.items()}
    with store.engine.connect() as connection:
        rows = connection.execute(select(clusters.c.record_id, clusters.c.person_id)
                                  .order_by(clusters.c.person_id, clusters.c.record_id)).all()
    spare = list({person_id: (record_id, person_id) for record_id, person_id in reversed(rows)}.values())
    log = directory / "gunicorn.log"
    with serving(db, log, workers=2) as base:
        w = World(base, store, keys, log, {}, spare)
        for tag in VARIANTS:
            _person(w, tag)
        for key in KEYS:                  # the answers for an id that does not exist, per key and channel
            w.missing[key, "get"] = read(w, key, MISSING_ID)
            w.missing[key, "step"] = step(w, key, MISSING_ID, "accept")
            w.missing[key, "Task"] = fhir(w, key, "Task", MISSING_ID)
            w.missing[key, "ServiceRequest"] = fhir(w, key, "ServiceRequest", MISSING_ID)
        yield w


def assert_like_missing(world, key, channel, answer):
    """Invariant 3: indistinguishable from the answer to a referral that does not exist (status and body)."""
    assert answer == world.missing[key, channel], (key, channel, answer, world.missing[key, channel])


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


def check_referrer_view(world, viewer: str, view: dict, truth: dict, named: bool, canaries: list[str]) -> None:
    """Invariants 1 and 2 on one referrer-side view; `truth` is the program's view, `named` the oracle's verdict
    on whether a consent names HARBOR_SUD's involvement to `viewer`."""
    role = KEYS[viewer][0]
    shown = text_of(view)
    where = f"{viewer} sees referral {truth['id']} ({truth['program']['name']}, {truth['status']}): {shown}"
    assert set(view) <= REFERRER_MAY_SEE and "items" not in view and "events" not in view, where
    assert view["id"] == truth["id"] and view["person"] == truth["person"], where
    for canary in canaries:
        assert canary not in shown, f"{canary!r} reached the referrer: {where}"
    hidden = truth["program"]["name"] == SUD and not named
    if hidden:
        assert view["program"] == {"name": GENERIC, "public_line": PROGRAMS[SUD][2]}, where
        assert not {"reason", "basis", "outcome", "business_status", "updated_at", "grade"} & set(view), where
        assert view["status"] == COARSE[truth["status"]], where
        assert not [w for w in FORBIDDEN_WORDS if w in shown.lower()], where
        return
    assert view["program"] == truth["program"], where
    if role in LAW_ENFORCEMENT:
        assert set(view) <= LAW_MAY_SEE, where
        assert view["status"] == COARSE[truth["status"]], where
    else:
        assert (view["status"], view.get("business_status"), view.get("outcome")) == \
               (truth["status"], truth["business_status"], truth["outcome"]), where


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
# Invariant 4: the lifecycle over HTTP, every side, every event, every status
# ----------------------------------------------------------------------------------------------------------------

#: Named starting states: the program's steps (and a referrer's cancel) that reach them from `requested`.
STARTS = {
    "requested": (),
    "accepted": (("program", "accept", None),),
    "identity": (("program", "accept", None), ("program", "confirm_identity", None)),
    "contacted": (("program", "accept", None), ("program", "contact_attempted", None)),
    "engaged": (("program", "accept", None), ("program", "engaged", None)),
    "completed": (("program", "accept", None), ("program", "complete", "transported")),
    "rejected": (("program", "reject", None),),
    "cancelled": (("referrer", "cancel", None),),
    "failed": (("program", "accept", None), ("program", "fail", None)),
}


def side_of(key: str, program: str) -> str | None:
    role, agency, _ = KEYS[key]
    if role == "provider":
        return "program" if agency == program else None
    if role in LAW_ENFORCEMENT | CLINICAL:
        return "referrer" if agency == "METRO_PD" else None
    return None


def expect(state: dict, key: str, event: str, outcome: str | None, program: str) -> tuple[int, dict | None]:
    """The oracle: (status code, the state afterwards or None when refused)."""
    if KEYS[key][0] in NON_READERS:
        return 403, None
    side = side_of(key, program)
    if side is None:
        return 404, None
    sides, froms, to, business = TABLE[event]
    if side not in sides or state["status"] not in froms or (event == "complete") != (outcome is not None):
        return 409, None
    reached = [b for b in (state["business_status"], business) if b is not None]    # the furthest step reached
    after_business = max(reached, key=PROGRESS.index, default=None)
    return 200, {"status": to or state["status"], "business_status": after_business,
                 "outcome": outcome if event == "complete" else state["outcome"]}


def snapshot(referral: dict) -> dict:
    return {k: referral[k] for k in ("status", "business_status", "outcome", "updated_at")} | {
        "events": len(referral["events"])}


class Lifecycle:
    """Referrals of one person (METRO_PD referred them) to `program`: a shared one per starting state for the
    refusals, and fresh ones for the steps the oracle expects to succeed."""

    def __init__(self, world, program: str):
        self.world, self.program = world, program
        self.person = world.persons.get("life") or _person(world, "life", agencies=("METRO_PD",), plant=False)
        self.shared: dict[str, int] = {}

    def make(self, start: str) -> int:
        _, created = refer(self.world, "officer", self.person, self.program)
        referral_id = created["referral"]["id"]
        for side, event, outcome in STARTS[start]:
            key = PROVIDER_OF[self.program] if side == "program" else "dispatcher"
            assert step(self.world, key, referral_id, event, outcome)[0] == 200
        return referral_id

    def shared_of(self, start: str) -> int:
        if start not in self.shared:
            self.shared[start] = self.make(start)
        return self.shared[start]

    def run(self, combos) -> int:
        """Take each (start, key, event, outcome); check its answer and what it left; the number taken."""
        before = {s: snapshot(whole(self.world, self.shared_of(s), self.program)) for s in {c[0] for c in combos}}
        for start, key, event, outcome in combos:
            state = before[start]
            code, after = expect(state, key, event, outcome, self.program)
            if code != 200:
                referral_id = self.shared_of(start)
                status, answer = step(self.world, key, referral_id, event, outcome, "REFUSED-NOTE")
                where = (start, key, event, outcome, status, answer)
                assert status == code, where
                if code in (403, 404):
                    assert (status, answer) == self.world.missing[key, "step"], where
                else:
                    assert set(answer) == {"error", "message"} and answer["error"] == "conflict", where
                continue
            referral_id = self.make(start)
            status, answer = step(self.world, key, referral_id, event, outcome, f"STEP-{event}")
            assert status == 200, (start, key, event, outcome, answer)
            view, truth = answer["referral"], whole(self.world, referral_id, self.program)
            assert {k: truth[k] for k in after} == after, (start, key, event, outcome, truth)
            assert truth["events"][-1]["event"] == event and truth["events"][-1]["side"] == side_of(key, self.program)
            if KEYS[key][0] in LAW_ENFORCEMENT:
                assert view["status"] == COARSE[after["status"]] and set(view) <= LAW_MAY_SEE, view
            elif KEYS[key][0] != "provider" and self.program == SUD:   # no consent names it: the coarse view
                assert view["status"] == COARSE[after["status"]] and view["program"]["name"] == GENERIC, view
            else:
                assert view["status"] == after["status"], view
        for start, state in before.items():
            now_ = snapshot(whole(self.world, self.shared[start], self.program))
            assert now_ == state, f"a refused step changed the {start} referral: {state} -> {now_}"
        return len(combos)


LIFECYCLE_KEYS = ("officer", "co_metro", "crisis")


def test_exhaustive_lifecycle_product_each_step_only_from_its_side_and_status(world):
    """Every starting state x every event x a law-enforcement referrer, a clinical referrer and the program
    (`complete` with an outcome, the others without, and then each with the other choice)."""
    life = Lifecycle(world, CRISIS)
    combos = [(start, key, event, outcome)
              for start, key, event in itertools.product(STARTS, LIFECYCLE_KEYS, EVENTS)
              for outcome in (("transported" if event == "complete" else None),)]
    flipped = [(start, key, event, None if event == "complete" else "other")
               for start, key, event in itertools.product(("requested", "engaged", "completed"), LIFECYCLE_KEYS,
                                                          EVENTS)]
    assert life.run(combos + flipped) == len(STARTS) * len(LIFECYCLE_KEYS) * len(EVENTS) + 3 * 3 * len(EVENTS)


@settings(max_examples=25, **FAST)
@given(combos=st.lists(st.tuples(st.sampled_from(tuple(STARTS)), st.sampled_from(tuple(KEYS)),
                                 st.sampled_from(EVENTS), st.sampled_from((None, None) + OUTCOMES)),
                       min_size=12, max_size=12),
       program=st.sampled_from((SUD, CRISIS)))
def test_generated_steps_by_every_key_on_every_status_change_state_only_as_the_table_says(world, combos, program):
    life = world.lives.setdefault(program, Lifecycle(world, program))
    life.run(combos)


#: Steps that race one another on one referral: (key, event, outcome).
RACERS = (("crisis", "accept", None), ("crisis", "reject", None), ("crisis", "engaged", None),
          ("crisis", "complete", "other"), ("crisis", "fail", None), ("crisis", "person_declined", None),
          ("officer", "cancel", None), ("dispatcher", "person_declined", None), ("co_metro", "cancel", None))


@settings(max_examples=15, **FAST)
@given(racers=st.lists(st.sampled_from(RACERS), min_size=2, max_size=4),
       start=st.sampled_from(("requested", "accepted", "engaged")))
def test_concurrent_steps_on_one_referral_serialise_as_the_table_allows(world, racers, start):
    """Steps sent at once through both workers: those answered 200 are exactly the ones logged, their order replays
    through the lifecycle table from the starting state to the final state, and every other answer is a 409."""
    life = world.lives.setdefault(CRISIS, Lifecycle(world, CRISIS))
    referral_id = life.make(start)
    before = whole(world, referral_id, CRISIS)
    barrier = threading.Barrier(len(racers))

    def race(racer):
        key, event, outcome = racer
        barrier.wait(timeout=30)
        return step(world, key, referral_id, event, outcome)

    with ThreadPoolExecutor(len(racers)) as pool:
        answers = list(pool.map(race, racers))
    assert all(status in (200, 409) for status, _ in answers), answers
    after = whole(world, referral_id, CRISIS)
    logged = [(e["principal"], e["event"]) for e in after["events"][len(before["events"]):]]
    taken = sorted((f"atk-{key}", event) for (key, event, _), (status, _) in zip(racers, answers) if status == 200)
    assert sorted(logged) == taken, (logged, answers)
    state = {k: before[k] for k in ("status", "business_status", "outcome")}
    outcome_of = {(f"atk-{k}", e): o for k, e, o in racers}
    for principal, event in logged:
        code, state = expect(state, principal.removeprefix("atk-"), event, outcome_of[principal, event], CRISIS)
        assert code == 200, f"{event} by {principal} was taken out of turn: {logged}"
    assert {k: after[k] for k in state} == state, (logged, after["status"])


@pytest.mark.parametrize("program", [SUD, CRISIS])
@pytest.mark.parametrize("event", ["cancel", "person_declined"])
@pytest.mark.parametrize("viewer", ["officer", "dispatcher", "co_metro"])
@pytest.mark.parametrize("start", ["completed", "rejected", "cancelled", "failed"])
def test_a_refused_step_never_tells_a_coarse_viewer_the_exact_status(world, start, viewer, event, program):
    if KEYS[viewer][0] in CLINICAL and program != SUD:
        program = SUD                         # a clinical referrer sees the coarse status only of a hidden program
    life = world.lives.setdefault(program, Lifecycle(world, program))
    referral_id = life.shared_of(start)
    status, answer = step(world, viewer, referral_id, event)
    assert status == 409
    _, seen = read(world, viewer, referral_id)
    assert seen["referral"]["status"] == "closed"
    exact = whole(world, referral_id, program)["status"]
    assert exact not in answer["message"], (viewer, program, answer)


def test_a_clinicians_treatment_referral_shows_law_enforcement_of_its_agency_no_clinical_note_or_contact(world):
    person = world.persons["none"]
    note = f"CLINICAL-{uuid.uuid4().hex[:6]} on buprenorphine; relapsed last week"
    _, created = refer(world, "co_metro", person, CRISIS, reason="substance_use_treatment", basis="treatment",
                       note=note, contact={"name": "Sam", "phone": "614-555-7777"})
    referral_id = created["referral"]["id"]
    for viewer in ("officer", "dispatcher"):
        _, seen = read(world, viewer, referral_id)
        _, listed = listing(world, viewer, since=seen["referral"]["created_at"])
        for shown in (text_of(seen), text_of(listed)):
            assert note.split()[0] not in shown and "614-555-7777" not in shown, (viewer, shown)


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


# ----------------------------------------------------------------------------------------------------------------
# Invariant 5: bad ids, bodies and query strings (run last: they may create referrals of their own)
# ----------------------------------------------------------------------------------------------------------------

FULL_WIDTH = {ord("0") + d: 0xFF10 + d for d in range(10)}
ARABIC_INDIC = {ord("0") + d: 0x0660 + d for d in range(10)}


def test_an_id_in_non_ascii_digits_is_no_such_referral(world):
    _, created = refer(world, "officer", world.persons["none"], CRISIS)
    referral_id = str(created["referral"]["id"])
    for digits in (FULL_WIDTH, ARABIC_INDIC):
        alias = urllib.parse.quote(referral_id.translate(digits))
        assert fhir(world, "crisis", "Task", alias) == world.missing["crisis", "Task"]
        assert read(world, "crisis", alias) == world.missing["crisis", "get"], alias
        assert step(world, "crisis", alias, "confirm_identity") == world.missing["crisis", "step"], alias


JUNK_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | JUNK_TEXT | st.text(max_size=3000).map(lambda s: s * 2),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JUNK_TEXT, inner, max_size=4), max_leaves=12)
FIELDS = ("incident_id", "program", "reason", "urgency", "due_within_hours", "basis", "consent_id", "agreement_note",
          "contact", "note")


def check_error_answer(status: int, content_type: str, text: str, allowed: set[int], where) -> None:
    assert status in allowed, (status, where, text[:300])
    assert not TRACEBACK.search(text), (where, text[:1000])
    if status >= 400:
        body = json.loads(text)
        assert body.get("error") or body.get("resourceType") == "OperationOutcome", (where, body)


@st.composite
def referral_bodies(draw, incident: str):
    """A valid referral body, then up to three mutations: a field replaced by junk, dropped, or one added."""
    basis = draw(st.sampled_from(("agreement", "consent", "treatment")))
    urgency = draw(st.sampled_from(("warm_handoff", "follow_up")))
    body = {"incident_id": incident, "program": draw(st.sampled_from(tuple(PROGRAMS))),
            "reason": draw(st.sampled_from(REASONS)), "urgency": urgency, "basis": basis,
            **({"due_within_hours": draw(st.integers(1, 720))} if urgency == "follow_up" else {}),
            **({"agreement_note": "the person agreed"} if basis == "agreement" else {}),
            **({"consent_id": draw(st.sampled_from(("fuzz-provider-consent", "CNS-nope")))}
               if basis == "consent" else {}),
            **({"contact": {"name": draw(JUNK_TEXT.filter(bool)), "phone": "614"}} if draw(st.booleans()) else {}),
            **({"note": draw(JUNK_TEXT)} if draw(st.booleans()) else {})}
    junk = {"incident_id": st.sampled_from(("nope", "", "x" * 300)) | JUNK_TEXT | JSON_VALUES,
            "program": st.sampled_from(("NOPE", "harbor_sud", " HARBOR_SUD", "")) | JSON_VALUES,
            "reason": JUNK_TEXT | JSON_VALUES, "urgency": JUNK_TEXT | JSON_VALUES,
            "due_within_hours": st.sampled_from((0, -1, 721, 10 ** 20, 1.5, "24", True)) | JSON_VALUES,
            "basis": st.sampled_from(("follow_up_rule", "TREATMENT", "")) | JSON_VALUES,
            "consent_id": st.sampled_from(("", "x" * 300)) | JSON_VALUES,
            "agreement_note": st.sampled_from(("", "n" * 501)) | JSON_VALUES,
            "contact": st.fixed_dictionaries({}, optional={
                "name": JSON_VALUES, "phone": st.text(min_size=41, max_size=60), "where": JSON_VALUES,
                "email": JSON_VALUES}) | JSON_VALUES,
            "note": st.sampled_from(("n" * 1001, "\x00", "\ud800")) | JSON_VALUES}
    for _ in range(draw(st.integers(0, 3))):
        name, how = draw(st.sampled_from(FIELDS)), draw(st.sampled_from(("junk", "junk", "drop", "add")))
        if how == "junk":
            body[name] = draw(junk[name])
        elif how == "drop":
            body.pop(name, None)
        else:
            body[draw(JUNK_TEXT)] = draw(JSON_VALUES)
    shape = draw(st.sampled_from(("object",) * 8 + ("list", "value")))
    return body if shape == "object" else [body] if shape == "list" else draw(JSON_VALUES)


@settings(max_examples=150, **FAST)
@given(data=st.data())
def test_fuzzed_referral_bodies_answer_201_400_or_422_without_a_stack_trace(world, data):
    person = world.persons.get("fuzz") or _person(world, "fuzz", agencies=("METRO_PD", "COUNTY_BH"))
    key = data.draw(st.sampled_from(("officer", "dispatcher", "co")))
    body = data.draw(referral_bodies(person.incidents[KEYS[key][1]]))
    encoded = data.draw(st.sampled_from(("json",) * 9 + ("bytes",)))
    payload = json.dumps(body).encode() if encoded == "json" else data.draw(st.binary(max_size=200))
    status, content_type, text = raw(world.base, "POST", "/v1/referrals", world.keys[key], payload)
    tally(f"answered {status}")
    check_error_answer(status, content_type, text, {201, 400, 422}, body)
    if status == 201:                         # what the referrer gets back is its own view (invariants 1 and 2)
        answer = json.loads(text)["referral"]
        truth = whole(world, answer["id"], answer["program"]["name"] if answer["program"]["name"] != GENERIC else SUD)
        check_referrer_view(world, key, answer, truth, False, ["ITEMCANARY-fuzz"])


PATH_IDS = (st.integers(min_value=10 ** 9, max_value=10 ** 30).map(str) | st.integers(max_value=-1).map(str)
            | JUNK_TEXT.filter(lambda s: not s.strip().isdigit()).map(lambda s: urllib.parse.quote(s, safe=""))
            | st.sampled_from(("0", "00", "1e3", "0x10", "１２", "٣", "%00", "%2F", "..", "1;2", "1%20", " 1", "1 ",
                               "+1"))
            .map(lambda s: urllib.parse.quote(s, safe="%;+")))


@settings(max_examples=200, **FAST)
@given(data=st.data())
def test_fuzzed_ids_steps_and_queries_answer_4xx_without_a_stack_trace(world, data):
    if world.fuzz_referral is None:
        person = world.persons.get("fuzz") or _person(world, "fuzz", agencies=("METRO_PD", "COUNTY_BH"))
        world.fuzz_referral = refer(world, "officer", person, CRISIS)[1]["referral"]["id"]
    fuzz = world.fuzz_referral
    key = data.draw(st.sampled_from(("officer", "dispatcher", "co", "crisis", "sud", "ems")))
    target = data.draw(st.sampled_from(("get", "step", "list", "Task", "ServiceRequest")))
    referral = str(fuzz) if data.draw(st.booleans()) else data.draw(PATH_IDS)
    if target == "list":
        query = data.draw(st.dictionaries(st.sampled_from(("status", "since", "limit", "junk")) | JUNK_TEXT,
                                          JUNK_TEXT | st.integers(-10, 10 ** 6).map(str)
                                          | st.sampled_from(STATUSES + ("closed", "2026-01-01", "2026-01-01T00:00:00",
                                                                        "2026-01-01T00:00:00+00:00")), max_size=3))
        path, method, payload, allowed = "/v1/referrals?" + urllib.parse.urlencode(query), "GET", None, {200, 422}
    elif target == "step":
        valid = st.fixed_dictionaries({"event": st.sampled_from(EVENTS)},
                                      optional={"outcome": st.sampled_from(OUTCOMES), "note": JUNK_TEXT})
        junk = st.fixed_dictionaries({"event": st.sampled_from(EVENTS) | JSON_VALUES},
                                     optional={"outcome": st.sampled_from(OUTCOMES) | JSON_VALUES,
                                               "note": JSON_VALUES | st.text(min_size=1001, max_size=1100),
                                               "extra": JSON_VALUES}) | JSON_VALUES
        body = data.draw(valid | valid | junk)
        path, method, payload = f"/v1/referrals/{referral}/events", "POST", json.dumps(body).encode()
        allowed = {200, 400, 404, 405, 409, 422}
    elif target == "get":
        method = data.draw(st.sampled_from(("GET", "GET", "GET", "PUT", "DELETE", "PATCH")))
        path, payload = f"/v1/referrals/{referral}", None
        allowed = {200, 404} if method == "GET" else {404, 405}
    else:
        path, method, payload, allowed = f"/fhir/{target}/{referral}", "GET", None, {200, 403, 404}
    status, content_type, text = raw(world.base, method, path, world.keys[key], payload)
    tally(f"{target} answered {status}")
    check_error_answer(status, content_type, text, allowed, (key, method, path, payload))
    if referral == str(fuzz) and method == "GET" and target != "list" and key in ("sud", "co", "ems"):
        assert (status, json.loads(text)) == world.missing[key, "get" if target == "get" else target]


def test_the_server_logged_no_unhandled_error(world):
    logged = world.log.read_text(errors="replace")
    assert "unhandled error" not in logged and "Traceback" not in logged, logged[-3000:]
