"""Batch linkage on Spark local mode beside DuckDB, on the same county and machine.

    python -m evaluation.bench link1m-spark              # 1,000,000 records (registered in evaluation/bench/__main__.py)
    python -m evaluation.bench.spark --records 100000    # any size; --skip-duckdb / --skip-parity / --skip-spark-training for shorter runs

Three child processes, one after the other, each timed from start to exit:

1. `briefing link RECORDS --out DIR` on DuckDB: train + predict + cluster (as `bench link1m` measures it);
2. `briefing link RECORDS --engine spark --spark-master local[2]`: the same on Spark, its own training (training on Spark
   still standardises and clusters on the driver: `matching.link.link_records`);
3. parity at scale: `briefing link RECORDS --engine spark --model <the DuckDB run's model.json>`, whose
   pairs.csv and clusters.csv are compared with the DuckDB run's (same model: same pairs, weights within 1e-6,
   same persons).

Peak memory of a Spark run is the whole process tree (the Python driver and the JVM it starts): the sum of
their RSS, sampled every 0.25 s with psutil (shared pages count once per process, so it slightly overstates).
The peak of each process alone is reported too. A DuckDB run is one process (RSS from wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from evaluation.bench.child import BRIEFING, REPO, machine, synth_county
from evaluation.bench.link import pairwise_figures
from matching.spark.session import spark_conf

SPARK_MASTER = "local[2]"


def run_tree(args: list[str], interval: float = 0.25) -> dict:
    """Run a command; wall seconds, peak RSS (GB) of its whole process tree (sampled) and of each process kind."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(args, cwd=REPO, stdout=sys.stderr)
    peaks = {"tree": 0, "python": 0, "jvm": 0}
    done = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(child.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    name = proc.name()
                except psutil.NoSuchProcess:
                    continue
                total += rss
                kind = "jvm" if name.startswith("java") else "python" if proc.pid == child.pid else None
                if kind:
                    peaks[kind] = max(peaks[kind], rss)
            peaks["tree"] = max(peaks["tree"], total)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    sampler.join()
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise subprocess.CalledProcessError(code, args)
    gb = 2**30
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(peaks["tree"] / gb, 2),
            "peak_rss_gb_python": round(peaks["python"] / gb, 2), "peak_rss_gb_jvm": round(peaks["jvm"] / gb, 2),
            "peak_rss_gb_wait4_max_single_process": round(usage.ru_maxrss / 2**20, 2)}


def _run_summary(out: Path, truth: pd.DataFrame) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    model = json.loads((out / "model.json").read_text())
    rules = model.get("training", {}).get("prediction_blocking_rules", [])
    return {"steps": summary["seconds"], "persons": summary["persons"],
            "pairs_scored_at_or_above_floor": summary["pairs_scored_at_or_above_floor"],
            "pairs_linked": summary["pairs_linked"],
            "candidate_pairs_upper_bound": sum(r.get("pairs") or 0 for r in rules) or None,
            **pairwise_figures(pd.read_csv(out / "clusters.csv", dtype=str), truth)}


def _parity(duckdb_out: Path, spark_out: Path) -> dict:
    """Compare two runs that used the same model: pairs, weights, persons."""
    ids = {"record_id_l": str, "record_id_r": str}
    a = pd.read_csv(duckdb_out / "pairs.csv", dtype=ids).set_index(["record_id_l", "record_id_r"]).sort_index()
    b = pd.read_csv(spark_out / "pairs.csv", dtype=ids).set_index(["record_id_l", "record_id_r"]).sort_index()
    common = a.index.intersection(b.index)
    diff = (a.loc[common, "match_weight"] - b.loc[common, "match_weight"]).abs()
    ca = pd.read_csv(duckdb_out / "clusters.csv", dtype=str).sort_values("record_id").reset_index(drop=True)
    cb = pd.read_csv(spark_out / "clusters.csv", dtype=str).sort_values("record_id").reset_index(drop=True)
    return {"pairs_duckdb": int(len(a)), "pairs_spark": int(len(b)),
            "pairs_only_duckdb": int(len(a.index.difference(b.index))), "pairs_only_spark": int(len(b.index.difference(a.index))),
            "max_abs_match_weight_difference": float(diff.max()) if len(diff) else None,
            "note": "pairs.csv keeps 10 significant digits",
            "same_persons": bool(ca[["record_id", "person_id"]].equals(cb[["record_id", "person_id"]]))}


