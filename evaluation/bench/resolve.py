"""Real-time resolver benchmark: index build, per-query latency, accuracy on incidents, parity.

    python -m evaluation.bench resolve100k   # 100,000-record county (seed 101)
    python -m evaluation.bench resolve1m     # 1,000,000-record county (seed 202)

The county is linked with the committed model (`briefing link --model`), then a child
process (so its memory is measured alone) indexes records + clusters, resolves every
incident of `incidents.csv`, checks match weights against the pairs Splink's `predict()`
wrote during linking, adds records through the index and resolves them, and finally times
Splink's own `predict_between` on the same model and data for up to a minute.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.bench.child import BRIEFING, REPO, run_child, synth_county
from evaluation.linkage.identifiability import CLASSES, MORE, identifiability
from evaluation.synth.incidents import incident_queries
from matching.encoding import Extras
from matching.index import YEAR_SLACK
from matching.model import MatcherModel
from matching.query import Subject, standardise_subject
from matching.record import read_records
from matching.resolve import Resolver, settle_memory
from matching.splink_internals import input_table, register_table
from matching.standardise import standardise, to_arrow
from matching.train import linker_for

PARITY_SAMPLE = 200_000
BETWEEN_SECONDS = 60.0
WARM_UP = 50


def bench_resolve(work: Path, records: int, seed: int) -> dict:
    county = synth_county(work, records, seed)
    linked = work / f"link-{records}-{seed}"
    if not (linked / "clusters.csv").exists():
        run_child(BRIEFING + ["link", str(county / "records.csv"), "--model", str(REPO / "models/matcher.json"),
                              "--out", str(linked), "--quiet"])
    out = work / f"resolve-{records}-{seed}.json"
    wall, peak = run_child([sys.executable, "-m", "evaluation.bench.resolve", str(county), str(linked), str(out)])
    result = json.loads(out.read_text())
    return {"figure": f"resolve_{records}", **result, "child_peak_rss_gb": round(peak, 2),
            "targets": {"p99_ms_at_1m": "<= 2 (p50 <= 1)", "compiled_kernel_vs_numpy": "same levels, weights to 1e-9", "index_rss_gb": "<= 2", "parity_max_abs_diff": "<= 1e-6 over >= 10,000 pairs",
                        "top1_correct": ">= 0.95", "strangers_without_certain": ">= 0.995"}}


def bench_resolve100k(work: Path) -> dict:
    return bench_resolve(work, 100_000, 101)


def bench_resolve1m(work: Path) -> dict:
    return bench_resolve(work, 1_000_000, 202)


def _rss_gb() -> float:
    import psutil          # a dev dependency (pyproject.toml), only for the benchmarks

    return psutil.Process().memory_info().rss / 2**30


def _child(county: Path, linked: Path, out: Path) -> None:
    model = MatcherModel.load(REPO / "models/matcher.json")
    result: dict = {"rss_gb_at_start": round(_rss_gb(), 3)}
    started = time.perf_counter()
    records = read_records(county / "records.csv").frame
    clusters = pd.read_csv(linked / "clusters.csv", dtype=str, keep_default_na=False)
    resolver = Resolver(model).fit(records, clusters)
    result["index_build_seconds"] = round(time.perf_counter() - started, 2)
    result["records"] = resolver.index_.n_records
    result["index_keys"] = [s.name for s in resolver.index_.specs]
    del clusters, records
    settle_memory()
    result["rss_gb_process_with_index"] = round(_rss_gb(), 3)   # the interpreter, libraries, model and index

    truth = pd.read_csv(county / "truth.csv", dtype=str, keep_default_na=False).set_index("record_id")["person_key"]
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    subjects = [Subject.model_validate(q) for q in incident_queries(incidents)]
    result["queries"], correct = _queries(resolver, subjects, incidents["person_key"].tolist(), truth)
    result["parity_with_splink_predict"] = _parity(resolver, linked / "pairs.csv")
    result["compiled_kernel_vs_numpy"] = _kernel_vs_numpy(resolver, subjects)
    std = standardise(read_records(county / "records.csv").frame)      # again, for Splink
    result["top1_by_what_the_subject_shares"] = _by_identifiability(subjects, incidents["person_key"].tolist(),
                                                                     std, truth, correct)
    result["splink_predict_between"] = _predict_between(resolver, std, subjects)   # before adding: same tf tables
    result["records_added_then_resolved"] = _add_and_resolve(resolver, subjects, incidents["person_key"].tolist())
    out.write_text(json.dumps(result, indent=2))


def _by_identifiability(subjects, person_keys, std: pd.DataFrame, truth: pd.Series, correct: list) -> dict:
    """Top-1 per class of `evaluation.linkage.identifiability`, and the share of subjects any resolver could reach."""
    classes = [c for c in identifiability(subjects, person_keys, std, truth) if c is not None]
    hits = [ok for ok, key in zip(correct, person_keys) if key]
    out = {}
    for name in CLASSES:
        mine = [ok for ok, c in zip(hits, classes) if c == name]
        out[name] = {"subjects": len(mine), "share": round(len(mine) / max(1, len(classes)), 4),
                     "top1_correct": round(sum(mine) / len(mine), 4) if mine else None}
    out["ceiling_note"] = (f"only the '{MORE}' subjects share more than a given name with their records: "
                           f"{out[MORE]['share']:.4f} of subjects with records is an upper bound for top-1")
    return out


def _queries(resolver, subjects, person_keys, truth: pd.Series) -> tuple[dict, list[bool]]:
    """Latency, statuses and top-1 over every subject; and per subject whether its top answer was right."""
    for s in subjects[:WARM_UP]:
        resolver.resolve(s)
    latencies, statuses, scored = [], Counter(), []
    top1, grades = Counter(), Counter()
    strangers = certain_strangers = 0
    correct: list[bool] = []
    for subject, key in zip(subjects, person_keys):
        t = time.perf_counter()
        res = resolver.resolve(subject)
        latencies.append(time.perf_counter() - t)
        statuses[res.status] += 1
        scored.append(res.candidates_scored)
        best = res.candidates[0] if res.candidates else None
        if key:
            both_names = subject.given_name is not None and subject.family_name is not None
            good = best is not None and truth.get(best.record_id) == key
            correct.append(good)
            top1[("all", good)] += 1
            top1[("both names" if both_names else "missing a name", good)] += 1
            grades[(best.grade if best else "none", "correct" if good else "wrong")] += 1
        else:
            strangers += 1
            certain_strangers += best is not None and best.grade == "certain"
            correct.append(False)
    ms = np.array(latencies) * 1000
    rate = lambda group: round(top1[(group, True)] / max(1, top1[(group, True)] + top1[(group, False)]), 4)  # noqa: E731
    return {"n": len(subjects), "latency_ms": {p: round(float(np.percentile(ms, q)), 3) for p, q in
                                               (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))},
            "mean_ms": round(float(ms.mean()), 3), "candidates_scored_p50_p99": [int(np.percentile(scored, 50)), int(np.percentile(scored, 99))],
            "statuses": dict(statuses), "subject_exists": top1[("all", True)] + top1[("all", False)],
            "top1_correct": rate("all"), "top1_correct_both_names_given": rate("both names"),
            "top1_correct_a_name_missing": rate("missing a name"),
            "best_grade_vs_correct": {f"{g}/{c}": n for (g, c), n in sorted(grades.items())},
            "strangers": strangers, "strangers_without_certain": round(1 - certain_strangers / max(1, strangers), 5)}, correct


def _parity(resolver, pairs_path: Path) -> dict:
    """Native weights against the weights Splink's predict() wrote for the same pairs during linking."""
    pairs = pd.read_csv(pairs_path, dtype={"record_id_l": str, "record_id_r": str})
    if len(pairs) > PARITY_SAMPLE:
        pairs = pairs.sample(PARITY_SAMPLE, random_state=0)
    index, scorer = resolver.index_, resolver.scorer_
    left = np.array([index.slot_of[r] for r in pairs["record_id_l"]])
    right = np.array([index.slot_of[r] for r in pairs["record_id_r"]])
    started = time.perf_counter()
    scores = scorer.score(index.rows(left), index.rows(right), len(pairs), index.tf, index.vocab)
    diff = np.abs(scores.match_weight - pairs["match_weight"].to_numpy())
    # pairs.csv rounds weights to 8 decimals; the bound below allows for that rounding.
    return {"pairs": int(len(pairs)), "max_abs_diff": float(diff.max()), "pairs_over_1e-6": int((diff > 1e-6).sum()),
            "seconds": round(time.perf_counter() - started, 2)}


