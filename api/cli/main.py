"""The `briefing` console script (`api.cli.main:main`; `python -m api.cli` runs it too).

`build_parser` asks the command modules for their subcommands (`add_parsers(sub)`); `main` parses,
refuses a command whose optional extra is not installed (`common.require_extra`), runs the command
and turns its `CliError` into one line on stderr and exit status 2, never a traceback. Output cut
short by its reader (`briefing eval linkage … | head`) ends quietly with status 1.

Command modules are loaded by name, only the ones the command line names (`COMMANDS`; as pip loads its
commands): `briefing link` then loads what linking needs, not Flask, gunicorn or scikit-learn, which
would add seconds to every run (BENCHMARKS.md, issue 17). `briefing --help`, or a command line naming
no known command, loads them all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from api.cli.common import EXIT_BAD_INPUT, CliError, require_extra

#: The command modules of `api.cli`, in the order `briefing --help` lists their commands.
MODULES = ("evaluate", "linking", "resolving", "ranking", "fairness", "store", "serving", "admin", "programs", "reporting")
#: Each top-level command and the modules that add it (`eval` gathers several).
COMMANDS = {
    "synth": ("evaluate",), "eval": ("evaluate", "ranking", "fairness"),
    "train-matcher": ("linking",), "link": ("linking",), "resolve": ("resolving",),
    "train-ranker": ("ranking",),
    "ingest": ("store",), "serve": ("serving",), "purge": ("store",),
    "audit": ("admin",), "keys": ("admin",), "review": ("admin",), "programs": ("programs",), "deliver": ("programs",),
    "report": ("reporting",),
}


def _modules_for(argv: Sequence[str] | None) -> list[str]:
    """The command modules `argv` needs: those of its command, or all of them (help, or no known command)."""
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    if command in COMMANDS and "-h" not in argv[:1] and "--help" not in argv[:1]:
        return [m for m in MODULES if m in COMMANDS[command]]
    return list(MODULES)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`'s command (every command when `argv` is None)."""
    parser = argparse.ArgumentParser(prog="briefing", description="Briefing: who responders are about to meet.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _modules_for(argv):
        importlib.import_module(f"api.cli.{name}").add_parsers(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run its command: its exit status, 2 for a `CliError`, 130 when interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
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
