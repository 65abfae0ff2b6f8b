"""`briefing train-ranker` and `briefing eval ranking`.

Wiring: `api.cli.build_parser` calls `add_parsers(sub)` with its top-level subparsers action,
*after* it has added the `eval` parser (this module adds `ranking` under that `eval`; without one
it creates `eval`). The command functions take the parsed `argparse.Namespace`, return the exit
status, and raise `api.cli.CliError` (imported inside the functions: `api.cli` imports this
module) for bad input — a missing directory or file (named in the message) — which `api.cli.main`
prints and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from api.cli import probability_arg

DEFAULT_OUT = "models/ranker.json"


def _errors():
    from api.cli import CliError

    return CliError


def _progress(quiet: bool):
    return (lambda _msg: None) if quiet else (lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True))


def cmd_train_ranker(args: argparse.Namespace) -> int:
    """Train the scorecard on every feedback row of DIR; write its JSON model file and RANKER.md beside it."""
    from evaluation.ranking import RankingDataError, fit_ranker, load_county, model_card
    from scoring.rules import Rules, RulesError

    CliError = _errors()
    say = _progress(args.quiet)
    if Path(args.out).suffix != ".json":
        raise CliError(f"{args.out}: the ranker is written as JSON (never a pickle): give a path ending in .json")
    evaluation = None
    if args.eval:
        path = Path(args.eval)
        if not path.is_file():
            raise CliError(f"{path}: no such file (--eval: the JSON of `briefing eval ranking`)")
        try:
            evaluation = json.loads(path.read_text(encoding="utf-8"))
            evaluation["ndcg_at_5"]["combined"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CliError(f"{path}: not an `eval ranking` JSON ({exc})") from exc
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
    model.training_["seconds"] = round(seconds, 3)
    model.training_["source"] = str(args.dir)
    out = Path(args.out)
    manifest = json.loads(model.save(out).read_text(encoding="utf-8"))
    card = out.with_name("RANKER.md")
    provenance = (f"All responder feedback of the synthetic county `{args.dir}` "
                  f"(`briefing train-ranker {args.dir}`).")
    card.write_text(model_card(manifest, evaluation, provenance), encoding="utf-8")
    print(json.dumps({"model": str(out), "sha256": manifest["sha256"], "card": str(card),
                      "rows": model.training_["rows"], "C": model.C, "rank_weight": model.rank_weight,
                      "auc": manifest["metrics"].get("auc"), "log_loss": manifest["metrics"].get("log_loss"),
                      "seconds": round(seconds, 2)}))
    return 0


def cmd_eval_ranking(args: argparse.Namespace) -> int:
    """Split DIR's incidents, train on one part, print and (with --json) write the ranking figures of the other."""
    from evaluation.ranking import RankingDataError, evaluate_ranking, render_text
    from scoring.rules import Rules, RulesError

    CliError = _errors()
    try:
        rules = Rules.load(args.rules) if args.rules else None
        report = evaluate_ranking(args.dir, seed=args.seed, test_share=args.test_share, bootstrap=args.bootstrap,
                                  rules=rules, progress=_progress(args.quiet))
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


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _subparsers_of(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public handle on a parser's subparsers
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def add_parsers(sub) -> None:
    """Register `train-ranker DIR` and `eval ranking DIR` on the top-level subparsers action `sub`."""
    p = sub.add_parser("train-ranker", help="train the ranking scorecard on a county's responder feedback")
    p.add_argument("dir", help="county directory: incidents, records, truth, context_items and feedback CSVs")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON model file to write (default {DEFAULT_OUT}); "
                   "RANKER.md is written beside it")
    p.add_argument("--eval", help="JSON of `briefing eval ranking` to include in RANKER.md")
    p.add_argument("--rules", help="rules TOML (default scoring/rules.toml)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out part used for metrics and settings")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_ranker)

    eval_parser = sub.choices.get("eval")
    if eval_parser is None:
        eval_parser = sub.add_parser("eval", help="evaluate against truth")
    eval_sub = _subparsers_of(eval_parser) or eval_parser.add_subparsers(dest="what", required=True)
    q = eval_sub.add_parser("ranking", help="NDCG / MAP of rules, model and both on held-out incidents")
    q.add_argument("dir", help="county directory (as for train-ranker, plus relevance.csv)")
    q.add_argument("--json", help="write every figure as JSON here")
    q.add_argument("--seed", type=int, default=0, help="split (and bootstrap) seed")
    q.add_argument("--test-share", type=probability_arg, default=0.5, help="share of incidents held out for testing (default 0.5)")
    q.add_argument("--bootstrap", type=_non_negative_int, default=1000, help="bootstrap replicates (default 1000)")
    q.add_argument("--rules", help="rules TOML (default scoring/rules.toml)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_eval_ranking)
