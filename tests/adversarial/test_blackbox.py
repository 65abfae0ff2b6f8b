"""Black-box attacks on the running service: gunicorn over SQLite and over PostgreSQL, HTTP only.

Each test is one finding of issue 15 (and every bullet of its finding 7 that HTTP can observe),
named for the attack, asserting the team's agreed behaviour (/tmp/team/README.md). The target is
the adversarial world of conftest.py, whose ground truth (`Truth.may_reach`) is written from the
rules, never taken from `scoring/policy.py`. The generated test sends role x purpose x call type x
incident time x attestation combinations to the live service and checks that no item reaches a
principal it must not. Every answer of every test is checked: never a 500, never a 'Traceback'.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.cookies import SimpleCookie

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial.conftest import (CALL_TYPES, KEYS, PROTECTED_AGENCIES, PROTECTED_PREFIXES, PURPOSES, RESPONDER_KEYS,
                                        incident_id)

ATTESTATION = "paramedic K. Osei: patient unresponsive, suspected opioid overdose, history needed for treatment"


@dataclass
class Answer:
    status: int
    text: str
    headers: dict

    @property
    def json(self) -> dict:
        return json.loads(self.text) if self.text else {}


def call(served, method: str, path: str, key: str | None = None, body=None, *, raw: bytes | None = None,
         headers: dict | None = None, timeout: float = 30) -> Answer:
    """One request; every answer is checked here: never a 500, never a stack trace."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {served.keys[key]}"} if key else {}),
            **(headers or {})}
    request = urllib.request.Request(served.base + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = Answer(response.status, response.read().decode("utf-8", "replace"), dict(response.headers))
    except urllib.error.HTTPError as error:
        answer = Answer(error.code, error.read().decode("utf-8", "replace"), dict(error.headers))
    assert answer.status < 500, f"{method} {path} answered {answer.status}: {answer.text[:500]}"
    assert "Traceback" not in answer.text, f"{method} {path} showed a stack trace"
    return answer


def brief(served, key: str, person: str, purpose: str = "EMERGENCY", call_type: str = "welfare_check",
          received_at: datetime | str | None = None, attestation: str | None = None,
          incident: str | None = None) -> Answer:
    """POST /v1/briefings about one of the world's persons (retried while the time budget answers `unavailable`)."""
    when = received_at or datetime.now(timezone.utc)
    body = {"incident": {"id": incident or incident_id(), "call_type": call_type,
                         "received_at": when if isinstance(when, str) else when.isoformat()},
            "subject": served.world.persons[person].subject(), "purpose": purpose}
    if attestation is not None:
        body["emergency_attestation"] = attestation
    for _ in range(3):
        answer = call(served, "POST", "/v1/briefings", key, body)
        if answer.status != 200 or answer.json["resolution"]["status"] != "unavailable":
            break
    return answer


def resolved(answer: Answer) -> dict:
    assert answer.status == 200, answer.text[:500]
    assert answer.json["resolution"]["status"] == "resolved", answer.json["resolution"]
    return answer.json


def reached(answer: Answer) -> set[str]:
    """Every item id a briefing disclosed: each line's item and every merged source."""
    items = resolved(answer)["items"]
    return {i["item_id"] for i in items} | {s["item_id"] for i in items for s in i.get("sources", [])}


def names_no_program(text: str) -> None:
    for name in PROTECTED_AGENCIES + PROTECTED_PREFIXES:
        assert name not in text, f"the answer names {name!r}: {text[:600]}"


def item_body(item_id: str, record_id: str, **changes) -> dict:
    return {"item_id": item_id, "record_id": record_id, "category": "effective_approach", "code": "APPR_HIJACK",
            "text": "rewritten by another agency", "legal_category": "AGENCY_OPERATIONAL", "status": "active", **changes}


def consent_body(consent_id: str, record_id: str, **changes) -> dict:
    return {"consent_id": consent_id, "record_id": record_id, "recipients": "officer|dispatcher",
            "purposes": "EMERGENCY|LAW", "categories": "PART2|PHI", "valid_from": "2020-01-01",
            "valid_until": "2099-01-01", **changes}


# ---- finding 1: a PHI consent unlocks Part 2 items -------------------------------------------------------------------

def test_officer_with_phi_consent_gets_no_part2_item(served):
    got = reached(brief(served, "officer-metro", "A"))
    assert "CI-A-PHI-COMM" in got                          # the crisis plan works for what it names: PHI, listed category
    assert not got & {"CI-A-P2-APPR", "CI-A-P2-COMM"}, "item categories alone unlocked Part 2 items"
    assert "CI-A-PHI-MED" not in got                      # a PHI item of a category the consent does not list
    assert not reached(brief(served, "co-crisis", "A")) & {"CI-A-P2-APPR", "CI-A-P2-COMM"}


def test_a_misspelt_or_item_only_consent_scope_is_refused_not_widened(served):
    # A scope of `PART2|medicl` once dropped the typo and so covered every Part 2 item of the record.
    for categories in ("PART2|medicl", "PART2|Medical", "part2", "medical|effective_approach", ""):
        answer = call(served, "POST", "/v1/consents", "feed-bh",
                      consent_body("CNS-F-TYPO", "EHR-F0001", recipients="officer", categories=categories))
        assert answer.status == 422 and "categories" in answer.json["fields"], (categories, answer.text[:300])
    assert not reached(brief(served, "officer-metro", "F")) & {"CI-F-P2"}


def test_an_empty_consent_cannot_break_every_briefing_about_a_person(served):
    # Empty lists were stored as NULL, after which every briefing about the person answered 500, for everyone.
    before = reached(brief(served, "co-crisis", "G", purpose="TREATMENT"))
    for field in ("recipients", "purposes", "categories"):
        answer = call(served, "POST", "/v1/consents", "feed-bh", consent_body("CNS-G-EMPTY", "EHR-G0001", **{field: []}))
        assert answer.status == 422 and field in answer.json["fields"], (field, answer.text[:300])
    assert reached(brief(served, "co-crisis", "G", purpose="TREATMENT")) == before


def test_part2_consent_reaches_only_the_agency_and_category_it_names(served):
    got = reached(brief(served, "co-crisis", "C"))
    assert "CI-C-P2-SVC" in got                           # control: a PART2 consent naming CRISIS_TEAM works
    assert "CI-C-P2-MED" not in got                       # but only for the item category it lists
    for key, purpose in (("co-metro", "EMERGENCY"), ("officer-metro", "EMERGENCY"), ("dispatcher-911", "EMERGENCY"),
                         ("ems-county", "TREATMENT")):
        assert not reached(brief(served, key, "C", purpose=purpose)) & {"CI-C-P2-SVC", "CI-C-P2-MED"}, key
    before_it_was_signed = served.world.at(-150)          # the incident's own time may narrow, never widen
    assert "CI-C-P2-SVC" not in reached(brief(served, "co-crisis", "C", received_at=before_it_was_signed))


# ---- finding 2: the caller chose the time ------------------------------------------------------------------------------

def test_incident_time_in_an_expired_consent_window_releases_nothing(served):
    inside_the_old_window = served.world.at(-60)
    got = reached(brief(served, "officer-metro", "B", received_at=inside_the_old_window))
    assert "CI-B-CJI" in got                              # control: the person was found and briefed
    assert not got & {"CI-B-PHI-APPR", "CI-B-P2-SVC", "CI-B-PHI-TRIG", "CI-B-OPS-EXPIRED"}
    for key, purpose in (("co-crisis", "TREATMENT"), ("ems-county", "TREATMENT")):
        got = reached(brief(served, key, "B", purpose=purpose, received_at=inside_the_old_window))
        assert not got & {"CI-B-P2-SVC", "CI-B-OPS-EXPIRED"}, (key, got)


def test_implausible_incident_times_are_422_at_incident_received_at(served):
    now = datetime.now(timezone.utc)
    for when in (now + timedelta(days=2), now - timedelta(days=365 * 31), "0001-01-01T00:00:00+00:00",
                 "9999-12-31T23:59:59+00:00"):
        answer = brief(served, "officer-metro", "B", received_at=when)
        assert answer.status == 422, (when, answer.text[:300])
        assert "incident.received_at" in answer.json.get("fields", {}), answer.json
    for when in (now + timedelta(hours=12), now - timedelta(days=365 * 29)):
        assert brief(served, "officer-metro", "B", received_at=when).status == 200, when


# ---- finding 3: one agency's feed took over another's items and consents --------------------------------------------

def test_feed_cannot_rewrite_another_agencys_item(served):
    answer = call(served, "POST", "/v1/context-items", "feed-metro", item_body("CI-F-P2", "RMS-F0001"))
    assert answer.status == 403, answer.text
    assert "this item belongs to another agency" in answer.json["message"]
    names_no_program(answer.text)
    line = next(i for i in resolved(brief(served, "co-crisis", "F"))["items"] if i["item_id"] == "CI-F-P2")
    assert (line["text"], line["category"]) == ("speak slowly and offer water (case manager; original)",
                                                "effective_approach")
    events = call(served, "GET", "/v1/audit/events?principal=feed-metro&limit=1000", "auditor-1").json["events"]
    assert any(e["action"] == "write_refused" and e.get("id") == "CI-F-P2" and e.get("principal") == "feed-metro"
               and e.get("agency") and e.get("kind") for e in events), events[:5]


def test_feed_cannot_rewrite_another_agencys_consent(served):
    answer = call(served, "POST", "/v1/consents", "feed-metro", consent_body("CNS-F-P2", "RMS-F0001"))
    assert answer.status == 403, answer.text
    assert "this consent belongs to another agency" in answer.json["message"]
    names_no_program(answer.text)
    assert "CI-F-P2" in reached(brief(served, "co-metro", "F"))      # the consent to co-responders still holds
    assert "CI-F-P2" not in reached(brief(served, "officer-metro", "F"))
    events = call(served, "GET", "/v1/audit/events?principal=feed-metro&limit=1000", "auditor-1").json["events"]
    assert any(e["action"] == "write_refused" and e.get("id") == "CNS-F-P2" for e in events)


def test_a_feed_cannot_date_a_verification_ahead_to_outrank_another_agencys_copy(served):
    ahead = (datetime.now(timezone.utc) + timedelta(days=3650)).isoformat()
    for field in ("observed_at", "last_verified_at"):
        answer = call(served, "POST", "/v1/context-items", "feed-metro",
                      item_body("CI-F-AHEAD", "RMS-F0001", code="APPR_SLOW_APPROACH_F", **{field: ahead}))
        assert answer.status == 422 and field in answer.json["fields"], (field, answer.text[:300])


def test_admin_cannot_move_an_item_or_consent_onto_another_agencys_record(served):
    moved = item_body("CI-F-PHI-MOVE", "RMS-F0001", category="sensory_need", legal_category="PHI")
    assert call(served, "POST", "/v1/context-items", "admin-1", moved).status == 409
    assert call(served, "POST", "/v1/consents", "admin-1", consent_body("CNS-H-PHI", "VR-H0001")).status == 409
    assert call(served, "POST", "/v1/context-items/CI-F-PHI-MOVE/retract", "feed-metro", {}).status == 403
    assert call(served, "POST", "/v1/context-items/CI-F-PHI-MOVE/retract", "feed-bh", {}).status == 200


# ---- finding 4: identity answers disclosed program participation ---------------------------------------------------

def _fhir_match(served, key: str, person: str) -> Answer:
    p = served.world.persons[person]
    patient = {"resourceType": "Patient", "name": [{"family": p.family_name, "given": [p.given_name]}],
               "birthDate": p.dob, "telecom": [{"system": "phone", "value": p.phone}]}
    return call(served, "POST", "/fhir/Patient/$match", key,
                {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]},
                headers={"Content-Type": "application/fhir+json", "X-Purpose-Of-Use": "EMERGENCY"})


