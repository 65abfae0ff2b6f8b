"""Oversight of the store: `briefing keys create | list | revoke` (api/service/keys.py), `briefing audit verify`
(api/service/audit.py: the keyed chain and its witness), `briefing audit part2-emergencies`
(api/service/part2_report.py: the 42 CFR 2.51(c) fields per program) and `briefing review export-labels`
(api/review/decisions.py: live steward decisions as a labels CSV).

`keys create` prints only the new key on stdout, so `KEY=$(briefing keys create …)` works; everything
else goes to stderr. A responder key needs `--purpose` (api.service.keys.create_key refuses it otherwise).
`audit verify` exits 0 when the chain and the witness hold (warnings on stderr), 1 listing each problem
(`audit chain broken at event N (kind): reason`) on stderr, 2 for bad input. Errors exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from api.cli.common import CliError, expiry_arg
from api.cli.db import current_user, existing_store, open_store_at
from api.review.decisions import export_labels
from api.service.audit import verify
from api.service.keys import KeyRefused, PurposeRequired, create_key, list_keys, revoke_key
from api.service.part2_report import emergency_disclosures, table
from api.service.referrals import program_exists
from api.service.times import parse_when
from scoring.item import Purpose, Role


def cmd_keys_create(args: argparse.Namespace) -> int:
    purposes = args.purpose or []
    store = open_store_at(args.db)
    try:
        key = create_key(store, args.name, Role(args.role), args.agency,
                         [Purpose(p) for p in purposes], args.expires, by=f"cli:{current_user()}")
    except PurposeRequired as exc:
        raise CliError(f"--purpose: {exc}") from exc
    except KeyRefused as exc:
        raise CliError(str(exc)) from exc
    print(key)
    print(f"key {args.name!r} created ({args.role}, {args.agency}, purposes {', '.join(purposes) or 'none'}); "
          "it is shown only this once", file=sys.stderr)
    if Role(args.role) == Role.provider and not program_exists(store, args.agency):
        print(f"note: no program {args.agency!r} is registered yet; this key sees no referral until "
              f"`briefing programs add --name {args.agency}` registers it", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    rows = list_keys(open_store_at(args.db))
    print(f"{'name':24} {'role':13} {'agency':16} {'purposes':30} {'created':26} {'expires':26} revoked")
    for k in rows:
        print(f"{k.name:24} {k.role:13} {k.agency:16} {'|'.join(k.purposes) or '-':30} {k.created_at[:25]:26} "
              f"{(k.expires_at or '-')[:25]:26} {k.revoked_at or '-'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    try:
        revoke_key(open_store_at(args.db), args.name, by=f"cli:{current_user()}")
    except KeyRefused as exc:
        raise CliError(str(exc)) from exc
    print(f"key {args.name!r} revoked", file=sys.stderr)
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    missing = [w for w in args.witness or () if not Path(w).expanduser().is_file()]
    if missing:
        raise CliError(f"{missing[0]}: no such witness file")
    store = open_store_at(args.db)
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
    try:
        since = parse_when(args.since)
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        raise CliError(f"--since / --until: {exc}") from None
    if until is not None and until <= since:
        raise CliError("--until must be after --since")
    found = emergency_disclosures(existing_store(args.db), since, until, args.program)
    if args.format == "table":
        print(table(found) if found else "no 42 CFR 2.51 medical-emergency disclosures in that period")
    else:
        for disclosure in found:
            print(json.dumps(disclosure.to_dict(), ensure_ascii=False))
    print(f"{len(found)} medical-emergency disclosure(s) from {len({d.program for d in found})} program(s)",
          file=sys.stderr)
    return 0


def cmd_review_export_labels(args: argparse.Namespace) -> int:
    try:
        count = export_labels(open_store_at(args.db), args.out, principal=f"cli:{current_user()}")
    except OSError as exc:
        raise CliError(f"{args.out}: cannot write: {exc.strerror or exc}") from exc
    except SQLAlchemyError as exc:
        raise CliError(f"{args.db}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}") from exc
    print(f"{count} labels written to {args.out}", file=sys.stderr)
    return 0


def add_audit_parsers(sub: argparse._SubParsersAction) -> None:
    """`audit verify` and `audit part2-emergencies`."""
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


def add_keys_parsers(sub: argparse._SubParsersAction) -> None:
    """`keys create | list | revoke`."""
    p = sub.add_parser("keys", help="create, list and revoke API keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    q = keys.add_parser("create", help="create a key; prints only the key")
    q.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    q.add_argument("--name", required=True)
    q.add_argument("--role", required=True, choices=[r.value for r in Role])
    q.add_argument("--agency", required=True)
    q.add_argument("--purpose", action="append", choices=[p.value for p in Purpose],
                   help="a purpose this key may claim (repeat for several; a responder key needs at least one)")
    q.add_argument("--expires", type=expiry_arg, help="YYYY-MM-DD or ISO 8601 time; no expiry when absent")
    q.set_defaults(func=cmd_keys_create)
    q = keys.add_parser("list", help="list keys (never the keys themselves)")
    q.add_argument("--db", required=True)
    q.set_defaults(func=cmd_keys_list)
    q = keys.add_parser("revoke", help="revoke a key by name")
    q.add_argument("--db", required=True)
    q.add_argument("--name", required=True)
    q.set_defaults(func=cmd_keys_revoke)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `audit verify | part2-emergencies`, `review export-labels` and `keys create | list | revoke`."""
    add_audit_parsers(sub)
    p = sub.add_parser("review", help="steward review decisions")
    review = p.add_subparsers(dest="review_command", required=True)
    q = review.add_parser("export-labels", help="write live steward decisions as a labels CSV (record_id_l, "
                                                "record_id_r, decision, match_probability, reviewer, decided_at)")
    q.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    q.add_argument("--out", required=True, help="the CSV to write (read by `briefing eval linkage --labels`)")
    q.set_defaults(func=cmd_review_export_labels)
    add_keys_parsers(sub)
