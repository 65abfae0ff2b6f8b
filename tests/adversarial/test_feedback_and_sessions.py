"""Attacks on feedback, the auditor's person search and the steward pages' sessions (issue 15, finding 7).

- **Feedback poisoning**: feedback trains the next ranker, so a responder must not be able to post it
  about items no briefing showed them, nor post it twice. `POST /v1/feedback` is accepted only for a
  `shown_items` row of the caller (principal × incident × item), once.
- **Auditor search**: `GET /v1/audit/events?person_id=` must find every event about the person, steward
  reads (`person_read`) and registry erasures included, whatever field of the payload names them.
- **Session replay**: a steward-page cookie copied before sign-out must not work after it, on any worker.

Every test runs on SQLite and on PostgreSQL (skipped without a server, except under CI).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from api.review import decisions as review
from api.service.keys import create_key
from api.service.person_data import person_items
from api.service.store import audit_events, clusters, feedback, shown_items
from api.web.app import create_app
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

NOT_SHOWN = "no briefing showed this item to you at this incident"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
COOKIE = "briefing_review"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def county(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"adversarial-feedback-{request.param}")
    location = str(directory / "briefing.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db, store = loaded_county(directory, 300, 7, location)
    keys = {
        "officer": create_key(store, "officer-a", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "officer2": create_key(store, "officer-b", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
        "ems": create_key(store, "ems-c", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY]),
        "co": create_key(store, "co-d", Role.co_responder, "COUNTY_BH", [Purpose.TREATMENT, Purpose.EMERGENCY]),
        "steward": create_key(store, "steward-e", Role.steward, "COUNTY", []),
        "auditor": create_key(store, "auditor-f", Role.auditor, "COUNTY", []),
        "admin": create_key(store, "admin-g", Role.admin, "COUNTY", []),
    }
    incidents = pd.read_csv(directory / "incidents.csv", dtype=str, keep_default_na=False)
    clock = {"now": datetime.fromisoformat(incidents["received_at"].max()).astimezone(timezone.utc)}
    app = create_app(db, clock=lambda: clock["now"])
    app.config["TESTING"] = False           # errors answered as in production
    return app, store, keys, incidents, db, clock


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _shown(store, principal: str, incident_id: str, item_id: str) -> None:
    """What POST /v1/briefings records for each item it returns (written directly here)."""
    with store.begin() as connection:
        connection.execute(insert(shown_items).values(principal=principal, incident_id=incident_id, item_id=item_id,
                                                      request_id=uuid.uuid4().hex,
                                                      shown_at=datetime.now(timezone.utc).isoformat()))


def _some_item(store) -> str:
    from api.service.store import context_items

    with store.engine.connect() as connection:
        return connection.execute(select(context_items.c.item_id).order_by(context_items.c.item_id).limit(1)).scalar()


def _feedback_rows(store, incident_id: str) -> list:
    with store.engine.connect() as connection:
        return connection.execute(select(feedback).where(feedback.c.incident_id == incident_id)).mappings().all()


def _feedback_events(store, incident_id: str) -> int:
    with store.engine.connect() as connection:
        return sum(f'"incident_id":"{incident_id}"' in p for p in connection.execute(
            select(audit_events.c.payload).where(audit_events.c.action == "feedback")).scalars())


def _post_feedback(client, key: str, incident_id: str, item_id: str, helped: bool = True):
    return client.post("/v1/feedback", json={"incident_id": incident_id, "item_id": item_id, "helped": helped},
                       headers=_auth(key))


# ---- feedback poisoning ---------------------------------------------------------------------------------------------

def test_feedback_poisoning_on_an_item_no_briefing_showed_is_refused_and_stores_nothing(county):
    app, store, keys, *_ = county
    client, incident, item = app.test_client(), f"INC-{uuid.uuid4().hex[:8]}", _some_item(store)
    answer = _post_feedback(client, keys["officer"], incident, item)
    assert answer.status_code == 403 and answer.get_json()["message"] == NOT_SHOWN
    assert _feedback_rows(store, incident) == [] and _feedback_events(store, incident) == 0


def test_feedback_poisoning_answer_never_hints_whether_the_item_exists(county):
    app, store, keys, *_ = county
    client, incident = app.test_client(), f"INC-{uuid.uuid4().hex[:8]}"
    real = _post_feedback(client, keys["officer"], incident, _some_item(store))
    made_up = _post_feedback(client, keys["officer"], incident, "CI-does-not-exist")
    assert real.status_code == made_up.status_code == 403
    assert real.get_json() == made_up.get_json()


def test_feedback_poisoning_with_an_item_shown_to_someone_else_or_at_another_incident_is_refused(county):
    app, store, keys, *_ = county
    client, incident, item = app.test_client(), f"INC-{uuid.uuid4().hex[:8]}", _some_item(store)
    _shown(store, "officer-b", incident, item)
    assert _post_feedback(client, keys["officer"], incident, item).status_code == 403      # another principal's
    assert _post_feedback(client, keys["officer2"], "INC-elsewhere", item).status_code == 403   # another incident
    assert _post_feedback(client, keys["officer2"], incident, "CI-other").status_code == 403    # another item
    accepted = _post_feedback(client, keys["officer2"], incident, item)
    assert accepted.status_code == 201
    rows = _feedback_rows(store, incident)
    assert [(r["principal"], r["item_id"], r["helped"]) for r in rows] == [("officer-b", item, 1)]
    assert rows[0]["id"] == accepted.get_json()["id"]


def test_feedback_poisoning_by_repetition_is_409_and_counts_once(county):
    app, store, keys, *_ = county
    client, incident, item = app.test_client(), f"INC-{uuid.uuid4().hex[:8]}", _some_item(store)
    _shown(store, "officer-a", incident, item)
    first = _post_feedback(client, keys["officer"], incident, item, True)
    assert first.status_code == 201
    for helped in (True, False, True):
        again = _post_feedback(client, keys["officer"], incident, item, helped)
        assert again.status_code == 409 and "already" in again.get_json()["message"]
    assert len(_feedback_rows(store, incident)) == 1 and _feedback_events(store, incident) == 1
    with store.engine.connect() as connection:
        linked = connection.execute(select(shown_items.c.feedback_id).where(shown_items.c.incident_id == incident)).scalar()
    assert linked == first.get_json()["id"]


def test_feedback_poisoning_by_a_race_of_concurrent_posts_is_accepted_once(county):
    """Two workers over one store and many threads: the UPDATE … WHERE feedback_id IS NULL decides, once."""
    app, store, keys, _, db, clock = county
    other_worker = create_app(db, clock=lambda: clock["now"])
    incident, item = f"INC-{uuid.uuid4().hex[:8]}", _some_item(store)
    _shown(store, "officer-a", incident, item)
    barrier = threading.Barrier(8)
    codes: list[int] = []

    def post(k: int) -> None:
        client = (app if k % 2 else other_worker).test_client()
        barrier.wait()
        codes.append(_post_feedback(client, keys["officer"], incident, item).status_code)

    threads = [threading.Thread(target=post, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [201] + [409] * 7
    assert len(_feedback_rows(store, incident)) == 1 and _feedback_events(store, incident) == 1


def test_feedback_row_its_shown_link_and_its_audit_event_commit_together(county, monkeypatch):
    import api.service.feedback

    app, store, keys, *_ = county
    client, incident, item = app.test_client(), f"INC-{uuid.uuid4().hex[:8]}", _some_item(store)
    _shown(store, "officer-a", incident, item)

    def failing(*args, **kwargs):
        raise RuntimeError("audit store unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(api.service.feedback, "append", failing)
        assert _post_feedback(client, keys["officer"], incident, item).status_code == 500
    assert _feedback_rows(store, incident) == []
    with store.engine.connect() as connection:
        assert connection.execute(select(shown_items.c.feedback_id).where(shown_items.c.incident_id == incident)).scalar() is None
    assert _post_feedback(client, keys["officer"], incident, item).status_code == 201     # still its one chance


principals = {"officer-a": "officer", "officer-b": "officer2", "ems-c": "ems"}
triples = st.tuples(st.sampled_from(sorted(principals)), st.sampled_from(["I1", "I2"]), st.sampled_from(["A", "B", "C"]))


@given(shown=st.sets(triples, max_size=6), attempts=st.lists(triples, min_size=1, max_size=10))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_feedback_is_accepted_exactly_once_per_shown_item_of_the_caller(county, shown, attempts):
    """Model: 201 the first time for a (principal, incident, item) shown to that principal, 409 after, 403 if never shown."""
    app, store, keys, *_ = county
    run = uuid.uuid4().hex[:8]
    for principal, incident, item in shown:
        _shown(store, principal, f"{run}-{incident}", f"{run}-{item}")
    client, given_once = app.test_client(), set()
    for attempt in attempts:
        principal, incident, item = attempt
        code = _post_feedback(client, keys[principals[principal]], f"{run}-{incident}", f"{run}-{item}").status_code
        expected = 403 if attempt not in shown else 409 if attempt in given_once else 201
        assert code == expected, (attempt, shown)
        if code == 201:
            given_once.add(attempt)
    with store.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(feedback)
                                    .where(feedback.c.incident_id.like(f"{run}-%"))).scalar()
    assert stored == len(given_once)


def _briefed(app, keys, incidents, clock, who="co", purpose="TREATMENT"):
    """A real briefing that returned items: (its answer, the person's item ids it did not return)."""
    client = app.test_client()
    for row, subject in zip(incidents.to_dict("records"), incident_queries(incidents)):
        received = datetime.fromisoformat(row["received_at"])
        clock["now"] = received.astimezone(timezone.utc) + timedelta(minutes=5)
        body = {"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"]},
                "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": purpose}
        answer = client.post("/v1/briefings", json=body, headers=_auth(keys[who])).get_json()
        if answer.get("items"):
            store = app.extensions["briefing"].store
            with store.engine.connect() as connection:     # the answer's person is a reference: the audit has the id
                audited = json.loads(connection.execute(select(audit_events.c.payload).where(
                    audit_events.c.request_id == answer["request_id"])).scalar_one())
                every = {i.item_id for i in person_items(connection, audited["candidates"][0]["person_id"])}
            returned = {i["item_id"] for i in answer["items"]}
            if every - returned:
                return answer, sorted(every - returned)
    raise AssertionError("no briefing in the county returned items and withheld others")


