"""`briefing ingest` of a county (its records, context items and consents) into an empty store, on SQLite and on
PostgreSQL.

    python -m evaluation.bench ingest100k
    python -m evaluation.bench ingest1m

Each load runs as a child process (wall time and peak RSS of that process alone) and reports where its
time went from the summary it prints (`seconds`: validate, link, write). The same run first links the county's
records alone with the same model (`briefing link --model`, a child process too), the peer the targets name: a
load may take at most a minute and a gigabyte more than that link (`over_link`). PostgreSQL is measured on the
database named by `BRIEFING_BENCH_POSTGRES` (a SQLAlchemy URL of a database the benchmark may empty: every
table of the store is dropped first); without it, that row says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import models
from api.service.store import metadata, open_store
from evaluation.bench.child import BRIEFING, run_child, synth_county

POSTGRES = "BRIEFING_BENCH_POSTGRES"


def bench_ingest(work: Path, records: int, seed: int) -> dict:
    county = synth_county(work, records, seed)
    result = {"figure": f"ingest_{records}", "county": str(county), "stores": {}}
    wall, peak = run_child(BRIEFING + ["link", str(county / "records.csv"), "--model", str(models.MATCHER),
                                       "--out", str(work / f"link-{records}"), "--quiet"])
    result["link_alone"] = {"seconds": round(wall, 1), "peak_rss_gb": round(peak, 2)}
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
                                  "peak_rss_gb": round(peak, 2),
                                  "over_link": {"seconds": round(wall - result["link_alone"]["seconds"], 1),
                                                "peak_rss_gb": round(peak - result["link_alone"]["peak_rss_gb"], 2)}}
    result["targets"] = {"write_seconds": "<= 60 on each store", "over_link": {"seconds": "<= 60", "peak_rss_gb": "<= 1"}}
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
