"""In-memory candidate index: blocking keys -> records, with add / update / delete.

Candidates for a query are the records sharing at least one key with it. Keys come from the
model's own prediction blocking rules (every rule that is a conjunction of equalities, in
both orientations), plus partial-query keys for what a call-taker typically has: a
nickname-canonical or phonetic given name, or a phonetic surname, with an *approximate* birth
year (looked up at every year within `YEAR_SLACK` of the estimate); a phone number alone; a
surname alone; a phonetic surname or a canonical given name with a postcode.

Records are stored integer-encoded (`matching.encoding`), their record and person ids as codes
into flat string tables (`matching.strings`), so queries leave the pages a forked worker shares
with its master unwritten (list columns' members too: `matching.lists`), but for the few records added since
the build.
Per key, 64-bit key hashes and the matching record slots (12 bytes per record per key) are held sorted
in one `KeyTable` (`matching.key_table`: a directory by top bits, searched in compiled code); records
added after the build go to a small hash map beside it, so
an added record is a candidate for the very next query. A hash collision can only add a candidate,
which the scorer then rejects. Buckets are used most specific first: a bucket over
`max_bucket` records (a shelter's address, a very common surname) or one that would take the
query past `max_scored` candidates (unless it is the first) is skipped and reported in
`Candidates.skipped_keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from sqlglot import exp

from matching.encoding import NULL, NUM, STR, Extras, Vec, Vocabulary, column_kind, vec
from matching.gather import rows_into
from matching.key_table import KeyTable
from matching.probes import ProbePlan, take_buckets
from matching.scorer import TermFrequencies
from matching.splink_internals import equality_sides, rule_terms
from matching.strings import StringTable

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
MAX_SCORED = 600


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
    terms = rule_terms(rule_sql)
    sides = [equality_sides(term) for term in terms or []]
    if not sides or not all(pair is not None and all(isinstance(s, exp.Column) for s in pair) for pair in sides):
        return None
    return KeySpec(tuple(left.name for left, _ in sides), tuple(right.name for _, right in sides))


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


def mix(h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Fold one more key component into 64-bit key hashes (splitmix64 finaliser; wraps silently)."""
    z = (h ^ x.astype(np.uint64)) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def key_hashes(components: list[np.ndarray]) -> np.ndarray:
    """64-bit hashes of keys given as integer components (string codes, or years), column by column."""
    h = np.zeros(len(components[0]), dtype=np.uint64)
    for component in components:
        h = mix(h, component.astype(np.int64))
    return h


