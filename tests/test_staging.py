"""SQLite bulk loads staged beside the live tables and swapped in (api.service.staging): writes made while a load
stages are kept, an erasure made meanwhile wins, a bulk load made meanwhile fails the other whole, and the
tables swapped in keep every reference and cascade the live ones had."""

import contextlib
import itertools
import math
import re
import sqlite3

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, insert, select

import api.service.staging as staging
from api.service.changes import record_change
from api.service.ingest import IngestError, ingest
from api.service.owned_upsert import upsert
from api.service.stewardship import pair_key
from api.service.store import Store, clusters, context_items, records, review_pairs
from evaluation.synth.county import generate_county
from matching.model import MatcherModel
from tests.loaded_county import loaded_county

MODEL = MatcherModel.load("models/matcher.json")
WRITTEN = {"record_id": "FEED-DURING-1", "agency": "METRO_PD", "given_name": "Wilhelmina", "family_name": "Otterburn",
           "dob": "1981-02-17", "ingested_at": "2026-12-01T00:00:00+00:00"}


@pytest.fixture()
def base(tmp_path):
    db, store = loaded_county(tmp_path / "base", 120, 5)
    generate_county(500, 6, tmp_path / "more", progress=False)
    frame = pd.read_csv(tmp_path / "more" / "records.csv", dtype=str, keep_default_na=False)
    frame["record_id"] = "MORE-" + frame["record_id"]
    frame.to_csv(tmp_path / "bulk.csv", index=False)
    return db, store, tmp_path / "bulk.csv", frame


@pytest.fixture()
def during_staging(monkeypatch):
    """Run a callable of the store after the live records are copied, while the load is staged, not swapped."""
    actions = []
    copy = staging._copy_live

    def copy_then_act(store, table, staged):
        longest = copy(store, table, staged)
        for action in actions:
            action(store)
        return longest

    monkeypatch.setattr(staging, "_copy_live", copy_then_act)
    monkeypatch.setattr(staging, "STAGE_ROWS", 300)          # several staging transactions even on a small load
    return actions


def _stored(store) -> dict:
    with store.engine.connect() as connection:
        rows = connection.execute(select(records.c.record_id, clusters.c.person_id).join(
            clusters, clusters.c.record_id == records.c.record_id, isouter=True)).all()
    return dict(rows)


def _tables(db) -> set[str]:
    with sqlite3.connect(db) as connection:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_record_written_while_the_load_stages_keeps_its_row_and_person(base, during_staging):
    db, store, bulk, frame = base

    def feed_write(store):
        with store.begin() as connection:
            connection.execute(insert(records).values(**WRITTEN))
            connection.execute(insert(clusters).values(record_id=WRITTEN["record_id"], person_id="P-FEED-DURING"))
            record_change(connection, "upsert", WRITTEN["record_id"])

    during_staging.append(feed_write)
    before = _stored(store)
    summary = ingest(store, [bulk], MODEL)
    assert summary.linking == "batch" and summary.seconds["swap_lock"] >= 0
    after = _stored(store)
    assert after[WRITTEN["record_id"]] == "P-FEED-DURING"
    assert set(after) == set(before) | set(frame["record_id"]) | {WRITTEN["record_id"]}
    assert all(after.values()), "every record has a person"
    assert not {t for t in _tables(db) if t.startswith(("staged_", "retired_"))}


def test_a_load_carrying_a_record_erased_while_it_stages_is_refused_and_the_record_stays_erased(base, during_staging):
    db, store, bulk, frame = base
    erased = next(iter(_stored(store)))
    pd.concat([frame, pd.read_sql(select(records).where(records.c.record_id == erased), store.engine)
               .drop(columns=["ingested_at"])]).to_csv(bulk, index=False)

    def erase(store):
        with store.begin() as connection:
            connection.execute(delete(records).where(records.c.record_id == erased))
            record_change(connection, "delete", erased)

    during_staging.append(erase)
    with pytest.raises(IngestError, match="was written or deleted while the load was being staged"):
        ingest(store, [bulk], MODEL)
    with store.engine.connect() as connection:
        assert connection.execute(select(records).where(records.c.record_id == erased)).first() is None
        assert connection.execute(select(clusters).where(clusters.c.record_id == erased)).first() is None


