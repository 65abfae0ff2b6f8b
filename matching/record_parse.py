"""CSV structure of a records file: header, values, and where each record starts.

Used by :mod:`matching.record`, which owns the column rules and the error reporting; nothing
here knows what a column means or raises :class:`~matching.record.RecordsFileError`.

* :func:`split_header` finds the header row (the first non-blank row) and where the body starts.
* :func:`read_columns` reads the wanted columns of the body as strings with pyarrow's
  multi-threaded CSV reader (the fast path).
* :func:`scan_structure` walks the body with Python's :mod:`csv` module to find the 1-based
  physical line where every record starts, and the ragged rows. It is slower, so it only runs
  when something has to be reported; with ``keep_rows`` it also keeps the values, for the
  fallback when pyarrow cannot read the file or the two parsers disagree on the records
  (:func:`columns_from_rows`).
* :func:`quote_never_closed`, :func:`line_and_start` and :func:`field_at` locate an
  unterminated quote or a bad byte.

Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as for the csv module.
"""

from __future__ import annotations

import csv
import io
import re
from array import array
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

UTF8_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class Structure:
    """Where records start. Computed with the csv module, only when something is reported."""

    good_lines: np.ndarray  # start line of every record with the right number of fields
    ragged: list[tuple[int, int]]  # (start line, fields found), capped
    ragged_total: int
    last_start_line: int | None  # start line of the final record (any width)
    last_width: int
    rows: list[list[str]] | None = None  # only for the fallback parse


def line_and_start(data: bytes, pos: int) -> tuple[int, int]:
    """(1-based line of byte ``pos``, byte offset where that line starts)."""
    prefix = data[:pos]
    line = 1 + prefix.count(b"\n") + prefix.count(b"\r") - prefix.count(b"\r\n")
    start = max(prefix.rfind(b"\n"), prefix.rfind(b"\r")) + 1
    return line, start


def field_at(line_prefix: str) -> int:
    """1-based field position of the character just after ``line_prefix`` (one line)."""
    try:
        row = next(csv.reader([line_prefix]), [])
    except csv.Error:
        row = line_prefix.split(",")
    return max(len(row), 1)


def split_header(text: str) -> tuple[list[str], int, int, int] | None:
    """The header is the first non-blank row. Returns (its fields, stripped; its line; the
    first body line; characters consumed), or None if every row is blank."""
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
    return None


def read_columns(body: memoryview, ncols: int, positions: dict[str, int],
                 newlines_in_values: bool
                 ) -> tuple[dict[str, pa.ChunkedArray], int, int] | None:
    """Read the body with pyarrow. ``positions`` maps each wanted column name to its 0-based
    field index. Returns (values by name, number of records, number of rows skipped for having
    the wrong number of fields), or None if pyarrow cannot read the body at all (empty body,
    a field larger than a block, ...)."""
    names = [f"c{i}" for i in range(ncols)]
    wanted = [names[i] for i in sorted(positions.values())] or names[:1]
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
                newlines_in_values=newlines_in_values,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in wanted},
                include_columns=wanted,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowException:  # any parse failure: the caller re-reads with the csv module
        return None
    raw = {name: table.column(f"c{i}") for name, i in positions.items()}
    return raw, table.num_rows, invalid


def columns_from_rows(rows: list[list[str]], positions: dict[str, int]
                      ) -> tuple[dict[str, pa.Array], int]:
    """The wanted columns of rows kept by :func:`scan_structure`, as :func:`read_columns`
    gives them (values by name, number of records)."""
    raw = {name: pa.array([row[i] for row in rows], type=pa.string())
           for name, i in positions.items()}
    return raw, len(rows)


def scan_structure(body_text: str, body_first_line: int, ncols: int, keep_rows: bool,
                   max_ragged: int) -> Structure:
    """Walk the body with the csv module. Blank rows are skipped; rows without ``ncols``
    fields are ragged (at most ``max_ragged`` are listed, all are counted)."""
    reader = csv.reader(io.StringIO(body_text, newline=""))
    offset = body_first_line - 1
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
                if len(ragged) < max_ragged:
                    ragged.append((start, len(row)))
    finally:
        csv.field_size_limit(limit)
    return Structure(np.frombuffer(good, dtype=np.int64) if len(good) else
                     np.zeros(0, dtype=np.int64),
                     ragged, ragged_total, last_start, last_width, rows)


def quote_never_closed(body_text: str, body_first_line: int, last_start_line: int) -> bool:
    """True if the record starting on ``last_start_line`` opens a quote that the rest of the
    file never closes."""
    lines = io.StringIO(body_text, newline="")
    skip = last_start_line - body_first_line
    tail = "".join(line for i, line in enumerate(lines) if i >= skip)
    try:
        for _ in csv.reader(io.StringIO(tail, newline=""), strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return True
    return False