def test_match_answers_name_no_program(served):
    subject = {"subject": served.world.persons["D"].subject(), "purpose": "EMERGENCY"}
    refs, persons = set(), set()
    for key in ("officer-metro", "ems-county"):
        answer = call(served, "POST", "/v1/match", key, subject)
        assert answer.json["resolution"]["status"] == "resolved"
        names_no_program(answer.text)
        refs |= {c["record_id"] for c in answer.json["resolution"]["candidates"]}
        persons |= {c["person_id"] for c in answer.json["resolution"]["candidates"]}
    briefing = brief(served, "officer-metro", "D")
    names_no_program(briefing.text)
    refs |= {c["record_id"] for c in resolved(briefing)["resolution"]["candidates"]}
    persons |= {c["person_id"] for c in resolved(briefing)["resolution"]["candidates"]}
    fhir = _fhir_match(served, "officer-metro", "D")
    assert fhir.status == 200, fhir.text[:300]
    names_no_program(fhir.text)
    identifiers = [i for e in fhir.json["entry"] if e["resource"]["resourceType"] == "Patient"
                   for i in e["resource"].get("identifier", [])]
    assert identifiers and all(i["system"] == "urn:briefing:record-ref" and "assigner" not in i
                               and re.fullmatch(r"ref-[0-9a-f]{20}", i["value"]) for i in identifiers), identifiers
    assert len(refs) == 1                                  # the same query, the same record: one stable reference
    assert all(re.fullmatch(r"ref-[0-9a-f]{20}", r) for r in refs), refs
    # A store person id is an unkeyed hash of a record id (guess `SUD-D0001`, hash it, compare): responders get a
    # keyed reference instead, the same one for the same person.
    assert len(persons) == 1 and all(re.fullmatch(r"psn-[0-9a-f]{20}", p) for p in persons), persons
    steward = call(served, "POST", "/v1/match", "steward-1", subject).json["resolution"]["candidates"]
    assert steward[0]["record_id"] in {"SUD-D0001", "EHR-D0001"}   # stewards review records: they keep real ids
    assert steward[0]["person_id"] not in persons and not steward[0]["person_id"].startswith("psn-")


