"""`POST /fhir/Patient/$match`: FHIR R4 Parameters in, a valid searchset Bundle with match grades out."""

import json
from datetime import datetime

import pandas as pd
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from sqlalchemy import select

from api.service.audit import verify
from api.service.keys import create_key
from api.service.reference import person_reference, record_reference
from api.service.store import audit_events, records
from api.web.app import create_app
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

MATCH = "/fhir/Patient/$match"
GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
GENDER = {"M": "male", "F": "female", "X": "other", "U": "unknown"}
REFERENCE = "urn:briefing:record-ref"          # responders see opaque record references, never record ids


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    county = tmp_path_factory.mktemp("county")
    db, store = loaded_county(county, 600, 29)
    keys = {
        "officer": create_key(store, "pd-1", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "co": create_key(store, "co-1", Role.co_responder, "COUNTY_BH", [Purpose.TREATMENT]),
        "steward": create_key(store, "st-1", Role.steward, "COUNTY", []),
        "auditor": create_key(store, "au-1", Role.auditor, "COUNTY", []),
        "feed": create_key(store, "feed-1", Role.feed, "METRO_PD", []),
    }
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    return create_app(db).test_client(), keys, store, _subjects(incidents)


def _subjects(incidents) -> list[dict]:
    """The incidents' subjects as a FHIR client can state them: an approximate age becomes a birth year."""
    out = []
    for query in incident_queries(incidents):
        received = datetime.fromisoformat(query.pop("received_at"))
        if "approx_age" in query and "dob" not in query:
            query["birth_year"] = received.year - query["approx_age"]
        query.pop("approx_age", None)
        out.append(query)
    return out


def _patient(subject: dict) -> dict:
    name = {"use": "official", "family": subject.get("family_name"),
            "given": [g for g in (subject.get("given_name"), subject.get("middle_name")) if g],
            "suffix": [subject["name_suffix"]] if subject.get("name_suffix") else None}
    address = {"line": [subject["street"]] if subject.get("street") else None, "city": subject.get("city"),
               "postalCode": subject.get("postcode")}
    patient = {"resourceType": "Patient", "name": [{k: v for k, v in name.items() if v}],
               "birthDate": subject.get("dob") or (str(subject["birth_year"]) if "birth_year" in subject else None),
               "gender": GENDER.get(subject.get("sex")),
               "telecom": [{"system": s, "value": subject[f]} for s, f in (("phone", "phone"), ("email", "email"))
                           if subject.get(f)],
               "address": [{k: v for k, v in address.items() if v}] if any(address.values()) else None}
    return {k: v for k, v in patient.items() if v}


def _parameters(patient: dict, only_certain: bool | None = None, count: int | None = None) -> dict:
    parameters = [{"name": "resource", "resource": patient}]
    if only_certain is not None:
        parameters.append({"name": "onlyCertainMatches", "valueBoolean": only_certain})
    if count is not None:
        parameters.append({"name": "count", "valuePositiveInt": count})
    return {"resourceType": "Parameters", "parameter": parameters}


def _post(client, key, body, purpose=None, content_type="application/fhir+json", address="127.0.0.1"):
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if purpose:
        headers["X-Purpose-Of-Use"] = purpose
    return client.post(MATCH, data=body if isinstance(body, str) else json.dumps(body), headers=headers,
                       environ_base={"REMOTE_ADDR": address})


def _v1(client, key, subject, purpose="LAW") -> dict:
    answer = client.post("/v1/match", json={"subject": subject, "purpose": purpose},
                         headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    return answer.get_json()["resolution"]


def _matches(bundle: dict) -> list[dict]:
    return [e for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def _grade(entry: dict) -> str:
    [extension] = [x for x in entry["search"]["extension"] if x["url"] == GRADE]
    return extension["valueCode"]


def _last_events(store, n: int) -> list[dict]:
    """The newest `n` audit events, newest first, payload and action together."""
    with store.engine.connect() as connection:
        rows = connection.execute(select(audit_events).order_by(audit_events.c.seq.desc()).limit(n)).mappings().all()
    return [json.loads(r["payload"]) | {"action": r["action"], "request_id": r["request_id"]} for r in rows]


def _outcome(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/fhir+json" and "Traceback" not in response.get_data(as_text=True)
    body = response.get_json()
    OperationOutcome.model_validate(body)
    assert body["resourceType"] == "OperationOutcome" and all(i["severity"] == "error" for i in body["issue"])
    return body


def test_a_match_is_a_valid_r4_searchset_with_the_grades_and_scores_of_v1_match(service):
    client, keys, store, subjects = service
    secret = client.application.extensions["briefing"].reference_key
    matched = 0
    for subject in subjects[:30]:
        response = _post(client, keys["officer"], _parameters(_patient(subject)), "LAW")
        assert response.status_code == 200 and response.mimetype == "application/fhir+json"
        bundle = response.get_json()
        Bundle.model_validate(bundle)
        real_ids = [c["record_id"] for c in _last_events(store, 1)[0]["candidates"]]     # the audit log keeps them
        expected = _v1(client, keys["officer"], subject)["candidates"]
        entries = _matches(bundle)
        assert bundle["type"] == "searchset" and bundle["total"] == len(entries) == len(expected)
        assert [(e["resource"]["id"], e["search"]["score"], _grade(e)) for e in entries] == \
            [(c["person_id"], c["match_probability"], c["grade"]) for c in expected]
        for entry, record_id in zip(entries, real_ids):
            assert entry["resource"]["identifier"] == [{"system": REFERENCE, "value": record_reference(record_id, secret)}]
        matched += bool(entries)
    assert matched >= 15


def test_a_responder_match_carries_no_identity_field_of_any_stored_record(service):
    """The best-matching record may be a substance-use program's: its phone, address, name, sex or birth date
    tell an officer without consent what that program holds. A responder gets the references only."""
    client, keys, store, subjects = service
    shown = 0
    for key, purpose in (("officer", "LAW"), ("co", "TREATMENT")):
        for subject in subjects[:20]:
            bundle = _post(client, keys[key], _parameters(_patient(subject)), purpose).get_json()
            for entry in _matches(bundle):
                patient = entry["resource"]
                assert set(patient) == {"resourceType", "id", "identifier"}, patient
                assert patient["id"].startswith("psn-") and [i["system"] for i in patient["identifier"]] == [REFERENCE]
                shown += 1
    assert shown >= 15


def test_a_steward_match_maps_the_best_records_identity_fields_onto_the_patient(service):
    client, keys, store, subjects = service
    matched = 0
    for subject in subjects[:30]:
        bundle = _post(client, keys["steward"], _parameters(_patient(subject))).get_json()
        Bundle.model_validate(bundle)
        expected = _v1(client, keys["steward"], subject)["candidates"]
        entries = _matches(bundle)
        assert [(e["resource"]["id"], _grade(e)) for e in entries] == [(c["person_id"], c["grade"]) for c in expected]
        for entry, candidate in zip(entries, expected):
            with store.engine.connect() as connection:
                record = connection.execute(select(records).where(records.c.record_id == candidate["record_id"])
                                            ).mappings().one()
            patient = entry["resource"]
            assert patient["identifier"] == [{"system": "urn:briefing:record-id", "value": record["record_id"],
                                              "assigner": {"display": record["agency"]}}]
            assert patient["name"][0].get("family") == record["family_name"]
            assert patient.get("birthDate") == (record["dob"] or record["birth_year"])
            assert patient.get("gender") == GENDER.get(record["sex"])
            assert [t["value"] for t in patient.get("telecom", [])] == [v for v in (record["phone"], record["email"]) if v]
            assert patient.get("address", [{}])[0].get("postalCode") == record["postcode"]
            assert set(patient) <= {"resourceType", "id", "identifier", "name", "telecom", "gender", "birthDate", "address"}
        matched += bool(entries)
    assert matched >= 15


def test_plain_application_json_is_accepted_and_a_steward_needs_no_purpose(service):
    client, keys, _, subjects = service
    body = _parameters(_patient(subjects[0]))
    assert _post(client, keys["officer"], body, "LAW", content_type="application/json").status_code == 200
    Bundle.model_validate(_post(client, keys["steward"], body).get_json())


def test_count_keeps_the_best_candidates_and_only_certain_matches_returns_a_single_certain_one(service):
    client, keys, _, subjects = service
    several = single_certain = 0
    for subject in subjects[:400]:
        resolution = _v1(client, keys["officer"], subject)
        grades = [c["grade"] for c in resolution["candidates"]]
        if len(grades) >= 2 and several < 3:
            several += 1
            bundle = _post(client, keys["officer"], _parameters(_patient(subject), count=1), "LAW").get_json()
            Bundle.model_validate(bundle)
            assert [e["resource"]["id"] for e in _matches(bundle)] == [resolution["candidates"][0]["person_id"]]
        single = grades.count("certain") == 1 and resolution["status"] == "resolved"
        if "certain" not in grades or (single and single_certain >= 3):
            continue
        bundle = _post(client, keys["officer"], _parameters(_patient(subject), only_certain=True), "LAW").get_json()
        Bundle.model_validate(bundle)
        entries = _matches(bundle)
        assert single, resolution              # two persons at `certain` is the case below, made on purpose
        single_certain += 1
        assert [(e["resource"]["id"], _grade(e)) for e in entries] == [(resolution["candidates"][0]["person_id"], "certain")]
        assert len(grades) == 1 or len(entries) < len(grades)
        if several >= 2 and single_certain >= 3:
            break
    assert several >= 1 and single_certain >= 3


def test_only_certain_matches_returns_nothing_when_two_persons_are_certain(service):
    client, keys, _, _ = service
    twin = {"agency": "METRO_PD", "given_name": "Ottoline", "family_name": "Vandersloot", "ssn_last4": "4821"}
    for record_id, sex, dob in (("RMS-TWIN-F", "F", "1958-09-17"), ("RMS-TWIN-M", "M", "1931-02-03")):
        written = client.post("/v1/records", json={**twin, "record_id": record_id, "sex": sex, "dob": dob},
                              headers={"Authorization": f"Bearer {keys['feed']}"})
        assert written.status_code == 201, written.get_json()
    subject = {"given_name": "Ottoline", "family_name": "Vandersloot", "ssn_last4": "4821"}
    resolution = _v1(client, keys["officer"], subject)
    assert [c["grade"] for c in resolution["candidates"]] == ["certain", "certain"], resolution
    patient = {**_patient(subject), "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-4821"}]}
    bundle = _post(client, keys["officer"], _parameters(patient, only_certain=True), "LAW").get_json()
    Bundle.model_validate(bundle)
    assert _matches(bundle) == [] and bundle["total"] == 0
    assert "multiple-matches" in [e["resource"]["issue"][0]["code"] for e in bundle["entry"]]


def test_an_ambiguous_resolution_still_returns_the_candidates_with_an_outcome_entry(service):
    client, keys, _, subjects = service
    for subject in subjects:
        resolution = _v1(client, keys["officer"], subject)
        if resolution["status"] == "ambiguous":
            break
    else:
        pytest.fail("the fixture county has no ambiguous incident: choose another seed")
    bundle = _post(client, keys["officer"], _parameters(_patient(subject)), "LAW").get_json()
    Bundle.model_validate(bundle)
    assert [e["resource"]["id"] for e in _matches(bundle)] == [c["person_id"] for c in resolution["candidates"]]
    [outcome] = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["resource"]["issue"][0]["code"] == "multiple-matches" and bundle["total"] == len(resolution["candidates"])


def test_every_supported_patient_element_becomes_the_subject_v1_match_would_be_given(service):
    client, keys, store, _ = service
    patient = {"resourceType": "Patient", "active": True, "_birthDate": {"extension": []},
               "name": [{"use": "nickname", "given": ["Dot"], "family": "Ashby"},
                        {"use": "official", "given": ["Dorothy", "Jane", "Ann"], "family": "Ashby", "suffix": ["II"]},
                        {"use": "maiden", "text": "Dorothy Pell"}],
               "birthDate": "1971-06-02", "gender": "female",
               "telecom": [{"system": "phone", "value": "614-555-0100", "use": "old"},
                           {"system": "sms", "value": "(614) 555-0199"}, {"system": "email", "value": "dot@example.org"}],
               "address": [{"use": "old", "line": ["1 Old Rd"]},
                           {"line": ["22 Elm St", "Apt 4"], "city": "Danieltown", "state": "OH", "postalCode": "43777"}],
               "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"}]}
    subject = {"given_name": "Dorothy", "middle_name": "Jane Ann", "family_name": "Ashby", "name_suffix": "II",
               "aliases": "Dot Ashby|Dorothy Pell", "dob": "1971-06-02", "sex": "F", "phone": "(614) 555-0199",
               "email": "dot@example.org", "street": "22 Elm St Apt 4", "city": "Danieltown", "state": "OH",
               "postcode": "43777", "ssn_last4": "6789"}
    assert _post(client, keys["officer"], _parameters(patient), "LAW").status_code == 200
    _v1(client, keys["officer"], subject)
    fhir_event, v1_event = _last_events(store, 2)[::-1]
    assert fhir_event["action"] == "fhir_match" and fhir_event["query_hash"] == v1_event["query_hash"]
    text_only = {"resourceType": "Patient", "name": [{"text": "Dorothy Jane Ashby"}], "birthDate": "1971"}
    assert _post(client, keys["officer"], _parameters(text_only), "LAW").status_code == 200
    _v1(client, keys["officer"], {"given_name": "Dorothy", "middle_name": "Jane", "family_name": "Ashby", "birth_year": 1971})
    fhir_event, v1_event = _last_events(store, 2)[::-1]
    assert fhir_event["query_hash"] == v1_event["query_hash"]


