"""Ranker half of the fairness audit: does the ranking treat persons of every group alike?

`ranker_fairness(county_dir, rules=None, model=None, replicates=500, seed=0)` returns a `Section` ("ranker").
Every incident with relevance rows is ranked as the service ranks it (`scoring.rank.rank` with the rules and
the committed scorecard `models/ranker.json`) for its **true** subject (`truth.csv`, grade `certain`), so a
matching error cannot pass for a ranking disparity (the matcher half measures those). The view is every
responder role's (no access policy), as relevance and feedback are. Groups: the subject's race/ethnicity, sex
and age band (at the incident year) from `demographics.csv`; the reference is the largest group; a group of
fewer than `MIN_PERSONS` persons, or whose ratio's 95 % interval spans more than (1.25 / 0.80)² (as in the
matcher half), is shown but not judged; a measure with no judged group is insufficient.

- *NDCG@5* per group (`evaluation.ranking.evaluate.ndcg`; incidents whose lines all have relevance 0 left out).
- *Exposure.* A line at position p gets w(p) = 1/log2(1 + p) for p <= 5, else 0. E(C) sums w over an
  incident's lines of a class C — stigmatising: safety_flag, recent_event, legal_status; supportive:
  communication_need, sensory_need, trauma_trigger, effective/ineffective_approach, cognitive_developmental,
  service_connection (medical, housing_context: neither). Its **deserved** exposure E*(C) is what the same lines
  get, in expectation, from the ideal order by relevance (0-3, a merged line's max) with ties broken uniformly
  at random: m lines tied over ideal positions a+1..a+m each get the mean of w there. A group's
  **relevance-normalised exposure** is ΣE / ΣE* over its incidents (1: as much as relevance earns), compared
  as a ratio to the reference's. tests/test_fairness_ranker.py recomputes E and E* with FairRankTune's `EXP`.
- *Demographic invariance*: a seeded sample of incidents is briefed again (`scoring.briefing.brief`, four
  responder principals, and `rank` without policy) with the subject's names, sex, date of birth, age and
  race/ethnicity — and the names inside its items' texts — taken from a subject of another race/ethnicity:
  every ranking (ids, scores, terms, flags, disclosures) must be identical.
- *Proxies*: the same with only the postcode changed, and with the address set to a shelter (the addresses
  shared by most persons in `records.csv`) plus a shelter flag; and the scorecard's features (manifest)
  checked for demographic or address tokens.
- *Data bias* (b): the raw disparity beside the ranked exposure, as ratios to the reference. Raw, per incident
  over the same incidents: stigmatising lines, doubtful danger labels (`Rules.is_doubtful_danger`) and
  police-sourced lines (RMS, CAD); county-wide per person: unverified safety flags as a share of items,
  police items and records. Ranked: those lines' top-5 exposure per incident. Content-blind: their expected
  exposure if each person's lines were shuffled, (w(1) + ... + w(min(n, 5))) / n per line — the raw counts
  in exposure units, list lengths included. Amplified: ranked ratio > max(content-blind ratio, 1.25) with
  ranked ÷ content-blind significantly above 1 (paired 95 % interval); judged for a kind when the group and
  the reference each have `MIN_PERSONS` persons with such lines. How the ranking gets there is shown by the
  mean contribution of each family of terms (category, recency / age, source, verification, review date,
  danger label, corroboration; rules and model) to each group's stigmatising lines and the share of them
  sunk by the doubtful-danger rule — item properties only, as the invariance checks show.

Intervals: percentile bootstrap (`replicates`) resampling persons within each group (a person brings all of
their incidents); a ratio's interval divides the group's replicates by the reference's, ranked ÷ content-blind
uses the same replicates for both.

Code: this module reads the county and runs the audit; exposure and the ranked lines are in
`evaluation.fairness.ranker_exposure`, group tables and measures in `evaluation.fairness.ranker_groups`, the
invariance and proxy checks in `evaluation.fairness.ranker_invariance`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.measures import MIN_PERSONS, Figure, Measure, Section
from evaluation.fairness.plots import bars_plot, paired_plot, ratio_plot
from evaluation.fairness.ranker_exposure import (POLICE_AGENCIES, STIGMATISING, SUPPORTIVE, TERM_FAMILIES, incident_table,
                                                 ranked_lines)
from evaluation.fairness.ranker_groups import (BIAS_KINDS, RANKED_PAIRS, RAW_PAIRS, bias_measure, group_ratio_measure,
                                               group_ratios, invariance_measure, terms_by_group)
from evaluation.fairness.ranker_invariance import feature_check, invariance
from evaluation.linkage.metrics import age_band
from evaluation.ranking.county import RankingDataError, load_county
from matching.table import read_table
from scoring.ranker import DEFAULT_PATH, ItemScorecard
from scoring.ranker_fit import feedback_hash
from scoring.rules import Rules

ATTRIBUTES = ("race_ethnicity", "sex", "age_band")


def _csv(directory: Path, name: str, columns: tuple[str, ...], usecols=None) -> pd.DataFrame:
    return read_table(directory / name, columns, f"the ranker audit's {name}", usecols=usecols, error=RankingDataError)


def _raw_persons(directory: Path, records: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """County-wide, per person with records: items, stigmatising items, unverified safety flags, police items and records."""
    items = _csv(directory, "context_items.csv", ("record_id", "category", "last_verified_at"),
                 usecols=["record_id", "category", "last_verified_at"])
    police = set(records.loc[records["agency"].isin(POLICE_AGENCIES), "record_id"])
    frame = pd.DataFrame({"person_key": items["record_id"].map(dict(zip(records["record_id"], records["person_key"]))),
                          "items": 1.0, "stig_items": items["category"].isin(STIGMATISING).astype(float),
                          "unverified_flags": ((items["category"] == "safety_flag")
                                               & (items["last_verified_at"] == "")).astype(float),
                          "police_items": items["record_id"].isin(police).astype(float)})
    out = frame.groupby("person_key").sum().reindex(groups.index, fill_value=0.0)
    police_records = records["agency"].isin(POLICE_AGENCIES).groupby(records["person_key"]).sum()
    out["police_records"] = police_records.reindex(groups.index, fill_value=0)
    return out.assign(one=1.0).join(groups)


CAVEATS = [
    "Ranking is audited for the true subject of each incident (truth.csv, grade certain), so matching errors do not "
    "enter these figures; the matcher section measures those.",
    "Rankings are every responder role's view (no access policy), as relevance and feedback are; the invariance and "
    "proxy checks also brief through the access policy for a dispatcher, an officer, a co-responder and EMS.",
    "Exposure counts only the top 5 lines and most persons have 5 lines or fewer: doubtful danger labels sink to the "
    "bottom of a short list but stay in it, so ranked exposure tracks the raw counts closely; part of any "
    "non-amplification is the top-5 cap, not the ranker's judgement. The term contributions show the rest.",
    "Housing context (e.g. 'usually stays at a shelter') is item content ranked on its properties like any item; the "
    "shelter proxy check shows that the address itself changes nothing.",
]
DEFINITIONS = {"exposure": "w(p) = 1/log2(1+p) for p <= 5, else 0, summed over a class's lines",
               "deserved_exposure": "expected w in the relevance-sorted order, ties broken uniformly at random",
               "content_blind_exposure": "expected w if the person's lines were shuffled",
               "stigmatising": list(STIGMATISING), "supportive": list(SUPPORTIVE),
               "more": "evaluation/fairness/ranker.py (module docstring)"}


def _read_county(d: Path):
    """The county's context (`load_county`), its records with their true person, each person's groups (age band at
    the year of the first incident) and that year."""
    ctx = load_county(d, relevance=True)
    demographics = _csv(d, "demographics.csv", ("person_key", "race_ethnicity", "sex", "birth_year")).set_index("person_key")
    truth = _csv(d, "truth.csv", ("record_id", "person_key"))
    records = _csv(d, "records.csv", ("record_id", "agency"))
    records["person_key"] = records["record_id"].map(dict(zip(truth["record_id"], truth["person_key"])))
    year = min(t for _, t in ctx.when.values()).year if ctx.when else 2026
    bands = age_band(demographics["birth_year"], year).fillna("(missing)")
    groups = demographics[["race_ethnicity", "sex"]].assign(age_band=bands)
    return ctx, records, groups, year


def _group_measures(persons: pd.DataFrame, raw_persons: pd.DataFrame, terms: pd.DataFrame, groups: pd.DataFrame,
                    replicates: int, seed: int) -> tuple[list[Measure], dict, dict, dict]:
    """Per attribute: the NDCG, exposure and data-bias measures, with the group tables behind them (ranked, county-wide
    raw, stigmatising term contributions)."""
    measures, tables, raw_tables, term_tables = [], {}, {}, {}
    normalised = "Top-5 exposure ÷ the exposure the same lines' relevance earns (ties shared)."
    for k, attr in enumerate(ATTRIBUTES):
        tables[attr] = group_ratios(persons, attr, RANKED_PAIRS, replicates, seed * 100 + k,
                                    {f"amp_{key}": (f"{key}_exposure", f"{key}_neutral") for key in BIAS_KINDS.values()})
        raw_tables[attr] = group_ratios(raw_persons, attr, RAW_PAIRS, replicates, seed * 100 + 50 + k)
        term_tables[attr] = terms_by_group(terms, groups, attr)
        measures += [
            group_ratio_measure(f"ranker.ndcg_at_5.ratio.{attr}", f"NDCG@5 by {attr}", attr, tables[attr], "ndcg5"),
            *(group_ratio_measure(f"ranker.exposure.{cls}.ratio.{attr}",
                                  f"Relevance-normalised exposure of {cls} items by {attr}", attr, tables[attr], key,
                                  normalised)
              for cls, key in (("stigmatising", "stig_norm"), ("supportive", "supp_norm"))),
            bias_measure(attr, tables[attr], raw_tables[attr])]
    return measures, tables, raw_tables, term_tables


def _invariance_measures(checked: dict, features: dict) -> list[Measure]:
    """The demographic invariance and the two proxy checks, each noting what the scorecard's features name."""
    leaks = features["demographic_or_address_features"]
    feature_note = (f"Features naming a demographic or address token: {', '.join(leaks)}." if leaks else
                    f"The scorecard's {features['n_features']} features (model file) name no demographic or address "
                    "attribute.")
    return [
        invariance_measure("ranker.demographic_invariance", "Demographic invariance (names, sex, date of birth, age, "
                           "race/ethnicity swapped)", checked["demographic"], feature_note),
        invariance_measure("ranker.proxy_invariance.postcode", "Proxy check: postcode changed", checked["postcode"],
                           feature_note),
        invariance_measure("ranker.proxy_invariance.shelter", "Proxy check: address set to a shelter, shelter flag set",
                           checked["shelter"], f"{checked['shelter_addresses']} shelter addresses used. {feature_note}")]


