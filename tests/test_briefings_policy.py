"""POST /v1/briefings and /v1/match against issue 15's attacks, over HTTP on a loaded county.

The server's clock decides (a caller's `received_at` only narrows, and an implausible one is
refused); responders get opaque record references, never a source's name; every returned item is
recorded as shown, once; EMS reaches Part 2 items without consent only on a medical-emergency call
with an attestation; and a stalled resolver never leaves stale work queued behind it.
"""

import json
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from api.service.keys import create_key
from api.service.reference import record_reference
from api.service.store import audit_events, consents, context_items, records, shown_items
from api.web.app import create_app
from scoring.item import Purpose, Role
from tests.loaded_county import COUNTY_NOW, county_clock, loaded_county, stored_subject

SOURCE_PREFIXES = ("EHR-", "RMS-", "CAD-", "EPCR-", "988-", "VR-", "SUD-")
AGENCY_NAMES = re.compile(r"\b(COUNTY_BH|METRO_PD|COUNTY_911|COUNTY_EMS|CRISIS_LINE|REGISTRY)\b")   # not VOLUNTARY_REGISTRY


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    db, store = loaded_county(tmp_path_factory.mktemp("county"), 1500, 29)
    keys = {
        "co": create_key(store, "co-p", Role.co_responder, "COUNTY_BH", [Purpose.TREATMENT, Purpose.EMERGENCY]),
        "officer": create_key(store, "pd-p", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "ems": create_key(store, "ems-p", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY, Purpose.TREATMENT]),
        "steward": create_key(store, "st-p", Role.steward, "COUNTY", []),
    }
    app = create_app(db, clock=county_clock)
    return app, app.test_client(), keys, store, db


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def _body(subject, purpose="TREATMENT", received_at=None, call_type="mental_health_crisis", incident_id=None, **extra):
    return {"incident": {"id": incident_id or f"INC-P-{uuid.uuid4().hex[:8]}", "call_type": call_type,
                         "received_at": (received_at or COUNTY_NOW - timedelta(hours=1)).isoformat()},
            "subject": subject, "purpose": purpose, **extra}


