"""Store commands: `briefing ingest` (api/ingest.py), `briefing audit verify` (api/audit.py: the keyed chain
and its witness), `briefing audit part2-emergencies` (api/part2_report.py: the 42 CFR 2.51(c) fields per
program), `briefing keys create | list | revoke` (api/keys.py), `briefing purge` (api/retention.py) and
`briefing review export-labels` (api/review.py: live steward decisions as a labels CSV).

`audit verify` exits 0 when the chain and the witness hold (warnings on stderr), 1 listing each problem
(`audit chain broken at event N (kind): reason`) on stderr, 2 for bad input.

`purge` prints one JSON object on stdout: the cutoffs and, per table, how many rows were removed
(`deleted`) or, with `--dry-run`, would be (`would_delete`); warnings go to stderr.

`keys create` prints only the new key on stdout, so `KEY=$(briefing keys create …)` works; everything
else goes to stderr. Errors exit with status 2: one line, or `file:line:column` lines for a load.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from scoring.item import Purpose, Role


def _expiry(text: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or an ISO 8601 time with its offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _store(location: str):
    from api.store import open_store

    return open_store(location).create()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _existing_store(location: str):
    """The store at `location`, refusing a SQLite path with no file (rather than making an empty store there)."""
    from api.cli import CliError

    if "://" not in location and not Path(location).expanduser().is_file():
        raise CliError(f"{location}: no such store (a SQLite file path or a SQLAlchemy URL)")
    return _store(location)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from api.cli import CliError
    from api.keys import KeyRefused, create_key

    purposes = args.purpose or []
    try:
        key = create_key(_store(args.db), args.name, Role(args.role), args.agency, [Purpose(p) for p in purposes],
                         args.expires, by=f"cli:{_user()}")
    except KeyRefused as exc:
        raise CliError(str(exc)) from exc
    print(key)
    print(f"key {args.name!r} created ({args.role}, {args.agency}, purposes {', '.join(purposes) or 'none'}); "
          "it is shown only this once", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from api.keys import list_keys

    rows = list_keys(_store(args.db))
    print(f"{'name':24} {'role':13} {'agency':16} {'purposes':30} {'created':26} {'expires':26} revoked")
    for k in rows:
        print(f"{k.name:24} {k.role:13} {k.agency:16} {'|'.join(k.purposes) or '-':30} {k.created_at[:25]:26} "
              f"{(k.expires_at or '-')[:25]:26} {k.revoked_at or '-'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from api.cli import CliError
    from api.keys import KeyRefused, revoke_key

    try:
        revoke_key(_store(args.db), args.name, by=f"cli:{_user()}")
    except KeyRefused as exc:
        raise CliError(str(exc)) from exc
    print(f"key {args.name!r} revoked", file=sys.stderr)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from api.cli import CliError, Stages, _load_model
    from api.ingest import IngestError, ingest

    model = _load_model(args.model)
    stages = Stages(args.quiet)
    try:
        summary = ingest(_store(args.db), args.files, model, progress=stages, principal=f"cli:{getpass.getuser()}")
    except IngestError as exc:
        raise CliError(f"nothing was written:\n{exc}") from exc
    stages.finish()
    print(json.dumps({k: v for k, v in asdict(summary).items() if k != "review_pairs"} | {"review_pairs": len(summary.review_pairs)}))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from api.audit import verify
    from api.cli import CliError

    missing = [w for w in args.witness or () if not Path(w).expanduser().is_file()]
    if missing:
        raise CliError(f"{missing[0]}: no such witness file")
    store = _store(args.db)
    result = verify(store, [Path(w).expanduser() for w in args.witness or ()])
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.ok:
        after = f" (from after event {result.anchor}, the last removed by retention)" if result.anchor else ""
        scheme = ((f"keyed since event {result.upgraded_at} (unkeyed before it)" if result.upgraded_at else "keyed")
                  + f", {result.witnessed:,} witnessed" if result.keyed else
                  "unkeyed (written before audit keys; the next append upgrades it)")
        print(f"audit chain holds: {result.events:,} events{after}; {scheme} ({store.audit.describe()})")
        return 0
    for problem in result.problems:
        where = f"at event {problem.seq}" if problem.seq is not None else "as a whole"
        print(f"audit chain broken {where} ({problem.kind}): {problem.reason}", file=sys.stderr)
    return 1


def cmd_audit_part2_emergencies(args: argparse.Namespace) -> int:
    from api.cli import CliError
    from api.part2_report import emergency_disclosures, parse_when, table

    try:
        since = parse_when(args.since)
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        raise CliError(f"--since / --until: {exc}") from None
    if until is not None and until <= since:
        raise CliError("--until must be after --since")
    found = emergency_disclosures(_existing_store(args.db), since, until, args.program)
    if args.format == "table":
        print(table(found) if found else "no 42 CFR 2.51 medical-emergency disclosures in that period")
    else:
        for disclosure in found:
            print(json.dumps(disclosure.to_dict(), ensure_ascii=False))
    print(f"{len(found)} medical-emergency disclosure(s) from {len({d.program for d in found})} program(s)",
          file=sys.stderr)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    import getpass
    from pathlib import Path

    from sqlalchemy.exc import SQLAlchemyError

    from api.cli import CliError
    from api.retention import RetentionError, purge

    if "://" not in args.db and not Path(args.db).expanduser().is_file():
        raise CliError(f"{args.db}: no such store (a SQLite file path or a SQLAlchemy URL)")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    try:
        summary = purge(_store(args.db), args.older_than, args.audit_older_than, dry_run=args.dry_run,
                        principal=f"briefing purge ({user})")
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


def cmd_review_export_labels(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from api.cli import CliError
    from api.review import export_labels

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    try:
        count = export_labels(_store(args.db), args.out, principal=f"cli:{user}")
    except OSError as exc:
        raise CliError(f"{args.out}: cannot write: {exc.strerror or exc}") from exc
    except SQLAlchemyError as exc:
        raise CliError(f"{args.db}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}") from exc
    print(f"{count} labels written to {args.out}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from api.serve import serve

    serve(args.db, args.host, args.port, args.workers, args.models, threads=args.threads)
    return 0


def add_parsers(sub) -> None:
    """Register `ingest`, `serve`, `purge`, `audit verify`, `review export-labels` and `keys create | list | revoke`."""
    p = sub.add_parser("ingest", help="load records / context items / consents CSVs into the store, all or nothing")
    p.add_argument("files", nargs="+", help="CSV files; each file's kind is known from its columns")
    p.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    p.add_argument("--model", default="models/matcher.json", help="matcher used to link new records")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("serve", help="serve the HTTP API with gunicorn (index built once, shared by the workers)")
    p.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=2, help="forked worker processes sharing the index copy-on-write")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (more than 1: gunicorn's gthread worker)")
    p.add_argument("--models", default="models", help="directory with matcher.json (and ranker.json)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("purge", help="delete what is past retention (items, consents, feedback, change feed, "
                                     "old audit events), in one audited transaction")
    p.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    p.add_argument("--older-than", type=int, required=True, metavar="DAYS",
                   help="remove items, consents, feedback and change-feed rows older than DAYS days")
    p.add_argument("--audit-older-than", type=int, default=2190, metavar="DAYS",
                   help="remove audit events older than DAYS days (default 2190 = 6 years; less is allowed with a warning)")
    p.add_argument("--dry-run", action="store_true", help="count what would be removed; write nothing")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("audit", help="the tamper-evident audit log")
    audit = p.add_subparsers(dest="audit_command", required=True)
    q = audit.add_parser("verify", help="check the keyed hash chain and its witness: exit 0 if they hold, 1 naming "
                                        "each truncation, deletion or rewrite")
    q.add_argument("--db", required=True)
    q.add_argument("--witness", action="append", metavar="FILE",
                   help="another witness file to check against (a replica's on another machine); repeat for several")
    q.set_defaults(func=cmd_audit_verify)
    q = audit.add_parser("part2-emergencies", help="the 42 CFR 2.51(c) record of each medical-emergency disclosure "
                                                   "of Part 2 items, per disclosing program")
    q.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    q.add_argument("--since", required=True, metavar="ISO", help="from this date or ISO 8601 time (naive: UTC)")
    q.add_argument("--until", metavar="ISO", help="up to (not including) this date or time")
    q.add_argument("--program", help="only this disclosing program (agency)")
    q.add_argument("--format", choices=("jsonl", "table"), default="jsonl",
                   help="one JSON object per disclosure (default) or a table per program")
    q.set_defaults(func=cmd_audit_part2_emergencies)

    p = sub.add_parser("review", help="steward review decisions")
    review = p.add_subparsers(dest="review_command", required=True)
    q = review.add_parser("export-labels", help="write live steward decisions as a labels CSV (record_id_l, "
                                                "record_id_r, decision, match_probability, reviewer, decided_at)")
    q.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    q.add_argument("--out", required=True, help="the CSV to write (read by `briefing eval linkage --labels`)")
    q.set_defaults(func=cmd_review_export_labels)

    p = sub.add_parser("keys", help="create, list and revoke API keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    q = keys.add_parser("create", help="create a key; prints only the key")
    q.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    q.add_argument("--name", required=True)
    q.add_argument("--role", required=True, choices=[r.value for r in Role])
    q.add_argument("--agency", required=True)
    q.add_argument("--purpose", action="append", choices=[p.value for p in Purpose],
                   help="a purpose this key may claim (repeat for several)")
    q.add_argument("--expires", type=_expiry, help="YYYY-MM-DD or ISO 8601 time; no expiry when absent")
    q.set_defaults(func=cmd_keys_create)
    q = keys.add_parser("list", help="list keys (never the keys themselves)")
    q.add_argument("--db", required=True)
    q.set_defaults(func=cmd_keys_list)
    q = keys.add_parser("revoke", help="revoke a key by name")
    q.add_argument("--db", required=True)
    q.add_argument("--name", required=True)
    q.set_defaults(func=cmd_keys_revoke)