def test_a_second_bulk_load_while_one_stages_is_refused_whole_and_the_first_goes_in(base, during_staging, tmp_path):
    db, store, bulk, frame = base
    generate_county(450, 8, tmp_path / "other", progress=False)
    other = pd.read_csv(tmp_path / "other" / "records.csv", dtype=str, keep_default_na=False)
    other["record_id"] = "OTHER-" + other["record_id"]
    other.to_csv(tmp_path / "other.csv", index=False)
    refused = []

    def second_load(store):
        with pytest.raises(IngestError, match="another bulk load is being written") as caught:
            ingest(store, [tmp_path / "other.csv"], MODEL)
        refused.append(str(caught.value))

    during_staging.append(second_load)
    ingest(store, [bulk], MODEL)
    stored = _stored(store)
    assert refused and set(frame["record_id"]) <= set(stored) and not set(other["record_id"]) & set(stored)


def test_a_rebuild_written_while_a_load_stages_fails_the_load_whole(base, during_staging):
    db, store, bulk, frame = base
    before = _stored(store)

    def foreign_bulk_load(store):
        with store.begin() as connection:
            record_change(connection, "rebuild")

    during_staging.append(foreign_bulk_load)
    with pytest.raises(IngestError, match="another bulk load was written"):
        ingest(store, [bulk], MODEL)
    assert _stored(store) == before


def test_the_swapped_tables_keep_every_reference_and_cascade(base):
    db, store, bulk, frame = base
    ingest(store, [bulk], MODEL)
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        for table in ("clusters", "context_items", "consents"):
            assert {row[2] for row in connection.execute(f"PRAGMA foreign_key_list({table})")} == {"records"}
        assert connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'clusters' "
                                  "AND sql LIKE '%person_id%'").fetchone()[0] == 1
    with store.engine.connect() as connection:
        record_id = connection.execute(select(context_items.c.record_id).limit(1)).scalar_one()
    with store.begin() as connection:
        connection.execute(delete(records).where(records.c.record_id == record_id))
    with store.engine.connect() as connection:
        assert connection.execute(select(clusters).where(clusters.c.record_id == record_id)).first() is None
        assert connection.execute(select(context_items).where(context_items.c.record_id == record_id)).first() is None


def test_a_failed_load_leaves_no_staged_copy_and_one_killed_is_cleaned_by_the_next(base, monkeypatch):
    db, store, bulk, frame = base

    def failing(store, table, staged, rows):
        raise OSError("disk full")

    real_write, real_drop = staging._write_rows, staging._drop_leftovers
    monkeypatch.setattr(staging, "_write_rows", failing)
    with pytest.raises(OSError):
        ingest(store, [bulk], MODEL)
    assert not {t for t in _tables(db) if t.startswith(("staged_", "retired_"))}, "a copy of the records is left"

    monkeypatch.setattr(staging, "_drop_leftovers", lambda store: None)      # killed: no cleanup ran
    with pytest.raises(OSError):
        ingest(store, [bulk], MODEL)
    assert {t for t in _tables(db) if t.startswith("staged_")}
    monkeypatch.setattr(staging, "_write_rows", real_write)
    monkeypatch.setattr(staging, "_drop_leftovers", real_drop)
    ingest(store, [bulk], MODEL)
    assert not {t for t in _tables(db) if t.startswith(("staged_", "retired_"))}
    assert set(frame["record_id"]) <= set(_stored(store))


