"""Benchmarks behind BENCHMARKS.md: one command per figure, each printing the figure and the machine.

    python -m evaluation.bench febrl4        # FEBRL4 pairwise F1 (10,000 records, one deduplication)
    python -m evaluation.bench county        # 100,000-record county: F1, precision, FNMR ratio by group
    python -m evaluation.bench link1m        # 1,000,000 records linked end to end: time, peak RSS, beside plain Splink
    python -m evaluation.bench link1m-spark  # ... on Spark local[2] beside DuckDB, with parity at scale (evaluation/bench/spark.py)
    python -m evaluation.bench synth1m       # 1,000,000 synthetic records generated: time
    python -m evaluation.bench resolve100k   # real-time resolver on 100,000 records (evaluation/bench/resolve.py)
    python -m evaluation.bench resolve1m     # ... and on 1,000,000 records
    python -m evaluation.bench rank200       # ranking one person's 200 items (evaluation/bench/rank.py)
    python -m evaluation.bench service100k   # POST /v1/briefings at 200 req/s for 60 s (evaluation/bench/service.py)
    python -m evaluation.bench service100k-gthread   # ... served by one worker with 4 threads
    python -m evaluation.bench service1m     # ... over 1,000,000 records
    python -m evaluation.bench service1m-300 # ... over 1,000,000 records at 300 req/s
    python -m evaluation.bench service-rebuild100k   # ... while a bulk ingest loads a tenth more and the index is rebuilt
    python -m evaluation.bench service-rebuild1m     # ... the same over 1,000,000 records
    python -m evaluation.bench external      # FEBRL 1-4 and evaluation/data/external/*.csv.gz beside plain Splink (evaluation/bench/external.py)
    python -m evaluation.bench external-resolve   # ... the resolver on each set, each query's own record left out
    python -m evaluation.bench ingest1m      # `briefing ingest` of 1M records into an empty SQLite and PostgreSQL store
    python -m evaluation.bench review1m      # a steward's page of the review queue at 1,000,000 records (evaluation/bench/review.py)
    python -m evaluation.bench webhooks      # referrals at 50/s for 60 s to a program's webhook, a worker and a deliverer killed -9

Each prints one JSON object; `--work DIR` keeps the generated data (default: a temp dir).
Heavy steps run as child processes so their peak RSS is measured alone (evaluation/bench/child.py);
the batch benchmarks (febrl4, county, link1m, synth1m) are in evaluation/bench/link.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from evaluation.bench.child import cpu_check, machine
from evaluation.bench.external import bench_external, bench_external_resolve
from evaluation.bench.ingest import bench_ingest1m, bench_ingest100k
from evaluation.bench.link import bench_county, bench_febrl4, bench_link1m, bench_synth1m
from evaluation.bench.rank import bench_rank200
from evaluation.bench.review import bench_review1m
from evaluation.bench.resolve import bench_resolve1m, bench_resolve100k
from evaluation.bench.service import (bench_service1m, bench_service1m_300, bench_service100k, bench_service100k_gthread,
                                      bench_service_rebuild1m, bench_service_rebuild100k)
from evaluation.bench.spark import bench_link1m_spark
from evaluation.bench.webhooks import bench_webhooks

BENCHES = {"febrl4": bench_febrl4, "county": bench_county, "link1m": bench_link1m, "synth1m": bench_synth1m,
           "link1m-spark": bench_link1m_spark,
           "resolve100k": bench_resolve100k, "resolve1m": bench_resolve1m, "rank200": bench_rank200,
           "service100k": bench_service100k, "service-rebuild100k": bench_service_rebuild100k,
           "service-rebuild1m": bench_service_rebuild1m, "service100k-gthread": bench_service100k_gthread, "service1m": bench_service1m,
           "service1m-300": bench_service1m_300,
           "external": bench_external, "external-resolve": bench_external_resolve,
           "ingest100k": bench_ingest100k, "ingest1m": bench_ingest1m, "webhooks": bench_webhooks,
           "review1m": bench_review1m}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.bench")
    parser.add_argument("name", choices=sorted(BENCHES))
    parser.add_argument("--work", help="keep generated data here (default: a temporary directory)")
    args = parser.parse_args(argv)
    before = cpu_check()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = BENCHES[args.name](work)
    result["machine"] = machine() | {"cpu_check_seconds_before": before, "cpu_check_seconds_after": cpu_check()}
    result["command"] = f"python -m evaluation.bench {args.name}"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
