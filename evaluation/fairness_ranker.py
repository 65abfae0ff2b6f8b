"""Ranker half of the fairness audit: does the ranking treat persons of every group alike?

`ranker_fairness(county_dir, rules=None, model=None, replicates=500, seed=0)` returns a `Section` ("ranker").
Every incident with relevance rows is ranked as the service ranks it (`scoring.rank.rank` with the rules and
the committed scorecard `models/ranker.json`) for its **true** subject (`truth.csv`, grade `certain`), so a
matching error cannot pass for a ranking disparity (the matcher half measures those). The view is every
responder role's (no access policy), as relevance and feedback are. Groups: the subject's race/ethnicity, sex
and age band (at the incident year) from `demographics.csv`; the reference is the largest group; a group of
fewer than `MIN_PERSONS` persons, or whose ratio's 95 % interval spans more than (1.25 / 0.80)² (as in the
matcher half), is shown but not judged; a measure with no judged group is insufficient.

- *NDCG@5* per group (`evaluation.ranking.ndcg`; incidents whose lines all have relevance 0 left out).
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
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.fairness_measures import (INVARIANCE_REQUIRED, MIN_PERSONS, RATIO_BAND, Figure, GroupFigure, Measure,
                                          Section, ratio_verdict)
from evaluation.fairness_report import bars_plot, paired_plot, ratio_plot
from evaluation.linkage import age_band
from evaluation.ranking import RankingDataError, load_county, ndcg
from scoring.briefing import brief
from scoring.item import Consent, Principal, Purpose, Role
from scoring.rank import rank
from scoring.ranker import DEFAULT_PATH, ItemScorecard, feedback_hash
from scoring.rules import Rules

TOP = 5
MAX_RATIO_CI_FACTOR = (RATIO_BAND[1] / RATIO_BAND[0]) ** 2   # as the matcher half: a wider ratio interval is not judged
STIGMATISING = ("safety_flag", "recent_event", "legal_status")
SUPPORTIVE = ("communication_need", "sensory_need", "trauma_trigger", "effective_approach", "ineffective_approach",
              "cognitive_developmental", "service_connection")
ATTRIBUTES = ("race_ethnicity", "sex", "age_band")
POLICE_AGENCIES = frozenset({"METRO_PD", "COUNTY_911"})   # RMS and CAD records: police contacts
PRINCIPALS = tuple((Principal(name=f"audit-{role.value}", role=role, agency=agency, purposes=(purpose,)), purpose)
                   for role, agency, purpose in ((Role.dispatcher, "COUNTY_911", Purpose.EMERGENCY),
                                                 (Role.officer, "METRO_PD", Purpose.EMERGENCY),
                                                 (Role.co_responder, "COUNTY_BH", Purpose.TREATMENT),
                                                 (Role.ems, "COUNTY_EMS", Purpose.EMERGENCY)))
DEMOGRAPHIC_TOKENS = {"race", "ethnicity", "ethnic", "sex", "gender", "age", "birth", "dob", "born", "name", "given",
                      "family", "surname", "postcode", "zip", "address", "street", "city", "shelter", "location"}
SUBJECT_FIELDS = ("subject_given_name", "subject_middle_name", "subject_family_name", "subject_name_suffix", "subject_dob",
                  "subject_approx_age", "subject_sex")
TERM_FAMILIES = ("category", "recency / age", "source", "verification", "review date", "danger label", "corroboration")
RANKED_PAIRS = {"ndcg5": ("ndcg_sum", "ndcg_n"), "stig_norm": ("E_stig", "Estar_stig"),
                "supp_norm": ("E_supp", "Estar_supp"),
                **{f"{k}_{u}": (f"{c}_{k}", "incidents") for k in ("stig", "doubtful", "police")
                   for u, c in (("exposure", "E"), ("neutral", "N"), ("lines", "n"))}}
RAW_PAIRS = {"unverified_flag_share": ("unverified_flags", "items"), "police_items_per_person": ("police_items", "one"),
             "police_records_per_person": ("police_records", "one"), "stig_items_per_person": ("stig_items", "one")}
BIAS_KINDS = {"stigmatising": "stig", "doubtful_danger": "doubtful", "police": "police"}


# --------------------------------------------------------------------------- exposure


def position_weight(position, k: int = TOP) -> np.ndarray:
    """w(p) = 1/log2(1 + p) for 1 <= p <= k, else 0."""
    p = np.asarray(position, dtype=float)
    return np.where(p <= k, 1.0 / np.log2(1.0 + p), 0.0)


def ideal_weight(gains, k: int = TOP) -> np.ndarray:
    """Each line's expected w under the relevance-sorted order with ties broken uniformly at random."""
    g = np.asarray(gains, dtype=float)
    cum = np.concatenate([[0.0], np.cumsum(position_weight(np.arange(1, len(g) + 1), k))])
    above, tied = (g[None, :] > g[:, None]).sum(1), (g[None, :] == g[:, None]).sum(1)
    return (cum[above + tied] - cum[above]) / tied


