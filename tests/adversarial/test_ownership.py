"""Attacks on ownership (issue 15, finding 3, and the leaks of finding 7 in the writers' answers).

The rules, as the team agreed them (not as the code happens to behave):

- An item or a consent belongs to the agency of the record it hangs on when first written. A write
  by a feed of another agency to an existing `item_id` / `consent_id` is refused 403 with
  "this item belongs to another agency" / "this consent belongs to another agency", the stored row
  is unchanged, and the attempt is audited as `write_refused` (principal, agency, kind, id), even
  though the request itself is refused.
- Nobody, admin included, moves an item or a consent onto a record of another agency (409), over
  HTTP or through `briefing ingest` (rejected with file:line:column, nothing written).
- No 403 of the writers names another agency.
- A feed's `POST /v1/records` answer is `{"record_id", "created"}` only: a feed posting a copy of
  another agency's record must not learn that it joined someone, nor whom.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from api.service import ingest as ingest_module
from api.service.audit import verify
from api.service.ingest import IngestError, ingest
from api.service.owned_upsert import upsert
from api.service.keys import create_key
from api.service.store import audit_events, consents, context_items, records
from api.web.app import create_app
from matching.model import MatcherModel
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

MODEL = MatcherModel.load("models/matcher.json")
ITEM_REFUSED = "this item belongs to another agency"
CONSENT_REFUSED = "this consent belongs to another agency"
VICTIM, ATTACKER = "COUNTY_BH", "METRO_PD"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def county(request, tmp_path_factory):
    """A county on each kind of store (PostgreSQL when the session has a server), with its writers' keys."""
    directory = tmp_path_factory.mktemp(f"adversarial-ownership-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    db, store = loaded_county(directory, 200, 7, url)
    keys = {"feed_pd": create_key(store, "feed-pd-own", Role.feed, ATTACKER, []),
            "feed_bh": create_key(store, "feed-bh-own", Role.feed, VICTIM, []),
            "feed_ems": create_key(store, "feed-ems-own", Role.feed, "COUNTY_EMS", []),
            "admin": create_key(store, "admin-own", Role.admin, "COUNTY", []),
            "co": create_key(store, "co-own", Role.co_responder, VICTIM, [Purpose.TREATMENT])}
    app = create_app(db)
    yield app.test_client(), keys, store, directory
    app.extensions["briefing"].store.engine.dispose()
    store.engine.dispose()


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _row(store, table, key_column, key) -> dict | None:
    with store.engine.connect() as connection:
        row = connection.execute(select(table).where(table.c[key_column] == key)).mappings().first()
    return dict(row) if row else None


def _body(row: dict) -> dict:
    """A stored item or consent as a feed would send it."""
    return {k: v for k, v in row.items() if v is not None and k != "updated_at"}


def _one(store, statement):
    with store.engine.connect() as connection:
        return connection.execute(statement.limit(1)).first()


def _victim_item(store, legal: str = "PART2"):
    """(item_id, record_id) of an active COUNTY_BH item of this legal category."""
    return _one(store, select(context_items.c.item_id, context_items.c.record_id)
                .join(records, records.c.record_id == context_items.c.record_id)
                .where(records.c.agency == VICTIM, context_items.c.legal_category == legal,
                       context_items.c.status == "active").order_by(context_items.c.item_id))


def _victim_consent(store):
    return _one(store, select(consents.c.consent_id, consents.c.record_id)
                .join(records, records.c.record_id == consents.c.record_id)
                .where(records.c.agency == VICTIM, consents.c.revoked_at.is_(None)).order_by(consents.c.consent_id))


def _record_of(store, agency: str, offset: int = 0) -> str:
    with store.engine.connect() as connection:
        return connection.execute(select(records.c.record_id).where(records.c.agency == agency)
                                  .order_by(records.c.record_id).offset(offset).limit(1)).scalar()


def _events(store, action: str) -> list[dict]:
    with store.engine.connect() as connection:
        rows = connection.execute(select(audit_events.c.payload).where(audit_events.c.action == action)
                                  .order_by(audit_events.c.seq)).scalars().all()
    return [json.loads(r) for r in rows]


def _audit_count(store) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(audit_events)).scalar()


