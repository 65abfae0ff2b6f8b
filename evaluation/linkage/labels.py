"""Steward decisions as labels: precision and recall at candidate thresholds, and a threshold to use.

A labels file is a CSV with one row per reviewed pair:

    record_id_l,record_id_r,decision,match_probability
    R1,R7,match,0.91
    R2,R9,not_a_match,0.64
    R3,R4,unsure,0.55

`decision` is `match`, `not_a_match` or `unsure` (case and `-` / space for `_` are forgiven);
`unsure` rows are counted and otherwise ignored. `match_probability` is the probability the pair
had when the steward saw it -- the model's answer being judged -- and is required on every row.
Each pair appears once (the steward's latest decision). A bad file raises `LabelsFileError`
listing every problem as `path:line:column: message`.

At a threshold t a labelled pair is predicted a match when p >= t; a pair labelled `match` is a
positive. Precision = TP / (TP + FP) among labelled pairs at or above t, recall = TP / (TP + FN)
among labelled matches; each with a Wilson 95% interval. The recommended threshold is the lowest
from which precision stays at or above the target (`matching.thresholds.
lowest_threshold_with_precision`, the rule used with a truth table); a stricter one also asks the
interval's lower bound to reach the target, which takes some 765 correct labels above it at 0.995
(with no error, the lower bound is n / (n + 1.96^2)).

**The sample is biased.** Stewards only review pairs the model was unsure of: those in the review
band [review_low, link), and new records that joined no person at `certain` grade. Pairs far above
the link threshold or far below the band are rarely labelled, so these figures describe the
review band, not all pairs: precision above the band's top rests on few labels, and recall is
recall *among reviewed matches*, not of every true match in the population. Use them to move the
thresholds within and around the band, with a truth-table evaluation for the rest.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from matching.thresholds import lowest_threshold_with_precision

COLUMNS = ("record_id_l", "record_id_r", "decision", "match_probability")
DECISIONS = ("match", "not_a_match", "unsure")
DEFAULT_TARGET_PRECISION = 0.995
#: Candidate thresholds shown: 0.05 to 0.95 by 0.05, then 0.96 to 0.99 by 0.01.
GRID = tuple(round(0.05 * k, 2) for k in range(1, 20)) + (0.96, 0.97, 0.98, 0.99)
Z95 = 1.959963984540054
MAX_PROBLEMS = 20
BIAS_NOTE = ("steward labels come from the review queue, so these figures describe the review band, not all pairs; "
             "recall is among reviewed matches only")


class LabelsFileError(ValueError):
    """A labels file that cannot be used: every problem found, one `path:line:column: message` per line."""

    def __init__(self, problems: list[str], total: int | None = None):
        self.problems = problems
        self.total = total if total is not None else len(problems)
        more = self.total - len(problems)
        super().__init__("\n".join(problems + ([f"... and {more} more"] if more > 0 else [])))


@dataclass
class Labels:
    """Decisive labels (`pairs`: record_id_l, record_id_r, match_probability, is_match, line) and the unsure count."""

    pairs: pd.DataFrame
    unsure: int
    path: str = ""

    @property
    def n_match(self) -> int:
        return int(self.pairs["is_match"].sum())

    @property
    def n_not_a_match(self) -> int:
        return int(len(self.pairs) - self.pairs["is_match"].sum())


def _decision(text: str) -> str:
    return "_".join(text.strip().lower().replace("-", " ").split())


class _Problems:
    """The problems found in a labels file: the first MAX_PROBLEMS as `path:line[:column]: message`, and the count."""

    def __init__(self, where: str):
        self.where, self.listed, self.total = where, [], 0

    def add(self, line: int, column: int | None, message: str) -> None:
        self.total += 1
        if len(self.listed) < MAX_PROBLEMS:
            self.listed.append(f"{self.where}:{line}" + (f":{column}" if column else "") + f": {message}")


def _labels_text(path: Path, where: str) -> str:
    """The file's text (UTF-8, a BOM allowed); LabelsFileError when it is missing, not UTF-8 or binary."""
    if not path.is_file():
        raise LabelsFileError([f"{where}: no such file (labels)"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise LabelsFileError([f"{where}:{line}: not UTF-8 text (byte {exc.start})"]) from exc
    if "\x00" in text:
        raise LabelsFileError([f"{where}:1: not a CSV file (binary data)"])
    return text


def _header(reader, where: str) -> tuple[list[str], dict[str, int]]:
    """The header's column names and the (1-based) column of each; LabelsFileError when it lacks a needed column."""
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise LabelsFileError([f"{where}:1: not a readable CSV: {exc}"]) from exc
    if not header or not any(h.strip() for h in header):
        raise LabelsFileError([f"{where}:1: empty file: labels need a header {','.join(COLUMNS)}"])
    names = [h.strip() for h in header]
    position = {}
    problems: list[str] = []
    for column, name in enumerate(names, 1):
        if name in position and name in COLUMNS:
            problems.append(f"{where}:1:{column}: column {name} appears twice")
        position.setdefault(name, column)
    missing = [c for c in COLUMNS if c not in position]
    if missing:
        problems.append(f"{where}:1: labels need column(s) {', '.join(missing)}; found {', '.join(names)}")
    if problems:
        raise LabelsFileError(problems)
    return names, position


def _row(fields: list[str], names: list[str], position: dict[str, int], start: int,
         problems: _Problems) -> tuple[str, str, float, str] | None:
    """One data row checked: (record_id_l, record_id_r, probability, decision), or None with its problems noted."""
    if len(fields) != len(names):
        problems.add(start, None, f"expected {len(names)} fields as in the header, found {len(fields)}")
        return None
    value = {c: fields[position[c] - 1].strip() for c in COLUMNS}
    bad = False
    for side in ("record_id_l", "record_id_r"):
        if not value[side]:
            problems.add(start, position[side], f"{side} is empty")
            bad = True
    if not bad and value["record_id_l"] == value["record_id_r"]:
        problems.add(start, position["record_id_r"], f"a record cannot be paired with itself ({value['record_id_l']})")
        bad = True
    decision = _decision(value["decision"])
    if decision not in DECISIONS:
        problems.add(start, position["decision"], f"decision must be one of {', '.join(DECISIONS)}, got {value['decision']!r}")
        bad = True
    try:
        probability = float(value["match_probability"])
        if not 0.0 <= probability <= 1.0:  # also refuses nan
            raise ValueError
    except ValueError:
        what = "is empty" if not value["match_probability"] else f"must be a number from 0 to 1, got {value['match_probability']!r}"
        problems.add(start, position["match_probability"], f"match_probability {what} (the pair's probability when reviewed)")
        bad = True
    return None if bad else (value["record_id_l"], value["record_id_r"], probability, decision)


def read_labels(path: str | Path) -> Labels:
    """Read and check a labels CSV (see the module docstring); LabelsFileError lists what is wrong."""
    path = Path(path)
    where = str(path)
    reader = csv.reader(io.StringIO(_labels_text(path, where), newline=""))
    names, position = _header(reader, where)
    problems = _Problems(where)
    rows, unsure = [], 0
    seen: dict[tuple[str, str], int] = {}
    line = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(line, None, f"not a readable CSV row: {exc}")
            break
        start, line = line, reader.line_num + 1
        if not any(f.strip() for f in fields):
            continue
        checked = _row(fields, names, position, start, problems)
        if checked is None:
            continue
        left, right, probability, decision = checked
        key = tuple(sorted((left, right)))
        if key in seen:
            problems.add(start, position["record_id_l"], f"pair {key[0]}, {key[1]} is already labelled on line {seen[key]}; "
                                                         "give each pair once (its latest decision)")
            continue
        seen[key] = start
        if decision == "unsure":
            unsure += 1
            continue
        rows.append((left, right, probability, decision == "match", start))
    if problems.listed:
        raise LabelsFileError(problems.listed, problems.total)
    pairs = pd.DataFrame(rows, columns=["record_id_l", "record_id_r", "match_probability", "is_match", "line"])
    return Labels(pairs=pairs.astype({"match_probability": float, "is_match": bool, "line": int}), unsure=unsure, path=where)


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (95% by default); None with no trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (0.0 if successes == 0 else min(p, centre - half)), (1.0 if successes == trials else max(p, centre + half))


def measure_at(probability: np.ndarray, is_match: np.ndarray, threshold: float) -> dict:
    """Counts, precision and recall (with Wilson 95% intervals) of `p >= threshold` against the labels."""
    predicted = probability >= threshold
    tp = int((predicted & is_match).sum())
    fp = int((predicted & ~is_match).sum())
    fn = int((~predicted & is_match).sum())
    tn = int((~predicted & ~is_match).sum())
    precision_ci = wilson_interval(tp, tp + fp)
    recall_ci = wilson_interval(tp, tp + fn)
    return {"threshold": float(threshold), "labelled_pairs_above": tp + fp,
            "true_positives": tp, "false_positives": fp, "false_negatives": fn, "true_negatives": tn,
            "precision": tp / (tp + fp) if tp + fp else None, "precision_ci95": list(precision_ci) if precision_ci else None,
            "recall": tp / (tp + fn) if tp + fn else None, "recall_ci95": list(recall_ci) if recall_ci else None}


def threshold_table(labels: Labels, thresholds=GRID) -> pd.DataFrame:
    """One row per threshold (ascending) of `measure_at`."""
    probability = labels.pairs["match_probability"].to_numpy(dtype=float)
    is_match = labels.pairs["is_match"].to_numpy(dtype=bool)
    return pd.DataFrame([measure_at(probability, is_match, t) for t in sorted(set(thresholds))])


def _lowest_with_lower_bound(probability: np.ndarray, is_match: np.ndarray, target: float) -> float | None:
    """The conservative counterpart of `lowest_threshold_with_precision`: among the cuts that rule
    accepts (precision >= target at every cut above), the lowest whose Wilson 95% lower bound of
    precision over the pairs above it reaches the target. None if none does."""
    order = np.argsort(-probability, kind="stable")
    p_sorted, y_sorted = probability[order], is_match[order]
    hits = np.cumsum(y_sorted)
    last_of_group = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    cut = None
    for i in np.flatnonzero(last_of_group):
        if hits[i] / (i + 1) < target:
            break
        if wilson_interval(int(hits[i]), int(i) + 1)[0] >= target:
            cut = float(p_sorted[i])
    return cut


def labels_report(labels: Labels, target_precision: float = DEFAULT_TARGET_PRECISION, thresholds=GRID) -> dict:
    """Every figure: label counts, the table at `thresholds` (plus the recommended cuts), the recommendation."""
    if not 0.0 < target_precision < 1.0:
        raise ValueError(f"target precision must be strictly between 0 and 1, got {target_precision}")
    probability = labels.pairs["match_probability"].to_numpy(dtype=float)
    is_match = labels.pairs["is_match"].to_numpy(dtype=bool)
    point = lowest_threshold_with_precision(probability, is_match, target_precision) if len(probability) else None
    strict = _lowest_with_lower_bound(probability, is_match, target_precision) if len(probability) else None
    extra = [t for t in (point, strict) if t is not None]
    table = threshold_table(labels, tuple(thresholds) + tuple(extra))
    recommendation = {
        "target_precision": target_precision,
        "threshold": point,
        "rule": "lowest labelled probability from which precision stays >= target (point estimate)",
        "at_threshold": measure_at(probability, is_match, point) if point is not None else None,
        "threshold_lower_bound_rule": strict,
        "lower_bound_rule": ("lowest labelled probability, at or above the recommended one, at which the Wilson 95% "
                             "lower bound of precision over the labelled pairs above reaches the target"),
    }
    if point is None:
        recommendation["why_none"] = ("no labelled pairs" if not len(probability) else
                                      "precision among the highest-scored labelled pairs is already below the target")
    return {
        "labels": {"file": labels.path, "decisive": int(len(labels.pairs)), "match": labels.n_match,
                   "not_a_match": labels.n_not_a_match, "unsure_ignored": labels.unsure,
                   "probability_range": [float(probability.min()), float(probability.max())] if len(probability) else None},
        "thresholds": [_jsonable(row) for row in table.to_dict(orient="records")],
        "recommendation": recommendation,
        "caveat": BIAS_NOTE,
    }


def _jsonable(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _fraction(value, ci) -> str:
    if value is None:
        return f"{'n/a':>23}"
    return f"{value:7.4f} [{ci[0]:.3f}-{ci[1]:.3f}]"


def render_labels_text(report: dict) -> str:
    """The table and the recommendation, for the terminal."""
    info, rec = report["labels"], report["recommendation"]
    span = info["probability_range"]
    lines = [f"steward labels: {info['decisive']:,} decisive ({info['match']:,} match, {info['not_a_match']:,} not a match), "
             f"{info['unsure_ignored']:,} unsure ignored" + (f"; probabilities {span[0]:.3f}-{span[1]:.3f}" if span else ""),
             f"note: {report['caveat']}", "",
             f"{'threshold':>9}  {'labelled above':>14}  {'precision [95% CI]':>23}  {'recall [95% CI]':>23}"]
    marks = {rec["threshold_lower_bound_rule"]: "  <- by CI lower bound"}
    marks[rec["threshold"]] = "  <- recommended" + (" (and by CI lower bound)" if rec["threshold"] in marks else "")
    rows = report["thresholds"]
    below = 0  # leading thresholds below every labelled pair all read the same: show the last of them
    while below + 1 < len(rows) and rows[below + 1]["labelled_pairs_above"] == info["decisive"] and info["decisive"]:
        below += 1
    if below:
        lines.append(f"{'':>9}  (thresholds {rows[0]['threshold']:.4g}-{rows[below - 1]['threshold']:.4g} as the next row: "
                     "every labelled pair is above them)")
    for row in rows[below:]:
        lines.append(f"{row['threshold']:>9.4g}  {row['labelled_pairs_above']:>14,}  {_fraction(row['precision'], row['precision_ci95'])}  "
                     f"{_fraction(row['recall'], row['recall_ci95'])}{marks.get(row['threshold'], '')}")
    lines.append("")
    target = rec["target_precision"]
    if rec["threshold"] is None:
        lines.append(f"no threshold reaches precision {target} on these labels: {rec['why_none']}")
    else:
        at = rec["at_threshold"]
        lines.append(f"recommended link threshold for precision >= {target}: {rec['threshold']:.4g} "
                     f"(precision {at['precision']:.4f} [{at['precision_ci95'][0]:.3f}-{at['precision_ci95'][1]:.3f}], "
                     f"recall {_short(at['recall'])} over {at['labelled_pairs_above']:,} labelled pairs)")
        strict = rec["threshold_lower_bound_rule"]
        lines.append(f"with the CI lower bound >= {target}: " + (f"{strict:.4g}" if strict is not None else
                     "none (too few labels above any threshold to show it with 95% confidence)"))
    return "\n".join(lines)


def _short(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
