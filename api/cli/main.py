"""The `briefing` console script (`api.cli.main:main`; `python -m api.cli` runs it too).

`build_parser` asks each command module for its subcommands (`add_parsers(sub)`); `main` parses,
refuses a command whose optional extra is not installed (`common.require_extra`), runs the command
and turns its `CliError` into one line on stderr and exit status 2, never a traceback. Output cut
short by its reader (`briefing eval linkage … | head`) ends quietly with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from api.cli import admin, evaluate, fairness, linking, ranking, store
from api.cli.common import EXIT_BAD_INPUT, CliError, require_extra

#: The command modules, in the order their commands are listed by `briefing --help`.
COMMANDS = (evaluate, linking, ranking, fairness, store, admin)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="briefing", description="Briefing: who responders are about to meet.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run its command: its exit status, 2 for a `CliError`, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    try:
        require_extra(args)
        return args.func(args)
    except CliError as exc:
        print(f"briefing: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("briefing: interrupted; nothing was written", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return run(argv)
        finally:
            sys.stdout.flush()       # a reader gone away shows here when the output was still buffered
    except BrokenPipeError:
        # As Python's signal docs recommend: send the rest of the output to devnull, so that the
        # interpreter's own flush at exit does not fail again, and exit 1 without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