def _kernel_vs_numpy(resolver, subjects, n: int = 2_000) -> dict:
    """The compiled kernel (`matching.kernel`) against the numpy scorer on the same queries' candidates."""
    index, scorer = resolver.index_, resolver.scorer_
    pairs = levels_differ = 0
    max_diff = 0.0
    for subject in subjects[:n]:
        row, approximate = standardise_subject(subject)
        extras = Extras()
        left = index.encode_query(row, extras)
        slots = index.candidates(left, YEAR_SLACK if approximate else 0).slots
        if len(slots) == 0:
            continue
        args = (left, index.rows(slots), len(slots), index.tf, index.vocab, extras)
        compiled, reference = scorer.score(*args), scorer.score_reference(*args)
        pairs += len(slots)
        levels_differ += int((compiled.levels != reference.levels).any(axis=1).sum())
        max_diff = max(max_diff, float(np.abs(compiled.match_weight - reference.match_weight).max()),
                       float(np.abs(compiled.weights - reference.weights).max()))
    return {"compiled": scorer.kernel_ is not None, "queries": min(n, len(subjects)), "pairs": pairs,
            "pairs_with_another_level": levels_differ, "max_abs_weight_diff": max_diff}


def _add_and_resolve(resolver, subjects, person_keys, n: int = 200) -> dict:
    """Strangers' subjects become new records; each must be the next query's top answer (or tied with it).

    Only subjects with both names: a record holding just "Priscilla, F" is, rightly, never a
    confident answer to anything.
    """
    found = tried = 0
    for i, (subject, key) in enumerate(zip(subjects, person_keys)):
        fields = subject.model_dump(exclude_none=True, exclude={"approx_age", "received_at"})
        if key or not (fields.get("given_name") and fields.get("family_name")) or tried == n:
            continue
        tried += 1
        if "dob" in fields:
            fields["dob"] = fields["dob"].isoformat()
        elif subject.approx_age is not None:
            fields["birth_year"] = subject.reference_date.year - subject.approx_age
        outcome = resolver.add_record({"record_id": f"BENCH-NEW-{i}", **fields})
        found_now = resolver.resolve(subject).candidates
        # the new record's person is the answer, or tied with it (another person with exactly the same fields)
        found += any(c.person_id == outcome.person_id and c.match_weight >= found_now[0].match_weight - 1e-9
                     for c in found_now)
    return {"added": tried, "resolved_to_the_new_record_next_query": found}


