"""Correcting and withdrawing data over HTTP: retract an item, revoke a consent, erase registry data."""

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.service.audit import verify
from api.service.keys import create_key
from api.service.store import audit_events, changes, clusters, consents, context_items, feedback, records
from api.web.app import create_app
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county, stored_subject



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    county = tmp_path_factory.mktemp("county")
    db, store = loaded_county(county, 500, 23)
    keys = {
        "co": create_key(store, "co-w", Role.co_responder, "COUNTY_BH", [Purpose.TREATMENT, Purpose.EMERGENCY]),
        "officer": create_key(store, "pd-w", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "feed_registry": create_key(store, "feed-vr", Role.feed, "REGISTRY", []),
        "feed_bh": create_key(store, "feed-bh-w", Role.feed, "COUNTY_BH", []),
        "feed_pd": create_key(store, "feed-pd-w", Role.feed, "METRO_PD", []),
        "admin": create_key(store, "admin-w", Role.admin, "COUNTY", []),
    }
    app = create_app(db)
    return app, app.test_client(), keys, store, db


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def _brief(client, key, subject, purpose="TREATMENT", received_at=None):
    body = {"incident": {"id": f"INC-W-{uuid.uuid4().hex[:8]}", "call_type": "mental_health_crisis",
                         "received_at": (received_at or datetime.now(timezone.utc)).isoformat()},
            "subject": subject, "purpose": purpose}
    response = client.post("/v1/briefings", json=body, headers=_auth(key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _shown(answer) -> set[str]:
    """Every item id an answer discloses, merged duplicates included."""
    return {i["item_id"] for i in answer["items"]} | {s["item_id"] for i in answer["items"] for s in i["sources"]}


def _events(store, action=None):
    statement = select(audit_events).order_by(audit_events.c.seq)
    if action:
        statement = statement.where(audit_events.c.action == action)
    with store.engine.connect() as connection:
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in connection.execute(statement).mappings()]


def _count(store):
    return len(_events(store))


def _shown_item(client, key, store, statement, purpose="TREATMENT", tries=40):
    """The first (item_id, record_id) that `statement` selects and a briefing about its record shows."""
    with store.engine.connect() as connection:
        rows = connection.execute(statement.limit(tries)).all()
    for item_id, record_id in rows:
        if item_id in _shown(_brief(client, key, stored_subject(store, record_id), purpose)):
            return item_id, record_id
    pytest.fail("no candidate item is shown by a briefing")


def _not_expiring(now=None):
    soon = ((now or datetime.now(timezone.utc)) + timedelta(days=30)).isoformat()
    return context_items.c.expires_at.is_(None) | (context_items.c.expires_at > soon)


def _registry_item_statement(exclude_records=()):
    return (select(context_items.c.item_id, context_items.c.record_id)
            .join(records, records.c.record_id == context_items.c.record_id)
            .where(records.c.agency == "REGISTRY", context_items.c.legal_category == "VOLUNTARY_REGISTRY",
                   context_items.c.status == "active", _not_expiring(),
                   context_items.c.record_id.not_in(list(exclude_records)))
            .order_by(context_items.c.item_id))


# ------------------------------------------------------------------------------------------- retract

def test_a_retracted_item_is_never_briefed_again_and_the_retraction_is_audited(world):
    _, client, keys, store, _ = world
    item_id, record_id = _shown_item(client, keys["co"], store, _registry_item_statement())
    before = _count(store)
    response = client.post(f"/v1/context-items/{item_id}/retract", json={"reason": "caregiver says it is out of date"},
                           headers=_auth(keys["feed_registry"]))
    assert response.status_code == 200
    assert response.get_json() == {"item_id": item_id, "record_id": record_id, "status": "retracted",
                                   "previous_status": "active", "changed": True}
    assert _count(store) == before + 1
    event = _events(store, "context_item_retract")[-1]["payload"]
    assert (event["item_id"], event["reason"], event["principal"]) == (item_id, "caregiver says it is out of date", "feed-vr")
    with store.engine.connect() as connection:
        assert connection.execute(select(context_items.c.status).where(context_items.c.item_id == item_id)).scalar() == "retracted"
    for key in (keys["co"], keys["officer"]):
        answer = _brief(client, key, stored_subject(store, record_id), "EMERGENCY")
        assert item_id not in _shown(answer)
        assert all(w["reason"] != "DENY_NOT_ACTIVE" for w in answer["withheld"])    # not even mentioned
    denied = _events(store, "briefing")[-1]["payload"]["denied"]
    assert {"item_id": item_id, "reason": "DENY_NOT_ACTIVE"} in denied
    again = client.post(f"/v1/context-items/{item_id}/retract", headers=_auth(keys["admin"]))
    assert again.status_code == 200 and again.get_json()["changed"] is False
    assert verify(store).ok


def test_an_admin_may_mark_an_item_entered_in_error(world):
    _, client, keys, store, _ = world
    with store.engine.connect() as connection:
        item_id = connection.execute(select(context_items.c.item_id).where(
            context_items.c.legal_category == "CJI", context_items.c.status == "active").limit(1)).scalar()
    response = client.post(f"/v1/context-items/{item_id}/retract", json={"status": "entered_in_error"},
                           headers=_auth(keys["admin"]))
    assert response.status_code == 200 and response.get_json()["status"] == "entered_in_error"
    with store.engine.connect() as connection:
        assert connection.execute(select(context_items.c.status)
                                  .where(context_items.c.item_id == item_id)).scalar() == "entered_in_error"


def test_retracting_is_refused_to_another_agencys_feed_to_other_roles_and_for_unknown_items(world):
    _, client, keys, store, _ = world
    with store.engine.connect() as connection:
        item_id = connection.execute(_registry_item_statement().limit(1)).first()[0]
    before = _count(store)
    refused = client.post(f"/v1/context-items/{item_id}/retract", json={}, headers=_auth(keys["feed_pd"]))
    assert refused.status_code == 403 and "METRO_PD" in refused.get_json()["message"]
    assert client.post(f"/v1/context-items/{item_id}/retract", headers=_auth(keys["co"])).status_code == 403
    assert client.post(f"/v1/context-items/{item_id}/retract").status_code == 401
    missing = client.post("/v1/context-items/NO-SUCH-ITEM/retract", headers=_auth(keys["admin"]))
    assert missing.status_code == 404 and missing.is_json
    bad = client.post(f"/v1/context-items/{item_id}/retract", json={"status": "deleted"}, headers=_auth(keys["admin"]))
    assert bad.status_code == 422 and "status" in bad.get_json()["fields"]
    with store.engine.connect() as connection:
        assert connection.execute(select(context_items.c.status).where(context_items.c.item_id == item_id)).scalar() == "active"
    # The other agency's feed is on record (issue 15: a refused write is audited); so is the keyless call.
    assert [e["action"] for e in _events(store)[before:]] == ["write_refused", "auth_failed"]


def test_a_feed_may_reinstate_a_retracted_item_by_sending_it_again_as_active(world):
    _, client, keys, store, _ = world
    with store.engine.connect() as connection:
        row = connection.execute(select(context_items).join(records, records.c.record_id == context_items.c.record_id)
                                 .where(records.c.agency == "REGISTRY", context_items.c.status == "active")
                                 .order_by(context_items.c.item_id.desc()).limit(1)).mappings().one()
    item = {k: v for k, v in row.items() if v is not None and k != "updated_at"}
    assert client.post(f"/v1/context-items/{item['item_id']}/retract", headers=_auth(keys["feed_registry"])).status_code == 200
    resent = client.post("/v1/context-items", json=item, headers=_auth(keys["feed_registry"]))
    assert resent.status_code == 200
    with store.engine.connect() as connection:
        assert connection.execute(select(context_items.c.status)
                                  .where(context_items.c.item_id == item["item_id"])).scalar() == "active"
    assert [e["payload"]["item_id"] for e in _events(store)[-2:]] == [item["item_id"]] * 2      # both audited


# -------------------------------------------------------------------------------------------- revoke

def _covering_consent(client, keys, store):
    """(consent_id, item_id, record_id): a Part 2 item a co-responder sees only through one consent of its record."""
    now = datetime.now(timezone.utc)
    with store.engine.connect() as connection:
        part2 = connection.execute(select(context_items.c.item_id, context_items.c.record_id).where(
            context_items.c.legal_category == "PART2", context_items.c.status == "active", _not_expiring(now))
            .order_by(context_items.c.item_id)).all()
        by_record = {}
        for row in connection.execute(select(consents)).mappings():
            by_record.setdefault(row["record_id"], []).append(row)
    for item_id, record_id in part2:
        held = by_record.get(record_id, [])
        if len(held) == 1 and "TREATMENT" in held[0]["purposes"] and "co_responder" in held[0]["recipients"] \
                and held[0]["revoked_at"] is None and (held[0]["valid_until"] or "9999") > (now + timedelta(days=30)).isoformat():
            if item_id in _shown(_brief(client, keys["co"], stored_subject(store, record_id))):
                return held[0]["consent_id"], item_id, record_id
    for item_id, record_id in part2:        # none in the county: the treatment programme's feed sends one
        if record_id in by_record:
            continue
        consent_id = f"CNS-W-{item_id}"
        sent = client.post("/v1/consents", headers=_auth(keys["feed_bh"]), json={
            "consent_id": consent_id, "record_id": record_id, "recipients": "co_responder", "purposes": "TREATMENT",
            "categories": "PART2", "valid_from": "2020-01-01T00:00:00+00:00", "valid_until": "2100-01-01T00:00:00+00:00"})
        assert sent.status_code == 200
        if item_id in _shown(_brief(client, keys["co"], stored_subject(store, record_id))):
            return consent_id, item_id, record_id
    pytest.fail("no Part 2 item is shown to a co-responder under a consent")


def test_revoked_consent_stops_disclosure_on_the_next_briefing(world):
    _, client, keys, store, _ = world
    consent_id, item_id, record_id = _covering_consent(client, keys, store)
    before = _count(store)
    response = client.post(f"/v1/consents/{consent_id}/revoke", json={"reason": "patient withdrew consent"},
                           headers=_auth(keys["feed_bh"]))
    assert response.status_code == 200
    body = response.get_json()
    assert (body["consent_id"], body["record_id"], body["previous_revoked_at"], body["changed"]) == (
        consent_id, record_id, None, True)
    assert datetime.fromisoformat(body["revoked_at"]) <= datetime.now(timezone.utc)
    assert _count(store) == before + 1
    event = _events(store, "consent_revoke")[-1]["payload"]
    assert (event["consent_id"], event["revoked_at"], event["reason"]) == (consent_id, body["revoked_at"],
                                                                          "patient withdrew consent")
    answer = _brief(client, keys["co"], stored_subject(store, record_id))
    assert item_id not in _shown(answer)
    assert all("PART2" not in w["reason"] for w in answer["withheld"])       # its existence is not disclosed either
    assert {"item_id": item_id, "reason": "DENY_PART2_NO_CONSENT"} in _events(store, "briefing")[-1]["payload"]["denied"]
    assert verify(store).ok


def test_a_revocation_binds_an_incident_received_before_it_and_a_resent_copy_does_not_undo_it(world):
    _, client, keys, store, _ = world
    consent_id, item_id, record_id = _covering_consent(client, keys, store)
    received = datetime.now(timezone.utc) - timedelta(minutes=2)
    assert item_id in _shown(_brief(client, keys["co"], stored_subject(store, record_id), received_at=received))
    assert client.post(f"/v1/consents/{consent_id}/revoke", headers=_auth(keys["feed_bh"])).status_code == 200
    assert item_id not in _shown(_brief(client, keys["co"], stored_subject(store, record_id), received_at=received))
    with store.engine.connect() as connection:
        stored = dict(connection.execute(select(consents).where(consents.c.consent_id == consent_id)).mappings().one())
    resent = {k: v for k, v in stored.items() if v is not None and k not in ("updated_at", "revoked_at")}
    assert client.post("/v1/consents", json=resent, headers=_auth(keys["feed_bh"])).status_code == 200
    with store.engine.connect() as connection:
        assert connection.execute(select(consents.c.revoked_at).where(consents.c.consent_id == consent_id)).scalar() \
            == stored["revoked_at"]
    assert item_id not in _shown(_brief(client, keys["co"], stored_subject(store, record_id), received_at=received))


def test_revoking_is_refused_to_another_agencys_feed_to_other_roles_and_for_unknown_consents(world):
    _, client, keys, store, _ = world
    with store.engine.connect() as connection:
        consent_id = connection.execute(select(consents.c.consent_id).where(consents.c.revoked_at.is_(None))
                                        .order_by(consents.c.consent_id.desc()).limit(1)).scalar()
    before = _count(store)
    assert client.post(f"/v1/consents/{consent_id}/revoke", headers=_auth(keys["feed_registry"])).status_code == 403
    assert client.post(f"/v1/consents/{consent_id}/revoke", headers=_auth(keys["officer"])).status_code == 403
    assert client.post("/v1/consents/NO-SUCH-CONSENT/revoke", headers=_auth(keys["admin"])).status_code == 404
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    bad = client.post(f"/v1/consents/{consent_id}/revoke", json={"revoked_at": future}, headers=_auth(keys["admin"]))
    assert bad.status_code == 422 and "revoked_at" in bad.get_json()["fields"]
    naive = client.post(f"/v1/consents/{consent_id}/revoke", json={"revoked_at": "2026-01-01T00:00:00"},
                        headers=_auth(keys["admin"]))
    assert naive.status_code == 422
    with store.engine.connect() as connection:
        assert connection.execute(select(consents.c.revoked_at).where(consents.c.consent_id == consent_id)).scalar() is None
    assert [e["action"] for e in _events(store)[before:]] == ["write_refused"]    # the other agency's feed, on record


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10 ** 8), min_size=1, max_size=4))
def test_a_revocation_only_ever_moves_earlier(world, seconds_ago):
    _, client, keys, store, _ = world
    consent_id = "CNS-W-PROPERTY"
    with store.begin() as connection:
        if connection.execute(select(consents.c.consent_id).where(consents.c.consent_id == consent_id)).first() is None:
            record_id = connection.execute(select(records.c.record_id).where(records.c.agency == "COUNTY_BH").limit(1)).scalar()
            assert client.post("/v1/consents", headers=_auth(keys["feed_bh"]), json={
                "consent_id": consent_id, "record_id": record_id, "recipients": "co_responder", "purposes": "TREATMENT",
                "categories": "PART2", "valid_from": "2020-01-01T00:00:00+00:00"}).status_code == 200
    with store.engine.connect() as connection:
        stored = connection.execute(select(consents.c.revoked_at).where(consents.c.consent_id == consent_id)).scalar()
    earliest = datetime.fromisoformat(stored) if stored else None
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for ago in seconds_ago:
        when = now - timedelta(seconds=ago)
        body = client.post(f"/v1/consents/{consent_id}/revoke", json={"revoked_at": when.isoformat()},
                           headers=_auth(keys["admin"])).get_json()
        assert body["changed"] is (earliest is None or when < earliest)
        earliest = when if earliest is None else min(earliest, when)
        assert datetime.fromisoformat(body["revoked_at"]) == earliest