def test_a_staged_load_never_holds_the_write_lock_twice_without_leaving_it_to_others_between(base, monkeypatch):
    """Every two write transactions of a load, staging turns, the swap and the drops after it alike, have a pause
    between them: back to back, a briefing waiting for the lock polls past the moment between them (SQLite's busy
    handler) and waits for both."""
    db, store, bulk, frame = base
    events: list[str] = []
    begin, pause = Store.begin_unchecked, staging._yield_to_writers

    @contextlib.contextmanager
    def recorded(self):
        events.append("begin")
        with begin(self) as connection:
            yield connection
        events.append("commit")

    monkeypatch.setattr(Store, "begin_unchecked", recorded)
    monkeypatch.setattr(staging, "_yield_to_writers", lambda watcher: events.append("pause") or pause(watcher))
    monkeypatch.setattr(staging, "STAGE_ROWS", 300)          # several staging transactions even on a small load
    with sqlite3.connect(db) as connection:                  # leftovers of a killed load: drops before the load too
        connection.execute("CREATE TABLE retired_records_0badcafe (record_id TEXT PRIMARY KEY)")
        connection.execute("CREATE INDEX retired_at_0badcafe ON retired_records_0badcafe (record_id)")
    ingest(store, [bulk], MODEL)
    transactions = events.count("begin")
    assert transactions >= 8
    assert events == ["pause", "begin", "commit"] * transactions      # a pause before each, none inside one
    assert set(frame["record_id"]) <= set(_stored(store))


def test_a_retired_table_is_emptied_in_turns_before_it_is_dropped(base, monkeypatch):
    """Dropping a table frees all its pages in one transaction (1.2 s of write lock for a million records): every
    table a load drops, retired or left staged, has had its rows deleted in turns first."""
    db, store, bulk, frame = base
    dropped, deletes = {}, []

    @event.listens_for(store.engine, "before_cursor_execute")
    def count_rows(connection, cursor, statement, parameters, context, executemany):
        table = re.fullmatch(r'DROP TABLE IF EXISTS "(\w+)"', statement)
        if table:
            (dropped[table[1]],) = cursor.connection.execute(f'SELECT count(*) FROM "{table[1]}"').fetchone()
        elif statement.startswith("DELETE FROM \"retired_records_"):
            deletes.append(statement)

    monkeypatch.setattr(staging, "STAGE_ROWS", 100)
    retiring = len(_stored(store))
    ingest(store, [bulk], MODEL)
    event.remove(store.engine, "before_cursor_execute", count_rows)
    assert any(name.startswith("retired_records_") for name in dropped)
    assert set(dropped.values()) == {0}
    assert len(deletes) >= math.ceil(retiring / 100) >= 2       # at most `STAGE_ROWS` a turn
    assert not {name for name in _tables(db) if name.startswith(("retired_", "staged_"))}


def _pair_keys(store) -> list[str]:
    with store.engine.connect() as connection:
        return connection.execute(select(review_pairs.c.pair_key).order_by(review_pairs.c.pair_id)).scalars().all()


def test_a_staged_load_opens_its_review_pairs_in_pair_key_order(base, during_staging):
    db, store, bulk, frame = base
    before = set(_pair_keys(store))
    summary = ingest(store, [bulk], MODEL)
    opened = [key for key in _pair_keys(store) if key not in before]
    assert summary.review_pairs
    assert set(opened) == {pair_key(p["record_id_l"], p["record_id_r"]) for p in summary.review_pairs} - before
    assert opened == sorted(opened)


def test_a_record_erased_while_the_load_stages_is_gone_after_the_swap_with_its_review_pairs(base, during_staging):
    db, store, bulk, frame = base
    erased = next(iter(_stored(store)))

    def erase(store):
        with store.begin() as connection:
            connection.execute(delete(records).where(records.c.record_id == erased))
            record_change(connection, "delete", erased)

    during_staging.append(erase)
    ingest(store, [bulk], MODEL)
    assert erased not in _stored(store) and set(frame["record_id"]) <= set(_stored(store))
    with store.engine.connect() as connection:
        assert not connection.execute(select(review_pairs).where(
            (review_pairs.c.record_id_l == erased) | (review_pairs.c.record_id_r == erased))).first()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []


