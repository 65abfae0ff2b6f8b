"""`briefing resolve`: who each subject may be, against linked records, one JSON line per subject.

Kept apart from `api.cli.linking` so that `briefing link` never loads the real-time resolver (its index,
compiled scorer and numba). Bad input is a `CliError` (exit status 2, `file:line:column: message`).
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
from api.cli.common import CliError, Stages, positive_int_arg
from api.cli.inputs import load_model, load_records, read_table
from evaluation.synth.incidents import incident_queries
from matching.query import Subject, field_messages
from matching.resolve import Resolver


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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `resolve` on the top-level subparsers action `sub`."""
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
