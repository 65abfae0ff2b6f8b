"""The `briefing` command line.

Each subcommand parses its arguments, calls the library (matching / evaluation), and turns
bad input into exit status 2 with a `file:line:column: message` on stderr, never a traceback.
Long steps report progress on stderr; results go to files or stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """A user-facing error: printed as is, exit status 2."""


class Stages:
    """One line per stage on stderr with its elapsed time: progress for steps that are not loops."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.started = time.perf_counter()
        self.current: str | None = None
        self.stage_started = self.started

    def __call__(self, label: str) -> None:
        self.finish()
        self.current, self.stage_started = label, time.perf_counter()
        if not self.quiet:
            print(f"  … {label}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.current and not self.quiet:
            print(f"    done in {time.perf_counter() - self.stage_started:.1f}s", file=sys.stderr, flush=True)
        self.current = None


def _read_table(path: str, required: Sequence[str], what: str):
    """A small CSV (truth, clusters, demographics) with the required columns, as strings."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: no such file ({what})")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise CliError(f"{path}: not a readable CSV ({what}): {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CliError(f"{path}:1: {what} needs column(s) {', '.join(missing)}; found {', '.join(frame.columns) or 'none'}")
    return frame


def _load_records(path: str):
    from matching.record import RecordsFileError, read_records

    try:
        return read_records(path)
    except RecordsFileError as exc:
        raise CliError(str(exc)) from exc


def _load_model(path: str):
    from matching.model import MatcherModel

    try:
        return MatcherModel.load(path)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def probability_arg(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def positive_int_arg(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def as_of_arg(text: str):
    """A day for `synth --as-of`: YYYY-MM-DD or `today` (UTC)."""
    from datetime import date, datetime, timezone

    if text == "today":
        return datetime.now(timezone.utc).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be YYYY-MM-DD or 'today', got {text}") from None


# --------------------------------------------------------------------------- commands


def cmd_synth(args: argparse.Namespace) -> int:
    from evaluation.synth.bias import DEFAULT_GROUP
    from evaluation.synth.county import generate_county

    if args.bias_group and not args.bias:
        raise CliError("--bias-group needs --bias (matching or data)")
    summary = generate_county(args.persons, args.seed, Path(args.out), progress=not args.quiet,
                              bias=args.bias, bias_group=args.bias_group, as_of=args.as_of)
    print(json.dumps({"persons": summary.n_persons, "records": summary.n_records, "incidents": summary.n_incidents,
                      "context_items": summary.n_context_items, "consents": summary.n_consents,
                      "feedback": summary.n_feedback, "seconds": round(summary.seconds, 1), "out": str(args.out),
                      **({"bias": args.bias, "bias_group": args.bias_group or DEFAULT_GROUP[args.bias]} if args.bias else {})}))
    return 0


def _train(records_file, args, stages: Stages, truth=None, floor: float = 0.01):
    """Train a matcher and link with it; with truth, re-choose thresholds from measured precision/recall and re-cluster."""
    from matching.engine import EngineUnavailable
    from matching.link import link_records, recluster
    from matching.train import Matcher, NotTrainable

    engine, spark_master = _engine(args)
    matcher = Matcher(max_pairs_u=args.max_pairs_u, seed=args.seed, engine=engine, spark_master=spark_master)
    try:
        result = link_records(records_file.frame, matcher=matcher, floor=floor, progress=stages, warnings=records_file.warnings)
    except NotTrainable as exc:
        raise CliError(f"{args.records}: {exc}") from exc
    except EngineUnavailable as exc:
        raise CliError(str(exc)) from exc
    if truth is not None:
        from evaluation.thresholds import choose_thresholds

        stages("choosing thresholds from measured precision / recall")
        result.model.thresholds = choose_thresholds(result.clustering.clusters["record_id"], result.pairs, truth)
        recluster(result, progress=stages)
    return result


def _engine(args: argparse.Namespace) -> tuple[str, str | None]:
    """--engine / --spark-master: where Splink's SQL runs (matching/engine.py); checked before any work is done."""
    from matching.engine import spark_available

    if args.spark_master and args.engine != "spark":
        raise CliError("--spark-master needs --engine spark")
    if args.engine == "spark":
        reason = spark_available()
        if reason:
            raise CliError(f"--engine spark: {reason}")
    return args.engine, args.spark_master


def cmd_train_matcher(args: argparse.Namespace) -> int:
    records_file = _load_records(args.records)
    truth = _read_table(args.truth, ("record_id", "person_key"), "truth") if args.truth else None
    stages = Stages(args.quiet)
    result = _train(records_file, args, stages, truth)
    stages.finish()
    result.model.training["impossible_dates"] = records_file.impossible_dates
    result.model.save(args.out)
    print(json.dumps({"model": str(args.out), "version": result.model.version, "thresholds": {
        k: getattr(result.model.thresholds, k) for k in ("link", "review_low", "certain", "probable", "possible")}}))
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    from matching.engine import EngineUnavailable
    from matching.link import link_records, recluster, write_link_outputs

    if args.model and args.truth:
        raise CliError("--truth chooses the thresholds of a model trained here; it cannot be combined with --model")
    records_file = _load_records(args.records)
    model = _load_model(args.model) if args.model else None
    previous = _read_table(args.previous, ("record_id", "person_id"), "previous clusters") if args.previous else None
    truth = _read_table(args.truth, ("record_id", "person_key"), "truth") if args.truth else None
    stages = Stages(args.quiet)
    if model is None:
        result = _train(records_file, args, stages, truth, floor=args.floor)
        if args.threshold is not None or previous is not None:
            recluster(result, threshold=args.threshold, previous=previous, progress=stages)
    else:
        engine, spark_master = _engine(args)
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


def cmd_eval_linkage(args: argparse.Namespace) -> int:
    if (args.clusters is None) != (args.truth is None):
        raise CliError("--clusters and --truth go together: give both (with or without --labels)")
    if args.clusters is None and args.labels is None:
        raise CliError("give --clusters and --truth, or --labels (steward decisions), or all three")
    if args.demographics and args.truth is None:
        raise CliError("--demographics needs --clusters and --truth")
    labels = _load_labels(args.labels) if args.labels else None
    report: dict = {}
    if args.truth is not None:
        from evaluation.report_linkage import linkage_report, render_text

        clusters = _read_table(args.clusters, ("record_id", "person_id"), "clusters")
        truth = _read_table(args.truth, ("record_id", "person_key"), "truth")
        demographics = _read_table(args.demographics, ("person_key",), "demographics") if args.demographics else None
        try:
            report = linkage_report(clusters, truth, demographics)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        print(render_text(report))
    if labels is not None:
        from evaluation.labels import labels_report, render_labels_text

        report["labels"] = labels_report(labels, target_precision=args.target_precision)
        if args.truth is not None:
            print()
        print(render_labels_text(report["labels"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def _load_labels(path: str):
    """Steward labels (evaluation/labels.py); a bad file is exit 2 with every `file:line:column: message`."""
    from evaluation.labels import LabelsFileError, read_labels

    try:
        labels = read_labels(path)
    except LabelsFileError as exc:
        raise CliError(str(exc)) from exc
    if not len(labels.pairs):
        raise CliError(f"{path}: no match / not_a_match decisions to measure ({labels.unsure} unsure ignored)")
    return labels


def _subject(text: str, where: str, columns: dict[str, int] | None = None):
    """Parse and validate one subject (JSON object); errors name `where` (a file:line or --query) and the column.

    The column is the field's position in `text`, or in a CSV header (`columns`: field -> column).
    """
    from pydantic import ValidationError

    from matching.query import Subject, field_messages

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


def _subjects(args: argparse.Namespace) -> tuple[list, list[dict]]:
    """The subjects to resolve from --query, --queries or --incidents, and extra keys per output line."""
    given = [a for a in (args.query, args.queries, args.incidents) if a is not None]
    if len(given) != 1:
        raise CliError("give exactly one of --query JSON, --queries FILE.jsonl or --incidents incidents.csv")
    if args.query is not None:
        return [_subject(args.query, "--query")], [{}]
    path = Path(args.queries or args.incidents)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if args.queries is not None:
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
        subjects = [_subject(line, f"{path}:{n}") for n, line in lines[: args.limit]]
        return subjects, [{} for _ in subjects]
    from evaluation.synth.incidents import incident_queries

    incidents = _read_table(str(path), ("incident_id",), "incidents")
    incidents = incidents.head(args.limit) if args.limit else incidents
    header = {c.removeprefix("subject_"): i for i, c in enumerate(incidents.columns, 1)}
    subjects = [_subject(json.dumps(q), f"{path}:{n}", header) for n, q in enumerate(incident_queries(incidents), 2)]
    return subjects, [{"incident_id": i} for i in incidents["incident_id"]]


def cmd_resolve(args: argparse.Namespace) -> int:
    import numpy as np

    from matching.resolve import Resolver

    subjects, tags = _subjects(args)
    model = _load_model(args.model)
    records_file = _load_records(args.records)
    clusters = _read_table(args.clusters, ("record_id", "person_id"), "clusters")
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


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="briefing", description="Briefing: who responders are about to meet.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate a synthetic county (records, truth, demographics, incidents, context)")
    p.add_argument("--persons", type=positive_int_arg, required=True, help="persons with records")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--bias", choices=("matching", "data"),
                   help="inject a known bias against one group (evaluation/SYNTH.md §8): matching = more typos and "
                        "transliteration variants in its names; data = more police records, more unverified safety flags")
    p.add_argument("--bias-group", choices=("white", "black", "hispanic", "api", "native", "multiple"),
                   help="race/ethnicity the bias targets (default: api for matching, black for data)")
    p.add_argument("--as-of", type=as_of_arg, default=None, metavar="DAY",
                   help="date the county by whole years so that every incident is in the past on DAY "
                        "(YYYY-MM-DD or 'today'; the demo's live service judges policy at today's clock). "
                        "Default: the fixed calendar, so benchmarks are reproducible")
    p.set_defaults(func=cmd_synth)

    def training_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-pairs-u", type=float, default=5e6, help="random pairs sampled to estimate u (default 5e6)")
        p.add_argument("--seed", type=int, default=42, help="seed for u sampling")
        p.add_argument("--truth", help="truth.csv (record_id, person_key): choose thresholds from measured precision/recall")
        p.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                       help="where Splink's SQL runs: DuckDB in this process (default) or Apache Spark; "
                            "the model file is the same either way")
        p.add_argument("--spark-master", metavar="URL",
                       help="Spark master for --engine spark (default local[2]; e.g. spark://host:7077, yarn, k8s://...)")
        p.add_argument("--quiet", action="store_true")

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
    p.add_argument("--model", required=True, help="trained matcher (models/matcher.json)")
    p.add_argument("--records", required=True, help="records.csv")
    p.add_argument("--clusters", required=True, help="clusters.csv from `briefing link` (record_id, person_id)")
    p.add_argument("--query", help='one subject as JSON, e.g. \'{"given_name": "Bob", "approx_age": 40}\'')
    p.add_argument("--queries", help="JSON lines, one subject per line: one result per line on stdout, in order")
    p.add_argument("--incidents", help="incidents.csv of a synthetic county: resolve each incident's subject")
    p.add_argument("--limit", type=positive_int_arg, help="only the first N subjects of --queries / --incidents")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_resolve)

    p = sub.add_parser("eval", help="evaluate against truth")
    eval_sub = p.add_subparsers(dest="what", required=True)
    q = eval_sub.add_parser("linkage", help="pairwise / B-cubed accuracy and error rates by group (against truth); "
                                             "precision / recall at candidate thresholds (from steward labels)")
    q.add_argument("--clusters", help="clusters.csv (record_id, person_id); with --truth")
    q.add_argument("--truth", help="truth.csv (record_id, person_key); with --clusters")
    q.add_argument("--demographics")
    q.add_argument("--labels", help="steward labels CSV (record_id_l, record_id_r, decision, match_probability): "
                                    "precision / recall at candidate thresholds and a recommended link threshold")
    q.add_argument("--target-precision", type=probability_arg, default=0.995,
                   help="precision the recommended threshold must reach on the labels (default 0.995)")
    q.add_argument("--json", help="write every figure as JSON here")
    q.set_defaults(func=cmd_eval_linkage)

    from api.cli_store import add_parsers as add_store_parsers
    from api.cli_ranking import add_parsers as add_ranking_parsers
    from api.cli_fairness import add_parsers as add_fairness_parsers

    add_ranking_parsers(sub)
    add_fairness_parsers(sub)
    add_store_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"briefing: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("briefing: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m api.cli`: run the imported module's main, so its error classes are the ones that
    # the subcommand modules raise (this file would otherwise exist twice, as __main__ and api.cli).
    from api.cli import main as _main

    sys.exit(_main())
