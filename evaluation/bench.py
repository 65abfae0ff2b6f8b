"""Benchmarks behind BENCHMARKS.md: one command per figure, each printing the figure and the machine.

    python -m evaluation.bench febrl4        # FEBRL4 pairwise F1 (10,000 records, one deduplication)
    python -m evaluation.bench county        # 100,000-record county: F1, precision, FNMR ratio by group
    python -m evaluation.bench link1m        # 1,000,000 records linked end to end: time, peak RSS, beside plain Splink
    python -m evaluation.bench link1m-spark  # ... on Spark local[2] beside DuckDB, with parity at scale (evaluation/bench_spark.py)
    python -m evaluation.bench synth1m       # 1,000,000 synthetic records generated: time
    python -m evaluation.bench resolve100k   # real-time resolver on 100,000 records (evaluation/bench_resolve.py)
    python -m evaluation.bench resolve1m     # ... and on 1,000,000 records
    python -m evaluation.bench rank200       # ranking one person's 200 items (evaluation/bench_rank.py)
    python -m evaluation.bench service100k   # POST /v1/briefings at 200 req/s for 60 s (evaluation/bench_service.py)
    python -m evaluation.bench service100k-gthread   # ... served by one worker with 4 threads
    python -m evaluation.bench service1m     # ... over 1,000,000 records
    python -m evaluation.bench external      # FEBRL 1-4 and evaluation/data/external/*.csv.gz beside plain Splink (evaluation/bench_external.py)
    python -m evaluation.bench external-resolve   # ... the resolver on each set, each query's own record left out

Each prints one JSON object; `--work DIR` keeps the generated data (default: a temp dir).
Heavy steps run as child processes so their peak RSS is measured alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.bench_external import bench_external, bench_external_resolve
from evaluation.child_process import BRIEFING, REPO, machine, run_child  # noqa: F401 (bench_* modules take them from here)

def _metrics(clusters: pd.DataFrame, truth: pd.DataFrame) -> dict:
    from evaluation.linkage import linkage_metrics

    m = linkage_metrics(clusters, truth)
    return {"precision": round(m.pairwise_precision, 6), "recall": round(m.pairwise_recall, 6), "f1": round(m.pairwise_f1, 6)}


def _county(work: Path, records: int, seed: int) -> Path:
    """Generate (or reuse) a county of about `records` records."""
    from evaluation.synth.county import MEAN_RECORDS_PER_PERSON

    out = work / f"county-{records}-{seed}"
    if not (out / "records.csv").exists():
        persons = int(round(records / MEAN_RECORDS_PER_PERSON))
        run_child(BRIEFING + ["synth", "--persons", str(persons), "--seed", str(seed), "--out", str(out), "--quiet"])
    return out


def bench_febrl4(work: Path) -> dict:
    """FEBRL4 linked as one deduplication; the link threshold chosen by 2-fold cross-validation over persons."""
    from evaluation.febrl import write_febrl4
    from evaluation.linkage import linkage_metrics
    from evaluation.thresholds import sweep_link_thresholds
    from matching.cluster import cluster
    from matching.link import link_records
    from matching.record import read_records

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
        clusters = cluster(ids, result.pairs, threshold).clusters
        test = truth[truth.fold != fold]
        m = linkage_metrics(clusters[clusters.record_id.isin(set(test.record_id))], test)
        f1s.append(m.pairwise_f1)
        chosen.append(threshold)
    at_default = _metrics(cluster(ids, result.pairs, result.model.thresholds.link).clusters, truth)
    return {"figure": "febrl4_pairwise_f1_cv", "value": round(float(np.mean(f1s)), 6), "target": ">= 0.999",
            "folds_f1": [round(f, 6) for f in f1s], "thresholds_chosen": chosen,
            "at_untuned_default_threshold": {"threshold": result.model.thresholds.link, **at_default},
            "records": int(len(ids)), "seconds": round(seconds, 1)}


def bench_county(work: Path, records: int = 100_000, seed: int = 101) -> dict:
    """The committed matcher on a county it was not trained on (different seed)."""
    from evaluation.bootstrap import fnmr_bootstrap
    from evaluation.linkage import error_rate_ratio, group_error_rates

    county = _county(work, records, seed)
    out = work / f"link-{records}-{seed}"
    wall, rss = run_child(BRIEFING + ["link", str(county / "records.csv"), "--model", str(REPO / "models/matcher.json"),
                                      "--out", str(out), "--quiet"])
    clusters = pd.read_csv(out / "clusters.csv", dtype=str)
    truth = pd.read_csv(county / "truth.csv", dtype=str)
    demographics = pd.read_csv(county / "demographics.csv", dtype=str)
    table = group_error_rates(clusters, truth, demographics, "race_ethnicity")
    return {"figure": "county_linkage", "records": int(len(clusters)), **_metrics(clusters, truth),
            "targets": {"f1": ">= 0.97", "precision": ">= 0.995", "fnmr_ratio": "<= 1.25"},
            "fnmr_ratio_race_ethnicity": round(error_rate_ratio(table), 4),
            "fnmr_bootstrap_over_persons": fnmr_bootstrap(clusters, truth, demographics, "race_ethnicity"),
            "fnmr_by_group": {r.group: {"fnmr": round(r.false_non_match_rate, 5), "persons": int(r.persons),
                                        "sufficient": bool(r.sufficient)} for r in table.itertuples()},
            "link_seconds": round(wall, 1), "peak_rss_gb": round(rss, 2)}


def bench_link1m(work: Path, records: int = 1_000_000, seed: int = 202) -> dict:
    """End-to-end link (train + predict + cluster) of 1M records, then plain Splink on the same data."""
    county = _county(work, records, seed)
    out = work / f"link-trained-here-{records}-{seed}"    # not link-N-S: the resolve benchmarks' committed-model run
    wall, rss = run_child(BRIEFING + ["link", str(county / "records.csv"), "--out", str(out), "--quiet"])
    truth = pd.read_csv(county / "truth.csv", dtype=str)
    ours = _metrics(pd.read_csv(out / "clusters.csv", dtype=str), truth)
    summary = json.loads((out / "summary.json").read_text())
    plain_out = work / f"plain-{records}-{seed}"
    plain_wall, plain_rss = run_child([sys.executable, "-m", "evaluation.bench", "_plain", str(county / "records.csv"), str(plain_out)])
    plain = json.loads((plain_out / "summary.json").read_text())
    return {"figure": "link_1m", "records": int(len(truth)), "targets": {"seconds": "<= 360", "peak_rss_gb": "<= 8"},
            "briefing": {"seconds": round(wall, 1), "peak_rss_gb": round(rss, 2), "steps": summary["seconds"], **ours},
            "plain_splink": {"seconds": round(plain_wall, 1), "steps": plain["seconds"], **plain["metrics"]}}


def _plain_child(records_path: str, out: str) -> None:
    """Child process: plain Splink on a records file, clustered at 0.95, evaluated if truth.csv sits beside it."""
    from evaluation.baseline import plain_link
    from matching.cluster import cluster
    from matching.record import read_records

    records = read_records(records_path).frame
    pairs, seconds = plain_link(records)
    started = time.perf_counter()
    clusters = cluster(records["record_id"], pairs, 0.95).clusters
    seconds["cluster"] = time.perf_counter() - started
    truth = pd.read_csv(Path(records_path).parent / "truth.csv", dtype=str)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "summary.json").write_text(json.dumps({"seconds": {k: round(v, 1) for k, v in seconds.items()},
                                                        "metrics": _metrics(clusters, truth)}))


def bench_synth1m(work: Path, records: int = 1_000_000, seed: int = 303) -> dict:
    from evaluation.synth.county import MEAN_RECORDS_PER_PERSON

    persons = int(round(records / MEAN_RECORDS_PER_PERSON))
    out = work / "synth1m"
    wall, rss = run_child(BRIEFING + ["synth", "--persons", str(persons), "--seed", str(seed), "--out", str(out), "--quiet"])
    n = sum(1 for _ in open(out / "records.csv", encoding="utf-8")) - 1
    return {"figure": "synth_1m", "records": n, "persons": persons, "seconds": round(wall, 1),
            "target": "<= 300 s", "peak_rss_gb": round(rss, 2)}


def bench_resolve100k(work: Path) -> dict:
    from evaluation.bench_resolve import bench_resolve

    return bench_resolve(work, 100_000, 101)


def bench_resolve1m(work: Path) -> dict:
    from evaluation.bench_resolve import bench_resolve

    return bench_resolve(work, 1_000_000, 202)


def bench_rank200(work: Path) -> dict:
    from evaluation.bench_rank import bench_rank

    return bench_rank(work)


def bench_service100k(work: Path) -> dict:
    from evaluation.bench_service import bench_service

    return bench_service(work, 100_000, 303)


def bench_service100k_gthread(work: Path) -> dict:
    from evaluation.bench_service import bench_service

    return bench_service(work, 100_000, 303, serving="gthread")


def bench_service1m(work: Path) -> dict:
    from evaluation.bench_service import bench_service

    return bench_service(work, 1_000_000, 202)


def bench_link1m_spark(work: Path) -> dict:
    from evaluation.bench_spark import bench_link1m_spark as bench

    return bench(work)


BENCHES = {"febrl4": bench_febrl4, "county": bench_county, "link1m": bench_link1m, "synth1m": bench_synth1m,
           "link1m-spark": bench_link1m_spark,
           "resolve100k": bench_resolve100k, "resolve1m": bench_resolve1m, "rank200": bench_rank200,
           "service100k": bench_service100k, "service100k-gthread": bench_service100k_gthread, "service1m": bench_service1m,
           "external": bench_external, "external-resolve": bench_external_resolve}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_plain":
        _plain_child(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(prog="python -m evaluation.bench")
    parser.add_argument("name", choices=sorted(BENCHES))
    parser.add_argument("--work", help="keep generated data here (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = BENCHES[args.name](work)
    result["machine"] = machine()
    result["command"] = f"python -m evaluation.bench {args.name}"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
