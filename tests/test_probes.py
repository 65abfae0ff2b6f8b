"""A query's probes, compiled (`matching.probes`), against the rule spelt out in plain Python."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.index import _spec_hashes
from matching.probes import ProbePlan, take_buckets

COLUMNS = ("given_canon", "family_phonetic", "birth_year", "phone", "postcode")


def _expected_probes(specs, values, usable, slack):
    """Every usable spec's keys, specs in order, each birth year from estimate - slack to + slack, hashed as the table is."""
    out = []
    for k, left in enumerate(specs):
        if not all(usable[COLUMNS.index(c)] for c in left):
            continue
        combos = [()]
        for c in left:
            v = values[COLUMNS.index(c)]
            choices = [v + d for d in range(-slack, slack + 1)] if c == "birth_year" and slack else [v]
            combos = [combo + (x,) for combo in combos for x in choices]
        for combo in combos:
            h = _spec_hashes(k, [np.array([x], dtype=np.float64) for x in combo])[0]
            out.append((int(h), k))
    return out


specs_strategy = st.lists(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=3, unique=True).map(tuple),
                          min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(specs_strategy, st.lists(st.integers(0, 5000), min_size=5, max_size=5),
       st.lists(st.booleans(), min_size=5, max_size=5), st.integers(0, 3))
def test_probe_hashes_are_the_tables_key_hashes_in_probe_order(specs, values, usable, slack):
    plan = ProbePlan.of(specs)
    by_column = dict(zip(COLUMNS, zip(values, usable)))
    hashes, spec_of = plan.hashes(np.array([by_column[c][0] for c in plan.columns], dtype=np.float64),
                                  np.array([by_column[c][1] for c in plan.columns]), slack)
    assert list(zip(hashes.tolist(), spec_of.tolist())) == _expected_probes(specs, values, usable, slack)


def _expected_take(sizes, extra, spec_of, max_bucket, max_scored):
    """Buckets smallest first (ties in probe order); the first always if within max_bucket; none past max_scored."""
    taken, skipped, total = [False] * len(sizes), set(), 0
    for i in sorted(range(len(sizes)), key=lambda i: sizes[i] + extra[i]):
        size = sizes[i] + extra[i]
        if size == 0:
            continue
        if size > max_bucket or (total and total + size > max_scored):
            skipped.add(spec_of[i])
            continue
        total += size
        taken[i] = True
    return taken, skipped


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=12),
       st.integers(1, 40), st.integers(1, 80), st.integers(0, 2**32))
def test_buckets_are_taken_most_specific_first_within_the_limits(probes, max_bucket, max_scored, seed):
    rng = np.random.default_rng(seed)
    sizes = [size for size, _, _ in probes]
    table_slots = rng.integers(0, 50, sum(sizes)).astype(np.int32)
    first = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    end = first + np.array(sizes, dtype=np.int64)
    extra = np.array([e for _, e, _ in probes], dtype=np.int64)
    spec_of = np.array([k for _, _, k in probes], dtype=np.int64)
    alive = rng.random(50) < 0.8
    slots, taken, skipped = take_buckets(first, end, extra, spec_of, 5, max_bucket, max_scored, table_slots, alive)
    want_taken, want_skipped = _expected_take(sizes, extra.tolist(), spec_of.tolist(), max_bucket, max_scored)
    assert taken.tolist() == want_taken
    assert set(np.flatnonzero(skipped).tolist()) == want_skipped
    gathered = {int(s) for i in np.flatnonzero(taken) for s in table_slots[first[i]:end[i]] if alive[s]}
    assert slots.tolist() == sorted(gathered)
