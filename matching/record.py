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
line numbers stay right.

Nothing is written anywhere by this module.
"""

from __future__ import annotations

import csv
import io
import re
from array import array
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = [
    "CANONICAL_COLUMNS",
    "DEFAULT_AGENCY",
    "Problem",
    "RecordsFile",
    "RecordsFileError",
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
MULTI_VALUE_SEPARATOR = "|"
MULTI_VALUED_COLUMNS: tuple[str, ...] = ("aliases",)
SEX_VALUES: tuple[str, ...] = ("M", "F", "X", "U")
BIRTH_YEAR_MIN = 1850
BIRTH_YEAR_MAX = 2100
#: At most this many problems are kept on a :class:`RecordsFileError` (the total is still counted).
MAX_PROBLEMS = 1000
#: ``str(RecordsFileError)`` shows this many problems, then "... and N more".
SHOWN_PROBLEMS = 20
#: The impossible-date warning names this many example locations.
EXAMPLE_LOCATIONS = 5

_DOB_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_BIRTH_YEAR_RE = r"^[0-9]{1,9}(\.0+)?$"  # "1983.0" (pandas float export) is accepted as 1983
_ISO_RE = (
    r"^(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[Tt ](?P<h>[0-9]{2}):(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,][0-9]+)?)?"
    r"(?:[Zz]|[+-](?P<oh>[0-9]{2})(?::?(?P<om>[0-9]{2}))?)?)?$"
)
_MAX_VALUE_SHOWN = 60
_UTF8_BOM = b"\xef\xbb\xbf"
# A "|"-separated value needs tidying when a separator starts or ends it, is doubled, or touches
# a character that is not a letter, number, punctuation or symbol (whitespace, controls, marks).
_UNTIDY_MULTI_RE = (r"^\||\|$|\|\||[^\p{L}\p{N}\p{P}\p{S}]\||\|[^\p{L}\p{N}\p{P}\p{S}]")
_LINE_END = re.compile(r"\r\n|\r|\n")


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
    data = _read_bytes(Path(path), path_str)
    return _Reader(path_str, data).run()


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


def _show(value: object) -> str:
    text = str(value)
    if len(text) > _MAX_VALUE_SHOWN:
        text = text[: _MAX_VALUE_SHOWN - 3] + "..."
    return repr(text)


def _line_count_before(data: bytes, pos: int) -> tuple[int, int]:
    """(1-based line of byte ``pos``, byte offset where that line starts). Lines end at
    ``\\n``, ``\\r\\n`` or a lone ``\\r``, as for the csv module."""
    prefix = data[:pos]
    line = 1 + prefix.count(b"\n") + prefix.count(b"\r") - prefix.count(b"\r\n")
    start = max(prefix.rfind(b"\n"), prefix.rfind(b"\r")) + 1
    return line, start


def _field_at(line_prefix: str) -> int:
    """1-based field position of the character just after ``line_prefix`` (one line)."""
    try:
        row = next(csv.reader([line_prefix]), [])
    except csv.Error:
        row = line_prefix.split(",")
    return max(len(row), 1)


@dataclass
class _Issue:
    """A row-level problem found by a vectorised check: the rows (indices into the accepted
    records) and a function making each row's message once line numbers are known."""

    rows: np.ndarray
    column: str
    message: Callable[[int, Callable[[int], int]], str]


@dataclass
class _Structure:
    """Where records start. Computed with the csv module, only when something is reported."""

    good_lines: np.ndarray  # start line of every record with the right number of fields
    ragged: list[tuple[int, int]]  # (start line, fields found), capped
    ragged_total: int
    last_start_line: int | None  # start line of the final record (any width)
    last_width: int
    rows: list[list[str]] | None = None  # only for the fallback parse


