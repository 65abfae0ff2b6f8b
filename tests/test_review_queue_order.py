"""The review queue's pages read a window at a time (api.review.queue.page): every page is exactly the slice of
the whole queue, sorted by priority, that the queue's definition gives, under every filter."""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from api.review import queue as review_queue
from api.service.audit import append
from api.service.store import clusters, open_store, records, review_decisions, review_pairs

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=timezone.utc)
RECORDS = [f"r{i}" for i in range(8)]
PERSONS = ["p0", "p1", "p2", "p3"]
AGENCIES = ["METRO_PD", "COUNTY_EMS", "COUNTY_BH"]
# A few values each, so that pairs tie on doubt and on age and the later keys decide.
PROBABILITIES = [0.1, 0.3, 0.5, 0.7, 0.9, 0.42, 0.58]
CREATED = ["2026-12-01T00:00:00+00:00", "2026-12-02T00:00:00+00:00", "2026-12-02T00:00:00.500000+00:00"]


@dataclass
class Pair:
    left: int
    right: int
    probability: float
    reason: str
    created_at: str
    decision: str | None           # None: open


pairs = st.builds(Pair, st.integers(0, 7), st.integers(0, 7), st.sampled_from(PROBABILITIES),
                  st.sampled_from(["batch_band", "held_apart", "new_record"]), st.sampled_from(CREATED),
                  st.sampled_from([None, None, "match", "not_a_match", "unsure"]))
filters = st.builds(review_queue.QueueFilters, reason=st.sampled_from([None, "batch_band", "held_apart", "new_record"]),
                    agency=st.sampled_from([None, *AGENCIES]), min_probability=st.sampled_from([None, 0.3, 0.5]),
                    max_probability=st.sampled_from([None, 0.7, 0.9]), status=st.sampled_from(review_queue.STATUSES))


def _store(stored: list[int], person_of: dict[int, int], agency_of: dict[int, int], queued: list[Pair],
           recent: list[int], stale: list[int]):
    store = open_store("sqlite://").create()
    with store.begin() as connection:
        for i in stored:
            connection.execute(insert(records).values(record_id=RECORDS[i], agency=AGENCIES[agency_of.get(i, 0)],
                                                      ingested_at=CREATED[0]))
            if i in person_of:
                connection.execute(insert(clusters).values(record_id=RECORDS[i], person_id=PERSONS[person_of[i]]))
        keys = set()
        for pair in queued:
            key = tuple(sorted((RECORDS[pair.left], RECORDS[pair.right])))
            if pair.left == pair.right or key in keys:
                continue
            keys.add(key)
            decision_id = None
            if pair.decision is not None:
                decision_id = connection.execute(insert(review_decisions).values(
                    record_id_l=key[0], record_id_r=key[1], decision=pair.decision, reviewer="st-1",
                    created_at=CREATED[1])).inserted_primary_key[0]
            connection.execute(insert(review_pairs).values(
                pair_key="\x1f".join(key), record_id_l=RECORDS[pair.left], record_id_r=RECORDS[pair.right],
                match_probability=pair.probability, reason=pair.reason,
                detail="given name" if pair.reason == "held_apart" else None,
                status="open" if decision_id is None else "decided", decision_id=decision_id,
                created_at=pair.created_at, updated_at=pair.created_at))
        # Incident look-ups name candidates by person and record; a stale one (a month old) does not count.
        for candidates, at in ((recent, NOW - timedelta(days=1)), (stale, NOW - timedelta(days=30))):
            if candidates:
                append(connection, "briefing", {"candidates": [
                    {"person_id": PERSONS[i % len(PERSONS)], "record_id": RECORDS[i], "grade": "possible"}
                    for i in candidates]}, at=at)
    return store


def _whole_queue_sorted(connection, filters: review_queue.QueueFilters) -> list:
    """The queue by its definition: every row under the filters, as an entry, sorted by priority."""
    rows = connection.execute(review_queue._statement(filters)).all()
    recent = review_queue.recent_incidents(connection, NOW)
    return sorted((review_queue._entry(row, recent, NOW) for row in rows), key=review_queue._priority)


@settings(max_examples=150, deadline=None)
@given(stored=st.lists(st.integers(0, 7), min_size=2, max_size=8, unique=True),
       person_of=st.dictionaries(st.integers(0, 7), st.integers(0, 3)),
       agency_of=st.dictionaries(st.integers(0, 7), st.integers(0, 2)),
       queued=st.lists(pairs, max_size=14), recent=st.lists(st.integers(0, 7), max_size=3),
       stale=st.lists(st.integers(0, 7), max_size=2), chosen=filters, limit=st.integers(0, 6),
       offset=st.integers(0, 9), window=st.integers(1, 4))
def test_every_queue_page_is_the_slice_of_the_whole_queue_in_priority_order(
        stored, person_of, agency_of, queued, recent, stale, chosen, limit, offset, window):
    store = _store(stored, person_of, agency_of, queued, recent, stale)
    with store.engine.connect() as connection, patch.object(review_queue, "PAGE_WINDOW", window):
        whole = _whole_queue_sorted(connection, chosen)
        assert review_queue.page(connection, chosen, limit, offset, NOW) == whole[offset: offset + limit]
        assert review_queue.count(connection, chosen) == len(whole)
        assert review_queue.next_open_pair(connection, NOW) == next(
            (e.pair_id for e in _whole_queue_sorted(connection, review_queue.QueueFilters())), None)
