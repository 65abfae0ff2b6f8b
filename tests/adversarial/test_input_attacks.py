"""Attacks on input parsing across the JSON API (issue 15, finding 7): no request gets a 500.

- **Nesting**: a body nested 100,000 deep (arrays or objects) to every endpoint that reads a JSON
  body answers 400 or 422 with the JSON error shape. Python's own `json` raises RecursionError on
  such input; whatever parses the body must bound the depth.
- **Ids over 64 bits**: an integer path id beyond what the store can hold (PostgreSQL's INTEGER
  ends at 2**31 - 1, SQLite's at 2**63 - 1) is an id that does not exist: 404, not 500.
- **Times with no UTC equivalent**: `0001-01-01T00:00:00+05:00` is a valid RFC 3339 time but lies
  before year 1 in UTC, where item and consent times are stored and compared: 422 naming the field.
"""

from __future__ import annotations

import pytest

from sqlalchemy import select

from api.app import create_app
from api.keys import create_key
from api.openapi import operations
from api.store import consents
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

DEPTH = 100_000
NESTED = {"arrays": "[" * DEPTH + "]" * DEPTH, "objects": '{"a":' * DEPTH + "1" + "}" * DEPTH}
ROLE = {"/v1/briefings": "officer", "/v1/match": "officer", "/v1/feedback": "officer",
        "/v1/review/pairs/{pair_id}/decision": "steward", "/v1/persons/{person_id}/split": "steward",
        "/v1/persons/merge": "steward"}


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    db, store = loaded_county(tmp_path_factory.mktemp("adversarial-input"), 120, 5)
    keys = {"officer": create_key(store, "pd-in", Role.officer, "METRO_PD", list(Purpose)),
            "steward": create_key(store, "st-in", Role.steward, "COUNTY", []),
            "admin": create_key(store, "ad-in", Role.admin, "COUNTY", [])}
    return create_app(db).test_client(), keys, store


JSON_BODIES = [op for op in operations() if op.body is not None and op.media_type == "application/json"]


@pytest.mark.parametrize("shape", sorted(NESTED))
@pytest.mark.parametrize("operation", JSON_BODIES, ids=lambda op: f"{op.method} {op.path}")
def test_deeply_nested_json_to_every_json_endpoint_answers_400_or_422(county, operation, shape):
    client, keys, _ = county
    path = operation.path.replace("{pair_id}", "1").replace("{person_id}", "P0").replace("{item_id}", "CI-0") \
        .replace("{consent_id}", "CNS-0")
    key = keys[ROLE.get(operation.path, "admin")]
    response = client.open(path, method=operation.method.upper(), data=NESTED[shape],
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code in (400, 422), (path, response.status_code, response.get_data(as_text=True)[:200])
    assert response.is_json and "Traceback" not in response.get_data(as_text=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stores(request, tmp_path_factory):
    """A steward's client over each kind of store (PostgreSQL's INTEGER overflows first)."""
    directory = tmp_path_factory.mktemp(f"adversarial-ids-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    db, store = loaded_county(directory, 60, 5, url)
    steward = create_key(store, "st-ids", Role.steward, "COUNTY", [])
    app = create_app(db)
    yield app.test_client(), {"Authorization": f"Bearer {steward}"}
    app.extensions["briefing"].store.engine.dispose()
    store.engine.dispose()


def test_ids_over_64_bits_are_ids_that_do_not_exist(stores):
    client, steward = stores
    for number in (2 ** 31 - 1, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30):
        assert client.get(f"/v1/review/pairs/{number}", headers=steward).status_code == 404, number
        assert client.post(f"/v1/review/pairs/{number}/decision", json={"decision": "match"},
                           headers=steward).status_code == 404, number
        assert client.post(f"/v1/review/decisions/{number}/undo", headers=steward).status_code == 404, number
        assert client.post(f"/v1/persons/events/{number}/undo", headers=steward).status_code == 404, number


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_with_no_utc_equivalent_is_refused_with_its_field(county, when):
    client, keys, store = county
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    with store.engine.connect() as connection:
        consent_id, record_id = connection.execute(select(consents.c.consent_id, consents.c.record_id).limit(1)).one()
    consent = {"consent_id": "CNS-RANGE-1", "record_id": record_id, "recipients": "ems", "purposes": "EMERGENCY",
               "categories": "PHI", "valid_from": "2024-01-01T00:00:00+00:00", "valid_until": when}
    answer = client.post("/v1/consents", json=consent, headers=admin)
    assert answer.status_code == 422 and "valid_until" in answer.get_json()["fields"]
    item = {"item_id": "CI-RANGE-1", "record_id": record_id, "category": "medical", "code": "MED_X",
            "legal_category": "PHI", "expires_at": when}
    answer = client.post("/v1/context-items", json=item, headers=admin)
    assert answer.status_code == 422 and "expires_at" in answer.get_json()["fields"]
    if when.startswith("0001"):                              # a revocation cannot be in the future anyway
        answer = client.post(f"/v1/consents/{consent_id}/revoke", json={"revoked_at": when}, headers=admin)
        assert answer.status_code == 422 and "revoked_at" in answer.get_json()["fields"]
