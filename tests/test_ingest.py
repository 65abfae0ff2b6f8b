"""`briefing ingest`: files known by their columns, all or nothing, every record in a person, upserts;
times stored as UTC text of one width, revocations compared as times (SQLite and PostgreSQL)."""

import json
import re
import shutil
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from api.service.audit import verify
from api.service.ingest import BULK_MIN, ConsentIn, IngestError, batch_record_rows, consent_row, ingest, record_row
from api.service.owned_upsert import OwnershipConflict, upsert
from api.service.store import RECORD_FIELDS, audit_events, clusters, consents, context_items, open_store, records
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


_CELL = st.one_of(st.none(), st.just(float("nan")), st.just(pd.NA), st.text(max_size=4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({"record_id": st.text(min_size=1, max_size=4), "given_name": _CELL, "dob": _CELL,
                                       "birth_year": st.one_of(st.none(), st.integers(1900, 2020))}), max_size=6),
       st.booleans())
def test_a_bulk_loads_record_rows_are_the_rows_one_at_a_time(rows, without_family_name):
    batch = pd.DataFrame(rows, columns=["record_id", "given_name", "dob", "birth_year"])
    batch["birth_year"] = batch["birth_year"].astype("Int64")             # as the strict reader types it
    if not without_family_name:
        batch["family_name"] = "DOE"
    expected = [record_row(row, "now") for row in batch.to_dict("records")]
    assert batch_record_rows(batch, "now") == expected
    assert all(set(row) == {"record_id", *RECORD_FIELDS, "ingested_at"} for row in expected)


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


# ------------------------------------------------------------------- times: UTC text, revocations compared as times

UTC_TEXT = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$"
OFFSETS = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
MOMENTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1))


@pytest.fixture(params=["sqlite", "postgresql"])
def one_record_store(request, tmp_path_factory):
    """A store (SQLite, and PostgreSQL when the session has a server) holding one record to hang consents on."""
    if request.param == "sqlite":
        store = open_store(str(tmp_path_factory.mktemp("times") / "t.db")).create()
    else:
        store = open_store(request.getfixturevalue("postgres_url")).create()
    with store.begin() as connection:
        upsert(connection, records, "record_id", [record_row({"record_id": "EHR-T1", "agency": "COUNTY_BH"}, "now")])
    yield store
    store.engine.dispose()


def _revoked(store, consent_id: str) -> str | None:
    with store.engine.connect() as connection:
        return connection.execute(select(consents.c.revoked_at).where(consents.c.consent_id == consent_id)).scalar()


def _send(store, consent_id: str, revoked_at: datetime | None) -> None:
    consent = ConsentIn(consent_id=consent_id, record_id="EHR-T1", recipients="co_responder", purposes="TREATMENT",
                        categories="PHI", valid_from="2020-01-01T00:00:00+00:00", revoked_at=revoked_at)
    with store.begin() as connection:
        upsert(connection, consents, "consent_id", [consent_row(consent, "now")])


def _item(item_id: str, record_id: str) -> dict:
    return {c.name: None for c in context_items.columns} | {"item_id": item_id, "record_id": record_id,
                                                         "category": "communication", "updated_at": "now"}


def _stored_items(store) -> dict:
    with store.engine.connect() as connection:
        return dict(connection.execute(select(context_items.c.item_id, context_items.c.record_id)).all())


@pytest.mark.parametrize("padding", [0, 600], ids=["a few rows", "a bulk batch"])
def test_an_item_sent_onto_another_agencys_record_is_held_back_and_nothing_of_the_batch_is_written(one_record_store,
                                                                                                  padding):
    """The write's own guard (the load's checks run before it, against a store that may change meanwhile): on
    SQLite one statement per row, where a row held back is seen as a row not changed; on PostgreSQL a bulk batch
    is one `INSERT … SELECT` from a copy, where a row held back is a row not returned."""
    store = one_record_store
    with store.begin() as connection:
        connection.execute(delete(context_items))          # PostgreSQL: one database for the module's tests
        upsert(connection, records, "record_id", [record_row({"record_id": "PD-T2", "agency": "METRO_PD"}, "now")])
        upsert(connection, context_items, "item_id", [_item("ITEM-1", "EHR-T1")])
    batch = ([_item("ITEM-2", "EHR-T1"), _item("ITEM-1", "PD-T2"), _item("ITEM-3", "PD-T2")]
             + [_item(f"ITEM-PAD-{n}", "EHR-T1") for n in range(padding)])
    with pytest.raises(OwnershipConflict, match="'ITEM-1'.*another agency"):
        with store.begin() as connection:
            upsert(connection, context_items, "item_id", batch)
    assert _stored_items(store) == {"ITEM-1": "EHR-T1"}
    with store.begin() as connection:             # resent on a record of the same agency, it is replaced
        upsert(connection, context_items, "item_id", [_item("ITEM-1", "EHR-T1") | {"text": "again"}, *batch[2:]])
    assert _stored_items(store) == {"ITEM-1": "EHR-T1", "ITEM-3": "PD-T2"} | {f"ITEM-PAD-{n}": "EHR-T1" for n in range(padding)}
    with store.engine.connect() as connection:
        assert connection.execute(select(context_items.c.text).where(context_items.c.item_id == "ITEM-1")).scalar() == "again"


