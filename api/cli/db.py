"""The store a command names (`--db`: a SQLite file path or a SQLAlchemy URL), and who runs the command for the
audit log."""

from __future__ import annotations

import getpass
from pathlib import Path

from api.cli.common import CliError
from api.service.store import Store, open_store


def open_store_at(location: str) -> Store:
    """The store at `location` (a SQLite file path or a SQLAlchemy URL), its tables created if need be."""
    return open_store(location).create()


def existing_store(location: str) -> Store:
    """The store at `location`, refusing a SQLite path with no file (rather than making an empty store there)."""
    if "://" not in location and not Path(location).expanduser().is_file():
        raise CliError(f"{location}: no such store (a SQLite file path or a SQLAlchemy URL)")
    return open_store_at(location)


def current_user() -> str:
    """Who runs the command, for the audit log (`unknown` when the system cannot say)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
