"""Within-person variation rates of a record set (how messy is the truth?).

Every pair of records of the same person is a within-person pair.  Values are
compared after trim + upper-case; phones as digits (a leading US country code
'1' on 11 digits dropped).  Each rate's denominator is *all* within-person
pairs (sampled deterministically when there are more than ``max_pairs``):

* middle_name_missing_or_different -- either middle missing, or they differ
* given_name_varied / family_name_varied -- both present and differ
* dob_missing_swapped_or_off_by_year -- either dob missing, or they differ
* address_different -- both have a street and street or postcode differ
* phone_different -- both present and digits differ

``*_given_both_present`` variants divide by the pairs where both values exist.
``weighting='person'`` averages each person's own rate (at most
``per_person_pairs`` pairs per person) instead of pooling pairs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = (
    "middle_name_missing_or_different", "given_name_varied", "family_name_varied",
    "dob_missing_swapped_or_off_by_year", "address_different", "phone_different",
)
MINIMUMS = {
    "middle_name_missing_or_different": 0.40, "given_name_varied": 0.30, "family_name_varied": 0.20,
    "dob_missing_swapped_or_off_by_year": 0.15, "address_different": 0.40, "phone_different": 0.30,
}


def _norm(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, missing) after trim + upper."""
    v = s.fillna("").astype(str).str.strip().str.upper()
    codes, _ = pd.factorize(v, sort=False)
    return codes, (v == "").to_numpy()


def _phone(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    d = s.fillna("").astype(str).str.replace(r"\D", "", regex=True)
    d = d.where(~((d.str.len() == 11) & d.str.startswith("1")), d.str[1:])
    codes, _ = pd.factorize(d, sort=False)
    return codes, (d == "").to_numpy()


def _all_pairs(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (i<j) pair within each group; also the group of each pair."""
    grp = np.repeat(np.arange(len(sizes)), sizes)
    rank = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    pos = starts[grp] + rank
    cnt = sizes[grp] - 1 - rank
    left = np.repeat(pos, cnt)
    k = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return left, left + 1 + k, np.repeat(grp, cnt)


def _sample_pairs(rng, starts, sizes, group, m) -> tuple[np.ndarray, np.ndarray]:
    n = sizes[group]
    i = (rng.random(m) * n).astype(np.int64)
    j = (rng.random(m) * (n - 1)).astype(np.int64)
    j = j + (j >= i)
    return starts[group] + i, starts[group] + j


def within_person_pairs(person: np.ndarray, max_pairs: int, weighting: str, per_person_pairs: int = 50,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(left, right, weight, total_pairs) over positions of ``person`` (must be sorted)."""
    rng = np.random.default_rng(seed)
    bounds = np.flatnonzero(np.r_[True, person[1:] != person[:-1], True])
    starts, sizes = bounds[:-1], np.diff(bounds)
    keep = sizes >= 2
    starts, sizes = starts[keep], sizes[keep]
    npairs = sizes * (sizes - 1) // 2
    total = int(npairs.sum())
    if weighting == "pair":
        if total <= max_pairs:
            left, right, _ = _all_pairs(starts, sizes)
        else:
            g = np.searchsorted(np.cumsum(npairs), rng.integers(0, total, max_pairs), side="right")
            left, right = _sample_pairs(rng, starts, sizes, np.sort(g), max_pairs)
        return left, right, np.ones(len(left)), total
    small = npairs <= per_person_pairs
    l1, r1, g1 = _all_pairs(starts[small], sizes[small])
    w1 = 1.0 / npairs[small][g1]
    big = np.flatnonzero(~small)
    gb = np.repeat(big, per_person_pairs)
    l2, r2 = _sample_pairs(rng, starts, sizes, gb, len(gb))
    w2 = np.full(len(gb), 1.0 / per_person_pairs)
    return np.r_[l1, l2], np.r_[r1, r2], np.r_[w1, w2], total


def measure_messiness(records: pd.DataFrame, truth: pd.DataFrame, max_pairs: int = 2_000_000,
                      weighting: str = "pair") -> dict[str, float]:
    """Within-person variation rates (see module doc) plus ``n_pairs`` (all
    within-person pairs), ``n_pairs_measured`` and ``n_persons_with_pairs``."""
    if weighting not in ("pair", "person"):
        raise ValueError("weighting must be 'pair' or 'person'")
    df = records.merge(truth[["record_id", "person_key"]], on="record_id", how="inner")
    pcode, _ = pd.factorize(df["person_key"], sort=True)
    order = np.argsort(pcode, kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    pcode = pcode[order]
    col = lambda c: df[c] if c in df.columns else pd.Series([""] * len(df))  # noqa: E731
    mid, mid_na = _norm(col("middle_name"))
    giv, giv_na = _norm(col("given_name"))
    fam, fam_na = _norm(col("family_name"))
    dob, dob_na = _norm(col("dob"))
    st, st_na = _norm(col("street"))
    pc, _ = _norm(col("postcode"))
    ph, ph_na = _phone(col("phone"))
    a, b, w, total = within_person_pairs(pcode, max_pairs, weighting)
    out: dict[str, float] = {}
    if len(a) == 0:
        return {**{k: float("nan") for k in KEYS}, "n_pairs": 0.0, "n_pairs_measured": 0.0,
                "n_persons_with_pairs": 0.0}
    wsum = w.sum()

    def rate(hit: np.ndarray) -> float:
        return float((w * hit).sum() / wsum)

    def cond(hit: np.ndarray, present: np.ndarray) -> float:
        d = (w * present).sum()
        return float((w * hit).sum() / d) if d > 0 else float("nan")

    out["middle_name_missing_or_different"] = rate(mid_na[a] | mid_na[b] | (mid[a] != mid[b]))
    for key, codes, na in (("given_name_varied", giv, giv_na), ("family_name_varied", fam, fam_na),
                           ("phone_different", ph, ph_na)):
        both = ~na[a] & ~na[b]
        hit = both & (codes[a] != codes[b])
        out[key] = rate(hit)
        out[f"{key}_given_both_present"] = cond(hit, both)
    out["dob_missing_swapped_or_off_by_year"] = rate(dob_na[a] | dob_na[b] | (dob[a] != dob[b]))
    both_dob = ~dob_na[a] & ~dob_na[b]
    out["dob_different_given_both_present"] = cond(both_dob & (dob[a] != dob[b]), both_dob)
    both_st = ~st_na[a] & ~st_na[b]
    hit = both_st & ((st[a] != st[b]) | (pc[a] != pc[b]))
    out["address_different"] = rate(hit)
    out["address_different_given_both_present"] = cond(hit, both_st)
    out["n_pairs"] = float(total)
    out["n_pairs_measured"] = float(len(a))
    sizes = np.bincount(pcode)
    out["n_persons_with_pairs"] = float((sizes >= 2).sum())
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m evaluation.synth.messiness DIR`` -> JSON of pair- and person-weighted rates."""
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("directory", type=Path, help="folder holding records.csv and truth.csv")
    args = ap.parse_args(argv)
    records = pd.read_csv(args.directory / "records.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(args.directory / "truth.csv", dtype=str, keep_default_na=False)
    out = {w: measure_messiness(records, truth, weighting=w) for w in ("pair", "person")}
    print(json.dumps({w: {k: round(v, 4) for k, v in r.items()} for w, r in out.items()}, indent=1))


if __name__ == "__main__":
    main()
