"""`briefing train-matcher`, `briefing link` and `briefing resolve`: record linkage from the command line.

Each command parses its arguments, calls the library (matching/), and turns bad input into a
`CliError` (exit status 2, `file:line:column: message` on stderr). Long steps report progress on
stderr (`Stages`); results go to files (`--out`) or, for `resolve`, one JSON line per subject on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import ValidationError

import models
from api.cli.common import CliError, Stages, positive_int_arg, probability_arg
from api.cli.inputs import load_model, load_records, read_table
from evaluation.synth.incidents import incident_queries
from matching.link import link_records, recluster, write_link_outputs
from matching.query import Subject, field_messages
from matching.record import RecordsFile
from matching.resolve import Resolver
from matching.spark.session import EngineUnavailable, spark_available
from matching.thresholds import choose_thresholds
from matching.train import Matcher, NotTrainable


def train(records_file: RecordsFile, args: argparse.Namespace, stages: Stages, truth=None, floor: float = 0.01):
    """Train a matcher and link with it; with truth, re-choose thresholds from measured precision/recall and re-cluster."""
    engine, spark_master = engine_of(args)
    matcher = Matcher(max_pairs_u=args.max_pairs_u, seed=args.seed, engine=engine, spark_master=spark_master)
    try:
        result = link_records(records_file.frame, matcher=matcher, floor=floor, progress=stages, warnings=records_file.warnings)
    except NotTrainable as exc:
        raise CliError(f"{args.records}: {exc}") from exc
    except EngineUnavailable as exc:
        raise CliError(str(exc)) from exc
    if truth is not None:
        stages("choosing thresholds from measured precision / recall")
        result.model.thresholds = choose_thresholds(result.clustering.clusters["record_id"], result.pairs, truth)
        recluster(result, progress=stages)
    return result


def engine_of(args: argparse.Namespace) -> tuple[str, str | None]:
    """--engine / --spark-master: where Splink's SQL runs (matching/engine.py); checked before any work is done."""
    if args.spark_master and args.engine != "spark":
        raise CliError("--spark-master needs --engine spark")
    if args.engine == "spark":
        reason = spark_available()
        if reason:
            raise CliError(f"--engine spark: {reason}")
    return args.engine, args.spark_master


def cmd_train_matcher(args: argparse.Namespace) -> int:
    records_file = load_records(args.records)
    truth = read_table(args.truth, ("record_id", "person_key"), "truth") if args.truth else None
    stages = Stages(args.quiet)
    result = train(records_file, args, stages, truth)
    stages.finish()
    result.model.training["impossible_dates"] = records_file.impossible_dates
    result.model.save(args.out)
    print(json.dumps({"model": str(args.out), "version": result.model.version, "thresholds": {
        k: getattr(result.model.thresholds, k) for k in ("link", "review_low", "certain", "probable", "possible")}}))
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    if args.model and args.truth:
        raise CliError("--truth chooses the thresholds of a model trained here; it cannot be combined with --model")
    records_file = load_records(args.records)
    model = load_model(args.model) if args.model else None
    previous = read_table(args.previous, ("record_id", "person_id"), "previous clusters") if args.previous else None
    truth = read_table(args.truth, ("record_id", "person_key"), "truth") if args.truth else None
    stages = Stages(args.quiet)
    if model is None:
        result = train(records_file, args, stages, truth, floor=args.floor)
        if args.threshold is not None or previous is not None:
            recluster(result, threshold=args.threshold, previous=previous, progress=stages)
    else:
        engine, spark_master = engine_of(args)
        try:
            result = link_records(records_file.frame, model=model, threshold=args.threshold, floor=args.floor,
                                  previous=previous, progress=stages, warnings=records_file.warnings,
                                  engine=engine, spark_master=spark_master)
        except EngineUnavailable as exc:
            raise CliError(str(exc)) from exc
    stages.finish()
    result.summary["impossible_dates"] = records_file.impossible_dates
    result.summary["input"] = {"file": str(args.records), "columns_present": records_file.present_columns}
    write_link_outputs(result, args.out)
    print(json.dumps({k: result.summary[k] for k in ("records", "persons", "pairs_linked", "pairs_in_review_band", "seconds")}))
    return 0


