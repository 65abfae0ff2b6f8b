"""Small CSV tables of strings with required columns: clusters, truth, previous clusters, labels'
companions, a county's files. One reader, so every command and evaluation words a bad table alike.

`read_table(path, required, what)` returns the table with every cell a string (empty, never NaN) or
raises `TableError` (a ValueError) naming the file, and the line for a missing column:
`PATH: no such file (WHAT)`, `PATH: not a readable CSV (WHAT): …`,
`PATH:1: WHAT needs column(s) a, b; found x, y`. Callers with an error type of their own pass it
(`error=`), a subclass of TableError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd


class TableError(ValueError):
    """A table that is missing, unreadable, or lacks a required column: the message names the file."""


def read_table(path: str | Path, required: Sequence[str], what: str, *, usecols: Sequence[str] | None = None,
               error: type[TableError] = TableError) -> pd.DataFrame:
    """The CSV at `path` as strings, checked to have the `required` columns; `what` names it in errors."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{path}: no such file ({what})")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False,
                            usecols=(lambda c: c in usecols) if usecols is not None else None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not a readable CSV ({what}): {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise error(f"{path}:1: {what} needs column(s) {', '.join(missing)}; found {', '.join(frame.columns) or 'none'}")
    return frame
