"""The service's per-incident call: keys and roles, validation, resolution + policy + ranking, audit."""

import json
import time

import pandas as pd
import pytest
from sqlalchemy import select

from api.service.audit import verify
from api.service.keys import create_key
from api.service.store import audit_events, clusters, consents
from api.web.app import create_app
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from tests.loaded_county import county_clock, loaded_county, shown_person, shown_record


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    county = tmp_path_factory.mktemp("county")
    db, store = loaded_county(county, 800, 17)
    keys = {
        "co": create_key(store, "co-1", Role.co_responder, "COUNTY_BH", [Purpose.TREATMENT, Purpose.EMERGENCY]),
        "officer": create_key(store, "pd-1", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "steward": create_key(store, "st-1", Role.steward, "COUNTY", []),
    }
    app = create_app(db, clock=county_clock)     # the county's incidents are judged at the county's time
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    return app.test_client(), keys, store, incidents


def _request(row, subject, purpose="EMERGENCY"):
    return {"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"],
                         "location": {"street": row["location_street"] or None, "postcode": row["location_postcode"] or None},
                         "callback_phone": row["callback_phone"]},
            "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": purpose}


def _person_of(store, record_id: str) -> str:
    with store.engine.connect() as connection:
        return connection.execute(select(clusters.c.person_id).where(clusters.c.record_id == record_id)).scalar_one()


def _audited(store, request_id: str) -> dict:
    """The payload of the audit event of one request."""
    with store.engine.connect() as connection:
        return json.loads(connection.execute(select(audit_events.c.payload)
                                             .where(audit_events.c.request_id == request_id)).scalar_one())


def _post(client, key, body):
    return client.post("/v1/briefings", json=body, headers={"Authorization": f"Bearer {key}"} if key else {})


def test_briefing_resolves_ranks_permitted_items_and_audits_the_call(service):
    client, keys, store, incidents = service
    before = verify(store).events
    seen_items = 0
    for row, subject in list(zip(incidents.to_dict("records"), incident_queries(incidents)))[:40]:
        response = _post(client, keys["co"], _request(row, subject, "TREATMENT"))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["incident_id"] == row["incident_id"] and body["resolution"]["status"] in ("resolved", "ambiguous", "no_match")
        assert [i["rank"] for i in body["items"]] == list(range(1, len(body["items"]) + 1))
        for item in body["items"]:
            assert sum(w["contribution"] for w in item["why"]) == pytest.approx(item["score"], abs=1e-4)
        assert all(w["reason"] not in ("DENY_PART2_NO_CONSENT", "DENY_CJI_NOT_LAW_ENFORCEMENT") for w in body["withheld"])
        seen_items += len(body["items"])
    assert seen_items > 0
    audit = verify(store)
    assert audit.ok and audit.events == before + 40


def test_a_stored_consent_that_no_longer_reads_fails_closed_and_breaks_nothing(service):
    client, keys, store, incidents = service
    for row, subject in list(zip(incidents.to_dict("records"), incident_queries(incidents)))[:40]:
        first = _post(client, keys["co"], _request(row, subject, "TREATMENT")).get_json()
        if first["items"]:
            break
    person = _audited(store, first["request_id"])["candidates"][0]["person_id"]
    with store.begin() as connection:       # a row from before the write rules tightened: no recipients at all
        record_id = connection.execute(select(clusters.c.record_id).where(clusters.c.person_id == person)).scalars().first()
        connection.execute(consents.insert().values(consent_id="CNS-UNREADABLE", record_id=record_id, recipients=None,
                                                    purposes="TREATMENT", categories="PHI|PART2",
                                                    valid_from="2000-01-01T00:00:00+00:00", updated_at="2026-01-01"))
    again = _post(client, keys["co"], _request(row, subject, "TREATMENT"))
    assert again.status_code == 200, again.get_json()
    assert [i["item_id"] for i in again.get_json()["items"]] == [i["item_id"] for i in first["items"]]
    with store.begin() as connection:
        connection.execute(consents.delete().where(consents.c.consent_id == "CNS-UNREADABLE"))


