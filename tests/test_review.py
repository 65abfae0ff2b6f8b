"""Steward review: the queue, decisions that change answers at once, undo, the API, labels (api/review/, api/web/review_api.py)."""

import csv
import json

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.review import decisions as review
from api.review import queue as review_queue
from api.service import ingest as ingest_module
from api.service.audit import verify
from api.service.ingest import ingest
from api.service.keys import create_key
from api.service.stewardship import from_resolver, live_constraints, open_pairs, open_staged_pairs, pair_rows
from api.service.store import RECORD_FIELDS, audit_events, clusters, open_store, person_events, review_pairs
from api.web.app import create_app
from evaluation.linkage.labels import read_labels
from matching.model import MatcherModel
from scoring.item import Purpose, Role
from tests.cli_run import run_briefing
from tests.loaded_county import loaded_county, shown_person, shown_record

MODEL = MatcherModel.load("models/matcher.json")


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    directory = tmp_path_factory.mktemp("county")
    db, store = loaded_county(directory, 600, 11)
    keys = {"steward": create_key(store, "st-1", Role.steward, "COUNTY", []),
            "steward2": create_key(store, "st-2", Role.steward, "COUNTY", []),
            "co": create_key(store, "co-1", Role.co_responder, "COUNTY_BH", [Purpose.TREATMENT, Purpose.EMERGENCY]),
            "feed": create_key(store, "feed-pd", Role.feed, "METRO_PD", []),
            "admin": create_key(store, "admin-1", Role.admin, "COUNTY", [])}
    app = create_app(db)
    frame = pd.read_csv(directory / "records.csv", dtype=str, keep_default_na=False)
    return app.test_client(), keys, store, frame, app.extensions["briefing"], directory


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _queue(client, key, **params):
    response = client.get("/v1/review/queue", query_string=params, headers=_h(key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _open(client, key, limit=200):
    return _queue(client, key, limit=limit)["pairs"]


def _persons(store) -> dict:
    with store.engine.connect() as connection:
        return dict(connection.execute(select(clusters.c.record_id, clusters.c.person_id)).all())


def _last_seq(store) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.coalesce(func.max(audit_events.c.seq), 0))).scalar()


def _actions_after(store, seq: int, reads: bool = False) -> list[str]:
    """The audit actions after event `seq` (without the steward's reads, unless `reads`)."""
    with store.engine.connect() as connection:
        actions = connection.execute(select(audit_events.c.action).where(audit_events.c.seq > seq)
                                     .order_by(audit_events.c.seq)).scalars()
        return [a for a in actions if reads or not a.endswith("_read")]


def _identity(frame, record_id) -> dict:
    row = frame[frame.record_id == record_id].iloc[0]
    return {k: row[k] for k in ("given_name", "family_name", "dob", "birth_year", "sex") if row[k]}


