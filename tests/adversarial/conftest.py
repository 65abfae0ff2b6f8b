"""A small adversarial world, loaded and served: the black-box suite's target, on SQLite and on PostgreSQL.

The world is written here, not taken from the synthetic county, so its dates are relative to the
moment the tests run (UTC) and its ground truth is stated in this file, independently of
`scoring/policy.py`: which protected item may reach whom is `Truth.may_reach`, written from the
rules of issue 15 (the team's agreed behaviours), never by asking the policy.

Persons (each with identical identity fields on every record, so each resolves `certain`):

- **A** crisis plan, the finding-1 trap: a PHI consent listing item categories
  (`PHI|communication_need|effective_approach`, to officer, co-responder, EMS) next to PART2 items
  of those categories; a CJI item on the police record; a PHI item of an unlisted category; a retracted item.
- **B** time attacks (finding 2): PHI and PART2 items under an expired consent (its window 500 to 30
  days ago), a PHI item under a revoked consent, an expired operational item, and a CJI control item.
- **C** a valid PART2 consent naming an agency (`CRISIS_TEAM`) for `PART2|service_connection`.
- **D** known only to a substance-use program (`HARBOR_SUD`, `SUD-…` records) and behavioural health
  (`EHR-…`): Part 2 and PHI items, no consent (finding 4, the 42 CFR 2.51 exception).
- **E** clinician serious-threat disclosures (`disclosure_basis` written `serious_threat`, as the data
  has it): one expiring 12 days after its verification, one 62 days after.
- **F** the ownership victim (finding 3): a COUNTY_BH PART2 item under a consent to co-responders, and a
  PHI item an admin will try to move; F also has a METRO_PD record (the attacker's own).
- **G** a behavioural-health client whose record a police feed copies (finding 7).
- **H** the target of the 403-message probes and of the revocation-order probe.
- some filler persons (police, 911, EMS, registry records) so the index is not only protagonists.

`served` (module scope, parametrised over sqlite and postgresql) loads the world with
`briefing ingest --db`, makes keys with `briefing keys create`, and runs `briefing serve`
(gunicorn, two workers) for the whole module: one server per store. Under `CI=true` a missing
PostgreSQL fails instead of skipping (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from tests.adversarial.vocabulary import CALL_TYPES, CLINICAL, LAW_ENFORCEMENT, MEDICAL_EMERGENCIES, RESPONDER_ROLES
from tests.cli_run import run_briefing
from tests.served import serving

PURPOSES = ("EMERGENCY", "LAW", "TREATMENT", "THREAT")
#: Agencies whose very name tells that a person is a behavioural-health or substance-use patient.
PROTECTED_AGENCIES = ("COUNTY_BH", "HARBOR_SUD")
PROTECTED_PREFIXES = ("EHR-", "SUD-")

#: (name, role, agency, purposes): every key the served world gets.
KEYS = (
    ("officer-metro", "officer", "METRO_PD", ("EMERGENCY", "LAW", "THREAT")),
    ("officer-north", "officer", "NORTH_PD", ("EMERGENCY", "LAW")),
    ("dispatcher-911", "dispatcher", "COUNTY_911", ("EMERGENCY", "LAW", "THREAT")),
    ("ems-county", "ems", "COUNTY_EMS", ("EMERGENCY", "TREATMENT")),
    ("co-crisis", "co_responder", "CRISIS_TEAM", ("EMERGENCY", "TREATMENT")),
    ("co-metro", "co_responder", "METRO_PD", ("EMERGENCY", "TREATMENT")),
    ("feed-metro", "feed", "METRO_PD", ()),
    ("feed-bh", "feed", "COUNTY_BH", ()),
    ("steward-1", "steward", "DATA_OFFICE", ()),
    ("auditor-1", "auditor", "OVERSIGHT", ()),
    ("admin-1", "admin", "DATA_OFFICE", ()),
)
RESPONDER_KEYS = tuple(k for k in KEYS if k[1] in RESPONDER_ROLES)


@dataclass(frozen=True)
class Person:
    key: str
    given_name: str
    family_name: str
    dob: str
    sex: str
    phone: str
    street: str
    city: str
    postcode: str

    def identity(self) -> dict:
        return {"given_name": self.given_name, "family_name": self.family_name, "dob": self.dob, "sex": self.sex,
                "phone": self.phone, "street": self.street, "city": self.city, "state": "OH", "postcode": self.postcode}

    def subject(self) -> dict:
        """What a call-taker who knows the person sends."""
        return {"given_name": self.given_name, "family_name": self.family_name, "dob": self.dob, "phone": self.phone}


@dataclass(frozen=True)
class Grant:
    """What a consent allows, as this file states it: recipients (agencies or roles), purposes, a window."""
    recipients: frozenset
    purposes: frozenset
    valid_from: datetime
    valid_until: datetime

    def allows(self, role: str, agency: str, purpose: str, times: tuple[datetime, ...]) -> bool:
        return ((role in self.recipients or agency in self.recipients) and purpose in self.purposes
                and all(self.valid_from <= t < self.valid_until for t in times))


@dataclass(frozen=True)
class Truth:
    """Ground truth of one item: who may ever receive it (an over-approximation is safe: tests assert only 'must not')."""
    item_id: str
    person: str
    legal: str
    grants: tuple[Grant, ...] = ()
    serious_threat: bool = False         # a clinician's serious-threat disclosure within the 14-day cap
    never: bool = False                  # expired or not active: nobody, ever

    def may_reach(self, role: str, agency: str, purpose: str, call_type: str, attested: bool,
                  times: tuple[datetime, ...]) -> bool:
        if self.never or role not in RESPONDER_ROLES:
            return False
        granted = any(g.allows(role, agency, purpose, times) for g in self.grants)
        if self.legal == "CJI":
            return role in LAW_ENFORCEMENT
        if self.legal == "PART2":
            emergency = role == "ems" and purpose == "EMERGENCY" and call_type in MEDICAL_EMERGENCIES and attested
            return granted or emergency
        if self.legal == "PHI":
            care = role in CLINICAL and purpose in ("EMERGENCY", "TREATMENT")
            threat = self.serious_threat and role in LAW_ENFORCEMENT and purpose == "THREAT"
            return care or granted or threat
        return True


@dataclass
class World:
    now: datetime
    directory: Path
    persons: dict[str, Person]
    records: list[dict]
    items: list[dict]
    consents: list[dict]
    truth: dict[str, Truth]
    files: list[Path] = field(default_factory=list)

    def at(self, days: float) -> datetime:
        return self.now + timedelta(days=days)

    def items_of(self, person: str) -> list[str]:
        return [i for i, t in self.truth.items() if t.person == person]


def _day(now: datetime, days: int) -> str:
    return (now + timedelta(days=days)).date().isoformat()


_FIRST = ["Maren", "Tobias", "Ilse", "Corwin", "Dagny", "Lucan", "Perpetua", "Osric", "Thea", "Barnaby", "Ingrid",
          "Leopold", "Rosalind", "Ambrose", "Sabine", "Cyrus", "Odile", "Jasper", "Mirela", "Phineas"]
_LAST = ["Halvorsen", "Oakridge", "Wexley", "Brannigan", "Castellane", "Dunmore", "Everleigh", "Fairbanks", "Grimshaw",
         "Hollingworth", "Ingleby", "Jessop", "Kittredge", "Lockhart", "Merriweather", "Norcross", "Ottaway", "Pemberton"]
_STREETS = ["MAPLE AVE", "OAK ST", "ELM ST", "CEDAR RD", "BIRCH LN", "WALNUT ST", "CHESTNUT AVE", "HICKORY DR"]


def _persons() -> dict[str, Person]:
    rows = [("A", "Alma", "Quintrell", "1979-03-14", "F", "6145550101", "12 SYCAMORE CT", "COLUMBUS", "43201"),
            ("B", "Bertrand", "Oyelaran", "1968-11-02", "M", "6145550102", "340 HAWTHORN WAY", "COLUMBUS", "43205"),
            ("C", "Cordelia", "Vantongeren", "1990-07-21", "F", "6145550103", "77 LINDEN PL", "WORTHINGTON", "43085"),
            ("D", "Desmond", "Achterberg", "1985-01-30", "M", "6145550104", "9 JUNIPER ALY", "COLUMBUS", "43215"),
            ("E", "Evangeline", "Thorsby", "1972-05-09", "F", "6145550105", "501 MULBERRY ST", "GROVE CITY", "43123"),
            ("F", "Fenwick", "Galbraithe", "1981-09-17", "M", "6145550106", "18 ALDER TER", "COLUMBUS", "43206"),
            ("G", "Gwendolyn", "Prudhomme", "1995-12-03", "F", "6145550107", "260 LARCH BLVD", "DUBLIN", "43017"),
            ("H", "Horatio", "Belvedere", "1960-02-25", "M", "6145550108", "4 TAMARACK CIR", "COLUMBUS", "43207")]
    return {r[0]: Person(*r) for r in rows}


def _record(record_id: str, agency: str, source: str, person: Person, recorded: str) -> dict:
    return {"record_id": record_id, "agency": agency, "source_system": source, **person.identity(),
            "birth_year": person.dob[:4], "recorded_at": recorded}


def build_world(directory: Path, now: datetime | None = None) -> World:
    """Write records.csv, context_items.csv and consents.csv for the world; the world with its ground truth."""
    now = now or datetime.now(timezone.utc)
    day = lambda k: _day(now, k)                                        # noqa: E731
    recorded = (now - timedelta(days=400)).isoformat(timespec="seconds")
    persons = _persons()
    agency_of = {"RMS": "METRO_PD", "EHR": "COUNTY_BH", "EPCR": "COUNTY_EMS", "SUD": "HARBOR_SUD", "VR": "REGISTRY"}
    held = {"A": ("RMS", "EHR"), "B": ("RMS", "EHR"), "C": ("EHR", "EPCR"), "D": ("SUD", "EHR"), "E": ("RMS", "EHR"),
            "F": ("RMS", "EHR"), "G": ("EHR",), "H": ("EHR", "VR")}
    records = [_record(f"{source}-{person}0001", agency_of[source], source, persons[person], recorded)
               for person, sources_held in held.items() for source in sources_held]
    rng = random.Random(15)
    sources = [("METRO_PD", "RMS"), ("COUNTY_911", "CAD"), ("COUNTY_EMS", "EPCR"), ("REGISTRY", "VR")]
    for k in range(36):
        filler = Person(f"X{k}", rng.choice(_FIRST), f"{rng.choice(_LAST)}", f"19{rng.randint(40, 99)}-"
                        f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", rng.choice("MF"),
                        f"614555{1000 + k:04d}", f"{rng.randint(1, 999)} {rng.choice(_STREETS)}", "COLUMBUS", "43210")
        for n in range(rng.randint(1, 2)):
            agency, source = sources[(k + n) % len(sources)]
            records.append(_record(f"{source}-X{k:03d}{n}", agency, source, filler, recorded))

    def grant(recipients: str, purposes: str, start: int, end: int) -> Grant:
        return Grant(frozenset(recipients.split("|")), frozenset(purposes.split("|")), now + timedelta(days=start),
                     now + timedelta(days=end))

    consents, truth, items = [], {}, []

    def consent(consent_id, record_id, recipients, purposes, categories, start, end, revoked=None):
        consents.append({"consent_id": consent_id, "record_id": record_id, "recipients": recipients, "purposes": purposes,
                         "categories": categories, "valid_from": day(start), "valid_until": day(end),
                         "revoked_at": day(revoked) if revoked is not None else "", "discloser": "COUNTY_BH",
                         "description": f"adversarial world consent {consent_id}", "signed_at": day(start)})

    def item(item_id, person, record_id, category, code, legal, labels, *, consent_id="", basis="", source="clinician",
             observed=-300, verified=-30, expires=None, status="active", grants=(), threat=False, never=False, text=None):
        items.append({"item_id": item_id, "record_id": record_id, "category": category, "code": code,
                      "text": text or f"{category} note {item_id} (case manager; {day(observed)[:7]})",
                      "legal_category": legal, "security_labels": labels, "consent_id": consent_id,
                      "disclosure_basis": basis, "source_type": source, "observed_at": day(observed),
                      "last_verified_at": day(verified), "review_due": day(verified + 365),
                      "expires_at": day(expires) if expires is not None else "", "status": status})
        truth[item_id] = Truth(item_id, person, legal, tuple(grants), threat, never)

    # A: the crisis-plan consent lists item categories next to PHI; PART2 items of those categories sit beside it.
    consent("CNS-A-PLAN", "EHR-A0001", "officer|co_responder|ems", "EMERGENCY|TREATMENT",
            "PHI|communication_need|effective_approach", -100, 300)
    plan = grant("officer|co_responder|ems", "EMERGENCY|TREATMENT", -100, 300)
    item("CI-A-CJI", "A", "RMS-A0001", "legal_status", "LEGAL_PROBATION_A", "CJI", "R", basis="cjis", source="officer")
    item("CI-A-PHI-COMM", "A", "EHR-A0001", "communication_need", "COMM_SLOW_SPEECH_A", "PHI", "R|BH",
         consent_id="CNS-A-PLAN", basis="consent", grants=(plan,))
    item("CI-A-PHI-MED", "A", "EHR-A0001", "medical", "MED_DIABETES_A", "PHI", "R|BH", basis="hipaa_treatment")
    item("CI-A-P2-APPR", "A", "EHR-A0001", "effective_approach", "APPR_PEER_SUPPORT_A", "PART2", "V|ETH|NORDSCLCD",
         consent_id="CNS-A-PLAN", basis="consent")
    item("CI-A-P2-COMM", "A", "EHR-A0001", "communication_need", "COMM_WITHDRAWAL_A", "PART2", "V|ETH|NORDSCLCD",
         consent_id="CNS-A-PLAN", basis="consent")
    item("CI-A-RETRACTED", "A", "RMS-A0001", "safety_flag", "SAFE_WEAPON_A", "CJI", "R", basis="cjis", source="officer",
         status="retracted", never=True)

    # B: an expired consent's window, a revoked consent, an expired item; a CJI control item.
    consent("CNS-B-OLD", "EHR-B0001", "officer|co_responder|ems", "EMERGENCY|TREATMENT", "PHI|effective_approach",
            -500, -30)
    consent("CNS-B-OLDP2", "EHR-B0001", "officer|dispatcher|co_responder|ems", "EMERGENCY|LAW|TREATMENT",
            "PART2|service_connection", -500, -30)
    consent("CNS-B-REVOKED", "EHR-B0001", "officer|dispatcher", "EMERGENCY|LAW", "PHI|trauma_trigger", -200, 200,
            revoked=-5)
    old = grant("officer|co_responder|ems", "EMERGENCY|TREATMENT", -500, -30)
    old_p2 = grant("officer|dispatcher|co_responder|ems", "EMERGENCY|LAW|TREATMENT", -500, -30)
    item("CI-B-PHI-APPR", "B", "EHR-B0001", "effective_approach", "APPR_QUIET_VOICE_B", "PHI", "R|BH",
         consent_id="CNS-B-OLD", basis="consent", observed=-400, verified=-200, grants=(old,))
    item("CI-B-P2-SVC", "B", "EHR-B0001", "service_connection", "SVC_MAT_CLINIC_B", "PART2", "V|ETH|NORDSCLCD",
         consent_id="CNS-B-OLDP2", basis="consent", observed=-400, verified=-200, grants=(old_p2,))
    item("CI-B-PHI-TRIG", "B", "EHR-B0001", "trauma_trigger", "TRIG_SIRENS_B", "PHI", "R|BH",
         consent_id="CNS-B-REVOKED", basis="consent", observed=-150, verified=-100)
    item("CI-B-OPS-EXPIRED", "B", "RMS-B0001", "housing_context", "HOUS_TEMP_SHELTER_B", "AGENCY_OPERATIONAL", "N",
         basis="operational", source="dispatcher", observed=-300, verified=-100, expires=-10, never=True)
    item("CI-B-CJI", "B", "RMS-B0001", "legal_status", "LEGAL_PAROLE_B", "CJI", "R", basis="cjis", source="officer",
         observed=-300, verified=-200)

    # C: a valid PART2 consent naming an agency and one item category.
    consent("CNS-C-P2", "EHR-C0001", "CRISIS_TEAM", "EMERGENCY|TREATMENT", "PART2|service_connection", -100, 300)
    crisis = grant("CRISIS_TEAM", "EMERGENCY|TREATMENT", -100, 300)
    item("CI-C-P2-SVC", "C", "EHR-C0001", "service_connection", "SVC_OPIOID_PROGRAM_C", "PART2", "V|ETH|NORDSCLCD",
         consent_id="CNS-C-P2", basis="consent", grants=(crisis,))
    item("CI-C-P2-MED", "C", "EHR-C0001", "medical", "MED_METHADONE_DOSE_C", "PART2", "V|ETH|NORDSCLCD",
         basis="part2_medical_emergency")
    item("CI-C-PHI-SENS", "C", "EHR-C0001", "sensory_need", "SENS_HARD_OF_HEARING_C", "PHI", "R|BH",
         basis="hipaa_treatment")
    item("CI-C-PHI-EMS", "C", "EPCR-C0001", "medical", "MED_SEIZURES_C", "PHI", "R", basis="hipaa_treatment",
         source="officer")

    # D: a substance-use program and behavioural health, no consent at all.
    item("CI-D-P2-MED", "D", "SUD-D0001", "medical", "MED_BUPRENORPHINE_D", "PART2", "V|ETH|NORDSCLCD",
         basis="part2_medical_emergency")
    item("CI-D-PHI-COMM", "D", "EHR-D0001", "communication_need", "COMM_INTERPRETER_D", "PHI", "R|BH",
         basis="hipaa_treatment")

    # E: serious-threat disclosures written as the data writes them (lower case); one within the 14-day cap.
    item("CI-E-THREAT", "E", "EHR-E0001", "safety_flag", "SAFE_THREAT_NAMED_PERSON_E", "PHI", "R|BH",
         basis="serious_threat", observed=-3, verified=-2, expires=10, threat=True)
    item("CI-E-THREAT-LONG", "E", "EHR-E0001", "recent_event", "EVT_THREAT_OLD_E", "PHI", "R|BH",
         basis="serious_threat", observed=-3, verified=-2, expires=60)
    item("CI-E-CJI", "E", "RMS-E0001", "legal_status", "LEGAL_WARRANT_E", "CJI", "R", basis="cjis", source="officer")

    # F: the ownership victim.
    consent("CNS-F-P2", "EHR-F0001", "co_responder", "EMERGENCY|TREATMENT", "PART2|effective_approach", -100, 300)
    item("CI-F-P2", "F", "EHR-F0001", "effective_approach", "APPR_SLOW_APPROACH_F", "PART2", "V|ETH|NORDSCLCD",
         consent_id="CNS-F-P2", basis="consent", text="speak slowly and offer water (case manager; original)",
         grants=(grant("co_responder", "EMERGENCY|TREATMENT", -100, 300),))
    item("CI-F-PHI-MOVE", "F", "EHR-F0001", "sensory_need", "SENS_LIGHT_SENSITIVE_F", "PHI", "R|BH",
         basis="hipaa_treatment")

    # G: copied by a police feed. H: the 403-message probes.
    item("CI-G-PHI", "G", "EHR-G0001", "trauma_trigger", "TRIG_CROWDS_G", "PHI", "R|BH", basis="hipaa_treatment")
    consent("CNS-H-PHI", "EHR-H0001", "co_responder", "EMERGENCY", "PHI", -100, 300)
    consent("CNS-H-ORDER", "EHR-H0001", "co_responder", "EMERGENCY", "PHI", -100, 300)
    item("CI-H-PHI", "H", "EHR-H0001", "trauma_trigger", "TRIG_DOGS_H", "PHI", "R|BH", consent_id="CNS-H-PHI",
         basis="consent")
    item("CI-H-VR", "H", "VR-H0001", "communication_need", "COMM_NONVERBAL_H", "VOLUNTARY_REGISTRY", "N",
         basis="registry_authorization", source="caregiver")

    directory.mkdir(parents=True, exist_ok=True)
    world = World(now, directory, persons, records, items, consents, truth)
    for name, rows in (("records.csv", records), ("context_items.csv", items), ("consents.csv", consents)):
        path = directory / name
        pd.DataFrame(rows).to_csv(path, index=False)
        world.files.append(path)
    return world


def briefing_cli(argv: list[str]) -> str:
    """`briefing ARGV` in this process (tests/cli_run.py); its stdout. Fails the test on a refusal."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status, message = run_briefing(argv)
    assert status == 0, f"briefing {' '.join(argv[:2])} failed: {message}"
    return out.getvalue()


def load_world(world: World, db: str) -> dict[str, str]:
    """`briefing ingest --db` the world, then `briefing keys create` every key in KEYS; {name: key}."""
    briefing_cli(["ingest", "--db", db, "--quiet", *map(str, world.files)])
    keys = {}
    for name, role, agency, purposes in KEYS:
        argv = ["keys", "create", "--db", db, "--name", name, "--role", role, "--agency", agency]
        for purpose in purposes:
            argv += ["--purpose", purpose]
        keys[name] = briefing_cli(argv).strip()
    return keys


@dataclass
class Served:
    """One running `briefing serve` over the loaded world."""
    base: str
    kind: str
    db: str
    keys: dict[str, str]
    world: World
    log: Path


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("adversarial-world"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, world, tmp_path_factory):
    """The world loaded into a fresh store of each kind and served by gunicorn (two workers) for the module."""
    directory = tmp_path_factory.mktemp(f"served-{request.param}")
    db = str(directory / "briefing.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    keys = load_world(world, db)
    log = directory / "gunicorn.log"
    with serving(db, log, workers=2) as base:
        yield Served(base, request.param, db, keys, world, log)


def incident_id() -> str:
    return f"INC-ADV-{uuid.uuid4().hex[:12]}"