# --------------------------------------------------------------------------------------------- erase

def _registry_person(store):
    """A person with at least one registry record holding a registry item, and at least one other record."""
    with store.engine.connect() as connection:
        rows = connection.execute(select(clusters.c.person_id, records.c.record_id, records.c.agency)
                                  .join(records, records.c.record_id == clusters.c.record_id)).all()
        with_items = set(connection.execute(select(context_items.c.record_id).where(
            context_items.c.legal_category == "VOLUNTARY_REGISTRY", context_items.c.status == "active")).scalars())
    people = {}
    for person_id, record_id, agency in rows:
        people.setdefault(person_id, []).append((record_id, agency))
    for person_id in sorted(people):
        held = people[person_id]
        if any(a == "REGISTRY" and r in with_items for r, a in held) and any(a != "REGISTRY" for _, a in held):
            return person_id, [r for r, a in held if a == "REGISTRY"], [r for r, a in held if a != "REGISTRY"]
    pytest.fail("no person with registry and other records")


def test_erasing_registry_data_removes_items_consents_and_records_everywhere_and_answers_with_counts(world):
    app, client, keys, store, db = world
    person_id, registry, others = _registry_person(store)
    other_worker = create_app(db)
    with store.engine.connect() as connection:
        every = registry + others
        expected_items = sorted(connection.execute(select(context_items.c.item_id).where(
            context_items.c.record_id.in_(every),
            (context_items.c.legal_category == "VOLUNTARY_REGISTRY") | context_items.c.record_id.in_(registry))).scalars())
        texts = [t for t in connection.execute(select(context_items.c.text)
                                               .where(context_items.c.item_id.in_(expected_items))).scalars() if t]
        names = [n for n in connection.execute(select(records.c.family_name).where(records.c.record_id.in_(registry))).scalars() if n]
        kept_items = sorted(connection.execute(select(context_items.c.item_id).where(
            context_items.c.record_id.in_(others), context_items.c.legal_category != "VOLUNTARY_REGISTRY")).scalars())
    subject = stored_subject(store, registry[0])
    with store.begin() as connection:       # feedback on an erased item goes with it
        connection.execute(feedback.insert().values(incident_id="INC-W-FB", item_id=expected_items[0], principal="co-w",
                                                    helped=1, outcome="it helped", created_at=datetime.now(timezone.utc).isoformat()))
    shown_before = _shown(_brief(client, keys["co"], subject))
    assert shown_before & set(expected_items)
    before = _count(store)

    response = client.post(f"/v1/persons/{person_id}/erase-registry", headers=_auth(keys["admin"]),
                           json={"requested_by": "registrant by signed form", "reference": "ERASE-2026-0042"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["person_id"] == person_id and body["record_ids"] == sorted(registry)
    assert body["item_ids"] == expected_items and body["context_items"] == len(expected_items)
    assert body["records"] == len(registry) and body["feedback"] == 1 and body["consents"] == len(body["consent_ids"])
    assert _count(store) == before + 1

    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(records).where(records.c.record_id.in_(registry))).scalar() == 0
        assert connection.execute(select(func.count()).select_from(clusters).where(clusters.c.record_id.in_(registry))).scalar() == 0
        assert connection.execute(select(func.count()).select_from(context_items)
                                  .where(context_items.c.item_id.in_(expected_items))).scalar() == 0
        assert connection.execute(select(func.count()).select_from(feedback)
                                  .where(feedback.c.item_id == expected_items[0])).scalar() == 0
        assert sorted(connection.execute(select(context_items.c.item_id)
                                         .where(context_items.c.record_id.in_(others),
                                                context_items.c.legal_category != "VOLUNTARY_REGISTRY")).scalars()) == kept_items
        deleted = set(connection.execute(select(changes.c.record_id).where(changes.c.op == "delete")).scalars())
        assert set(registry) <= deleted
    assert not set(registry) & set(app.extensions["briefing"].resolver.index_.slot_of)
    assert set(others) <= set(app.extensions["briefing"].resolver.index_.slot_of)

    after = _brief(client, keys["co"], subject)
    assert not _shown(after) & set(expected_items)
    assert all(c["record_id"] not in registry for c in after["resolution"]["candidates"])
    elsewhere = _brief(other_worker.test_client(), keys["co"], stored_subject(store, others[0]))
    assert all(c["record_id"] not in registry for c in elsewhere["resolution"]["candidates"])
    assert not set(registry) & set(other_worker.extensions["briefing"].resolver.index_.slot_of)

    event = _events(store, "registry_erasure")[-1]
    assert event["payload"]["deleted"] == {"records": len(registry), "context_items": len(expected_items),
                                           "consents": body["consents"], "feedback": 1, "referrals": 0,
                                           "briefed_persons": 1}            # the co-responder's briefing before
    assert event["payload"]["record_ids"] == sorted(registry) and event["payload"]["item_ids"] == expected_items
    assert event["payload"]["reference"] == "ERASE-2026-0042"
    written = json.dumps(event["payload"])
    assert not any(text in written for text in texts) and not any(name in written for name in names)
    assert verify(store).ok


def test_erasure_is_for_admins_only_needs_the_request_record_and_unknown_persons_are_404(world):
    _, client, keys, store, _ = world
    with store.engine.connect() as connection:
        person_id = connection.execute(select(clusters.c.person_id).limit(1)).scalar()
    body = {"requested_by": "registrant", "reference": "REF-1"}
    before = _count(store)
    assert client.post(f"/v1/persons/{person_id}/erase-registry", json=body, headers=_auth(keys["feed_registry"])).status_code == 403
    assert client.post(f"/v1/persons/{person_id}/erase-registry", json=body, headers=_auth(keys["co"])).status_code == 403
    missing = client.post(f"/v1/persons/{person_id}/erase-registry", json={"reference": "REF-1"}, headers=_auth(keys["admin"]))
    assert missing.status_code == 422 and "requested_by" in missing.get_json()["fields"]
    assert client.post(f"/v1/persons/{person_id}/erase-registry", headers=_auth(keys["admin"])).status_code == 400
    assert client.post("/v1/persons/NOBODY/erase-registry", json=body, headers=_auth(keys["admin"])).status_code == 404
    assert _count(store) == before


def test_erasing_a_person_without_registry_data_changes_nothing_but_is_recorded(world):
    _, client, keys, store, _ = world
    with store.engine.connect() as connection:
        held = connection.execute(select(clusters.c.person_id, records.c.agency, context_items.c.legal_category)
                                  .join(records, records.c.record_id == clusters.c.record_id)
                                  .outerjoin(context_items, context_items.c.record_id == records.c.record_id)).all()
        records_before = connection.execute(select(func.count()).select_from(records)).scalar()
    touched = {p for p, agency, legal in held if agency == "REGISTRY" or legal == "VOLUNTARY_REGISTRY"}
    person_id = min({p for p, _, _ in held} - touched)
    response = client.post(f"/v1/persons/{person_id}/erase-registry", headers=_auth(keys["admin"]),
                           json={"requested_by": "registrant", "reference": "REF-2"})
    assert response.status_code == 200
    assert {k: response.get_json()[k] for k in ("records", "context_items", "consents", "feedback")} == dict.fromkeys(
        ("records", "context_items", "consents", "feedback"), 0)
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(records)).scalar() == records_before
    assert _events(store, "registry_erasure")[-1]["payload"]["reference"] == "REF-2"


