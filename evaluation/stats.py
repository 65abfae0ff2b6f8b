"""The audit's statistics, in one place: per-person linkage counts, the person-level bootstrap, percentile
intervals, and ratio measures with their verdicts.

Every linkage rate here is a ratio of sums of per-person counts, so a group's figure is the sum over its
persons and a bootstrap replicate redraws the group's persons with replacement (stratified: each group, or
intersection cell, is resampled on its own). Pairwise counts grow with the square of a person's records, so
resampling pairs or records (as fairlearn's `MetricFrame` bootstrap does with rows) would treat one person's
pairs as independent. `bootstrap_sums` is the one resampler (the matcher and ranker audits and
`fnmr_bootstrap` all use it) and `ci95` the one percentile interval.

Per person p with r_p records, in a clustering where the cluster holding a cell of m of p's
records has a records in all (R records in the county):

- ``true_pairs`` = r_p (r_p - 1) / 2; ``kept_pairs`` = sum of m (m - 1) / 2 (true pairs linked);
- ``false_pairs`` = sum of m (a - m): predicted same-person pairs of one of p's records with a
  record of another person. A false pair is attributed to *both* persons involved, so it counts
  once in each person's group (twice when both are in the same group -- as it does in the
  denominator below);
- ``impostor_pairs`` = r_p (R - r_p): all pairs of one of p's records with another person's.

Rates of a group: FNMR = 1 - sum(kept) / sum(true); recall = 1 - FNMR; FMR = sum(false) /
sum(impostor) (per pair of records of different persons, so small); precision = sum(kept) /
(sum(kept) + sum(false)) -- of the predicted pairs touching the group's persons, the share that
are true.

Ratio measures compare each group's rate with the largest group's: `ratio_measure` builds one from
bootstrap cells (the matcher audit); the ranker audit builds its group figures from its own tables
(`evaluation.fairness.ranker_groups`) and takes the same interval test (`precise_ratio`) and the same
headline and verdict (`headline`) from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from evaluation.measures import MIN_PERSONS, RATIO_BAND, GroupFigure, Measure, Verdict, ratio_verdict

COUNTS = ("true_pairs", "kept_pairs", "false_pairs", "impostor_pairs")
#: A group whose ratio CI reaches into the band is compared with the reference only when the 95% CI
#: spans at most two band widths (upper / lower <= (1.25 / 0.80) ** 2 = 2.44): a wider interval that
#: overlaps the band cannot tell inside from outside, and the group is reported insufficient, as one
#: under MIN_PERSONS is. A CI wholly outside the band always counts, however wide -- unless it starts at
#: 0 (no errors in the group, where the bootstrap cannot say how few).
MAX_RATIO_CI_FACTOR = (RATIO_BAND[1] / RATIO_BAND[0]) ** 2
RATIO_THRESHOLD = f"ratio to the largest group within {RATIO_BAND[0]:.2f}–{RATIO_BAND[1]:.2f}"


def person_counts(clusters: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per true person (index person_key): records, true / kept / false / impostor pairs."""
    t = truth[["record_id", "person_key"]].astype(str).merge(
        clusters[["record_id", "person_id"]].astype(str), on="record_id", how="inner", validate="one_to_one")
    if len(t) != len(truth):
        raise ValueError(f"{len(truth) - len(t)} records of truth have no cluster")
    person, keys = pd.factorize(t["person_key"])
    cluster, _ = pd.factorize(t["person_id"])
    n_p = len(keys)
    cell, m = np.unique(cluster.astype(np.int64) * n_p + person, return_counts=True)
    cell_person = cell % n_p
    a = np.bincount(cluster)[cell // n_p]
    r = np.bincount(person, minlength=n_p).astype(np.float64)
    total = float(len(t))
    return pd.DataFrame({
        "records": r.astype(np.int64),
        "true_pairs": r * (r - 1) / 2,
        "kept_pairs": np.bincount(cell_person, weights=m * (m - 1) / 2, minlength=n_p),
        "false_pairs": np.bincount(cell_person, weights=m * (a - m), minlength=n_p),
        "impostor_pairs": r * (total - r),
    }, index=pd.Index(keys, name="person_key"))


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, float), np.asarray(den, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


#: rate name -> function of the summed counts (last axis in COUNTS order)
RATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "false_non_match_rate": lambda s: 1.0 - _div(s[..., 1], s[..., 0]),
    "recall": lambda s: _div(s[..., 1], s[..., 0]),
    "false_match_rate": lambda s: _div(s[..., 2], s[..., 3]),
    "precision": lambda s: _div(s[..., 1], s[..., 1] + s[..., 2]),
}


