"""Ranking latency: one person's items (up to 200) ranked in-process, rules + model.

    python -m evaluation.bench rank200

Items are real synthetic context items (a 38,800-person county, seed 1), 200 at a time as if one
person held them all, ranked for a rotating call type with the committed ranker when
`models/ranker.json` exists (rules only otherwise, and the figure says so).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.bench.child import REPO, synth_county
from scoring.item import CallType, ContextItem
from scoring.rank import rank
from scoring.ranker import ItemScorecard
from scoring.rules import Rules

ROUNDS = 2_000
PER_PERSON = 200
CALL_TYPES = tuple(c.value for c in (CallType.welfare_check, CallType.mental_health_crisis, CallType.domestic,
                                      CallType.overdose, CallType.medical, CallType.disturbance))   # the rotation benchmarked


def bench_rank200(work: Path) -> dict:
    """Ranking latency of one person's 200 items, rules + the committed scorecard (module doc)."""
    county = synth_county(work, 100_000, 1)
    frame = pd.read_csv(county / "context_items.csv", dtype=str, keep_default_na=False)
    agency = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False, usecols=["record_id", "agency"])
    frame = frame.merge(agency.rename(columns={"agency": "record_agency"}), on="record_id", how="left")
    items = [ContextItem(**row) for row in frame.head(PER_PERSON * 50).to_dict("records")]
    rules = Rules.load()
    model = _model()
    now = pd.Timestamp("2026-03-01T12:00:00Z").to_pydatetime()
    rng = np.random.default_rng(0)
    gc.collect()
    gc.freeze()           # as the service does after loading: long-lived items are not rescanned by the GC
    latencies = []
    for k in range(ROUNDS):
        chosen = [items[i] for i in rng.choice(len(items), PER_PERSON, replace=False)]
        started = time.perf_counter()
        rank(chosen, CALL_TYPES[k % len(CALL_TYPES)], "certain", now, rules, model)
        latencies.append(time.perf_counter() - started)
    ms = np.array(latencies[100:]) * 1000
    return {"figure": "rank_200_items", "items_per_person": PER_PERSON, "rounds": ROUNDS - 100,
            "model": "models/ranker.json" if model is not None else "none (rules only)",
            "latency_ms": {p: round(float(np.percentile(ms, q)), 3) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))},
            "target": "p99 <= 1 ms"}


def _model():
    path = REPO / "models" / "ranker.json"
    if not path.exists():
        return None
    return ItemScorecard.load(path)
