"""Index rebuilds off the request path (api.service.rebuild): a bulk load's index is built in the background,
requests keep being answered from the current one, and the swap loses no change made meanwhile."""

import threading
import time

import pytest
from sqlalchemy import insert

import api.service.rebuild as rebuild
from api.service.changes import record_change
from api.service.keys import create_key, revoke_key
from api.service.store import clusters, records
from api.web.app import create_app
from api.web.context import EXTENSION
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county, shown_record, stored_subject

NEWCOMER = {"record_id": "BULK-NEW-1", "agency": "METRO_PD", "given_name": "Perpetua", "family_name": "Quarrendon",
            "dob": "1977-04-09", "sex": "F", "ingested_at": "2026-12-01T00:00:00+00:00"}
NEWCOMER_SUBJECT = {"given_name": "Perpetua", "family_name": "Quarrendon", "dob": "1977-04-09"}


@pytest.fixture()
def served(tmp_path):
    db, store = loaded_county(tmp_path, 150, 7)
    keys = {"ems": create_key(store, "ems-1", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY]),
            "feed": create_key(store, "feed-pd", Role.feed, "METRO_PD", [])}
    app = create_app(db)
    return app.test_client(), app.extensions[EXTENSION], store, keys


@pytest.fixture()
def held_build(monkeypatch):
    """Builds read the store, then wait for `release` before they finish: the window a 1M build takes."""
    release, reading_done = threading.Event(), threading.Event()
    real = rebuild.build_resolver

    def slow(store, matcher, progress=None):
        resolver = real(store, matcher, progress)
        reading_done.set()
        assert release.wait(30)
        return resolver

    monkeypatch.setattr(rebuild, "build_resolver", slow)
    return release, reading_done


def _bulk_load(store) -> None:
    """What `briefing ingest` leaves after a bulk load: rows written, then one `rebuild` change."""
    with store.begin() as connection:
        connection.execute(insert(records).values(**NEWCOMER))
        connection.execute(insert(clusters).values(record_id=NEWCOMER["record_id"], person_id="P-BULK-NEW-1"))
        record_change(connection, "rebuild")


def _bulk_load_building(client, store, keys, reading_done) -> None:
    """A bulk load, a request by which the worker learns of it, and its build past reading the store."""
    _bulk_load(store)
    _best_record(client, keys["ems"], NEWCOMER_SUBJECT)
    assert reading_done.wait(30)


