"""The matcher half of the fairness audit: `matcher_fairness(county_dir) -> Section`.

A county directory (`briefing synth`: records.csv, truth.csv, demographics.csv) is linked with
the committed model exactly as `briefing link --model` does (or the given clustering is used),
then:

1. **Error rates by group** -- false-match rate, false-non-match rate, precision and recall by
   race/ethnicity, sex, age band (`evaluation.linkage.metrics.age_band`, ages in ``reference_year``)
   and their two-way intersections; counts per person and the person-level bootstrap are in
   `evaluation.stats` (point estimates through fairlearn's `MetricFrame`). A false
   pair is attributed to the groups of both persons. Measures: per attribute, each group's FNMR
   and FMR over the largest group's (headline: the ratio farthest from 1; band 0.80-1.25); the
   intersections form separate measures. Precision / recall ride along in ``extra``. A
   GroupFigure's ``value`` is the group's rate (FNMR figures count persons with a true pair,
   FMR figures all persons) with its 95% CI; ``extra`` holds the counts, the ratio to the
   reference and its CI. A group is insufficient (value None, rate kept in ``extra``) under
   MIN_PERSONS persons, or when its ratio's CI reaches into the band and spans more than two
   band widths (`evaluation.stats.MAX_RATIO_CI_FACTOR`): the data cannot then tell pass from fail.
2. **Threshold sweep** -- per group, FNMR and FMR against the link threshold, from the scored
   pairs' match probabilities as *pairwise* decisions (a pair is linked at t when its probability
   is >= t; no re-clustering, which would link some more pairs transitively). One figure per
   attribute; the numbers are in ``facts["threshold_sweep"]``.
3. **Name swap** (`evaluation.fairness.name_swap`) -- a sample of every group gets names of equal rank
   from another group's pool, the county is re-linked with the same model (new candidate pairs
   included), and the pairwise decisions of the swapped persons' pairs are compared. Headline:
   the flip rate over all swapped persons (pass at <= 1%); per-group rates are its figures
   (group keys ``race_ethnicity`` -- the persons' own group -- and ``names_from``).
4. **Perturbation robustness** (`evaluation.fairness.perturb`) -- typo, transliteration, hyphenation,
   name-order swap and missing DOB applied to one record of a linked true pair per person; the
   share still linked at the link threshold, by group, and its ratio to the largest group under
   the same perturbation (GroupFigure keys: the attribute and ``perturbation``); one figure
   (race/ethnicity).

Beside them, which kinds of pairs of persons the false matches are (`evaluation.fairness.false_matches`:
a generation apart, one family, other), in ``facts["false_matches"]`` and as the last caveat on the
model card.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

import models
from evaluation.measures import (
    MIN_PERSONS, NAME_SWAP_MAX_FLIP, Figure, GroupFigure, Measure, Section,
)
from evaluation.fairness.false_matches import caveat, false_match_kinds, namesake_caveat, namesakes
from evaluation.fairness.name_swap import flip_counts, person_tokens, swap_names, swap_plan
from evaluation.fairness.perturb import KINDS, perturbed_scores, sample_pairs
from evaluation.fairness.plots import svg_text
from evaluation.linkage.metrics import MISSING_GROUP, age_band
from evaluation.stats import (
    COUNTS, MAX_RATIO_CI_FACTOR, RATES, Cell, bootstrap_sums, cells_by, ci95, clean, linkage_point_rates, person_counts,
    ratio_measure,
)
from matching.accuracy import linkage_metrics
from matching.link import link_records
from matching.model import MatcherModel
from matching.record import read_records
from matching.standardise import standardise

ATTRIBUTES = ("race_ethnicity", "sex", "age_band")
INTERSECTIONS = (("race_ethnicity", "sex"), ("race_ethnicity", "age_band"), ("sex", "age_band"))
REFERENCE_YEAR = 2026            # ages at the end of the synthetic record window (records 2018-2025)
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
LABELS = {"race_ethnicity": "race/ethnicity", "sex": "sex", "age_band": "age band"}
PARTS = ("rates", "sweep", "name_swap", "perturbation")


def _read(county: Path, name: str, **kw) -> pd.DataFrame:
    return pd.read_csv(county / f"{name}.csv", dtype=str, keep_default_na=False, **kw)


def _groups(demographics: pd.DataFrame, reference_year: int) -> pd.DataFrame:
    d = demographics.astype({"person_key": str}).set_index("person_key")
    out = pd.DataFrame(index=d.index)
    for col in ("race_ethnicity", "sex"):
        out[col] = d[col].replace("", np.nan).fillna(MISSING_GROUP).astype(str) if col in d else MISSING_GROUP
    out["age_band"] = age_band(d["birth_year"].replace("", np.nan), reference_year).fillna(MISSING_GROUP).astype(str)
    return out


def _fnmr_persons(c: Cell) -> int:
    return int(c.extra.get("persons_with_pairs", c.persons))


def linkage_measures(counts: pd.DataFrame, replicates: int, rng: np.random.Generator) -> list[Measure]:
    """FNMR and FMR ratio measures per attribute and per intersection (`counts`: person_counts + group columns)."""
    measures = []
    for cols in [[a] for a in ATTRIBUTES] + [list(i) for i in INTERSECTIONS]:
        point = linkage_point_rates(counts, cols, finest=list(ATTRIBUTES))
        cells = cells_by(counts, cols, list(COUNTS), RATES, replicates, rng, point=point)
        with_pairs = counts[counts["true_pairs"] > 0].groupby(cols).size()
        for c in cells:
            key = tuple(c.group[k] for k in cols)
            c.extra["persons_with_pairs"] = int(with_pairs.get(key if len(key) > 1 else key[0], 0))
        label = " × ".join(LABELS[c] for c in cols)
        suffix = "_x_".join(cols)
        measures.append(ratio_measure(
            f"matcher.false_non_match_rate.ratio.{suffix}", f"False-non-match rate by {label}, ratio to the largest group",
            cells, "false_non_match_rate", RATES, persons_of=_fnmr_persons, companions=("recall",)))
        measures.append(ratio_measure(
            f"matcher.false_match_rate.ratio.{suffix}", f"False-match rate by {label}, ratio to the largest group",
            cells, "false_match_rate", RATES, companions=("precision",)))
    return measures


def threshold_sweep(pairs: pd.DataFrame, truth: pd.DataFrame, counts: pd.DataFrame, attribute: str,
                    thresholds=SWEEP) -> dict[str, dict[str, list]]:
    """Per group: FNMR and FMR at each threshold, pairwise (module doc, item 2)."""
    owner = truth.astype(str).set_index("record_id")["person_key"]
    pl = owner.reindex(pairs["record_id_l"].astype(str)).to_numpy()
    pr = owner.reindex(pairs["record_id_r"].astype(str)).to_numpy()
    group = counts[attribute]
    gl, gr = group.reindex(pl).to_numpy(), group.reindex(pr).to_numpy()
    prob = pairs["match_probability"].to_numpy(float)
    true = pl == pr
    totals = counts.groupby(attribute)[["true_pairs", "impostor_pairs"]].sum()
    out = {}
    for g in totals.index:
        n_persons = int((group == g).sum())
        if n_persons < MIN_PERSONS:
            continue
        tp = np.sort(prob[true & (gl == g)])
        fp = np.sort(np.concatenate([prob[~true & (gl == g)], prob[~true & (gr == g)]]))
        t_all, imp = float(totals.at[g, "true_pairs"]), float(totals.at[g, "impostor_pairs"])
        fnmr = [1 - (len(tp) - np.searchsorted(tp, t)) / t_all if t_all else None for t in thresholds]
        fmr = [(len(fp) - np.searchsorted(fp, t)) / imp if imp else None for t in thresholds]
        out[str(g)] = {"threshold": list(thresholds), "false_non_match_rate": fnmr, "false_match_rate": fmr,
                       "persons": n_persons}
    return out


def _svg(fig) -> str:
    """The matcher's figures as inline SVG: glyphs drawn as paths, plain `href`s."""
    return svg_text(fig, "briefing-fairness", fonttype="path", plain_href=True)


