"""Steward labels measure the thresholds: precision / recall / intervals, the recommendation, and the CLI."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.linkage.labels import (LabelsFileError, Labels, labels_report, measure_at, read_labels, render_labels_text,
                               wilson_interval)
from matching.thresholds import lowest_threshold_with_precision
from tests.cli_run import run_briefing

HEADER = "record_id_l,record_id_r,decision,match_probability\n"
# four matches, two non-matches, one unsure
SMALL = HEADER + """a,b,match,0.97
c,d,match,0.91
e,f,not_a_match,0.85
g,h,match,0.80
i,j,unsure,0.70
k,l,Not a match,0.60
m,n,MATCH,0.55
"""


def _write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _row(report, threshold):
    return next(r for r in report["thresholds"] if r["threshold"] == threshold)


def test_reading_labels_keeps_decisions_and_counts_unsure_rows(tmp_path):
    labels = read_labels(_write(tmp_path, SMALL))
    assert (labels.n_match, labels.n_not_a_match, labels.unsure) == (4, 2, 1)
    assert list(labels.pairs.line) == [2, 3, 4, 5, 7, 8]


def test_precision_and_recall_match_a_hand_computed_example(tmp_path):
    report = labels_report(read_labels(_write(tmp_path, SMALL)))
    # p >= 0.85: a-b, c-d (matches) and e-f (not): TP 2, FP 1; matches below: g-h, m-n
    at = _row(report, 0.85)
    assert (at["true_positives"], at["false_positives"], at["false_negatives"], at["true_negatives"]) == (2, 1, 2, 1)
    assert at["precision"] == pytest.approx(2 / 3) and at["recall"] == pytest.approx(0.5)
    assert _row(report, 0.5)["precision"] == pytest.approx(4 / 6) and _row(report, 0.5)["recall"] == 1.0
    assert _row(report, 0.9)["precision"] == 1.0 and _row(report, 0.9)["recall"] == 0.5
    assert _row(report, 0.99)["precision"] is None and _row(report, 0.99)["recall"] == 0.0
    # precision stays >= 0.995 from 0.97 down to 0.91, and falls at 0.85
    assert report["recommendation"]["threshold"] == 0.91
    assert report["recommendation"]["at_threshold"]["precision_ci95"][0] == pytest.approx(2 / (2 + 1.959964 ** 2))
    assert report["recommendation"]["threshold_lower_bound_rule"] is None  # 2 pairs cannot show 0.995
    assert report["labels"]["probability_range"] == [0.55, 0.97]


def test_a_lower_target_recommends_a_lower_threshold(tmp_path):
    labels = read_labels(_write(tmp_path, SMALL))
    assert labels_report(labels, target_precision=0.6)["recommendation"]["threshold"] == 0.55


def test_no_threshold_is_recommended_when_the_top_pair_is_wrong(tmp_path):
    labels = read_labels(_write(tmp_path, HEADER + "a,b,not_a_match,0.99\nc,d,match,0.9\n"))
    rec = labels_report(labels)["recommendation"]
    assert rec["threshold"] is None and "below the target" in rec["why_none"]


def test_wilson_interval_matches_published_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(10, 10)[1] == 1.0


def test_the_lower_bound_rule_needs_enough_correct_labels():
    # with no errors the lower bound is n / (n + z^2): 765 pairs reach 0.995, 764 do not
    probability = np.linspace(0.999, 0.6, 1000)
    labels = Labels(pairs=_frame(probability, np.ones(1000, bool)), unsure=0)
    rec = labels_report(labels)["recommendation"]
    assert rec["threshold"] == pytest.approx(0.6)
    assert rec["threshold_lower_bound_rule"] == pytest.approx(probability[-1])
    few = Labels(pairs=_frame(probability[:764], np.ones(764, bool)), unsure=0)
    assert labels_report(few)["recommendation"]["threshold_lower_bound_rule"] is None
    enough = Labels(pairs=_frame(probability[:765], np.ones(765, bool)), unsure=0)
    assert labels_report(enough)["recommendation"]["threshold_lower_bound_rule"] == pytest.approx(probability[764])


def _frame(probability, is_match):
    import pandas as pd

    n = len(probability)
    return pd.DataFrame({"record_id_l": [f"l{i}" for i in range(n)], "record_id_r": [f"r{i}" for i in range(n)],
                         "match_probability": probability, "is_match": is_match, "line": np.arange(2, n + 2)})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]), st.booleans()), min_size=1, max_size=40),
       st.sampled_from([0.5, 0.8, 0.9, 0.995]))
def test_figures_are_consistent_and_the_recommendation_is_the_truth_table_rule(rows, target):
    probability = np.array([p for p, _ in rows])
    is_match = np.array([m for _, m in rows])
    report = labels_report(Labels(pairs=_frame(probability, is_match), unsure=0), target_precision=target)
    for row in report["thresholds"]:
        assert row["true_positives"] + row["false_positives"] + row["false_negatives"] + row["true_negatives"] == len(rows)
        for name in ("precision", "recall"):
            if row[name] is not None:
                low, high = row[f"{name}_ci95"]
                assert 0 <= low <= row[name] <= high <= 1
    rec = report["recommendation"]
    assert rec["threshold"] == lowest_threshold_with_precision(probability, is_match, target)
    if rec["threshold"] is not None:
        assert measure_at(probability, is_match, rec["threshold"])["precision"] >= target
    if rec["threshold_lower_bound_rule"] is not None:
        assert rec["threshold_lower_bound_rule"] >= rec["threshold"]


@pytest.mark.parametrize(
    "content, expected",
    [
        (HEADER + "a,b,maybe,0.9\n", "labels.csv:2:3: decision must be one of match, not_a_match, unsure"),
        (HEADER + "a,b,match,\n", "labels.csv:2:4: match_probability is empty"),
        (HEADER + "a,b,match,0.9\nc,d,match,1.5\n", "labels.csv:3:4: match_probability must be a number from 0 to 1"),
        (HEADER + "a,b,match,nan\n", "labels.csv:2:4: match_probability"),
        (HEADER + "a,,match,0.9\n", "labels.csv:2:2: record_id_r is empty"),
        (HEADER + "a,a,match,0.9\n", "labels.csv:2:2: a record cannot be paired with itself"),
        (HEADER + "a,b,match\n", "labels.csv:2: expected 4 fields as in the header, found 3"),
        (HEADER + "a,b,match,0.9\nb,a,not_a_match,0.9\n", "labels.csv:3:1: pair a, b is already labelled on line 2"),
        ("record_id_l,record_id_r,decision\na,b,match\n", "labels.csv:1: labels need column(s) match_probability"),
        ("", "labels.csv:1: empty file"),
        (HEADER + '"a\nwith a newline",b,match,0.9\nc,d,match,2\n', "labels.csv:4:4: match_probability"),
    ],
    ids=["bad_decision", "no_probability", "probability_above_one", "nan_probability", "empty_record_id", "self_pair",
         "ragged_row", "duplicate_pair", "missing_column", "empty_file", "line_after_a_quoted_newline"],
)
def test_bad_labels_file_exits_2_naming_file_line_and_column(tmp_path, capsys, content, expected):
    path = _write(tmp_path, content)
    status, message = run_briefing(["eval", "linkage", "--labels", str(path), "--json", str(tmp_path / "out.json")])
    assert status == 2
    assert expected in message
    assert not (tmp_path / "out.json").exists()
    with pytest.raises(LabelsFileError):
        read_labels(path)


def test_every_problem_in_a_labels_file_is_listed(tmp_path):
    with pytest.raises(LabelsFileError) as exc:
        read_labels(_write(tmp_path, HEADER + "a,b,yes,0.9\nc,d,match,x\ne,f,match,0.5\n"))
    assert [p.split(": ")[0].rsplit("/", 1)[-1] for p in exc.value.problems] == ["labels.csv:2:3", "labels.csv:3:4"]


def test_a_labels_file_of_unsure_decisions_only_is_refused(tmp_path):
    status, message = run_briefing(["eval", "linkage", "--labels", str(_write(tmp_path, HEADER + "a,b,unsure,0.7\n"))])
    assert status == 2 and "no match / not_a_match decisions" in message and "1 unsure" in message


def test_missing_labels_file_and_half_a_truth_evaluation_are_refused(tmp_path):
    status, message = run_briefing(["eval", "linkage", "--labels", str(tmp_path / "nope.csv")])
    assert status == 2 and "nope.csv: no such file" in message
    status, message = run_briefing(["eval", "linkage", "--clusters", str(tmp_path / "c.csv")])
    assert status == 2 and "--clusters and --truth go together" in message
    status, message = run_briefing(["eval", "linkage"])
    assert status == 2 and "--labels" in message


def test_eval_linkage_with_labels_alone_prints_the_table_and_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "report" / "labels.json"
    status, _ = run_briefing(["eval", "linkage", "--labels", str(_write(tmp_path, SMALL)), "--target-precision", "0.9",
                              "--json", str(out)])
    assert status == 0
    text = capsys.readouterr().out
    assert "precision [95% CI]" in text and "recall [95% CI]" in text
    assert "0.91" in text and "<- recommended" in text
    assert "recommended link threshold for precision >= 0.9: 0.91" in text
    assert "review band" in text  # the sampling caveat is printed, not only documented
    report = json.loads(out.read_text())
    assert set(report) == {"labels"}
    figures = report["labels"]
    assert figures["labels"]["unsure_ignored"] == 1
    assert figures["recommendation"]["threshold"] == 0.91 and figures["recommendation"]["target_precision"] == 0.9
    assert {row["threshold"] for row in figures["thresholds"]} >= {0.05, 0.5, 0.91, 0.99}


def test_eval_linkage_with_truth_and_labels_keeps_the_truth_report(tmp_path, capsys):
    clusters = _write(tmp_path, "record_id,person_id\na,P1\nb,P1\nc,P2\n", "clusters.csv")
    truth = _write(tmp_path, "record_id,person_key\na,T1\nb,T1\nc,T2\n", "truth.csv")
    out = tmp_path / "all.json"
    status, _ = run_briefing(["eval", "linkage", "--clusters", str(clusters), "--truth", str(truth),
                              "--labels", str(_write(tmp_path, SMALL)), "--json", str(out)])
    assert status == 0
    text = capsys.readouterr().out
    assert "pairwise  precision 1.00000" in text and "steward labels: 6 decisive" in text
    report = json.loads(out.read_text())
    assert report["overall"]["pairwise_precision"] == 1.0 and report["labels"]["labels"]["decisive"] == 6


def test_rendered_table_leaves_out_the_identical_rows_below_every_label(tmp_path):
    text = render_labels_text(labels_report(read_labels(_write(tmp_path, SMALL))))
    assert "thresholds 0.05-0.5 as the next row" in text
    assert "\n     0.55 " in text