def _match(client, key, subject) -> list[dict]:
    response = client.post("/v1/match", json={"subject": subject, "purpose": "EMERGENCY"}, headers=_h(key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["resolution"]["candidates"]


def _decide(client, key, pair_id, decision, note=None, status=201):
    response = client.post(f"/v1/review/pairs/{pair_id}/decision", json={"decision": decision, "note": note},
                           headers=_h(key))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _undo(client, key, decision_id, status=200):
    response = client.post(f"/v1/review/decisions/{decision_id}/undo", headers=_h(key))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _same_person_pair(pairs, frame, need=("given_name", "family_name", "dob")):
    """An open pair whose records are one person, the right one with `need` fields (so a subject finds it)."""
    full = set(frame[(frame[list(need)] != "").all(axis=1)].record_id)
    for pair in pairs:
        if pair["person_id_l"] == pair["person_id_r"] and pair["record_id_r"] in full:
            return pair
    pytest.fail("no open pair inside one person")


def test_the_bulk_ingest_and_new_records_fill_the_queue(county):
    client, keys, store, frame, service, _ = county
    body = _queue(client, keys["steward"], limit=200)
    thresholds = MODEL.thresholds
    assert body["total"] == len(body["pairs"]) > 10
    assert {p["reason"] for p in body["pairs"]} == {"batch_band", "held_apart"}
    band = [p for p in body["pairs"] if p["reason"] == "batch_band"]
    assert all(thresholds.review_low <= p["match_probability"] < thresholds.link and p["detail"] is None for p in band)
    assert all(p["status"] == "open" and p["reason_text"].startswith("batch link") for p in band)
    assert all(p["status"] == "open" and "held apart" in p["reason_text"] for p in body["pairs"] if p not in band)
    # A record that joins no person at `certain` opens a pair: (its best match, the new record).
    source = frame[(frame.given_name != "") & (frame.family_name != "") & (frame.dob != "")].iloc[3]
    record = {"record_id": "RMS-REVIEW-1", "agency": "METRO_PD", "given_name": source["given_name"][0],
              "family_name": source["family_name"], "dob": source["dob"]}
    written = client.post("/v1/records", json=record, headers=_h(keys["admin"])).get_json()   # admin: sees the linkage
    assert written["joined"] is False and written["review_pair"], written
    new = _queue(client, keys["steward"], reason="new_record")["pairs"]
    assert [(p["record_id_r"], p["reason_text"]) for p in new] == [("RMS-REVIEW-1", "new record joined no person")]
    assert new[0]["record_id_l"] == written["review_pair"]["record_id_r"]
    # Resending the record does not open a second pair.
    client.post("/v1/records", json=record, headers=_h(keys["feed"]))
    assert _queue(client, keys["steward"], reason="new_record")["total"] == 1


def _doubts(pairs) -> list[float]:
    """How far from a coin flip each pair is, as the queue orders them (a held-apart pair counts as one)."""
    return [0.0 if p["reason"] == "held_apart" else abs(p["match_probability"] - 0.5) for p in pairs]


def test_persons_the_bulk_link_held_apart_against_their_scores_wait_for_a_steward_with_the_rule(county):
    client, keys, store, frame, _, _ = county
    held = _queue(client, keys["steward"], reason="held_apart", limit=200)["pairs"]
    assert held, "the county's bulk link holds some persons apart"
    rules = {"few links": "few links between", "date of birth": "different dates of birth",
             "given name": "different given names", "suffix": "marked Jr, the other Sr",
             "generation": "born a generation apart"}
    for pair in held:
        assert pair["match_probability"] >= MODEL.thresholds.link
        assert pair["person_id_l"] != pair["person_id_r"]
        assert rules[pair["detail"]] in pair["reason_text"]
    pairs = {tuple(sorted((p["person_id_l"], p["person_id_r"]))) for p in held}
    assert len(pairs) == len(held), "one pair per two persons held apart"


def test_pairs_touching_a_recent_incident_come_first_then_the_closest_to_a_coin_flip(county):
    client, keys, store, frame, _, _ = county
    pairs = _open(client, keys["steward"])
    assert not any(p["recent_incident"] for p in pairs)
    assert _doubts(pairs) == sorted(_doubts(pairs))
    target = next(p for p in reversed(pairs) if p["person_id_l"] and _identity(frame, p["record_id_l"]).get("dob"))
    candidates = _match(client, keys["steward"], _identity(frame, target["record_id_l"]))
    assert target["person_id_l"] in {c["person_id"] for c in candidates}
    after = _open(client, keys["steward"])
    recent = [p for p in after if p["recent_incident"]]
    assert target["pair_id"] in {p["pair_id"] for p in recent}
    assert after[: len(recent)] == recent                                   # every recent pair before any other
    assert all(p["reason_text"].endswith(" · person in a recent incident") for p in recent)
    for group in (recent, after[len(recent):]):
        assert _doubts(group) == sorted(_doubts(group))


def test_queue_filters_and_paging(county):
    client, keys, *_ = county
    everything = _queue(client, keys["steward"], limit=200)
    agency = everything["pairs"][0]["agencies"][0]
    by_agency = _queue(client, keys["steward"], agency=agency, limit=200)
    assert 0 < by_agency["total"] <= everything["total"]
    assert all(agency in p["agencies"] for p in by_agency["pairs"])
    banded = _queue(client, keys["steward"], min_probability=0.6, max_probability=0.8, limit=200)
    assert all(0.6 <= p["match_probability"] <= 0.8 for p in banded["pairs"])
    assert banded["total"] == sum(0.6 <= p["match_probability"] <= 0.8 for p in everything["pairs"])
    by_reason = {reason: _queue(client, keys["steward"], reason=reason, limit=200)["total"]
                 for reason in ("batch_band", "held_apart", "new_record")}
    assert by_reason["new_record"] == 1 and sum(by_reason.values()) == everything["total"]
    page = _queue(client, keys["steward"], limit=5, offset=5)
    assert page["total"] == everything["total"] and page["pairs"] == everything["pairs"][5:10]
    entries, total = review_queue.queue(county[2], review_queue.QueueFilters(agency=agency), limit=3)
    assert total == by_agency["total"] and [e.pair_id for e in entries] == [p["pair_id"] for p in by_agency["pairs"][:3]]
    bad = client.get("/v1/review/queue?limit=500&reason=gut&min_probability=2&colour=red", headers=_h(keys["steward"]))
    assert bad.status_code == 422 and {"limit", "reason", "min_probability", "colour"} <= set(bad.get_json()["fields"])


def test_the_pair_page_shows_both_records_and_weights_that_sum_to_the_total(county):
    client, keys, store, *_ = county
    pair = _open(client, keys["steward"])[0]
    before = _last_seq(store)
    detail = client.get(f"/v1/review/pairs/{pair['pair_id']}", headers=_h(keys["steward"])).get_json()
    assert detail["entry"]["pair_id"] == pair["pair_id"] and detail["decisions"] == []
    assert detail["left"]["record_id"] == pair["record_id_l"] and detail["right"]["record_id"] == pair["record_id_r"]
    assert set(detail["left"]) == {"record_id", *RECORD_FIELDS}
    assert detail["explanation"][0]["field"] == "prior"
    assert sum(e["weight"] for e in detail["explanation"]) == pytest.approx(detail["match_weight"], abs=1e-4)
    assert detail["match_probability"] == pytest.approx(pair["match_probability"], abs=0.05)
    assert _actions_after(store, before, reads=True) == ["review_pair_read"]
    assert client.get("/v1/review/pairs/999999", headers=_h(keys["steward"])).status_code == 404


def test_match_merges_the_two_persons_and_undo_restores_them_exactly(county):
    client, keys, store, frame, service, _ = county
    pair = next(p for p in _open(client, keys["steward"]) if p["person_id_l"] != p["person_id_r"])
    snapshot, before = _persons(store), _last_seq(store)
    sizes = {p: sum(v == p for v in snapshot.values()) for p in (pair["person_id_l"], pair["person_id_r"])}
    kept = max(sizes, key=lambda p: (sizes[p], [-ord(c) for c in p]))
    merged = next(p for p in sizes if p != kept)
    result = _decide(client, keys["steward"], pair["pair_id"], "match")
    effect = result["effect"]["merged"]
    assert (effect["kept_person_id"], effect["merged_person_id"]) == (kept, merged)
    now = _persons(store)
    assert now[pair["record_id_l"]] == now[pair["record_id_r"]] == kept
    assert sorted(effect["record_ids"]) == sorted(r for r, p in snapshot.items() if p == merged)
    assert client.get(f"/v1/persons/{merged}", headers=_h(keys["steward"])).status_code == 404
    assert result["next_pair_id"] != pair["pair_id"]
    assert pair["pair_id"] not in {p["pair_id"] for p in _open(client, keys["steward"])}
    with store.engine.connect() as connection:
        event = connection.execute(select(person_events).where(person_events.c.event_id == effect["event_id"])).first()
    assert (event.kind, event.person_id, event.related_person_id, event.reviewer) == ("merge", kept, merged, "st-1")
    for record_id in effect["record_ids"]:
        assert service.resolver.index_.person_of(record_id) == kept
    assert review.recent_decisions(store, reviewer="st-1")[0]["decision_id"] == result["decision_id"]
    undone = _undo(client, keys["steward"], result["decision_id"])
    assert undone["undone_at"] and set(undone["effect"]["restored"]["records"].values()) == {merged}
    assert _persons(store) == snapshot
    assert pair["pair_id"] in {p["pair_id"] for p in _open(client, keys["steward"])}
    assert "already undone" in _undo(client, keys["steward"], result["decision_id"], status=409)["message"]
    assert _actions_after(store, before) == ["review_decision", "review_undo"]
    assert verify(store).ok


def test_not_a_match_splits_the_right_record_out_and_the_next_answer_no_longer_joins_them(county):
    client, keys, store, frame, service, _ = county
    pair = _same_person_pair(_open(client, keys["steward"]), frame)
    person, moved = pair["person_id_l"], pair["record_id_r"]
    subject = _identity(frame, moved)
    assert (person, moved) in {(c["person_id"], c["record_id"]) for c in _match(client, keys["steward"], subject)}
    snapshot = _persons(store)
    result = _decide(client, keys["steward"], pair["pair_id"], "not_a_match")
    split = result["effect"]["split"]
    assert (split["record_id"], split["from_person_id"]) == (moved, person) and split["to_person_id"] != person
    assert _persons(store)[moved] == split["to_person_id"] and _persons(store)[pair["record_id_l"]] == person
    candidates = _match(client, keys["steward"], subject)
    assert (person, moved) not in {(c["person_id"], c["record_id"]) for c in candidates}
    assert (split["to_person_id"], moved) in {(c["person_id"], c["record_id"]) for c in candidates}
    row = frame[frame.record_id == moved].iloc[0]
    briefing = client.post("/v1/briefings", json={
        "incident": {"id": "INC-REVIEW-1", "call_type": "welfare_check", "received_at": "2026-01-05T10:00:00+00:00"},
        "subject": subject, "purpose": "TREATMENT"}, headers=_h(keys["co"])).get_json()
    assert (shown_person(store, person), shown_record(store, moved)) not in \
        {(c["person_id"], c["record_id"]) for c in briefing["resolution"]["candidates"]}
    # The feed resending the record cannot put it back: the steward's decision overrules the scores.
    feed = create_key(store, f"feed-{row['agency']}", Role.feed, row["agency"], [])
    resent = {k: v for k, v in row.items() if v and k in ("record_id", *RECORD_FIELDS)}
    written = client.post("/v1/records", json=resent, headers=_h(feed))
    assert written.status_code == 200 and _persons(store)[moved] != person, written.get_json()
    # Another worker (a fresh app over the same store) answers the same.
    other = create_app(str(store.engine.url.database)).test_client()
    assert (person, moved) not in {(c["person_id"], c["record_id"]) for c in _match(other, keys["steward"], subject)}
    # Undone: the record is back in its person (the resend kept it where the decision put it).
    assert _persons(store)[moved] == split["to_person_id"]
    _undo(client, keys["steward"], result["decision_id"])
    assert _persons(store) == snapshot
    assert (person, moved) in {(c["person_id"], c["record_id"]) for c in _match(client, keys["steward"], subject)}
    assert verify(store).ok


def test_unsure_needs_a_note_leaves_the_default_queue_and_stays_listed(county):
    client, keys, store, *_ = county
    pair = _open(client, keys["steward"])[0]
    missing = client.post(f"/v1/review/pairs/{pair['pair_id']}/decision", json={"decision": "unsure"},
                          headers=_h(keys["steward"]))
    assert missing.status_code == 422 and "note" in missing.get_json()["fields"]
    with pytest.raises(ValueError):
        review.decide(county[4], pair["pair_id"], "unsure", "st-1", "  ")
    snapshot = _persons(store)
    result = _decide(client, keys["steward"], pair["pair_id"], "unsure", note="same name, different towns")
    assert result["effect"] == {} and _persons(store) == snapshot
    assert pair["pair_id"] not in {p["pair_id"] for p in _open(client, keys["steward"])}
    unsure = _queue(client, keys["steward"], status="unsure")["pairs"]
    assert [(p["pair_id"], p["decision"], p["status"]) for p in unsure] == [(pair["pair_id"], "unsure", "decided")]
    again = _decide(client, keys["steward2"], pair["pair_id"], "match", status=409)
    assert "already decided" in again["message"] and "undo" in again["message"]
    history = client.get(f"/v1/review/pairs/{pair['pair_id']}", headers=_h(keys["steward"])).get_json()["decisions"]
    assert [(d["decision"], d["note"], d["reviewer"]) for d in history if d["undone_at"] is None] == [
        ("unsure", "same name, different towns", "st-1")]
    assert all(d["undone_by"] for d in history if d["decision_id"] != result["decision_id"])
    _undo(client, keys["steward2"], result["decision_id"])
    assert pair["pair_id"] in {p["pair_id"] for p in _open(client, keys["steward"])}


def test_undo_goes_newest_first_per_record(county):
    client, keys, store, frame, service, _ = county
    snapshot, before = _persons(store), _last_seq(store)
    pairs = _open(client, keys["steward"])

    def sharing(pair):
        return [p for p in pairs if p["pair_id"] != pair["pair_id"]
                and {p["record_id_l"], p["record_id_r"]} & {pair["record_id_l"], pair["record_id_r"]}]

    first = next(p for p in pairs if p["person_id_l"] != p["person_id_r"] and sharing(p))
    one = _decide(client, keys["steward"], first["pair_id"], "match")
    two = _decide(client, keys["steward2"], sharing(first)[0]["pair_id"], "unsure", note="which one?")
    blocked = _undo(client, keys["steward"], one["decision_id"], status=409)
    assert f"decision {two['decision_id']}" in blocked["message"] and "undo it first" in blocked["message"]
    _undo(client, keys["steward2"], two["decision_id"])
    # A merge made on a person page that moves the same records comes later too.
    kept = one["effect"]["merged"]["kept_person_id"]
    sizes = pd.Series(_persons(store)).value_counts()
    bigger = sizes.index[0]
    assert bigger != kept and sizes[bigger] > sizes[kept]
    merged = client.post("/v1/persons/merge", json={"person_ids": [kept, bigger]}, headers=_h(keys["steward"]))
    assert merged.status_code == 200, merged.get_json()
    merged = merged.get_json()
    assert merged["kept_person_id"] == bigger and first["record_id_l"] in merged["record_ids"]
    blocked = _undo(client, keys["steward"], one["decision_id"], status=409)
    assert f"person event {merged['event_id']}" in blocked["message"]
    undone = client.post(f"/v1/persons/events/{merged['event_id']}/undo", headers=_h(keys["steward"]))
    assert undone.status_code == 200 and undone.get_json()["restored"] == {r: kept for r in merged["record_ids"]}
    assert client.post(f"/v1/persons/events/{merged['event_id']}/undo", headers=_h(keys["steward"])).status_code == 409
    _undo(client, keys["steward"], one["decision_id"])
    assert _persons(store) == snapshot
    assert _live_constraints_expected(store) == 0
    assert _actions_after(store, before) == ["review_decision", "review_decision", "review_undo", "person_merge",
                                             "person_event_undo", "review_undo"]
    assert verify(store).ok


def _live_constraints_expected(store) -> int:
    with store.engine.connect() as connection:
        must, cannot = live_constraints(connection)
    return len(must) + len(cannot)


def test_merge_and_split_on_person_pages(county):
    client, keys, store, *_ = county
    snapshot = _persons(store)
    people = pd.Series(snapshot).value_counts()
    big, small = people.index[0], people.index[-1]
    merged = client.post("/v1/persons/merge", json={"person_ids": [small, big], "note": "same person"},
                         headers=_h(keys["steward"]))
    assert merged.status_code == 200, merged.get_json()
    merged = merged.get_json()
    assert (merged["kept_person_id"], merged["merged_person_id"], merged["records_moved"]) == (big, small, people[small])
    assert client.post("/v1/persons/merge", json={"person_ids": [big, small]}, headers=_h(keys["steward"])).status_code == 404
    records = review.person_records(store, big)
    assert len(records) == people[big] + people[small] and "given_name" in records[0]
    # Splitting the merged record out again is refused: the merge holds it (undo the merge instead).
    refused = client.post(f"/v1/persons/{big}/split", json={"record_id": merged["record_ids"][0]}, headers=_h(keys["steward"]))
    assert refused.status_code == 409 and f"person event {merged['event_id']}" in refused.get_json()["message"]
    assert client.post(f"/v1/persons/events/{merged['event_id']}/undo", headers=_h(keys["steward"])).status_code == 200
    assert _persons(store) == snapshot
    assert client.post("/v1/persons/NOBODY/split", json={"record_id": "X"}, headers=_h(keys["steward"])).status_code == 404
    lone = people.index[-1]
    only = next(r for r, p in snapshot.items() if p == lone)
    assert client.post(f"/v1/persons/{lone}/split", json={"record_id": only}, headers=_h(keys["steward"])).status_code == 409
    assert client.post(f"/v1/persons/{big}/split", json={"record_id": only}, headers=_h(keys["steward"])).status_code == 404
    assert verify(store).ok


def test_contradicting_a_live_decision_is_refused(county):
    client, keys, store, frame, *_ = county
    pair = _same_person_pair(_open(client, keys["steward"]), frame, need=())
    apart = _decide(client, keys["steward"], pair["pair_id"], "not_a_match")
    to, person = apart["effect"]["split"]["to_person_id"], pair["person_id_l"]
    refused = client.post("/v1/persons/merge", json={"person_ids": [person, to]}, headers=_h(keys["steward"]))
    assert refused.status_code == 409 and f"decision {apart['decision_id']}" in refused.get_json()["message"]
    _undo(client, keys["steward"], apart["decision_id"])


def test_only_stewards_may_review_and_bad_bodies_get_field_messages(county):
    client, keys, *_ = county
    pair_id = _open(client, keys["steward"])[0]["pair_id"]
    calls = [("get", "/v1/review/queue", None), ("get", f"/v1/review/pairs/{pair_id}", None),
             ("post", f"/v1/review/pairs/{pair_id}/decision", {"decision": "match"}),
             ("post", "/v1/review/decisions/1/undo", None), ("post", "/v1/persons/P1/split", {"record_id": "X"}),
             ("post", "/v1/persons/merge", {"person_ids": ["A", "B"]}), ("post", "/v1/persons/events/1/undo", None)]
    for k, (method, path, body) in enumerate(calls):
        for key, code in ((keys["co"], 403), (keys["admin"], 403)) + (((None, 401),) if k < 3 else ()):
            response = getattr(client, method)(path, json=body, headers=_h(key) if key else {})
            assert response.status_code == code and response.is_json, (path, response.status_code)
    steward = _h(keys["steward"])
    bad = [(f"/v1/review/pairs/{pair_id}/decision", {"decision": "maybe"}, "decision"),
           (f"/v1/review/pairs/{pair_id}/decision", {"decision": "match", "reviewer": "me"}, "reviewer"),
           ("/v1/persons/merge", {"person_ids": ["A"]}, "person_ids"),
           ("/v1/persons/P1/split", {"note": "x"}, "record_id")]
    for path, body, field in bad:
        response = client.post(path, json=body, headers=steward)
        assert response.status_code == 422 and field in response.get_json()["fields"], (path, response.get_json())
    assert client.post(f"/v1/review/pairs/{pair_id}/decision", data="{", headers=steward).status_code == 400
    assert client.post("/v1/review/pairs/999999/decision", json={"decision": "match"}, headers=steward).status_code == 404
    assert client.post("/v1/review/decisions/999999/undo", headers=steward).status_code == 404
    assert client.post("/v1/persons/events/999999/undo", headers=steward).status_code == 404


def test_every_review_call_is_audited_and_the_chain_holds(county):
    client, keys, store, *_ = county
    before = _last_seq(store)
    _queue(client, keys["steward"])
    pair = _open(client, keys["steward"])[0]
    client.get(f"/v1/review/pairs/{pair['pair_id']}", headers=_h(keys["steward"]))
    decided = _decide(client, keys["steward"], pair["pair_id"], "not_a_match")
    _undo(client, keys["steward"], decided["decision_id"])
    assert _actions_after(store, before, reads=True) == ["review_queue_read", "review_queue_read", "review_pair_read",
                                             "review_decision", "review_undo"]
    with store.engine.connect() as connection:
        payload = json.loads(connection.execute(select(audit_events.c.payload).where(
            audit_events.c.action == "review_decision").order_by(audit_events.c.seq.desc())).scalar())
    assert payload["principal"] == "st-1" and payload["pair_id"] == pair["pair_id"]
    assert payload["record_ids"] == [pair["record_id_l"], pair["record_id_r"]]
    assert verify(store).ok


def test_export_labels_writes_the_live_decisions(county, tmp_path):
    client, keys, store, *_ = county
    pairs, seen = [], set()
    for pair in _open(client, keys["steward"]):          # three pairs with no record or person in common
        mine = {pair["record_id_l"], pair["record_id_r"], pair["person_id_l"], pair["person_id_r"]}
        if not mine & seen and len(pairs) < 3:
            pairs.append(pair)
            seen |= mine
    decided = [_decide(client, keys["steward"], pairs[0]["pair_id"], "match"),
               _decide(client, keys["steward"], pairs[1]["pair_id"], "unsure", note="twins?")]
    withdrawn = _decide(client, keys["steward"], pairs[2]["pair_id"], "not_a_match")
    _undo(client, keys["steward"], withdrawn["decision_id"])
    out = tmp_path / "labels.csv"
    assert run_briefing(["review", "export-labels", "--db", str(store.engine.url.database), "--out", str(out)]) == (0, "")
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["record_id_l", "record_id_r", "decision", "match_probability", "reviewer", "decided_at"]
    assert {(r["record_id_l"], r["record_id_r"], r["decision"]) for r in rows} >= {
        (pairs[0]["record_id_l"], pairs[0]["record_id_r"], "match"), (pairs[1]["record_id_l"], pairs[1]["record_id_r"], "unsure")}
    assert (pairs[2]["record_id_l"], pairs[2]["record_id_r"]) not in {(r["record_id_l"], r["record_id_r"]) for r in rows}
    assert float(next(r for r in rows if r["record_id_l"] == pairs[0]["record_id_l"])["match_probability"]) == \
        pytest.approx(pairs[0]["match_probability"])
    read_labels(out)                                       # what `briefing eval linkage --labels` reads
    for result in reversed(decided):
        _undo(client, keys["steward"], result["decision_id"])


def test_ingests_open_pairs_and_respect_the_stewards_decisions(tmp_path, monkeypatch):
    db, store = loaded_county(tmp_path, 300, 5)
    service = create_app(db).extensions["briefing"]
    with store.engine.connect() as connection:
        rows = connection.execute(select(review_pairs)).all()
    assert "batch_band" in {r.reason for r in rows} and {r.reason for r in rows} <= {"batch_band", "held_apart"}
    rows = [r for r in rows if r.reason == "batch_band"]
    persons = _persons(store)
    inside = [r for r in rows if persons[r.record_id_l] == persons[r.record_id_r]]
    across = [r for r in rows if persons[r.record_id_l] != persons[r.record_id_r]]
    assert inside and across
    apart = review.decide(service, inside[0].pair_id, "not_a_match", "st-1")
    together = review.decide(service, across[0].pair_id, "match", "st-1")
    decided = {inside[0].pair_id, across[0].pair_id}
    frame = pd.read_csv(tmp_path / "records.csv", dtype=str, keep_default_na=False)
    # A small ingest goes through the resolver: a record that joins no person opens a pair, and a resent
    # record a steward split out stays out.
    source = frame[(frame.given_name != "") & (frame.family_name != "") & (frame.dob != "")].iloc[0]
    weak = source.to_frame().T.assign(record_id="RMS-SMALL-1", given_name=source["given_name"][0], phone="",
                                      email="", street="", postcode="", ssn_last4="", middle_name="")
    resent = frame[frame.record_id == inside[0].record_id_r]
    pd.concat([weak, resent]).to_csv(tmp_path / "small.csv", index=False)
    summary = ingest(store, [tmp_path / "small.csv"], MODEL)
    assert summary.linking == "resolver"
    with store.engine.connect() as connection:
        opened = connection.execute(select(review_pairs).where(review_pairs.c.reason == "new_record")).all()
    assert [r.record_id_r for r in opened] == ["RMS-SMALL-1"]
    assert _persons(store)[inside[0].record_id_r] != _persons(store)[inside[0].record_id_l]
    extra = frame.head(1).assign(record_id="RMS-BULK-1", family_name="Zyxwvut")
    extra.to_csv(tmp_path / "extra.csv", index=False)
    monkeypatch.setattr(ingest_module, "BULK_MIN", 1)
    summary = ingest(store, [tmp_path / "extra.csv"], MODEL)
    assert summary.linking == "batch"
    after = _persons(store)
    assert apart.effect["split"]["record_id"] == inside[0].record_id_r
    assert after[inside[0].record_id_l] != after[inside[0].record_id_r]
    assert after[across[0].record_id_l] == after[across[0].record_id_r] == together.effect["merged"]["kept_person_id"]
    with store.engine.connect() as connection:
        status = dict(connection.execute(select(review_pairs.c.pair_id, review_pairs.c.status)).all())
    assert all(status[p] == "decided" for p in decided)                 # seen again, not reopened
    assert sum(s == "open" for s in status.values()) >= len(rows) - 2 + 1
    assert verify(store).ok


REVIEW_PATHS = {"/v1/review/queue", "/v1/review/pairs/{pair_id}", "/v1/review/pairs/{pair_id}/decision",
                "/v1/review/decisions/{decision_id}/undo", "/v1/persons/{person_id}/split", "/v1/persons/merge",
                "/v1/persons/events/{event_id}/undo"}


def test_the_review_endpoints_conform_to_the_openapi_document_with_a_steward_key(tmp_path):
    """tests/test_openapi.py calls these with an admin key (403); here a steward's generated calls reach the handlers."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    from api.service.throttle import FailureThrottle

    db, store = loaded_county(tmp_path, 200, 3)
    steward = create_key(store, "st", Role.steward, "COUNTY", [])
    app = create_app(db)
    app.extensions["briefing"].throttle = FailureThrottle(per_credential=10**6, per_address=10**6)
    api = schemathesis.openapi.from_wsgi("/openapi.json", app)
    api.config.generation.update(allow_x00=False)     # a NUL is refused with 422 everywhere (test_input_attacks.py)
    operations = [r.ok() for r in api.get_all_operations() if r.ok().path in REVIEW_PATHS]
    assert {op.path for op in operations} == REVIEW_PATHS
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)           # as in tests/test_openapi.py: a random leap second is rightly refused
        def check(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {steward}"})

        check()
    assert verify(store).ok


def test_an_open_pair_seen_again_takes_the_newer_reason_rule_and_orientation(tmp_path):
    store = open_store(str(tmp_path / "pairs.db")).create()
    held = {"record_id_l": "NEW-1", "record_id_r": "OLD-1", "match_probability": 0.99, "reason": "held_apart",
            "detail": "suffix"}
    with store.begin() as connection:
        open_pairs(connection, [held], "batch_band")
        open_pairs(connection, [from_resolver({"record_id_l": "NEW-1", "record_id_r": "OLD-1", "match_probability": 0.7})],
                   "new_record")
        row = connection.execute(select(review_pairs)).one()
    # the newcomer is on the right, where a not-a-match decision splits it out
    assert (row.record_id_l, row.record_id_r, row.reason, row.detail) == ("OLD-1", "NEW-1", "new_record", None)
    with pytest.raises(ValueError, match="unknown review reason"):
        pair_rows([], "gut")


_SIGHTING = st.fixed_dictionaries({
    "record_id_l": st.sampled_from(["A-1", "B-2"]), "match_probability": st.sampled_from([0.6, 0.7]),
    "reason": st.sampled_from(["batch_band", "held_apart"]), "detail": st.sampled_from([None, "suffix"])})
_SEEN = ("record_id_l", "record_id_r", "match_probability", "reason", "detail")


def _sighting(drawn: dict) -> dict:
    return drawn | {"record_id_r": "B-2" if drawn["record_id_l"] == "A-1" else "A-1"}


def _open_staged(connection, pairs, reason, now):
    """`open_staged_pairs` as a staged bulk load calls it (api.service.staging): the rows staged in a copy first."""
    connection.exec_driver_sql('CREATE TABLE "staged_pairs" AS SELECT * FROM review_pairs WHERE false')
    for row in pair_rows(pairs, reason, now):
        connection.exec_driver_sql(f'INSERT INTO "staged_pairs" ({", ".join(row)}) VALUES ({", ".join("?" * len(row))})',
                                   tuple(row.values()))
    open_staged_pairs(connection, "staged_pairs")
    connection.exec_driver_sql('DROP TABLE "staged_pairs"')


_UNCHANGED = {"record_id_l": "A-1", "match_probability": 0.6, "reason": "batch_band", "detail": None}


@settings(max_examples=60, deadline=None)
@given(first=_SIGHTING, again=_SIGHTING, decided=st.booleans(), staged=st.booleans())
@example(first=_UNCHANGED, again=_UNCHANGED, decided=False, staged=True)
@example(first=_UNCHANGED, again=_UNCHANGED, decided=False, staged=False)
@example(first=_UNCHANGED, again=_UNCHANGED | {"match_probability": 0.7}, decided=False, staged=True)
def test_an_open_pair_seen_again_is_rewritten_only_when_the_sighting_differs(tmp_path_factory, first, again, decided,
                                                                             staged):
    """Both ways of opening pairs (one statement run per pair; a staged bulk load's one statement) agree: a decided
    pair never changes; an open one takes the newer sighting, and its time, only when a field of it differs."""
    store = open_store(str(tmp_path_factory.mktemp("pairs") / "pairs.db")).create()
    first, again = _sighting(first), _sighting(again)
    with store.begin() as connection:
        open_pairs(connection, [first], "batch_band", now="2026-01-01T00:00:00+00:00")
        if decided:
            connection.execute(review_pairs.update().values(status="decided"))
        before = connection.execute(select(review_pairs)).one()._asdict()
        (_open_staged if staged else open_pairs)(connection, [again], "batch_band", "2026-02-01T00:00:00+00:00")
        after = connection.execute(select(review_pairs)).one()._asdict()
    if decided or all(before[name] == again[name] for name in _SEEN):
        assert after == before
    else:
        assert after == before | {name: again[name] for name in _SEEN} | {"updated_at": "2026-02-01T00:00:00+00:00"}