def test_no_key_a_bad_key_or_a_role_that_may_not_brief_is_refused(service):
    client, keys, _, incidents = service
    body = _request(incidents.iloc[0], incident_queries(incidents.head(1))[0])
    assert _post(client, None, body).status_code == 401
    assert _post(client, "brf_not-a-key", body).status_code == 401
    refused = _post(client, keys["steward"], body)
    assert refused.status_code == 403 and "steward" in refused.get_json()["message"]
    assert _post(client, keys["officer"], {**body, "purpose": "TREATMENT"}).status_code == 403


def test_malformed_bodies_get_field_messages_and_never_a_stack_trace(service):
    client, keys, _, incidents = service
    body = _request(incidents.iloc[0], incident_queries(incidents.head(1))[0])
    naive = json.loads(json.dumps(body))
    naive["incident"]["received_at"] = "2026-01-05T10:00:00"
    response = _post(client, keys["co"], naive)
    assert response.status_code == 422 and "incident.received_at" in response.get_json()["fields"]
    typo = json.loads(json.dumps(body))
    typo["subject"]["given_nme"] = "Bob"
    assert "subject.given_nme" in _post(client, keys["co"], typo).get_json()["fields"]
    not_json = client.post("/v1/briefings", data="{", headers={"Authorization": f"Bearer {keys['co']}",
                                                                "Content-Type": "application/json"})
    assert not_json.status_code == 400 and "Traceback" not in not_json.get_data(as_text=True)
    huge = client.post("/v1/briefings", data="x" * (1 << 21), headers={"Authorization": f"Bearer {keys['co']}"})
    assert huge.status_code == 413 and huge.is_json


def test_health_and_readiness(service):
    client = service[0]
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["records"] > 0
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.is_json


def test_a_briefing_past_its_budget_answers_unavailable_at_once_and_is_audited(service, tmp_path, monkeypatch):
    client, keys, store, incidents = service
    app = create_app(str(store.engine.url.database), budget_ms=1, clock=county_clock)
    resolver = app.extensions["briefing"].resolver
    resolve = resolver.resolve

    def slow_resolve(subject):          # sleeping lets the waiting thread see the budget run out (a budget alone
        time.sleep(0.2)                 # races a resolve that finishes within one GIL switch interval)
        return resolve(subject)
    monkeypatch.setattr(resolver, "resolve", slow_resolve)
    slow = app.test_client()
    body = _request(incidents.iloc[0], incident_queries(incidents.head(1))[0])
    before = verify(store).events
    answer = _post(slow, keys["co"], body).get_json()
    assert answer["resolution"] == {"status": "unavailable", "candidates": []} and answer["items"] == []
    assert verify(store).events == before + 1