class CandidateIndex:
    """Encoded records, their persons, key tables and term frequencies."""

    def __init__(self, specs: list[KeySpec], columns: list[str], tf_columns: list[str], max_bucket: int = MAX_BUCKET,
                 max_scored: int = MAX_SCORED):
        self.specs = specs
        self.max_scored = max_scored
        self.max_bucket = max_bucket
        # name_suffix and birth_year always: real time's generation rule reads them (`Resolver.add_record`)
        self.column_names = sorted(set(columns) | set(tf_columns) | {c for s in specs for c in s.left + s.right}
                                   | {"name_suffix", "birth_year"})
        self.kinds: dict[str, str] = {}
        self.vocab = Vocabulary()
        self.data: dict[str, np.ndarray] = {}          # column -> its values per slot (code columns: views of `codes`)
        # The string and list codes of every slot as one row-major matrix: a query's few hundred candidates
        # are then a few hundred rows, not a scattered read from each of a score of column arrays.
        self.codes = np.empty((0, 0), dtype=np.int32)
        self.code_column: dict[str, int] = {}            # column -> its position in `codes`
        self.gather_plans: dict[tuple, tuple] = {}         # `Rows.gather`'s arrays per list of columns
        # Ids as codes into flat string tables (matching.strings), so queries never touch shared Python objects.
        self.records = StringTable()                    # every record id ever indexed
        self.persons = StringTable()                    # every person id ever used (new ids avoid them)
        self.record_code = np.empty(0, dtype=np.int32)  # per slot
        self.person_code = np.empty(0, dtype=np.int32)  # per slot
        self.slot_by_record = np.empty(0, dtype=np.int32)   # per record code: its live slot, or -1
        self.alive = np.empty(0, dtype=bool)
        self._by_person = np.empty(0, dtype=np.int32)      # the built slots ordered by person code …
        self._person_sorted = np.empty(0, dtype=np.int32)  # … and those codes, for `slots_of`
        self._added_by_person: dict[int, list[int]] = {}   # person code -> slots added since the build
        self.size = 0                                   # slots used (alive or deleted)
        self.slot_of = SlotMap(self)                    # record id -> live slot
        self.tf = TermFrequencies(tf_columns)
        # One table for every spec: key hashes (folded with the spec's number) sorted, and their slots,
        # so a query's probes of all specs are looked up by one searchsorted.
        self._table = KeyTable.empty()
        self._delta: dict[int, list[int]] = {}          # records added since the build, by the same hashes

    # ---------------------------------------------------------------- building
    def build(self, chunks: Iterable[Mapping[str, np.ndarray]], record_ids: np.ndarray, person_ids: np.ndarray) -> None:
        """Load every record at once, from standardised chunks in record order (column -> object array, None for null).

        Chunks are encoded as they come, so the full standardised table never has to exist.
        """
        n = len(record_ids)
        self.kinds = {c: column_kind(c) for c in self.column_names}
        parts: dict[str, list[np.ndarray]] = {c: [] for c in self.column_names}
        for chunk in chunks:
            rows = len(next(iter(chunk.values())))
            for c in self.column_names:
                values = _as_object(chunk[c]) if c in chunk else np.full(rows, None, dtype=object)
                parts[c].append(self.vocab.encode(values, self.kinds[c]))
        if any(sum(len(part) for part in p) != n for p in parts.values()):
            raise ValueError("the standardised chunks do not cover every record id")
        self.code_column = {c: j for j, c in enumerate(c for c in self.column_names if self.kinds[c] != NUM)}
        self.gather_plans = {}
        self.codes = np.empty((n, len(self.code_column)), dtype=np.int32)
        numbers = {}
        for c, p in parts.items():
            if c in self.code_column:
                self.codes[:, self.code_column[c]] = np.concatenate(p) if p else []
            else:
                numbers[c] = np.concatenate(p) if p else np.empty(0, np.float64)
            p.clear()
        self._column_views(numbers)
        self.records, self.persons = StringTable(), StringTable()
        self.record_code = _codes(self.records, record_ids)
        if len(self.records) != n:
            raise ValueError("record ids are not unique")
        self.slot_by_record = np.arange(n, dtype=np.int32)
        self.person_code = _codes(self.persons, person_ids)
        self._by_person = np.argsort(self.person_code, kind="stable").astype(np.int32)   # slots, grouped by person
        self._person_sorted = self.person_code[self._by_person]
        self._added_by_person = {}
        self.alive = np.ones(n, dtype=bool)
        self.size = n
        for c in self.tf.counts:
            self.tf.add(c, self.data[c])
        key_parts, slot_parts = [], []
        for k, spec in enumerate(self.specs):
            null = np.zeros(n, dtype=bool)
            for c in spec.right:
                null |= vec(self.kinds[c], self.data[c]).null
            slots = np.flatnonzero(~null).astype(np.int32)
            key_parts.append(_spec_hashes(k, [self.data[c][slots] for c in spec.right]))
            slot_parts.append(slots)
        keys = np.concatenate(key_parts) if key_parts else np.empty(0, dtype=np.uint64)
        del key_parts
        self._table = KeyTable(keys, np.concatenate(slot_parts) if slot_parts else np.empty(0, dtype=np.int32))
        del keys
        self._delta = {}
        for table in (self.vocab, self.records, self.persons):
            table.freeze()
        self._plan.warm_up(self._table.slots, self.alive)

    # ---------------------------------------------------------------- lookup
    def encode_query(self, query: Mapping[str, object], extras: Extras) -> dict[str, Vec]:
        """A standardised query as encoded length-1 columns (query-only values go to `extras`)."""
        return self.vocab.encode_query(query, self.kinds, extras)

    def candidates(self, query: Mapping[str, Vec], year_slack: int = 0) -> Candidates:
        """Slots of live records sharing a key with the encoded `query`.

        Buckets are taken most specific (smallest) first until `max_scored` records are
        gathered (the first bucket always, if it is within `max_bucket`); a bucket that would pass
        the limit, or is over `max_bucket`, is skipped and named.
        """
        plan, vocab_size = self._plan, len(self.vocab)
        values = np.empty(len(plan.columns), dtype=np.float64)
        usable = np.empty(len(plan.columns), dtype=np.bool_)
        for i, column in enumerate(plan.columns):
            v = query[column]
            values[i] = value = v.values[0]
            usable[i] = not (v.null[0] or (v.kind == STR and value >= vocab_size))   # a value no record has
        hashes, spec_of = plan.hashes(values, usable, year_slack)
        if not len(hashes):
            return Candidates(np.empty(0, dtype=np.int32))
        first, end = self._table.find(hashes)
        since_build = [self._delta.get(h, ()) for h in hashes.tolist()] if self._delta else None   # per probe
        extra = (np.array([len(e) for e in since_build], dtype=np.int64) if since_build is not None
                 else np.zeros(len(hashes), dtype=np.int64))
        slots, taken, skipped = take_buckets(first, end, extra, spec_of, len(self.specs), self.max_bucket,
                                             self.max_scored, self._table.slots, self.alive)
        added = [np.asarray(e, dtype=np.int32) for e, t in zip(since_build or (), taken) if t and e]
        if added:
            merged = np.unique(np.concatenate([slots, *added]))
            slots = merged[self.alive[merged]]
        return Candidates(slots, sorted({self.specs[k].name for k in np.flatnonzero(skipped)}))

    @cached_property
    def _plan(self) -> ProbePlan:
        return ProbePlan.of([spec.left for spec in self.specs])

    def rows(self, slots: np.ndarray) -> "Rows":
        """The records at `slots`, column by column, sliced only when a comparison asks."""
        return Rows(self, slots)

    def record_id(self, slot: int) -> str:
        return self.records.text(int(self.record_code[slot]))

    def record_ids_at(self, slots: np.ndarray) -> list[str]:
        return self.records.take(self.record_code[slots])

    def person_id(self, slot: int) -> str:
        return self.persons.text(int(self.person_code[slot]))

    def person_of(self, record_id: str) -> str:
        """The person of an indexed record (KeyError if it is not indexed)."""
        return self.person_id(self.slot_of[record_id])

    def slots_of(self, person_id: str) -> np.ndarray:
        """The live slots of `person_id`'s records: the built ones found by bisection, those added since from a map."""
        code = self.persons.get(person_id)
        if code is None:
            return np.empty(0, dtype=np.int64)
        lo, hi = np.searchsorted(self._person_sorted, [code, code + 1])
        slots = np.concatenate([self._by_person[lo:hi], np.asarray(self._added_by_person.get(code, ()), dtype=np.int32)])
        return slots[self.alive[slots]].astype(np.int64)

    def texts_at(self, column: str, slots: np.ndarray) -> list[str | None]:
        """A string column's values at `slots` (None where NULL), each distinct value decoded once."""
        codes, inverse = np.unique(self.data[column][slots], return_inverse=True)
        texts = [None if code < 0 else self.vocab.strings.text(int(code)) for code in codes.tolist()]
        return [texts[i] for i in inverse.tolist()]

    def has_records(self, person_id: str) -> bool:
        """Whether any live record belongs to `person_id`."""
        return len(self.slots_of(person_id)) > 0

    @property
    def person_id_set(self) -> StringTable:
        """Every person id ever used here (`in` only): new ids avoid them."""
        return self.persons

    @property
    def n_records(self) -> int:
        return int(self.alive[: self.size].sum())

    # ---------------------------------------------------------------- changes
    def add(self, record: Mapping[str, object], record_id: str, person_id: str) -> int:
        """Append one standardised record; it is a candidate for the very next lookup."""
        if record_id in self.slot_of:
            raise KeyError(f"record {record_id!r} is already indexed")
        slot = self.size
        if slot >= len(self.record_code):
            self._grow(max(16, 2 * len(self.record_code)))
        for c, column in self.data.items():
            value = np.empty(1, dtype=object)
            value[0] = record.get(c)
            column[slot] = self.vocab.encode(value, self.kinds[c])[0]
        code = self.records.code(record_id)
        if code >= len(self.slot_by_record):
            self.slot_by_record = _grown(self.slot_by_record, max(16, 2 * code + 1), -1)
        self.slot_by_record[code] = slot
        self.record_code[slot] = code
        self.person_code[slot] = self.persons.code(person_id)
        self._added_by_person.setdefault(int(self.person_code[slot]), []).append(slot)
        for c in self.tf.counts:
            self.tf.add(c, self.data[c][slot: slot + 1])
        for k, spec in enumerate(self.specs):
            parts = [self.data[c][slot: slot + 1] for c in spec.right]
            if not any(vec(self.kinds[c], part).null[0] for c, part in zip(spec.right, parts)):
                self._delta.setdefault(int(_spec_hashes(k, parts)[0]), []).append(slot)
        self.alive[slot] = True
        self.size = slot + 1
        return slot

    def delete(self, record_id: str) -> int:
        """Remove a record from every future answer (its slot is tombstoned)."""
        slot = self.slot_of[record_id]
        self.slot_by_record[self.record_code[slot]] = -1
        self.alive[slot] = False
        for c in self.tf.counts:
            self.tf.add(c, self.data[c][slot: slot + 1], sign=-1)
        return slot

    def _column_views(self, numbers: Mapping[str, np.ndarray]) -> None:
        """`data`: the number columns as given, the code columns as views of `codes`."""
        self.data = {c: numbers[c] if c in numbers else self.codes[:, self.code_column[c]] for c in self.column_names}

    def _grow(self, capacity: int) -> None:
        codes = np.full((capacity, self.codes.shape[1]), NULL, dtype=np.int32)
        codes[: len(self.codes)] = self.codes
        self.codes = codes
        self._column_views({c: _grown(v, capacity, np.nan) for c, v in self.data.items() if c not in self.code_column})
        self.record_code = _grown(self.record_code, capacity, -1)
        self.person_code = _grown(self.person_code, capacity, -1)
        self.alive = _grown(self.alive, capacity, False)


