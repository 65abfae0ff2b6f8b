"""Blocking: rule pair counts are exact, and `splink_internals.predict` scores exactly the pairs Splink's own
`predict()` scores, with the same weights."""

from itertools import combinations
from unittest.mock import patch

import pandas as pd
import pytest
import splink.comparison_library as cl
from hypothesis import example, given, settings as hypothesis_settings, strategies as st
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink.internals.chunking import _blocked_pairs_cache_key
from splink.internals.linker_components import inference

from matching import splink_internals
from matching.blocking import PairCounter
from matching.splink_internals import (
    PAIRS_PER_GROUPING, RECORDS_PER_GROUPING, _blocked_pairs, _pairs_upper_bound, _stretches, input_table, predict,
)

#: Rules that overlap on purpose: a pair found by several must keep the first one's match key.
#: More than ten, so that a match key compared as text (rule 10 before rule 2) would show.
RULES = [block_on("a"), block_on("b", "c"), block_on("c"), block_on("substr(d, 1, 1)"), block_on("a", "d"),
         "l.b = r.b AND l.d <> r.d", block_on("c", "d"), block_on("a", "c"), "l.a = r.c", "l.d = r.d OR l.a = r.a",
         block_on("d"), block_on("b"), block_on("a", "b")]

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


def test_pair_counts_of_an_empty_frame_are_zero():
    assert PairCounter(pd.DataFrame(columns=list("ab"))).pairs(("a", "b")) == 0


def _linker(rows: list[dict], rule_numbers: list[int]) -> Linker:
    frame = pd.DataFrame([{"unique_id": f"R{n:03d}", **row} for n, row in enumerate(rows)])
    settings = SettingsCreator(
        link_type="dedupe_only", blocking_rules_to_generate_predictions=[RULES[n] for n in rule_numbers],
        comparisons=[cl.ExactMatch("a"), cl.ExactMatch("b"), cl.ExactMatch("c"), cl.LevenshteinAtThresholds("d", 1)])
    return Linker(DuckDBAPI().register(frame, table_name="records"), settings, log_level=None)


def _rows(table) -> set[tuple]:
    return set(table.as_pandas_dataframe().itertuples(index=False, name=None))


@hypothesis_settings(max_examples=80, deadline=None)
@given(rows=records, rule_numbers=rule_lists, stretch=st.sampled_from([RECORDS_PER_GROUPING, 3, 10]),
       pairs=st.sampled_from([PAIRS_PER_GROUPING, 1, 5]))
@example(rows=[{"a": "x", "b": "p", "c": "1", "d": "mo"}, {"a": "y", "b": "p", "c": "2", "d": "mo"}],
         rule_numbers=[0, 1, 11, 10], stretch=RECORDS_PER_GROUPING, pairs=PAIRS_PER_GROUPING)  # rules 3 and 2: key "2"
def test_blocked_pairs_are_splinks_own_rows_match_key_included(rows, rule_numbers, stretch, pairs):
    """`stretch`: left records per grouping, `pairs`: counted pairs per grouping (counted whatever the file's size);
    below the record count, or the count, the pairs are grouped in several stretches."""
    linker = _linker(rows, rule_numbers)
    splinks = linker.inference.compute_blocked_pairs_for_predict()
    with (patch.object(splink_internals, "RECORDS_PER_GROUPING", stretch),
          patch.object(splink_internals, "COUNT_PAIRS_FROM", 0),
          patch.object(splink_internals, "PAIRS_PER_GROUPING", pairs)):
        ours = _blocked_pairs(linker, linker._settings_obj._blocking_rules_to_generate_predictions)
    rows_ours = ours.as_pandas_dataframe()
    assert len(rows_ours) == len(set(rows_ours.itertuples(index=False, name=None))), "a pair found twice"
    assert _rows(ours) == _rows(splinks)


#: The equality keys of the rules of RULES that have them (each side one record), as Python; rule 5's filter is no key.
EQUALITY_KEYS = {0: [("a", "a")], 1: [("b", "b"), ("c", "c")], 2: [("c", "c")], 3: [("d1", "d1")],
                 4: [("a", "a"), ("d", "d")], 5: [("b", "b")], 6: [("c", "c"), ("d", "d")], 7: [("a", "a"), ("c", "c")],
                 8: [("a", "c")], 10: [("d", "d")], 11: [("b", "b")], 12: [("a", "a"), ("b", "b")]}


def _count(rows: list[dict], rule_numbers: list[int]) -> int | None:
    linker = _linker(rows, rule_numbers)
    return _pairs_upper_bound(linker._db_api.duckdb_con, input_table(linker).physical_name,
                              linker._settings_obj._blocking_rules_to_generate_predictions)