def test_feedback_through_a_real_briefing_only_on_the_items_it_returned(county):
    app, store, keys, incidents, _, clock = county
    answer, not_returned = _briefed(app, keys, incidents, clock)
    client, incident = app.test_client(), answer["incident_id"]
    shown = answer["items"][0]["item_id"]
    assert _post_feedback(client, keys["officer"], incident, shown).status_code == 403        # shown to co-d, not to them
    withheld = _post_feedback(client, keys["co"], incident, not_returned[0])
    assert withheld.status_code == 403 and withheld.get_json()["message"] == NOT_SHOWN
    assert _post_feedback(client, keys["co"], incident, shown).status_code == 201
    assert _post_feedback(client, keys["co"], incident, shown).status_code == 409


# ---- the auditor's person search -----------------------------------------------------------------------------------

def _person_with_records(store, at_least: int = 1) -> tuple[str, list[str]]:
    with store.engine.connect() as connection:
        rows = connection.execute(select(clusters.c.person_id, func.count()).group_by(clusters.c.person_id)
                                  .having(func.count() >= at_least).order_by(clusters.c.person_id).limit(1)).first()
        members = connection.execute(select(clusters.c.record_id).where(clusters.c.person_id == rows[0])
                                     .order_by(clusters.c.record_id)).scalars().all()
    return rows[0], members


