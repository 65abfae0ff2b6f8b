"""In-memory candidate index: blocking keys -> records, with add / update / delete.

Candidates for a query are the records sharing at least one key with it. Keys come from the
model's own prediction blocking rules (every rule that is a conjunction of equalities, in
both orientations), plus partial-query keys for what a call-taker typically has: a
nickname-canonical given name or a phonetic surname with an *approximate* birth year (looked
up at every year within `year_slack` of the estimate), a phone number alone, a phonetic surname
with a postcode.

Storage is built for a million records in well under 2 GB: per key, a sorted array of 64-bit
key hashes and the matching record slots (12 bytes per record per key), looked up by binary
search; records added after the build go to a small hash map beside it. A hash collision can
only add a candidate, which the scorer then rejects. Keys whose bucket holds more than
`max_bucket` records (a shared shelter address, a very common name) are too unspecific to
enumerate and are skipped for that query, reported in `Candidates.skipped_keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import sqlglot
from sqlglot import exp

from matching.scorer import TermFrequencies

#: Keys for partial queries (same column on both sides); see module docstring.
PARTIAL_KEYS: tuple[tuple[str, ...], ...] = (
    ("given_canon", "birth_year"),
    ("given_phonetic", "birth_year"),
    ("family_phonetic", "birth_year"),
    ("given_canon", "family_phonetic"),
    ("given_phonetic", "family_phonetic"),
    ("family_phonetic", "postcode"),
    ("given_canon", "postcode"),
    ("phone",),
    ("family_name",),
)
#: Estimated birth years are looked up at every year within this many of the estimate.
YEAR_SLACK = 3
MAX_BUCKET = 2_000
#: At most this many records are scored per query (most specific keys first): bounds latency.
MAX_SCORED = 1_500
_MIX = 0x100000001B3
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class KeySpec:
    """Query columns `left` must equal record columns `right`, position by position."""

    left: tuple[str, ...]
    right: tuple[str, ...]

    @property
    def name(self) -> str:
        if self.left == self.right:
            return "+".join(self.left)
        return "+".join(f"{a}={b}" for a, b in zip(self.left, self.right))


@dataclass
class Candidates:
    slots: np.ndarray
    skipped_keys: list[str] = field(default_factory=list)


def rule_keys(rule_sql: str) -> KeySpec | None:
    """`l.a = r.b AND l.c = r.d` -> KeySpec((a, c), (b, d)); None for rules that are not such a conjunction."""
    try:
        tree = sqlglot.parse_one(rule_sql, read="duckdb")
    except sqlglot.errors.ParseError:
        return None
    terms = list(tree.flatten()) if isinstance(tree, exp.And) else [tree]
    left, right = [], []
    for term in terms:
        if not isinstance(term, exp.EQ) or not all(isinstance(s, exp.Column) for s in (term.left, term.right)):
            return None
        sides = {term.left.table: term.left.name, term.right.table: term.right.name}
        if set(sides) != {"l", "r"}:
            return None
        left.append(sides["l"])
        right.append(sides["r"])
    return KeySpec(tuple(left), tuple(right))


def key_specs(blocking_rules: Iterable[str], available: set[str]) -> tuple[list[KeySpec], list[str]]:
    """The index's keys: each usable model rule in both orientations, then the partial-query keys.

    Returns the specs and the rules that could not be used (not a conjunction of equalities).
    """
    specs: list[KeySpec] = []
    unusable: list[str] = []

    def add(spec: KeySpec) -> None:
        canonical = frozenset(zip(spec.left, spec.right))
        if set(spec.left) | set(spec.right) <= available and all(
                frozenset(zip(s.left, s.right)) != canonical for s in specs):
            specs.append(spec)

    for rule in blocking_rules:
        spec = rule_keys(rule)
        if spec is None:
            unusable.append(rule)
            continue
        add(spec)
        add(KeySpec(spec.right, spec.left))
    for columns in PARTIAL_KEYS:
        add(KeySpec(columns, columns))
    return specs, unusable


def hash_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable 64-bit hashes of a column's values (as text) and its null mask."""
    null = np.equal(values, None)
    text = np.where(null, "", values).astype(str).astype(object)
    return pd.util.hash_array(text, categorize=len(text) > 1000), null


