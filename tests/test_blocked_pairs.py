"""Blocking: rule pair counts are exact, and `splink_internals.predict` scores exactly the pairs Splink's own
`predict()` scores, with the same weights."""

from itertools import combinations
from unittest.mock import patch

import pandas as pd
import splink.comparison_library as cl
from hypothesis import given, settings as hypothesis_settings, strategies as st
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from matching.blocking import PairCounter
from matching import splink_internals
from matching.splink_internals import RECORDS_PER_GROUPING, _blocked_pairs, predict

#: Rules that overlap on purpose: a pair found by several must keep the first one's match key.
RULES = [block_on("a"), block_on("b", "c"), block_on("c"), block_on("substr(d, 1, 1)"), block_on("a", "d"),
         "l.b = r.b AND l.d <> r.d", block_on("d")]

records = st.lists(
    st.fixed_dictionaries({
        "a": st.sampled_from(["x", "y", None]), "b": st.sampled_from(["p", "q", "r"]),
        "c": st.sampled_from(["1", "2", None]), "d": st.sampled_from(["mo", "me", "ta", None]),
    }), min_size=2, max_size=40)
rule_lists = st.lists(st.sampled_from(range(len(RULES))), min_size=1, max_size=len(RULES), unique=True)


@hypothesis_settings(max_examples=60, deadline=None)
@given(rows=records, columns=st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True))
def test_pair_counts_are_the_pairs_a_rule_joins(rows, columns):
    """Counted against every pair spelt out: equal on each column, no column null."""
    frame = pd.DataFrame(rows, columns=list("abcd"))
    expected = sum(all(x[c] is not None and x[c] == y[c] for c in columns) for x, y in combinations(rows, 2))
    assert PairCounter(frame).pairs(tuple(columns)) == expected


def _linker(rows: list[dict], rule_numbers: list[int]) -> Linker:
    frame = pd.DataFrame([{"unique_id": f"R{n:03d}", **row} for n, row in enumerate(rows)])
    settings = SettingsCreator(
        link_type="dedupe_only", blocking_rules_to_generate_predictions=[RULES[n] for n in rule_numbers],
        comparisons=[cl.ExactMatch("a"), cl.ExactMatch("b"), cl.ExactMatch("c"), cl.LevenshteinAtThresholds("d", 1)])
    return Linker(DuckDBAPI().register(frame, table_name="records"), settings, log_level=None)


def _rows(table) -> set[tuple]:
    return set(table.as_pandas_dataframe().itertuples(index=False, name=None))


@hypothesis_settings(max_examples=60, deadline=None)
@given(rows=records, rule_numbers=rule_lists, stretch=st.sampled_from([RECORDS_PER_GROUPING, 3, 10]))
def test_blocked_pairs_are_splinks_own_rows_match_key_included(rows, rule_numbers, stretch):
    """`stretch`: left records per grouping; below the record count, the pairs are grouped in several stretches."""
    linker = _linker(rows, rule_numbers)
    splinks = linker.inference.compute_blocked_pairs_for_predict()
    with patch.object(splink_internals, "RECORDS_PER_GROUPING", stretch):
        ours = _blocked_pairs(linker, linker._settings_obj._blocking_rules_to_generate_predictions)
    rows_ours = ours.as_pandas_dataframe()
    assert len(rows_ours) == len(set(rows_ours.itertuples(index=False, name=None))), "a pair found twice"
    assert _rows(ours) == _rows(splinks)


@hypothesis_settings(max_examples=15, deadline=None)
@given(rows=records, rule_numbers=rule_lists)
def test_predict_scores_the_pairs_splink_scores_with_its_weights(rows, rule_numbers):
    linker = _linker(rows, rule_numbers)
    columns = ["unique_id_l", "unique_id_r", "match_key", "match_weight"]
    expected = linker.inference.predict().as_pandas_dataframe()[columns]
    ours = predict(linker).as_pandas_dataframe()[columns]
    key = ["unique_id_l", "unique_id_r"]
    expected, ours = (frame.sort_values(key).reset_index(drop=True) for frame in (expected, ours))
    pd.testing.assert_frame_equal(ours, expected, check_dtype=False, rtol=0, atol=1e-9)


def test_predict_leaves_no_blocked_pairs_behind_for_the_next_call():
    """A second call with other rules must block afresh, not score the first call's pairs."""
    rows = [{"a": "x", "b": "p", "c": "1", "d": "mo"}, {"a": "x", "b": "q", "c": "2", "d": "ta"},
            {"a": "y", "b": "q", "c": "2", "d": "me"}]
    linker = _linker(rows, [0])
    assert len(predict(linker).as_pandas_dataframe()) == 1
    linker._settings_obj._blocking_rules_to_generate_predictions = _linker(rows, [2])._settings_obj._blocking_rules_to_generate_predictions
    pairs = predict(linker).as_pandas_dataframe()
    assert list(zip(pairs.unique_id_l, pairs.unique_id_r)) == [("R001", "R002")]
