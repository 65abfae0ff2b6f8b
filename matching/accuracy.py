"""How well a clustering matches the truth: pairwise and B-cubed precision, recall and F1.

Production code needs this too: choosing a matcher's thresholds from labels
(`matching.thresholds`) measures candidate clusterings with it; `evaluation.linkage.metrics`
builds the per-group error rates on the same contingency table.

Inputs are DataFrames: ``clusters`` (``record_id, person_id``, the predicted clustering, one row per
record) and ``truth`` (``record_id, person_key``, the true person of every record).

Everything is computed from the contingency table of (predicted cluster, true person) cell sizes,
never by enumerating pairs, so a million records take about a second:

- true-positive pairs = sum over cells of C(n_cell, 2)
- predicted pairs     = sum over clusters of C(size, 2)
- true pairs          = sum over persons of C(size, 2)

Conventions: pairwise precision with no predicted pairs is 1.0 (nothing was wrongly linked);
pairwise recall with no true pairs is 1.0 (nothing could be missed); F1 is 0.0 when precision and
recall are both 0. B-cubed precision / recall are averaged over records: a record's precision is the
share of its cluster that is its own person, its recall the share of its person that is in its
cluster.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

SHOW_NAMES = 5      # ids named in an error message before "…"


@dataclass
class LinkageMetrics:
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float
    true_pairs: int
    predicted_pairs: int
    true_positive_pairs: int
    n_records: int
    n_persons_true: int
    n_clusters: int
    singleton_clusters: int

    def to_dict(self) -> dict:
        """Plain Python numbers, ready for JSON."""
        return {k: (int(v) if isinstance(v, (int, np.integer)) else float(v))
                for k, v in asdict(self).items()}


# --------------------------------------------------------------------------- helpers


def pairs_within(n: np.ndarray) -> np.ndarray:
    """The pairs among n records, C(n, 2), element-wise."""
    n = np.asarray(n, dtype=np.int64)
    return n * (n - 1) // 2


def f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def show_names(values: Sequence, limit: int = SHOW_NAMES) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_frame(frame: pd.DataFrame, name: str, columns: tuple[str, str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} needs columns {list(columns)}; missing {missing}")
    key, label = columns
    nulls = frame[key].isna() | frame[label].isna()
    if nulls.any():
        bad = frame.loc[nulls, key].tolist()
        raise ValueError(f"{name} has {int(nulls.sum())} rows with a null {key} or {label}: "
                         f"{show_names(bad)}")
    dup = frame[key].duplicated(keep=False)
    if dup.any():
        raise ValueError(f"{name} lists some records more than once: "
                         f"{show_names(pd.unique(frame.loc[dup, key]))}")


@dataclass
class Contingency:
    """Per record: cluster code, person code; and the cell / cluster / person sizes."""

    record_ids: np.ndarray
    cluster: np.ndarray  # per record
    person: np.ndarray  # per record
    person_keys: np.ndarray  # person code -> person_key
    cell_cluster: np.ndarray  # per cell
    cell_person: np.ndarray  # per cell
    cell_size: np.ndarray  # per cell
    cluster_size: np.ndarray  # per cluster code
    person_size: np.ndarray  # per person code


def contingency(clusters: pd.DataFrame, truth: pd.DataFrame) -> Contingency:
    check_frame(clusters, "clusters", ("record_id", "person_id"))
    check_frame(truth, "truth", ("record_id", "person_key"))
    predicted = clusters.set_index("record_id")["person_id"]
    true = truth.set_index("record_id")["person_key"]
    position = true.index.get_indexer(predicted.index)  # ids are unique (checked above)
    if len(predicted) != len(true) or (position < 0).any():
        only_predicted = predicted.index[~predicted.index.isin(true.index)]
        only_true = true.index[~true.index.isin(predicted.index)]
        parts = []
        if len(only_predicted):
            parts.append(f"{len(only_predicted)} records in clusters but not in truth "
                         f"({show_names(only_predicted)})")
        if len(only_true):
            parts.append(f"{len(only_true)} records in truth but not in clusters "
                         f"({show_names(only_true)})")
        raise ValueError("clusters and truth must cover the same records: " + "; ".join(parts))
    if len(true) == 0:
        raise ValueError("no records to evaluate")
    cluster, _ = pd.factorize(predicted.to_numpy(), sort=False)
    person, person_keys = pd.factorize(true.to_numpy()[position], sort=False)
    cluster = cluster.astype(np.int64)
    person = person.astype(np.int64)
    n_persons = int(person.max()) + 1
    cell_key = cluster * n_persons + person
    cells, cell_size = np.unique(cell_key, return_counts=True)
    return Contingency(
        record_ids=predicted.index.to_numpy(),
        cluster=cluster,
        person=person,
        person_keys=np.asarray(person_keys),
        cell_cluster=cells // n_persons,
        cell_person=cells % n_persons,
        cell_size=cell_size.astype(np.int64),
        cluster_size=np.bincount(cluster).astype(np.int64),
        person_size=np.bincount(person, minlength=n_persons).astype(np.int64),
    )


# --------------------------------------------------------------------------- overall


def linkage_metrics(clusters: pd.DataFrame, truth: pd.DataFrame) -> LinkageMetrics:
    """Pairwise and B-cubed precision / recall / F1 of ``clusters`` against ``truth``.

    Raises ValueError if the two inputs do not cover exactly the same records, if a record
    appears twice in either, or if an id / label is null.
    """
    c = contingency(clusters, truth)
    tp = int(pairs_within(c.cell_size).sum())
    predicted = int(pairs_within(c.cluster_size).sum())
    true = int(pairs_within(c.person_size).sum())
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0

    n = int(c.cell_size.sum())
    sizes = c.cell_size.astype(np.float64)
    # Each of the n_cell records of a cell has precision n_cell / |cluster| and recall
    # n_cell / |person|.
    # math.fsum: correctly rounded, so the result does not depend on row order.
    b_precision = math.fsum((sizes * sizes / c.cluster_size[c.cell_cluster]).tolist()) / n
    b_recall = math.fsum((sizes * sizes / c.person_size[c.cell_person]).tolist()) / n
    return LinkageMetrics(
        pairwise_precision=float(precision),
        pairwise_recall=float(recall),
        pairwise_f1=float(f1(precision, recall)),
        bcubed_precision=b_precision,
        bcubed_recall=b_recall,
        bcubed_f1=float(f1(b_precision, b_recall)),
        true_pairs=true,
        predicted_pairs=predicted,
        true_positive_pairs=tp,
        n_records=n,
        n_persons_true=len(c.person_size),
        n_clusters=len(c.cluster_size),
        singleton_clusters=int((c.cluster_size == 1).sum()),
    )
