"""`briefing ingest` of a county (its records, context items and consents) into an empty store, on SQLite and on
PostgreSQL.

    python -m evaluation.bench ingest100k
    python -m evaluation.bench ingest1m

Each load runs as a child process (wall time and peak RSS of that process alone) and reports where its
time went from the summary it prints (`seconds`: validate, link, write). PostgreSQL is measured on the
database named by `BRIEFING_BENCH_POSTGRES` (a SQLAlchemy URL of a database the benchmark may empty: every
table of the store is dropped first); without it, that row says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from api.service.store import metadata, open_store
from evaluation.bench.child import BRIEFING, run_child, synth_county

POSTGRES = "BRIEFING_BENCH_POSTGRES"


def bench_ingest(work: Path, records: int, seed: int) -> dict:
    county = synth_county(work, records, seed)
    result = {"figure": f"ingest_{records}", "county": str(county), "stores": {}}
    for kind, db in (("sqlite", _empty_sqlite(work / f"ingest-{records}.db")), ("postgresql", _empty_postgres())):
        if db is None:
            result["stores"][kind] = {"skipped": f"set {POSTGRES} to a database the benchmark may empty"}
            continue
        summary = work / f"ingest-{records}-{kind}.json"
        files = [str(county / name) for name in ("records.csv", "context_items.csv", "consents.csv")]
        wall, peak = run_child(BRIEFING + ["ingest", "--db", db, "--quiet", *files], stdout=summary)
        printed = json.loads(summary.read_text())
        result["stores"][kind] = {"records": printed["records"], "context_items": printed["context_items"],
                                  "consents": printed["consents"], "linking": printed["linking"],
                                  "seconds": {**printed["seconds"], "total": round(wall, 1)},
                                  "peak_rss_gb": round(peak, 2)}
    result["targets"] = {"write_seconds": "<= 60 on each store", "total": "<= link + 60 s",
                         "peak_rss_gb": "<= the link's peak + 1 GB"}
    return result


def bench_ingest100k(work: Path) -> dict:
    return bench_ingest(work, 100_000, 101)


def bench_ingest1m(work: Path) -> dict:
    return bench_ingest(work, 1_000_000, 202)


def _empty_sqlite(path: Path) -> str:
    for leftover in path.parent.glob(path.name + "*"):       # the database, its WAL and its audit key and witness
        leftover.unlink()
    return str(path)


def _empty_postgres() -> str | None:
    url = os.environ.get(POSTGRES, "").strip()
    if not url:
        return None
    store = open_store(url)
    metadata.drop_all(store.engine)
    store.engine.dispose()
    return url
