"""`GET /fhir/ServiceRequest/<id>` and `GET /fhir/Task/<id>` with ordinary keys: a referral as valid R4 resources
(the Task as SDOHCC-TaskForReferralManagement), the same access as `/v1/referrals/<id>`, law enforcement refused
by role, a Part 2 program never named, and every read audited."""

import json

import pandas as pd
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from sqlalchemy import insert, select

from api.service.audit import verify
from api.service.keys import create_key
from api.service.store import audit_events, briefed_persons, clusters, consents, records
from api.web.app import create_app
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from tests.loaded_county import COUNTY_NOW, county_clock, loaded_county
from tests.programs import register_programs

FHIR_JSON = "application/fhir+json"
SDOHCC_TASK = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-TaskForReferralManagement"


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    directory = tmp_path_factory.mktemp("county")
    db, store = loaded_county(directory, 600, 23)
    register_programs(store, "MOBILE_CRISIS", "HARBOR_SUD", "HOUSING_TEAM")
    keys = {
        "officer": create_key(store, "pd-1", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "co": create_key(store, "co-1", Role.co_responder, "COUNTY_BH", [Purpose.TREATMENT, Purpose.EMERGENCY]),
        "other_co": create_key(store, "co-9", Role.co_responder, "OTHER_BH", [Purpose.TREATMENT]),
        "crisis": create_key(store, "mc-1", Role.provider, "MOBILE_CRISIS", []),
        "sud": create_key(store, "sud-1", Role.provider, "HARBOR_SUD", []),
        "housing": create_key(store, "ho-1", Role.provider, "HOUSING_TEAM", []),
    }
    app = create_app(db, clock=county_clock)
    incidents = pd.read_csv(directory / "incidents.csv", dtype=str, keep_default_na=False)
    cases = list(zip(incidents.to_dict("records"), incident_queries(incidents)))
    return app, keys, store, _referrals(app.test_client(), keys, cases)


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def _brief(client, key, cases, purpose):
    """Brief incidents with `key` until one resolves; its incident id."""
    for row, subject in cases:
        incident = {k: row[k] for k in ("call_type", "received_at")} | {"id": row["incident_id"]}
        body = {"incident": incident,
                "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": purpose}
        answer = client.post("/v1/briefings", json=body, headers=_auth(key)).get_json()
        if answer["resolution"]["status"] == "resolved":
            return row["incident_id"]
    raise AssertionError("no incident resolved")


def _refer(client, key, body) -> dict:
    sent = client.post("/v1/referrals", json={"reason": "crisis_stabilisation", **body}, headers=_auth(key))
    assert sent.status_code == 201, sent.get_json()
    return sent.get_json()["referral"]


def _step(client, key, referral_id, event, **extra):
    answer = client.post(f"/v1/referrals/{referral_id}/events", json={"event": event, **extra}, headers=_auth(key))
    assert answer.status_code == 200, answer.get_json()


def _referrals(client, keys, cases) -> dict[str, dict]:
    """completed: a co-responder's treatment referral the crisis team accepted, engaged and completed; open: one
    it accepted and engaged; officer: an officer's; part2: a co-responder's to the Part 2 program, with no consent."""
    treated = _brief(client, keys["co"], cases, "TREATMENT")
    by_co = {"incident_id": treated, "basis": "treatment"}
    completed = _refer(client, keys["co"], {**by_co, "program": "MOBILE_CRISIS", "urgency": "follow_up",
                                            "due_within_hours": 24, "note": "prefers mornings"})
    for event in ("accept", "contact_attempted", "engaged"):
        _step(client, keys["crisis"], completed["id"], event)
    _step(client, keys["crisis"], completed["id"], "complete", outcome="engaged_in_services")
    open_ = _refer(client, keys["co"], {**by_co, "program": "MOBILE_CRISIS", "urgency": "warm_handoff"})
    _step(client, keys["crisis"], open_["id"], "accept")
    _step(client, keys["crisis"], open_["id"], "engaged")
    officer = _refer(client, keys["officer"], {
        "incident_id": _brief(client, keys["officer"], cases, "LAW"), "program": "MOBILE_CRISIS",
        "urgency": "warm_handoff", "basis": "agreement", "agreement_note": "Ofc. Ruiz heard the person agree"})
    part2 = _refer(client, keys["co"], {**by_co, "program": "HARBOR_SUD", "reason": "post_overdose_outreach",
                                        "urgency": "warm_handoff"})
    return {"completed": completed, "open": open_, "officer": officer, "part2": part2, "incident": treated}


def _get(client, key, resource, referral_id):
    return client.get(f"/fhir/{resource}/{referral_id}", headers=_auth(key) if key else {})


def _resource(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == FHIR_JSON
    return response.get_json()


def _outcome(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == FHIR_JSON
    body = response.get_json()
    OperationOutcome.model_validate(body)
    return body


def _reads(store, referral_id: int) -> list[dict]:
    with store.engine.connect() as connection:
        rows = connection.execute(select(audit_events.c.payload).where(audit_events.c.action == "referral_read")).all()
    return [p for p in (json.loads(r.payload) for r in rows) if p["referral_id"] == referral_id]


def test_a_referral_is_a_valid_r4_service_request_of_what_was_asked_of_the_program(county):
    app, keys, store, made = county
    referral = made["completed"]
    resource = _resource(_get(app.test_client(), keys["crisis"], "ServiceRequest", referral["id"]))
    ServiceRequest.model_validate(resource)
    assert resource["id"] == str(referral["id"]) and resource["status"] == "completed" and resource["intent"] == "order"
    assert resource["code"]["coding"] == [{"system": "urn:briefing:referral-reason", "code": "crisis_stabilisation"}]
    assert resource["priority"] == "routine" and resource["occurrencePeriod"] == {"end": referral["due_by"]}
    assert resource["subject"] == {"reference": f"Patient/{referral['person']}"}
    assert referral["person"].startswith("psn-") and resource["authoredOn"] == referral["created_at"]
    assert resource["requester"] == {"display": "COUNTY_BH"} and resource["performer"] == [{"display": "MOBILE_CRISIS"}]
    assert resource["note"] == [{"text": "prefers mornings"}]


def test_the_task_follows_the_sdohcc_referral_management_profile_to_its_outcome(county):
    app, keys, store, made = county
    referral_id = made["completed"]["id"]
    client = app.test_client()
    resource = _resource(_get(client, keys["crisis"], "Task", referral_id))
    Task.model_validate(resource)
    assert resource["meta"]["profile"] == [SDOHCC_TASK]
    assert resource["status"] == "completed" and resource["intent"] == "order"
    assert resource["code"]["coding"] == [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
    assert resource["focus"] == {"reference": f"ServiceRequest/{referral_id}"}
    assert resource["for"] == {"reference": f"Patient/{made['completed']['person']}"}
    assert resource["owner"] == {"display": "MOBILE_CRISIS"} and resource["requester"] == {"display": "COUNTY_BH"}
    assert resource["businessStatus"] == {"coding": [{"system": "urn:briefing:referral-business-status",
                                                      "code": "engaged"}], "text": "engaged"}
    assert resource["output"] == [{"type": {"text": "outcome"}, "valueCodeableConcept": {
        "coding": [{"system": "urn:briefing:referral-outcome", "code": "engaged_in_services"}]}}]
    whole = client.get(f"/v1/referrals/{referral_id}", headers=_auth(keys["crisis"])).get_json()["referral"]
    assert (resource["authoredOn"], resource["lastModified"]) == (whole["created_at"], whole["updated_at"])


def test_an_open_referral_is_an_active_urgent_request_and_an_in_progress_task_without_an_outcome(county):
    app, keys, store, made = county
    client = app.test_client()
    request = _resource(_get(client, keys["crisis"], "ServiceRequest", made["open"]["id"]))
    task = _resource(_get(client, keys["crisis"], "Task", made["open"]["id"]))
    ServiceRequest.model_validate(request)
    Task.model_validate(task)
    assert request["status"] == "active" and request["priority"] == "stat" and "note" not in request
    assert task["status"] == "in-progress" and task["businessStatus"]["text"] == "engaged" and "output" not in task


def test_the_referring_clinician_sees_the_same_task_and_request_as_the_program(county):
    app, keys, store, made = county
    client = app.test_client()
    for referral in (made["completed"], made["open"]):
        for resource in ("Task", "ServiceRequest"):
            as_referrer = _resource(_get(client, keys["co"], resource, referral["id"]))
            assert as_referrer == _resource(_get(client, keys["crisis"], resource, referral["id"]))
    assert _resource(_get(client, keys["co"], "Task", made["completed"]["id"]))["status"] == "completed"


def test_law_enforcement_is_refused_by_role_even_on_its_own_referral(county):
    app, keys, store, made = county
    client = app.test_client()
    assert client.get(f"/v1/referrals/{made['officer']['id']}", headers=_auth(keys["officer"])).status_code == 200
    for resource in ("Task", "ServiceRequest"):
        body = _outcome(_get(client, keys["officer"], resource, made["officer"]["id"]), 403)
        assert body["issue"][0]["code"] == "forbidden"
        assert _outcome(_get(client, None, resource, made["officer"]["id"]), 401)["issue"][0]["code"] == "login"
    assert _resource(_get(client, keys["crisis"], "Task", made["officer"]["id"]))["status"] == "requested"


def test_another_program_and_another_agency_find_no_such_referral(county):
    app, keys, store, made = county
    client = app.test_client()
    referral_id = made["completed"]["id"]
    for key in ("housing", "sud", "other_co"):
        for resource in ("Task", "ServiceRequest"):
            body = _outcome(_get(client, keys[key], resource, referral_id), 404)
            assert body["issue"][0]["code"] == "not-found" and "MOBILE_CRISIS" not in str(body)
    for missing in (10 ** 6, 2 ** 40, 10 ** 30, "%25IF", "-1", "1.0", "\u0661"):   # the last: an Arabic-Indic one
        for resource in ("Task", "ServiceRequest"):
            assert _outcome(_get(client, keys["crisis"], resource, missing), 404)["issue"][0]["code"] == "not-found"


def test_a_part2_program_is_not_found_by_a_referrer_until_a_consent_names_the_disclosure(county):
    app, keys, store, made = county
    client = app.test_client()
    referral_id = made["part2"]["id"]
    for resource in ("Task", "ServiceRequest"):
        body = _outcome(_get(client, keys["co"], resource, referral_id), 404)
        assert "HARBOR" not in str(body) and "overdose" not in str(body)
    program_task = _resource(_get(client, keys["sud"], "Task", referral_id))
    assert program_task["owner"] == {"display": "HARBOR_SUD"} and program_task["status"] == "requested"
    with store.engine.connect() as connection:
        person = connection.execute(select(briefed_persons.c.person_id).where(
            briefed_persons.c.incident_id == made["incident"], briefed_persons.c.principal == "co-1")).scalar_one()
    with store.begin() as connection:
        connection.execute(insert(records).values(record_id="fr-HARBOR_SUD", agency="HARBOR_SUD", given_name="X",
                                                  ingested_at=COUNTY_NOW.isoformat()))
        connection.execute(insert(clusters).values(record_id="fr-HARBOR_SUD", person_id=person))
        connection.execute(insert(consents).values(
            consent_id="fr-consent", record_id="fr-HARBOR_SUD", recipients="COUNTY_BH", purposes="TREATMENT",
            categories="PART2", valid_from="2020-01-01", updated_at=COUNTY_NOW.isoformat()))
    named = _resource(_get(client, keys["co"], "Task", referral_id))
    assert named["owner"] == {"display": "HARBOR_SUD"} and named["status"] == "requested"


def test_every_fhir_read_is_audited_as_a_referral_read_and_the_chain_verifies(county):
    app, keys, store, made = county
    client = app.test_client()
    referral_id = made["completed"]["id"]
    before = len(_reads(store, referral_id))
    for key in ("crisis", "co"):
        for resource in ("Task", "ServiceRequest"):
            _resource(_get(client, keys[key], resource, referral_id))
    reads = _reads(store, referral_id)[before:]
    expected = [("MOBILE_CRISIS", "program")] * 2 + [("COUNTY_BH", "referrer")] * 2
    assert [(r["agency"], r["side"]) for r in reads] == expected
    assert "outcome" in reads[-1]["fields"]
    assert verify(store).ok