def test_feedback_is_stored_and_auditors_can_see_who_saw_a_person(service):
    client, keys, store, incidents = service
    auditor = create_key(store, "audit-1", Role.auditor, "COUNTY", [])
    for row, subject in list(zip(incidents.to_dict("records"), incident_queries(incidents)))[:30]:
        answer = _post(client, keys["co"], _request(row, subject, "TREATMENT")).get_json()
        if answer["resolution"]["status"] == "resolved":
            break
    assert answer["resolution"]["candidates"][0]["person_id"].startswith("psn-")      # responders get a reference
    # Handed the CAD's answer, the auditor finds its event by request id, and there the person's real id.
    [event] = client.get(f"/v1/audit/events?request_id={answer['request_id']}",
                         headers={"Authorization": f"Bearer {auditor}"}).get_json()["events"]
    assert event["action"] == "briefing" and event["incident_id"] == row["incident_id"]
    person = event["candidates"][0]["person_id"]
    assert person == _audited(store, answer["request_id"])["candidates"][0]["person_id"] and not person.startswith("psn-")
    events = client.get(f"/v1/audit/events?person_id={person}", headers={"Authorization": f"Bearer {auditor}"}).get_json()["events"]
    assert events and all(e["principal"] == "co-1" and e["purpose"] == "TREATMENT" for e in events)
    assert any(e["incident_id"] == answer["incident_id"] for e in events)
    assert client.get("/v1/audit/events", headers={"Authorization": f"Bearer {keys['co']}"}).status_code == 403
    bad = client.get("/v1/audit/events?since=yesterday", headers={"Authorization": f"Bearer {auditor}"})
    assert bad.status_code == 422 and "since" in bad.get_json()["fields"]
    unshown = client.post("/v1/feedback", json={"incident_id": answer["incident_id"], "item_id": "CI-1", "helped": True},
                          headers={"Authorization": f"Bearer {keys['co']}"})
    assert unshown.status_code == 403          # only on an item a briefing showed you (tests/adversarial/test_feedback_and_sessions.py)
    for item in answer["items"][:1]:
        sent = client.post("/v1/feedback", json={"incident_id": answer["incident_id"], "item_id": item["item_id"],
                                                 "helped": True}, headers={"Authorization": f"Bearer {keys['co']}"})
        assert sent.status_code == 201
    assert client.post("/v1/feedback", json={"incident_id": "x", "item_id": "y"},
                       headers={"Authorization": f"Bearer {keys['steward']}"}).status_code == 403
    assert verify(store).ok


def test_a_feed_writes_its_own_agency_and_the_next_briefing_sees_the_new_record(service):
    client, keys, store, incidents = service
    feed = create_key(store, "feed-pd", Role.feed, "METRO_PD", [])
    other = create_key(store, "feed-ems", Role.feed, "COUNTY_EMS", [])
    record = {"record_id": "RMS-FEED-1", "agency": "METRO_PD", "given_name": "Wilhelmina", "family_name": "Throckbottom",
              "dob": "1961-04-05", "phone": "(614) 555-0142"}
    created = client.post("/v1/records", json=record, headers={"Authorization": f"Bearer {feed}"})
    assert created.status_code == 201 and created.get_json() == {"record_id": "RMS-FEED-1", "created": True}
    person = _person_of(store, "RMS-FEED-1")             # a feed is not told which person its record joined
    assert client.post("/v1/records", json={**record, "record_id": "X-1"},
                       headers={"Authorization": f"Bearer {other}"}).status_code == 403
    item = {"item_id": "CI-FEED-1", "record_id": "RMS-FEED-1", "category": "effective_approach", "code": "APPR_CALM_VOICE",
            "text": "calms with a low voice (officer; 2026-01)", "legal_category": "AGENCY_OPERATIONAL",
            "source_type": "officer", "observed_at": "2026-01-10T00:00:00+00:00", "last_verified_at": "2026-01-10T00:00:00+00:00"}
    assert client.post("/v1/context-items", json=item, headers={"Authorization": f"Bearer {feed}"}).status_code == 200
    assert client.post("/v1/context-items", json={**item, "record_id": "NOPE"},
                       headers={"Authorization": f"Bearer {feed}"}).status_code == 409
    row = incidents.iloc[0]
    subject = {"given_name": "Wilhelmina", "family_name": "Throckbottom", "dob": "1961-04-05"}
    answer = _post(client, keys["co"], _request(row, subject, "TREATMENT")).get_json()
    assert answer["resolution"]["candidates"][0]["person_id"] == shown_person(store, person)
    assert [i["item_id"] for i in answer["items"]] == ["CI-FEED-1"]
    assert client.delete("/v1/records/RMS-FEED-1", headers={"Authorization": f"Bearer {other}"}).status_code == 403
    assert client.delete("/v1/records/RMS-FEED-1", headers={"Authorization": f"Bearer {feed}"}).status_code == 204
    gone = _post(client, keys["co"], _request(row, subject, "TREATMENT")).get_json()
    assert all(c["record_id"] != shown_record(store, "RMS-FEED-1") for c in gone["resolution"]["candidates"])
    assert gone["items"] == []
    assert verify(store).ok


