"""Person-level bootstrap confidence intervals for per-group false-non-match rates and their ratio.

Pairwise rates are dominated by people with many records (pairs grow quadratically), so the
unit resampled is the person, within each group: a replicate draws each group's persons with
replacement and recomputes missed / true pairs. fairlearn's MetricFrame resamples rows, which
here would be pairs of one person treated as independent, hence this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def person_pair_counts(clusters: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per true person with 2+ records: `true_pairs` and `kept_pairs` (pairs still in one predicted cluster)."""
    t = truth[["record_id", "person_key"]].astype(str).merge(clusters[["record_id", "person_id"]].astype(str), on="record_id")
    cells = t.groupby(["person_key", "person_id"]).size()
    kept = (cells * (cells - 1) // 2).groupby("person_key").sum()
    size = t.groupby("person_key").size()
    out = pd.DataFrame({"true_pairs": size * (size - 1) // 2, "kept_pairs": kept})
    return out[out["true_pairs"] > 0]


def fnmr_bootstrap(clusters: pd.DataFrame, truth: pd.DataFrame, demographics: pd.DataFrame, group_col: str,
                   min_persons: int = 30, replicates: int = 500, seed: int = 0) -> dict:
    """Per-group FNMR with 95% CIs and the max/min ratio with its 95% CI, over groups with >= min_persons persons."""
    counts = person_pair_counts(clusters, truth).join(demographics.astype(str).set_index("person_key")[group_col])
    counts = counts.dropna(subset=[group_col])
    rng = np.random.default_rng(seed)
    groups, draws = {}, {}
    for group, rows in counts.groupby(group_col):
        n_persons = int((demographics[group_col].astype(str) == group).sum())
        if n_persons < min_persons:
            continue
        true, kept = rows["true_pairs"].to_numpy(float), rows["kept_pairs"].to_numpy(float)
        picks = rng.integers(0, len(rows), size=(replicates, len(rows)))
        rates = 1 - kept[picks].sum(axis=1) / true[picks].sum(axis=1)
        draws[group] = rates
        groups[group] = {"fnmr": float(1 - kept.sum() / true.sum()), "ci95": [float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))],
                         "persons_with_pairs": int(len(rows))}
    result: dict = {"groups": groups, "replicates": replicates, "min_persons": min_persons}
    if len(groups) >= 2:
        point = [g["fnmr"] for g in groups.values()]
        matrix = np.vstack(list(draws.values()))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = matrix.max(axis=0) / matrix.min(axis=0)
        ratios = ratios[np.isfinite(ratios)]
        result["ratio"] = float(max(point) / min(point)) if min(point) > 0 else None
        result["ratio_ci95"] = [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))] if len(ratios) else None
    return result