def sweep_figure(attribute: str, sweep: dict, link_at: float) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(9, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "false_non_match_rate", "false-non-match rate"),
                           (axes[1], "false_match_rate", "false-match rate")):
        for g, row in sweep.items():
            y = [np.nan if v is None else v for v in row[key]]
            ax.plot(row["threshold"], y, marker="o", markersize=3, label=f"{g} ({row['persons']:,})")
        ax.axvline(link_at, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("logit")
        ax.set_xlabel("link threshold (match probability)")
        ax.set_title(title)
        if key == "false_match_rate":
            ax.set_yscale("symlog", linthresh=1e-7)
    axes[0].legend(fontsize=7, title=LABELS[attribute], title_fontsize=7)
    caption = (f"Pairwise decisions at each threshold (no re-clustering); dashed line: the model's link threshold "
               f"{link_at:g}. FMR is per pair of records of different persons.")
    return Figure(f"matcher.threshold_sweep.{attribute}", f"Error rates against the link threshold, by {LABELS[attribute]}",
                  _svg(fig), caption)


def name_swap_measure(records: pd.DataFrame, truth: pd.DataFrame, groups: pd.DataFrame, pairs: pd.DataFrame,
                      model, link_at: float, replicates: int, rng: np.random.Generator, seed: int,
                      share: float = 0.2) -> tuple[Measure, dict]:
    tokens = person_tokens(records, truth)
    plan = swap_plan(groups.reset_index()[["person_key", "race_ethnicity", "sex"]], tokens, share=share, seed=seed)
    swapped = swap_names(records, truth, plan, tokens, seed=seed)
    relinked = link_records(swapped, model=model)
    flips = flip_counts(pairs, relinked.pairs, records, swapped, truth, set(plan["person_key"]), link_at)
    frame = flips.join(plan.set_index("person_key")[["source", "target"]])
    frame = frame.rename(columns={"source": "race_ethnicity"})
    fns = {"flip_rate": lambda s: np.where(s[..., 0] > 0, s[..., 1] / np.maximum(s[..., 0], 1), np.nan)}
    cells = cells_by(frame, ["race_ethnicity"], ["considered", "flipped", "unfaithful"], fns, replicates, rng)
    figures = []
    for c in cells:
        target = plan.loc[plan["source"] == c.group["race_ethnicity"], "target"].iloc[0]
        value = clean(c.point["flip_rate"]) if c.persons >= MIN_PERSONS else None
        figures.append(GroupFigure({**c.group, "names_from": target}, c.persons, value,
                                   ci95(fns["flip_rate"](c.draws)) if value is not None else None,
                                   {"considered_pairs": int(c.sums[0]), "flipped": int(c.sums[1]),
                                    "left_out_unpreserved": int(c.sums[2])}))
    total = frame[["considered", "flipped", "unfaithful"]].to_numpy(float)
    overall = fns["flip_rate"](total.sum(axis=0)) if len(total) else np.nan
    draws = sum((bootstrap_sums(rows.to_numpy(float), replicates, rng) for _, rows in
                 frame.groupby("race_ethnicity")[["considered", "flipped", "unfaithful"]]), np.zeros((replicates, 3)))
    draws = fns["flip_rate"](draws)                 # pooled rate, persons redrawn within each group
    sufficient = [f for f in figures if f.value is not None]
    worst = max(sufficient, key=lambda f: f.value, default=None)
    value = clean(overall) if sufficient else None
    verdict = "insufficient" if value is None else "pass" if value <= NAME_SWAP_MAX_FLIP else "fail"
    note = (f"pairwise decisions at the link threshold {link_at:g}, re-linked; {int(total[:, 2].sum()) if len(total) else 0} "
            f"pair(s) whose name comparison levels the swap could not preserve are left out")
    if worst is not None:
        note += f"; highest group: {worst.group['race_ethnicity']} {worst.value:.2%}"
    measure = Measure("matcher.name_swap.flip_rate", "Name swap: decisions that change when names come from another "
                      "group's pool", f"flip rate <= {NAME_SWAP_MAX_FLIP:.0%}", value, ci95(draws) if value is not None else None,
                      verdict, figures, None, note)
    return measure, {"persons_swapped": int(len(plan)), "share": share, "seconds_relink": relinked.summary["seconds"]}


def perturbation_measures(pairs, records, std, truth, groups, model, link_at, replicates, rng, seed,
                          max_per_group: int = 2000) -> tuple[list[Measure], Figure, dict]:
    demo = groups.reset_index()
    sample = sample_pairs(pairs, records, truth, demo, link_at, max_per_group=max_per_group, seed=seed)
    scores = perturbed_scores(sample, records, demo, model, link_at, seed=seed, standardised=std)
    frame = scores.assign(pairs=1).join(groups, on="person_key")
    fns = {"still_linked": lambda s: np.where(s[..., 1] > 0, s[..., 0] / np.maximum(s[..., 1], 1), np.nan)}
    measures, by_race = [], []
    for attribute in ATTRIBUTES:
        cells = cells_by(frame, [attribute, "perturbation"], ["linked", "pairs"], fns, replicates, rng)
        if attribute == "race_ethnicity":
            by_race = cells
        measures.append(ratio_measure(
            f"matcher.perturbation_robustness.ratio.{attribute}",
            f"Share of linked true pairs still linked after a perturbation, by {LABELS[attribute]}, ratio to the largest group",
            cells, "still_linked", fns, counts=("still_linked_pairs", "pairs"),
            partition=lambda c: c.group["perturbation"]))
    return measures, _perturbation_figure(by_race, KINDS, fns, link_at), {"pairs_sampled": int(len(sample))}


def _perturbation_figure(cells: list[Cell], kinds, fns, link_at: float) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    groups = sorted({c.group["race_ethnicity"] for c in cells if c.persons >= MIN_PERSONS})
    fig = MplFigure(figsize=(9, 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(groups), 1)
    for k, g in enumerate(groups):
        ys, lo, hi = [], [], []
        for kind in kinds:
            c = next((c for c in cells if c.group == {"race_ethnicity": g, "perturbation": kind}), None)
            y = c.point["still_linked"] if c is not None and c.persons >= MIN_PERSONS else np.nan
            ci = ci95(fns["still_linked"](c.draws)) if c is not None and len(c.draws) else None
            ys.append(y)
            lo.append(y - ci[0] if ci else 0)
            hi.append(ci[1] - y if ci else 0)
        ax.bar(np.arange(len(kinds)) + (k - (len(groups) - 1) / 2) * width, ys, width, yerr=[lo, hi], capsize=2, label=g)
    ax.set_xticks(np.arange(len(kinds)), [k.replace("_", " ") for k in kinds])
    ax.set_ylabel("share still linked")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=len(groups), loc="lower center", title="race/ethnicity", title_fontsize=7)
    return Figure("matcher.perturbation_robustness", "Linked true pairs still linked after one record is perturbed",
                  _svg(fig), f"One linked true pair per person; bars: 95% bootstrap CIs over persons; "
                                 f"linked = match probability >= {link_at:g} (pairwise).")


CAVEATS = [
    "Synthetic county: names, errors and group sizes come from the generator (evaluation/SYNTH.md), not from "
    "real agency data; the group labels are exact here, real ones would be noisy or missing.",
    "Pairwise rates are dominated by people with many records: a few high utilisers can move a small group's "
    "false-non-match rate a long way, so read each ratio with its interval.",
    f"Groups or intersections with fewer than {MIN_PERSONS} persons are reported as insufficient, never as passing.",
    "False-match rates are per pair of records of different persons and rest on few events; a false pair counts "
    "for the groups of both persons.",
    "The threshold sweep and the name-swap and perturbation tests judge pairwise decisions at the link threshold; "
    "clustering links some pairs transitively.",
    f"A group whose ratio interval reaches into the band and spans more than a factor of {MAX_RATIO_CI_FACTOR:.2f} is "
    "reported insufficient: at the sizes of a county the native and multiple groups often are.",
    "The name swap leaves out pairs whose name comparison levels it could not preserve (e.g. a nickname pair whose "
    "new name has no nickname); what remains measures how common and how shaped the new names are.",
]


def _part_rng(seed: int, part: str) -> np.random.Generator:
    """One stream per part: a part's figures do not depend on the others."""
    return np.random.default_rng([seed, PARTS.index(part)])


def _run_parts(parts: tuple[str, ...], link, records: pd.DataFrame, truth: pd.DataFrame, groups: pd.DataFrame,
               counts: pd.DataFrame, model: MatcherModel, replicates: int, seed: int, swap_share: float,
               perturb_per_group: int, seconds: dict[str, float]) -> tuple[list[Measure], list[Figure], dict]:
    """The parts of the audit asked for (module doc, items 1-4), each timed into ``seconds``: their measures, their
    figures, and the facts they found (threshold sweeps, name-swap and perturbation counts)."""
    link_at = link.model.thresholds.link
    measures, figures = [], []
    found: dict = {"threshold_sweep": {}, "name_swap": {}, "perturbation": {}}
    t0 = time.perf_counter()
    if "rates" in parts:
        measures += linkage_measures(counts, replicates, _part_rng(seed, "rates"))
        seconds["rates"] = time.perf_counter() - t0
    if "sweep" in parts:
        t0 = time.perf_counter()
        found["threshold_sweep"] = {a: threshold_sweep(link.pairs, truth, counts, a) for a in ATTRIBUTES}
        figures += [sweep_figure(a, found["threshold_sweep"][a], link_at) for a in ATTRIBUTES]
        seconds["sweep"] = time.perf_counter() - t0
    if "name_swap" in parts:
        t0 = time.perf_counter()
        swap, found["name_swap"] = name_swap_measure(records, truth, groups, link.pairs, model, link_at, replicates,
                                                     _part_rng(seed, "name_swap"), seed, share=swap_share)
        measures.append(swap)
        seconds["name_swap"] = time.perf_counter() - t0
    if "perturbation" in parts:
        t0 = time.perf_counter()
        perturbation, figure, found["perturbation"] = perturbation_measures(
            link.pairs, records, standardise(records), truth, groups, link.model, link_at, replicates,
            _part_rng(seed, "perturbation"), seed, max_per_group=perturb_per_group)
        measures += perturbation
        figures.append(figure)
        seconds["perturbation"] = time.perf_counter() - t0
    return measures, figures, found


def matcher_fairness(county_dir: str | Path, model_path: str | Path = models.MATCHER,
                     clusters: pd.DataFrame | str | Path | None = None, replicates: int = 500, seed: int = 0,
                     reference_year: int = REFERENCE_YEAR, swap_share: float = 0.2,
                     perturb_per_group: int = 2000, parts: tuple[str, ...] = PARTS) -> Section:
    """Audit the matcher on a synthetic county (module doc). ``clusters``: a clustering (record_id,
    person_id; frame or CSV path) to measure instead of the model's own; the model still scores the
    pairs the sweep, the name swap and the perturbations need. ``parts``: a subset of ``PARTS`` to run."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; known: {PARTS}")
    started = time.perf_counter()
    county = Path(county_dir)
    records = read_records(county / "records.csv").frame
    truth = _read(county, "truth")
    demographics = _read(county, "demographics")
    groups = _groups(demographics, reference_year)
    model = MatcherModel.load(model_path)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    link = link_records(records, model=model)
    seconds["link"] = time.perf_counter() - t0
    given = clusters is not None
    if clusters is None:
        clusters = link.clustering.clusters
    elif not isinstance(clusters, pd.DataFrame):
        clusters = pd.read_csv(clusters, dtype=str)
    counts = person_counts(clusters, truth).join(groups, how="left").fillna({a: MISSING_GROUP for a in ATTRIBUTES})
    measures, figures, found = _run_parts(parts, link, records, truth, groups, counts, model, replicates, seed,
                                          swap_share, perturb_per_group, seconds)
    seconds["total"] = time.perf_counter() - started
    facts = {
        "county": str(county), "records": int(len(records)), "persons": int(len(counts)),
        "persons_by_race_ethnicity": {str(k): int(v) for k, v in counts["race_ethnicity"].value_counts().sort_index().items()},
        "model": str(model_path), "model_version": model.version, "link_threshold": link.model.thresholds.link,
        "clustering": "given" if given else "linked here with the model",
        "overall": linkage_metrics(clusters, truth).to_dict(), "reference_year": reference_year,
        "min_persons": MIN_PERSONS, "bootstrap": {"replicates": replicates, "seed": seed, "unit": "person, within group"},
        "parts": list(parts), **found, "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "false_matches": false_match_kinds(clusters, truth, records, demographics),
        "namesakes": namesakes(clusters, truth, records, demographics),
    }
    return Section("matcher", measures, figures, facts,
                   list(CAVEATS) + [caveat(facts["false_matches"]), namesake_caveat(facts["namesakes"])])
