"""The files commands read, each turned into a `CliError` naming the file (and line and column) when bad:
small tables (`read_table`, through `matching.table`), records files (`load_records`) and matcher models
(`load_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from api.cli.common import CliError
from matching import table
from matching.model import MatcherModel
from matching.record import RecordsFile, RecordsFileError, read_records
from matching.record_pieces import RecordsInPieces, read_records_in_pieces


def read_table(path: str, required: Sequence[str], what: str) -> pd.DataFrame:
    """A small CSV (truth, clusters, demographics) with the required columns, as strings (matching.table)."""
    try:
        return table.read_table(path, required, what)
    except table.TableError as exc:
        raise CliError(str(exc)) from exc


def load_records(path: str) -> RecordsFile:
    """A records file (matching/record.py); a bad one is every `file:line:column: message`."""
    try:
        return read_records(path)
    except RecordsFileError as exc:
        raise CliError(str(exc)) from exc


def load_records_in_pieces(path: str) -> RecordsInPieces:
    """A records file checked a stretch at a time (matching/record_pieces.py), for a run that never holds it
    whole; rejected with the same messages as `load_records`."""
    try:
        return read_records_in_pieces(path)
    except RecordsFileError as exc:
        raise CliError(str(exc)) from exc


def load_model(path: str | Path) -> MatcherModel:
    """A trained matcher file."""
    try:
        return MatcherModel.load(path)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