class SlotMap(Mapping):
    """Record id -> live slot of an index, read from its flat tables."""

    def __init__(self, index: CandidateIndex):
        self._index = index

    def __getitem__(self, record_id: str) -> int:
        index = self._index
        code = index.records.get(record_id) if isinstance(record_id, str) else None
        slot = -1 if code is None or code >= len(index.slot_by_record) else int(index.slot_by_record[code])
        if slot < 0:
            raise KeyError(record_id)
        return slot

    def __iter__(self):
        index = self._index
        return iter(index.record_ids_at(np.flatnonzero(index.alive[: index.size])))

    def __len__(self) -> int:
        return self._index.n_records


class Rows(Mapping):
    """Encoded columns of some index slots, sliced lazily and once."""

    def __init__(self, index: CandidateIndex, slots: np.ndarray):
        self._index, self._slots, self._cache = index, slots, {}

    def _values(self, name: str) -> np.ndarray:
        return self._index.data[name][self._slots]    # a code column's view of the code matrix, gathered

    def __getitem__(self, name: str) -> Vec:
        out = self._cache.get(name)
        if out is None:
            out = self._cache[name] = vec(self._index.kinds[name], self._values(name))
        return out

    def gather(self, names: list[str], values: np.ndarray, null: np.ndarray, at: list[int]) -> None:
        """Write the encoded values of columns `names` at the slots, and their NULL masks, into columns `at` of
        `values` and `null` (n x any): the code columns straight from the index's code matrix (the compiled
        scorer's gather, `matching.gather`)."""
        index = self._index
        key = (tuple(names), tuple(at))
        plan = index.gather_plans.get(key)
        if plan is None:                    # the same few column lists every call: their arrays made once
            coded = [(at[j], index.code_column[name]) for j, name in enumerate(names) if name in index.code_column]
            plan = index.gather_plans[key] = (np.array([position for _, position in coded], dtype=np.int64),
                                              np.array([leaf for leaf, _ in coded], dtype=np.int64),
                                              [(at[j], name) for j, name in enumerate(names) if name not in index.code_column])
        positions, leaves, numbers = plan
        if len(positions):
            rows_into(index.codes, np.ascontiguousarray(self._slots, dtype=np.int32), positions, leaves, values, null)
        for leaf, name in numbers:                             # a number column: NULL is NaN
            values[:, leaf] = index.data[name][self._slots]
            null[:, leaf] = np.isnan(values[:, leaf])

    def __iter__(self):
        return iter(self._index.data)

    def __len__(self) -> int:
        return len(self._index.data)


def _grown(a: np.ndarray, capacity: int, fill) -> np.ndarray:
    out = np.full(capacity, fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def _codes(table: StringTable, values) -> np.ndarray:
    """Codes of many ids in `table` (adding new ones), each distinct id looked up once."""
    codes, uniques = pd.factorize(pd.Series(_as_object(values), dtype=object).astype(str))
    return table.extend(uniques)[codes].astype(np.int32)


def _as_object(values) -> np.ndarray:
    if isinstance(values, pd.Series):
        values = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
    return np.asarray(values, dtype=object)


def _spec_hashes(spec: int, components: list[np.ndarray]) -> np.ndarray:
    """Key hashes folded with their spec's number, so all specs share one table (`matching.probes` hashes a query's alike)."""
    h = key_hashes(components)
    return mix(h, np.full(h.shape, spec, dtype=np.int64))
