"""The store on PostgreSQL: upserts, the audit chain, keys, changes, ingest all or nothing, forked processes.

Each test gets a fresh database on the session's server (tests/postgres.py); without PostgreSQL
they skip, and under CI they fail.
"""

import os
import threading
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import func, select, text, update

from api.service.audit import append, verify
from api.service.changes import record_change
import api.service.ingest as ingest_module
from api.service.ingest import IngestError, ingest
from api.service.owned_upsert import upsert
from api.service.keys import KeyRefused, authenticate, create_key, list_keys, revoke_key
from api.service.store import (audit_events, changes, clusters, consents, context_items, database_url, open_store, records)
from evaluation.synth.county import generate_county
from matching.model import MatcherModel
from scoring.item import Purpose, Role
from tests.cli_run import run_briefing

MODEL = MatcherModel.load("models/matcher.json")


@pytest.fixture()
def pg(postgres_server, request):
    """A fresh, created store in a new PostgreSQL database; (url, store)."""
    url = postgres_server.create_database(request.node.name[:30])
    store = open_store(url).create()
    yield url, store
    store.engine.dispose()
    postgres_server.drop_database(url)


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("county")
    generate_county(300, 29, out, progress=False)
    return out


def _counts(store) -> dict:
    with store.engine.connect() as connection:
        return {t.name: connection.execute(select(func.count()).select_from(t)).scalar()
                for t in (records, clusters, context_items, consents, changes)}


def test_postgresql_urls_use_the_installed_psycopg_driver():
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_the_store_is_postgresql_and_its_tables_exist(pg):
    _, store = pg
    assert store.engine.dialect.name == "postgresql" and store.engine.dialect.driver == "psycopg"
    store.create()                                       # a second create is harmless
    assert _counts(store) == {"records": 0, "clusters": 0, "context_items": 0, "consents": 0, "changes": 0}


def test_upsert_by_id_is_idempotent_and_replaces_the_row(pg):
    _, store = pg
    now = datetime.now(timezone.utc).isoformat()
    rows = [{"record_id": f"R-{k}", "agency": "METRO_PD", "given_name": f"Name{k}", "ingested_at": now} for k in range(1203)]
    full = [{c.name: row.get(c.name) for c in records.columns} for row in rows]
    for _ in range(2):                                   # across the 500-row chunks, twice
        with store.begin() as connection:
            upsert(connection, records, "record_id", full)
    changed = [{**full[7], "given_name": "Renamed"}, {**full[1202], "given_name": None}]
    with store.begin() as connection:
        upsert(connection, records, "record_id", changed)
        upsert(connection, clusters, "record_id", [{"record_id": "R-7", "person_id": "P1"}])
        upsert(connection, clusters, "record_id", [{"record_id": "R-7", "person_id": "P2"}])
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(records)).scalar() == 1203
        names = dict(connection.execute(select(records.c.record_id, records.c.given_name)
                                        .where(records.c.record_id.in_(["R-7", "R-1202", "R-8"]))).all())
        assert names == {"R-7": "Renamed", "R-1202": None, "R-8": "Name8"}
        assert connection.execute(select(clusters.c.person_id)).scalars().all() == ["P2"]


def test_the_audit_chain_verifies_names_a_changed_event_and_holds_under_concurrent_writers(pg):
    url, store = pg
    with store.begin() as connection:
        for k in range(5):
            append(connection, "briefing", {"incident_id": f"INC-{k}"}, principal="cad-1", request_id=f"r{k}")

    def writer(name):
        for k in range(15):
            with store.begin() as connection:
                append(connection, "briefing", {"by": name, "k": k}, principal=name, request_id=f"{name}-{k}")

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = verify(store)
    assert (result.ok, result.events) == (True, 5 + 90), result
    assert run_briefing(["audit", "verify", "--db", url]) == (0, "")
    with store.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == 40).values(payload='{"by":"someone else"}'))
    result = verify(store)
    assert (result.ok, result.first_broken, result.kind) == (False, 40, "rewrite") and "changed" in result.reason
    assert run_briefing(["audit", "verify", "--db", url]) == (1, "")