def neutral_weight(n_lines) -> np.ndarray:
    """Expected w of each of n lines under a uniformly random order: (w(1) + ... + w(min(n, 5))) / n."""
    n = np.asarray(n_lines, dtype=float)
    cum = np.cumsum(position_weight(np.arange(1, TOP + 1)))
    return cum[np.minimum(n, TOP).astype(int) - 1] / n


def incident_table(lines: pd.DataFrame) -> pd.DataFrame:
    """Per incident (from `ranked_lines`): exposure E_, deserved exposure Estar_, neutral exposure N_ (random order) and
    line count n_ of stig, supp, doubtful and police lines; NDCG@5."""
    by = lines.groupby("incident_id", sort=False)["gain"]
    w, w_ideal = position_weight(lines["position"]), by.transform(lambda g: ideal_weight(g.to_numpy())).to_numpy(float)
    w_neutral = neutral_weight(by.transform("size").to_numpy())
    masks = {"stig": lines["category"].isin(STIGMATISING), "supp": lines["category"].isin(SUPPORTIVE),
             "doubtful": lines["doubtful"].astype(bool), "police": lines["police"].astype(bool)}
    cols = {f"{kind}_{key}": value * mask.to_numpy(float) for key, mask in masks.items()
            for kind, value in (("E", w), ("Estar", w_ideal), ("N", w_neutral), ("n", 1.0))}
    table = (pd.DataFrame(cols, index=lines.index).assign(incident_id=lines["incident_id"])
             .groupby("incident_id", sort=False).sum())
    table["ndcg5"] = by.agg(lambda g: ndcg(list(g), TOP))
    return lines.groupby("incident_id", sort=False)[["person_key"]].first().join(table).assign(incidents=1.0)


# --------------------------------------------------------------------------- data


def _csv(directory: Path, name: str, columns: tuple[str, ...], usecols=None) -> pd.DataFrame:
    path = directory / name
    if not path.is_file():
        raise RankingDataError(f"{path}: no such file (the ranker audit needs {name} in {directory})")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=usecols)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RankingDataError(f"{path}:1: needs column(s) {', '.join(missing)}")
    return frame


def term_family(term: dict) -> str:
    """The family of a rank term (rule or model): category, recency / age, source, verification, review date, ..."""
    name = term["term"].removeprefix("model: ")
    for needle, family in (("corroborated", "corroboration"), ("danger label", "danger label"),
                           ("review date", "review date"), ("unverified since", "review date"),
                           ("days since", "recency / age"), ("recency", "recency / age"), ("date seen", "recency / age"),
                           ("verified", "verification"), ("source ", "source")):
        if needle in name:
            return family
    return "category"