def _search(client, keys, person_id: str, **extra) -> list[dict]:
    answer = client.get("/v1/audit/events", query_string={"person_id": person_id, "limit": 1000, **extra},
                        headers=_auth(keys["auditor"]))
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["events"]


def test_auditor_person_search_finds_a_steward_read_of_the_person(county):
    app, store, keys, *_ = county
    client = app.test_client()
    person, _ = _person_with_records(store)
    assert client.get(f"/v1/persons/{person}", headers=_auth(keys["steward"])).status_code == 200
    found = _search(client, keys, person)
    reads = [e for e in found if e["action"] == "person_read"]
    assert reads and reads[0]["principal"] == "steward-e" and reads[0]["person_id"] == person


def test_auditor_person_search_finds_splits_merges_and_registry_erasures_naming_the_person(county):
    app, store, keys, *_ = county
    client, service = app.test_client(), app.extensions["briefing"]
    person, members = _person_with_records(store, at_least=2)
    split = review.split_record(service, person, members[-1], "steward-e", "audit search test")
    with store.engine.connect() as connection:
        a, b = connection.execute(select(clusters.c.person_id).distinct().where(clusters.c.person_id.notin_(
            [person, split["to_person_id"]])).order_by(clusters.c.person_id).limit(2)).scalars().all()
    merged = review.merge_persons(service, a, b, "steward-e", "audit search test")
    erased = client.post(f"/v1/persons/{person}/erase-registry", json={"requested_by": "the person", "reference": "R-1"},
                         headers=_auth(keys["admin"]))
    assert erased.status_code == 200, erased.get_json()
    assert {"person_split", "registry_erasure"} <= {e["action"] for e in _search(client, keys, person)}
    assert "person_split" in {e["action"] for e in _search(client, keys, split["to_person_id"])}
    for side in (merged["kept_person_id"], merged["merged_person_id"]):
        assert "person_merge" in {e["action"] for e in _search(client, keys, side)}


