"""`briefing train-matcher` and `briefing link`: record linkage from the command line (`resolve`: `api.cli.resolving`).

Each command parses its arguments, calls the library (matching/), and turns bad input into a
`CliError` (exit status 2, `file:line:column: message` on stderr). Long steps report progress on
stderr (`Stages`); results go to files (`--out`).
"""

from __future__ import annotations

import argparse
import json

from api.cli.common import CliError, Stages, probability_arg
from api.cli.inputs import load_model, load_records, load_records_in_pieces, read_table
from matching.link import link_records, recluster, write_link_outputs
from matching.record import RecordsFile, RecordsFileError
from matching.record_pieces import RecordsInPieces
from matching.spark_link import link_on_spark, write_spark_outputs
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
        result.model.thresholds = choose_thresholds(result.clustering.clusters["record_id"], result.pairs, truth,
                                                    identities=result.identities)
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
    on_spark_with_model = bool(args.model) and engine_of(args)[0] == "spark"
    # On Spark with a model the file is checked a stretch at a time and handed on the same way.
    records_file = load_records_in_pieces(args.records) if on_spark_with_model else load_records(args.records)
    model = load_model(args.model) if args.model else None
    previous = read_table(args.previous, ("record_id", "person_id"), "previous clusters") if args.previous else None
    truth = read_table(args.truth, ("record_id", "person_key"), "truth") if args.truth else None
    stages = Stages(args.quiet)
    if on_spark_with_model:
        return _link_on_spark(records_file, model, previous, args, stages, args.spark_master)
    if model is None:
        result = train(records_file, args, stages, truth, floor=args.floor)
        if args.threshold is not None or previous is not None:
            recluster(result, threshold=args.threshold, previous=previous, progress=stages)
    else:
        result = link_records(records_file.frame, model=model, threshold=args.threshold, floor=args.floor,
                              previous=previous, progress=stages, warnings=records_file.warnings)
    stages.finish()
    _describe_input(result.summary, records_file, args)
    write_link_outputs(result, args.out)
    return _report(result.summary)


def _link_on_spark(records_file: RecordsInPieces, model, previous, args: argparse.Namespace, stages: Stages,
                   spark_master: str | None) -> int:
    """`briefing link --engine spark --model M`: records, pairs and persons stay on the executors (matching.spark_link).
    A failure inside Spark (an executor without Briefing's packages, a lost executor) is one line, not a JVM trace."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        result = link_on_spark(records_file, model, threshold=args.threshold, floor=args.floor, previous=previous,
                               progress=stages, warnings=records_file.warnings, spark_master=spark_master)
        stages.finish()
        _describe_input(result.summary, records_file, args)
        write_spark_outputs(result, args.out)
    except (EngineUnavailable, RecordsFileError) as exc:  # RecordsFileError: the file changed while being read
        raise CliError(str(exc)) from exc
    except (PySparkException, Py4JJavaError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CliError(f"--engine spark: Spark failed, nothing was written to {args.out}: {first}") from exc
    return _report(result.summary)


def _describe_input(summary: dict, records_file: RecordsFile | RecordsInPieces, args: argparse.Namespace) -> None:
    summary["impossible_dates"] = records_file.impossible_dates
    summary["input"] = {"file": str(args.records), "columns_present": records_file.present_columns}


def _report(summary: dict) -> int:
    print(json.dumps({k: summary[k] for k in ("records", "persons", "pairs_linked", "pairs_in_review_band", "seconds")}))
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
    """Register `train-matcher` and `link` on the top-level subparsers action `sub`."""
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
