"""Perturbation robustness: does a linked true pair stay linked when one record is recorded worse?

`sample_pairs` takes, per person with a true pair the matcher linked (match probability at or
above the link threshold, pairwise), one such pair (a, b) at random (seeded) -- preferring pairs
where both records carry a given and a family name and b a date of birth, so every perturbation
changes something -- and at most ``max_per_group`` persons per race/ethnicity group.
`perturbed_scores` applies each perturbation to record b only and scores (a, b') with the same
trained model through Splink (`predict_between` with the pair as its only candidate; term
frequencies registered from the county's own records, so the weights are those of the county's
link, the extra rows changing no frequency). The result: one row per (person, perturbation)
with the new match probability and whether the pair is still linked.

Perturbations (`KINDS`), all on the raw record before standardisation:

- ``typo``: one keyboard typo in the family name (`corrupt.keyboard_typo`);
- ``transliteration``: one transliteration-style change of the family name (alternative
  romanisation, vowel swap, dropped or doubled letter; `corrupt.transliteration_variant`);
- ``hyphenation``: a second surname appended with a hyphen (``SMITH`` -> ``SMITH-WALKER``,
  drawn from the census surname pool of the person's group);
- ``name_order_swap``: given and family name exchanged;
- ``missing_dob``: date of birth and birth year removed.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from evaluation.fairness.name_swap import case_like
from evaluation.synth import corrupt as C
from evaluation.synth.names import RACES, surname_pool
from matching.model import MatcherModel
from matching.splink_internals import register_table
from matching.standardise import standardise, to_arrow
from matching.train import linker_for

KINDS = ("typo", "transliteration", "hyphenation", "name_order_swap", "missing_dob")


def _present(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[col].notna() & (frame[col].astype(str).str.strip() != "")


def sample_pairs(pairs: pd.DataFrame, records: pd.DataFrame, truth: pd.DataFrame, demographics: pd.DataFrame,
                 threshold: float, max_per_group: int | None = 2000, seed: int = 0,
                 group_col: str = "race_ethnicity") -> pd.DataFrame:
    """person_key, record_a, record_b: one linked true pair per person (module doc)."""
    owner = truth.astype(str).set_index("record_id")["person_key"]
    hit = pairs[pairs["match_probability"] >= threshold]
    l, r = hit["record_id_l"].astype(str), hit["record_id_r"].astype(str)
    same = owner.reindex(l).to_numpy() == owner.reindex(r).to_numpy()
    cand = pd.DataFrame({"a": l[same].to_numpy(), "b": r[same].to_numpy()})
    rec = records.assign(record_id=records["record_id"].astype(str)).set_index("record_id")
    names = (_present(rec, "given_name") & _present(rec, "family_name"))
    dob = _present(rec, "dob")
    # orient each pair so that b has a DOB when one side does
    flip = ~dob.reindex(cand["b"]).to_numpy() & dob.reindex(cand["a"]).to_numpy()
    cand.loc[flip, ["a", "b"]] = cand.loc[flip, ["b", "a"]].to_numpy()
    full = names.reindex(cand["a"]).to_numpy() & names.reindex(cand["b"]).to_numpy() & dob.reindex(cand["b"]).to_numpy()
    cand = cand.assign(person_key=owner.reindex(cand["a"]).to_numpy(), full=full)
    rng = np.random.default_rng(seed)
    # The link's pairs come in no fixed order (DuckDB runs in parallel): sort before drawing, or
    # the same seed picks different pairs from run to run.
    cand = cand.sort_values(["a", "b"], ignore_index=True)
    cand = cand.assign(u=rng.random(len(cand))).sort_values(["person_key", "full", "u"], ascending=[True, False, True])
    one = cand.drop_duplicates("person_key")
    groups = demographics.astype({"person_key": str}).set_index("person_key")[group_col].astype(str)
    one = one.assign(group=groups.reindex(one["person_key"]).to_numpy())
    if max_per_group is not None:
        one = one.sort_values(["group", "u"]).groupby("group", dropna=False).head(max_per_group)
    return one.sort_values("person_key")[["person_key", "a", "b"]].rename(columns={"a": "record_a", "b": "record_b"}) \
        .reset_index(drop=True)


def perturb(record: dict, kind: str, rng: random.Random, race: str | None = None) -> dict:
    """A copy of one raw record (dict of canonical fields) with one perturbation applied."""
    out = dict(record)
    given, family = out.get("given_name") or "", out.get("family_name") or ""
    if kind == "typo" and family:
        out["family_name"] = case_like(family, C.keyboard_typo(family.upper(), rng))
    elif kind == "transliteration" and family:
        out["family_name"] = case_like(family, C.transliteration_variant(family.upper(), rng))
    elif kind == "hyphenation" and family:
        second = str(surname_pool().sample(race if race in RACES else "white", np.array([rng.random()]))[0])
        out["family_name"] = case_like(family, f"{family.upper()}-{second}")
    elif kind == "name_order_swap" and given and family:
        out["given_name"], out["family_name"] = family, given
    elif kind == "missing_dob":
        out["dob"], out["birth_year"] = None, None
    elif kind not in KINDS and kind != "none":          # "none": the record as it is (a check of the scoring)
        raise ValueError(f"unknown perturbation {kind!r}; known: {KINDS}")
    return out


def _tf_columns(model: MatcherModel) -> list[str]:
    return sorted({lv["tf_adjustment_column"] for comp in model.splink.get("comparisons", [])
                   for lv in comp.get("comparison_levels", []) if lv.get("tf_adjustment_column")})


def perturbed_scores(sample: pd.DataFrame, records: pd.DataFrame, demographics: pd.DataFrame, model: MatcherModel,
                     threshold: float, seed: int = 0, standardised: pd.DataFrame | None = None,
                     kinds: tuple[str, ...] = KINDS, group_col: str = "race_ethnicity") -> pd.DataFrame:
    """person_key, perturbation, match_probability, linked (0/1) for every sampled pair and perturbation.

    ``model`` should be the one the county was linked with (``LinkResult.model``: prior rescaled to
    the county's size); ``standardised``: ``standardise(records)`` if already computed."""
    std = standardise(records) if standardised is None else standardised
    if not len(sample):
        return pd.DataFrame(columns=["person_key", "perturbation", "match_probability", "linked"])
    raw = records.assign(record_id=records["record_id"].astype(str)).set_index("record_id")
    race = demographics.astype({"person_key": str}).set_index("person_key")[group_col].astype(str)
    left_ids, right_rows, keys = [], [], []
    for i, row in enumerate(sample.itertuples(index=False)):
        b = {k: (None if pd.isna(v) else v) for k, v in raw.loc[row.record_b].items()}
        for kind in kinds:
            out = perturb(b, kind, random.Random(f"{seed}:{row.person_key}:{kind}"), race.get(row.person_key))
            out["record_id"] = f"B|{i}|{kind}"
            right_rows.append(out)
            left_ids.append(row.record_a)
            keys.append((i, row.person_key, kind))
    right = standardise(pd.DataFrame(right_rows, columns=["record_id", *raw.columns]))
    left = std.set_index("unique_id").loc[left_ids].reset_index()
    left["unique_id"] = [f"A|{i}|{kind}" for i, _, kind in keys]
    pair_key = [f"{i}|{kind}" for i, _, kind in keys]
    left["pair_key"], right["pair_key"] = pair_key, pair_key
    linker = linker_for(std, model.splink)
    for col in _tf_columns(model):
        linker.table_management.compute_tf_table(col)
    lt = register_table(linker, to_arrow(left), "perturb_left")
    rt = register_table(linker, to_arrow(right), "perturb_right")
    pred = linker.inference.predict_between(lt, rt, blocking_rules_to_generate_predictions=["l.pair_key = r.pair_key"])
    scored = pred.as_pandas_dataframe()
    prob = dict(zip(scored["unique_id_r"], scored["match_probability"]))
    out = pd.DataFrame(keys, columns=["i", "person_key", "perturbation"])
    out["match_probability"] = [float(prob.get(f"B|{i}|{kind}", 0.0)) for i, _, kind in keys]
    out["linked"] = (out["match_probability"] >= threshold).astype(int)
    return out.drop(columns="i")
