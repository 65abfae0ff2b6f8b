"""`briefing ingest`: files known by their columns, all or nothing, every record in a person, upserts."""

import json
import shutil

import pandas as pd
import pytest
from sqlalchemy import func, select

from api.audit import verify
from api.ingest import BULK_MIN, IngestError, ingest
from api.store import audit_events, clusters, consents, context_items, open_store, records
from evaluation.synth.county import generate_county
from matching.model import MatcherModel
from tests.cli_run import run_briefing

MODEL = MatcherModel.load("models/matcher.json")


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("county")
    generate_county(600, 13, out, progress=False)
    return out


def _counts(store) -> dict:
    with store.engine.connect() as connection:
        return {t.name: connection.execute(select(func.count()).select_from(t)).scalar()
                for t in (records, clusters, context_items, consents)}


def test_a_county_loads_whole_and_every_record_belongs_to_a_person(county, tmp_path):
    store = open_store(str(tmp_path / "b.db")).create()
    summary = ingest(store, [county / "records.csv", county / "context_items.csv", county / "consents.csv"], MODEL)
    counts = _counts(store)
    n_records = len(pd.read_csv(county / "records.csv"))
    assert counts == {"records": n_records, "clusters": n_records, "context_items": len(pd.read_csv(county / "context_items.csv")),
                      "consents": len(pd.read_csv(county / "consents.csv"))}
    assert summary.linking == "batch" and summary.new_records == n_records
    again = ingest(store, [county / "records.csv", county / "context_items.csv"], MODEL)   # a feed resends
    assert _counts(store) == counts and again.new_records == 0


def test_a_few_new_records_go_through_the_resolver_and_a_duplicate_joins_its_person(county, tmp_path):
    store = open_store(str(tmp_path / "b.db")).create()
    ingest(store, [county / "records.csv"], MODEL)
    frame = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    original = frame[(frame.source_system == "RMS") & (frame.dob != "")].iloc[[0]]
    copy = original.assign(record_id="RMS-NEW-1")
    path = tmp_path / "new.csv"
    copy.to_csv(path, index=False)
    summary = ingest(store, [path], MODEL)
    assert summary.linking == "resolver" and summary.new_records == 1 < BULK_MIN
    with store.engine.connect() as connection:
        person = dict(connection.execute(select(clusters.c.record_id, clusters.c.person_id)
                                         .where(clusters.c.record_id.in_(["RMS-NEW-1", original.record_id.iloc[0]]))).all())
    assert person["RMS-NEW-1"] == person[original.record_id.iloc[0]]


def test_every_load_is_one_audit_event_naming_its_files_and_counts(county, tmp_path):
    store = open_store(str(tmp_path / "d.db")).create()
    ingest(store, [county / "records.csv"], MODEL, principal="cli:loader")
    chain = verify(store)
    with store.engine.connect() as connection:
        event = connection.execute(select(audit_events)).mappings().one()
    payload = json.loads(event["payload"])
    assert chain.ok and chain.events == 1 and (event["action"], event["principal"]) == ("ingest", "cli:loader")
    assert payload["files"] == [str(county / "records.csv")] and payload["new_records"] == payload["records"] > 0


def test_one_bad_row_rejects_the_whole_load_with_file_line_and_column(county, tmp_path):
    store = open_store(str(tmp_path / "b.db")).create()
    items = pd.read_csv(county / "context_items.csv", dtype=str, keep_default_na=False)
    items.loc[1, "category"] = "danger"
    items.loc[2, "record_id"] = "NO-SUCH-RECORD"
    bad = tmp_path / "items.csv"
    items.to_csv(bad, index=False)
    with pytest.raises(IngestError) as caught:
        ingest(store, [county / "records.csv", bad], MODEL)
    column = list(items.columns).index("category") + 1
    assert f"{bad}:3:{column}: category:" in str(caught.value)
    assert f"{bad}:4: record_id 'NO-SUCH-RECORD' is in neither the store nor this load" in str(caught.value)
    assert _counts(store) == {"records": 0, "clusters": 0, "context_items": 0, "consents": 0}


def test_ingest_cli_exits_2_naming_a_file_it_cannot_classify(county, tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    status, message = run_briefing(["ingest", "--db", str(tmp_path / "c.db"), str(odd), "--quiet"])
    assert status == 2 and f"{odd}:1: cannot tell what this file holds" in message and "nothing was written" in message
    shutil.copy(county / "consents.csv", tmp_path / "consents.csv")
    status, message = run_briefing(["ingest", "--db", str(tmp_path / "c.db"), str(tmp_path / "consents.csv"), "--quiet"])
    assert status == 2 and "is in neither the store nor this load" in message
