"""List functions on the flat lists (`matching.lists`) against Python sets, lists made after the freeze included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.encoding import LIST, STR, Extras, Vec, Vocabulary
from matching.level_sql import Pairs, _containing, _overlap_counts

NAMES = [f"N{i}" for i in range(12)]
a_list = st.lists(st.sampled_from(NAMES), max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(a_list, min_size=1, max_size=10), st.lists(a_list, max_size=5), a_list, st.sampled_from(NAMES),
       st.lists(st.booleans(), min_size=15, max_size=15))
def test_overlap_and_membership_equal_the_sets_before_and_after_the_freeze(before, after, query, name, nulls):
    vocab = Vocabulary()
    for n in NAMES[:6]:
        vocab.code(n)                               # some names exist only after the freeze
    codes = [vocab.list_code(members) for members in before]
    vocab.freeze()
    codes += [vocab.list_code(members) for members in after]
    lists = np.array([c if not null else -1 for c, null in zip(codes, nulls)], dtype=np.int64)
    many = Vec(LIST, lists, lists < 0)
    extras = Extras()
    query_code = vocab.find_list(query, extras)
    value = vocab.find(name, extras)
    pairs = Pairs({}, {"x": many}, len(lists), vocab, extras)

    def members(code):
        return set() if code < 0 else {vocab.strings.text(m) for m in vocab.members(int(code), extras)}

    overlaps = _overlap_counts(pairs, query_code, False, many)
    assert overlaps.tolist() == [float(len(members(c) & set(query))) for c in lists]
    assert _overlap_counts(pairs, query_code, True, many).tolist() == [0.0] * len(lists)
    assert _containing(pairs, many, value).tolist() == [name in members(c) for c in lists]
