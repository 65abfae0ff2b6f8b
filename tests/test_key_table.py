"""The index's key table finds exactly the range numpy's bisection of the sorted hashes gives, for any hashes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.key_table import KeyTable

hashes = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(hashes, max_size=300), repeats=st.lists(st.integers(0, 299), max_size=50),
       others=st.lists(hashes, max_size=40))
def test_find_gives_each_probe_the_slots_of_every_equal_key_hash(keys, repeats, others):
    keys = keys + [keys[i] for i in repeats if i < len(keys)]          # hashes shared by several records
    table = KeyTable(np.array(keys, dtype=np.uint64), np.arange(len(keys), dtype=np.int32))
    probes = np.array(keys[:40] + others + [0, 2**64 - 1], dtype=np.uint64)
    first, end = table.find(probes)
    for probe, lo, hi in zip(probes.tolist(), first.tolist(), end.tolist()):
        assert sorted(table.slots[lo:hi].tolist()) == [i for i, key in enumerate(keys) if key == probe]


def test_a_large_table_agrees_with_bisection_of_the_whole_table():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64)
    keys[::5] = keys[1::5]                                               # many repeated hashes
    table = KeyTable(keys, np.arange(len(keys), dtype=np.int32))
    probes = np.concatenate([keys[:5_000], rng.integers(0, 2**64 - 1, 5_000, dtype=np.uint64)])
    first, end = table.find(probes)
    assert np.array_equal(first, np.searchsorted(table.keys, probes, "left"))
    assert np.array_equal(end, np.searchsorted(table.keys, probes, "right"))
