"""The store's data: `briefing ingest` (api/service/ingest.py) and `briefing purge` (api/service/retention.py).

`ingest` loads records / context items / consents CSVs into the store, all or nothing, and prints a JSON
summary. `purge` prints one JSON object on stdout: the cutoffs
and, per table, how many rows were removed (`deleted`) or, with `--dry-run`, would be (`would_delete`);
warnings go to stderr. Errors exit with status 2: one line, or `file:line:column` lines for a load.
The default models are the committed ones (the `models` package), found from any working directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from sqlalchemy.exc import SQLAlchemyError

import models
from api.cli.common import CliError, Stages
from api.cli.inputs import load_model
from api.cli.db import current_user, existing_store, open_store_at
from api.service.ingest import IngestError, ingest
from api.service.retention import RetentionError, purge


def cmd_ingest(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    stages = Stages(args.quiet)
    try:
        summary = ingest(open_store_at(args.db), args.files, model, progress=stages, principal=f"cli:{current_user()}")
    except IngestError as exc:
        raise CliError(f"nothing was written:\n{exc}") from exc
    stages.finish()
    print(json.dumps({k: v for k, v in asdict(summary).items() if k != "review_pairs"} | {"review_pairs": len(summary.review_pairs)}))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    store = existing_store(args.db)
    try:
        summary = purge(store, args.older_than, args.audit_older_than, dry_run=args.dry_run,
                        principal=f"briefing purge ({current_user()})")
    except RetentionError as exc:
        raise CliError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise CliError(f"{args.db}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}") from exc
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps({"dry_run": summary.dry_run, "cutoff": summary.cutoff, "audit_cutoff": summary.audit_cutoff,
                      "would_delete" if summary.dry_run else "deleted": summary.counts(),
                      "audit_anchor": summary.audit_anchor, "audit_event": summary.audit_seq}))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `ingest` and `purge` on the top-level subparsers action `sub`."""
    p = sub.add_parser("ingest", help="load records / context items / consents CSVs into the store, all or nothing")
    p.add_argument("files", nargs="+", help="CSV files; each file's kind is known from its columns")
    p.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    p.add_argument("--model", default=models.MATCHER,
                   help=f"matcher used to link new records (default: the committed {models.MATCHER})")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("purge", help="delete what is past retention (items, consents, feedback, change feed, "
                                     "old audit events), in one audited transaction")
    p.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    p.add_argument("--older-than", type=int, required=True, metavar="DAYS",
                   help="remove items, consents, feedback and change-feed rows older than DAYS days")
    p.add_argument("--audit-older-than", type=int, default=2190, metavar="DAYS",
                   help="remove audit events older than DAYS days (default 2190 = 6 years; less is allowed with a warning)")
    p.add_argument("--dry-run", action="store_true", help="count what would be removed; write nothing")
    p.set_defaults(func=cmd_purge)
