"""Vectorised value checks for the columns of a records file.

:func:`check_columns` takes the raw string columns that :mod:`matching.record_parse` read,
cleans them (surrounding whitespace stripped, empty = null, ``|``-separated parts tidied) and
checks every value with Arrow compute kernels:

* ``record_id`` present and unique;
* ``dob`` in YYYY-MM-DD form; well-formed dates that are impossible (not on the calendar, in
  the future, or before :data:`BIRTH_YEAR_MIN`) are not problems but are listed for nulling;
* ``recorded_at`` an ISO 8601 date or datetime;
* ``birth_year`` a whole year between :data:`BIRTH_YEAR_MIN` and :data:`BIRTH_YEAR_MAX`;
* ``sex`` one of :data:`SEX_VALUES`, any case (upper-cased).

Problems come back as :class:`Issue` (row indices plus a message maker), because turning rows
into file lines is the caller's job (see :mod:`matching.record`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MULTI_VALUE_SEPARATOR = "|"
MULTI_VALUED_COLUMNS: tuple[str, ...] = ("aliases",)
SEX_VALUES: tuple[str, ...] = ("M", "F", "X", "U")
BIRTH_YEAR_MIN = 1850
BIRTH_YEAR_MAX = 2100

_DOB_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_BIRTH_YEAR_RE = r"^[0-9]{1,9}(\.0+)?$"  # "1983.0" (pandas float export) is accepted as 1983
_ISO_RE = (
    r"^(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[Tt ](?P<h>[0-9]{2}):(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,][0-9]+)?)?"
    r"(?:[Zz]|[+-](?P<oh>[0-9]{2})(?::?(?P<om>[0-9]{2}))?)?)?$"
)
_MAX_VALUE_SHOWN = 60
# A "|"-separated value needs tidying when a separator starts or ends it, is doubled, or touches
# a character that is not a letter, number, punctuation or symbol (whitespace, controls, marks).
_UNTIDY_MULTI_RE = (r"^\||\|$|\|\||[^\p{L}\p{N}\p{P}\p{S}]\||\|[^\p{L}\p{N}\p{P}\p{S}]")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


@dataclass
class Issue:
    """A row-level problem found by a vectorised check: the rows (indices into the accepted
    records) and a function making each row's message once line numbers are known."""

    rows: np.ndarray
    column: str
    message: Callable[[int, Callable[[int], int]], str]


@dataclass
class Checked:
    """What :func:`check_columns` found. ``clean`` holds the cleaned columns (``sex``
    upper-cased; impossible dates still in ``dob``); ``birth_year`` is int64 with invalid years
    null, or None if the column was not read."""

    clean: dict[str, pa.ChunkedArray | pa.Array]
    issues: list[Issue]
    impossible_rows: np.ndarray
    birth_year: pa.Array | None


def show(value: object) -> str:
    """A value for a message: ``repr`` of its text, shortened if long."""
    text = str(value)
    if len(text) > _MAX_VALUE_SHOWN:
        text = text[: _MAX_VALUE_SHOWN - 3] + "..."
    return repr(text)


def values_at(values: pa.ChunkedArray | pa.Array, rows: np.ndarray, limit: int) -> list:
    """The values at the first ``limit`` of ``rows``, as Python objects."""
    return values.take(pa.array(rows[:limit], type=pa.int64())).to_pylist()


def check_columns(raw: dict[str, pa.ChunkedArray | pa.Array], today: Callable[[], date],
                  limit: int) -> Checked:
    """Clean and check the columns in ``raw`` (by canonical name). ``today`` gives the date
    after which a ``dob`` is in the future; ``limit`` caps the values fetched for messages."""
    clean = {name: _clean(values) for name, values in raw.items()}
    for name in MULTI_VALUED_COLUMNS:
        if name in clean:
            clean[name] = _clean_multi(clean[name])
    issues: list[Issue] = []

    def add(name: str, mask: np.ndarray, message: Callable[[str], str]) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            shown = dict(zip(rows[:limit].tolist(), values_at(clean[name], rows, limit)))
            issues.append(Issue(rows, name,
                                lambda row, _line_of: message(shown.get(row, ""))))

    # record_id: present and unique
    if "record_id" in clean:
        ids = clean["record_id"]
        empty = _mask(pc.is_null(ids))
        rows = np.flatnonzero(empty)
        if len(rows):
            issues.append(Issue(rows, "record_id", lambda row, _l: (
                "empty value; every record needs a record_id")))
        dup_rows, first_row = _later_duplicates(ids)
        if len(dup_rows):
            issues.append(Issue(dup_rows, "record_id", lambda row, line_of: (
                f"duplicate record_id {show(first_row[row][1])} "
                f"(first on line {line_of(first_row[row][0])})")))

    # dob: YYYY-MM-DD; impossible or future dates become null with a warning
    impossible_rows = np.zeros(0, dtype=np.int64)
    if "dob" in clean:
        dob = clean["dob"]
        well_formed = _mask(pc.match_substring_regex(dob, _DOB_RE))
        add("dob", _mask(pc.is_valid(dob)) & ~well_formed,
            lambda v: f"{show(v)} is not a date in YYYY-MM-DD form")
        y, m, d = (_ints(pc.utf8_slice_codeunits(dob, a, b), well_formed)
                   for a, b in ((0, 4), (5, 7), (8, 10)))
        future = _mask(pc.greater(dob, pa.scalar(today().isoformat())))
        bad = well_formed & (~_valid_ymd(y, m, d) | future | (y < BIRTH_YEAR_MIN))
        impossible_rows = np.flatnonzero(bad)

    # recorded_at: ISO 8601 date or datetime
    if "recorded_at" in clean:
        add("recorded_at", ~_iso_ok(clean["recorded_at"]),
            lambda v: (f"{show(v)} is not an ISO 8601 date or datetime "
                       "(e.g. 2024-05-01 or 2024-05-01T13:45:00Z)"))

    # birth_year: integer in range
    birth_year = None
    if "birth_year" in clean:
        by = clean["birth_year"]
        shaped = _mask(pc.match_substring_regex(by, _BIRTH_YEAR_RE))
        years = _ints(pc.replace_substring_regex(by, r"\.0+$", ""), shaped, fill=0)
        in_range = shaped & (years >= BIRTH_YEAR_MIN) & (years <= BIRTH_YEAR_MAX)
        add("birth_year", _mask(pc.is_valid(by)) & ~in_range,
            lambda v: (f"{show(v)} is not a whole year between {BIRTH_YEAR_MIN} "
                       f"and {BIRTH_YEAR_MAX}"))
        birth_year = pa.array(years, type=pa.int64(), mask=~in_range)

    # sex: M/F/X/U, any case
    if "sex" in clean:
        upper = pc.utf8_upper(clean["sex"])
        ok = _mask(pc.is_in(upper, value_set=pa.array(SEX_VALUES)))
        add("sex", _mask(pc.is_valid(upper)) & ~ok,
            lambda v: f"{show(v)} is not one of {'/'.join(SEX_VALUES)}")
        clean["sex"] = upper

    return Checked(clean, issues, impossible_rows, birth_year)


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
