"""The ranker audit's group figures: ratios to the reference group with bootstrap intervals, and the measures built on them.

`group_ratios` sums named (numerator, denominator) pairs over each group's persons, with percentile intervals from
the person-level bootstrap of `evaluation.stats` (persons redrawn within each group), and divides each group's
figure by the reference's (the largest group). `group_ratio_measure`, `bias_measure` and `invariance_measure` turn
those tables into rows of the verdict table; `terms_by_group` explains where stigmatising lines rank.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.measures import INVARIANCE_REQUIRED, MIN_PERSONS, RATIO_BAND, GroupFigure, Measure
from evaluation.fairness.ranker_exposure import TERM_FAMILIES
from evaluation.stats import MAX_RATIO_CI_FACTOR, RATIO_THRESHOLD, bootstrap_sums, ci95, headline, precise_ratio, reaches_outside_band

RANKED_PAIRS = {"ndcg5": ("ndcg_sum", "ndcg_n"), "stig_norm": ("E_stig", "Estar_stig"),
                "supp_norm": ("E_supp", "Estar_supp"),
                **{f"{k}_{u}": (f"{c}_{k}", "incidents") for k in ("stig", "doubtful", "police")
                   for u, c in (("exposure", "E"), ("neutral", "N"), ("lines", "n"))}}
RAW_PAIRS = {"unverified_flag_share": ("unverified_flags", "items"), "police_items_per_person": ("police_items", "one"),
             "police_records_per_person": ("police_records", "one"), "stig_items_per_person": ("stig_items", "one")}
BIAS_KINDS = {"stigmatising": "stig", "doubtful_danger": "doubtful", "police": "police"}


def group_ratios(persons: pd.DataFrame, attr: str, pairs: dict[str, tuple[str, str]], replicates: int, seed: int,
                 compare: dict[str, tuple[str, str]] | None = None) -> dict:
    """Per group of `attr` and named (numerator, denominator) pair: value Σnum/Σden with CI, and its ratio to the
    reference (the largest group) with CI; per `compare` entry (pair a, pair b): ratio_a / ratio_b with a paired
    CI (the same resampled persons). Persons are resampled within each group."""
    cols = sorted({c for pair in pairs.values() for c in pair})
    at = {c: i for i, c in enumerate(cols)}
    ordered = sorted(persons.groupby(attr), key=lambda kv: (-len(kv[1]), str(kv[0])))
    reference = str(ordered[0][0]) if ordered else None
    out, draws, nonzero = {}, {}, {}
    for k, (group, part) in enumerate(ordered):
        values = part[cols].to_numpy(dtype=float)
        nonzero[str(group)] = {name: int((values[:, at[a]] != 0).sum()) for name, (a, _) in pairs.items()}
        sums, boot = values.sum(0), bootstrap_sums(values, replicates, np.random.default_rng([seed, k]))
        with np.errstate(invalid="ignore", divide="ignore"):
            draws[str(group)] = {name: (float(sums[at[a]] / sums[at[b]]) if sums[at[b]] > 0 else None,
                                        boot[:, at[a]] / boot[:, at[b]]) for name, (a, b) in pairs.items()}
        out[str(group)] = {"persons": int(len(part)), "reference": str(group) == reference,
                           "incidents": int(part["incidents"].sum()) if "incidents" in part else None}
    with np.errstate(invalid="ignore", divide="ignore"):
        for group, entry in draws.items():
            ratio_draws = {}
            for name, (value, d) in entry.items():
                ref_value, ref_d = draws[reference][name]
                ratio = value / ref_value if value is not None and ref_value else None
                ratio_draws[name] = d / ref_d
                out[group][name] = {"value": value, "ci95": ci95(d), "ratio": ratio, "persons_nonzero": nonzero[group][name],
                                    "ratio_ci95": ci95(ratio_draws[name]) if ratio is not None else None}
            for name, (a, b) in (compare or {}).items():
                ra, rb = out[group][a]["ratio"], out[group][b]["ratio"]
                ok = ra is not None and bool(rb)
                out[group][name] = {"value": ra / rb if ok else None,
                                    "ci95": ci95(ratio_draws[a] / ratio_draws[b]) if ok else None}
    return {"reference": reference, "groups": out}


def _not_judged(groups: list[GroupFigure], attr: str) -> str:
    small = [f"{g.group[attr]} ({g.persons})" for g in groups if not g.sufficient]
    return f" Not judged (fewer than {MIN_PERSONS} persons): {', '.join(small)}." if small else ""


def group_ratio_measure(name: str, title: str, attr: str, table: dict, key: str, note: str = "") -> Measure:
    """A verdict-table row from `group_ratios` output: the headline is the sufficient group's ratio furthest from 1
    (`evaluation.stats.headline`). Groups under MIN_PERSONS are shown, not judged, and so are groups whose ratio
    interval fails `evaluation.stats.precise_ratio` (``extra["judged"]`` False; unlike the matcher's
    `evaluation.stats.ratio_measure`, an interval wholly outside the band is no exception); with no judged group
    the verdict is insufficient."""
    groups = [GroupFigure({attr: g}, e["persons"], e[key]["value"], e[key]["ci95"],
                          {"ratio": e[key]["ratio"], "ratio_ci95": e[key]["ratio_ci95"], "incidents": e["incidents"],
                           "reference": e["reference"]}) for g, e in table["groups"].items()]
    ref = next((g for g in groups if g.extra["reference"]), None)
    candidates = [g for g in groups if g is not ref and g.sufficient and g.extra["ratio"]]
    judged = [g for g in candidates if precise_ratio(g.extra["ratio_ci95"])]
    for g in candidates:
        g.extra["judged"] = g in judged
    if len(judged) < len(candidates):
        note += (f" Too imprecise to judge (ratio interval wider than a factor {MAX_RATIO_CI_FACTOR:.2f}): "
                 f"{', '.join(g.group[attr] for g in candidates if g not in judged)}.")
    worst, value, ci, verdict = headline(judged if ref is not None and ref.sufficient else [])
    if worst is not None:
        note += f" Furthest from 1: {worst.group[attr]}."
        if reaches_outside_band(ci):
            note += " Its 95% interval reaches outside the band."
    return Measure(name, title, RATIO_THRESHOLD, value, tuple(ci) if ci else None, verdict, groups,
                   {attr: table["reference"]}, (note + _not_judged(groups, attr)).strip())


def bias_measure(attr: str, ranked: dict, raw: dict) -> Measure:
    """Data bias not amplified (module docstring): per group and kind (stigmatising, doubtful danger label, police-sourced),
    the raw ratio of lines per incident, the ratio a content-blind order would give them and the ranked exposure ratio,
    ranked ÷ content-blind with its paired CI; county-wide raw ratios. A kind is judged for a group when both it and the
    reference have MIN_PERSONS persons with such a line."""
    groups, failed, candidates = [], [], []
    ref = ranked["groups"][ranked["reference"]]
    for g, e in ranked["groups"].items():
        extra = {"reference": e["reference"], "incidents": e["incidents"]}
        figure = GroupFigure({attr: g}, e["persons"], e["stig_exposure"]["ratio"], e["stig_exposure"]["ratio_ci95"], extra)
        for kind, key in BIAS_KINDS.items():
            raw_ratio, blind, ranked_ratio = (e[f"{key}_{unit}"]["ratio"] for unit in ("lines", "neutral", "exposure"))
            amp = e[f"amp_{key}"]
            carriers = e[f"{key}_lines"]["persons_nonzero"]
            judged = (not e["reference"] and min(carriers, ref[f"{key}_lines"]["persons_nonzero"]) >= MIN_PERSONS
                      and None not in (raw_ratio, blind, ranked_ratio))
            amplified = bool(ranked_ratio > max(blind, RATIO_BAND[1]) and amp["ci95"] is not None and amp["ci95"][0] > 1.0) \
                if judged else None
            extra.update({f"{kind}_persons_with_lines": carriers,
                          f"{kind}_raw_ratio": raw_ratio, f"{kind}_raw_ratio_ci95": e[f"{key}_lines"]["ratio_ci95"],
                          f"{kind}_content_blind_ratio": blind,
                          f"{kind}_ranked_ratio": ranked_ratio,
                          f"{kind}_ranked_ratio_ci95": e[f"{key}_exposure"]["ratio_ci95"],
                          f"{kind}_ranked_over_blind": amp["value"], f"{kind}_ranked_over_blind_ci95": amp["ci95"],
                          f"{kind}_amplified": amplified})
            if judged:
                candidates.append((raw_ratio, kind, figure))
                failed += [f"{g} ({kind.replace('_', ' ')})"] if amplified else []
        county = raw["groups"].get(g, {})
        extra.update({f"county_{k}{suffix}": county.get(k, {}).get(field) for k in RAW_PAIRS
                      for suffix, field in (("", "value"), ("_ratio", "ratio"), ("_ratio_ci95", "ratio_ci95"))})
        groups.append(figure)
    value = ci = None
    verdict, note = "insufficient", ""
    if candidates:
        raw_ratio, kind, head = max(candidates, key=lambda c: (c[0], c[2].persons))
        x = head.extra
        value, ci, verdict = x[f"{kind}_ranked_ratio"], x[f"{kind}_ranked_ratio_ci95"], "fail" if failed else "pass"
        note = (f"Most over-represented in the data: {head.group[attr]}, {kind.replace('_', ' ')} lines per incident "
                f"{raw_ratio:.2f}× the reference's ({x[f'{kind}_content_blind_ratio']:.2f}× in a content-blind order); "
                f"ranked exposure {value:.2f}× (the figure)." + (f" Amplified: {', '.join(failed)}." if failed else ""))
    thin = [f"{g.group[attr]} ({k.replace('_', ' ')})" for g in groups if g.sufficient and not g.extra["reference"]
            for k in BIAS_KINDS if g.extra[f"{k}_amplified"] is None]
    if thin:
        note += (f" Kinds not judged (under {MIN_PERSONS} persons with such lines here or in the reference): "
                 f"{', '.join(thin)}.")
    return Measure(f"ranker.data_bias_not_amplified.{attr}", f"Data bias not amplified by the ranking ({attr})",
                   "ranked exposure ratio ≤ max(content-blind ratio, 1.25), "
                   "or ranked ÷ content-blind not significantly > 1",
                   value, tuple(ci) if ci else None, verdict, groups, {attr: ranked["reference"]},
                   (note + _not_judged(groups, attr)).strip())


def invariance_measure(name: str, title: str, result: dict, note: str) -> Measure:
    n, same = result["compared"], result["identical"]
    value = same / n if n else None
    verdict = "insufficient" if not n else ("pass" if value >= INVARIANCE_REQUIRED else "fail")
    return Measure(name, title, "100% of rankings identical", value, None, verdict, [],
                   note=f"{same:,} of {n:,} rankings identical ({result['incidents']} incidents × {result['views']} "
                        f"views). {note}")


def terms_by_group(terms: pd.DataFrame, groups: pd.DataFrame, attr: str) -> dict:
    """Per group: mean contribution per term family over its stigmatising lines, and the share sunk as doubtful."""
    out = {}
    for g, part in terms.join(groups[[attr]], on="person_key").groupby(attr):
        lines = part.drop_duplicates(["incident_id", "position"])
        sums = part.groupby("family")["contribution"].sum()
        out[str(g)] = {"stigmatising_lines": len(lines), "sunk_as_doubtful_share": float(lines["sunk"].mean()),
                       "mean_contribution": {f: round(float(sums.get(f, 0.0)) / len(lines), 6) for f in TERM_FAMILIES}}
    return out