def bootstrap_sums(values: np.ndarray, replicates: int, rng: np.random.Generator, chunk: int = 50) -> np.ndarray:
    """(replicates x k) sums of ``values`` (n x k) over n rows drawn with replacement."""
    n = len(values)
    out = np.zeros((replicates, values.shape[1]))
    if n == 0:
        return out
    for lo in range(0, replicates, chunk):
        hi = min(lo + chunk, replicates)
        out[lo:hi] = values[rng.integers(0, n, size=(hi - lo, n))].sum(axis=1)
    return out


def ci95(draws: np.ndarray) -> tuple[float, float] | None:
    """The percentile 95% interval (2.5th, 97.5th) of the finite draws; None when none is finite."""
    finite = np.asarray(draws, float)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return None
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


def fnmr_bootstrap(clusters: pd.DataFrame, truth: pd.DataFrame, demographics: pd.DataFrame, group_col: str,
                   min_persons: int = 30, replicates: int = 500, seed: int = 0) -> dict:
    """Per-group FNMR with 95% CIs and the max/min ratio with its 95% CI, over groups with >= min_persons persons
    (the linkage report's figures): the persons with a true pair are redrawn within each group."""
    counts = person_counts(clusters, truth).sort_index()[["true_pairs", "kept_pairs"]]
    counts = counts[counts["true_pairs"] > 0].join(demographics.astype(str).set_index("person_key")[group_col])
    counts = counts.dropna(subset=[group_col])
    rng = np.random.default_rng(seed)
    fnmr = RATES["false_non_match_rate"]
    groups, draws = {}, {}
    for group, rows in counts.groupby(group_col):
        n_persons = int((demographics[group_col].astype(str) == group).sum())
        if n_persons < min_persons:
            continue
        values = rows[["true_pairs", "kept_pairs"]].to_numpy(float)
        draws[group] = fnmr(bootstrap_sums(values, replicates, rng))
        groups[group] = {"fnmr": float(fnmr(values.sum(axis=0))), "ci95": list(ci95(draws[group])),
                         "persons_with_pairs": int(len(rows))}
    result: dict = {"groups": groups, "replicates": replicates, "min_persons": min_persons}
    if len(groups) >= 2:
        point = [g["fnmr"] for g in groups.values()]
        matrix = np.vstack(list(draws.values()))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = matrix.max(axis=0) / matrix.min(axis=0)
        result["ratio"] = float(max(point) / min(point)) if min(point) > 0 else None
        ratio_ci = ci95(ratios)
        result["ratio_ci95"] = list(ratio_ci) if ratio_ci is not None else None
    return result