def test_auditor_person_search_matches_the_whole_id_never_a_part_or_a_pattern(county):
    app, store, keys, *_ = county
    client = app.test_client()
    person, _ = _person_with_records(store)
    client.get(f"/v1/persons/{person}", headers=_auth(keys["steward"]))
    assert _search(client, keys, person) and all(_mentions(e, person) for e in _search(client, keys, person))
    for near in (person[:-1], person[1:], "%", "_", f"{person[:-1]}_", f"{person[:3]}%"):
        assert all(_mentions(e, near) for e in _search(client, keys, near)), near


def _mentions(event, person_id: str) -> bool:
    """Whether any `person_id` / `*_person_id` field anywhere in the event names `person_id`."""
    if isinstance(event, dict):
        return any((k == "person_id" or k.endswith("_person_id")) and (v == person_id or (isinstance(v, list) and person_id in v))
                   or _mentions(v, person_id) for k, v in event.items())
    if isinstance(event, list):
        return any(_mentions(v, person_id) for v in event)
    return False


# ---- session replay after sign-out --------------------------------------------------------------------------------

def _sign_in(client, key: str):
    page = client.get("/review/login", follow_redirects=True)      # signed in already: the queue page has a token too
    answer = client.post("/review/login", data={"csrf_token": TOKEN.search(page.get_data(as_text=True)).group(1), "key": key})
    assert answer.status_code == 302, answer.status_code
    return answer


def _cookie(client) -> str:
    return client.get_cookie(COOKIE, path="/review").value


def _replay(app, value: str):
    thief = app.test_client()
    thief.set_cookie(COOKIE, value, path="/review")
    return thief.get("/review")


def _sign_out(client):
    page = client.get("/review")
    assert page.status_code == 200
    answer = client.post("/review/logout", data={"csrf_token": TOKEN.search(page.get_data(as_text=True)).group(1)})
    assert answer.status_code == 302


def test_session_cookie_replayed_after_sign_out_is_sent_to_sign_in(county):
    app, _, keys, *_ = county
    client = app.test_client()
    _sign_in(client, keys["steward"])
    copied = _cookie(client)
    assert _replay(app, copied).status_code == 200              # the copy works while the session lives
    _sign_out(client)
    replayed = _replay(app, copied)
    assert replayed.status_code == 302 and "/review/login" in replayed.headers["Location"]
    assert b"queue-count" not in replayed.data


def test_session_cookie_replayed_to_another_worker_after_sign_out_is_refused(county):
    app, _, keys, _, db, clock = county
    other_worker = create_app(db, clock=lambda: clock["now"])
    client = app.test_client()
    _sign_in(client, keys["steward"])
    copied = _cookie(client)
    assert _replay(other_worker, copied).status_code == 200     # one session, every worker
    _sign_out(client)
    replayed = _replay(other_worker, copied)
    assert replayed.status_code == 302 and "/review/login" in replayed.headers["Location"]


def test_signing_in_again_ends_the_browsers_previous_session_but_not_other_browsers(county):
    app, _, keys, *_ = county
    browser, elsewhere = app.test_client(), app.test_client()
    _sign_in(browser, keys["steward"])
    _sign_in(elsewhere, keys["steward"])
    before = _cookie(browser)
    _sign_in(browser, keys["steward"])                          # a new session: the old cookie is dead (no fixation)
    assert _replay(app, before).status_code == 302
    assert browser.get("/review").status_code == 200 and elsewhere.get("/review").status_code == 200
    _sign_out(browser)
    assert elsewhere.get("/review").status_code == 200          # signing out ends only that session