def ranked_lines(ctx, rules: Rules, model, incident_ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per ranked line: incident, person, position, category, gain, doubtful, police;
    one row per term of every stigmatising line: incident, person, position, family, contribution, sunk)."""
    grade = {(i, j): int(r) for i, j, r in ctx.relevance[["incident_id", "item_id", "relevance"]].itertuples(index=False)}
    person_of = dict(zip(ctx.incidents["incident_id"], ctx.incidents["person_key"]))
    rows, terms = [], []
    for incident_id in incident_ids:
        call_type, now = ctx.when[incident_id]
        person = person_of[incident_id]
        for position, line in enumerate(rank(ctx.person_items.get(person, []), call_type, "certain", now, rules, model), 1):
            doubtful = rules.is_doubtful_danger(line.head, now)
            rows.append((incident_id, person, position, line.category,
                         max(grade.get((incident_id, s["item_id"]), 0) for s in line.sources), doubtful,
                         any(s["agency"] in POLICE_AGENCIES for s in line.sources)))
            if line.category in STIGMATISING:
                terms += [(incident_id, person, position, term_family(t), t["contribution"], doubtful) for t in line.terms]
    return (pd.DataFrame(rows, columns=["incident_id", "person_key", "position", "category", "gain", "doubtful", "police"]),
            pd.DataFrame(terms, columns=["incident_id", "person_key", "position", "family", "contribution", "sunk"]))


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


# --------------------------------------------------------------------------- bootstrap and measures


def _boot(values: np.ndarray, replicates: int, rng) -> np.ndarray:
    """`replicates` column sums of `values` (persons × columns) over persons drawn with replacement."""
    n = len(values)
    if n == 0 or replicates <= 0:
        return np.zeros((0, values.shape[1]))
    return np.stack([values[rng.integers(0, n, n)].sum(0) for _ in range(replicates)])


def _ci(draws: np.ndarray):
    draws = draws[np.isfinite(draws)]
    return (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))) if len(draws) else None


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
        sums, boot = values.sum(0), _boot(values, replicates, np.random.default_rng([seed, k]))
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
                out[group][name] = {"value": value, "ci95": _ci(d), "ratio": ratio, "persons_nonzero": nonzero[group][name],
                                    "ratio_ci95": _ci(ratio_draws[name]) if ratio is not None else None}
            for name, (a, b) in (compare or {}).items():
                ra, rb = out[group][a]["ratio"], out[group][b]["ratio"]
                ok = ra is not None and bool(rb)
                out[group][name] = {"value": ra / rb if ok else None,
                                    "ci95": _ci(ratio_draws[a] / ratio_draws[b]) if ok else None}
    return {"reference": reference, "groups": out}


def _not_judged(groups: list[GroupFigure], attr: str) -> str:
    small = [f"{g.group[attr]} ({g.persons})" for g in groups if not g.sufficient]
    return f" Not judged (fewer than {MIN_PERSONS} persons): {', '.join(small)}." if small else ""


def ratio_measure(name: str, title: str, attr: str, table: dict, key: str, note: str = "") -> Measure:
    """A verdict-table row from `group_ratios` output: the headline is the sufficient group's ratio furthest from 1.
    Groups under MIN_PERSONS are shown, not judged; with no judged group the verdict is insufficient."""
    groups = [GroupFigure({attr: g}, e["persons"], e[key]["value"], e[key]["ci95"],
                          {"ratio": e[key]["ratio"], "ratio_ci95": e[key]["ratio_ci95"], "incidents": e["incidents"],
                           "reference": e["reference"]}) for g, e in table["groups"].items()]
    ref = next((g for g in groups if g.extra["reference"]), None)
    candidates = [g for g in groups if g is not ref and g.sufficient and g.extra["ratio"]]
    judged = [g for g in candidates if g.extra["ratio_ci95"] and g.extra["ratio_ci95"][0] > 0
              and g.extra["ratio_ci95"][1] / g.extra["ratio_ci95"][0] <= MAX_RATIO_CI_FACTOR]
    for g in candidates:
        g.extra["judged"] = g in judged
    if len(judged) < len(candidates):
        note += (f" Too imprecise to judge (ratio interval wider than a factor {MAX_RATIO_CI_FACTOR:.2f}): "
                 f"{', '.join(g.group[attr] for g in candidates if g not in judged)}.")
    value = ci = None
    verdict = "insufficient"
    if ref is not None and ref.sufficient and judged:
        worst = max(judged, key=lambda g: abs(np.log(g.extra["ratio"])))
        value, ci, verdict = worst.extra["ratio"], worst.extra["ratio_ci95"], ratio_verdict(worst.extra["ratio"])
        note += f" Furthest from 1: {worst.group[attr]}."
        if ci and (ci[0] < RATIO_BAND[0] or ci[1] > RATIO_BAND[1]):
            note += " Its 95% interval reaches outside the band."
    return Measure(name, title, f"ratio to the largest group within {RATIO_BAND[0]:.2f}–{RATIO_BAND[1]:.2f}", value,
                   tuple(ci) if ci else None, verdict, groups, {attr: table["reference"]},
                   (note + _not_judged(groups, attr)).strip())


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


def _invariance_measure(name: str, title: str, result: dict, note: str) -> Measure:
    n, same = result["compared"], result["identical"]
    value = same / n if n else None
    verdict = "insufficient" if not n else ("pass" if value >= INVARIANCE_REQUIRED else "fail")
    return Measure(name, title, "100% of rankings identical", value, None, verdict, [],
                   note=f"{same:,} of {n:,} rankings identical ({result['incidents']} incidents × {result['views']} "
                        f"views). {note}")


def _terms_by_group(terms: pd.DataFrame, groups: pd.DataFrame, attr: str) -> dict:
    """Per group: mean contribution per term family over its stigmatising lines, and the share sunk as doubtful."""
    out = {}
    for g, part in terms.join(groups[[attr]], on="person_key").groupby(attr):
        lines = part.drop_duplicates(["incident_id", "position"])
        sums = part.groupby("family")["contribution"].sum()
        out[str(g)] = {"stigmatising_lines": len(lines), "sunk_as_doubtful_share": float(lines["sunk"].mean()),
                       "mean_contribution": {f: round(float(sums.get(f, 0.0)) / len(lines), 6) for f in TERM_FAMILIES}}
    return out


# --------------------------------------------------------------------------- invariance


def _signature(items) -> tuple:
    return tuple((line.item_id, line.score, line.presented_as, tuple(line.flags), line.corroboration,
                  tuple((t["term"], t["contribution"]) for t in line.terms), tuple(s["item_id"] for s in line.sources))
                 for line in items)


def _views(incident: dict, items, consents, rules, model) -> list[tuple]:
    """The unfiltered ranking and the briefing of each audit principal, as comparable tuples."""
    call_type, now = incident["call_type"], incident["_now"]
    out = [_signature(rank(items, call_type, "certain", now, rules, model))]
    for principal, purpose in PRINCIPALS:
        b = brief(principal, purpose, incident, "certain", items, consents, now, rules, model)
        out.append((_signature(b.items), tuple(tuple(sorted(w.items())) for w in b.withheld),
                    tuple((d["item_id"], d["reason"], d["consent_id"]) for d in b.disclosures)))
    return out


def invariance(ctx, directory: Path, records: pd.DataFrame, groups: pd.DataFrame, incident_ids, rules, model,
               sample: int, seed: int) -> dict:
    """Re-brief a seeded sample of incidents with (a) the subject's names, sex, DOB, age, race/ethnicity (and the names in
    its items' texts) taken from a subject of another race/ethnicity, (b) only the postcode changed, (c) the address set
    to a shelter plus a shelter flag; count identical views. `records` carries `person_key`."""
    rng = np.random.default_rng([seed, 99])
    ids = sorted(rng.choice(sorted(incident_ids), size=min(sample, len(incident_ids)), replace=False)) if incident_ids else []
    rows = ctx.incidents.set_index("incident_id")
    mine = records[records["person_key"].isin(set(rows.loc[ids, "person_key"]))]
    names: dict[str, set[str]] = {}
    for col in ("given_name", "middle_name", "family_name", "aliases"):
        for person, value in zip(mine["person_key"], mine[col] if col in mine else ()):
            names.setdefault(person, set()).update(t.upper() for t in re.split(r"[\s|,-]+", value) if len(t) > 2)
    address = records[records["street"] != ""] if {"street", "postcode"} <= set(records.columns) else records.iloc[:0]
    shelters = (address.assign(key=address["street"].str.upper() + "|" + address["postcode"]).groupby("key")["person_key"]
                .nunique().sort_values(ascending=False, kind="stable").head(3).index.tolist()) or ["1 SHELTER WAY|43001"]
    consents: dict[str, list[Consent]] = {}
    if (directory / "consents.csv").is_file():
        person, agency = (dict(zip(records["record_id"], records[c])) for c in ("person_key", "agency"))
        for row in pd.read_csv(directory / "consents.csv", dtype=str, keep_default_na=False).to_dict("records"):
            consent = Consent(**row, record_agency=agency.get(row["record_id"]))
            consents.setdefault(person.get(row["record_id"]), []).append(consent)
    race, sex = groups["race_ethnicity"].to_dict(), groups["sex"].to_dict()
    result = {k: {"compared": 0, "identical": 0, "incidents": len(ids), "views": 1 + len(PRINCIPALS)}
              for k in ("demographic", "postcode", "shelter")}
    renamed_texts = 0
    for n, incident_id in enumerate(ids):
        base = rows.loc[incident_id].to_dict()
        person = base.pop("person_key")
        items, own = ctx.person_items.get(person, []), consents.get(person, [])
        incident = {"incident_id": incident_id, **base, "_now": ctx.when[incident_id][1], "race_ethnicity": race.get(person),
                    "sex": sex.get(person)}
        before = _views(incident, items, own, rules, model)
        donors = [i for i in ids if race.get(rows.at[i, "person_key"]) != race.get(person)] or list(ids)
        donor = rows.loc[donors[(n * 7919) % len(donors)]].to_dict()
        swapped = {**incident, **{c: donor[c] for c in SUBJECT_FIELDS if c in donor},
                   "race_ethnicity": race.get(donor["person_key"]), "sex": sex.get(donor["person_key"])}
        own_names = sorted(names.get(person, ()), key=len, reverse=True)
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, own_names)) + r")\b", re.I) if own_names else None
        new_name = min(names.get(donor["person_key"], ()) or {"ALEX"})
        renamed = [i.model_copy(update={"text": pattern.sub(new_name, i.text)}) if pattern else i for i in items]
        renamed_texts += sum(a.text != b.text for a, b in zip(items, renamed))
        postcode = donor["location_postcode"] if donor["location_postcode"] != base["location_postcode"] else "43999"
        street, shelter_postcode = shelters[n % len(shelters)].split("|")
        variants = {"demographic": (swapped, renamed),
                    "postcode": ({**incident, "subject_postcode": postcode if base.get("subject_postcode") else "",
                                  "location_postcode": postcode}, items),
                    "shelter": ({**incident, "subject_street": street, "subject_postcode": shelter_postcode,
                                 "location_street": street, "location_postcode": shelter_postcode, "shelter": True}, items)}
        for kind, (changed, changed_items) in variants.items():
            after = _views(changed, changed_items, own, rules, model)
            result[kind]["compared"] += len(after)
            result[kind]["identical"] += sum(a == b for a, b in zip(before, after))
    result["demographic"]["item_texts_renamed"] = renamed_texts
    result["shelter_addresses"] = len(shelters)
    return result


def feature_check(model_file: Path | None, model) -> dict:
    """The scorecard's features (those its model file lists, when read from one) and any naming a demographic or
    address token."""
    features = list(getattr(model, "feature_names_", []))
    if model_file is not None and model_file.is_file():
        features = json.loads(model_file.read_text(encoding="utf-8")).get("features", features)
    offending = [f for f in features if set(re.split(r"[^a-z0-9]+", f.lower())) & DEMOGRAPHIC_TOKENS]
    return {"features": features, "n_features": len(features), "demographic_or_address_features": offending}


# --------------------------------------------------------------------------- the audit


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
    ctx = load_county(d, relevance=True)
    demographics = _csv(d, "demographics.csv", ("person_key", "race_ethnicity", "sex", "birth_year")).set_index("person_key")
    truth = _csv(d, "truth.csv", ("record_id", "person_key"))
    records = _csv(d, "records.csv", ("record_id", "agency"))
    records["person_key"] = records["record_id"].map(dict(zip(truth["record_id"], truth["person_key"])))
    year = min(t for _, t in ctx.when.values()).year if ctx.when else 2026
    bands = age_band(demographics["birth_year"], year).fillna("(missing)")
    groups = demographics[["race_ethnicity", "sex"]].assign(age_band=bands)
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
    tables, raw_tables, term_tables = {}, {}, {}
    normalised = "Top-5 exposure ÷ the exposure the same lines' relevance earns (ties shared)."
    for k, attr in enumerate(ATTRIBUTES):
        tables[attr] = group_ratios(persons, attr, RANKED_PAIRS, replicates, seed * 100 + k,
                                    {f"amp_{key}": (f"{key}_exposure", f"{key}_neutral") for key in BIAS_KINDS.values()})
        raw_tables[attr] = group_ratios(raw_persons, attr, RAW_PAIRS, replicates, seed * 100 + 50 + k)
        term_tables[attr] = _terms_by_group(terms, groups, attr)
        section.measures += [
            ratio_measure(f"ranker.ndcg_at_5.ratio.{attr}", f"NDCG@5 by {attr}", attr, tables[attr], "ndcg5"),
            *(ratio_measure(f"ranker.exposure.{cls}.ratio.{attr}", f"Relevance-normalised exposure of {cls} items by {attr}",
                            attr, tables[attr], key, normalised)
              for cls, key in (("stigmatising", "stig_norm"), ("supportive", "supp_norm"))),
            bias_measure(attr, tables[attr], raw_tables[attr])]
    say(f"invariance: re-briefing {min(sample, len(evaluated))} incidents")
    checked = invariance(ctx, d, records, groups, evaluated, rules, model, sample, seed)
    features = feature_check(model_file, model)
    leaks = features["demographic_or_address_features"]
    feature_note = (f"Features naming a demographic or address token: {', '.join(leaks)}." if leaks else
                    f"The scorecard's {features['n_features']} features (model file) name no demographic or address "
                    "attribute.")
    section.measures += [
        _invariance_measure("ranker.demographic_invariance", "Demographic invariance (names, sex, date of birth, age, "
                            "race/ethnicity swapped)", checked["demographic"], feature_note),
        _invariance_measure("ranker.proxy_invariance.postcode", "Proxy check: postcode changed", checked["postcode"],
                            feature_note),
        _invariance_measure("ranker.proxy_invariance.shelter", "Proxy check: address set to a shelter, shelter flag set",
                            checked["shelter"], f"{checked['shelter_addresses']} shelter addresses used. {feature_note}")]
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
        "definitions": {"exposure": "w(p) = 1/log2(1+p) for p <= 5, else 0, summed over a class's lines",
                        "deserved_exposure": "expected w in the relevance-sorted order, ties broken uniformly at random",
                        "content_blind_exposure": "expected w if the person's lines were shuffled",
                        "stigmatising": list(STIGMATISING), "supportive": list(SUPPORTIVE),
                        "more": "evaluation/fairness_ranker.py (module docstring)"},
        "seconds": round(time.perf_counter() - started, 2)}
    section.caveats = [
        "Ranking is audited for the true subject of each incident (truth.csv, grade certain), so matching errors do not "
        "enter these figures; the matcher section measures those.",
        "Rankings are every responder role's view (no access policy), as relevance and feedback are; the invariance and "
        "proxy checks also brief through the access policy for a dispatcher, an officer, a co-responder and EMS.",
        "Exposure counts only the top 5 lines and most persons have 5 lines or fewer: doubtful danger labels sink to the "
        "bottom of a short list but stay in it, so ranked exposure tracks the raw counts closely; part of any "
        "non-amplification is the top-5 cap, not the ranker's judgement. The term contributions show the rest.",
        "Housing context (e.g. 'usually stays at a shelter') is item content ranked on its properties like any item; the "
        "shelter proxy check shows that the address itself changes nothing.",
    ] + (["The scorecard was trained on this county's feedback: its figures here are in-sample."] if in_sample else [])
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
