"""Referrals over HTTP with ordinary keys: who may refer, what travels, what each side sees, the lifecycle,
person moves, retention and erasure, and the audit of every step (issue 19)."""

import json
from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import func, insert, select

from api.review.decisions import merge_persons, split_record
from api.service.audit import verify
from api.service.keys import create_key
from api.service.retention import purge
from api.service.outbox import enqueue
from api.service.store import (audit_events, briefed_persons, clusters, consents, context_items, outbox, records,
                               referral_events, referral_items, referrals, review_constraints)
from api.service.withdrawals import erase_registry
from api.web.app import create_app
from api.web.context import EXTENSION
from evaluation.synth.incidents import incident_queries
from scoring.item import Principal, Purpose, Role
from scoring.referral_policy import GENERIC_PROGRAM
from tests.loaded_county import COUNTY_NOW, county_clock, loaded_county
from tests.programs import register_programs

NOW = COUNTY_NOW.isoformat()
LATER = (COUNTY_NOW + timedelta(days=400)).isoformat()


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    directory = tmp_path_factory.mktemp("county")
    db, store = loaded_county(directory, 600, 23)
    register_programs(store, "MOBILE_CRISIS", "HARBOR_SUD", "HOUSING_TEAM")
    keys = {
        "officer": create_key(store, "pd-1", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "officer2": create_key(store, "pd-2", Role.officer, "METRO_PD", [Purpose.LAW]),
        "other_pd": create_key(store, "opd-1", Role.officer, "OTHER_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "co": create_key(store, "co-1", Role.co_responder, "COUNTY_BH", [Purpose.TREATMENT, Purpose.EMERGENCY]),
        "crisis": create_key(store, "mc-1", Role.provider, "MOBILE_CRISIS", []),
        "sud": create_key(store, "sud-1", Role.provider, "HARBOR_SUD", []),
        "housing": create_key(store, "ho-1", Role.provider, "HOUSING_TEAM", []),
        "steward": create_key(store, "st-1", Role.steward, "COUNTY", []),
    }
    app = create_app(db, clock=county_clock)
    incidents = pd.read_csv(directory / "incidents.csv", dtype=str, keep_default_na=False)
    return app, keys, store, list(zip(incidents.to_dict("records"), incident_queries(incidents)))


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def _brief(client, key, cases, purpose, skip=0):
    """Brief incidents with `key` until one resolves (after `skip` resolved ones); its incident id."""
    for row, subject in cases:
        body = {"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"]},
                "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": purpose}
        answer = client.post("/v1/briefings", json=body, headers=_auth(key)).get_json()
        if answer["resolution"]["status"] == "resolved":
            if skip == 0:
                return row["incident_id"]
            skip -= 1
    raise AssertionError("no incident resolved")


def _person(store, incident_id, principal="pd-1"):
    with store.engine.connect() as connection:
        return connection.execute(select(briefed_persons.c.person_id).where(
            briefed_persons.c.incident_id == incident_id, briefed_persons.c.principal == principal)).scalar_one()


def _plant(store, person_id, tag):
    """Give the person a record at HARBOR_SUD and at METRO_PD, each with items of every legal kind; the item ids."""
    with store.begin() as connection:
        for agency in ("HARBOR_SUD", "METRO_PD"):
            rid = f"{tag}-{agency}"
            connection.execute(insert(records).values(record_id=rid, agency=agency, given_name="X", ingested_at=NOW))
            connection.execute(insert(clusters).values(record_id=rid, person_id=person_id))
        rows = [("VR", "METRO_PD", "communication_need", "VOLUNTARY_REGISTRY"),
                ("PHI", "METRO_PD", "medical", "PHI"),
                ("CJI", "METRO_PD", "safety_flag", "CJI"),
                ("CJIC", "METRO_PD", "communication_need", "CJI"),
                ("P2", "HARBOR_SUD", "service_connection", "PART2")]
        for suffix, agency, category, legal in rows:
            connection.execute(insert(context_items).values(
                item_id=f"{tag}-{suffix}", record_id=f"{tag}-{agency}", category=category, code="c",
                text=f"planted {suffix}", legal_category=legal, status="active", updated_at=NOW))
    return {suffix: f"{tag}-{suffix}" for suffix, *_ in rows}


