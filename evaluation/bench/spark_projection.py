"""Project Spark link times measured on one machine to a larger county on a cluster.

Method (stated in BENCHMARKS.md beside the figures): each step of ``briefing link --engine spark``
is fitted as ``seconds = fixed + per_record * records`` over benchmark runs of different sizes
(`python -m evaluation.bench.spark` JSON files), then evaluated at the target size. From runs of
one size only, the fixed part is taken as zero: every second of the measured run scales with the
records, which overstates the time of a larger run (session start and the like do not grow).
Linear in records holds because the blocking budget (`matching.blocking.BlockingBudget`) caps candidate pairs at 60 per record whatever the county's size: a larger county keeps fewer or
narrower prediction rules, not more pairs per record.

- **Executor steps** are divided by the cluster's executor cores over the cores of the measured run.
  That is perfect scaling, so it is a lower bound: shuffles cross the network on a cluster and stay
  in memory in ``local[2]``. Which steps run on the executors depends on the run: linking with a
  model (``spark_with_duckdb_model``, `matching.spark_link`) standardises, predicts and clusters there;
  training on Spark (``spark``, `matching.link.link_records`) trains and predicts there and
  standardises and clusters in pandas on the driver.
- **Driver steps** (the rest, and reading the CSV, writing the outputs, starting the session) are
  not divided: they run on one driver core whatever the cluster's size.
- **Driver memory**: the Python peak of the measured runs fitted the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

STEPS = ("standardise", "train", "predict", "cluster", "other")
#: Where each kind of run computes its steps (the rest, and "other", on the driver).
EXECUTOR_STEPS = {"spark": ("train", "predict"), "spark_with_duckdb_model": ("standardise", "predict", "cluster")}
MEASURED_CORES = 2


def _points(runs: list[dict], kind: str) -> dict[str, list[tuple[int, float]]]:
    """(records, value) per step and for the driver's Python peak, from the `kind` runs of `evaluation.bench.spark` results."""
    points: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        spark, n = run[kind], int(run["records"])
        steps = {k: float(spark["steps"].get(k, 0.0)) for k in ("standardise", "train", "predict", "cluster")}
        steps["other"] = max(0.0, float(spark["seconds"]) - sum(steps.values()))
        steps["driver_python_gb"] = float(spark["peak_rss_gb_python"])
        for key, value in steps.items():
            points.setdefault(key, []).append((n, value))
    return points


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    n, y = np.array(points, dtype=float).T
    if len(set(n.tolist())) == 1:
        return 0.0, float(y.mean() / n[0])
    per_record, fixed = np.polyfit(n, y, 1)
    return float(fixed), float(per_record)


def project(runs: list[dict], records: int, executor_cores: int, kind: str = "spark") -> dict:
    """Projected seconds per step and driver memory at `records` with `executor_cores` executor cores, for the
    `kind` of Spark run (`EXECUTOR_STEPS`) in `runs`."""
    runs = [run for run in runs if kind in run]
    sizes = sorted({int(r["records"]) for r in runs})
    if not sizes:
        raise ValueError(f"a projection needs at least one benchmark run with a {kind!r} result")
    fits = {key: _fit(pts) for key, pts in _points(runs, kind).items()}
    speedup = executor_cores / MEASURED_CORES
    steps = {}
    for key in STEPS:
        fixed, per_record = fits[key]
        at_size = max(0.0, fixed + per_record * records)
        steps[key] = round(at_size / speedup if key in EXECUTOR_STEPS[kind] else at_size)
    fixed, per_record = fits["driver_python_gb"]
    return {"records": records, "executor_cores": executor_cores, "run": kind, "measured_sizes": sizes,
            "on_the_executors": list(EXECUTOR_STEPS[kind]),
            "fits": {k: {"fixed": round(a, 3), "per_million_records": round(b * 1e6, 3)} for k, (a, b) in fits.items()},
            "projected_seconds": {**steps, "total": sum(steps.values())},
            "projected_driver_python_gb": round(fixed + per_record * records, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.bench.spark_projection", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by python -m evaluation.bench.spark")
    parser.add_argument("--records", type=int, default=50_000_000)
    parser.add_argument("--executor-cores", type=int, default=64)
    parser.add_argument("--run", choices=sorted(EXECUTOR_STEPS), default="spark_with_duckdb_model",
                        help="which Spark run to project: linking with a model (default) or training on Spark")
    args = parser.parse_args(argv)
    try:
        runs = [json.loads(Path(p).read_text()) for p in args.runs]
        result = project(runs, args.records, args.executor_cores, args.run)
    except (OSError, ValueError, KeyError) as err:
        print(f"spark_projection: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
