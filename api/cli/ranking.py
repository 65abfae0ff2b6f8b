"""`briefing train-ranker DIR --out FILE` and `briefing eval ranking DIR`: the ranking scorecard.

`train-ranker` fits the scorecard on every feedback row of a county and writes its JSON model file
(never a pickle) and RANKER.md beside it, only where `--out` says. `eval ranking` splits the county's
incidents, trains on one part and reports NDCG / MAP of rules, model and both on the other. A missing
directory or file is a `CliError` naming it (exit status 2). `eval ranking` needs the `evaluation` extra.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from api.cli.common import CliError, eval_subparsers, needs_extra, non_negative_int_arg, probability_arg, progress
from evaluation.ranking.county import RankingDataError, load_county
from evaluation.ranking.evaluate import evaluate_ranking, render_text
from evaluation.ranking.card import model_card
from scoring.ranker_fit import fit_ranker
from scoring.rules import Rules, RulesError


def read_evaluation(text: str) -> dict:
    """The JSON of `briefing eval ranking` given to `train-ranker --eval`, checked for what RANKER.md reads."""
    path = Path(text)
    if not path.is_file():
        raise CliError(f"{path}: no such file (--eval: the JSON of `briefing eval ranking`)")
    try:
        evaluation = json.loads(path.read_text(encoding="utf-8"))
        evaluation["ndcg_at_5"]["combined"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CliError(f"{path}: not an `eval ranking` JSON ({exc})") from exc
    return evaluation


def cmd_train_ranker(args: argparse.Namespace) -> int:
    """Train the scorecard on every feedback row of DIR; write its JSON model file and RANKER.md beside it."""
    say = progress(args.quiet)
    if Path(args.out).suffix != ".json":
        raise CliError(f"{args.out}: the ranker is written as JSON (never a pickle): give a path ending in .json")
    evaluation = read_evaluation(args.eval) if args.eval else None
    try:
        rules = Rules.load(args.rules) if args.rules else Rules.load()
        say(f"reading {args.dir}")
        ctx = load_county(args.dir, relevance=False)
        say(f"training on {len(ctx.feedback):,} feedback rows")
        started = time.perf_counter()
        model = fit_ranker(ctx, None, rules, seed=args.seed)
        seconds = time.perf_counter() - started
    except (RankingDataError, RulesError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    except ValueError as exc:
        raise CliError(f"{args.dir}: {exc}") from exc
    model.note_training(seconds=round(seconds, 3), source=str(args.dir))
    out = Path(args.out)
    manifest = json.loads(model.save(out).read_text(encoding="utf-8"))
    card = out.with_name("RANKER.md")
    provenance = (f"All responder feedback of the synthetic county `{args.dir}` "
                  f"(`briefing train-ranker {args.dir} --out {args.out}`).")
    card.write_text(model_card(manifest, evaluation, provenance), encoding="utf-8")
    print(json.dumps({"model": str(out), "sha256": manifest["sha256"], "card": str(card),
                      "rows": model.training_["rows"], "C": model.C, "rank_weight": model.rank_weight,
                      "auc": manifest["metrics"].get("auc"), "log_loss": manifest["metrics"].get("log_loss"),
                      "seconds": round(seconds, 2)}))
    return 0


def cmd_eval_ranking(args: argparse.Namespace) -> int:
    """Split DIR's incidents, train on one part, print and (with --json) write the ranking figures of the other."""
    try:
        rules = Rules.load(args.rules) if args.rules else None
        report = evaluate_ranking(args.dir, seed=args.seed, test_share=args.test_share, bootstrap=args.bootstrap,
                                  rules=rules, progress=progress(args.quiet))
    except (RankingDataError, RulesError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    except ValueError as exc:
        raise CliError(f"{args.dir}: {exc}") from exc
    print(render_text(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `train-ranker DIR` and `eval ranking DIR` (under `eval`) on the top-level subparsers action `sub`."""
    p = sub.add_parser("train-ranker", help="train the ranking scorecard on a county's responder feedback")
    p.add_argument("dir", help="county directory: incidents, records, truth, context_items and feedback CSVs")
    p.add_argument("--out", required=True, help="JSON model file to write (the committed default is models/ranker.json); "
                   "RANKER.md is written beside it")
    p.add_argument("--eval", help="JSON of `briefing eval ranking` to include in RANKER.md")
    p.add_argument("--rules", help="rules TOML (default scoring/rules.toml)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out part used for metrics and settings")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_ranker)

    q = eval_subparsers(sub).add_parser("ranking", help="NDCG / MAP of rules, model and both on held-out incidents")
    q.add_argument("dir", help="county directory (as for train-ranker, plus relevance.csv)")
    q.add_argument("--json", help="write every figure as JSON here")
    q.add_argument("--seed", type=int, default=0, help="split (and bootstrap) seed")
    q.add_argument("--test-share", type=probability_arg, default=0.5, help="share of incidents held out for testing (default 0.5)")
    q.add_argument("--bootstrap", type=non_negative_int_arg, default=1000, help="bootstrap replicates (default 1000)")
    q.add_argument("--rules", help="rules TOML (default scoring/rules.toml)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_eval_ranking)
    needs_extra(q, "evaluation")
