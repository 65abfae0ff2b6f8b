"""Attacks on FHIR `$match` (issue 15, findings 4 and 5, and the nesting attack of finding 7).

- **Program participation** (finding 4): a responder's `$match` answer must not say which program
  holds a record: no record id (`EHR-…`, `SUD-…` name their source), no agency, no `assigner`. The
  Patient's identifier is the opaque reference of api/service/reference.py (system `urn:briefing:record-ref`).
  Stewards, who review records, keep the real ids (system `urn:briefing:record-id`).
- **Quadratic repetition** (finding 5): 16,000 repeated `count` parameters answer 422, and the time
  grows at most linearly: against a 1,000-parameter body, time ratio <= 2 x size ratio (median of 3).
- **Nesting**: JSON nested 100,000 deep (arrays or objects, bare or inside a Parameters) answers 400
  or 422 as an OperationOutcome, never 500.
"""

from __future__ import annotations

import json
import statistics
import time

import pandas as pd
import pytest
from sqlalchemy import select

from api.service.keys import create_key
from api.service.reference import record_reference
from api.service.store import audit_events, records
from api.web.app import create_app
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

MATCH = "/fhir/Patient/$match"
REF_SYSTEM, ID_SYSTEM = "urn:briefing:record-ref", "urn:briefing:record-id"


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    directory = tmp_path_factory.mktemp("adversarial-fhir")
    db, store = loaded_county(directory, 200, 11)
    keys = {"officer": create_key(store, "pd-fhir", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
            "ems": create_key(store, "ems-fhir", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY]),
            "steward": create_key(store, "st-fhir", Role.steward, "COUNTY", [])}
    app = create_app(db)
    incidents = pd.read_csv(directory / "incidents.csv", dtype=str, keep_default_na=False)
    return app.test_client(), keys, store, app.extensions["briefing"], incident_queries(incidents)


def _post(client, key, body, purpose=None):
    headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {key}"}
    if purpose:
        headers["X-Purpose-Of-Use"] = purpose
    return client.post(MATCH, data=body if isinstance(body, (str, bytes)) else json.dumps(body), headers=headers)


def _patient(subject: dict) -> dict:
    patient = {"resourceType": "Patient",
               "name": [{"use": "official", "family": subject.get("family_name"),
                         "given": [g for g in (subject.get("given_name"),) if g]}]}
    if subject.get("dob"):
        patient["birthDate"] = subject["dob"]
    if subject.get("phone"):
        patient["telecom"] = [{"system": "phone", "value": subject["phone"]}]
    return patient


def _parameters(patient: dict, extra: list[dict] = ()) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}, *extra]}


def _last_match_event(store) -> dict:
    with store.engine.connect() as connection:
        payload = connection.execute(select(audit_events.c.payload).where(audit_events.c.action == "fhir_match")
                                     .order_by(audit_events.c.seq.desc()).limit(1)).scalar()
    return json.loads(payload)


def _strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_match_never_tells_a_responder_which_program_holds_the_record(county):
    client, keys, store, service, subjects = county
    with store.engine.connect() as connection:
        every = connection.execute(select(records.c.record_id, records.c.agency, records.c.source_system)).all()
    agencies = {r.agency for r in every if r.agency} | {r.source_system for r in every if r.source_system}
    record_ids = {r.record_id for r in every}
    seen = 0
    for subject in subjects[:40]:
        for role, purpose in (("officer", "LAW"), ("ems", "EMERGENCY")):
            response = _post(client, keys[role], _parameters(_patient(subject)), purpose)
            assert response.status_code == 200, response.get_data(as_text=True)
            bundle = response.get_json()
            real = [c["record_id"] for c in _last_match_event(store)["candidates"]]     # the audit log keeps them
            patients = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
            assert [p["identifier"] for p in patients] == \
                [[{"system": REF_SYSTEM, "value": record_reference(r, service.reference_key)}] for r in real]
            leaked = [s for s in _strings(bundle) if s in agencies or s in record_ids or s == "assigner"]
            assert not leaked, leaked
            seen += len(patients)
    assert seen >= 20


def test_a_steward_still_sees_the_real_record_id(county):
    client, keys, store, _, subjects = county
    for subject in subjects[:40]:
        bundle = _post(client, keys["steward"], _parameters(_patient(subject))).get_json()
        real = [c["record_id"] for c in _last_match_event(store)["candidates"]]
        if real:
            first = bundle["entry"][0]["resource"]["identifier"][0]
            assert (first["system"], first["value"]) == (ID_SYSTEM, real[0])
            return
    pytest.fail("no subject matched")


def _repeated(n: int) -> bytes:
    patient = {"resourceType": "Patient", "name": [{"family": "SMITH", "given": ["JOHN"]}], "birthDate": "1980"}
    return json.dumps(_parameters(patient, [{"name": "count", "valuePositiveInt": 1}] * n)).encode()


def _median_time(client, key, body: bytes) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        response = _post(client, key, body, "LAW")
        times.append(time.perf_counter() - started)
        assert response.status_code == 422 and response.get_json()["resourceType"] == "OperationOutcome"
    return statistics.median(times)


def test_sixteen_thousand_repeated_parameters_answer_422_in_linear_time(county):
    client, keys, *_ = county
    small, large = _repeated(1_000), _repeated(16_000)
    assert len(large) < 1 << 20
    _median_time(client, keys["officer"], small)                      # warm up
    ratio = _median_time(client, keys["officer"], large) / _median_time(client, keys["officer"], small)
    size_ratio = len(large) / len(small)
    assert ratio <= 2 * size_ratio, f"time x{ratio:.1f} for size x{size_ratio:.1f}"
    outcome = _post(client, keys["officer"], large, "LAW").get_json()
    assert any("repeated" in i["diagnostics"] for i in outcome["issue"]) and len(outcome["issue"]) <= 101


@pytest.mark.parametrize("shape", ["arrays", "objects", "inside-parameters"])
def test_deeply_nested_json_to_match_answers_400_or_422_never_500(county, shape):
    client, keys, *_ = county
    depth = 100_000
    nested = {"arrays": "[" * depth + "]" * depth, "objects": '{"a":' * depth + "1" + "}" * depth}
    if shape == "inside-parameters":
        body = json.dumps(_parameters({"resourceType": "Patient", "name": [{"family": "X"}]}))
        body = body.replace('"family": "X"}', '"family": "X", "extension": ' + nested["arrays"] + "}")
    else:
        body = nested[shape]
    response = _post(client, keys["officer"], body, "LAW")
    assert response.status_code in (400, 422), response.status_code
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "Traceback" not in response.get_data(as_text=True)