def _brief(client, key, body):
    response = client.post("/v1/briefings", json=body, headers=_auth(key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _shown(answer) -> set[str]:
    return {i["item_id"] for i in answer["items"]} | {s["item_id"] for i in answer["items"] for s in i["sources"]}


def _last_event(store, action="briefing"):
    with store.engine.connect() as connection:
        row = connection.execute(select(audit_events.c.payload).where(audit_events.c.action == action)
                                 .order_by(audit_events.c.seq.desc()).limit(1)).scalar()
    return json.loads(row)


# ------------------------------------------------------------------------------------ the server's clock

@pytest.mark.parametrize("received_at", ["9999-12-31T23:59:00+00:00", "0001-01-01T00:00:00+00:00",
                                         (COUNTY_NOW + timedelta(days=1, minutes=5)).isoformat(),
                                         (COUNTY_NOW - timedelta(days=31 * 365)).isoformat()])
def test_an_incident_time_far_ahead_of_or_far_behind_the_servers_clock_is_refused(world, received_at):
    _, client, keys, store, _ = world
    body = _body({"given_name": "Ann", "family_name": "Example"})
    body["incident"]["received_at"] = received_at
    response = client.post("/v1/briefings", json=body, headers=_auth(keys["co"]))
    assert response.status_code == 422 and "incident.received_at" in response.get_json()["fields"]


def test_an_incident_time_within_a_day_ahead_or_decades_back_is_accepted(world):
    _, client, keys, _, _ = world
    for when in (COUNTY_NOW + timedelta(hours=23), COUNTY_NOW - timedelta(days=29 * 365)):
        _brief(client, keys["co"], _body({"given_name": "Ann", "family_name": "Example"}, received_at=when))


def _lapsed_part2_consent(store):
    """(item_id, record_id, consent row) of a PART2 item whose consent to co-responders lapsed before COUNTY_NOW."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(context_items.c.item_id, context_items.c.record_id, consents.c.valid_from, consents.c.valid_until)
            .join(consents, consents.c.consent_id == context_items.c.consent_id)
            .where(context_items.c.legal_category == "PART2", context_items.c.status == "active",
                   context_items.c.expires_at.is_(None), consents.c.revoked_at.is_(None),
                   consents.c.recipients.like("%co_responder%"), consents.c.purposes.like("%TREATMENT%"),
                   consents.c.valid_until < COUNTY_NOW.isoformat(),
                   consents.c.valid_from > (COUNTY_NOW - timedelta(days=29 * 365)).isoformat())
            .order_by(context_items.c.item_id)).all()
    assert rows, "the county has no lapsed Part 2 consent to co-responders"
    return rows


def test_a_caller_chosen_incident_time_inside_a_lapsed_consent_does_not_release_part2(world):
    # Finding 2: received_at set inside an expired consent's window released its items.
    _, client, keys, store, db = world
    checked = 0
    for item_id, record_id, valid_from, valid_until in _lapsed_part2_consent(store)[:10]:
        inside = datetime.fromisoformat(valid_from) + timedelta(days=1)
        subject = stored_subject(store, record_id)
        then = create_app(db, clock=lambda: inside).test_client()     # the control: a server whose clock is inside
        if item_id not in _shown(_brief(then, keys["co"], _body(subject, received_at=inside))):
            continue                                                 # not resolved to the item's person: try another
        answer = _brief(client, keys["co"], _body(subject, received_at=inside))
        assert item_id not in _shown(answer)
        assert all(w["reason"] != "DENY_PART2_NO_CONSENT" for w in answer["withheld"])
        event = _last_event(store)
        assert event["received_at"] == inside.isoformat() and event["judged_at"] == COUNTY_NOW.isoformat()
        checked += 1
        break
    assert checked


def test_an_item_expired_at_the_servers_clock_is_not_revived_by_an_earlier_incident_time(world):
    _, client, keys, store, db = world
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(context_items.c.item_id, context_items.c.record_id, context_items.c.expires_at)
            .join(records, records.c.record_id == context_items.c.record_id)
            .where(context_items.c.legal_category == "CJI", context_items.c.status == "active",
                   context_items.c.expires_at < COUNTY_NOW.isoformat(),
                   context_items.c.expires_at > (COUNTY_NOW - timedelta(days=3 * 365)).isoformat())
            .order_by(context_items.c.item_id).limit(10)).all()
    assert rows
    for item_id, record_id, expires_at in rows:
        before = datetime.fromisoformat(expires_at) - timedelta(days=2)
        subject = stored_subject(store, record_id)
        then = create_app(db, clock=lambda: before).test_client()
        if item_id not in _shown(_brief(then, keys["officer"], _body(subject, "LAW", received_at=before))):
            continue
        assert item_id not in _shown(_brief(client, keys["officer"], _body(subject, "LAW", received_at=before)))
        return
    pytest.fail("no expired CJI item could be shown under a clock before its expiry")


# ------------------------------------------------------------------------------- opaque references

def test_responders_get_opaque_record_references_and_stewards_real_ids(world):
    app, client, keys, store, _ = world
    secret = app.extensions["briefing"].reference_key
    with store.engine.connect() as connection:
        record_id = connection.execute(select(records.c.record_id).where(records.c.agency == "COUNTY_BH")
                                       .order_by(records.c.record_id).limit(1)).scalar()
    subject = stored_subject(store, record_id)
    officer = client.post("/v1/match", json={"subject": subject, "purpose": "EMERGENCY"}, headers=_auth(keys["officer"]))
    steward = client.post("/v1/match", json={"subject": subject, "purpose": "LAW"}, headers=_auth(keys["steward"]))
    real = [c["record_id"] for c in steward.get_json()["resolution"]["candidates"]]
    assert record_id in real
    shown = [c["record_id"] for c in officer.get_json()["resolution"]["candidates"]]
    assert shown == [record_reference(r, secret) for r in real] and all(r.startswith("ref-") for r in shown)
    text = officer.get_data(as_text=True)
    assert not any(p in text for p in SOURCE_PREFIXES) and not AGENCY_NAMES.search(text)
    assert record_id in [c["record_id"] for c in _last_event(store, "match")["candidates"]]   # the audit keeps real ids


def test_a_briefing_names_no_record_and_only_the_agencies_of_permitted_items(world):
    app, client, keys, store, _ = world
    with store.engine.connect() as connection:
        record_ids = connection.execute(select(context_items.c.record_id).where(context_items.c.legal_category == "PART2")
                                        .order_by(context_items.c.item_id).limit(20)).scalars().all()
    seen_sources = 0
    for record_id in record_ids:
        for who, purpose in (("officer", "EMERGENCY"), ("co", "TREATMENT")):
            answer = _brief(client, keys[who], _body(stored_subject(store, record_id), purpose))
            candidates = answer["resolution"]["candidates"]
            assert all(c["record_id"].startswith("ref-") for c in candidates)
            event = _last_event(store)
            assert len(event["candidates"]) == len(candidates)
            assert all(not c["record_id"].startswith("ref-") for c in event["candidates"])   # the audit keeps real ids
            permitted = {d["item_id"] for d in event.get("disclosures", [])}
            for item in answer["items"]:
                for source in item["sources"]:
                    assert source["item_id"] in permitted          # every copy shown was itself disclosed, and logged
                    seen_sources += 1
            without_sources = json.dumps({**answer, "items": [{**i, "sources": []} for i in answer["items"]]})
            assert not any(p in without_sources for p in SOURCE_PREFIXES)
            assert not AGENCY_NAMES.search(without_sources)
    assert seen_sources


# ------------------------------------------------------------------------------------ shown items

def test_every_returned_item_is_recorded_as_shown_once_and_a_resent_incident_keeps_the_first_row(world):
    _, client, keys, store, _ = world
    with store.engine.connect() as connection:
        record_id = connection.execute(select(context_items.c.record_id).where(
            context_items.c.legal_category == "VOLUNTARY_REGISTRY", context_items.c.status == "active",
            context_items.c.expires_at.is_(None)).order_by(context_items.c.item_id).limit(1)).scalar()
    body = _body(stored_subject(store, record_id), "TREATMENT", incident_id=f"INC-SHOWN-{uuid.uuid4().hex[:6]}")
    first = _brief(client, keys["co"], body)
    assert first["items"]
    again = _brief(client, keys["co"], body)
    other = _brief(client, keys["officer"], {**body, "purpose": "EMERGENCY"})
    with store.engine.connect() as connection:
        rows = connection.execute(select(shown_items).where(shown_items.c.incident_id == body["incident"]["id"])).mappings().all()
    mine = [r for r in rows if r["principal"] == "co-p"]
    assert sorted(r["item_id"] for r in mine) == sorted(i["item_id"] for i in first["items"])
    assert {r["request_id"] for r in mine} == {first["request_id"]} != {again["request_id"]}
    assert all(r["shown_at"] == COUNTY_NOW.isoformat() for r in mine)
    assert sorted(r["item_id"] for r in rows if r["principal"] == "pd-p") == sorted(i["item_id"] for i in other["items"])


# ------------------------------------------------------------------------- EMS: 42 CFR 2.51

def _part2_without_consent(store):
    with store.engine.connect() as connection:
        return connection.execute(
            select(context_items.c.item_id, context_items.c.record_id)
            .where(context_items.c.legal_category == "PART2", context_items.c.status == "active",
                   context_items.c.consent_id.is_(None), context_items.c.expires_at.is_(None))
            .order_by(context_items.c.item_id).limit(20)).all()


def test_ems_reaches_part2_without_consent_only_on_a_medical_call_with_an_attestation_which_is_logged(world):
    _, client, keys, store, _ = world
    attestation = "Medic 12, P. Okafor: unresponsive, suspected opioid overdose; treatment history needed"
    for item_id, record_id in _part2_without_consent(store):
        subject = stored_subject(store, record_id)
        attested = _brief(client, keys["ems"], _body(subject, "EMERGENCY", call_type="overdose",
                                                     emergency_attestation=attestation))
        if item_id not in _shown(attested):
            continue
        event = _last_event(store)
        logged = [d for d in event["disclosures"] if d["item_id"] == item_id]
        if not logged:                                   # a merged copy: its head carries another basis
            continue
        assert logged[0]["reason"] == "PERMIT_PART2_MEDICAL_EMERGENCY"
        assert logged[0]["log"]["attestation"] == attestation and logged[0]["log"]["nature_of_emergency"] == "overdose"
        unattested = _brief(client, keys["ems"], _body(subject, "EMERGENCY", call_type="overdose"))
        assert item_id not in _shown(unattested)
        for call_type in ("trespass", "other"):
            answer = _brief(client, keys["ems"], _body(subject, "EMERGENCY", call_type=call_type,
                                                       emergency_attestation=attestation))
            assert item_id not in _shown(answer)
        return
    pytest.fail("no Part 2 item without consent was found to check")


@pytest.mark.parametrize("attestation", ["", "x" * 501, 7])
def test_a_malformed_attestation_is_refused_with_a_field_message(world, attestation):
    _, client, keys, _, _ = world
    body = _body({"given_name": "Ann"}, "EMERGENCY", call_type="overdose", emergency_attestation=attestation)
    response = client.post("/v1/briefings", json=body, headers=_auth(keys["ems"]))
    assert response.status_code == 422 and "emergency_attestation" in response.get_json()["fields"]


# ------------------------------------------------------------------------------ the time budget

def test_a_stalled_resolver_leaves_no_stale_work_queued_and_fresh_requests_answer_once_it_ends(world, monkeypatch):
    _, _, keys, store, db = world
    app = create_app(db, budget_ms=100, clock=county_clock)
    service = app.extensions["briefing"]
    client = app.test_client()
    stall, resolves, reads = threading.Event(), [], []
    real_resolve = service.resolver.resolve

    def stalled(subject):
        resolves.append(1)
        stall.wait(30)
        return real_resolve(subject)

    import api.service.disclosure

    real_items = api.service.disclosure.person_items
    monkeypatch.setattr(api.service.disclosure, "person_items", lambda *a: reads.append(1) or real_items(*a))
    monkeypatch.setattr(service.resolver, "resolve", stalled)
    with store.engine.connect() as connection:
        record_id = connection.execute(select(context_items.c.record_id).where(
            context_items.c.legal_category == "VOLUNTARY_REGISTRY", context_items.c.expires_at.is_(None))
            .order_by(context_items.c.item_id).limit(1)).scalar()
    body = _body(stored_subject(store, record_id), "TREATMENT")
    answers, seconds = [], []
    for _ in range(40):
        started = time.perf_counter()
        answers.append(_brief(client, keys["co"], body))
        seconds.append(time.perf_counter() - started)
    assert all(a["resolution"] == {"status": "unavailable", "candidates": []} and a["items"] == [] for a in answers)
    later = seconds[service.pool.workers:]               # every thread held by the stall: refused without waiting
    assert sum(later) / len(later) < service.budget_seconds
    assert len(resolves) <= service.pool.workers and service.pool.queued == 0
    stall.set()
    deadline = time.perf_counter() + 10
    while service.pool.running and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert service.pool.running == 0 and not reads          # stale work stopped before reading any item
    monkeypatch.setattr(service.resolver, "resolve", real_resolve)
    service.budget_seconds = 5.0                            # a loaded test machine is no stall
    fresh = _brief(client, keys["co"], body)
    assert fresh["resolution"]["status"] == "resolved" and fresh["items"]
    with store.engine.connect() as connection:
        notes = connection.execute(select(func.count()).select_from(audit_events).where(
            audit_events.c.action == "briefing", audit_events.c.payload.like("%busy with overdue work%"))).scalar()
    assert notes >= 40 - service.pool.workers
