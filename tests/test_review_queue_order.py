"""The review queue puts the pairs in order from their own columns and joins only a page's worth
(api.review.queue.entries): every page, and the count, is what the queue's definition gives, worked out here
from the generated store alone, under every filter."""

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
    decision_lost: bool = False    # decided, but its decision row is gone


pairs = st.builds(Pair, st.integers(0, 7), st.integers(0, 7), st.sampled_from(PROBABILITIES),
                  st.sampled_from(["batch_band", "held_apart", "new_record"]), st.sampled_from(CREATED),
                  st.sampled_from([None, None, "match", "not_a_match", "unsure"]), st.booleans())
# Each filter is off more often than on, so that most generated queues hold several pairs to put in order.
filters = st.builds(review_queue.QueueFilters,
                    reason=st.sampled_from([None, None, None, "batch_band", "held_apart", "new_record"]),
                    agency=st.sampled_from([None, None, None, *AGENCIES]),
                    min_probability=st.sampled_from([None, None, 0.3, 0.5]),
                    max_probability=st.sampled_from([None, None, 0.7, 0.9]),
                    status=st.sampled_from(["open", "open", "all", "all", "decided", "unsure"]))


def _store(stored: list[int], person_of: dict[int, int], agency_of: dict[int, int], queued: list[Pair],
           recent: list[int], stale: list[int]):
    """The store, and the pairs as queued (pair id, pair), in the order their ids were given."""
    store = open_store("sqlite://").create()
    listed = []
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
                decision_id = 10_000 + len(keys) if pair.decision_lost else connection.execute(
                    insert(review_decisions).values(record_id_l=key[0], record_id_r=key[1], decision=pair.decision,
                                                    reviewer="st-1", created_at=CREATED[1])).inserted_primary_key[0]
            pair_id = connection.execute(insert(review_pairs).values(
                pair_key="\x1f".join(key), record_id_l=RECORDS[pair.left], record_id_r=RECORDS[pair.right],
                match_probability=pair.probability, reason=pair.reason,
                detail="given name" if pair.reason == "held_apart" else None,
                status="open" if pair.decision is None else "decided", decision_id=decision_id,
                created_at=pair.created_at, updated_at=pair.created_at)).inserted_primary_key[0]
            listed.append((pair_id, pair))
        # Incident look-ups name candidates by person and record; a stale one (a month old) does not count. The
        # log is appended in time order, the older first.
        for candidates, at in ((stale, NOW - timedelta(days=30)), (recent, NOW - timedelta(days=1))):
            if candidates:
                append(connection, "briefing", {"candidates": [
                    {"person_id": PERSONS[i % len(PERSONS)], "record_id": RECORDS[i], "grade": "possible"}
                    for i in candidates]}, at=at)
    return store, listed


def _expected(listed, stored, person_of, agency_of, recent, chosen: review_queue.QueueFilters) -> tuple[list[int], set[int]]:
    """The queue by its definition, from the generated data alone: the pair ids in priority order, and those of
    them that touch a person or record of a recent incident."""
    recent_records = set(recent)
    recent_persons = {i % len(PERSONS) for i in recent}

    def shown(pair: Pair) -> bool:
        live = None if pair.decision is None or pair.decision_lost else pair.decision
        return (pair.left in stored and pair.right in stored
                and {"open": pair.decision is None, "decided": pair.decision is not None,
                     "unsure": live == "unsure", "all": True}[chosen.status]
                and chosen.reason in (None, pair.reason)
                and chosen.agency in (None, *(AGENCIES[agency_of.get(i, 0)] for i in (pair.left, pair.right)))
                and (chosen.min_probability is None or pair.probability >= chosen.min_probability)
                and (chosen.max_probability is None or pair.probability <= chosen.max_probability))

    def touched(pair: Pair) -> bool:
        return any(i in recent_records or (i in person_of and person_of[i] in recent_persons)
                   for i in (pair.left, pair.right))

    queued = [(pair_id, pair) for pair_id, pair in listed if shown(pair)]
    ordered = sorted(queued, key=lambda item: (not touched(item[1]), 0.0 if item[1].reason == "held_apart"
                                               else abs(item[1].probability - 0.5), item[1].created_at, item[0]))
    return [pair_id for pair_id, _ in ordered], {pair_id for pair_id, pair in queued if touched(pair)}


@settings(max_examples=200, deadline=None)
@given(stored=st.lists(st.integers(0, 7), min_size=2, max_size=8, unique=True),
       persons=st.lists(st.sampled_from([None, 0, 1, 2, 3]), min_size=8, max_size=8),
       agency_of=st.dictionaries(st.integers(0, 7), st.integers(0, 2)),
       queued=st.lists(pairs, max_size=16), recent=st.lists(st.integers(0, 7), min_size=1, max_size=3),
       stale=st.lists(st.integers(0, 7), max_size=2), chosen=filters, limit=st.integers(-2, 6),
       offset=st.integers(0, 9), window=st.integers(1, 4))
def test_every_queue_page_is_the_slice_of_the_whole_queue_in_priority_order(
        stored, persons, agency_of, queued, recent, stale, chosen, limit, offset, window):
    person_of = {i: person for i, person in enumerate(persons) if person is not None}     # None: no person yet
    store, listed = _store(stored, person_of, agency_of, queued, recent, stale)
    whole, recently = _expected(listed, stored, person_of, agency_of, recent, chosen)
    with store.engine.connect() as connection, patch.object(review_queue, "PAGE_WINDOW", window):
        page, total = review_queue.entries(connection, chosen, limit, offset, NOW)
        assert [entry.pair_id for entry in page] == whole[offset: offset + max(limit, 0)]
        assert total == len(whole)
        assert [entry.recent_incident for entry in page] == [entry.pair_id in recently for entry in page]
        first_open, _ = _expected(listed, stored, person_of, agency_of, recent, review_queue.QueueFilters())
        assert review_queue.next_open_pair(connection, NOW) == (first_open[0] if first_open else None)