# --------------------------------------------------------------------------- items and consents staged too


@pytest.fixture()
def with_items(base, tmp_path):
    """The bulk load of `base` with the second county's items and consents (ids prefixed, as its records)."""
    db, store, bulk, frame = base
    files = [bulk]
    for name, key in (("context_items", "item_id"), ("consents", "consent_id")):
        rows = pd.read_csv(tmp_path / "more" / f"{name}.csv", dtype=str, keep_default_na=False)
        rows[key] = "MORE-" + rows[key]
        rows["record_id"] = "MORE-" + rows["record_id"]
        if name == "context_items":
            rows["consent_id"] = rows["consent_id"].where(rows["consent_id"] == "", "MORE-" + rows["consent_id"])
        rows.to_csv(tmp_path / f"{name}-more.csv", index=False)
        files.append(tmp_path / f"{name}-more.csv")
    return db, store, files


@pytest.fixture()
def after_items_staged(monkeypatch):
    """Run a callable of the store once the live items and consents are copied and the load's first are staged."""
    actions = []
    write = staging._write_owned

    def write_then_act(*args):
        longest = write(*args)
        while actions:
            actions.pop(0)(args[0])
        return longest

    monkeypatch.setattr(staging, "_write_owned", write_then_act)
    monkeypatch.setattr(staging, "OWNED_STAGE_ROWS", 200)     # several staging transactions even on a small load
    return actions


def _items(store) -> dict[str, tuple]:
    with store.engine.connect() as connection:
        return {row.item_id: (row.record_id, row.text) for row in connection.execute(select(context_items))}


def _write_item(store, item_id: str, record_id: str, text: str) -> None:
    with store.begin() as connection:
        upsert(connection, context_items, "item_id", [{"item_id": item_id, "record_id": record_id, "category": "other",
                                                        "text": text, "status": "active", "updated_at": "2026-12-01"}])


def test_a_load_with_items_stages_them_and_keeps_item_writes_withdrawals_and_erasures_made_meanwhile(
        with_items, after_items_staged):
    db, store, files = with_items
    before = _items(store)
    kept, withdrawn = sorted(before)[:2]
    erased_record = before[sorted(before)[-1]][0]

    def others_write(store):
        _write_item(store, kept, before[kept][0], "rewritten by a feed while the load staged")
        _write_item(store, "FEED-NEW-ITEM", before[kept][0], "new from a feed while the load staged")
        with store.begin() as connection:
            connection.execute(delete(context_items).where(context_items.c.item_id == withdrawn))
            connection.execute(delete(records).where(records.c.record_id == erased_record))
            record_change(connection, "delete", erased_record)

    after_items_staged.append(others_write)
    summary = ingest(store, files, MODEL)
    assert summary.linking == "batch" and summary.context_items > 200 and summary.consents > 0
    after = _items(store)
    assert after[kept][1] == "rewritten by a feed while the load staged"
    assert "FEED-NEW-ITEM" in after and withdrawn not in after
    assert not [i for i, (record_id, _) in after.items() if record_id == erased_record]
    assert {i for i in after if i.startswith("MORE-")} == {f"MORE-{i}" for i in pd.read_csv(
        files[1].parent / "more" / "context_items.csv", dtype=str)["item_id"]}
    assert not {t for t in _tables(db) if t.startswith(("staged_", "retired_"))}
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 0
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    _write_item(store, "FEED-AFTER", before[kept][0], "written after the load")   # no trigger is left to fail it
    assert "FEED-AFTER" in _items(store)