def combine(hashes: list[np.ndarray]) -> np.ndarray:
    """One key hash from its columns' hashes (multiply-xor, wrapping at 64 bits)."""
    out = hashes[0].copy()
    for h in hashes[1:]:
        out = (out * np.uint64(_MIX)) ^ h
    return out


def _combine_scalars(hashes: list[int]) -> int:
    """`combine` for one key, in Python ints (same result, no numpy overflow warnings)."""
    out = hashes[0]
    for h in hashes[1:]:
        out = ((out * _MIX) & _MASK) ^ h
    return out


class CandidateIndex:
    """Records (standardised columns), their persons, key tables and term frequencies."""

    def __init__(self, specs: list[KeySpec], columns: list[str], tf_columns: list[str], max_bucket: int = MAX_BUCKET,
                 max_scored: int = MAX_SCORED):
        self.specs = specs
        self.max_scored = max_scored
        self.column_names = sorted(set(columns) | {c for s in specs for c in s.left + s.right})
        self.max_bucket = max_bucket
        self.columns: dict[str, np.ndarray] = {c: np.empty(0, dtype=object) for c in self.column_names}
        self.record_ids = np.empty(0, dtype=object)
        self.person_ids = np.empty(0, dtype=object)
        self.alive = np.empty(0, dtype=bool)
        self.size = 0                                   # slots used (alive or deleted)
        self.slot_of: dict[str, int] = {}
        self.person_id_set: set[str] = set()            # every person id ever used (new ids avoid them)
        self.tf = TermFrequencies(tf_columns)
        self._sorted: list[tuple[np.ndarray, np.ndarray]] = []   # per spec: sorted hashes, slots
        self._delta: list[dict[int, list[int]]] = []

    # ---------------------------------------------------------------- building
    def build(self, standardised: Mapping[str, np.ndarray], record_ids: np.ndarray, person_ids: np.ndarray) -> None:
        """Load every record at once (`standardised`: column -> object array, nulls as None)."""
        n = len(record_ids)
        self.columns = {c: _as_object(standardised[c]) if c in standardised else np.full(n, None, dtype=object)
                        for c in self.column_names}
        self.record_ids = _as_object(record_ids)
        self.person_ids = _as_object(person_ids)
        self.alive = np.ones(n, dtype=bool)
        self.size = n
        self.slot_of = {rid: i for i, rid in enumerate(self.record_ids.tolist())}
        if len(self.slot_of) != n:
            raise ValueError("record ids are not unique")
        self.person_id_set = set(self.person_ids.tolist())
        for c in self.tf.counts:
            self.tf.add_frame_column(c, self.columns[c])
        hashed = {c: hash_values(self.columns[c]) for c in {c for s in self.specs for c in s.right}}
        self._sorted, self._delta = [], []
        for spec in self.specs:
            null = np.zeros(n, dtype=bool)
            for c in spec.right:
                null |= hashed[c][1]
            keys = combine([hashed[c][0] for c in spec.right])
            slots = np.flatnonzero(~null).astype(np.int32)
            keys = keys[slots]
            order = np.argsort(keys, kind="stable")
            self._sorted.append((keys[order], slots[order]))
            self._delta.append({})

    # ---------------------------------------------------------------- lookup
    def candidates(self, query: Mapping[str, object], year_slack: int = 0) -> Candidates:
        """Slots of live records sharing a key with `query` (standardised columns, None for null).

        Buckets are taken most specific (smallest) first until `max_scored` records are
        gathered; a bucket that would pass it, or is over `max_bucket`, is skipped and named.
        """
        probes = []
        for k, spec in enumerate(self.specs):
            values = [query.get(c) for c in spec.left]
            if all(v is not None for v in values):
                probes.extend((k, combo) for combo in _expand(spec, values, year_slack))
        if not probes:
            return Candidates(np.empty(0, dtype=np.int32))
        distinct = list({v for _, combo in probes for v in combo})
        value_hash = dict(zip(distinct, hash_values(_objects(distinct))[0].tolist()))
        buckets = []
        for k, combo in probes:
            key = _combine_scalars([value_hash[v] for v in combo])
            keys, slots = self._sorted[k]
            probe = np.uint64(key)
            lo, hi = int(np.searchsorted(keys, probe, "left")), int(np.searchsorted(keys, probe, "right"))
            extra = self._delta[k].get(key, ())
            if hi > lo or extra:
                buckets.append((hi - lo + len(extra), k, slots[lo:hi], extra))
        buckets.sort(key=lambda b: b[0])
        found: list[np.ndarray] = []
        skipped: set[str] = set()
        total = 0
        for size, k, sorted_slots, extra in buckets:
            if size > self.max_bucket or total + size > self.max_scored:
                skipped.add(self.specs[k].name)
                continue
            total += size
            found.append(sorted_slots)
            if extra:
                found.append(np.asarray(extra, dtype=np.int32))
        if not found:
            return Candidates(np.empty(0, dtype=np.int32), sorted(skipped))
        merged = np.unique(np.concatenate(found))
        return Candidates(merged[self.alive[merged]], sorted(skipped))

    def rows(self, slots: np.ndarray) -> "Rows":
        """The records at `slots`, column by column, fetched only when a comparison asks."""
        return Rows(self.columns, slots)

    @property
    def n_records(self) -> int:
        return int(self.alive[: self.size].sum())

    # ---------------------------------------------------------------- changes
    def add(self, record: Mapping[str, object], record_id: str, person_id: str) -> int:
        """Append one standardised record; it is a candidate for the very next lookup."""
        if record_id in self.slot_of:
            raise KeyError(f"record {record_id!r} is already indexed")
        slot = self.size
        if slot >= len(self.record_ids):
            self._grow(max(16, 2 * len(self.record_ids)))
        for c, column in self.columns.items():
            column[slot] = record.get(c)
        self.record_ids[slot] = record_id
        self.person_ids[slot] = person_id
        self.person_id_set.add(person_id)
        for c in self.tf.counts:
            self.tf.add(c, [record.get(c)])
        for spec, delta in zip(self.specs, self._delta):
            values = [record.get(c) for c in spec.right]
            if all(v is not None for v in values):
                delta.setdefault(_hash_key(values), []).append(slot)
        self.slot_of[record_id] = slot
        self.alive[slot] = True
        self.size = slot + 1
        return slot

    def delete(self, record_id: str) -> int:
        """Remove a record from every future answer (its slot is tombstoned)."""
        slot = self.slot_of.pop(record_id)
        self.alive[slot] = False
        for c in self.tf.counts:
            self.tf.add(c, [self.columns[c][slot]], sign=-1)
        return slot

    def persons(self, person_id: str) -> np.ndarray:
        """Live slots of one person (linear scan: used by writes, not by queries)."""
        live = np.flatnonzero(self.alive[: self.size])
        return live[self.person_ids[live] == person_id]

    def _grow(self, capacity: int) -> None:
        def grown(a: np.ndarray, fill) -> np.ndarray:
            out = np.full(capacity, fill, dtype=a.dtype)
            out[: len(a)] = a
            return out
        self.columns = {c: grown(v, None) for c, v in self.columns.items()}
        self.record_ids = grown(self.record_ids, None)
        self.person_ids = grown(self.person_ids, None)
        self.alive = grown(self.alive, False)


def _as_object(values) -> np.ndarray:
    if isinstance(values, pd.Series):
        values = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
    return np.asarray(values, dtype=object)


class Rows(Mapping):
    """Columns of some index slots, sliced lazily and once (a query reads only what its levels need)."""

    def __init__(self, columns: dict[str, np.ndarray], slots: np.ndarray):
        self._columns, self._slots, self._cache = columns, slots, {}

    def __getitem__(self, name: str) -> np.ndarray:
        out = self._cache.get(name)
        if out is None:
            out = self._cache[name] = self._columns[name][self._slots]
        return out

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def _objects(values: list[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _hash_key(values: list[object]) -> int:
    """The key hash of one record's values."""
    return _combine_scalars(hash_values(_objects(values))[0].tolist())


def _expand(spec: KeySpec, values: list[object], year_slack: int) -> list[tuple]:
    """The value combinations to look up for one spec (several when a birth year is approximate)."""
    combos: list[tuple] = [()]
    for column, value in zip(spec.left, values):
        choices = [value]
        if year_slack and column == "birth_year" and isinstance(value, int):
            choices = [value + d for d in range(-year_slack, year_slack + 1)]
        combos = [c + (v,) for c in combos for v in choices]
    return combos
