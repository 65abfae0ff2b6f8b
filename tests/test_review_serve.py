"""Acceptance: a steward's "not a match", sent through one gunicorn worker, holds on the very next
`/v1/briefings` calls whichever worker serves them (two forked workers; SQLite and PostgreSQL).

The pair is one the bulk link put inside one person (a review-band pair linked through other
records). Before the decision a briefing about the right record finds it under that person; right
after it, no answer from either worker does (every worker applies the change feed before it
answers), and undoing the decision puts it back everywhere.
"""

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from api.service.audit import verify
from api.service.keys import create_key
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county, shown_person, shown_record
from tests.served import serving
from tests.test_serve import _call

CALLS = 12


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    county = tmp_path_factory.mktemp(f"review-{request.param}")
    location = str(county / "briefing.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db, store = loaded_county(county, 600, 11, location)
    keys = {"ems": create_key(store, "ems-1", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY]),
            "steward": create_key(store, "st-1", Role.steward, "COUNTY", [])}
    frame = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    with serving(db, county / "gunicorn.log", workers=2) as base:
        yield base, store, keys, frame
    store.engine.dispose()


def _briefings(base: str, key: str, subject: dict) -> list[tuple[int, dict]]:
    body = {"incident": {"id": "INC-REVIEW", "call_type": "welfare_check", "received_at": "2026-01-05T10:00:00+00:00"},
            "subject": subject, "purpose": "EMERGENCY"}
    # Several clients at once, so both workers serve (a sync worker takes one request at a time).
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: _call(base, "/v1/briefings", key, body), range(CALLS)))


def _found(answers: list[tuple[int, dict]]) -> list[set]:
    for status, answer in answers:
        assert status == 200, answer
    return [{(c["person_id"], c["record_id"]) for c in answer["resolution"]["candidates"]} for _, answer in answers]


def test_a_not_a_match_holds_on_the_next_briefings_whichever_worker_serves_them(served):
    base, store, keys, frame = served
    status, queue = _call(base, "/v1/review/queue?limit=200", keys["steward"])
    assert status == 200, queue
    full = frame[(frame.given_name != "") & (frame.family_name != "") & (frame.dob != "")].set_index("record_id")
    pair = next(p for p in queue["pairs"] if p["person_id_l"] == p["person_id_r"] and p["record_id_r"] in full.index)
    person, record_id = pair["person_id_l"], pair["record_id_r"]
    shown = lambda person_id: (shown_person(store, person_id), shown_record(store, record_id))   # what the EMS key sees
    row = full.loc[record_id]
    subject = {"given_name": row["given_name"], "family_name": row["family_name"], "dob": row["dob"]}
    assert all(shown(person) in found for found in _found(_briefings(base, keys["ems"], subject)))

    status, decided = _call(base, f"/v1/review/pairs/{pair['pair_id']}/decision", keys["steward"],
                            {"decision": "not_a_match", "note": "different people"})
    assert status == 201, decided
    moved_to = decided["effect"]["split"]["to_person_id"]
    after = _found(_briefings(base, keys["ems"], subject))
    assert all(shown(person) not in found for found in after)
    assert all(shown(moved_to) in found for found in after)

    status, undone = _call(base, f"/v1/review/decisions/{decided['decision_id']}/undo", keys["steward"], {})
    assert status == 200, undone
    assert all(shown(person) in found for found in _found(_briefings(base, keys["ems"], subject)))
    assert verify(store).ok