# ---- finding 5: FHIR $match was quadratic in repeated parameters ---------------------------------------------------

def test_fhir_repeated_parameters_do_not_hang(served):
    p = served.world.persons["C"]
    patient = {"resourceType": "Patient", "name": [{"family": p.family_name, "given": [p.given_name]}]}
    parameters = [{"name": "count", "valuePositiveInt": 1}] * 16_000 + [{"name": "resource", "resource": patient}]
    body = json.dumps({"resourceType": "Parameters", "parameter": parameters}).encode()
    # Linear work answers this in well under a second; the quadratic check took 20 s and more (test_complexity.py
    # measures the growth itself).
    answer = call(served, "POST", "/fhir/Patient/$match", "officer-metro", raw=body, timeout=5,
                  headers={"Content-Type": "application/fhir+json", "X-Purpose-Of-Use": "EMERGENCY"})
    assert answer.status == 422 and answer.json["resourceType"] == "OperationOutcome", answer.text[:300]


# ---- finding 7, each bullet HTTP can observe ----------------------------------------------------------------------

def test_auditor_person_search_finds_steward_reads(served):
    match = call(served, "POST", "/v1/match", "steward-1",
                 {"subject": served.world.persons["C"].subject(), "purpose": "EMERGENCY"})
    person_id = match.json["resolution"]["candidates"][0]["person_id"]
    assert call(served, "GET", f"/v1/persons/{person_id}", "steward-1").status == 200
    events = call(served, "GET", f"/v1/audit/events?person_id={person_id}&limit=1000", "auditor-1").json["events"]
    assert any(e["action"] == "person_read" and e["principal"] == "steward-1" for e in events), \
        [e["action"] for e in events]