# ------------------------------------------------------------------------------------------------ HTTP


def test_feed_cannot_take_over_another_agencys_part2_item(county):
    client, keys, store, _ = county
    item_id, _ = _victim_item(store)
    before = _row(store, context_items, "item_id", item_id)
    attack = {**_body(before), "record_id": _record_of(store, ATTACKER), "text": "nothing of note",
              "legal_category": "AGENCY_OPERATIONAL", "consent_id": None, "disclosure_basis": "operational"}
    refused_before = len(_events(store, "write_refused"))
    response = client.post("/v1/context-items", json={k: v for k, v in attack.items() if v is not None},
                           headers=_auth(keys["feed_pd"]))
    assert response.status_code == 403 and response.get_json()["message"] == ITEM_REFUSED
    assert _row(store, context_items, "item_id", item_id) == before
    refusals = _events(store, "write_refused")
    assert len(refusals) == refused_before + 1
    assert refusals[-1] == {"principal": "feed-pd-own", "agency": ATTACKER, "kind": "context_item", "id": item_id}
    assert verify(store).ok
    # The owner still acts on its own item.
    retracted = client.post(f"/v1/context-items/{item_id}/retract", json={"reason": "test"}, headers=_auth(keys["feed_bh"]))
    assert retracted.status_code == 200


def test_feed_cannot_rewrite_another_agencys_item_where_it_hangs(county):
    client, keys, store, _ = county
    item_id, record_id = _victim_item(store, "PHI")
    before = _row(store, context_items, "item_id", item_id)
    response = client.post("/v1/context-items", json={**_body(before), "text": "rewritten by another agency"},
                           headers=_auth(keys["feed_pd"]))
    assert response.status_code == 403 and response.get_json()["message"] == ITEM_REFUSED
    assert _row(store, context_items, "item_id", item_id) == before
    assert _events(store, "write_refused")[-1]["id"] == item_id


def test_feed_cannot_take_over_another_agencys_consent(county):
    client, keys, store, _ = county
    consent_id, _ = _victim_consent(store)
    before = _row(store, consents, "consent_id", consent_id)
    attack = {**_body(before), "record_id": _record_of(store, ATTACKER), "recipients": "officer|dispatcher",
              "purposes": "LAW|EMERGENCY", "categories": "PART2|PHI"}
    response = client.post("/v1/consents", json=attack, headers=_auth(keys["feed_pd"]))
    assert response.status_code == 403 and response.get_json()["message"] == CONSENT_REFUSED
    assert _row(store, consents, "consent_id", consent_id) == before
    assert _events(store, "write_refused")[-1] == {"principal": "feed-pd-own", "agency": ATTACKER, "kind": "consent",
                                                   "id": consent_id}


def test_admin_cannot_move_an_item_or_consent_onto_a_record_of_another_agency(county):
    client, keys, store, _ = county
    item_id, _ = _victim_item(store, "PHI")
    before = _row(store, context_items, "item_id", item_id)
    moved = client.post("/v1/context-items", json={**_body(before), "record_id": _record_of(store, ATTACKER)},
                        headers=_auth(keys["admin"]))
    assert moved.status_code == 409 and ATTACKER not in moved.get_json()["message"]
    assert _row(store, context_items, "item_id", item_id) == before
    consent_id, _ = _victim_consent(store)
    stored = _row(store, consents, "consent_id", consent_id)
    moved = client.post("/v1/consents", json={**_body(stored), "record_id": _record_of(store, "COUNTY_EMS")},
                        headers=_auth(keys["admin"]))
    assert moved.status_code == 409 and _row(store, consents, "consent_id", consent_id) == stored
    # Within its own agency an item may move (a record merged or corrected by its owner).
    same_agency = next(r for k in range(5) if (r := _record_of(store, VICTIM, k)) != before["record_id"])
    assert client.post("/v1/context-items", json={**_body(before), "record_id": same_agency},
                       headers=_auth(keys["feed_bh"])).status_code == 200
    assert _row(store, context_items, "item_id", item_id)["record_id"] == same_agency


