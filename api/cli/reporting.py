"""`briefing report outcomes --db DB --out DIR [--as-of ISO] [--county DIR]`: the referral outcomes report.

Reads the store's referrals, their events and whom the briefings resolved (`evaluation.outcomes.report`) and
writes `DIR/report.html` (self-contained: inline CSS and SVG charts, nothing fetched) and `DIR/report.json`
(`evaluation.outcomes.render`); it prints where, and exits 0. The store is only read. `--as-of` dates the
report (default: the latest time in the data); `--county` names a `briefing synth` directory whose truth.csv
and demographics.csv give the groups the figures are disaggregated by (the fairness audit's fixtures; without
it the report says that nothing is). A missing store, a store without referral tables, a county directory
missing a file or an output path that is a file is a `CliError` naming it (exit status 2). Needs the
`evaluation` extra (matplotlib draws the charts).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from api.cli.common import CliError, expiry_arg, needs_extra, positive_int_arg, subparsers_of
from api.service.store import Store, database_url, open_store
from evaluation.outcomes.render import write_report
from evaluation.outcomes.report import outcomes_report

#: The tables the report reads: a store without them was not made by Briefing (or predates referrals).
TABLES = ("referrals", "referral_events", "briefed_persons", "clusters")
COUNTY_FILES = ("truth.csv", "demographics.csv")


def report_store(location: str) -> Store:
    """The store at `location`, opened for reading: never created, refused when it is missing or not a Briefing
    store with referrals."""
    url = database_url(location)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise CliError(f"{location}: no such store (a SQLite file path or a SQLAlchemy URL)")
    store = open_store(location)
    try:
        present = set(inspect(store.engine).get_table_names())
    except SQLAlchemyError as exc:
        raise CliError(f"{location}: cannot read the store ({exc.__class__.__name__}: {exc})") from exc
    missing = [t for t in TABLES if t not in present]
    if missing:
        raise CliError(f"{location}: not a Briefing store with referrals (no {', '.join(missing)} table)")
    return store


def cmd_report_outcomes(args: argparse.Namespace) -> int:
    store = report_store(args.db)
    county = Path(args.county) if args.county else None
    if county is not None:
        if not county.is_dir():
            raise CliError(f"{county}: no such directory (a county from `briefing synth`)")
        for name in COUNTY_FILES:
            if not (county / name).is_file():
                raise CliError(f"{county / name}: no such file (the groups need {' and '.join(COUNTY_FILES)})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"{out}: not a directory (--out names the directory for report.html and report.json)")
    try:
        report = outcomes_report(store, as_of=args.as_of, county=county, replicates=args.replicates, seed=args.seed)
    except (ValueError, KeyError) as exc:             # a county file without the columns it needs
        raise CliError(f"{county}: {exc}") from exc
    paths = write_report(report, out)
    c = report.contacts
    print(f"{report.facts['referrals']} referrals, {report.facts['tasks']} tasks; {c.engaged_persons} persons engaged, "
          f"{c.included} compared before/after ({c.excluded} left out: a window cut by the data's edges)",
          file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `report outcomes` on the top-level subparsers action `sub`."""
    report = sub.choices.get("report") or sub.add_parser("report", help="descriptive reports over a store")
    group = subparsers_of(report) or report.add_subparsers(dest="what", required=True)
    q = group.add_parser("outcomes", help="referrals and tasks, delays, closure and repeat 911 contacts: HTML + JSON")
    q.add_argument("--db", required=True, help="the store: a SQLite file path or a SQLAlchemy URL")
    q.add_argument("--out", required=True, help="directory for report.html and report.json")
    q.add_argument("--as-of", type=expiry_arg, default=None,
                   help="date the report: YYYY-MM-DD or an ISO 8601 time (default: the latest time in the data)")
    q.add_argument("--county", help="a county directory from `briefing synth` (truth.csv, demographics.csv): "
                                    "disaggregate by group (default: no groups)")
    q.add_argument("--replicates", type=positive_int_arg, default=1000, help="bootstrap replicates (default 1000)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    q.set_defaults(func=cmd_report_outcomes)
    needs_extra(q, "evaluation")
