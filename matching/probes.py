"""A query's probes of the candidate index's key table, in compiled code.

For one query the index looks up, per key spec whose query columns are all present, one key hash (or
one per year within the slack, when the birth year is an estimate), then takes the buckets found most
specific (smallest) first (`matching.index.CandidateIndex.candidates` states the rule). Done key by
key in Python, with a numpy call per hash step, this was a fifth of a query's time; here it is two
compiled calls. The hashes are exactly `matching.index.key_hashes` folded with the spec's number, as
the table was built (`tests/test_probes.py` holds them equal), and buckets of equal size are taken in
probe order, so the candidates are the same slots as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _mix(h, x):
    """`matching.index.mix` on one hash (splitmix64 finaliser; wraps)."""
    z = (h ^ x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _combos(k, usable, spec_columns, spec_lengths, year_column, slack):
    """How many probes spec k makes: 0 if a column is unusable, else one per year within the slack."""
    combos = 1
    for j in range(spec_lengths[k]):
        c = spec_columns[k, j]
        if not usable[c]:
            return 0
        if c == year_column and slack > 0:
            combos *= 2 * slack + 1
    return combos


@njit(cache=True, nogil=True)
def _probe(values, usable, spec_columns, spec_lengths, year_column, slack):
    """(hashes, spec of each): every usable spec's probes, specs in order, years ascending within a spec."""
    n_specs = spec_lengths.shape[0]
    count = 0
    for k in range(n_specs):
        count += _combos(k, usable, spec_columns, spec_lengths, year_column, slack)
    hashes = np.empty(count, dtype=np.uint64)
    spec_of = np.empty(count, dtype=np.int64)
    at = 0
    for k in range(n_specs):
        combos = _combos(k, usable, spec_columns, spec_lengths, year_column, slack)
        for t in range(combos):
            h = np.uint64(0)
            rest = t
            divisor = combos
            for j in range(spec_lengths[k]):          # the first column is the most significant digit
                c = spec_columns[k, j]
                value = values[c]
                if c == year_column and slack > 0:
                    divisor //= 2 * slack + 1
                    value += (rest // divisor) - slack
                    rest %= divisor
                h = _mix(h, np.uint64(np.int64(value)))
            hashes[at] = _mix(h, np.uint64(k))
            spec_of[at] = k
            at += 1
    return hashes, spec_of


@njit(cache=True, nogil=True)
def take_buckets(first, end, extra, spec_of, n_specs, max_bucket, max_scored, table_slots, alive):
    """The buckets to score, most specific first: (live table slots of them, sorted and distinct; taken per probe;
    skipped per spec). Probe i's bucket holds `table_slots[first[i]:end[i]]` and `extra[i]` slots kept beside the
    table, which the caller adds to the slots returned for the probes taken."""
    n = first.shape[0]
    sizes = end - first + extra
    order = np.argsort(sizes * n + np.arange(n))      # by size, ties in probe order
    taken = np.zeros(n, dtype=np.bool_)
    skipped = np.zeros(n_specs, dtype=np.bool_)
    total = 0
    for i in order:
        size = sizes[i]
        if size == 0:
            continue
        if size > max_bucket or (total > 0 and total + size > max_scored):
            skipped[spec_of[i]] = True
            continue
        total += size
        taken[i] = True
    gathered = np.empty(total, dtype=np.int32)
    at = 0
    for i in range(n):
        if taken[i]:
            for s in range(first[i], end[i]):
                gathered[at] = table_slots[s]
                at += 1
    gathered = np.sort(gathered[:at])
    out = np.empty(at, dtype=np.int32)
    kept = 0
    for i in range(at):
        slot = gathered[i]
        if (i == 0 or slot != gathered[i - 1]) and alive[slot]:
            out[kept] = slot
            kept += 1
    return out[:kept], taken, skipped


@dataclass(frozen=True)
class ProbePlan:
    """The key specs as arrays over a list of query columns: spec k reads `columns[spec_columns[k, :spec_lengths[k]]]`."""

    columns: tuple[str, ...]
    spec_columns: np.ndarray
    spec_lengths: np.ndarray
    year_column: int                    # position of `birth_year` in `columns`, or -1

    @classmethod
    def of(cls, specs_left: list[tuple[str, ...]]) -> "ProbePlan":
        columns = tuple(dict.fromkeys(c for left in specs_left for c in left))
        width = max((len(left) for left in specs_left), default=0)
        spec_columns = np.full((len(specs_left), max(width, 1)), -1, dtype=np.int64)
        for k, left in enumerate(specs_left):
            spec_columns[k, : len(left)] = [columns.index(c) for c in left]
        lengths = np.array([len(left) for left in specs_left], dtype=np.int64)
        year = columns.index("birth_year") if "birth_year" in columns else -1
        return cls(columns, spec_columns, lengths, year)

    def warm_up(self, table_slots: np.ndarray, alive: np.ndarray) -> None:
        """Compile (or load from numba's cache) both calls now, with a query's exact types, not in a request."""
        hashes, spec_of = self.hashes(np.zeros(len(self.columns)), np.zeros(len(self.columns), dtype=np.bool_), 0)
        none = np.zeros(len(hashes), dtype=np.int64)
        take_buckets(none, none, none, spec_of, len(self.spec_lengths), 0, 0, table_slots, alive)

    def hashes(self, values: np.ndarray, usable: np.ndarray, year_slack: int) -> tuple[np.ndarray, np.ndarray]:
        """(key hash, spec number) of every probe of a query whose column values are `values` (`usable` where
        present and known to the index)."""
        if year_slack < 0:
            raise ValueError(f"year_slack must be 0 or more, not {year_slack}")
        return _probe(values, usable, self.spec_columns, self.spec_lengths, self.year_column, year_slack)