def ranker_fairness(county_dir, rules: Rules | None = None, model=None, replicates: int = 500, seed: int = 0,
                    sample: int = 300, progress=None) -> Section:
    """The ranker audit of a county directory (see the module docstring). `model`: a scorecard, a model file path,
    or None for `models/ranker.json`; `sample`: incidents re-briefed for the invariance and proxy checks.
    Raises `RankingDataError` (a ValueError) naming a missing file or column, ValueError for a bad model file."""
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    d = Path(county_dir)
    rules = rules or Rules.load()
    model_file = Path(model or DEFAULT_PATH) if model is None or isinstance(model, (str, Path)) else None
    model = ItemScorecard.load(model_file) if model_file is not None else model
    say("reading the county")
    ctx, records, groups, year = _read_county(d)
    known = ctx.incidents["person_key"].isin(groups.index)
    evaluated = sorted(set(ctx.relevance["incident_id"]) & set(ctx.incidents.loc[known, "incident_id"]))
    say(f"ranking {len(evaluated):,} incidents")
    lines, terms = ranked_lines(ctx, rules, model, evaluated)
    inc = incident_table(lines)
    inc = inc.assign(ndcg_n=np.isfinite(inc["ndcg5"]).astype(float), ndcg_sum=inc["ndcg5"].fillna(0.0)).drop(columns="ndcg5")
    persons = inc.groupby("person_key").sum(numeric_only=True).join(groups)
    raw_persons = _raw_persons(d, records, groups)
    say(f"bootstrap ({replicates} replicates over persons)")
    section = Section("ranker")
    section.measures, tables, raw_tables, term_tables = _group_measures(persons, raw_persons, terms, groups, replicates,
                                                                        seed)
    say(f"invariance: re-briefing {min(sample, len(evaluated))} incidents")
    checked = invariance(ctx, d, records, groups, evaluated, rules, model, sample, seed)
    features = feature_check(model_file, model)
    section.measures += _invariance_measures(checked, features)
    section.figures = _figures(section.measures, term_tables["race_ethnicity"], tables["race_ethnicity"]["reference"])
    in_sample = feedback_hash(ctx.feedback) == (getattr(model, "training_", {}) or {}).get("data_sha256")
    section.facts = {
        "county_dir": str(d), "incidents_evaluated": len(evaluated), "persons_evaluated": int(len(persons)),
        "lines_ranked": int(len(lines)), "persons_with_records": int(len(groups)), "replicates": replicates, "seed": seed,
        "rules_version": rules.version, "model_file": str(model_file) if model_file else None,
        "model_rank_weight": getattr(model, "rank_weight", None), "model_features": features,
        "model_trained_on_this_county": bool(in_sample), "reference_year_for_age": year,
        "reference_groups": {a: tables[a]["reference"] for a in ATTRIBUTES},
        "invariance": checked, "county_raw_disparity": raw_tables, "stigmatising_term_contributions": term_tables,
        "definitions": DEFINITIONS, "seconds": round(time.perf_counter() - started, 2)}
    section.caveats = CAVEATS + (["The scorecard was trained on this county's feedback: its figures here are in-sample."]
                                 if in_sample else [])
    return section


