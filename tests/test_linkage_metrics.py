"""evaluation.linkage.metrics: pairwise / B-cubed metrics and per-group error rates."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.linkage.metrics import MISSING_GROUP, error_rate_ratio, group_error_rates
from matching.accuracy import LinkageMetrics, linkage_metrics

# Truth used by the hand-built examples: A has 3 records, B 2, C 1 -> 3 + 1 + 0 = 4 true pairs.
TRUTH = pd.DataFrame({"record_id": ["r1", "r2", "r3", "r4", "r5", "r6"],
                      "person_key": ["A", "A", "A", "B", "B", "C"]})


def clusters(*labels) -> pd.DataFrame:
    return pd.DataFrame({"record_id": TRUTH["record_id"], "person_id": list(labels)})


def frames(true_labels, predicted_labels):
    ids = [f"r{i}" for i in range(len(true_labels))]
    truth = pd.DataFrame({"record_id": ids, "person_key": list(true_labels)})
    predicted = pd.DataFrame({"record_id": ids, "person_id": list(predicted_labels)})
    return predicted, truth


# --------------------------------------------------------------------------- hand-built


def test_perfect_clustering_scores_one_everywhere():
    m = linkage_metrics(clusters(7, 7, 7, 8, 8, 9), TRUTH)
    assert (m.pairwise_precision, m.pairwise_recall, m.pairwise_f1) == (1.0, 1.0, 1.0)
    assert (m.bcubed_precision, m.bcubed_recall, m.bcubed_f1) == (1.0, 1.0, 1.0)
    assert (m.true_pairs, m.predicted_pairs, m.true_positive_pairs) == (4, 4, 4)
    assert (m.n_records, m.n_persons_true, m.n_clusters, m.singleton_clusters) == (6, 3, 3, 1)


def test_everything_in_one_cluster_has_full_recall_and_hand_computed_precision():
    m = linkage_metrics(clusters(*["x"] * 6), TRUTH)
    assert m.predicted_pairs == 15 and m.true_positive_pairs == 4
    assert m.pairwise_recall == 1.0
    assert m.pairwise_precision == pytest.approx(4 / 15)
    assert m.pairwise_f1 == pytest.approx(2 * (4 / 15) / (4 / 15 + 1))
    # B-cubed precision: A's records 3/6 each, B's 2/6, C's 1/6 -> (3*3 + 2*2 + 1*1) / 36
    assert m.bcubed_precision == pytest.approx(14 / 36)
    assert m.bcubed_recall == 1.0
    assert m.n_clusters == 1 and m.singleton_clusters == 0


def test_all_singletons_have_zero_recall_and_precision_one_by_convention():
    m = linkage_metrics(clusters(1, 2, 3, 4, 5, 6), TRUTH)
    assert m.predicted_pairs == 0
    assert m.pairwise_precision == 1.0  # no predicted pairs: nothing wrongly linked
    assert m.pairwise_recall == 0.0
    assert m.pairwise_f1 == 0.0
    assert m.bcubed_precision == 1.0
    # B-cubed recall: A's records 1/3 each, B's 1/2, C's 1 -> (1 + 1 + 1) / 6
    assert m.bcubed_recall == pytest.approx(0.5)
    assert m.singleton_clusters == 6


def test_no_true_pairs_and_no_predicted_pairs_is_perfect_by_convention():
    predicted, truth = frames(["a", "b", "c"], [1, 2, 3])
    m = linkage_metrics(predicted, truth)
    assert (m.pairwise_precision, m.pairwise_recall, m.pairwise_f1) == (1.0, 1.0, 1.0)


def test_mixed_clustering_matches_hand_count():
    # clusters: {r1, r2} {r3, r4, r5} {r6}
    m = linkage_metrics(clusters("p", "p", "q", "q", "q", "s"), TRUTH)
    # predicted pairs 1 + 3 = 4; true positives: (r1,r2) and (r4,r5) = 2; true pairs 4
    assert (m.predicted_pairs, m.true_positive_pairs, m.true_pairs) == (4, 2, 4)
    assert m.pairwise_precision == pytest.approx(0.5)
    assert m.pairwise_recall == pytest.approx(0.5)
    # B-cubed precision per record: 1, 1, 1/3, 2/3, 2/3, 1 -> 14/3 / 6
    assert m.bcubed_precision == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3 + 1) / 6)
    # B-cubed recall per record: 2/3, 2/3, 1/3, 1, 1, 1
    assert m.bcubed_recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1 + 1) / 6)


def test_row_order_and_label_types_do_not_matter():
    shuffled = clusters("p", "p", "q", "q", "q", "s").iloc[::-1]
    a = linkage_metrics(shuffled, TRUTH).to_dict()
    b = linkage_metrics(clusters(10, 10, 20, 20, 20, 30), TRUTH).to_dict()
    assert a == b


def test_to_dict_gives_plain_python_numbers():
    d = linkage_metrics(clusters(7, 7, 7, 8, 8, 9), TRUTH).to_dict()
    assert set(d) == set(LinkageMetrics.__dataclass_fields__)
    assert all(type(v) in (int, float) for v in d.values())
    assert isinstance(d["true_pairs"], int) and isinstance(d["pairwise_f1"], float)


def test_records_missing_from_either_input_are_named():
    predicted = clusters(1, 1, 1, 2, 2, 3)
    predicted.loc[5, "record_id"] = "extra"
    with pytest.raises(ValueError) as info:
        linkage_metrics(predicted, TRUTH)
    message = str(info.value)
    assert "'extra'" in message and "in clusters but not in truth" in message
    assert "'r6'" in message and "in truth but not in clusters" in message


def test_a_record_listed_twice_is_an_error():
    predicted = pd.concat([clusters(1, 1, 1, 2, 2, 3), clusters(1, 1, 1, 2, 2, 3).head(1)])
    with pytest.raises(ValueError, match="more than once: 'r1'"):
        linkage_metrics(predicted, TRUTH)


def test_missing_columns_and_null_labels_are_errors():
    with pytest.raises(ValueError, match="person_id"):
        linkage_metrics(TRUTH.rename(columns={"person_key": "cluster"}), TRUTH)
    bad = clusters(1, None, 1, 2, 2, 3)
    with pytest.raises(ValueError, match="null"):
        linkage_metrics(bad, TRUTH)


def test_empty_inputs_are_an_error():
    empty_c = pd.DataFrame({"record_id": [], "person_id": []})
    empty_t = pd.DataFrame({"record_id": [], "person_key": []})
    with pytest.raises(ValueError, match="no records"):
        linkage_metrics(empty_c, empty_t)


# --------------------------------------------------------------------------- properties

labelings = st.integers(1, 25).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 6), min_size=n, max_size=n),
    st.lists(st.integers(0, 6), min_size=n, max_size=n),
))


def brute_force(true_labels, predicted_labels):
    tp = predicted = true = 0
    for i, j in itertools.combinations(range(len(true_labels)), 2):
        same_true = true_labels[i] == true_labels[j]
        same_pred = predicted_labels[i] == predicted_labels[j]
        true += same_true
        predicted += same_pred
        tp += same_true and same_pred
    n = len(true_labels)
    bp = sum(
        sum(1 for j in range(n) if predicted_labels[j] == predicted_labels[i]
            and true_labels[j] == true_labels[i])
        / sum(1 for j in range(n) if predicted_labels[j] == predicted_labels[i])
        for i in range(n)) / n
    br = sum(
        sum(1 for j in range(n) if predicted_labels[j] == predicted_labels[i]
            and true_labels[j] == true_labels[i])
        / sum(1 for j in range(n) if true_labels[j] == true_labels[i])
        for i in range(n)) / n
    return tp, predicted, true, bp, br


@settings(max_examples=200, deadline=None)
@given(labelings)
def test_contingency_counts_equal_brute_force_pair_enumeration(labels):
    true_labels, predicted_labels = labels
    m = linkage_metrics(*frames(true_labels, predicted_labels))
    tp, predicted, true, bp, br = brute_force(true_labels, predicted_labels)
    assert (m.true_positive_pairs, m.predicted_pairs, m.true_pairs) == (tp, predicted, true)
    assert m.bcubed_precision == pytest.approx(bp)
    assert m.bcubed_recall == pytest.approx(br)


@settings(max_examples=200, deadline=None)
@given(labelings)
def test_every_metric_is_between_zero_and_one(labels):
    m = linkage_metrics(*frames(*labels))
    for value in (m.pairwise_precision, m.pairwise_recall, m.pairwise_f1,
                  m.bcubed_precision, m.bcubed_recall, m.bcubed_f1):
        assert 0.0 <= value <= 1.0


@settings(max_examples=100, deadline=None)
@given(labelings)
def test_predicting_the_truth_scores_one(labels):
    true_labels, _ = labels
    m = linkage_metrics(*frames(true_labels, [f"c{t}" for t in true_labels]))
    assert (m.pairwise_precision, m.pairwise_recall, m.pairwise_f1) == (1.0, 1.0, 1.0)
    assert m.bcubed_f1 == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(labelings, st.data())
def test_splitting_a_cluster_never_raises_recall(labels, data):
    true_labels, predicted_labels = labels
    target = data.draw(st.sampled_from(sorted(set(predicted_labels))))
    members = [i for i, p in enumerate(predicted_labels) if p == target]
    moved = set(data.draw(st.lists(st.sampled_from(members), unique=True)))
    split = [("split" if i in moved else p) for i, p in enumerate(predicted_labels)]
    before = linkage_metrics(*frames(true_labels, predicted_labels))
    after = linkage_metrics(*frames(true_labels, split))
    assert after.pairwise_recall <= before.pairwise_recall + 1e-12
    assert after.bcubed_recall <= before.bcubed_recall + 1e-12
    assert after.bcubed_precision >= before.bcubed_precision - 1e-12


# --------------------------------------------------------------------------- group rates

# persons: A, B (group g1); C, D (group g2)
G_TRUTH = pd.DataFrame({"record_id": ["a1", "a2", "a3", "b1", "b2", "c1", "c2", "d1"],
                        "person_key": ["A", "A", "A", "B", "B", "C", "C", "D"]})
G_DEMO = pd.DataFrame({"person_key": ["A", "B", "C", "D"],
                       "race_ethnicity": ["g1", "g1", "g2", "g2"],
                       "sex": ["F", "M", "F", "F"],
                       "birth_year": [2010, 1990, 1970, 1940]})
# a3 split off from A; b1 merged with c1 (and c2)
G_CLUSTERS = pd.DataFrame({"record_id": G_TRUTH["record_id"],
                           "person_id": [1, 1, 2, 3, 4, 3, 3, 5]})


def test_group_error_rates_match_hand_counts():
    table = group_error_rates(G_CLUSTERS, G_TRUTH, G_DEMO, "race_ethnicity", min_persons=2)
    assert table["group"].tolist() == ["g1", "g2"]
    g1, g2 = table.to_dict("records")
    # g1: A has 3 pairs, 1 kept (a1,a2); B has 1 pair, missed (b1 and b2 apart)
    assert (g1["persons"], g1["records"], g1["true_pairs"], g1["missed_pairs"]) == (2, 5, 4, 3)
    assert g1["false_non_match_rate"] == pytest.approx(3 / 4)
    # b1 sits in a cluster with C's records -> 1 of 5 g1 records falsely matched
    assert g1["falsely_matched_records"] == 1
    assert g1["false_match_rate"] == pytest.approx(1 / 5)
    # predicted pairs touching g1: (a1,a2), (b1,c1), (b1,c2) -> 1 true of 3
    assert g1["predicted_pairs"] == 3
    assert g1["pairwise_precision"] == pytest.approx(1 / 3)
    # g2: C's pair kept, D has none
    assert (g2["persons"], g2["records"], g2["true_pairs"], g2["missed_pairs"]) == (2, 3, 1, 0)
    assert g2["false_non_match_rate"] == 0.0
    assert g2["falsely_matched_records"] == 2
    assert g2["false_match_rate"] == pytest.approx(2 / 3)
    # touching g2: (c1,c2), (b1,c1), (b1,c2) -> 1 true of 3
    assert g2["pairwise_precision"] == pytest.approx(1 / 3)
    assert table["sufficient"].tolist() == [True, True]


def test_groups_with_too_few_persons_are_marked_insufficient():
    table = group_error_rates(G_CLUSTERS, G_TRUTH, G_DEMO, "race_ethnicity")
    assert table["sufficient"].tolist() == [False, False]  # default min_persons=30


def test_intersection_groups_join_values_with_a_bar():
    table = group_error_rates(G_CLUSTERS, G_TRUTH, G_DEMO, ["race_ethnicity", "sex"],
                              min_persons=1)
    assert table["group"].tolist() == ["g1|F", "g1|M", "g2|F"]
    assert table["persons"].tolist() == [1, 1, 2]


def test_age_band_is_derived_from_birth_year_relative_to_the_reference_year():
    table = group_error_rates(G_CLUSTERS, G_TRUTH, G_DEMO, "age_band", min_persons=1,
                              reference_year=2025)
    # ages 15, 35, 55, 85 -> one person per band, youngest band first
    assert table["group"].tolist() == ["<25", "25-44", "45-64", "65+"]
    assert table["persons"].tolist() == [1, 1, 1, 1]
    shifted = group_error_rates(G_CLUSTERS, G_TRUTH, G_DEMO, "age_band", min_persons=1,
                                reference_year=2035)  # ages 25, 45, 65, 95
    assert shifted["group"].tolist() == ["25-44", "45-64", "65+"]
    assert shifted["persons"].tolist() == [1, 1, 2]


def test_age_band_edges():
    demo = G_DEMO.assign(birth_year=[2001, 2000, 1981, 1961])  # ages 24, 25, 44, 64 in 2025
    table = group_error_rates(G_CLUSTERS, G_TRUTH, demo, "age_band", min_persons=1,
                              reference_year=2025)
    assert table["group"].tolist() == ["<25", "25-44", "45-64"]
    assert table["persons"].tolist() == [1, 2, 1]


def test_persons_without_demographics_form_the_missing_group():
    demo = G_DEMO[G_DEMO["person_key"] != "D"].copy()
    demo.loc[0, "race_ethnicity"] = None
    table = group_error_rates(G_CLUSTERS, G_TRUTH, demo, "race_ethnicity", min_persons=1)
    assert table["group"].tolist() == ["g1", "g2", MISSING_GROUP]
    assert table["persons"].tolist() == [1, 1, 2]  # A (null value) and D (no row) missing


def test_duplicate_demographics_rows_and_unknown_group_columns_are_errors():
    with pytest.raises(ValueError, match="more than once"):
        group_error_rates(G_CLUSTERS, G_TRUTH, pd.concat([G_DEMO, G_DEMO.head(1)]), "sex")
    with pytest.raises(ValueError, match="no column 'religion'"):
        group_error_rates(G_CLUSTERS, G_TRUTH, G_DEMO, "religion")


group_inputs = st.integers(2, 20).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 5), min_size=n, max_size=n),
    st.lists(st.integers(0, 5), min_size=n, max_size=n),
    st.lists(st.sampled_from(["x", "y", "z"]), min_size=6, max_size=6),
))


@settings(max_examples=150, deadline=None)
@given(group_inputs)
def test_group_rates_equal_brute_force_and_add_up_to_the_overall_counts(inputs):
    true_labels, predicted_labels, person_group = inputs
    predicted, truth = frames(true_labels, predicted_labels)
    demo = pd.DataFrame({"person_key": range(6), "g": person_group})
    table = group_error_rates(predicted, truth, demo, "g", min_persons=1).set_index("group")
    overall = linkage_metrics(predicted, truth)
    assert table["true_pairs"].sum() == overall.true_pairs
    assert (table["true_pairs"] - table["missed_pairs"]).sum() == overall.true_positive_pairs
    assert table["records"].sum() == overall.n_records

    n = len(true_labels)
    group_of = [person_group[t] for t in true_labels]
    for group, got in table.iterrows():
        mine = [i for i in range(n) if group_of[i] == group]
        pairs = list(itertools.combinations(range(n), 2))
        true_pairs = [(i, j) for i, j in pairs
                      if group_of[i] == group and true_labels[i] == true_labels[j]]
        missed = [(i, j) for i, j in true_pairs if predicted_labels[i] != predicted_labels[j]]
        touching = [(i, j) for i, j in pairs if predicted_labels[i] == predicted_labels[j]
                    and (group_of[i] == group or group_of[j] == group)]
        correct = [(i, j) for i, j in touching if true_labels[i] == true_labels[j]]
        false_matched = [i for i in mine if any(
            predicted_labels[j] == predicted_labels[i] and true_labels[j] != true_labels[i]
            for j in range(n))]
        assert got["records"] == len(mine)
        assert got["true_pairs"] == len(true_pairs)
        assert got["missed_pairs"] == len(missed)
        assert got["falsely_matched_records"] == len(false_matched)
        assert got["false_match_rate"] == pytest.approx(len(false_matched) / len(mine))
        assert got["predicted_pairs"] == len(touching)
        if true_pairs:
            assert got["false_non_match_rate"] == pytest.approx(len(missed) / len(true_pairs))
        else:
            assert math.isnan(got["false_non_match_rate"])
        if touching:
            assert got["pairwise_precision"] == pytest.approx(len(correct) / len(touching))
        else:
            assert math.isnan(got["pairwise_precision"])


# --------------------------------------------------------------------------- ratio


def test_error_rate_ratio_is_max_over_min_of_sufficient_groups():
    table = pd.DataFrame({"group": ["a", "b", "c", "d"],
                          "false_non_match_rate": [0.1, 0.3, 0.9, float("nan")],
                          "sufficient": [True, True, False, True]})
    assert error_rate_ratio(table) == pytest.approx(3.0)


def test_error_rate_ratio_is_nan_with_fewer_than_two_groups_or_a_zero_minimum():
    one = pd.DataFrame({"false_match_rate": [0.2, 0.4], "sufficient": [True, False]})
    assert math.isnan(error_rate_ratio(one, "false_match_rate"))
    zero = pd.DataFrame({"false_non_match_rate": [0.0, 0.4], "sufficient": [True, True]})
    assert math.isnan(error_rate_ratio(zero))
    with pytest.raises(ValueError, match="no column"):
        error_rate_ratio(zero, "pairwise_recall")


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_a_million_records_take_a_few_seconds():
    rng = np.random.default_rng(0)
    n = 1_000_000
    person = rng.integers(0, 300_000, n)
    noisy = np.where(rng.random(n) < 0.9, person, rng.integers(0, 300_000, n))
    ids = np.arange(n)
    truth = pd.DataFrame({"record_id": ids, "person_key": person})
    predicted = pd.DataFrame({"record_id": ids[::-1], "person_id": noisy[::-1]})
    demo = pd.DataFrame({"person_key": np.arange(300_000),
                         "race_ethnicity": rng.choice(["a", "b", "c"], 300_000)})
    start = time.perf_counter()
    m = linkage_metrics(predicted, truth)
    group_error_rates(predicted, truth, demo, "race_ethnicity")
    assert time.perf_counter() - start < 15
    assert 0 < m.pairwise_f1 < 1
