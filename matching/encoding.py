"""Integer encoding of standardised values, so the resolver compares numbers, not Python objects.

Fetching a million-record column of Python strings for a few hundred candidates touches
scattered objects (and their reference counts) and dominates query time. Instead, each string
gets a code in one `Vocabulary` shared by every column (so `given_name_l = family_name_r` is an
integer comparison), each distinct list (nickname variants, alias tokens) a list code whose
members are string codes, and numbers (birth year) are float64 with NaN for null.

Codes are stable while the process lives: adding records only appends to the vocabulary.
A value seen only in a query gets a temporary code beyond the vocabulary (`Extras`), which
equals nothing indexed but still has its text for string metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from matching.lists import FlatLists
from matching.standardise import LIST_COLUMNS, NUMERIC_COLUMNS
from matching.strings import FEATURES, StringTable

NULL = -1
STR, LIST, NUM = "str", "list", "num"


@dataclass
class Vec:
    """A column of SQL values in one of three kinds, with its NULL mask."""

    kind: str              # STR: string codes, LIST: list codes, NUM: float64
    values: np.ndarray
    null: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Extras:
    """Query-only strings and lists: codes past the vocabulary, valid for one query."""

    strings: dict[int, str] = field(default_factory=dict)
    lists: dict[int, frozenset] = field(default_factory=dict)
    list_lengths: dict[int, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)       # every string this query looked up -> its code


class Vocabulary:
    """Strings and lists <-> integer codes, shared by all columns of an index."""

    def __init__(self) -> None:
        self.strings = StringTable()
        self._constants: dict[str, int] = {}        # a model's literals found in the table (`find_constant`)
        self.lists: list[frozenset] = []           # members as string codes
        self.list_lengths: list[int] = []          # element count, duplicates included (DuckDB's array_length)
        self._list_code: dict[tuple[int, ...], int] = {}
        self.flat_lists = FlatLists([])            # the lists made before `freeze`, for the compiled list functions

    def __len__(self) -> int:
        return len(self.strings)

    # ------------------------------------------------------------- adding
    def code(self, value: str) -> int:
        return self.strings.code(value)

    def freeze(self) -> None:
        """Hold the strings and lists added so far in flat buffers that forked workers share (`matching.strings`,
        `matching.lists`)."""
        self.strings.freeze()
        self.flat_lists = FlatLists(self.lists)

    def list_code(self, values) -> int:
        members = tuple(self.code(v) for v in values if v is not None)
        found = self._list_code.get(members)
        if found is None:
            found = self._list_code[members] = len(self.lists)
            self.lists.append(frozenset(members))
            self.list_lengths.append(len(members))
        return found

    def encode(self, values: np.ndarray, kind: str) -> np.ndarray:
        """Encode a column (object array, None for null); new values are added."""
        if kind == NUM:
            return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        keyed = values
        if kind == LIST:
            keyed = np.empty(len(values), dtype=object)
            keyed[:] = [None if v is None else tuple(v) for v in values]
        codes, uniques = pd.factorize(pd.Series(keyed, dtype=object), use_na_sentinel=True)
        mapping = np.array([self.code(u) if kind == STR else self.list_code(u) for u in uniques] + [NULL], dtype=np.int32)
        return mapping[codes]

    # ------------------------------------------------------------- queries
    def find(self, value: str, extras: Extras) -> int:
        """The code of `value`, or a temporary one in `extras` if no record has it."""
        found = extras.codes.get(value)
        if found is None:
            self.prefetch([value], extras)
            found = extras.codes[value]
        return found

    def find_constant(self, value: str, extras: Extras) -> int:
        """`find` for a model's string literals ('JR', 'X'): a code in the table never changes, so it is kept."""
        found = self._constants.get(value)
        if found is None:
            found = self.find(value, extras)
            if found < len(self.strings):
                self._constants[value] = found
        return found

    def prefetch(self, values: list[str], extras: Extras) -> None:
        """Look up many of a query's strings at once (one bisection of the vocabulary's hashes), into `extras`."""
        values = [v for v in dict.fromkeys(values) if v not in extras.codes]
        for value, found in zip(values, self.strings.get_many(values)):
            if found is None:
                found = len(self.strings) + len(extras.strings)
                extras.strings[found] = value
            extras.codes[value] = found

    def find_list(self, values, extras: Extras) -> int:
        members = tuple(self.find(v, extras) for v in values if v is not None)
        found = self._list_code.get(members)
        if found is not None:
            return found
        code = len(self.lists) + len(extras.lists)
        extras.lists[code] = frozenset(members)
        extras.list_lengths[code] = len(members)
        return code

    def encode_query(self, row: Mapping[str, object], kinds: Mapping[str, str], extras: Extras) -> dict[str, Vec]:
        """One standardised query as length-1 vectors, without growing the vocabulary."""
        self.prefetch([v for name, kind in kinds.items() if (v := row.get(name)) is not None and kind == STR]
                      + [m for name, kind in kinds.items() if kind == LIST for m in (row.get(name) or ()) if m is not None],
                      extras)
        out = {}
        for name, kind in kinds.items():
            value = row.get(name)
            if value is None:
                out[name] = _NULL_QUERY[kind]
            elif kind == NUM:
                out[name] = Vec(kind, np.array([float(value)]), _PRESENT)
            else:
                code = self.find(value, extras) if kind == STR else self.find_list(value, extras)
                out[name] = Vec(kind, np.array([code], dtype=np.int64), _PRESENT)
        return out

    # ------------------------------------------------------------- decoding
    def decode(self, codes: np.ndarray, extras: Extras | None = None) -> np.ndarray:
        """The strings of many (non-null) codes, as an object array."""
        n = len(self.strings)
        out = np.empty(len(codes), dtype=object)
        known = codes < n
        if known.all():
            out[:] = self.strings.take(codes)
            return out
        out[known] = self.strings.take(codes[known])
        out[~known] = [extras.strings[int(c)] for c in codes[~known]]
        return out

    def feature(self, name: str, codes: np.ndarray, extras: Extras | None = None) -> np.ndarray:
        """A number of each (non-null) code's string (`matching.strings.FEATURES`), query-only codes included."""
        known = codes < len(self.strings)
        if known.all():
            return self.strings.feature(name, codes)
        out = np.empty(len(codes), dtype=np.float64)
        out[known] = self.strings.feature(name, codes[known])
        out[~known] = [FEATURES[name](extras.strings[int(c)]) for c in codes[~known]]
        return out

    def members(self, code: int, extras: Extras | None = None) -> frozenset:
        return self.lists[code] if code < len(self.lists) else extras.lists[code]

    def length(self, code: int, extras: Extras | None = None) -> int:
        return self.list_lengths[code] if code < len(self.lists) else extras.list_lengths[code]


def _constant(values: list, dtype) -> np.ndarray:
    """A read-only array, shared by every query (a write to it would raise, not leak into the next query)."""
    out = np.array(values, dtype=dtype)
    out.flags.writeable = False
    return out


# Codes stay int32 here: `np.ascontiguousarray(..., np.int64)` before a compiled call then copies them, and numba
# never sees a read-only array (another signature, compiled in a request). Vecs are not reassigned after creation.
_PRESENT = _constant([False], np.bool_)
#: A query's NULL of each kind, shared.
_NULL_QUERY = {kind: Vec(kind, _constant([np.nan], np.float64) if kind == NUM else _constant([NULL], np.int32),
                         _constant([True], np.bool_)) for kind in (STR, LIST, NUM)}


def column_kind(name: str) -> str:
    """How a standardised column is encoded: LIST, NUM or STR."""
    return LIST if name in LIST_COLUMNS else NUM if name in NUMERIC_COLUMNS else STR


def vec(kind: str, values: np.ndarray) -> Vec:
    """A Vec over encoded values, with its null mask."""
    null = np.isnan(values) if kind == NUM else values < 0
    return Vec(kind, values, null)