def test_the_audit_key_and_witness_of_a_server_store_live_in_a_state_directory_and_truncation_is_caught(pg, tmp_path,
                                                                                                       monkeypatch):
    import hashlib
    from pathlib import Path

    from sqlalchemy import delete
    from sqlalchemy.engine import make_url

    from api.service.audit_trail import trail_for

    url, store = pg
    without_password = make_url(database_url(url)).set(password=None).render_as_string(hide_password=False)
    directory = Path(os.environ["XDG_STATE_HOME"]) / "briefing" / hashlib.sha256(without_password.encode()).hexdigest()[:16]
    assert (store.audit.key_path, store.audit.witness_path) == (directory / "audit-key", directory / "audit-witness")
    with_password = make_url(database_url(url)).set(password="s3cret")
    assert trail_for(with_password).key_path == store.audit.key_path      # the password never names the directory
    with store.begin() as connection:
        for k in range(4):
            append(connection, "briefing", {"k": k})
    assert len(store.audit.witness_path.read_text().splitlines()) == 4
    other = open_store(url)                               # another process over the store finds the same files
    assert other.audit.key(create=False) == store.audit.key(create=False)
    with store.engine.begin() as connection:              # an attacker with the database but not the files
        newest = connection.execute(select(func.max(audit_events.c.seq))).scalar()
        connection.execute(delete(audit_events).where(audit_events.c.seq == newest))
    result = verify(other)
    assert (result.ok, result.kind, result.first_broken) == (False, "truncation", newest)
    monkeypatch.setenv("BRIEFING_AUDIT_DIR", str(tmp_path / "audit"))
    assert open_store(url).audit.witness_path == tmp_path / "audit" / "audit-witness"


def test_a_change_waits_for_an_earlier_uncommitted_one_so_seq_order_is_commit_order(pg):
    """A worker applies changes after the last seq it saw: a lower seq must never commit after a higher one."""
    _, store = pg
    first = store.engine.connect()
    transaction = first.begin()
    record_change(first, "upsert", "R-1")
    done = {}

    def second():
        with store.begin() as connection:
            record_change(connection, "upsert", "R-2")
        done["at"] = time.monotonic()

    thread = threading.Thread(target=second)
    thread.start()
    try:
        time.sleep(0.5)
        held_back = "at" not in done                     # by the uncommitted first change
        committed = time.monotonic()
    finally:
        transaction.commit()
        first.close()
        thread.join(timeout=10)
    assert held_back and done["at"] >= committed
    with store.engine.connect() as connection:
        assert connection.execute(select(changes.c.record_id).order_by(changes.c.seq)).scalars().all() == ["R-1", "R-2"]