def _consent(store, tag, recipients, purposes, categories="PART2"):
    with store.begin() as connection:
        connection.execute(insert(consents).values(
            consent_id=f"{tag}-consent", record_id=f"{tag}-HARBOR_SUD", recipients=recipients, purposes=purposes,
            categories=categories, valid_from="2020-01-01", updated_at=NOW))
    return f"{tag}-consent"


def _refer(client, key, incident_id, program="MOBILE_CRISIS", **extra):
    body = {"incident_id": incident_id, "program": program, "reason": "crisis_stabilisation",
            "urgency": "warm_handoff", "basis": "agreement", "agreement_note": "Ofc. Ruiz heard the person agree",
            "contact": {"name": "Sam", "where": "at the library"}, **extra}
    return client.post("/v1/referrals", json=body, headers=_auth(key))


def _step(client, key, referral_id, event, **extra):
    return client.post(f"/v1/referrals/{referral_id}/events", json={"event": event, **extra}, headers=_auth(key))


def _read(client, key, referral_id):
    return client.get(f"/v1/referrals/{referral_id}", headers=_auth(key))


def test_a_warm_handoff_carries_only_the_minimum_necessary_and_the_officer_learns_only_accepted_or_closed(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["officer"], cases, "LAW")
    _plant(store, _person(store, incident), "t1")
    sent = _refer(client, keys["officer"], incident)
    assert sent.status_code == 201, sent.get_json()
    referral = sent.get_json()["referral"]
    assert sent.headers["Location"] == f"/v1/referrals/{referral['id']}"
    assert referral["status"] == "requested" and "items" not in referral and referral["person"].startswith("psn-")
    program_view = _read(client, keys["crisis"], referral["id"]).get_json()["referral"]
    travelled = {i["text"] for i in program_view["items"]}
    assert {"planted VR", "planted PHI"} <= travelled              # the person agreed: registry and PHI items
    assert not travelled & {"planted CJI", "planted CJIC", "planted P2"}   # never CJI; Part 2 needs a written consent
    assert program_view["contact"] == {"name": "Sam", "where": "at the library"} and program_view["grade"]
    assert _step(client, keys["crisis"], referral["id"], "accept").status_code == 200
    assert _read(client, keys["officer2"], referral["id"]).get_json()["referral"]["status"] == "accepted"
    _step(client, keys["crisis"], referral["id"], "contact_attempted", note="no answer at the door")
    _step(client, keys["crisis"], referral["id"], "engaged", note="talked for an hour; disclosed relapse")
    done = _step(client, keys["crisis"], referral["id"], "complete", outcome="engaged_in_services")
    assert done.status_code == 200 and done.get_json()["referral"]["outcome"] == "engaged_in_services"
    seen = _read(client, keys["officer"], referral["id"]).get_json()["referral"]
    assert seen["status"] == "closed" and seen["program"]["name"] == "MOBILE_CRISIS"
    assert not {"outcome", "business_status", "events", "items", "updated_at"} & set(seen)
    assert "relapse" not in str(seen)
    assert _step(client, keys["crisis"], referral["id"], "accept").status_code == 409     # closed stays closed


def test_a_clinician_referral_shows_the_clinician_the_outcome_but_never_the_programs_notes(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["co"], cases, "TREATMENT", skip=1)
    referral = _refer(client, keys["co"], incident, "HOUSING_TEAM", basis="treatment", agreement_note=None,
                      urgency="follow_up", due_within_hours=24).get_json()["referral"]
    assert referral["due_by"] > referral["created_at"]
    _step(client, keys["housing"], referral["id"], "accept")
    _step(client, keys["housing"], referral["id"], "engaged", note="moved into the shelter on 5th")
    seen = _read(client, keys["co"], referral["id"]).get_json()["referral"]
    assert seen["status"] == "in-progress" and seen["business_status"] == "engaged"
    assert "shelter on 5th" not in str(seen) and "events" not in seen


