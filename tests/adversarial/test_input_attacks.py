"""Attacks on input parsing across the JSON API (issue 15, finding 7): no request gets a 500.

- **Nesting**: a body nested 100,000 deep (arrays or objects) to every endpoint that reads a JSON
  body answers 400 or 422 with the JSON error shape. Python's own `json` raises RecursionError on
  such input; whatever parses the body must bound the depth.
- **Ids over 64 bits**: an integer path id beyond what the store can hold (PostgreSQL's INTEGER
  ends at 2**31 - 1, SQLite's at 2**63 - 1) is an id that does not exist: 404, not 500.
- **Times with no UTC equivalent**: `0001-01-01T00:00:00+05:00` is a valid RFC 3339 time but lies
  before year 1 in UTC, where item and consent times are stored and compared: 422 naming the field
  (bodies, and the audit search's `since` / `until`).
- **NUL characters**: PostgreSQL text cannot hold U+0000 (psycopg raises DataError). A NUL in any
  JSON string or key is a 422 naming the field path, in a query parameter a 422 naming it, in a
  URL path a 404 (a NUL id names nothing); FHIR `$match` answers an OperationOutcome 422.
- **Ids over 200 characters**: id columns are varchar(200) on PostgreSQL; a longer id is a 422
  naming the field, before anything is written.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from api.service.keys import create_key
from api.service.store import consents, context_items
from api.web.app import create_app
from api.web.openapi import operations
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

DEPTH = 100_000
NESTED = {"arrays": "[" * DEPTH + "]" * DEPTH, "objects": '{"a":' * DEPTH + "1" + "}" * DEPTH}
ROLE = {"/v1/briefings": "officer", "/v1/match": "officer", "/v1/feedback": "officer",
        "/v1/review/pairs/{pair_id}/decision": "steward", "/v1/persons/{person_id}/split": "steward",
        "/v1/persons/merge": "steward", "/v1/referrals": "officer", "/v1/referrals/{referral_id}/events": "officer"}


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
        .replace("{consent_id}", "CNS-0").replace("{referral_id}", "1")
    key = keys[ROLE.get(operation.path, "admin")]
    response = client.open(path, method=operation.method.upper(), data=NESTED[shape],
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code in (400, 422), (path, response.status_code, response.get_data(as_text=True)[:200])
    assert response.is_json and "Traceback" not in response.get_data(as_text=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stores(request, tmp_path_factory):
    """A client over each kind of store (PostgreSQL's INTEGER overflows first) and each role's auth header."""
    directory = tmp_path_factory.mktemp(f"adversarial-ids-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    db, store = loaded_county(directory, 60, 5, url)
    headers = {role: {"Authorization": f"Bearer {create_key(store, f'{role}-ids', Role(role), agency, purposes)}"}
               for role, agency, purposes in (("steward", "COUNTY", []), ("admin", "COUNTY", []),
                                               ("auditor", "COUNTY", []),
                                               ("officer", "METRO_PD", list(Purpose)))}
    app = create_app(db)
    yield app.test_client(), headers, store
    app.extensions["briefing"].store.engine.dispose()
    store.engine.dispose()


def test_ids_over_64_bits_are_ids_that_do_not_exist(stores):
    client, headers, _ = stores
    steward = headers["steward"]
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


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
def test_an_audit_search_time_with_no_utc_equivalent_is_refused_with_its_field(stores, when):
    client, headers, _ = stores
    for name in ("since", "until"):
        answer = client.get("/v1/audit/events", query_string={name: when}, headers=headers["auditor"])
        assert answer.status_code == 422, (name, answer.status_code, answer.get_data(as_text=True)[:300])
        assert name in answer.get_json()["fields"]


def _ids(store) -> tuple[str, str, str]:
    """A record id, an item id and a consent id of the loaded county."""
    with store.engine.connect() as connection:
        consent_id, record_id = connection.execute(select(consents.c.consent_id, consents.c.record_id).limit(1)).one()
        item_id = connection.execute(select(context_items.c.item_id).limit(1)).scalar_one()
    return record_id, item_id, consent_id


def _briefing(given_name: str = "JOHN", incident_id: str = "INC-NUL-1") -> dict:
    return {"incident": {"id": incident_id, "call_type": "welfare_check", "received_at": NOW},
            "subject": {"given_name": given_name, "family_name": "SMITH", "approx_age": 40}, "purpose": "EMERGENCY"}


NOW = datetime.now(timezone.utc).isoformat(timespec="seconds")
NUL = "\x00"


def _nul_bodies(record_id: str) -> list[tuple[str, str, str, dict, str]]:
    """(role, method, path, body, the field path the 422 must name), a NUL somewhere in each body."""
    item = {"item_id": "CI-NUL-1", "record_id": record_id, "category": "medical", "code": "MED_X",
            "legal_category": "PHI", "text": "takes insulin"}
    consent = {"consent_id": "CNS-NUL-1", "record_id": record_id, "recipients": "ems", "purposes": "EMERGENCY",
               "categories": "PHI", "valid_from": "2024-01-01T00:00:00+00:00"}
    return [
        ("admin", "POST", "/v1/records", {"record_id": f"RMS-{NUL}", "agency": "METRO_PD"}, "record_id"),
        ("admin", "POST", "/v1/records", {"record_id": "RMS-NUL-1", "given_name": f"JO{NUL}HN"}, "given_name"),
        ("admin", "POST", "/v1/context-items", {**item, "text": f"takes {NUL}insulin"}, "text"),
        ("admin", "POST", "/v1/context-items", {**item, "item_id": f"CI-{NUL}"}, "item_id"),
        ("admin", "POST", "/v1/consents", {**consent, "consent_id": f"CNS-{NUL}"}, "consent_id"),
        ("admin", "POST", "/v1/consents/CNS-NUL-1/revoke", {"reason": f"asked{NUL}"}, "reason"),
        ("officer", "POST", "/v1/feedback", {"incident_id": f"INC-{NUL}", "item_id": "CI-1", "helped": True},
         "incident_id"),
        ("officer", "POST", "/v1/briefings", _briefing(given_name=f"JO{NUL}HN"), "subject.given_name"),
        ("officer", "POST", "/v1/briefings", _briefing(incident_id=f"INC-{NUL}"), "incident.id"),
        ("officer", "POST", "/v1/match", {"subject": {"given_name": "JOHN", "family_name": "SMITH", "aliases": f"A{NUL}"},
                                          "purpose": "LAW"}, "subject.aliases"),
        ("steward", "POST", "/v1/persons/merge", {"person_ids": ["P1", f"P{NUL}"]}, "person_ids.1"),
        ("admin", "POST", "/v1/records", {"record_id": "RMS-NUL-2", f"given{NUL}name": "JOHN"}, f"given{NUL}name"),
    ]


def test_a_nul_character_in_any_json_string_or_key_is_a_422_naming_its_field(stores):
    client, headers, store = stores
    record_id, _, _ = _ids(store)
    for role, method, path, body, field in _nul_bodies(record_id):
        answer = client.open(path, method=method, data=json.dumps(body),       # the NUL travels as the escape \\u0000
                             headers={**headers[role], "Content-Type": "application/json"})
        assert answer.status_code == 422, (path, field, answer.status_code, answer.get_data(as_text=True)[:300])
        assert answer.get_json()["fields"].get(field.replace(NUL, "\\u0000")) == "must not contain a NUL character", \
            (path, field, answer.get_json())


def test_a_nul_character_in_a_url_path_names_nothing(stores):
    client, headers, store = stores
    record_id, item_id, consent_id = _ids(store)
    for role, method, path in (("admin", "POST", "/v1/context-items/CI-%00/retract"),
                               ("admin", "POST", f"/v1/context-items/{item_id}%00/retract"),
                               ("admin", "POST", f"/v1/consents/{consent_id}%00/revoke"),
                               ("admin", "DELETE", "/v1/records/RMS-%00"),
                               ("admin", "DELETE", f"/v1/records/{record_id}%00"),
                               ("admin", "POST", "/v1/persons/P%00/erase-registry"),
                               ("steward", "GET", "/v1/persons/P%00"),
                               ("steward", "POST", "/v1/persons/P%00/split")):
        answer = client.open(path, method=method, json={}, headers=headers[role])
        assert answer.status_code == 404, (method, path, answer.status_code, answer.get_data(as_text=True)[:300])
        assert answer.is_json and answer.get_json()["error"] == "not_found"


def test_a_nul_character_in_a_query_parameter_is_a_422_naming_it(stores):
    client, headers, _ = stores
    for role, path, name in (("auditor", "/v1/audit/events", "person_id"), ("auditor", "/v1/audit/events", "principal"),
                             ("auditor", "/v1/audit/events", "incident_id"), ("steward", "/v1/review/queue", "agency")):
        answer = client.get(path, query_string={name: "P\x00"}, headers=headers[role])
        assert answer.status_code == 422, (path, name, answer.status_code, answer.get_data(as_text=True)[:300])
        assert name in answer.get_json()["fields"]


def test_a_nul_character_in_a_fhir_match_is_an_operation_outcome_422(stores):
    client, headers, _ = stores
    patient = {"resourceType": "Patient", "name": [{"family": "SMITH", "given": [f"JO{NUL}HN"]}], "birthDate": "1980"}
    raw = json.dumps({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]})
    answer = client.post("/fhir/Patient/$match", data=raw,
                         headers={**headers["officer"], "Content-Type": "application/fhir+json"})
    assert answer.status_code == 422 and answer.mimetype == "application/fhir+json", answer.get_data(as_text=True)[:300]
    [issue] = answer.get_json()["issue"]
    assert issue["expression"] == ["Parameters.parameter[0].resource.name[0].given[0]"]


def test_an_id_over_200_characters_is_a_422_naming_its_field(stores):
    client, headers, _ = stores
    long = "X" * 300
    answer = client.post("/v1/briefings", json=_briefing(incident_id=long), headers=headers["officer"])
    assert answer.status_code == 422 and "incident.id" in answer.get_json()["fields"], answer.get_data(as_text=True)[:300]
    for field in ("agency", "source_system"):
        answer = client.post("/v1/records", json={"record_id": "RMS-LONG-1", field: long}, headers=headers["admin"])
        assert answer.status_code == 422 and field in answer.get_json()["fields"], answer.get_data(as_text=True)[:300]
