"""Steward review queue benchmark: a page of the queue on the 1,000,000-record store, beside reading the whole queue.

    python -m evaluation.bench review1m

The store is the one `service1m` ingests (kept in `--work`, built when missing). For every queued pair a page reads
only what puts the pair in order, then it reads the page's entries (api.review.queue.entries). The peer, timed in
the same run on the same store, is the whole queue read joined and sorted: what every page cost before. Each
figure is the median of `REPEATS` runs in this process, after one run that is not counted.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import func, select

from api.review import queue as review_queue
from api.service.store import open_store, records
from evaluation.bench.service import ingested_store

REPEATS = 5


def bench_review1m(work: Path) -> dict:
    db, ingest = ingested_store(work, 1_000_000, 202)
    store = open_store(str(db))
    now = datetime.now(timezone.utc)
    result: dict = {"figure": "review_queue_1000000", **({"ingest": ingest} if ingest else {})}
    with store.engine.connect() as connection:
        _, total = review_queue.entries(connection, limit=50, now=now)
        rarest = connection.execute(select(records.c.agency).group_by(records.c.agency)
                                    .order_by(func.count(), records.c.agency).limit(1)).scalar()
        agency, held = review_queue.QueueFilters(agency=rarest), review_queue.QueueFilters(reason="held_apart")
        timed = {
            "first_page": lambda: review_queue.entries(connection, limit=50, now=now),
            "page_at_offset_5000": lambda: review_queue.entries(connection, limit=50, offset=5000, now=now),
            "first_page_of_the_rarest_agency": lambda: review_queue.entries(connection, agency, limit=50, now=now),
            "first_page_held_apart": lambda: review_queue.entries(connection, held, limit=50, now=now),
            "next_open_pair": lambda: review_queue.next_open_pair(connection, now),
            "whole_queue_sorted (peer)": lambda: _whole_queue_sorted(connection, now),
        }
        seconds = {name: _median_seconds(run) for name, run in timed.items()}
    peer = seconds["whole_queue_sorted (peer)"]
    result.update({"open_pairs": total, "rarest_agency": rarest, "seconds_median": seconds,
                   "ratio_to_peer": {name: round(value / peer, 3) for name, value in seconds.items()}})
    return result


def _whole_queue_sorted(connection, now: datetime) -> list:
    rows = connection.execute(review_queue._statement(review_queue.QueueFilters())).all()
    recent = review_queue.recent_incidents(connection, now)
    return sorted((review_queue._entry(row, recent, now) for row in rows), key=lambda e: review_queue._order(
        not e.recent_incident, e.reason, e.match_probability, e.created_at, e.pair_id))


def _median_seconds(run: Callable[[], object]) -> float:
    run()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)