def test_feed_cannot_hang_its_own_item_on_another_agencys_record(county):
    client, keys, store, _ = county
    record_id = _record_of(store, VICTIM)
    item = {"item_id": "CI-PD-PLANTED-1", "record_id": record_id, "category": "safety_flag", "code": "SAFE_WEAPON",
            "text": "planted", "legal_category": "AGENCY_OPERATIONAL"}
    response = client.post("/v1/context-items", json=item, headers=_auth(keys["feed_pd"]))
    assert response.status_code == 403 and VICTIM not in response.get_data(as_text=True)
    assert _row(store, context_items, "item_id", "CI-PD-PLANTED-1") is None


def test_no_refusal_to_a_feed_names_the_agency_that_owns_the_data(county):
    client, keys, store, _ = county
    item_id, record_id = _victim_item(store, "PHI")
    consent_id, _ = _victim_consent(store)
    victim_record = _row(store, records, "record_id", record_id)
    attempts = [
        ("post", "/v1/records", {k: v for k, v in victim_record.items() if v is not None and k != "ingested_at"}
         | {"agency": None}),
        ("post", "/v1/records", {"record_id": record_id, "given_name": "Mallory"}),
        ("delete", f"/v1/records/{record_id}", None),
        ("post", f"/v1/context-items/{item_id}/retract", {"reason": "probe"}),
        ("post", f"/v1/consents/{consent_id}/revoke", {"reason": "probe"}),
        ("post", "/v1/consents", {"consent_id": "CNS-PD-PROBE", "record_id": record_id, "recipients": "officer",
                                  "purposes": "LAW", "categories": "PHI", "valid_from": "2024-01-01T00:00:00+00:00"}),
    ]
    snapshot = (_row(store, records, "record_id", record_id), _row(store, context_items, "item_id", item_id),
                _row(store, consents, "consent_id", consent_id))
    for method, path, body in attempts:
        body = {k: v for k, v in body.items() if v is not None} if body else None
        response = client.open(path, method=method.upper(), json=body, headers=_auth(keys["feed_pd"]))
        assert response.status_code == 403, (path, response.get_json())
        assert VICTIM not in response.get_data(as_text=True), (path, response.get_json())
    assert snapshot == (_row(store, records, "record_id", record_id), _row(store, context_items, "item_id", item_id),
                        _row(store, consents, "consent_id", consent_id))


def test_a_feed_posting_a_copy_of_another_agencys_record_learns_nothing_about_who_it_joined(county):
    client, keys, store, _ = county
    with store.engine.connect() as connection:
        victim = connection.execute(select(records).where(records.c.agency == VICTIM, records.c.dob.is_not(None),
                                                          records.c.given_name.is_not(None))
                                    .order_by(records.c.record_id).limit(1)).mappings().one()
    identity = {k: victim[k] for k in ("given_name", "family_name", "dob", "sex", "phone", "street", "city", "postcode")
                if victim[k]}
    copy = {"record_id": "RMS-COPY-OF-VICTIM", **identity}
    created = client.post("/v1/records", json=copy, headers=_auth(keys["feed_pd"]))
    assert created.status_code == 201 and created.get_json() == {"record_id": "RMS-COPY-OF-VICTIM", "created": True}
    again = client.post("/v1/records", json=copy, headers=_auth(keys["feed_pd"]))
    assert again.status_code == 200 and again.get_json() == {"record_id": "RMS-COPY-OF-VICTIM", "created": False}
    # An admin key still gets the linkage (it may see every agency's data anyway).
    admin = client.post("/v1/records", json={**copy, "record_id": "RMS-COPY-BY-ADMIN", "agency": ATTACKER},
                        headers=_auth(keys["admin"])).get_json()
    assert {"record_id", "created", "person_id", "joined", "review_pair"} <= set(admin) and admin["created"] is True
    # The audit log keeps the whole story for the auditor.
    event = [e for e in _events(store, "record_upsert") if e["record_id"] == "RMS-COPY-OF-VICTIM"][-1]
    assert {"person_id", "joined"} <= set(event)


