"""Linkage accuracy metrics: pairwise and B-cubed, overall and by demographic group.

Inputs are DataFrames:

- ``clusters``: ``record_id, person_id`` — the predicted clustering (one row per record);
- ``truth``: ``record_id, person_key`` — the true person of every record;
- ``demographics`` (for group rates only): ``person_key`` plus group columns such as
  ``race_ethnicity, sex, birth_year``. Demographics exist only in evaluation fixtures.

Everything is computed from the contingency table of (predicted cluster, true person) cell
sizes, never by enumerating pairs, so a million records take about a second:

- true-positive pairs = sum over cells of C(n_cell, 2)
- predicted pairs     = sum over clusters of C(size, 2)
- true pairs          = sum over persons of C(size, 2)

Conventions: pairwise precision with no predicted pairs is 1.0 (nothing was wrongly linked);
pairwise recall with no true pairs is 1.0 (nothing could be missed); F1 is 0.0 when precision
and recall are both 0. B-cubed precision / recall are averaged over records: a record's
precision is the share of its cluster that is its own person, its recall the share of its
person that is in its cluster.

In the per-group table, a rate whose denominator is zero is NaN (not 1.0), so that groups with
nothing to measure never look perfect in a fairness comparison.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "AGE_BANDS",
    "MISSING_GROUP",
    "LinkageMetrics",
    "age_band",
    "error_rate_ratio",
    "group_error_rates",
    "linkage_metrics",
]

#: Age bands used when ``group_col == "age_band"``: (label, lowest age, highest age).
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("<25", -10**6, 24),
    ("25-44", 25, 44),
    ("45-64", 45, 64),
    ("65+", 65, 10**6),
)
#: Group value for persons with no demographics row or a null group value.
MISSING_GROUP = "(missing)"
_SHOW = 5


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


def _pairs(n: np.ndarray) -> np.ndarray:
    n = np.asarray(n, dtype=np.int64)
    return n * (n - 1) // 2


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _names(values: Sequence, limit: int = _SHOW) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _check_frame(frame: pd.DataFrame, name: str, columns: tuple[str, str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} needs columns {list(columns)}; missing {missing}")
    key, label = columns
    nulls = frame[key].isna() | frame[label].isna()
    if nulls.any():
        bad = frame.loc[nulls, key].tolist()
        raise ValueError(f"{name} has {int(nulls.sum())} rows with a null {key} or {label}: "
                         f"{_names(bad)}")
    dup = frame[key].duplicated(keep=False)
    if dup.any():
        raise ValueError(f"{name} lists some records more than once: "
                         f"{_names(pd.unique(frame.loc[dup, key]))}")


@dataclass
class _Contingency:
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


def _contingency(clusters: pd.DataFrame, truth: pd.DataFrame) -> _Contingency:
    _check_frame(clusters, "clusters", ("record_id", "person_id"))
    _check_frame(truth, "truth", ("record_id", "person_key"))
    predicted = clusters.set_index("record_id")["person_id"]
    true = truth.set_index("record_id")["person_key"]
    position = true.index.get_indexer(predicted.index)  # ids are unique (checked above)
    if len(predicted) != len(true) or (position < 0).any():
        only_predicted = predicted.index[~predicted.index.isin(true.index)]
        only_true = true.index[~true.index.isin(predicted.index)]
        parts = []
        if len(only_predicted):
            parts.append(f"{len(only_predicted)} records in clusters but not in truth "
                         f"({_names(only_predicted)})")
        if len(only_true):
            parts.append(f"{len(only_true)} records in truth but not in clusters "
                         f"({_names(only_true)})")
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
    return _Contingency(
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
    c = _contingency(clusters, truth)
    tp = int(_pairs(c.cell_size).sum())
    predicted = int(_pairs(c.cluster_size).sum())
    true = int(_pairs(c.person_size).sum())
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
        pairwise_f1=float(_f1(precision, recall)),
        bcubed_precision=b_precision,
        bcubed_recall=b_recall,
        bcubed_f1=float(_f1(b_precision, b_recall)),
        true_pairs=true,
        predicted_pairs=predicted,
        true_positive_pairs=tp,
        n_records=n,
        n_persons_true=len(c.person_size),
        n_clusters=len(c.cluster_size),
        singleton_clusters=int((c.cluster_size == 1).sum()),
    )


# --------------------------------------------------------------------------- by group


def age_band(birth_year: pd.Series, reference_year: int) -> pd.Series:
    """``<25, 25-44, 45-64, 65+`` from birth year (age = reference_year - birth_year);
    missing years give NA."""
    years = pd.to_numeric(birth_year, errors="coerce")
    age = reference_year - years
    out = pd.Series(pd.NA, index=birth_year.index, dtype=object)
    for label, low, high in AGE_BANDS:
        out[(age >= low) & (age <= high)] = label
    return out


def _group_labels(demographics: pd.DataFrame, group_cols: list[str],
                  reference_year: int) -> pd.Series:
    """One string label per person_key (components joined with ``|``)."""
    parts = []
    for col in group_cols:
        if col == "age_band" and col not in demographics.columns:
            if "birth_year" not in demographics.columns:
                raise ValueError("group 'age_band' needs an age_band or birth_year column in "
                                 "demographics")
            values = age_band(demographics["birth_year"], reference_year)
        elif col not in demographics.columns:
            raise ValueError(f"demographics has no column {col!r}; it has "
                             f"{list(demographics.columns)}")
        else:
            values = demographics[col]
        parts.append(values)
    missing = np.zeros(len(demographics), dtype=bool)
    texts = []
    for values in parts:
        na = values.isna().to_numpy()
        missing |= na
        texts.append(values.astype(object).where(~na, "").map(_label_text).to_numpy(dtype=object))
    label = texts[0]
    for t in texts[1:]:
        label = label + "|" + t
    label = np.where(missing, MISSING_GROUP, label)
    return pd.Series(label, index=demographics["person_key"].to_numpy(), dtype=object)


def _label_text(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # birth_year read as float: 1980.0 -> "1980"
    return str(value)


def group_error_rates(
    clusters: pd.DataFrame,
    truth: pd.DataFrame,
    demographics: pd.DataFrame,
    group_col: str | Sequence[str],
    min_persons: int = 30,
    reference_year: int | None = None,
) -> pd.DataFrame:
    """Linkage error rates per demographic group (one row per group value, sorted).

    ``group_col`` is a demographics column, ``"age_band"`` (derived from ``birth_year``
    relative to ``reference_year``, default the current year, unless demographics already has
    an ``age_band`` column), or a list of them for an intersection (group value
    ``"hispanic|F"``). Persons without a demographics row, or with a null group value, form the
    group :data:`MISSING_GROUP`. A person's group applies to all of their records and pairs.

    Columns:

    - ``group``, ``persons`` (true persons in the group), ``records`` (their records);
    - ``true_pairs`` — pairs of records of the same group person;
    - ``missed_pairs`` — those pairs that are not in the same predicted cluster;
    - ``false_non_match_rate`` = missed_pairs / true_pairs (NaN if no true pairs);
    - ``falsely_matched_records`` — group records in a cluster that also holds a record of a
      different person; ``false_match_rate`` = falsely_matched_records / records;
    - ``predicted_pairs`` — predicted pairs with at least one record in the group;
      ``pairwise_precision`` = true pairs among them / predicted_pairs (NaN if none);
    - ``sufficient`` = persons >= min_persons.
    """
    cols = [group_col] if isinstance(group_col, str) else list(group_col)
    if not cols:
        raise ValueError("group_col must name at least one column")
    if "person_key" not in demographics.columns:
        raise ValueError("demographics needs a person_key column")
    dup = demographics["person_key"].duplicated(keep=False)
    if dup.any():
        raise ValueError("demographics lists some persons more than once: "
                         f"{_names(pd.unique(demographics.loc[dup, 'person_key']))}")
    year = reference_year if reference_year is not None else date.today().year

    c = _contingency(clusters, truth)
    labels = _group_labels(demographics, cols, year)
    person_label = labels.reindex(c.person_keys).fillna(MISSING_GROUP).to_numpy(dtype=object)
    group_code, group_names = pd.factorize(person_label, sort=True)
    n_groups = len(group_names)

    # per person
    persons = np.bincount(group_code, minlength=n_groups)
    records = np.bincount(group_code, weights=c.person_size, minlength=n_groups)
    true_pairs = np.bincount(group_code, weights=_pairs(c.person_size), minlength=n_groups)

    # per cell (cluster x person): the cell's group is its person's group
    cell_group = group_code[c.cell_person]
    kept_pairs = np.bincount(cell_group, weights=_pairs(c.cell_size), minlength=n_groups)
    mixed = c.cluster_size[c.cell_cluster] > c.cell_size
    falsely_matched = np.bincount(cell_group, weights=np.where(mixed, c.cell_size, 0),
                                  minlength=n_groups)

    # predicted pairs touching the group: per (cluster, group) with m group records in a
    # cluster of size a, C(a, 2) - C(a - m, 2)
    n_clusters = len(c.cluster_size)
    cg_key = cell_group.astype(np.int64) * n_clusters + c.cell_cluster
    order = np.argsort(cg_key, kind="stable")
    keys, starts = np.unique(cg_key[order], return_index=True)
    m = np.add.reduceat(c.cell_size[order], starts) if len(order) else np.zeros(0, np.int64)
    cg_group = keys // n_clusters
    a = c.cluster_size[keys % n_clusters]
    touching = np.bincount(cg_group, weights=_pairs(a) - _pairs(a - m), minlength=n_groups)

    missed = true_pairs - kept_pairs
    with np.errstate(divide="ignore", invalid="ignore"):
        fnmr = np.where(true_pairs > 0, missed / np.where(true_pairs > 0, true_pairs, 1), np.nan)
        fmr = np.where(records > 0, falsely_matched / np.where(records > 0, records, 1), np.nan)
        precision = np.where(touching > 0, kept_pairs / np.where(touching > 0, touching, 1),
                             np.nan)
    table = pd.DataFrame({
        "group": np.asarray(group_names, dtype=object),
        "persons": persons.astype(np.int64),
        "records": records.astype(np.int64),
        "true_pairs": true_pairs.astype(np.int64),
        "missed_pairs": missed.astype(np.int64),
        "false_non_match_rate": fnmr,
        "falsely_matched_records": falsely_matched.astype(np.int64),
        "false_match_rate": fmr,
        "predicted_pairs": touching.astype(np.int64),
        "pairwise_precision": precision,
        "sufficient": persons >= min_persons,
    })
    order = sorted(range(n_groups), key=lambda i: _group_sort_key(table["group"].iat[i], cols))
    return table.iloc[order].reset_index(drop=True)


def _group_sort_key(label: str, cols: list[str]) -> tuple:
    """Groups sort by value, age bands youngest first, the missing group last."""
    if label == MISSING_GROUP:
        return (1,)
    parts = label.split("|")
    if len(parts) != len(cols):  # a value containing "|": plain text order
        return (0, tuple((0, 0, label) for _ in cols))
    band_rank = {band[0]: i for i, band in enumerate(AGE_BANDS)}
    return (0, tuple((0, band_rank.get(part, len(band_rank)), part) if col == "age_band"
                     else (0, 0, part) for part, col in zip(parts, cols)))


def error_rate_ratio(table: pd.DataFrame, rate_col: str = "false_non_match_rate") -> float:
    """Largest / smallest ``rate_col`` over groups with ``sufficient`` data (all rows if the
    table has no ``sufficient`` column) and a non-NaN rate.

    Returns NaN when fewer than two groups qualify, or when the smallest rate is 0 (the ratio
    is unbounded, or 0/0 when every rate is 0); report the rates themselves in that case.
    """
    if rate_col not in table.columns:
        raise ValueError(f"table has no column {rate_col!r}")
    rows = table
    if "sufficient" in table.columns:
        rows = rows[rows["sufficient"].astype(bool)]
    rates = pd.to_numeric(rows[rate_col], errors="coerce").dropna()
    if len(rates) < 2:
        return float("nan")
    low, high = float(rates.min()), float(rates.max())
    if low == 0:
        return float("nan")
    return high / low