class _Browser:
    """A cookie jar over http.client that does not follow redirects: the steward pages as a browser sees them."""

    def __init__(self, base: str):
        parts = urllib.parse.urlsplit(base)
        self.host, self.port, self.cookie = parts.hostname, parts.port, ""

    def request(self, method: str, path: str, form: dict | None = None, cookie: str | None = None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Cookie": f"briefing_review={cookie if cookie is not None else self.cookie}"}
        body = urllib.parse.urlencode(form) if form is not None else None
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        for header in response.headers.get_all("Set-Cookie") or []:
            jar = SimpleCookie(header)
            if "briefing_review" in jar and cookie is None:
                self.cookie = jar["briefing_review"].value
        connection.close()
        assert response.status < 500 and "Traceback" not in text, (method, path, response.status)
        return response.status, response.headers, text


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_cookie_replayed_after_logout_is_refused(served):
    browser = _Browser(served.base)
    status, _, page = browser.request("GET", "/review/login")
    assert status == 200
    status, headers, _ = browser.request("POST", "/review/login", {"csrf_token": _csrf(page),
                                                                   "key": served.keys["steward-1"], "next": "/review"})
    assert status in (302, 303), status
    status, _, page = browser.request("GET", "/review")
    assert status == 200 and "steward-1" in page         # signed in
    copied = browser.cookie
    status, _, _ = browser.request("POST", "/review/logout", {"csrf_token": _csrf(page)})
    assert status in (302, 303)
    status, headers, _ = browser.request("GET", "/review", cookie=copied)
    assert status in (302, 303) and "/review/login" in headers["Location"], (status, headers.get("Location"))


def test_403_never_names_the_owner(served):
    h = served.world.persons["H"]
    probes = [
        ("POST", "/v1/records", {"record_id": "EHR-H0001", "given_name": h.given_name, "family_name": h.family_name}),
        ("DELETE", "/v1/records/EHR-H0001", None),
        ("POST", "/v1/context-items/CI-H-PHI/retract", {}),
        ("POST", "/v1/consents/CNS-H-PHI/revoke", {}),
        ("POST", "/v1/context-items", item_body("CI-H-NEW", "EHR-H0001")),
        ("POST", "/v1/consents", consent_body("CNS-H-NEW", "EHR-H0001")),
        ("POST", "/v1/context-items", item_body("CI-H-PHI", "RMS-F0001")),
        ("POST", "/v1/consents", consent_body("CNS-H-PHI", "RMS-F0001")),
    ]
    for method, path, body in probes:
        answer = call(served, method, path, "feed-metro", body)
        assert answer.status == 403, (method, path, answer.status, answer.text[:300])
        assert "COUNTY_BH" not in answer.text and "REGISTRY" not in answer.text, (method, path, answer.text)


def test_feed_learns_nothing_from_a_copied_record(served):
    copy = {"record_id": f"RMS-COPY-G-{served.kind}", **served.world.persons["G"].identity()}
    del copy["state"]
    first = call(served, "POST", "/v1/records", "feed-metro", copy)
    assert first.status == 201 and first.json == {"record_id": copy["record_id"], "created": True}, first.text
    again = call(served, "POST", "/v1/records", "feed-metro", copy)
    assert again.status == 200 and again.json == {"record_id": copy["record_id"], "created": False}, again.text
    admin = call(served, "POST", "/v1/records", "admin-1", {**copy, "record_id": f"ADM-COPY-G-{served.kind}",
                                                           "agency": "METRO_PD"})
    assert admin.status == 201 and {"person_id", "joined"} <= set(admin.json), admin.text


def test_huge_pair_id_is_404(served):
    for pair_id in (2 ** 63, 2 ** 64, 10 ** 40):
        assert call(served, "GET", f"/v1/review/pairs/{pair_id}", "steward-1").status == 404
        assert call(served, "POST", f"/v1/review/pairs/{pair_id}/decision", "steward-1",
                    {"decision": "unsure", "note": "probe"}).status == 404
        assert call(served, "POST", f"/v1/review/decisions/{pair_id}/undo", "steward-1", {}).status == 404
        assert call(served, "POST", f"/v1/persons/events/{pair_id}/undo", "steward-1", {}).status == 404


#: Every endpoint that reads a JSON body, with a key allowed to call it (so the body is read).
JSON_ENDPOINTS = (("/v1/briefings", "officer-metro"), ("/v1/match", "officer-metro"),
                  ("/fhir/Patient/$match", "officer-metro"), ("/v1/records", "feed-metro"),
                  ("/v1/context-items", "feed-metro"), ("/v1/consents", "feed-metro"), ("/v1/feedback", "officer-metro"),
                  ("/v1/context-items/CI-NOPE/retract", "feed-metro"), ("/v1/consents/CNS-NOPE/revoke", "feed-metro"),
                  ("/v1/persons/P-NOPE/erase-registry", "admin-1"), ("/v1/review/pairs/1/decision", "steward-1"),
                  ("/v1/persons/P-NOPE/split", "steward-1"), ("/v1/persons/merge", "steward-1"))


def _nested(depth: int) -> list[bytes]:
    inner = b'{"resourceType": "Patient", "extension": ' + b"[" * depth + b"]" * depth + b"}"
    return [b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth,
            b'{"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": ' + inner + b"}]}",
            b'{"subject": ' + b'{"a":' * depth + b"1" + b"}" * depth + b', "purpose": "EMERGENCY"}']


def test_deeply_nested_json_is_400_or_422_everywhere(served):
    for path, key in JSON_ENDPOINTS:
        for depth in (5_000, 100_000):
            for body in _nested(depth):
                answer = call(served, "POST", path, key, raw=body, headers={"X-Purpose-Of-Use": "EMERGENCY"})
                assert answer.status in (400, 422), (path, depth, body[:40], answer.status, answer.text[:200])


def test_serious_threat_disclosure_reaches_officer_for_threat(served):
    got = reached(brief(served, "officer-metro", "E", purpose="THREAT", call_type="disturbance"))
    assert "CI-E-THREAT" in got, "a clinician's serious-threat disclosure within 14 days never reached the officer"
    assert "CI-E-THREAT-LONG" not in got                  # beyond the 14-day cap: not an imminent threat
    assert not reached(brief(served, "officer-metro", "E", purpose="EMERGENCY")) & {"CI-E-THREAT", "CI-E-THREAT-LONG"}


def test_ems_emergency_exception_refused_on_trespass(served):
    for call_type in ("trespass", "other"):
        got = reached(brief(served, "ems-county", "D", call_type=call_type, attestation=ATTESTATION))
        assert "CI-D-P2-MED" not in got, call_type
    assert "CI-D-P2-MED" not in reached(brief(served, "ems-county", "D", call_type="overdose"))   # no attestation


def test_ems_emergency_exception_on_an_overdose_with_attestation_is_audited(served):
    incident = incident_id()
    got = reached(brief(served, "ems-county", "D", call_type="overdose", attestation=ATTESTATION, incident=incident))
    assert "CI-D-P2-MED" in got
    events = call(served, "GET", f"/v1/audit/events?incident_id={incident}", "auditor-1").json["events"]
    briefing = [e for e in events if e["action"] == "briefing"]
    assert len(briefing) == 1 and ATTESTATION in json.dumps(briefing[0]), briefing


def test_feedback_on_unseen_item_is_refused(served):
    incident = incident_id()
    assert "CI-A-CJI" in reached(brief(served, "officer-metro", "A", incident=incident))
    for key, item, at in (("officer-metro", "CI-A-P2-APPR", incident), ("officer-metro", "CI-A-CJI", incident_id()),
                          ("officer-north", "CI-A-CJI", incident), ("ems-county", "CI-A-CJI", incident)):
        answer = call(served, "POST", "/v1/feedback", key, {"incident_id": at, "item_id": item, "helped": True})
        assert answer.status == 403, (key, item, answer.status)
        assert "no briefing showed this item to you at this incident" in answer.json["message"]


def test_feedback_twice_on_a_shown_item_is_409(served):
    incident = incident_id()
    assert "CI-A-CJI" in reached(brief(served, "officer-metro", "A", incident=incident))
    body = {"incident_id": incident, "item_id": "CI-A-CJI", "helped": True}
    assert call(served, "POST", "/v1/feedback", "officer-metro", body).status == 201
    assert call(served, "POST", "/v1/feedback", "officer-metro", {**body, "helped": False}).status == 409


def test_resent_consent_never_moves_a_revocation_later_across_utc_offsets(served):
    day = (datetime.now(timezone.utc) - timedelta(days=3)).date().isoformat()
    consent = {"consent_id": "CNS-H-ORDER", "record_id": "EHR-H0001", "recipients": "co_responder",
               "purposes": "EMERGENCY", "categories": "PHI", "valid_from": "2020-01-01", "valid_until": "2099-01-01"}
    earlier, later = f"{day}T10:00:00+05:00", f"{day}T06:00:00+00:00"          # 05:00 UTC, then 06:00 UTC
    assert call(served, "POST", "/v1/consents", "feed-bh", {**consent, "revoked_at": earlier}).status == 200
    assert call(served, "POST", "/v1/consents", "feed-bh", {**consent, "revoked_at": later}).status == 200
    answer = call(served, "POST", "/v1/consents/CNS-H-ORDER/revoke", "feed-bh", {"revoked_at": f"{day}T05:30:00+00:00"})
    assert answer.status == 200, answer.text
    assert datetime.fromisoformat(answer.json["previous_revoked_at"]) == datetime.fromisoformat(earlier)
    assert answer.json["changed"] is False


# ---- generated: role x purpose x call type x incident time x attestation -------------------------------------------

@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(principal=st.sampled_from(RESPONDER_KEYS), purpose=st.sampled_from(PURPOSES),
       call_type=st.sampled_from(CALL_TYPES), person=st.sampled_from("ABCDE"), attested=st.booleans(),
       days=st.sampled_from([0, -0.5, -3, -45, -60, -120, -150, -400, -3650]))
def test_generated_requests_never_reach_a_principal_an_item_must_not(served, principal, purpose, call_type, person,
                                                                     attested, days):
    name, role, agency, purposes = principal
    when = served.world.at(days) if days else datetime.now(timezone.utc)
    answer = brief(served, name, person, purpose, call_type, when, ATTESTATION if attested else None)
    if purpose not in purposes:
        assert answer.status == 403, answer.text[:300]
        return
    got = reached(answer)
    assert all(c["record_id"].startswith("ref-") for c in answer.json["resolution"]["candidates"])
    now = datetime.now(timezone.utc)
    for item_id in got:
        truth = served.world.truth.get(item_id)
        assert truth is not None and truth.person == person, f"{item_id} is not an item of person {person}"
        assert truth.may_reach(role, agency, purpose, call_type, attested, (now, when)), \
            f"{item_id} ({truth.legal}) reached {role}@{agency} for {purpose} on {call_type} at {when:%Y-%m-%d}"
    withheld = answer.json["withheld"]
    assert not [w for w in withheld if re.search("PART2|CJI", w["reason"])], withheld
    phi = sum(served.world.truth[i].legal == "PHI" for i in served.world.items_of(person))
    assert sum(w["count"] for w in withheld) <= phi, withheld  # only PHI may be mentioned as withheld


def test_a_feed_sending_jr_and_sr_copies_learns_nothing_and_only_stewards_see_the_held_pair(served):
    # Last but one: it gives person G a namesake of another generation (G's briefings are then ambiguous).
    identity = {k: v for k, v in served.world.persons["G"].identity().items() if k != "state"}
    records = {suffix: f"RMS-{suffix}-G-{served.kind}" for suffix in ("SR", "JR")}
    for suffix, record_id in records.items():               # SR joins G; JR may not join a person marked SR
        answer = call(served, "POST", "/v1/records", "feed-metro", {"record_id": record_id, **identity, "name_suffix": suffix})
        assert answer.status == 201 and answer.json == {"record_id": record_id, "created": True}, answer.text
    for name, role, _, _ in KEYS:
        queue = call(served, "GET", "/v1/review/queue?reason=held_apart&limit=200", name)
        if role != "steward":
            assert queue.status == 403 and records["JR"] not in queue.text, (name, queue.text[:300])
            continue
        assert queue.status == 200, (name, queue.text[:300])
        held = [p for p in queue.json["pairs"] if records["JR"] in (p["record_id_l"], p["record_id_r"])]
        assert [(p["reason"], p["detail"], p["record_id_r"]) for p in held] == [("held_apart", "suffix", records["JR"])]
    assert call(served, "GET", "/v1/review/queue?reason=held", "steward-1").status == 422


def test_the_server_logged_no_unhandled_error(served):
    log = served.log.read_text(errors="replace")
    first = min((k for k in (log.find("Traceback"), log.find("unhandled error")) if k >= 0), default=-1)
    assert first < 0, log[max(0, first - 300):][:3000]
