"""Batch benchmarks: linkage accuracy (FEBRL4, a 100,000-record county), 1,000,000 records linked end to end beside
plain Splink, and 1,000,000 synthetic records generated.

    python -m evaluation.bench febrl4 | county | link1m | synth1m      # each prints its figure (evaluation/bench/__main__.py)
    python -m evaluation.bench.link RECORDS.csv OUT                    # the child of `link1m`: plain Splink on RECORDS

Heavy steps run as child processes (`evaluation.bench.child`) so their peak RSS is measured alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.bench.child import BRIEFING, REPO, run_child, synth_county
from evaluation.linkage.baseline import plain_link
from evaluation.linkage.febrl import write_febrl4
from evaluation.linkage.metrics import error_rate_ratio, group_error_rates
from matching.accuracy import linkage_metrics
from evaluation.stats import fnmr_bootstrap
from evaluation.synth.county import MEAN_RECORDS_PER_PERSON
from matching.cluster import cluster
from matching.link import link_records
from matching.record import read_records
from matching.thresholds import sweep_link_thresholds


def pairwise_figures(clusters: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Pairwise precision, recall and F1 of a clustering, rounded to 6 digits (the benchmarks' figures)."""
    m = linkage_metrics(clusters, truth)
    return {"precision": round(m.pairwise_precision, 6), "recall": round(m.pairwise_recall, 6), "f1": round(m.pairwise_f1, 6)}


def bench_febrl4(work: Path) -> dict:
    """FEBRL4 linked as one deduplication; the link threshold chosen by 2-fold cross-validation over persons."""
    records_path, truth_path = write_febrl4(work / "febrl4")
    truth = pd.read_csv(truth_path, dtype=str)
    started = time.perf_counter()
    result = link_records(read_records(records_path).frame)
    seconds = time.perf_counter() - started
    ids = result.clustering.clusters["record_id"]
    persons = truth["person_key"].unique()
    rng = np.random.default_rng(0)
    fold_of = dict(zip(persons, rng.permutation(len(persons)) % 2))
    truth["fold"] = truth["person_key"].map(fold_of)
    f1s, chosen = [], []
    for fold in (0, 1):
        train_ids = set(truth.loc[truth.fold == fold, "record_id"])
        in_train = result.pairs.record_id_l.isin(train_ids) & result.pairs.record_id_r.isin(train_ids)
        sweep = sweep_link_thresholds(ids[ids.isin(train_ids)], result.pairs[in_train], truth[truth.fold == fold])
        ok = sweep[sweep.precision >= 0.995].sort_values(["f1", "threshold"], ascending=[False, False])
        threshold = float((ok if len(ok) else sweep).iloc[0]["threshold"])
        clusters = cluster(ids, result.pairs, threshold, identities=result.identities).clusters
        test = truth[truth.fold != fold]
        m = linkage_metrics(clusters[clusters.record_id.isin(set(test.record_id))], test)
        f1s.append(m.pairwise_f1)
        chosen.append(threshold)
    at_default = pairwise_figures(result.clustering.clusters, truth)
    return {"figure": "febrl4_pairwise_f1_cv", "value": round(float(np.mean(f1s)), 6), "target": ">= 0.999",
            "folds_f1": [round(f, 6) for f in f1s], "thresholds_chosen": chosen,
            "at_untuned_default_threshold": {"threshold": result.model.thresholds.link, **at_default},
            "records": int(len(ids)), "seconds": round(seconds, 1)}


def bench_county(work: Path, records: int = 100_000, seed: int = 101) -> dict:
    """The committed matcher on a county it was not trained on (different seed)."""
    county = synth_county(work, records, seed)
    out = work / f"link-{records}-{seed}"
    wall, rss = run_child(BRIEFING + ["link", str(county / "records.csv"), "--model", str(REPO / "models/matcher.json"),
                                      "--out", str(out), "--quiet"])
    clusters = pd.read_csv(out / "clusters.csv", dtype=str)
    truth = pd.read_csv(county / "truth.csv", dtype=str)
    demographics = pd.read_csv(county / "demographics.csv", dtype=str)
    table = group_error_rates(clusters, truth, demographics, "race_ethnicity")
    return {"figure": "county_linkage", "records": int(len(clusters)), **pairwise_figures(clusters, truth),
            "targets": {"f1": ">= 0.97", "precision": ">= 0.995", "fnmr_ratio": "<= 1.25"},
            "fnmr_ratio_race_ethnicity": round(error_rate_ratio(table), 4),
            "fnmr_bootstrap_over_persons": fnmr_bootstrap(clusters, truth, demographics, "race_ethnicity"),
            "fnmr_by_group": {r.group: {"fnmr": round(r.false_non_match_rate, 5), "persons": int(r.persons),
                                        "sufficient": bool(r.sufficient)} for r in table.itertuples()},
            "link_seconds": round(wall, 1), "peak_rss_gb": round(rss, 2)}


def bench_link1m(work: Path, records: int = 1_000_000, seed: int = 202) -> dict:
    """End-to-end link (train + predict + cluster) of 1M records, then plain Splink on the same data."""
    county = synth_county(work, records, seed)
    out = work / f"link-trained-here-{records}-{seed}"    # not link-N-S: the resolve benchmarks' committed-model run
    wall, rss = run_child(BRIEFING + ["link", str(county / "records.csv"), "--out", str(out), "--quiet"])
    truth = pd.read_csv(county / "truth.csv", dtype=str)
    ours = pairwise_figures(pd.read_csv(out / "clusters.csv", dtype=str), truth)
    summary = json.loads((out / "summary.json").read_text())
    plain_out = work / f"plain-{records}-{seed}"
    plain_wall, plain_rss = run_child([sys.executable, "-m", "evaluation.bench.link", str(county / "records.csv"), str(plain_out)])
    plain = json.loads((plain_out / "summary.json").read_text())
    return {"figure": "link_1m", "records": int(len(truth)), "targets": {"seconds": "<= 360", "peak_rss_gb": "<= 8"},
            "briefing": {"seconds": round(wall, 1), "peak_rss_gb": round(rss, 2), "steps": summary["seconds"], **ours},
            "plain_splink": {"seconds": round(plain_wall, 1), "steps": plain["seconds"], **plain["metrics"]}}


def plain_child(records_path: str, out: str) -> None:
    """Child process: plain Splink on a records file, clustered at 0.95, evaluated if truth.csv sits beside it."""
    records = read_records(records_path).frame
    pairs, seconds = plain_link(records)
    started = time.perf_counter()
    clusters = cluster(records["record_id"], pairs, 0.95).clusters
    seconds["cluster"] = time.perf_counter() - started
    truth = pd.read_csv(Path(records_path).parent / "truth.csv", dtype=str)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "summary.json").write_text(json.dumps({"seconds": {k: round(v, 1) for k, v in seconds.items()},
                                                        "metrics": pairwise_figures(clusters, truth)}))


def bench_synth1m(work: Path, records: int = 1_000_000, seed: int = 303) -> dict:
    persons = int(round(records / MEAN_RECORDS_PER_PERSON))
    out = work / "synth1m"
    wall, rss = run_child(BRIEFING + ["synth", "--persons", str(persons), "--seed", str(seed), "--out", str(out), "--quiet"])
    n = sum(1 for _ in open(out / "records.csv", encoding="utf-8")) - 1
    return {"figure": "synth_1m", "records": n, "persons": persons, "seconds": round(wall, 1),
            "target": "<= 300 s", "peak_rss_gb": round(rss, 2)}


if __name__ == "__main__":
    plain_child(sys.argv[1], sys.argv[2])