@hypothesis_settings(max_examples=60, deadline=None)
@given(rows=records, rule_number=st.sampled_from(sorted(EQUALITY_KEYS)))
@example(rows=[{"a": "x", "b": "p", "c": "1", "d": "mo"}, {"a": "x", "b": "p", "c": "2", "d": "ta"}], rule_number=5)
def test_the_pair_count_that_sizes_the_groupings_is_every_ordered_pair_its_equalities_join(rows, rule_number):
    """Counted against every ordered pair spelt out, each record with itself included: an upper bound of the pairs
    the rule's join gives (a pair of an asymmetric rule, `l.a = r.c`, may come in one order only)."""
    values = [{**row, "d1": row["d"][:1] if row["d"] else None} for row in rows]
    expected = sum(all(x[left] is not None and x[left] == y[right] for left, right in EQUALITY_KEYS[rule_number])
                   for x in values for y in values)
    assert _count(rows, [rule_number]) == expected
    found = _linker(rows, [rule_number]).inference.compute_blocked_pairs_for_predict().as_pandas_dataframe()
    assert expected >= len(found)


def test_a_rule_whose_pairs_its_keys_cannot_count_leaves_the_groupings_to_the_record_count():
    rows = [{"a": "x", "b": "p", "c": "1", "d": "mo"}] * 3
    assert _count(rows, [0, 9]) is None                     # an OR
    assert _count(rows, [0]) == 9


def test_groupings_follow_the_records_and_the_counted_pairs_whichever_asks_for_more():
    assert _stretches(10, None) == _stretches(0, 0) == 1
    assert _stretches(RECORDS_PER_GROUPING * 4, None) == _stretches(RECORDS_PER_GROUPING * 4, PAIRS_PER_GROUPING) == 4
    assert _stretches(RECORDS_PER_GROUPING * 4, PAIRS_PER_GROUPING * 5 + 1) == 6
    assert _stretches(RECORDS_PER_GROUPING * 4 + 1, None) == 5


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


def _blocked_tables(linker) -> list[str]:
    return [name for (name,) in linker._db_api.duckdb_con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '__splink__blocked_id_pairs%'").fetchall()]


ROWS = [{"a": "x", "b": "p", "c": "1", "d": "mo"}, {"a": "x", "b": "q", "c": "2", "d": "ta"},
        {"a": "y", "b": "q", "c": "2", "d": "me"}]


def test_predict_blocks_the_pairs_itself_not_through_splinks_exclusion():
    linker = _linker(ROWS, [0, 2])
    with patch.object(inference, "compute_blocked_pairs_from_concat_with_tf", side_effect=AssertionError("Splink blocked")):
        pairs = predict(linker).as_pandas_dataframe()
    assert sorted(zip(pairs.unique_id_l, pairs.unique_id_r)) == [("R000", "R001"), ("R001", "R002")]


def test_predict_leaves_no_blocked_pairs_behind_for_the_next_call():
    """Splink's own next `predict()`, with other rules, must block afresh, not score the first call's pairs."""
    linker = _linker(ROWS, [0])
    assert len(predict(linker).as_pandas_dataframe()) == 1
    assert _blocked_pairs_cache_key() not in linker._intermediate_table_cache and not _blocked_tables(linker)
    linker._settings_obj._blocking_rules_to_generate_predictions = _linker(ROWS, [2])._settings_obj._blocking_rules_to_generate_predictions
    pairs = linker.inference.predict().as_pandas_dataframe()
    assert list(zip(pairs.unique_id_l, pairs.unique_id_r)) == [("R001", "R002")]


def test_a_failed_prediction_leaves_no_blocked_pairs_behind():
    linker = _linker(ROWS, [0, 2])
    with patch.object(type(linker.inference), "_predict_chunk", side_effect=RuntimeError("out of memory")):
        with pytest.raises(RuntimeError):
            predict(linker)
    assert _blocked_pairs_cache_key() not in linker._intermediate_table_cache and not _blocked_tables(linker)


def test_blocked_pairs_already_registered_are_the_ones_scored():
    """A table registered for `predict()` (Splink's own way to hand it pairs) is scored, not replaced."""
    linker = _linker(ROWS, [0, 2])
    registered = linker._db_api.register(pd.DataFrame({"match_key": ["0"], "join_key_l": ["R001"], "join_key_r": ["R002"]}),
                                         table_name="chosen_pairs")
    linker.table_management.register_blocked_pairs_for_predict(registered)
    pairs = predict(linker).as_pandas_dataframe()
    assert list(zip(pairs.unique_id_l, pairs.unique_id_r)) == [("R001", "R002")]