def _best_record(client, key, subject) -> str | None:
    answer = client.post("/v1/match", json={"subject": subject, "purpose": "EMERGENCY"},
                         headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.get_json()
    candidates = answer.get_json()["resolution"]["candidates"]
    return candidates[0]["record_id"] if candidates else None


def _index(client) -> dict:
    return client.get("/readyz").get_json()["index"]


def test_requests_are_answered_from_the_old_index_while_the_new_one_builds(served, held_build):
    client, service, store, keys = served
    release, reading_done = held_build
    assert _index(client) == {"generation": 1, "newest_generation": 1, "state": "serving", "progress": None,
                              "started_at": None}
    _bulk_load(store)
    started = time.monotonic()
    assert _best_record(client, keys["ems"], NEWCOMER_SUBJECT) is None        # the old index answers, at once
    assert time.monotonic() - started < 5
    assert reading_done.wait(30)
    building = _index(client)
    assert building["state"] == "building" and building["generation"] == 1 and 0 < building["progress"] < 1
    release.set()
    assert service.rebuilder.wait(30)
    assert _best_record(client, keys["ems"], NEWCOMER_SUBJECT) == shown_record(store, NEWCOMER["record_id"])
    assert _index(client) | {"started_at": None} == {"generation": 2, "newest_generation": 2, "state": "serving",
                                                     "progress": None, "started_at": None}


def test_a_record_deleted_during_the_build_is_answered_by_neither_index(served, held_build):
    client, service, store, keys = served
    release, reading_done = held_build
    admin = create_key(store, "admin-1", Role.admin, "COUNTY", [])
    victim, subject = "RMS-VICTIM-1", {"given_name": "Hortensia", "family_name": "Blackwater", "dob": "1969-10-30"}
    assert client.post("/v1/records", json={"record_id": victim, "agency": "METRO_PD", **subject},
                       headers={"Authorization": f"Bearer {admin}"}).status_code == 201
    assert _best_record(client, keys["ems"], subject) == shown_record(store, victim)
    _bulk_load_building(client, store, keys, reading_done)                   # its snapshot holds the victim
    assert client.delete(f"/v1/records/{victim}", headers={"Authorization": f"Bearer {admin}"}).status_code == 204
    assert _best_record(client, keys["ems"], subject) != shown_record(store, victim)     # old index: gone at once
    release.set()
    assert service.rebuilder.wait(30) and _index(client)["generation"] == 2
    assert victim not in service.resolver.index_.slot_of
    assert _best_record(client, keys["ems"], subject) != shown_record(store, victim)     # new index: gone too


def test_a_key_revoked_during_the_build_stays_refused_after_the_swap(served, held_build):
    client, service, store, keys = served
    release, reading_done = held_build
    _bulk_load_building(client, store, keys, reading_done)
    revoke_key(store, "ems-1")
    headers = {"Authorization": f"Bearer {keys['ems']}"}
    assert client.post("/v1/match", json={"subject": NEWCOMER_SUBJECT, "purpose": "EMERGENCY"},
                       headers=headers).status_code == 401
    release.set()
    assert service.rebuilder.wait(30)
    assert client.post("/v1/match", json={"subject": NEWCOMER_SUBJECT, "purpose": "EMERGENCY"},
                       headers=headers).status_code == 401


def test_a_failed_build_leaves_the_old_index_answering_and_says_so(served, monkeypatch):
    client, service, store, keys = served

    def broken(store, matcher, progress=None):
        raise MemoryError("no room for a second index")

    monkeypatch.setattr(rebuild, "build_resolver", broken)
    monkeypatch.setattr(service.rebuilder, "retry_after", ())
    answering = service.resolver
    _bulk_load(store)
    _best_record(client, keys["ems"], NEWCOMER_SUBJECT)
    assert service.rebuilder.wait(30)
    index = _index(client)
    assert index["state"] == "failed" and index["generation"] == 1 and index["started_at"] is not None
    record = next(iter(service.resolver.index_.slot_of))
    assert service.resolver is answering and _best_record(client, keys["ems"], stored_subject(store, record))


def test_a_second_bulk_load_during_a_build_is_built_after_it(served, held_build):
    client, service, store, keys = served
    release, reading_done = held_build
    _bulk_load_building(client, store, keys, reading_done)
    with store.begin() as connection:
        connection.execute(insert(records).values(**{**NEWCOMER, "record_id": "BULK-NEW-2", "given_name": "Philomena"}))
        connection.execute(insert(clusters).values(record_id="BULK-NEW-2", person_id="P-BULK-NEW-2"))
        record_change(connection, "rebuild")
    _best_record(client, keys["ems"], NEWCOMER_SUBJECT)
    release.set()
    assert service.rebuilder.wait(30)
    assert _index(client)["generation"] == 3
    assert _best_record(client, keys["ems"], {**NEWCOMER_SUBJECT, "given_name": "Philomena"}) == \
        shown_record(store, "BULK-NEW-2")


def test_a_build_that_fails_once_is_retried_and_swapped_in(served, monkeypatch):
    client, service, store, keys = served
    real, calls = rebuild.build_resolver, []

    def flaky(store, matcher, progress=None):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the store went away for a moment")
        return real(store, matcher, progress)

    monkeypatch.setattr(rebuild, "build_resolver", flaky)
    monkeypatch.setattr(service.rebuilder, "retry_after", (0.05,))
    _bulk_load(store)
    _best_record(client, keys["ems"], NEWCOMER_SUBJECT)
    assert service.rebuilder.wait(30)
    assert len(calls) == 2 and _index(client)["generation"] == 2 and _index(client)["state"] == "serving"
    assert _best_record(client, keys["ems"], NEWCOMER_SUBJECT) == shown_record(store, NEWCOMER["record_id"])