def test_admin_cannot_change_the_agency_of_a_record_items_hang_on(county):
    client, keys, store, _ = county
    _, record_id = _victim_item(store, "PHI")
    stored = _row(store, records, "record_id", record_id)
    body = {k: v for k, v in stored.items() if v is not None and k != "ingested_at"} | {"agency": ATTACKER}
    response = client.post("/v1/records", json=body, headers=_auth(keys["admin"]))
    assert response.status_code == 409, response.get_json()
    assert _row(store, records, "record_id", record_id)["agency"] == VICTIM


def test_a_store_level_upsert_never_moves_an_item_across_agencies(county):
    """The last line: even a writer that skipped the checks (or raced another) cannot move a row."""
    _, _, store, _ = county
    item_id, _ = _victim_item(store, "PHI")
    before = _row(store, context_items, "item_id", item_id)
    with pytest.raises(ingest_module.OwnershipConflict):
        with store.begin() as connection:
            upsert(connection, context_items, "item_id", [{**before, "record_id": _record_of(store, ATTACKER)}])
    assert _row(store, context_items, "item_id", item_id) == before
    consent_id, _ = _victim_consent(store)
    stored = _row(store, consents, "consent_id", consent_id)
    with pytest.raises(ingest_module.OwnershipConflict):
        with store.begin() as connection:
            upsert(connection, consents, "consent_id", [{**stored, "record_id": _record_of(store, ATTACKER)}])
    assert _row(store, consents, "consent_id", consent_id) == stored


# ---------------------------------------------------------------------------------------------- ingest


def _write(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_ingest_refuses_a_load_that_moves_another_agencys_item_to_a_record_of_its_own(county, tmp_path):
    _, _, store, _ = county
    item_id, _ = _victim_item(store, "PHI")
    before = _row(store, context_items, "item_id", item_id)
    moved = {**_body(before), "record_id": _record_of(store, ATTACKER), "text": "taken over"}
    path = _write(tmp_path / "items.csv", [moved])
    events = _audit_count(store)
    with pytest.raises(IngestError) as caught:
        ingest(store, [path], MODEL, principal="cli:attacker")
    column = list(moved).index("record_id") + 1
    assert f"{path}:2:{column}: " in str(caught.value) and item_id in str(caught.value)
    assert _row(store, context_items, "item_id", item_id) == before and _audit_count(store) == events


def test_ingest_refuses_a_load_that_moves_another_agencys_consent(county, tmp_path):
    _, _, store, _ = county
    consent_id, _ = _victim_consent(store)
    before = _row(store, consents, "consent_id", consent_id)
    new_item = {"item_id": "CI-INGEST-INNOCENT", "record_id": _record_of(store, ATTACKER), "category": "safety_flag",
                "code": "SAFE_DOG", "text": "dog on premises", "legal_category": "AGENCY_OPERATIONAL"}
    items = _write(tmp_path / "items.csv", [new_item])
    moved = {**_body(before), "record_id": _record_of(store, ATTACKER), "recipients": "officer"}
    path = _write(tmp_path / "consents.csv", [moved])
    with pytest.raises(IngestError) as caught:
        ingest(store, [items, path], MODEL)
    assert f"{path}:2:{list(moved).index('record_id') + 1}: " in str(caught.value)
    assert _row(store, consents, "consent_id", consent_id) == before
    assert _row(store, context_items, "item_id", "CI-INGEST-INNOCENT") is None          # all or nothing


def test_ingest_refuses_a_load_that_changes_the_agency_of_a_record_items_hang_on(county, tmp_path):
    _, _, store, directory = county
    _, record_id = _victim_item(store, "PHI")
    frame = pd.read_csv(directory / "records.csv", dtype=str, keep_default_na=False)
    row = frame[frame.record_id == record_id].assign(agency=ATTACKER)
    path = tmp_path / "records.csv"
    row.to_csv(path, index=False)
    with pytest.raises(IngestError) as caught:
        ingest(store, [path], MODEL)
    assert f"{path}:2:{list(frame.columns).index('agency') + 1}: " in str(caught.value)
    assert _row(store, records, "record_id", record_id)["agency"] == VICTIM
