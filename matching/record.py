"""Read and validate a canonical records CSV (``records.csv``).

One row per record an agency holds about a person. Only ``record_id`` is required; every other
canonical column may be absent (treated as all-null) or empty (empty = null). Unknown columns
are ignored and listed in :attr:`RecordsFile.warnings`. Values are stripped of surrounding
whitespace; whitespace-only means null. Multi-valued fields (``aliases``) use ``|``; their parts
are stripped and empty parts dropped.

A file that cannot be trusted is rejected with :class:`RecordsFileError`, which lists every
problem found (up to :data:`MAX_PROBLEMS`) as ``path:line:column: column_name: message``.
Line numbers are 1-based physical file lines (the header is normally line 1); a record whose
quoted field contains a newline is reported at the line where the record starts. ``column`` is
the 1-based field position in the row. File-level problems (file not found, empty file) have
``line == 0`` and print without a line.

Implementation: values are parsed with pyarrow's multi-threaded CSV reader and checked with
vectorised Arrow compute kernels. Record start lines are only needed to report problems, so the
slower pass with Python's :mod:`csv` module that computes them (and finds ragged rows and an
unterminated quote) runs only when something has to be reported. If the two parsers ever
disagreed on how many records there are, the values are re-read with the :mod:`csv` module so
line numbers stay right. The parsing lives in :mod:`matching.record_parse` and the value checks
in :mod:`matching.record_checks`; this module decodes the file, checks the header, reports
what they find as problems and builds the frame.

Nothing is written anywhere by this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from matching.record_checks import BIRTH_YEAR_MIN, Checked, Issue, check_columns, show, values_at
from matching.record_parse import (
    UTF8_BOM, Structure, columns_from_rows, field_at, line_and_start, quote_never_closed,
    read_columns, scan_structure, split_header,
)

__all__ = [
    "CANONICAL_COLUMNS",
    "DEFAULT_AGENCY",
    "Piece",
    "Problem",
    "RecordsFile",
    "RecordsFileError",
    "file_warnings",
    "read_piece",
    "read_records",
]

CANONICAL_COLUMNS: tuple[str, ...] = (
    "record_id",
    "agency",
    "source_system",
    "given_name",
    "middle_name",
    "family_name",
    "name_suffix",
    "aliases",
    "dob",
    "birth_year",
    "sex",
    "phone",
    "email",
    "street",
    "city",
    "state",
    "postcode",
    "ssn_last4",
    "recorded_at",
)
DEFAULT_AGENCY = "DEFAULT"
#: At most this many problems are kept on a :class:`RecordsFileError` (the total is still counted).
MAX_PROBLEMS = 1000
#: ``str(RecordsFileError)`` shows this many problems, then "... and N more".
SHOWN_PROBLEMS = 20
#: The impossible-date warning names this many example locations.
EXAMPLE_LOCATIONS = 5


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class Problem:
    """One reason a records file was rejected.

    ``line`` is the 1-based file line where the record starts (0 = the file as a whole);
    ``column`` is the 1-based field position in that row, or None when the problem is the whole
    row or file.
    """

    path: str
    line: int
    column: int | None
    column_name: str | None
    message: str

    def __str__(self) -> str:
        location = self.path
        if self.line:
            location += f":{self.line}"
            if self.column is not None:
                location += f":{self.column}"
        if self.column_name is not None:
            return f"{location}: {self.column_name}: {self.message}"
        return f"{location}: {self.message}"


class RecordsFileError(ValueError):
    """A records file was rejected. ``problems`` holds every problem found, up to
    :data:`MAX_PROBLEMS`; ``total_problems`` counts all of them."""

    def __init__(self, problems: Iterable[Problem], total_problems: int | None = None):
        problems = list(problems)
        total = max(total_problems or 0, len(problems))
        super().__init__(problems, total)
        self.problems: list[Problem] = problems
        self.total_problems: int = total

    def __str__(self) -> str:
        shown = self.problems[:SHOWN_PROBLEMS]
        lines = [str(p) for p in shown]
        more = self.total_problems - len(shown)
        if more > 0:
            lines.append(f"... and {more} more")
        return "\n".join(lines)


@dataclass
class RecordsFile:
    """A validated records file.

    ``frame`` has every canonical column in canonical order: dtype object (``str`` or None)
    except ``birth_year`` (pandas nullable ``Int64``). ``present_columns`` lists the canonical
    columns that were in the file and have at least one non-empty value (``agency`` is judged
    before empty agencies become :data:`DEFAULT_AGENCY`).
    """

    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    impossible_dates: int = 0
    present_columns: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- entry point


def read_records(path: str | Path) -> RecordsFile:
    """Read, validate and normalise a canonical records CSV.

    Raises :class:`RecordsFileError` listing every problem found if the file is rejected.
    """
    path_str = str(path)
    piece = read_piece(path_str, _read_bytes(Path(path), path_str))
    if piece.total_problems:
        raise RecordsFileError(piece.problems, piece.total_problems)
    return RecordsFile(piece.frame, file_warnings(path_str, piece.header_warnings, len(piece.frame),
                                                  piece.impossible_dates, piece.impossible_examples),
                       piece.impossible_dates, piece.present_columns)


@dataclass
class Piece:
    """What reading one stretch of a records file (its header, then some of its records) found.

    ``frame`` is None when ``problems`` is not empty; they are in file order, at most
    :data:`MAX_PROBLEMS` of ``total_problems``. ``impossible_examples`` are the first
    :data:`EXAMPLE_LOCATIONS` impossible dates as ``path:line:column value``.
    """

    frame: pd.DataFrame | None
    problems: list[Problem]
    total_problems: int
    header_warnings: list[str]
    impossible_dates: int
    impossible_examples: list[str]
    present_columns: list[str]


def read_piece(path: str, data: bytes, line_shift: int = 0) -> Piece:
    """Read and check ``data``: a header row, then records that start ``line_shift`` physical lines
    further into the file ``path`` than they do in ``data`` (so every reported line is the file's).
    Raises :class:`RecordsFileError` at once for an empty or undecodable stretch; other problems
    are returned. :mod:`matching.record_pieces` reads a large file this way, a stretch at a time."""
    return _Reader(path, data, line_shift).run()


def file_warnings(path: str, header_warnings: list[str], n_rows: int, impossible: int,
                  examples: list[str]) -> list[str]:
    """The warnings of a whole file: the header's, no records, and impossible dates set to null."""
    warnings = list(header_warnings)
    if n_rows == 0:
        warnings.append(f"{path}: the file has a header but no records")
    if impossible:
        more = impossible - min(impossible, EXAMPLE_LOCATIONS)
        warnings.append(
            f"dob: {impossible} impossible date{'s' if impossible != 1 else ''} "
            f"(not on the calendar, in the future, or before {BIRTH_YEAR_MIN}) set to "
            f"null: {', '.join(examples[:EXAMPLE_LOCATIONS])}" + (f" ... and {more} more" if more else ""))
    return warnings


def _today() -> date:
    """Today's date; a function so tests can pin it."""
    return date.today()


# --------------------------------------------------------------------------- internals


def _fail(path: str, message: str, line: int = 0, column: int | None = None,
          column_name: str | None = None) -> RecordsFileError:
    return RecordsFileError([Problem(path, line, column, column_name, message)])


def _read_bytes(p: Path, path_str: str) -> bytes:
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise _fail(path_str, "file not found") from None
    except IsADirectoryError:
        raise _fail(path_str, "is a directory, not a CSV file") from None
    except OSError as exc:
        raise _fail(path_str, f"cannot read file: {exc.strerror or exc}") from None


class _Reader:
    def __init__(self, path: str, data: bytes, line_shift: int = 0):
        self.path = path
        self.data = data
        self.line_shift = line_shift
        self.problems: list[Problem] = []
        self.total_problems = 0
        self.warnings: list[str] = []

    # -- problems -------------------------------------------------------------------------

    def problem(self, line: int, column: int | None, name: str | None, message: str) -> None:
        # Every kind of problem is capped at MAX_PROBLEMS where it is found; the merged list
        # is sorted into file order and capped again in run().
        self.total_problems += 1
        self.problems.append(Problem(self.path, line, column, name, message))

    def location(self, line: int, column: int | None = None) -> str:
        return str(Problem(self.path, line, column, None, "")).removesuffix(": ")

    # -- steps ----------------------------------------------------------------------------

    def run(self) -> Piece:
        text, bom = self.decode()
        if not text or text.isspace():
            raise _fail(self.path, "file is empty")
        found = split_header(text)
        if found is None:  # pragma: no cover - guarded by isspace()
            raise _fail(self.path, "file is empty")
        header, header_line, body_first_line, body_chars = found
        self.body_text = text[body_chars:]
        self.quotes = self.body_text.count('"')
        body_offset = bom + len(text[:body_chars].encode("utf-8"))
        self.body_first_line = body_first_line + self.line_shift
        self.ncols = len(header)

        positions = self.check_header(header, header_line)
        self.positions = positions  # canonical name -> 0-based field index (first occurrence)
        if self.ncols == 0:  # pragma: no cover - csv never yields an empty header row here
            raise _fail(self.path, "header row has no columns", header_line)

        self.structure: Structure | None = None
        self.need_structure = self.quotes % 2 == 1  # maybe an unterminated quote
        raw, n_rows = self.parse_body(memoryview(self.data)[body_offset:])
        if self.need_structure:
            self.get_structure()
            if len(self.structure.good_lines) != n_rows:
                raw, n_rows = self.parse_body_with_csv()

        result = self.check_values(raw, n_rows)
        if result is None:  # the fallback parse replaced the values; check them again
            raw, n_rows = self.parse_body_with_csv()
            result = self.check_values(raw, n_rows)
            assert result is not None
        issues, finish = result

        self.report_structure()
        self.report_issues(issues)
        if self.total_problems:
            self.problems.sort(key=lambda p: (p.line, p.column or 0))
            return Piece(None, self.problems[:MAX_PROBLEMS], self.total_problems, self.warnings, 0, [], [])
        return finish()

    def decode(self) -> tuple[str, int]:
        data = self.data
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise _fail(self.path, "file is UTF-16 encoded; save it as UTF-8", 1, 1)
        bom = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
        # Report whichever comes first: a NUL byte or a byte that is not UTF-8.
        try:
            text = str(memoryview(data)[bom:], "utf-8")
            undecodable = len(data)
        except UnicodeDecodeError as exc:
            text = ""
            undecodable = bom + exc.start
        nul = data.find(b"\x00", 0, undecodable)
        if nul >= 0:
            raise self.bad_byte(nul, bom, "contains a NUL byte; this looks like a binary file, "
                                          "not a UTF-8 CSV")
        if undecodable < len(data):
            raise self.bad_byte(undecodable, bom,
                                f"byte 0x{data[undecodable]:02X} is not valid UTF-8 (a binary "
                                "file, or text in another encoding); save the file as UTF-8")
        return text, bom

    def bad_byte(self, pos: int, bom: int, what: str) -> RecordsFileError:
        line, start = line_and_start(self.data, pos)
        line += self.line_shift  # a shifted stretch's header was read (and decoded) as the file's first
        start = max(start, bom)
        prefix = self.data[start:pos].decode("utf-8", errors="replace")
        column = field_at(prefix)
        return _fail(self.path, f"{what} (byte {pos - start + 1} of the line)", line, column)

    def check_header(self, header: list[str], line: int) -> dict[str, int]:
        positions: dict[str, int] = {}
        seen: dict[str, int] = {}
        unknown: list[str] = []
        canonical = set(CANONICAL_COLUMNS)
        folded = {c.casefold(): c for c in CANONICAL_COLUMNS}
        for index, name in enumerate(header):
            if name and name in seen:
                self.problem(line, index + 1, name,
                             f"duplicate column name (also column {seen[name] + 1})")
                continue
            if name:
                seen[name] = index
            if name in canonical:
                positions[name] = index
            elif not name:
                unknown.append(f"unnamed column {index + 1}")
            else:
                hint = folded.get(name.casefold().replace(" ", "_").replace("-", "_"))
                hint_text = f"; did you mean {hint!r}?" if hint and hint not in header else ""
                unknown.append(f"{name!r} (column {index + 1}{hint_text})")
        if "record_id" not in positions:
            have = ", ".join(repr(h) for h in header[:25]) + (", ..." if len(header) > 25 else "")
            self.problem(line, None, None,
                         f"no record_id column (every file needs one); the header has {have}")
        if unknown:
            self.warnings.append(f"{self.path}:{line}: ignored unknown columns: "
                                 + ", ".join(unknown))
        return positions

    # -- parsing ----------------------------------------------------------------------------

    def parse_body(self, body: memoryview) -> tuple[dict[str, pa.ChunkedArray], int]:
        parsed = read_columns(body, self.ncols, self.positions,
                              newlines_in_values=self.quotes > 0)
        if parsed is None:
            # Empty body, a field larger than a block, ...: the csv module copes with all.
            self.need_structure = True
            return self.parse_body_with_csv()
        raw, n_rows, invalid = parsed
        if invalid:
            self.need_structure = True
        return raw, n_rows

    def parse_body_with_csv(self) -> tuple[dict[str, pa.Array], int]:
        if self.structure is None or self.structure.rows is None:
            self.structure = self.scan_structure(keep_rows=True)
        return columns_from_rows(self.structure.rows or [], self.positions)

    def get_structure(self) -> Structure:
        if self.structure is None:
            self.structure = self.scan_structure(keep_rows=False)
        return self.structure

    def scan_structure(self, keep_rows: bool) -> Structure:
        return scan_structure(self.body_text, self.body_first_line, self.ncols, keep_rows,
                              MAX_PROBLEMS)

    # -- reporting --------------------------------------------------------------------------

    def report_structure(self) -> None:
        if self.structure is None:
            return
        s = self.structure
        for line, found in s.ragged:
            self.problem(line, None, None, f"expected {self.ncols} fields, found {found}")
        self.total_problems += s.ragged_total - len(s.ragged)
        if (self.quotes % 2 == 1 and s.last_start_line is not None
                and quote_never_closed(self.body_text, self.body_first_line,
                                       s.last_start_line)):
            self.problem(s.last_start_line, s.last_width, None,
                         "quoted field is never closed (its opening quote swallows "
                         "the rest of the file)")

    def line_of(self, row: int) -> int:
        return int(self.get_structure().good_lines[row])

    def report_issues(self, issues: list[Issue]) -> None:
        if not issues:
            return
        for issue in issues:
            column = self.positions[issue.column] + 1
            rows = issue.rows
            for row in rows[:MAX_PROBLEMS]:
                self.problem(self.line_of(int(row)), column, issue.column,
                             issue.message(int(row), self.line_of))
            self.total_problems += max(len(rows) - MAX_PROBLEMS, 0)

    # -- values -----------------------------------------------------------------------------

    def check_values(self, raw: dict[str, pa.ChunkedArray | pa.Array], n_rows: int
                     ) -> tuple[list[Issue], Callable[[], RecordsFile]] | None:
        """Vectorised checks. Returns (issues, finish) where ``finish()`` builds the
        :class:`RecordsFile`; or None if the fallback parse had to replace the values."""
        checked = check_columns(raw, _today, MAX_PROBLEMS)
        if checked.issues or checked.impossible_rows.size:
            structure = self.get_structure()  # line numbers are needed
            if len(structure.good_lines) != n_rows and structure.rows is None:
                return None
        return checked.issues, lambda: self.finish(checked, n_rows)

    def finish(self, checked: Checked, n_rows: int) -> Piece:
        clean, impossible_rows = checked.clean, checked.impossible_rows
        impossible = int(impossible_rows.size)
        where: list[str] = []
        if impossible:
            examples = values_at(clean["dob"], impossible_rows[:EXAMPLE_LOCATIONS], MAX_PROBLEMS)
            column = self.positions["dob"] + 1
            where = [f"{self.location(self.line_of(int(r)), column)} {show(v)}"
                     for r, v in zip(impossible_rows[:EXAMPLE_LOCATIONS], examples)]
            keep = np.ones(n_rows, dtype=bool)
            keep[impossible_rows] = False
            clean["dob"] = pc.if_else(pa.array(keep), clean["dob"],
                                      pa.scalar(None, pa.string()))
        present = [name for name in CANONICAL_COLUMNS
                   if name in clean and (name == "record_id" or clean[name].null_count
                                         < len(clean[name]))]
        # Assemble an Arrow table and convert once: Arrow builds pandas' object block
        # directly, which is much faster than converting column by column.
        columns: list[pa.ChunkedArray | pa.Array] = []
        for name in CANONICAL_COLUMNS:
            if name == "birth_year":
                columns.append(checked.birth_year if checked.birth_year is not None
                               else pa.nulls(n_rows, pa.int64()))
            elif name == "agency":
                columns.append(pc.fill_null(clean[name], DEFAULT_AGENCY) if name in clean
                               else pa.array(np.full(n_rows, DEFAULT_AGENCY, dtype=object),
                                             type=pa.string()))
            else:
                columns.append(clean[name] if name in clean
                               else pa.nulls(n_rows, pa.string()))
        columns = [c if isinstance(c, pa.ChunkedArray) else pa.chunked_array([c])
                   for c in columns]
        table = pa.Table.from_arrays(columns, names=list(CANONICAL_COLUMNS))
        frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        return Piece(frame, [], 0, self.warnings, impossible, where, present)