def clean(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


@dataclass
class Cell:
    """One group (or intersection): persons, point rates, summed counts and bootstrap replicates of the sums."""

    group: dict[str, str]
    persons: int
    point: dict[str, float]             # rate name -> point estimate
    sums: np.ndarray                    # summed counts (``value_cols`` order)
    draws: np.ndarray                   # replicates x k (empty when the cell is too small to report)
    extra: dict = field(default_factory=dict)


def linkage_point_rates(frame: pd.DataFrame, group_cols: list[str], finest: list[str] | None = None) -> pd.DataFrame:
    """The four rates per group of ``frame`` (person_counts rows + group columns) through fairlearn's
    ``MetricFrame`` (intersections when ``group_cols`` has several columns): FNMR and recall from
    (true, kept) pairs, FMR from (impostor, false) pairs, precision from (kept, false) pairs. Every rate
    is a ratio of sums, so the persons are first summed into the cells of ``finest`` (all group columns
    by default) and MetricFrame groups those cells -- the same figures, a thousand times fewer rows."""
    from fairlearn.metrics import MetricFrame

    finest = list(finest or group_cols)
    frame = frame.groupby([c for c in finest], dropna=False)[list(COUNTS)].sum().reset_index()

    def frame_of(y_true: str, y_pred: str, metrics: dict) -> pd.DataFrame:
        return MetricFrame(metrics=metrics, y_true=frame[y_true].to_numpy(float), y_pred=frame[y_pred].to_numpy(float),
                           sensitive_features=frame[group_cols].astype(str)).by_group

    def ratio(num, den):
        return lambda y_true, y_pred: float(_div(num(y_true, y_pred), den(y_true, y_pred)))

    total = lambda a: float(np.sum(a))  # noqa: E731
    return pd.concat([
        frame_of("true_pairs", "kept_pairs", {
            "false_non_match_rate": lambda t, k: 1.0 - float(_div(total(k), total(t))),
            "recall": ratio(lambda t, k: total(k), lambda t, k: total(t))}),
        frame_of("impostor_pairs", "false_pairs", {"false_match_rate": ratio(lambda i, f: total(f), lambda i, f: total(i))}),
        frame_of("kept_pairs", "false_pairs", {"precision": ratio(lambda k, f: total(k), lambda k, f: total(k) + total(f))}),
    ], axis=1)


def cells_by(frame: pd.DataFrame, group_cols: list[str], value_cols: list[str], fns: dict[str, Callable],
             replicates: int, rng: np.random.Generator, point: pd.DataFrame | None = None) -> list[Cell]:
    """Cells of ``frame`` (one row per person) by ``group_cols``, with bootstrap sums of ``value_cols``
    (persons redrawn within the cell). Point rates from ``point`` (indexed by the group values, e.g.
    ``linkage_point_rates``) or ``fns`` applied to the sums."""
    out = []
    for key, rows in frame.groupby(group_cols, sort=True, dropna=True):
        key = tuple(map(str, key if isinstance(key, tuple) else (key,)))
        values = rows[value_cols].to_numpy(float)
        sums = values.sum(axis=0)
        draws = bootstrap_sums(values, replicates, rng) if len(rows) >= MIN_PERSONS else np.empty((0, len(value_cols)))
        if point is not None:
            row = point.loc[key if len(key) > 1 else key[0]]
            rates = {name: float(row[name]) for name in fns}
        else:
            rates = {name: float(fn(sums)) for name, fn in fns.items()}
        out.append(Cell(dict(zip(group_cols, key)), int(len(rows)), rates, sums, draws))
    return out


def precise_ratio(ci: tuple[float, float] | None) -> bool:
    """A ratio's 95% interval is precise enough to judge: it starts above 0 and spans at most MAX_RATIO_CI_FACTOR."""
    return ci is not None and ci[0] > 0 and ci[1] / ci[0] <= MAX_RATIO_CI_FACTOR


def reaches_outside_band(ci: tuple[float, float] | None) -> bool:
    """Part of the interval lies outside RATIO_BAND (a measure's note says so beside a pass)."""
    return ci is not None and (ci[0] < RATIO_BAND[0] or ci[1] > RATIO_BAND[1])


def headline(judged: list[GroupFigure]) -> tuple[GroupFigure | None, float | None, tuple | None, Verdict]:
    """The judged figure whose ``extra["ratio"]`` lies farthest from 1 on a log scale (a ratio of 0 infinitely far;
    the first one on a tie), that ratio, its CI (``extra["ratio_ci95"]``) and `ratio_verdict` of it;
    (None, None, None, "insufficient") when nothing was judged."""
    if not judged:
        return None, None, None, "insufficient"
    worst = max(judged, key=lambda f: abs(np.log(f.extra["ratio"])) if f.extra["ratio"] > 0 else np.inf)
    value = worst.extra["ratio"]
    return worst, value, worst.extra.get("ratio_ci95"), ratio_verdict(value)


def ratio_measure(name: str, title: str, cells: list[Cell], rate: str, fns: dict[str, Callable],
                  persons_of: Callable[[Cell], int] = lambda c: c.persons, companions: tuple[str, ...] = (),
                  counts: tuple[str, ...] = COUNTS, threshold: str = RATIO_THRESHOLD,
                  partition: Callable[[Cell], tuple] = lambda c: tuple(sorted(c.group))) -> Measure:
    """A ratio measure. Each cell's ``rate`` is its GroupFigure value (with its bootstrap CI), its ratio
    to the largest sufficient cell of the same ``partition`` (default: same group keys) is in ``extra["ratio"]`` with
    ``extra["ratio_ci95"]`` (replicates of both cells divided); the headline is the ratio farthest from
    1 on a log scale over sufficient cells, with that ratio's CI, and the verdict ``ratio_verdict``.
    Cells under MIN_PERSONS persons get value None and never count. ``companions``: further rates
    reported in ``extra`` with CIs; ``counts``: names of the summed counts, reported in ``extra``. A cell
    whose ratio CI reaches into the band and spans more than MAX_RATIO_CI_FACTOR is insufficient too (value None; its rate stays in
    ``extra["rate"]``, the reason in ``extra["insufficient"]``)."""
    fn = fns[rate]
    figures: list[GroupFigure] = []
    compared: list[GroupFigure] = []
    reference, undefined = None, []
    parts: dict[tuple, list[Cell]] = {}
    for c in cells:
        parts.setdefault(partition(c), []).append(c)
    for members in parts.values():
        ok = [c for c in members if persons_of(c) >= MIN_PERSONS and np.isfinite(c.point[rate])]
        ref = max(ok, key=lambda c: (persons_of(c), sorted(c.group.items()))) if ok else None
        if ref is not None and reference is None:
            reference = ref.group
        for c in members:
            n = persons_of(c)
            value = clean(c.point[rate]) if n >= MIN_PERSONS else None
            extra = {k: clean(float(v)) for k, v in zip(counts, c.sums)}
            extra.update(c.extra)
            fig = GroupFigure(c.group, n, value, ci95(fn(c.draws)) if value is not None else None, extra)
            for other in companions:
                extra[other] = clean(c.point[other]) if value is not None else None
                extra[f"{other}_ci95"] = ci95(fns[other](c.draws)) if value is not None else None
            if value is not None and ref is not None:
                ref_value = ref.point[rate]
                extra["reference"] = ref.group
                ratio = None
                if ref_value > 0:
                    ratio = value / ref_value
                    with np.errstate(divide="ignore", invalid="ignore"):
                        extra["ratio_ci95"] = ci95(fn(c.draws) / fn(ref.draws))
                elif value == 0:
                    ratio = 1.0                     # no errors in either: equal
                else:                                   # the reference has no errors, this group has some
                    undefined.append(c.group)
                    extra.update(rate=fig.value, rate_ci95=fig.ci95,
                                 insufficient="the reference group has no errors: the ratio is undefined")
                    fig.value, fig.ci95 = None, None
                extra["ratio"] = ratio
                rci = extra.get("ratio_ci95")
                outside = rci is not None and rci[0] > 0 and (rci[0] > RATIO_BAND[1] or rci[1] < RATIO_BAND[0])
                if c is not ref and ratio is not None and not outside and not precise_ratio(rci):
                    extra.update(rate=fig.value, rate_ci95=fig.ci95, insufficient=(
                        f"95% CI of the ratio {'undefined' if rci is None else f'{rci[0]:.2f}–{rci[1]:.2f}'} spans more "
                        f"than a factor of {MAX_RATIO_CI_FACTOR:.2f} (two band widths) and reaches into the band: "
                        f"too imprecise to compare"))
                    fig.value, fig.ci95 = None, None
                elif ratio is not None and c is not ref:
                    compared.append(fig)
            figures.append(fig)
    worst, value, ci, verdict = headline(compared)
    if worst is None:
        note = f"fewer than two groups with {MIN_PERSONS}+ persons and a ratio CI within a factor of {MAX_RATIO_CI_FACTOR:.2f}"
    else:
        note = f"worst group: {worst.group}"
        if reaches_outside_band(ci):
            note += f"; its 95% CI {ci[0]:.2f}–{ci[1]:.2f} reaches outside the band"
    if undefined:
        note += f"; the reference has no errors but {undefined} do (ratio undefined, reported insufficient)"
    return Measure(name, title, threshold, value, ci, verdict, figures, reference, note)


def person_bootstrap_means(table: pd.DataFrame, columns: list[str], replicates: int, seed: int) -> dict[str, np.ndarray]:
    """Per column, `replicates` means over resampled persons (each with all their rows); NaN rows skipped."""
    persons = pd.Categorical(table["person_key"])
    n = len(persons.categories)
    rng = np.random.default_rng([seed, 1])
    draws = np.zeros((replicates, n))
    for r in range(replicates):
        draws[r] = np.bincount(rng.integers(0, n, n), minlength=n)
    out = {}
    for col in columns:
        v = table[col].to_numpy(dtype=float)
        ok = np.isfinite(v)
        sums = np.bincount(persons.codes[ok], weights=v[ok], minlength=n)
        counts = np.bincount(persons.codes[ok], minlength=n).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[col] = (draws @ sums) / (draws @ counts)
    return out