def _predict_between(resolver, std: pd.DataFrame, subjects) -> dict:
    """Splink's real-time path on the same model and records, for as many queries as fit in a minute."""
    linker = linker_for(std, resolver.model_.splink)
    for column in resolver.scorer_.tf_columns_:
        linker.table_management.compute_tf_table(column)
    records_sdf = input_table(linker)
    latencies, max_diff, compared = [], 0.0, 0
    deadline = time.perf_counter() + BETWEEN_SECONDS
    for i, subject in enumerate(subjects):
        if time.perf_counter() > deadline:
            break
        row, _ = standardise_subject(subject)
        frame = pd.DataFrame([{**row, "unique_id": f"QUERY-{i}"}], columns=std.columns)
        t = time.perf_counter()
        query_sdf = register_table(linker, to_arrow(frame), f"query_{i}")
        predictions = linker.inference.predict_between(query_sdf, records_sdf, warning_mode="never")
        got = predictions.as_pandas_dataframe()
        latencies.append(time.perf_counter() - t)
        if len(got):
            ours = _weights_for(resolver, row, got["unique_id_r"].tolist())
            max_diff = max(max_diff, float(np.max(np.abs(ours - got["match_weight"].to_numpy()))))
            compared += len(got)
    ms = np.array(latencies) * 1000
    return {"queries_in_a_minute": len(latencies), "latency_ms": {p: round(float(np.percentile(ms, q)), 1) for p, q in
                                                                 (("p50", 50), ("p95", 95), ("p99", 99))},
            "pairs_compared_with_native": compared, "max_abs_weight_diff_vs_native": max_diff}


def _weights_for(resolver, row: dict, record_ids: list[str]) -> np.ndarray:
    index, scorer = resolver.index_, resolver.scorer_
    slots = np.array([index.slot_of[r] for r in record_ids])
    extras = Extras()
    left = index.encode_query(row, extras)
    return scorer.score(left, index.rows(slots), len(slots), index.tf, index.vocab, extras).match_weight


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
