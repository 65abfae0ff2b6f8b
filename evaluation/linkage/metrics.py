"""Linkage error rates by demographic group, on the contingency table of `matching.accuracy` (whose
`linkage_metrics` gives the overall pairwise and B-cubed figures).

Inputs are DataFrames: ``clusters`` (``record_id, person_id``), ``truth`` (``record_id, person_key``) and
``demographics`` (``person_key`` plus group columns such as ``race_ethnicity, sex, birth_year``; they exist only
in evaluation fixtures). A group's rates are computed from the (cluster, person) cell sizes, never by
enumerating pairs, so a million records take about a second. A rate whose denominator is zero is NaN (not
1.0), so that groups with nothing to measure never look perfect in a fairness comparison.
"""

from __future__ import annotations

from datetime import date
from typing import Sequence

import numpy as np
import pandas as pd

from matching.accuracy import Contingency, contingency, pairs_within, show_names

__all__ = [
    "AGE_BANDS",
    "MISSING_GROUP",
    "age_band",
    "error_rate_ratio",
    "group_error_rates",
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
    _check_demographics(demographics, cols)
    year = reference_year if reference_year is not None else date.today().year

    c = contingency(clusters, truth)
    labels = _group_labels(demographics, cols, year)
    person_label = labels.reindex(c.person_keys).fillna(MISSING_GROUP).to_numpy(dtype=object)
    group_code, group_names = pd.factorize(person_label, sort=True)
    table = _group_table(c, group_code, np.asarray(group_names, dtype=object), min_persons)
    order = sorted(range(len(group_names)), key=lambda i: _group_sort_key(table["group"].iat[i], cols))
    return table.iloc[order].reset_index(drop=True)


def _check_demographics(demographics: pd.DataFrame, cols: list[str]) -> None:
    if not cols:
        raise ValueError("group_col must name at least one column")
    if "person_key" not in demographics.columns:
        raise ValueError("demographics needs a person_key column")
    dup = demographics["person_key"].duplicated(keep=False)
    if dup.any():
        raise ValueError("demographics lists some persons more than once: "
                         f"{show_names(pd.unique(demographics.loc[dup, 'person_key']))}")


def _group_table(c: Contingency, group_code: np.ndarray, group_names: np.ndarray, min_persons: int) -> pd.DataFrame:
    """The columns of `group_error_rates`, one row per group code (unsorted)."""
    n_groups = len(group_names)

    # per person
    persons = np.bincount(group_code, minlength=n_groups)
    records = np.bincount(group_code, weights=c.person_size, minlength=n_groups)
    true_pairs = np.bincount(group_code, weights=pairs_within(c.person_size), minlength=n_groups)

    # per cell (cluster x person): the cell's group is its person's group
    cell_group = group_code[c.cell_person]
    kept_pairs = np.bincount(cell_group, weights=pairs_within(c.cell_size), minlength=n_groups)
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
    touching = np.bincount(cg_group, weights=pairs_within(a) - pairs_within(a - m), minlength=n_groups)

    missed = true_pairs - kept_pairs
    with np.errstate(divide="ignore", invalid="ignore"):
        fnmr = np.where(true_pairs > 0, missed / np.where(true_pairs > 0, true_pairs, 1), np.nan)
        fmr = np.where(records > 0, falsely_matched / np.where(records > 0, records, 1), np.nan)
        precision = np.where(touching > 0, kept_pairs / np.where(touching > 0, touching, 1),
                             np.nan)
    return pd.DataFrame({
        "group": group_names,
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