def test_a_load_whose_own_item_is_written_while_it_stages_is_refused_whole(with_items, after_items_staged):
    db, store, files = with_items
    own = "MORE-" + pd.read_csv(files[1].parent / "more" / "context_items.csv", dtype=str)["item_id"].iloc[0]
    first_record = "MORE-" + pd.read_csv(files[1].parent / "more" / "context_items.csv", dtype=str)["record_id"].iloc[0]
    before = _stored(store)
    after_items_staged.append(lambda store: _write_item(store, own, before and next(iter(before)), "a feed's copy"))
    with pytest.raises(IngestError, match=f"context_items '{own}'.*was written or withdrawn while the load was being staged"):
        ingest(store, files, MODEL)
    assert _stored(store) == before and first_record not in _stored(store)
    assert _items(store)[own][1] == "a feed's copy"
    assert not {t for t in _tables(db) if t.startswith(("staged_", "retired_"))}


def test_a_staged_load_that_skipped_the_checks_still_never_moves_an_item_to_another_agency(with_items, monkeypatch):
    """The last line holds on the staged path too: the staged upsert is conditional on the agency."""
    import api.service.ingest as ingest_module

    db, store, files = with_items
    with store.engine.connect() as connection:
        victim = connection.execute(select(context_items.c.item_id, records.c.agency).join(
            records, records.c.record_id == context_items.c.record_id).limit(1)).one()
    more = pd.read_csv(files[0], dtype=str, keep_default_na=False)
    thief = more.loc[more["agency"] != victim.agency, "record_id"].iloc[0]
    items = pd.read_csv(files[1], dtype=str, keep_default_na=False)
    items.loc[0, ["item_id", "record_id"]] = [victim.item_id, thief]
    items.to_csv(files[1], index=False)
    monkeypatch.setattr(ingest_module, "_ownership_problems", lambda *args, **kwargs: ([], {}, frozenset()))
    before_items, before_records = _items(store), _stored(store)
    with pytest.raises(IngestError, match=f"'{victim.item_id}' would move to a record of another agency"):
        ingest(store, files, MODEL)
    assert _items(store) == before_items and _stored(store) == before_records
    assert not {t for t in _tables(db) if t.startswith(("staged_", "retired_"))}


def _load_moving_a_bare_record(store, bulk, frame, with_the_load: bool):
    """Write to `bulk` a load that gives a stored record with nothing hanging on it to another agency (allowed);
    the record's id and its agency before."""
    with store.engine.connect() as connection:
        hung = set(connection.execute(select(context_items.c.record_id)).scalars())
        live = pd.read_sql(select(records), connection)
    bare = live[~live["record_id"].isin(hung)].iloc[0]
    moved = bare.drop(labels=["ingested_at"]).copy()
    moved["agency"] = next(a for a in live["agency"].unique() if a != bare["agency"])
    rows = [frame, moved.to_frame().T] if with_the_load else [moved.to_frame().T]
    pd.concat(rows).fillna("").to_csv(bulk, index=False)
    return bare["record_id"], bare["agency"]


def _agency_under(store, item_id: str) -> str:
    with store.engine.connect() as connection:
        return connection.execute(select(records.c.agency).join(context_items, context_items.c.record_id == records.c.record_id)
                                  .where(context_items.c.item_id == item_id)).scalar_one()


def test_an_item_attached_while_a_staged_load_gives_its_record_to_another_agency_refuses_the_load(base, during_staging):
    db, store, bulk, frame = base
    record_id, agency = _load_moving_a_bare_record(store, bulk, frame, with_the_load=True)
    during_staging.append(lambda store: _write_item(store, "A-ITEM-ON-X", record_id, "the first agency's item"))
    with pytest.raises(IngestError, match=f"'A-ITEM-ON-X' was attached to record '{record_id}' while the load ran"):
        ingest(store, [bulk], MODEL)
    assert _agency_under(store, "A-ITEM-ON-X") == agency