def test_refusals_name_the_field_and_write_nothing(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["officer"], cases, "LAW", skip=2)
    with store.engine.connect() as connection:
        before = connection.execute(select(referrals.c.id)).all()
    cases_ = [
        (_refer(client, keys["officer"], incident, basis="treatment", agreement_note=None), 422, "basis"),
        (_refer(client, keys["officer"], incident, program="NOPE"), 422, "program"),
        (_refer(client, keys["officer"], "never-briefed"), 422, "incident_id"),
        (_refer(client, keys["other_pd"], incident), 422, "incident_id"),        # another agency's briefing
        (_refer(client, keys["officer"], incident, urgency="follow_up"), 422, "due_within_hours"),
        (_refer(client, keys["officer"], incident, agreement_note=None), 422, "agreement_note"),
        (_refer(client, keys["officer"], incident, due_within_hours=24), 422, "due_within_hours"),   # a warm hand-off
        (_refer(client, keys["officer"], incident, basis="consent", agreement_note=None, consent_id="none"), 422,
         "consent_id"),
        (_refer(client, keys["crisis"], incident), 403, None),                 # a provider does not refer
    ]
    for response, status, field in cases_:
        assert response.status_code == status, response.get_json()
        if field:
            assert field in response.get_json()["fields"], response.get_json()
    with store.engine.connect() as connection:
        assert connection.execute(select(referrals.c.id)).all() == before


def test_a_part2_program_is_never_named_to_a_referrer_without_a_consent_that_says_so(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["officer"], cases, "LAW", skip=3)
    person = _person(store, incident)
    _plant(store, person, "t4")
    sent = _refer(client, keys["officer"], incident, "HARBOR_SUD", reason="post_overdose_outreach")
    referral = sent.get_json()["referral"]
    assert referral["program"] == {"name": GENERIC_PROGRAM, "public_line": "555-0199"}
    assert "HARBOR" not in str(referral) and "overdose" not in str(referral)
    listed = client.get("/v1/referrals", headers=_auth(keys["officer"])).get_json()["referrals"]
    assert "HARBOR" not in str(listed) and "post_overdose" not in str(listed)
    _consent(store, "t4", "METRO_PD", "LAW")
    named = _read(client, keys["officer"], referral["id"]).get_json()["referral"]
    assert named["program"]["name"] == "HARBOR_SUD" and named["status"] == "requested"


def test_part2_items_travel_only_under_a_consent_naming_the_program_and_stop_when_it_is_revoked(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["officer"], cases, "LAW", skip=4)
    _plant(store, _person(store, incident), "t5")
    consent_id = _consent(store, "t5", "MOBILE_CRISIS", "TREATMENT")
    referral = _refer(client, keys["officer"], incident, basis="consent", agreement_note=None,
                      consent_id=consent_id).get_json()["referral"]
    items = _read(client, keys["crisis"], referral["id"]).get_json()["referral"]["items"]
    part2 = [i for i in items if i["legal_category"] == "PART2"]
    assert [i["text"] for i in part2] == ["planted P2"] and "2.32" in part2[0]["notice"]
    with store.begin() as connection:
        connection.execute(consents.update().where(consents.c.consent_id == consent_id).values(revoked_at="2026-01-01"))
    items = _read(client, keys["crisis"], referral["id"]).get_json()["referral"]["items"]
    assert not [i for i in items if i["legal_category"] in ("PART2", "PHI")]


def test_a_referral_is_invisible_to_every_other_agency_and_program_and_the_probe_is_audited(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["officer"], cases, "LAW", skip=5)
    referral = _refer(client, keys["officer"], incident).get_json()["referral"]
    for key in ("other_pd", "sud", "housing", "co"):
        assert _read(client, keys[key], referral["id"]).status_code == 404
        assert _step(client, keys[key], referral["id"], "accept").status_code == 404
        listed = client.get("/v1/referrals", headers=_auth(keys[key])).get_json()["referrals"]
        assert referral["id"] not in [r["id"] for r in listed]
    assert _read(client, keys["steward"], referral["id"]).status_code == 403
    assert _read(client, keys["crisis"], 2 ** 40).status_code == 404
    assert _step(client, keys["officer"], referral["id"], "accept").status_code == 409     # the program's step
    with store.engine.connect() as connection:
        logged = [(a, json.loads(p)) for a, p in connection.execute(select(audit_events.c.action, audit_events.c.payload))]
    refused = [p for a, p in logged if a == "referral_refused" and p["referral_id"] == referral["id"]]
    assert sorted((p["agency"], p.get("event", "")) for p in refused) == sorted(   # each read and each step probe
        [(agency, "") for agency in ("OTHER_PD", "HARBOR_SUD", "HOUSING_TEAM", "COUNTY_BH")]
        + [(agency, "accept") for agency in ("OTHER_PD", "HARBOR_SUD", "HOUSING_TEAM", "COUNTY_BH")])
    [conflict] = [p for a, p in logged if a == "referral_step_refused" and p["referral_id"] == referral["id"]]
    assert conflict["event"] == "accept" and conflict["agency"] == "METRO_PD" and "program" in conflict["reason"]


