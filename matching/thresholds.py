"""Choose the matcher's operating thresholds from measured precision and recall (`train-matcher --truth`).

The production half of training with labels, beside the model whose `Thresholds` it sets
(`matching.model`). Labels come from a truth table (synthetic data, FEBRL) or, later, from
stewards' decisions; a clustering's pairwise precision / recall against them is measured by
`matching.accuracy.linkage_metrics`.

Grade boundaries are set on the precision of all scored pairs at or above a threshold:
`certain` is the lowest threshold from which precision stays >= 0.999, `probable` >= 0.99,
`possible` >= 0.90 -- but never below the floors in GRADE_FLOOR: a finite labelled sample with
no errors above 0.6 does not make a 0.6 match "certain" for a responder. The link threshold is
the one, on a grid, whose *clustering* has the best pairwise F1 among those with cluster
precision >= 0.996 on the training data, i.e. 0.995 plus a margin for unseen data (a false merge
shows a stranger's history to a responder; a miss only loses context). The review band runs from
`possible` up to the link threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from matching.accuracy import linkage_metrics
from matching.attested import Identities
from matching.cluster import assign_person_ids, components
from matching.model import Thresholds

GRADE_PRECISION = {"certain": 0.999, "probable": 0.99, "possible": 0.90}
GRADE_FLOOR = {"certain": 0.99, "probable": 0.90, "possible": 0.50}
# 0.995 is the acceptance bar on unseen data; chosen in-sample on the training county, so a margin.
LINK_PRECISION = 0.996
LINK_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)


def label_pairs(pairs: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """True where both records of a pair belong to the same true person."""
    person = truth.set_index(truth["record_id"].astype(str))["person_key"].astype(str)
    left = pairs["record_id_l"].astype(str).map(person)
    right = pairs["record_id_r"].astype(str).map(person)
    return (left.notna() & (left == right)).to_numpy()


def lowest_threshold_with_precision(probability: np.ndarray, is_match: np.ndarray, target: float) -> float | None:
    """Smallest score t such that precision of pairs scoring >= t' is >= target for every t' >= t."""
    order = np.argsort(-probability, kind="stable")
    p_sorted, y_sorted = probability[order], is_match[order].astype(float)
    precision = np.cumsum(y_sorted) / np.arange(1, len(y_sorted) + 1)
    # Only cut between distinct scores: evaluate precision at the last pair of each score group.
    last_of_group = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    ok = precision >= target
    cut = None
    for i in np.flatnonzero(last_of_group):
        if not ok[i]:
            break
        cut = float(p_sorted[i])
    return cut


def sweep_link_thresholds(record_ids: pd.Series, pairs: pd.DataFrame, truth: pd.DataFrame, grid=LINK_GRID,
                          identities: Identities | None = None) -> pd.DataFrame:
    """Cluster at each grid threshold (checking `identities`, as linking does) and measure pairwise
    precision / recall / F1 against truth."""
    rows = []
    for threshold in grid:
        labels = components(record_ids, pairs, threshold, identities=identities)
        clusters = assign_person_ids(record_ids, labels).clusters
        m = linkage_metrics(clusters, truth)
        rows.append({"threshold": threshold, "precision": m.pairwise_precision, "recall": m.pairwise_recall,
                     "f1": m.pairwise_f1, "persons": m.n_clusters})
    return pd.DataFrame(rows)


def choose_thresholds(record_ids: pd.Series, pairs: pd.DataFrame, truth: pd.DataFrame, source: str = "truth table",
                      identities: Identities | None = None) -> Thresholds:
    """Thresholds measured against `truth` (record_id, person_key) on `pairs` scored by the model
    (the link threshold by clustering as linking does, with the records' `identities`)."""
    is_match = label_pairs(pairs, truth)
    probability = pairs["match_probability"].to_numpy(dtype=float)
    defaults = Thresholds()
    grades = {}
    for grade, target in GRADE_PRECISION.items():
        cut = lowest_threshold_with_precision(probability, is_match, target)
        measured_cut = cut if cut is not None else getattr(defaults, grade)
        grades[grade] = min(max(measured_cut, GRADE_FLOOR[grade]), 0.9999)
    grades["probable"] = min(grades["probable"], grades["certain"])
    grades["possible"] = min(grades["possible"], grades["probable"])

    sweep = sweep_link_thresholds(record_ids, pairs, truth, identities=identities)
    eligible = sweep[(sweep["precision"] >= LINK_PRECISION) & (sweep["threshold"] >= GRADE_FLOOR["possible"])]
    best = (eligible if len(eligible) else sweep.sort_values("precision", ascending=False).head(1)).sort_values(
        ["f1", "threshold"], ascending=[False, False]
    ).iloc[0]
    link = float(best["threshold"])
    measured = {
        "labels": source,
        "labelled_pairs_scored": int(len(pairs)),
        "true_pairs_scored": int(is_match.sum()),
        "grade_precision_targets": GRADE_PRECISION,
        "link_precision_target": LINK_PRECISION,
        "link_sweep": sweep.round(6).to_dict(orient="records"),
        "at_link": {k: round(float(best[k]), 6) for k in ("precision", "recall", "f1")},
    }
    return Thresholds(
        link=link,
        review_low=min(grades["possible"], link),
        certain=grades["certain"],
        probable=grades["probable"],
        possible=grades["possible"],
        chosen_by=f"measured precision/recall against {source}",
        measured=measured,
    )
