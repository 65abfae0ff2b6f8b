"""The attackers' world for the referral attack suites (issue 19): programs, keys, the oracle's vocabulary, HTTP.

`served_world` loads a small synthetic county (tests/loaded_county.py), registers three programs (HARBOR_SUD, a
42 CFR Part 2 post-overdose program; MOBILE_CRISIS, not Part 2; RECOVERY_OUTREACH, a post-overdose team that is
not Part 2), creates every key of `KEYS` and runs one real `briefing serve` (tests/served.py) over it; each test
module yields from it in a module-scoped `world` fixture. Every expectation the suites check comes from the
oracle written here and in the suites from issue 19 and the lifecycle table, never from `scoring/`.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, Phase
from sqlalchemy import insert, select

from api.service.keys import create_key
from api.service.referrals import register_program
from api.service.store import briefed_persons, clusters, consents, context_items, records
from scoring.item import Purpose, Role
from scoring.referral import ProgramKind
from scoring.referral_policy import Program
from tests.adversarial.vocabulary import CLINICAL, COARSE, LAW_ENFORCEMENT, PROGRESS, TABLE
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
OUTCOMES = ("engaged_in_services", "declined_services", "unable_to_contact", "transported", "other")
REASONS = ("crisis_stabilisation", "mental_health_follow_up", "post_overdose_outreach", "substance_use_treatment",
           "case_management", "peer_support", "housing_assistance")
EVENTS = tuple(TABLE)
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


def served_world(tmp_path_factory, name: str):
    """The attackers' world: a small county with three programs, every key of `KEYS`, and `briefing serve` over it
    until the generator is closed (a test module's fixture yields from it)."""
    directory = tmp_path_factory.mktemp(name)
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




# ----------------------------------------------------------------------------------------------------------------
# The lifecycle's oracle and the referrer's view check, shared by the suites
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