def test_withdrawals_on_postgresql(postgres_url, tmp_path):
    _, store = loaded_county(tmp_path, 200, 31, db=postgres_url)
    admin = create_key(store, "admin-pg", Role.admin, "COUNTY", [])
    feed = create_key(store, "feed-vr-pg", Role.feed, "REGISTRY", [])
    app = create_app(postgres_url)
    client = app.test_client()
    with store.engine.connect() as connection:
        item_id = connection.execute(_registry_item_statement().limit(1)).first()[0]
        consent_id = connection.execute(select(consents.c.consent_id).limit(1)).scalar()
    assert client.post(f"/v1/context-items/{item_id}/retract", headers=_auth(feed)).get_json()["changed"] is True
    assert client.post(f"/v1/context-items/{item_id}/retract", headers=_auth(feed)).get_json()["changed"] is False
    assert client.post(f"/v1/consents/{consent_id}/revoke", headers=_auth(feed)).status_code == 403
    assert client.post(f"/v1/consents/{consent_id}/revoke", headers=_auth(admin)).get_json()["changed"] is True
    person_id, registry, _ = _registry_person(store)
    erased = client.post(f"/v1/persons/{person_id}/erase-registry", headers=_auth(admin),
                         json={"requested_by": "registrant", "reference": "PG-1"})
    assert erased.status_code == 200 and erased.get_json()["record_ids"] == sorted(registry)
    assert not set(registry) & set(app.extensions["briefing"].resolver.index_.slot_of)
    assert verify(store).ok
    store.engine.dispose()
    app.extensions["briefing"].store.engine.dispose()
