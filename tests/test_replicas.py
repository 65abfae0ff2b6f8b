"""Two `briefing serve` replicas on different ports over one PostgreSQL store.

Each replica applies the store's change feed before every request it authenticates
(`api.service.changes`), so what is written through one replica is resolvable through the other on its
next request — well inside the 2 seconds the deployment note promises. The same holds for a key
revoked through the CLI and for a record deleted through the other replica.
"""

import time

import pytest

from api.service.keys import create_key, revoke_key
from api.service.reference import record_reference, reference_secret
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county
from tests.served import call, serving

RECORD = {"record_id": "RMS-REPLICA-1", "agency": "METRO_PD", "given_name": "Ottoline", "family_name": "Vandersloot",
          "dob": "1958-09-17", "sex": "F", "phone": "614-555-0143", "postcode": "43215"}
SUBJECT = {"given_name": "Ottoline", "family_name": "Vandersloot", "dob": "1958-09-17"}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres_url):
    county = tmp_path_factory.mktemp("county")
    db, store = loaded_county(county, 300, 29, postgres_url)
    keys = {"feed": create_key(store, "feed-pd", Role.feed, "METRO_PD", []),
            "ems": create_key(store, "ems-1", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY])}
    with serving(db, county / "a.log", workers=1) as first, serving(db, county / "b.log", workers=1) as second:
        yield first, second, keys, store
    store.engine.dispose()


def _resolved_record(base: str, key: str) -> str | None:
    """The opaque reference (api.service.reference) of the best candidate a responder is told."""
    status, answer = call(base, "POST", "/v1/match", key, {"subject": SUBJECT, "purpose": "EMERGENCY"})
    assert status == 200, answer
    candidates = answer["resolution"]["candidates"]
    return candidates[0]["record_id"] if candidates else None


def test_a_record_written_through_one_replica_resolves_through_the_other_within_two_seconds(replicas):
    first, second, keys, store = replicas
    reference = record_reference(RECORD["record_id"], reference_secret(store))
    assert _resolved_record(second, keys["ems"]) != reference
    status, written = call(first, "POST", "/v1/records", keys["feed"], RECORD)
    assert status == 201, written
    written_at = time.monotonic()
    while _resolved_record(second, keys["ems"]) != reference:
        assert time.monotonic() - written_at < 2.0, "the other replica did not see the record within 2 s"
        time.sleep(0.05)


def test_a_record_deleted_through_one_replica_is_gone_from_the_other(replicas):
    first, second, keys, store = replicas
    call(first, "POST", "/v1/records", keys["feed"], {**RECORD, "record_id": "RMS-REPLICA-2", "given_name": "Ottilie"})
    status, _ = call(second, "DELETE", "/v1/records/RMS-REPLICA-2", keys["feed"])
    assert status == 204
    status, answer = call(first, "POST", "/v1/match", keys["ems"],
                          {"subject": {**SUBJECT, "given_name": "Ottilie"}, "purpose": "EMERGENCY"})
    gone = record_reference("RMS-REPLICA-2", reference_secret(store))
    assert status == 200 and gone not in {c["record_id"] for c in answer["resolution"]["candidates"]}


def test_a_key_revoked_in_the_store_is_refused_by_both_replicas_on_their_next_request(replicas):
    first, second, _, store = replicas
    key = create_key(store, "ems-soon-gone", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY])
    for base in (first, second):                    # both replicas now know (and cache) the key
        assert call(base, "POST", "/v1/match", key, {"subject": SUBJECT, "purpose": "EMERGENCY"})[0] == 200
    revoke_key(store, "ems-soon-gone")
    for base in (first, second):
        assert call(base, "POST", "/v1/match", key, {"subject": SUBJECT, "purpose": "EMERGENCY"})[0] == 401
