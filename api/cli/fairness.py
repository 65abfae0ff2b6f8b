"""`briefing eval fairness DIR --out OUT`: the fairness audit — matcher and ranker — as one report.

The command runs `evaluation.fairness.matcher.matcher_fairness` and `evaluation.fairness.ranker.ranker_fairness`,
writes `OUT/report.html` and `OUT/report.json` (`evaluation.fairness.report.write_report`) and nothing
else unless asked: `--cards DIR` also refreshes the "Disaggregated results" sections of DIR's
MATCHER.md and RANKER.md (`make audit` passes `--cards models`). It prints the verdict table
and exits 0: the verdicts are findings, not errors. A missing directory or input file is a `CliError`
naming it (exit status 2). The default models are the committed ones (the `models` package), wherever
the command runs. Needs the `evaluation` extra.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import models
from api.cli.common import CliError, eval_subparsers, needs_extra, positive_int_arg, progress
from evaluation.fairness.matcher import matcher_fairness
from evaluation.fairness.ranker import ranker_fairness
from evaluation.fairness.report import render_verdict_text, write_report
from scoring.rules import Rules, RulesError

#: What the ranker audit reads from DIR (the matcher audit names its own needs).
REQUIRED = ("incidents.csv", "records.csv", "truth.csv", "demographics.csv", "context_items.csv", "feedback.csv",
            "relevance.csv")


def cmd_eval_fairness(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    say = progress(args.quiet)
    directory = Path(args.dir)
    if not directory.is_dir():
        raise CliError(f"{directory}: no such directory (a county from `briefing synth`)")
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise CliError(f"{directory / missing[0]}: no such file "
                       f"(the fairness audit needs {', '.join(missing)} in {directory})")
    sections = []
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
             "matcher_model": str(args.matcher_model), "ranker_model": str(args.ranker_model),
             "seconds": round(time.perf_counter() - started, 1)}
    cards = {"matcher": Path(args.cards) / "MATCHER.md", "ranker": Path(args.cards) / "RANKER.md"} if args.cards else {}
    paths = write_report(sections, args.out, facts, cards=cards)
    print(render_verdict_text(sections))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `eval fairness DIR` on the top-level subparsers action `sub` (under `eval`)."""
    q = eval_subparsers(sub).add_parser("fairness", help="fairness audit of the matcher and the ranker: HTML + JSON "
                                                         "report, model cards' disaggregated results")
    q.add_argument("dir", help="county directory from `briefing synth` (records, truth, demographics, incidents, "
                               "context items, feedback, relevance)")
    q.add_argument("--out", required=True, help="directory for report.html and report.json")
    q.add_argument("--replicates", type=positive_int_arg, default=500, help="bootstrap replicates (default 500)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap and sampling seed (default 0)")
    q.add_argument("--sample", type=positive_int_arg, default=300,
                   help="incidents re-briefed for the invariance and proxy checks (default 300)")
    q.add_argument("--matcher-model", default=models.MATCHER, help=f"matcher model (default {models.MATCHER})")
    q.add_argument("--clusters", help="clusters.csv of DIR's records (default: the matcher audit links them itself)")
    q.add_argument("--ranker-model", default=models.RANKER, help=f"ranker scorecard (default {models.RANKER})")
    q.add_argument("--rules", help="rules TOML (default scoring/rules.toml)")
    q.add_argument("--cards", help="also refresh the disaggregated results of DIR/MATCHER.md and DIR/RANKER.md "
                                   "(default: write nothing outside --out)", metavar="DIR")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_eval_fairness)
    needs_extra(q, "evaluation")