def subject_of(text: str, where: str, columns: dict[str, int] | None = None) -> Subject:
    """Parse and validate one subject (JSON object); errors name `where` (a file:line or --query) and the column.

    The column is the field's position in `text`, or in a CSV header (`columns`: field -> column).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{where}:{exc.colno}: not JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise CliError(f"{where}:1: a subject must be a JSON object")
    try:
        return Subject.model_validate(data)
    except ValidationError as exc:
        field, message = next(iter(field_messages(exc).items()))
        column = (columns or {}).get(field) or text.find(f'"{field}"') + 1 or 1
        raise CliError(f"{where}:{column}: {field}: {message}") from exc


def subjects_of(args: argparse.Namespace) -> tuple[list[Subject], list[dict]]:
    """The subjects to resolve from --query, --queries or --incidents, and extra keys per output line."""
    given = [a for a in (args.query, args.queries, args.incidents) if a is not None]
    if len(given) != 1:
        raise CliError("give exactly one of --query JSON, --queries FILE.jsonl or --incidents incidents.csv")
    if args.query is not None:
        return [subject_of(args.query, "--query")], [{}]
    path = Path(args.queries or args.incidents)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if args.queries is not None:
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
        subjects = [subject_of(line, f"{path}:{n}") for n, line in lines[: args.limit]]
        return subjects, [{} for _ in subjects]
    incidents = read_table(str(path), ("incident_id",), "incidents")
    incidents = incidents.head(args.limit) if args.limit else incidents
    header = {c.removeprefix("subject_"): i for i, c in enumerate(incidents.columns, 1)}
    subjects = [subject_of(json.dumps(q), f"{path}:{n}", header) for n, q in enumerate(incident_queries(incidents), 2)]
    return subjects, [{"incident_id": i} for i in incidents["incident_id"]]


def cmd_resolve(args: argparse.Namespace) -> int:
    subjects, tags = subjects_of(args)
    model = load_model(args.model)
    records_file = load_records(args.records)
    clusters = read_table(args.clusters, ("record_id", "person_id"), "clusters")
    stages = Stages(args.quiet)
    stages(f"indexing {len(records_file.frame):,} records")
    try:
        resolver = Resolver(model).fit(records_file.frame, clusters)
    except ValueError as exc:
        raise CliError(f"{args.clusters}: {exc}") from exc
    stages.finish()
    latencies = []
    for subject, tag in zip(subjects, tags):
        started = time.perf_counter()
        result = resolver.resolve(subject)
        latencies.append(time.perf_counter() - started)
        print(json.dumps({**tag, **result.to_dict()}))
    if len(subjects) > 1:
        p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
        print(f"{len(subjects)} subjects: latency p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms", file=sys.stderr)
    return 0


def training_options(p: argparse.ArgumentParser) -> None:
    """The options of a command that may train a matcher (`train-matcher`, `link` without --model)."""
    p.add_argument("--max-pairs-u", type=float, default=5e6, help="random pairs sampled to estimate u (default 5e6)")
    p.add_argument("--seed", type=int, default=42, help="seed for u sampling")
    p.add_argument("--truth", help="truth.csv (record_id, person_key): choose thresholds from measured precision/recall")
    p.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                   help="where Splink's SQL runs: DuckDB in this process (default) or Apache Spark; "
                        "the model file is the same either way")
    p.add_argument("--spark-master", metavar="URL",
                   help="Spark master for --engine spark (default local[2]; e.g. spark://host:7077, yarn, k8s://...)")
    p.add_argument("--quiet", action="store_true")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `train-matcher`, `link` and `resolve` on the top-level subparsers action `sub`."""
    p = sub.add_parser("train-matcher", help="train the Splink matcher on a records file")
    p.add_argument("records", help="records.csv (canonical columns; only record_id required)")
    p.add_argument("--out", required=True, help="model file to write (JSON)")
    training_options(p)
    p.set_defaults(func=cmd_train_matcher)

    p = sub.add_parser("link", help="deduplicate all records into persons")
    p.add_argument("records")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", help="trained matcher (default: train on the input first)")
    p.add_argument("--threshold", type=probability_arg, help="link probability (default: the model's)")
    p.add_argument("--floor", type=probability_arg, default=0.01, help="lowest probability written to pairs.csv (default 0.01)")
    p.add_argument("--previous", help="clusters.csv of an earlier run: keep person ids stable")
    training_options(p)
    p.set_defaults(func=cmd_link)

    p = sub.add_parser("resolve", help="resolve subjects against linked records (JSON out, one result per subject)")
    p.add_argument("--model", required=True, help=f"trained matcher (the committed one: {models.MATCHER})")
    p.add_argument("--records", required=True, help="records.csv")
    p.add_argument("--clusters", required=True, help="clusters.csv from `briefing link` (record_id, person_id)")
    p.add_argument("--query", help='one subject as JSON, e.g. \'{"given_name": "Bob", "approx_age": 40}\'')
    p.add_argument("--queries", help="JSON lines, one subject per line: one result per line on stdout, in order")
    p.add_argument("--incidents", help="incidents.csv of a synthetic county: resolve each incident's subject")
    p.add_argument("--limit", type=positive_int_arg, help="only the first N subjects of --queries / --incidents")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_resolve)