@pytest.mark.parametrize("change, status, code, expression", [
    (lambda b: b["parameter"].pop(0), 422, "required", "Parameters.parameter"),
    (lambda b: b["parameter"][0]["resource"].update(resourceType="Observation"), 422, "invalid",
     "Parameters.parameter[0].resource.resourceType"),
    (lambda b: b["parameter"][0]["resource"].update(birthDate="1980-13-01"), 422, "invalid",
     "Parameters.parameter[0].resource.birthDate"),
    (lambda b: b["parameter"][0]["resource"].update(birthDate="1980-02-30"), 422, "invalid",
     "Parameters.parameter[0].resource.birthDate"),
    (lambda b: b["parameter"][0]["resource"].update(gender="M"), 422, "invalid", "Parameters.parameter[0].resource.gender"),
    (lambda b: b["parameter"][0]["resource"].update(birthdate="1980-01-01"), 422, "structure",
     "Parameters.parameter[0].resource.birthdate"),
    (lambda b: b["parameter"][0]["resource"]["name"][0].update(given="JOHN"), 422, "structure",
     "Parameters.parameter[0].resource.name[0].given"),
    (lambda b: b["parameter"].append({"name": "count", "valuePositiveInt": 0}), 422, "invalid", "Parameters.parameter[1]"),
    (lambda b: b["parameter"].append({"name": "onlyCertainMatches", "valueString": "yes"}), 422, "invalid",
     "Parameters.parameter[1]"),
    (lambda b: b["parameter"].append({"name": "onlyCertainMatch", "valueBoolean": True}), 422, "not-supported",
     "Parameters.parameter[1].name"),
    (lambda b: b.update(resourceType="Patient"), 400, "structure", "Parameters"),
])
def test_a_malformed_parameters_gets_an_operation_outcome_naming_the_field(service, change, status, code, expression):
    client, keys, _, _ = service
    body = _parameters({"resourceType": "Patient", "name": [{"given": ["JOHN"], "family": "SMITH"}], "birthDate": "1980"})
    change(body)
    outcome = _outcome(_post(client, keys["officer"], body, "LAW"), status)
    assert (code, [expression]) in [(i["code"], i.get("expression")) for i in outcome["issue"]]