class _Reader:
    def __init__(self, path: str, data: bytes):
        self.path = path
        self.data = data
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

    def run(self) -> RecordsFile:
        text, bom = self.decode()
        if not text or text.isspace():
            raise _fail(self.path, "file is empty")
        header, header_line, body_first_line, body_chars = self.split_header(text)
        self.body_text = text[body_chars:]
        self.quotes = self.body_text.count('"')
        body_offset = bom + len(text[:body_chars].encode("utf-8"))
        self.body_first_line = body_first_line
        self.ncols = len(header)

        positions = self.check_header(header, header_line)
        self.positions = positions  # canonical name -> 0-based field index (first occurrence)
        if self.ncols == 0:  # pragma: no cover - csv never yields an empty header row here
            raise _fail(self.path, "header row has no columns", header_line)

        self.structure: _Structure | None = None
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
            raise RecordsFileError(self.problems[:MAX_PROBLEMS], self.total_problems)
        if n_rows == 0:
            self.warnings.append(f"{self.path}: the file has a header but no records")
        return finish()

    def decode(self) -> tuple[str, int]:
        data = self.data
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise _fail(self.path, "file is UTF-16 encoded; save it as UTF-8", 1, 1)
        bom = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
        nul = data.find(b"\x00")
        if nul >= 0:
            raise self.bad_byte(nul, bom, "contains a NUL byte; this looks like a binary file, "
                                          "not a UTF-8 CSV")
        try:
            text = str(memoryview(data)[bom:], "utf-8")
        except UnicodeDecodeError as exc:
            pos = bom + exc.start
            raise self.bad_byte(pos, bom, f"byte 0x{data[pos]:02X} is not valid UTF-8; "
                                          "save the file as UTF-8") from None
        return text, bom

    def bad_byte(self, pos: int, bom: int, what: str) -> RecordsFileError:
        line, start = _line_count_before(self.data, pos)
        start = max(start, bom)
        prefix = self.data[start:pos].decode("utf-8", errors="replace")
        column = _field_at(prefix)
        return _fail(self.path, f"{what} (byte {pos - start + 1} of the line)", line, column)

    def split_header(self, text: str) -> tuple[list[str], int, int, int]:
        """The header is the first non-blank row. Returns (fields, its line, first body line,
        characters consumed)."""
        consumed = 0

        def counting() -> Iterator[str]:
            # Lines end at \r\n, \r or \n, as when the csv module reads io.StringIO(text,
            # newline=""); found lazily so a large file is not copied for its header.
            nonlocal consumed
            for match in _LINE_END.finditer(text):
                line = text[consumed:match.end()]
                consumed = match.end()
                yield line
            if consumed < len(text):
                line = text[consumed:]
                consumed = len(text)
                yield line

        reader = csv.reader(counting())
        previous = 0
        for row in reader:
            if row:
                return [h.strip() for h in row], previous + 1, reader.line_num + 1, consumed
            previous = reader.line_num
        raise _fail(self.path, "file is empty")  # pragma: no cover - guarded by isspace()

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
        names = [f"c{i}" for i in range(self.ncols)]
        wanted = [names[i] for i in sorted(self.positions.values())] or names[:1]
        invalid = 0

        def on_invalid(_row: object) -> str:
            nonlocal invalid
            invalid += 1
            return "skip"

        try:
            table = pacsv.read_csv(
                pa.BufferReader(pa.py_buffer(body)),
                read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=self.quotes > 0,
                    invalid_row_handler=on_invalid,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in wanted},
                    include_columns=wanted,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # Empty body, a field larger than a block, ...: the csv module copes with all.
            self.need_structure = True
            return self.parse_body_with_csv()
        if invalid:
            self.need_structure = True
        raw = {name: table.column(f"c{i}") for name, i in self.positions.items()}
        return raw, table.num_rows

    def parse_body_with_csv(self) -> tuple[dict[str, pa.Array], int]:
        if self.structure is None or self.structure.rows is None:
            self.structure = self.scan_structure(keep_rows=True)
        rows = self.structure.rows or []
        raw = {name: pa.array([row[i] for row in rows], type=pa.string())
               for name, i in self.positions.items()}
        return raw, len(rows)

    def get_structure(self) -> _Structure:
        if self.structure is None:
            self.structure = self.scan_structure(keep_rows=False)
        return self.structure

    def scan_structure(self, keep_rows: bool) -> _Structure:
        reader = csv.reader(io.StringIO(self.body_text, newline=""))
        offset = self.body_first_line - 1
        ncols = self.ncols
        good = array("q")
        ragged: list[tuple[int, int]] = []
        ragged_total = 0
        rows: list[list[str]] | None = [] if keep_rows else None
        previous = 0
        last_start: int | None = None
        last_width = 0
        limit = csv.field_size_limit()
        csv.field_size_limit(2**31 - 1)
        try:
            for row in reader:
                start = previous + 1 + offset
                previous = reader.line_num
                if not row:
                    continue
                last_start, last_width = start, len(row)
                if len(row) == ncols:
                    good.append(start)
                    if rows is not None:
                        rows.append(row)
                else:
                    ragged_total += 1
                    if len(ragged) < MAX_PROBLEMS:
                        ragged.append((start, len(row)))
        finally:
            csv.field_size_limit(limit)
        return _Structure(np.frombuffer(good, dtype=np.int64) if len(good) else
                          np.zeros(0, dtype=np.int64),
                          ragged, ragged_total, last_start, last_width, rows)

    # -- reporting --------------------------------------------------------------------------

    def report_structure(self) -> None:
        if self.structure is None:
            return
        s = self.structure
        for line, found in s.ragged:
            self.problem(line, None, None, f"expected {self.ncols} fields, found {found}")
        self.total_problems += s.ragged_total - len(s.ragged)
        if self.quotes % 2 == 1 and s.last_start_line is not None:
            lines = io.StringIO(self.body_text, newline="")
            skip = s.last_start_line - self.body_first_line
            tail = "".join(line for i, line in enumerate(lines) if i >= skip)
            try:
                for _ in csv.reader(io.StringIO(tail, newline=""), strict=True):
                    pass
            except csv.Error as exc:
                if "unexpected end of data" in str(exc):
                    self.problem(s.last_start_line, s.last_width, None,
                                 "quoted field is never closed (its opening quote swallows "
                                 "the rest of the file)")

    def line_of(self, row: int) -> int:
        return int(self.get_structure().good_lines[row])

    def report_issues(self, issues: list[_Issue]) -> None:
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

    def check_values(self, raw: dict[str, pa.ChunkedArray | pa.Array], n_rows: int):
        """Vectorised checks. Returns (issues, finish) where ``finish()`` builds the
        :class:`RecordsFile`; or None if the fallback parse had to replace the values."""
        clean = {name: _clean(values) for name, values in raw.items()}
        for name in MULTI_VALUED_COLUMNS:
            if name in clean:
                clean[name] = _clean_multi(clean[name])
        issues: list[_Issue] = []

        def values_at(name: str, rows: np.ndarray) -> list:
            return clean[name].take(pa.array(rows[:MAX_PROBLEMS], type=pa.int64())).to_pylist()

        def add(name: str, mask: np.ndarray, message: Callable[[str], str]) -> None:
            rows = np.flatnonzero(mask)
            if len(rows):
                shown = dict(zip(rows[:MAX_PROBLEMS].tolist(), values_at(name, rows)))
                issues.append(_Issue(rows, name,
                                     lambda row, _line_of: message(shown.get(row, ""))))

        # record_id: present and unique
        if "record_id" in clean:
            ids = clean["record_id"]
            empty = _mask(pc.is_null(ids))
            rows = np.flatnonzero(empty)
            if len(rows):
                issues.append(_Issue(rows, "record_id", lambda row, _l: (
                    "empty value; every record needs a record_id")))
            dup_rows, first_row = _later_duplicates(ids)
            if len(dup_rows):
                issues.append(_Issue(dup_rows, "record_id", lambda row, line_of: (
                    f"duplicate record_id {_show(first_row[row][1])} "
                    f"(first on line {line_of(first_row[row][0])})")))

        # dob: YYYY-MM-DD; impossible or future dates become null with a warning
        impossible_rows = np.zeros(0, dtype=np.int64)
        if "dob" in clean:
            dob = clean["dob"]
            well_formed = _mask(pc.match_substring_regex(dob, _DOB_RE))
            add("dob", _mask(pc.is_valid(dob)) & ~well_formed,
                lambda v: f"{_show(v)} is not a date in YYYY-MM-DD form")
            y, m, d = (_ints(pc.utf8_slice_codeunits(dob, a, b), well_formed)
                       for a, b in ((0, 4), (5, 7), (8, 10)))
            today = _today().isoformat()
            future = _mask(pc.greater(dob, pa.scalar(today)))
            bad = well_formed & (~_valid_ymd(y, m, d) | future | (y < BIRTH_YEAR_MIN))
            impossible_rows = np.flatnonzero(bad)

        # recorded_at: ISO 8601 date or datetime
        if "recorded_at" in clean:
            add("recorded_at", ~_iso_ok(clean["recorded_at"]),
                lambda v: (f"{_show(v)} is not an ISO 8601 date or datetime "
                           "(e.g. 2024-05-01 or 2024-05-01T13:45:00Z)"))

        # birth_year: integer in range
        birth_year = None
        if "birth_year" in clean:
            by = clean["birth_year"]
            shaped = _mask(pc.match_substring_regex(by, _BIRTH_YEAR_RE))
            years = _ints(pc.replace_substring_regex(by, r"\.0+$", ""), shaped, fill=0)
            in_range = shaped & (years >= BIRTH_YEAR_MIN) & (years <= BIRTH_YEAR_MAX)
            add("birth_year", _mask(pc.is_valid(by)) & ~in_range,
                lambda v: (f"{_show(v)} is not a whole year between {BIRTH_YEAR_MIN} "
                           f"and {BIRTH_YEAR_MAX}"))
            birth_year = pa.array(years, type=pa.int64(), mask=~in_range)

        # sex: M/F/X/U, any case
        if "sex" in clean:
            upper = pc.utf8_upper(clean["sex"])
            ok = _mask(pc.is_in(upper, value_set=pa.array(SEX_VALUES)))
            add("sex", _mask(pc.is_valid(upper)) & ~ok,
                lambda v: f"{_show(v)} is not one of {'/'.join(SEX_VALUES)}")
            clean["sex"] = upper

        if issues or impossible_rows.size:
            structure = self.get_structure()  # line numbers are needed
            if len(structure.good_lines) != n_rows and structure.rows is None:
                return None

        def finish() -> RecordsFile:
            impossible = 0
            if impossible_rows.size:
                impossible = int(impossible_rows.size)
                examples = values_at("dob", impossible_rows[:EXAMPLE_LOCATIONS])
                column = self.positions["dob"] + 1
                where = ", ".join(
                    f"{self.location(self.line_of(int(r)), column)} {_show(v)}"
                    for r, v in zip(impossible_rows[:EXAMPLE_LOCATIONS], examples))
                more = impossible - min(impossible, EXAMPLE_LOCATIONS)
                self.warnings.append(
                    f"dob: {impossible} impossible date{'s' if impossible != 1 else ''} "
                    f"(not on the calendar, in the future, or before {BIRTH_YEAR_MIN}) set to "
                    f"null: {where}" + (f" ... and {more} more" if more else ""))
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
                    columns.append(birth_year if birth_year is not None
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
            return RecordsFile(frame, self.warnings, impossible, present)

        return issues, finish


# --------------------------------------------------------------------------- vector helpers


def _clean(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Strip surrounding whitespace; empty becomes null."""
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _clean_multi(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Strip each ``|``-separated part, drop empty parts; nothing left becomes null.

    Only values where a separator touches something other than a letter, number, punctuation
    mark or symbol (a superset of "touches whitespace or another separator") go through Python.
    """
    untidy = _mask(pc.match_substring_regex(values, _UNTIDY_MULTI_RE))
    if not untidy.any():
        return values
    rows = np.flatnonzero(untidy)
    fixed = []
    for value in values.take(pa.array(rows, type=pa.int64())).to_pylist():
        parts = (p.strip() for p in value.split(MULTI_VALUE_SEPARATOR))
        fixed.append(MULTI_VALUE_SEPARATOR.join(p for p in parts if p) or None)
    combined = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    positions = np.full(len(combined), -1, dtype=np.int64)
    positions[rows] = np.arange(len(rows))
    replacement = pa.array(fixed, type=pa.string())
    # take() from [replacement..., original...]: untidy rows pick their fixed value.
    index = np.where(positions >= 0, positions, len(rows) + np.arange(len(combined)))
    return pa.concat_arrays([replacement, combined]).take(pa.array(index))


def _mask(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Boolean Arrow result as a numpy bool array (null = False)."""
    filled = pc.fill_null(values, False)
    if isinstance(filled, pa.ChunkedArray):
        if filled.num_chunks == 0:
            return np.zeros(0, dtype=bool)
        filled = filled.combine_chunks()
    return filled.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _ints(values, ok: np.ndarray, fill: int = 1) -> np.ndarray:
    """Cast digit strings to int64 where ``ok``; ``fill`` elsewhere."""
    guarded = pc.if_else(pa.array(ok), values, pa.scalar(None, pa.string()))
    as_int = pc.fill_null(pc.cast(guarded, pa.int64()), fill)
    if isinstance(as_int, pa.ChunkedArray):
        if as_int.num_chunks == 0:
            return np.zeros(0, dtype=np.int64)
        as_int = as_int.combine_chunks()
    return as_int.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _valid_ymd(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    month_ok = (m >= 1) & (m <= 12)
    last_day = _DAYS_IN_MONTH[np.where(month_ok, m, 0)] + ((m == 2) & leap)
    return (y >= 1) & month_ok & (d >= 1) & (d <= last_day)


def _iso_ok(values) -> np.ndarray:
    """True where the value is null or a valid ISO 8601 date / datetime."""
    n = len(values)
    present = _mask(pc.is_valid(values))
    parts = pc.extract_regex(values, _ISO_RE)
    matched = _mask(pc.is_valid(parts)) & present
    if not matched.any():
        return ~present

    def part(name: str, fill: int) -> np.ndarray:
        column = pc.struct_field(parts, name)
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
        return _ints(column, matched, fill)

    y, mo, d = part("y", 1), part("mo", 1), part("d", 1)
    h, mi, s = part("h", 0), part("mi", 0), part("s", 0)
    oh, om = part("oh", 0), part("om", 0)
    ok = (matched & _valid_ymd(y, mo, d) & (h <= 23) & (mi <= 59) & (s <= 59)
          & (oh <= 23) & (om <= 59))
    assert len(ok) == n
    return ok | ~present


def _later_duplicates(ids) -> tuple[np.ndarray, dict[int, tuple[int, str]]]:
    """Rows whose record_id already appeared on an earlier row, and for each such row the
    (first row, value)."""
    counts = pc.value_counts(pc.drop_null(ids))
    if isinstance(counts, pa.ChunkedArray):  # pragma: no cover - version dependent
        counts = counts.combine_chunks()
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return np.zeros(0, dtype=np.int64), {}
    rows = np.flatnonzero(_mask(pc.is_in(ids, value_set=repeated)))
    values = ids.take(pa.array(rows, type=pa.int64())).to_pylist()
    first: dict[str, int] = {}
    later: list[int] = []
    origin: dict[int, tuple[int, str]] = {}
    for row, value in zip(rows.tolist(), values):
        if value in first:
            later.append(row)
            origin[row] = (first[value], value)
        else:
            first[value] = row
    return np.asarray(later, dtype=np.int64), origin