def _figures(measures: list[Measure], terms: dict, reference: str | None) -> list[Figure]:
    by_name, attr = {m.name: m for m in measures}, "race_ethnicity"
    rows = [(f"{cls} · {g.group[attr]}", g.extra["ratio"], g.extra["ratio_ci95"], g.sufficient)
            for cls in ("stigmatising", "supportive") for g in by_name[f"ranker.exposure.{cls}.ratio.{attr}"].groups
            if not g.extra["reference"]]
    ndcg_rows = [(f"{g.group[a]} ({a})", g.extra["ratio"], g.extra["ratio_ci95"], g.sufficient)
                 for a in ATTRIBUTES for g in by_name[f"ranker.ndcg_at_5.ratio.{a}"].groups if not g.extra["reference"]]
    pairs = [(f"{g.group[attr]} · {kind.replace('_', ' ')}",
              *(g.extra[f"{kind}_{x}_ratio"] for x in ("raw", "content_blind", "ranked")))
             for g in by_name[f"ranker.data_bias_not_amplified.{attr}"].groups
             if not g.extra["reference"] and g.sufficient for kind in BIAS_KINDS]
    figures = [
        Figure("ranker_exposure_race", "Relevance-normalised exposure by race/ethnicity, ratio to the reference",
               ratio_plot("ranker_exposure_race", "Exposure ratio to the reference group (race/ethnicity)", rows),
               f"Reference: {reference}. Dots: ratio of relevance-normalised top-5 exposure; bars: 95% bootstrap interval; "
               f"hollow: fewer than {MIN_PERSONS} persons."),
        Figure("ranker_ndcg", "NDCG@5 ratio to the reference group, every attribute",
               ratio_plot("ranker_ndcg", "NDCG@5 ratio to the reference group", ndcg_rows), "Bars: 95% bootstrap interval."),
        Figure("ranker_data_bias",
               "Raw disparity per incident beside ranked exposure, ratio to the reference (race/ethnicity)",
               paired_plot("ranker_data_bias", "Raw disparity and ranked exposure (race/ethnicity)", pairs,
                           ("raw lines per incident", "content-blind exposure", "ranked exposure")),
               "Squares: lines per incident before ranking; diamonds: their exposure if each person's lines were shuffled; "
               "dots: their top-5 exposure as ranked. Amplified would be a dot significantly above its diamond and 1.25."),
    ]
    if terms and reference in terms:
        shown = [reference] + sorted((g for g in terms if g != reference), key=lambda g: -terms[g]["stigmatising_lines"])[:2]
        figures.append(Figure(
            "ranker_terms", "Mean term contribution to stigmatising lines by race/ethnicity",
            bars_plot("ranker_terms", "Why stigmatising lines rank where they do", list(TERM_FAMILIES),
                      {g: [terms[g]["mean_contribution"][f] for f in TERM_FAMILIES] for g in shown},
                      "mean contribution to the score"),
            "Every term is a property of the item (category, recency, source, verification, review date, danger label, "
            "corroboration); none names the person."))
    return figures