def test_the_person_declining_cancels_the_referral_and_the_program_can_poll_for_it(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["officer"], cases, "LAW", skip=6)
    referral = _refer(client, keys["officer"], incident).get_json()["referral"]
    _step(client, keys["crisis"], referral["id"], "accept")
    declined = _step(client, keys["officer"], referral["id"], "person_declined", note="changed their mind")
    assert declined.status_code == 200 and declined.get_json()["referral"]["status"] == "closed"
    polled = client.get("/v1/referrals", query_string={"status": "cancelled", "since": referral["created_at"]},
                        headers=_auth(keys["crisis"])).get_json()["referrals"]
    assert referral["id"] in [r["id"] for r in polled]
    assert client.get("/v1/referrals?status=done", headers=_auth(keys["crisis"])).status_code == 422
    assert _step(client, keys["crisis"], referral["id"], "engaged").status_code == 409


def test_a_merge_moves_referrals_and_a_split_flags_them_for_identity_review(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["officer"], cases, "LAW", skip=7)
    person = _person(store, incident)
    referral = _refer(client, keys["officer"], incident).get_json()["referral"]
    service = app.extensions[EXTENSION]
    with store.engine.connect() as connection:
        other = connection.execute(select(clusters.c.person_id).where(clusters.c.person_id != person)   # the larger
                                   .group_by(clusters.c.person_id).order_by(func.count().desc()).limit(1)).scalar()
    merged = merge_persons(service, person, other, "st-1")
    kept = merged["kept_person_id"]
    assert kept == other                                   # the referral's person was merged away
    with store.engine.connect() as connection:
        row = connection.execute(select(referrals).where(referrals.c.id == referral["id"])).first()
        assert row.person_id == kept and row.identity_review == 0
        briefed = connection.execute(select(briefed_persons.c.person_id)
                                     .where(briefed_persons.c.incident_id == incident)).scalars().all()
        assert briefed and set(briefed) == {kept}          # a later referral from the incident names the kept person
        linked = set(connection.execute(select(review_constraints.c.record_id_l)).scalars()) | set(
            connection.execute(select(review_constraints.c.record_id_r)).scalars())
        record = next(r for r in connection.execute(select(clusters.c.record_id).where(clusters.c.person_id == kept))
                      .scalars() if r not in linked)
    split_record(service, kept, record, "st-1")
    assert _read(client, keys["crisis"], referral["id"]).get_json()["referral"]["identity_review"] is True
    assert _step(client, keys["crisis"], referral["id"], "accept").status_code == 200
    assert _step(client, keys["crisis"], referral["id"], "confirm_identity").status_code == 200   # confirmed since
    assert _read(client, keys["crisis"], referral["id"]).get_json()["referral"]["identity_review"] is False


def test_purge_removes_closed_referrals_and_erasure_removes_the_persons_referrals(county):
    app, keys, store, cases = county
    client = app.test_client()
    incident = _brief(client, keys["officer"], cases, "LAW", skip=8)
    person = _person(store, incident)
    closed = _refer(client, keys["officer"], incident).get_json()["referral"]
    _step(client, keys["crisis"], closed["id"], "reject", note="out of area")
    open_ = _refer(client, keys["officer"], incident).get_json()["referral"]
    with store.begin() as connection:                  # a delivery still owed about each of them
        for referral_id in (closed["id"], open_["id"]):
            enqueue(connection, referral_id, "MOBILE_CRISIS", "referral.requested", COUNTY_NOW)
    summary = purge(store, 30, now=COUNTY_NOW + timedelta(days=60))
    assert summary.referrals >= 1
    with store.engine.connect() as connection:
        left = set(connection.execute(select(referrals.c.id)).scalars())
    assert closed["id"] not in left and open_["id"] in left
    admin = Principal(name="admin-1", role=Role.admin, agency="COUNTY")
    erased = erase_registry(app.extensions[EXTENSION], admin, person, "the person", "REQ-1")
    assert erased["referrals"] == 1
    with store.engine.connect() as connection:
        assert open_["id"] not in set(connection.execute(select(referrals.c.id)).scalars())
        for table in (referral_events, referral_items, outbox):   # nothing about either is left behind
            assert not set(connection.execute(select(table.c.referral_id)).scalars()) & {closed["id"], open_["id"]}
    assert verify(store).ok