def test_a_write_through_one_worker_is_seen_by_the_next_request_to_another(service):
    client, keys, store, incidents = service
    other_worker = create_app(str(store.engine.url.database), clock=county_clock).test_client()
    feed = create_key(store, "feed-bh", Role.feed, "COUNTY_BH", [])
    record = {"record_id": "EHR-FEED-9", "given_name": "Bartholomew", "family_name": "Quenneville", "dob": "1958-09-30"}
    assert client.post("/v1/records", json=record, headers={"Authorization": f"Bearer {feed}"}).status_code == 201
    person = _person_of(store, "EHR-FEED-9")
    subject = {"given_name": "Bartholomew", "family_name": "Quenneville", "dob": "1958-09-30"}
    seen = _post(other_worker, keys["co"], _request(incidents.iloc[0], subject, "TREATMENT")).get_json()
    assert seen["resolution"]["candidates"][0]["person_id"] == shown_person(store, person)
    assert client.delete("/v1/records/EHR-FEED-9", headers={"Authorization": f"Bearer {feed}"}).status_code == 204
    gone = _post(other_worker, keys["co"], _request(incidents.iloc[0], subject, "TREATMENT")).get_json()
    assert all(c["record_id"] != shown_record(store, "EHR-FEED-9") for c in gone["resolution"]["candidates"])


def test_repeated_bad_keys_are_throttled_but_a_valid_key_from_the_same_address_is_not(service):
    client, keys, _, incidents = service
    body = _request(incidents.iloc[0], incident_queries(incidents.head(1))[0])
    codes = [_post(client, "brf_guess", body).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429
    limited = _post(client, "brf_guess", body)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1 and limited.is_json
    assert _post(client, keys["co"], {**body, "purpose": "TREATMENT"}).status_code == 200


def test_match_answers_who_it_is_and_stewards_see_identity_not_items(service):
    client, keys, store, incidents = service
    subject = incident_queries(incidents.head(1))[0]
    subject.pop("received_at", None)
    matched = client.post("/v1/match", json={"subject": subject, "purpose": "EMERGENCY"},
                          headers={"Authorization": f"Bearer {keys['officer']}"})
    assert matched.status_code == 200 and "resolution" in matched.get_json() and "items" not in matched.get_json()
    steward_view = client.post("/v1/match", json={"subject": {"given_name": "Bartholomew", "family_name": "Quenneville"},
                                                  "purpose": "LAW"}, headers={"Authorization": f"Bearer {keys['steward']}"})
    assert steward_view.status_code == 200
    with store.engine.connect() as connection:
        from sqlalchemy import select

        from api.service.store import clusters
        person = connection.execute(select(clusters.c.person_id).limit(1)).scalar()
    page = client.get(f"/v1/persons/{person}", headers={"Authorization": f"Bearer {keys['steward']}"})
    assert page.status_code == 200 and page.get_json()["records"] and "items" not in page.get_json()
    assert client.get(f"/v1/persons/{person}", headers={"Authorization": f"Bearer {keys['co']}"}).status_code == 403
    assert client.get("/v1/persons/NOBODY", headers={"Authorization": f"Bearer {keys['steward']}"}).status_code == 404
    assert verify(store).ok


def test_openapi_document_lists_every_endpoint_with_request_schemas(service):
    client = service[0]
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/briefings", "/v1/match", "/v1/records", "/v1/feedback", "/v1/audit/events"} <= set(doc["paths"])
    briefing = doc["components"]["schemas"]["BriefingRequest"]
    assert set(briefing["required"]) == {"incident", "subject", "purpose"}
    assert "approx_age" in doc["components"]["schemas"]["Subject"]["properties"]