def test_keys_create_authenticate_revoke_and_refuse_duplicates(pg):
    _, store = pg
    key = create_key(store, "ems-1", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY, Purpose.TREATMENT])
    principal = authenticate(store, key)
    assert (principal.name, principal.role, principal.agency, principal.purposes) == (
        "ems-1", Role.ems, "COUNTY_EMS", (Purpose.EMERGENCY, Purpose.TREATMENT))
    assert authenticate(store, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    with pytest.raises(KeyRefused, match="already exists"):
        create_key(store, "ems-1", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY])
    soon = create_key(store, "tmp", Role.officer, "METRO_PD", [Purpose.LAW],
                      expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    assert authenticate(store, soon) is not None
    assert authenticate(store, soon, at=datetime.now(timezone.utc) + timedelta(hours=2)) is None
    revoke_key(store, "ems-1")
    assert authenticate(store, key) is None
    with pytest.raises(KeyRefused, match="already revoked"):
        revoke_key(store, "ems-1")
    with pytest.raises(KeyRefused, match="no key named"):
        revoke_key(store, "nobody")
    assert [k.name for k in list_keys(store)] == ["ems-1", "tmp"]


def test_ingest_is_all_or_nothing_idempotent_and_links_every_record(pg, county, tmp_path):
    url, store = pg
    files = [county / "records.csv", county / "context_items.csv", county / "consents.csv"]
    items = pd.read_csv(county / "context_items.csv", dtype=str, keep_default_na=False)
    items.loc[1, "category"] = "danger"
    bad = tmp_path / "items.csv"
    items.to_csv(bad, index=False)
    with pytest.raises(IngestError):
        ingest(store, [county / "records.csv", bad], MODEL)
    assert _counts(store) == {"records": 0, "clusters": 0, "context_items": 0, "consents": 0, "changes": 0}

    summary = ingest(store, files, MODEL)
    n = len(pd.read_csv(county / "records.csv"))
    loaded = _counts(store)
    assert summary.linking == "batch" and summary.new_records == n
    assert loaded == {"records": n, "clusters": n, "context_items": len(items),
                      "consents": len(pd.read_csv(county / "consents.csv")), "changes": 1}
    assert ingest(store, files, MODEL).new_records == 0  # a feed resends: nothing new (one more rebuild change)
    assert {k: v for k, v in _counts(store).items() if k != "changes"} == {k: v for k, v in loaded.items() if k != "changes"}

    before = _counts(store)
    status, message = run_briefing(["ingest", "--db", url, "--quiet", str(county / "records.csv"), str(bad)])
    assert status == 2 and "nothing was written" in message and f"{bad}:3:" in message
    assert _counts(store) == before

    frame = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    original = frame[(frame.source_system == "RMS") & (frame.dob != "")].iloc[[0]]
    path = tmp_path / "new.csv"
    original.assign(record_id="RMS-NEW-1").to_csv(path, index=False)
    assert ingest(store, [path], MODEL).linking == "resolver"
    with store.engine.connect() as connection:
        person = dict(connection.execute(select(clusters.c.record_id, clusters.c.person_id).where(
            clusters.c.record_id.in_(["RMS-NEW-1", original.record_id.iloc[0]]))).all())
        last = connection.execute(select(changes.c.op, changes.c.record_id).order_by(changes.c.seq.desc()).limit(1)).one()
    assert person["RMS-NEW-1"] == person[original.record_id.iloc[0]]
    assert tuple(last) == ("upsert", "RMS-NEW-1")


def test_a_forked_child_never_uses_its_parents_pooled_connection(pg):
    """`briefing serve` opens the store in the gunicorn master and forks the workers from it."""
    _, store = pg
    with store.engine.connect() as connection:
        parent = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:                                       # the child: answer its backend's pid, never raise
        try:
            with store.engine.connect() as connection:
                os.write(write, str(connection.execute(text("SELECT pg_backend_pid()")).scalar()).encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(child, 0)
    assert answer and int(answer) != parent
    with store.engine.connect() as connection:           # and the parent's connection still works
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar() == parent


def test_a_record_written_while_a_bulk_load_links_keeps_its_person_and_one_deleted_stays_gone(pg, county, monkeypatch):
    url, store = pg
    ingest(store, [county / "records.csv"], MODEL)
    with store.engine.connect() as connection:
        victim = connection.execute(select(records.c.record_id).limit(1)).scalar_one()
    link = ingest_module._link

    def link_then_write(store, *args, **kwargs):
        person_rows = link(store, *args, **kwargs)
        with store.begin() as connection:          # a feed's record and an erasure, committed during the link
            connection.execute(records.insert().values(record_id="FEED-DURING-LINK", given_name="Perpetua",
                                                       ingested_at="2026-12-01T00:00:00+00:00"))
            connection.execute(clusters.insert().values(record_id="FEED-DURING-LINK", person_id="P-FEED"))
            record_change(connection, "upsert", "FEED-DURING-LINK")
            connection.execute(records.delete().where(records.c.record_id == victim))
            record_change(connection, "delete", victim)
        return person_rows

    monkeypatch.setattr(ingest_module, "_link", link_then_write)
    frame = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    pd.concat([frame.assign(record_id=f"AGAIN{n}-" + frame["record_id"]) for n in range(2)]).to_csv(
        county / "again.csv", index=False)                     # a bulk load: at least BULK_MIN new records
    assert ingest(store, [county / "again.csv"], MODEL).linking == "batch"
    with store.engine.connect() as connection:
        people = dict(connection.execute(select(clusters.c.record_id, clusters.c.person_id)).all())
        stored = set(connection.execute(select(records.c.record_id)).scalars())
    assert people["FEED-DURING-LINK"] == "P-FEED" and victim not in people and victim not in stored
    assert set(people) == stored, "every record has a person"