def test_a_bulk_batch_keeps_a_consents_earlier_revocation(one_record_store):
    store = one_record_store
    earlier, later = datetime(2026, 1, 1, 5, 0, tzinfo=timezone.utc), datetime(2026, 1, 1, 6, 0, tzinfo=timezone.utc)
    _send(store, "CNS-BULK-1", earlier)

    def row(consent_id: str, revoked_at):
        return consent_row(ConsentIn(consent_id=consent_id, record_id="EHR-T1", recipients="co_responder",
                                     purposes="TREATMENT", categories="PHI", valid_from="2020-01-01T00:00:00+00:00",
                                     revoked_at=revoked_at), "now")

    with store.begin() as connection:
        upsert(connection, consents, "consent_id", [row("CNS-BULK-1", later)] + [row(f"CNS-BULK-P{n}", None) for n in range(600)])
    assert datetime.fromisoformat(_revoked(store, "CNS-BULK-1")) == earlier
    assert _revoked(store, "CNS-BULK-P599") is None


def test_a_resent_consent_keeps_the_earlier_revocation_where_text_order_and_time_order_disagree(one_record_store):
    store = one_record_store
    earlier = datetime(2026, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=5)))    # 05:00 UTC, text "…T10:00…"
    later = datetime(2026, 1, 1, 6, 0, tzinfo=timezone.utc)                        # 06:00 UTC, text "…T06:00…"
    assert earlier.isoformat() > later.isoformat() and earlier < later
    _send(store, "CNS-ORDER-1", earlier)
    _send(store, "CNS-ORDER-1", later)
    assert datetime.fromisoformat(_revoked(store, "CNS-ORDER-1")) == earlier
    assert re.match(UTC_TEXT, _revoked(store, "CNS-ORDER-1"))
    # A row written before times were normalised keeps its offset; it is still compared as a time.
    with store.begin() as connection:
        connection.execute(update(consents).where(consents.c.consent_id == "CNS-ORDER-1")
                           .values(revoked_at="2026-01-01T10:00:00+05:00"))
    _send(store, "CNS-ORDER-1", later)
    assert datetime.fromisoformat(_revoked(store, "CNS-ORDER-1")) == earlier
    _send(store, "CNS-ORDER-1", None)                                              # a copy without the revocation
    assert datetime.fromisoformat(_revoked(store, "CNS-ORDER-1")) == earlier


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(MOMENTS, OFFSETS), min_size=1, max_size=4))
def test_a_revocation_resent_in_any_utc_offset_only_ever_moves_earlier(one_record_store, sent):
    store, consent_id = one_record_store, f"CNS-P-{uuid.uuid4().hex[:10]}"
    times = [moment.replace(tzinfo=offset) for moment, offset in sent]
    for when in times:
        _send(store, consent_id, when)
    assert datetime.fromisoformat(_revoked(store, consent_id)) == min(times)


def test_every_stored_item_and_consent_time_is_utc_text_of_one_width(county, tmp_path):
    store = open_store(str(tmp_path / "u.db")).create()
    ingest(store, [county / "records.csv", county / "context_items.csv", county / "consents.csv"], MODEL)
    with store.engine.connect() as connection:
        stored = [v for table, names in ((context_items, ("observed_at", "last_verified_at", "review_due", "expires_at")),
                                         (consents, ("valid_from", "valid_until", "revoked_at", "signed_at")))
                  for row in connection.execute(select(*[table.c[n] for n in names])) for v in row if v is not None]
    assert stored and all(re.match(UTC_TEXT, v) for v in stored), [v for v in stored if not re.match(UTC_TEXT, v)][:3]


def test_a_time_with_no_utc_equivalent_rejects_the_load_at_its_line_and_column(county, tmp_path):
    store = open_store(str(tmp_path / "r.db")).create()
    frame = pd.read_csv(county / "consents.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "valid_until"] = "9999-12-31T23:00:00-05:00"
    bad = tmp_path / "consents.csv"
    frame.to_csv(bad, index=False)
    with pytest.raises(IngestError) as caught:
        ingest(store, [county / "records.csv", bad], MODEL)
    assert f"{bad}:2:{list(frame.columns).index('valid_until') + 1}: valid_until:" in str(caught.value)
    assert _counts(store)["consents"] == 0