def test_a_body_that_is_not_json_not_fhir_json_or_too_large_gets_an_operation_outcome(service):
    client, keys, _, _ = service
    assert _outcome(_post(client, keys["officer"], "{", "LAW"), 400)["issue"][0]["code"] == "structure"
    assert _outcome(_post(client, keys["officer"], "<Parameters/>", "LAW", content_type="application/fhir+xml"), 415)
    assert _outcome(_post(client, keys["officer"], "x" * (1 << 21), "LAW"), 413)["issue"][0]["code"] == "too-costly"


def test_no_key_a_role_that_may_not_match_or_a_purpose_the_key_lacks_is_refused(service):
    client, keys, store, subjects = service
    body = _parameters(_patient(subjects[0]))
    before = _matches_audited(store)
    assert _outcome(_post(client, None, body), 401)["issue"][0]["code"] == "login"
    assert _outcome(_post(client, "brf_not-a-key", body), 401)
    for role in ("auditor", "feed"):
        assert role in _outcome(_post(client, keys[role], body), 403)["issue"][0]["diagnostics"]
    assert "TREATMENT" in _outcome(_post(client, keys["officer"], body, "TREATMENT"), 403)["issue"][0]["diagnostics"]
    assert "X-Purpose-Of-Use" in _outcome(_post(client, keys["officer"], body, "CURIOSITY"), 400)["issue"][0]["diagnostics"]
    assert _matches_audited(store) == before             # no match was made (failed logins are security events)


