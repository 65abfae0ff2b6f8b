"""`briefing serve`: the HTTP API under gunicorn (api/web/serve.py), the index built once in the master and
shared by the forked workers. Its own module, so that no other command loads Flask and gunicorn.
The default models are the committed ones (the `models` package), found from any working directory.
"""

from __future__ import annotations

import argparse

import models
from api.web.serve import serve


def cmd_serve(args: argparse.Namespace) -> int:
    serve(args.db, args.host, args.port, args.workers, args.models, threads=args.threads, deliver=not args.no_deliver)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `serve` on the top-level subparsers action `sub`."""
    p = sub.add_parser("serve", help="serve the HTTP API with gunicorn (index built once, shared by the workers)")
    p.add_argument("--db", required=True, help="store: a SQLite file path or a SQLAlchemy URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=2, help="forked worker processes sharing the index copy-on-write")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (more than 1: gunicorn's gthread worker)")
    p.add_argument("--models", default=models.DIRECTORY,
                   help=f"directory with matcher.json (and ranker.json) (default: the committed {models.DIRECTORY})")
    p.add_argument("--no-deliver", action="store_true",
                   help="run no webhook deliverer here (one runs elsewhere: `briefing deliver`)")
    p.set_defaults(func=cmd_serve)