def test_an_item_attached_while_a_small_load_gives_its_record_to_another_agency_refuses_the_load(base, monkeypatch):
    """The same race on the one-transaction path: the item is attached between the load's checks and its write."""
    import api.service.ingest as ingest_module

    db, store, bulk, frame = base
    record_id, agency = _load_moving_a_bare_record(store, bulk, frame, with_the_load=False)
    link = ingest_module._link

    def link_while_a_feed_writes(store, *args):
        _write_item(store, "A-ITEM-ON-X", record_id, "the first agency's item")
        return link(store, *args)

    monkeypatch.setattr(ingest_module, "_link", link_while_a_feed_writes)
    with pytest.raises(IngestError, match="while the load ran, and the load gives that record to another agency"):
        ingest(store, [bulk], MODEL)
    assert _agency_under(store, "A-ITEM-ON-X") == agency


@pytest.mark.parametrize("bulk", [True, False], ids=["staged load", "small load"])
def test_an_item_deleted_while_a_load_links_is_not_brought_back_by_the_load(with_items, monkeypatch, tmp_path, bulk):
    """An erasure or a purge made after the load's checks wins: the load that resends the item is refused whole."""
    import api.service.ingest as ingest_module

    db, store, files = with_items
    with store.engine.connect() as connection:
        stored = connection.execute(select(context_items).limit(1)).mappings().one()
    columns = list(pd.read_csv(files[1], nrows=0).columns)
    resent = pd.DataFrame([{c: stored.get(c) or "" for c in columns}])
    items = pd.concat([pd.read_csv(files[1], dtype=str, keep_default_na=False), resent]) if bulk else resent
    items.to_csv(files[1], index=False)
    link = ingest_module._link

    def link_while_it_is_erased(store, *args):
        with store.begin() as connection:
            connection.execute(delete(context_items).where(context_items.c.item_id == stored["item_id"]))
        return link(store, *args)

    monkeypatch.setattr(ingest_module, "_link", link_while_it_is_erased)
    with pytest.raises(IngestError, match=f"'{stored['item_id']}' .*was deleted while the load ran"):
        ingest(store, files if bulk else [files[1]], MODEL)
    assert stored["item_id"] not in _items(store)


class _FakeClock:
    """`time` as `_in_turns` reads it: a clock that moves only when rows are written or the load pauses."""

    def __init__(self):
        self.now, self.pauses = 0.0, []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 50_000), most=st.integers(1, 60_000), seconds_per_row=st.floats(1e-7, 1e-3))
def test_staging_turns_hold_the_lock_about_a_turn(total, most, seconds_per_row):
    clock, turns = _FakeClock(), []

    def write(connection, rows: int) -> bool:
        rows = min(rows, total - sum(turns))
        turns.append(rows)
        clock.now += rows * seconds_per_row
        return sum(turns) == total

    @contextlib.contextmanager
    def turn(store):
        clock.now += staging.LONGEST_PAUSE_SECONDS            # the pause before a turn is not the turn's
        yield None, clock.now

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(staging, "time", clock)
        patch.setattr(staging, "_staging", turn)
        longest = staging._in_turns(None, most, write)
    assert sum(turns) == total and all(0 < rows <= most for rows in turns)
    held = [rows * seconds_per_row for rows in turns]
    assert longest == pytest.approx(max(held))
    assert all(h <= max(staging.TURN_SECONDS, seconds_per_row) * (1 + 1e-9) for h in held[1:])   # the first one probes


@settings(max_examples=200, deadline=None)
@given(commits=st.lists(st.booleans(), min_size=20, max_size=20))
def test_a_staging_pause_lasts_while_others_commit_and_no_longer_than_its_bound(commits):
    """`commits[k]`: whether another connection committed during the k-th short pause."""
    clock, versions = _FakeClock(), iter(itertools.accumulate([0] + [int(c) for c in commits]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(staging, "time", clock)
        patch.setattr(staging, "_data_version", lambda watcher: next(versions))
        staging._yield_to_writers(None)
    quiet = commits.index(False) if False in commits else len(commits)
    expected = min(quiet + 1, math.ceil(staging.LONGEST_PAUSE_SECONDS / staging.PAUSE_SECONDS - 1e-9))
    assert clock.pauses == [staging.PAUSE_SECONDS] * expected