def _matches_audited(store) -> int:
    with store.engine.connect() as connection:
        return len(connection.execute(select(audit_events.c.seq).where(audit_events.c.action == "fhir_match")).all())


def test_repeated_bad_keys_are_throttled_with_an_operation_outcome_and_retry_after(service):
    client, keys, _, subjects = service
    body = _parameters(_patient(subjects[0]))
    codes = [_post(client, "brf_guess", body, address="10.9.9.9").status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429
    limited = _post(client, "brf_guess", body, address="10.9.9.9")
    assert _outcome(limited, 429)["issue"][0]["code"] == "throttled" and int(limited.headers["Retry-After"]) >= 1
    assert _post(client, keys["officer"], body, address="10.9.9.9").status_code == 200


def test_each_match_is_audited_like_v1_match_with_the_purpose_from_the_header(service):
    client, keys, store, subjects = service
    subject = next(s for s in subjects if _v1(client, keys["officer"], s)["candidates"])
    before = verify(store).events
    bundle = _post(client, keys["officer"], _parameters(_patient(subject), count=1)).get_json()
    audit = verify(store)
    assert audit.ok and audit.events == before + 1
    _v1(client, keys["officer"], subject, "EMERGENCY")
    v1_event, event = _last_events(store, 2)
    assert event["action"] == "fhir_match" and event["request_id"] == bundle["id"]
    assert event["purpose"] == "LAW"                       # no header: the key's first purpose
    assert (event["principal"], event["agency"], event["role"]) == ("pd-1", "METRO_PD", "officer")
    assert event["query_hash"] == v1_event["query_hash"] and event["versions"] == v1_event["versions"]
    secret = client.application.extensions["briefing"].reference_key
    assert [{**c, "person_id": person_reference(c["person_id"], secret), "record_id": record_reference(c["record_id"], secret)}
            for c in event["candidates"]] == \
        [{"person_id": e["resource"]["id"], "record_id": e["resource"]["identifier"][0]["value"], "grade": _grade(e)}
         for e in _matches(bundle)]
    assert _post(client, keys["co"], _parameters(_patient(subject)), "treatment").status_code == 200
    [last] = _last_events(store, 1)
    assert last["action"] == "fhir_match" and last["purpose"] == "TREATMENT"
