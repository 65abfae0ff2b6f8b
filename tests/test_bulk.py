"""The store's bulk path: rows as positional parameters, whole-row replacement, missing columns as NULL; the
records a load's items hang on, found the same whichever way they are looked up."""

from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from api.service.bulk import bulk_upsert, row_values
from api.service.owned_upsert import owners_of, upsert
from api.service.store import clusters, context_items, open_store, records

NAMES = ("a", "b", "c")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(NAMES + ("extra",)), st.one_of(st.none(), st.text(max_size=3))),
                max_size=8),
       st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
def test_row_values_are_each_rows_values_in_order_with_none_for_a_missing_name(rows, names):
    assert row_values(names, rows) == [tuple(row.get(name) for name in names) for row in rows]


def test_a_bulk_upsert_replaces_rows_whole_and_writes_missing_columns_as_null(tmp_path):
    store = open_store(str(tmp_path / "bulk.db")).create()
    with store.begin() as connection:
        bulk_upsert(connection, records, [{"record_id": "R1", "agency": "PD", "given_name": "ANN", "ingested_at": "t0"},
                                          {"record_id": "R2", "agency": "EMS", "ingested_at": "t0"}])
        bulk_upsert(connection, clusters, [{"record_id": "R1", "person_id": "P1"}, {"record_id": "R2", "person_id": "P1"}])
    with store.begin() as connection:
        bulk_upsert(connection, records, [{"record_id": "R1", "agency": "PD", "family_name": "LEE", "ingested_at": "t1"}])
        bulk_upsert(connection, clusters, [{"record_id": "R2", "person_id": "P2"}])
    with store.engine.connect() as connection:
        stored = {r.record_id: r for r in connection.execute(select(records))}
        persons = dict(connection.execute(select(clusters.c.record_id, clusters.c.person_id)).all())
    assert (stored["R1"].given_name, stored["R1"].family_name, stored["R1"].ingested_at) == (None, "LEE", "t1")
    assert (stored["R2"].agency, stored["R2"].given_name) == ("EMS", None)
    assert persons == {"R1": "P1", "R2": "P2"}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stored=st.sets(st.sampled_from([f"I{n}" for n in range(12)])),
       asked=st.lists(st.sampled_from([f"I{n}" for n in range(16)]), unique=True))
def test_the_records_items_hang_on_are_the_same_read_whole_or_asked_for(tmp_path_factory, stored, asked):
    store = open_store(str(tmp_path_factory.mktemp("owners") / "o.db")).create()
    with store.begin() as connection:
        bulk_upsert(connection, records, [{"record_id": "R1", "agency": "PD", "ingested_at": "t"},
                                          {"record_id": "R2", "agency": "PD", "ingested_at": "t"}])
        upsert(connection, context_items, "item_id", [{c.name: None for c in context_items.columns}
                                                      | {"item_id": k, "record_id": f"R{int(k[1:]) % 2 + 1}",
                                                         "category": "communication", "updated_at": "t"} for k in stored])
    expected = {k: f"R{int(k[1:]) % 2 + 1}" for k in asked if k in stored}
    with store.engine.connect() as connection:
        asked_for = owners_of(connection, context_items, "item_id", asked)
        with patch("api.service.owned_upsert.SCAN_KEYS", -1):
            read_whole = owners_of(connection, context_items, "item_id", asked)
    store.engine.dispose()
    assert asked_for == read_whole == expected