def bench_link_spark(work: Path, records: int = 1_000_000, seed: int = 202, master: str = SPARK_MASTER,
                     duckdb: bool = True, parity: bool = True, spark_training: bool = True,
                     reuse_duckdb: bool = False) -> dict:
    """Link a county of about `records` records on Spark `master` (and on DuckDB), timed, with peak memory."""
    county = synth_county(work, records, seed)
    records_csv = str(county / "records.csv")
    truth = pd.read_csv(county / "truth.csv", dtype=str)
    result: dict = {"figure": f"link_{records // 1000}k_spark" if records < 1_000_000 else f"link_{records // 1_000_000}m_spark",
                    "records": int(len(truth)), "spark_master": master,
                    "spark_settings": {k: v for k, v in spark_conf(master).items() if k != "spark.jars"}}
    try:
        import pyspark

        result["pyspark"] = pyspark.__version__
        result["java"] = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    except Exception:  # noqa: BLE001 - informative only
        pass
    duckdb_out = work / f"link-duckdb-{records}-{seed}"
    if (duckdb or parity) and not (reuse_duckdb and (duckdb_out / "summary.json").exists()):
        measured = run_tree(BRIEFING + ["link", records_csv, "--out", str(duckdb_out), "--quiet"])
        result["duckdb"] = {**measured, **_run_summary(duckdb_out, truth)}
    if spark_training:
        spark_out = work / f"link-spark-{records}-{seed}"
        measured = run_tree(BRIEFING + ["link", records_csv, "--out", str(spark_out), "--engine", "spark",
                                        "--spark-master", master, "--quiet"])
        result["spark"] = {**measured, **_run_summary(spark_out, truth)}
    if parity:
        same_model_out = work / f"link-spark-duckdb-model-{records}-{seed}"
        measured = run_tree(BRIEFING + ["link", records_csv, "--out", str(same_model_out), "--engine", "spark",
                                        "--spark-master", master, "--model", str(duckdb_out / "model.json"), "--quiet"])
        steps = json.loads((same_model_out / "summary.json").read_text())["seconds"]
        result["spark_with_duckdb_model"] = {**measured, "steps": steps, **_parity(duckdb_out, same_model_out)}
    return result


def bench_link1m_spark(work: Path) -> dict:
    result = bench_link_spark(work, 1_000_000, 202)
    result["targets"] = {"note": "none set; compare with DuckDB on the same machine (bench link1m: <= 360 s, <= 8 GB)"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.bench.spark")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=202)
    parser.add_argument("--spark-master", default=SPARK_MASTER)
    parser.add_argument("--skip-duckdb", action="store_true", help="no DuckDB run (implies --skip-parity)")
    parser.add_argument("--skip-parity", action="store_true", help="no Spark run with the DuckDB run's model")
    parser.add_argument("--skip-spark-training", action="store_true", help="no Spark run training its own model")
    parser.add_argument("--reuse-duckdb", action="store_true",
                        help="compare with the DuckDB run already in --work instead of running it again")
    parser.add_argument("--work", help="keep generated data here (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = bench_link_spark(work, args.records, args.seed, args.spark_master,
                                  duckdb=not args.skip_duckdb, parity=not (args.skip_parity or args.skip_duckdb),
                                  spark_training=not args.skip_spark_training, reuse_duckdb=args.reuse_duckdb)
    result["machine"] = machine()
    result["command"] = "python -m evaluation.bench.spark " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
