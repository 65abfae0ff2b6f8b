"""`briefing eval fairness DIR --out OUT`: the fairness audit — matcher and ranker — as one report.

Wiring: `api.cli.build_parser` calls `add_parsers(sub)` with its top-level subparsers action after the
`eval` parser exists (as `api.cli_ranking` does); this module adds `fairness` under `eval`. The command
runs `evaluation.fairness_matcher.matcher_fairness` (when that module is present) and
`evaluation.fairness_ranker.ranker_fairness`, writes `OUT/report.html` and `OUT/report.json`
(`evaluation.fairness_report.write_report`), refreshes the "Disaggregated results" sections of the
model cards (`--cards DIR`, default `models`; `--no-cards` leaves them alone), prints the verdict table
and exits 0: the verdicts are findings, not errors. A missing directory or input file is `api.cli.CliError`
naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: What the ranker audit reads from DIR (the matcher audit names its own needs).
REQUIRED = ("incidents.csv", "records.csv", "truth.csv", "demographics.csv", "context_items.csv", "feedback.csv",
            "relevance.csv")


def _matcher_audit():
    """`matcher_fairness`, or None while `evaluation.fairness_matcher` does not exist."""
    try:
        from evaluation.fairness_matcher import matcher_fairness
    except ModuleNotFoundError as exc:
        if exc.name != "evaluation.fairness_matcher":
            raise
        return None
    return matcher_fairness


def cmd_eval_fairness(args: argparse.Namespace) -> int:
    from api.cli import CliError
    from evaluation.fairness_ranker import ranker_fairness
    from evaluation.fairness_report import render_verdict_text, write_report
    from scoring.rules import Rules, RulesError

    started = time.perf_counter()
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True))
    directory = Path(args.dir)
    if not directory.is_dir():
        raise CliError(f"{directory}: no such directory (a county from `briefing synth`)")
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise CliError(f"{directory / missing[0]}: no such file "
                       f"(the fairness audit needs {', '.join(missing)} in {directory})")
    sections = []
    matcher_fairness = _matcher_audit()
    if matcher_fairness is not None:
        say("matcher audit")
        try:
            sections.append(matcher_fairness(directory, model_path=args.matcher_model, clusters=args.clusters,
                                             replicates=args.replicates, seed=args.seed))
        except (ValueError, FileNotFoundError) as exc:
            raise CliError(str(exc)) from exc
    try:
        rules = Rules.load(args.rules) if args.rules else None
        sections.append(ranker_fairness(directory, rules=rules, model=args.ranker_model, replicates=args.replicates,
                                        seed=args.seed, sample=args.sample, progress=say))
    except (RulesError, FileNotFoundError, ValueError) as exc:      # RankingDataError is a ValueError
        raise CliError(str(exc)) from exc
    facts = {"county_dir": str(directory), "replicates": args.replicates, "seed": args.seed,
             "matcher_model": args.matcher_model, "ranker_model": args.ranker_model,
             "matcher_audit": "included" if matcher_fairness is not None else
             "not run: evaluation/fairness_matcher.py is not installed",
             "seconds": round(time.perf_counter() - started, 1)}
    cards = {} if args.no_cards else {"matcher": Path(args.cards) / "MATCHER.md", "ranker": Path(args.cards) / "RANKER.md"}
    paths = write_report(sections, args.out, facts, cards=cards)
    print(render_verdict_text(sections))
    if matcher_fairness is None:
        print("matcher audit not run: evaluation/fairness_matcher.py is not installed")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_parsers(sub) -> None:
    """Register `eval fairness DIR` on the top-level subparsers action `sub` (under `eval`)."""
    from api.cli_ranking import _subparsers_of

    eval_parser = sub.choices.get("eval") or sub.add_parser("eval", help="evaluate against truth")
    eval_sub = _subparsers_of(eval_parser) or eval_parser.add_subparsers(dest="what", required=True)
    q = eval_sub.add_parser("fairness", help="fairness audit of the matcher and the ranker: HTML + JSON report, "
                                             "model cards' disaggregated results")
    q.add_argument("dir", help="county directory from `briefing synth` (records, truth, demographics, incidents, "
                               "context items, feedback, relevance)")
    q.add_argument("--out", required=True, help="directory for report.html and report.json")
    q.add_argument("--replicates", type=_positive_int, default=500, help="bootstrap replicates (default 500)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap and sampling seed (default 0)")
    q.add_argument("--sample", type=_positive_int, default=300,
                   help="incidents re-briefed for the invariance and proxy checks (default 300)")
    q.add_argument("--matcher-model", default="models/matcher.json", help="matcher model (default models/matcher.json)")
    q.add_argument("--clusters", help="clusters.csv of DIR's records (default: the matcher audit links them itself)")
    q.add_argument("--ranker-model", default="models/ranker.json", help="ranker scorecard (default models/ranker.json)")
    q.add_argument("--rules", help="rules TOML (default scoring/rules.toml)")
    q.add_argument("--cards", default="models", help="directory of MATCHER.md and RANKER.md to refresh (default models)")
    q.add_argument("--no-cards", action="store_true", help="leave the model cards alone")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_eval_fairness)
