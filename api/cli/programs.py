"""Receiving programs: `briefing programs add | list | webhook | rotate-secret | requeue` and `briefing deliver`.

`programs add | list` register programs (api/service/referrals.py); `programs webhook` sets a program's
webhook URL and prints its new secret (only on stdout, only this once: `SECRET=$(briefing programs webhook …)`),
`programs rotate-secret` makes a new one while the old one keeps signing for 24 hours (api/service/webhooks.py),
and `programs requeue` sends a program's parked deliveries again once its receiver is fixed. `briefing deliver`
runs a deliverer (api/service/deliverer.py) until interrupted; `briefing serve` runs one itself.

A receiving program is an agency whose `provider` keys (`briefing keys create --role provider --agency NAME`)
work the referrals sent to it. `--part2` marks a 42 CFR Part 2 program: its involvement is then shown to a
referring responder only as "a county co-responder team" and `--public-line`, unless a consent names the
disclosure (scoring/referral_policy.py). Adding a program that exists updates it. Errors exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import datetime, timezone

from sqlalchemy import select

from api.cli.common import CliError
from api.cli.db import current_user, open_store_at
from api.service.deliverer import Deliverer
from api.service.outbox import requeue
from api.service.referrals import program_of, register_program
from api.service.refusals import FieldRefusal, NotFound
from api.service.store import programs
from api.service.webhooks import rotate_secret, set_webhook
from scoring.referral import ProgramKind
from scoring.referral_policy import Program


def cmd_programs_add(args: argparse.Namespace) -> int:
    program = Program(name=args.name, kind=ProgramKind(args.kind), part2=args.part2, public_line=args.public_line)
    try:
        register_program(open_store_at(args.db), program, by=f"cli:{current_user()}")
    except FieldRefusal as exc:
        raise CliError("; ".join(f"--{k.replace('_', '-')}: {v}" for k, v in exc.fields.items())) from exc
    print(f"program {args.name!r} registered ({args.kind}{', Part 2' if args.part2 else ''})", file=sys.stderr)
    return 0


def cmd_programs_list(args: argparse.Namespace) -> int:
    with open_store_at(args.db).engine.connect() as connection:
        rows = [(program_of(r), r.webhook_url) for r in connection.execute(select(programs).order_by(programs.c.name))]
    print(f"{'name':24} {'kind':18} {'part2':6} {'public line':16} webhook")
    for p, url in rows:
        print(f"{p.name:24} {p.kind.value:18} {'yes' if p.part2 else 'no':6} {p.public_line:16} {url or '- (polls)'}")
    return 0


def cmd_programs_webhook(args: argparse.Namespace) -> int:
    try:
        secret = set_webhook(open_store_at(args.db), args.name, args.url, by=f"cli:{current_user()}")
    except FieldRefusal as exc:
        raise CliError(f"--url: {exc.fields['url']}") from exc
    except NotFound as exc:
        raise CliError(f"--name: {exc.message}") from exc
    print(secret)
    print(f"webhook of {args.name!r} set; its signing secret is shown only this once", file=sys.stderr)
    return 0


def cmd_programs_rotate(args: argparse.Namespace) -> int:
    try:
        secret = rotate_secret(open_store_at(args.db), args.name, f"cli:{current_user()}", datetime.now(timezone.utc))
    except NotFound as exc:
        raise CliError(f"--name: {exc.message}") from exc
    print(secret)
    print(f"new secret for {args.name!r}; the old one keeps signing for 24 hours", file=sys.stderr)
    return 0


def cmd_programs_requeue(args: argparse.Namespace) -> int:
    count = requeue(open_store_at(args.db), args.name, datetime.now(timezone.utc))
    print(f"{count} parked deliveries of {args.name!r} requeued", file=sys.stderr)
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.parent:
        threading.Thread(target=_stop_with_parent, args=(args.parent, stop), daemon=True).start()
    print(f"delivering referral events from {args.db} (Ctrl-C or SIGTERM stops)", file=sys.stderr)
    try:
        Deliverer(open_store_at(args.db), poll=args.poll).run(stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _stop_with_parent(parent: int, stop: threading.Event) -> None:
    """Set `stop` once process `parent` is gone (a server killed with SIGKILL leaves no deliverer behind)."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


def _add_program_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    parser.add_argument("--name", required=True, help="the program's agency")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """`programs add | list`."""
    p = sub.add_parser("programs", help="register and list the programs that receive referrals")
    commands = p.add_subparsers(dest="programs_command", required=True)
    q = commands.add_parser("add", help="register (or update) a receiving program")
    _add_program_argument(q)
    q.add_argument("--kind", required=True, choices=[k.value for k in ProgramKind])
    q.add_argument("--part2", action="store_true", help="a 42 CFR Part 2 (substance-use treatment) program")
    q.add_argument("--public-line", required=True, help="the line responders are given to reach it")
    q.set_defaults(func=cmd_programs_add)
    q = commands.add_parser("list", help="list receiving programs")
    q.add_argument("--db", required=True)
    q.set_defaults(func=cmd_programs_list)
    q = commands.add_parser("webhook", help="set a program's webhook URL; prints its new signing secret")
    _add_program_argument(q)
    q.add_argument("--url", required=True, help="https://… (http only with BRIEFING_ALLOW_HTTP_WEBHOOKS=1)")
    q.set_defaults(func=cmd_programs_webhook)
    q = commands.add_parser("rotate-secret", help="a new signing secret; the old one keeps signing for 24 hours")
    _add_program_argument(q)
    q.set_defaults(func=cmd_programs_rotate)
    q = commands.add_parser("requeue", help="send a program's parked deliveries again")
    _add_program_argument(q)
    q.set_defaults(func=cmd_programs_requeue)
    p = sub.add_parser("deliver", help="send referral events to the programs' webhooks until stopped")
    p.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between looks at the outbox when idle")
    p.add_argument("--parent", type=int, help="stop when this process (the server that started it) is gone")
    p.set_defaults(func=cmd_deliver)
