"""Ranker fairness audit: exposure checked by hand and against FairRankTune, invariance that is total and that can
see a leak, and data bias (b) measured in the raw data beside the ranked exposure."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from evaluation.measures import MIN_PERSONS
from evaluation.fairness.ranker import ATTRIBUTES, ranker_fairness
from evaluation.fairness.ranker_exposure import STIGMATISING, SUPPORTIVE, ideal_weight, incident_table, position_weight, ranked_lines
from evaluation.fairness.ranker_groups import group_ratio_measure, group_ratios
from evaluation.fairness.ranker_invariance import invariance
from evaluation.fairness.report import write_report
from evaluation.ranking.county import load_county
from evaluation.synth.county import generate_county
from scoring.ranker import ItemScorecard
from scoring.rules import Rules

PERSONS, SEED, REPLICATES, SAMPLE = 3000, 1, 200, 200
W = [1 / math.log2(1 + p) for p in range(1, 6)]          # attention at positions 1..5


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("fairness_ranker_county")
    generate_county(PERSONS, SEED, out, progress=False)
    return out


@pytest.fixture(scope="module")
def section(county):
    return ranker_fairness(county, replicates=REPLICATES, seed=0, sample=SAMPLE)


def _measure(section, name):
    return next(m for m in section.measures if m.name == name)


# --------------------------------------------------------------------------- exposure by hand


def _lines(rows):
    return pd.DataFrame([("INC-1", "P1", k, cat, gain, False, False) for k, (cat, gain) in enumerate(rows, 1)],
                        columns=["incident_id", "person_key", "position", "category", "gain", "doubtful", "police"])


def test_exposure_by_hand():
    # ranked order:  1 safety_flag g1, 2 effective_approach g3, 3 legal_status g0, 4 communication_need g3,
    #                5 recent_event g2, 6 medical g1, 7 safety_flag g0
    lines = _lines([("safety_flag", 1), ("effective_approach", 3), ("legal_status", 0), ("communication_need", 3),
                    ("recent_event", 2), ("medical", 1), ("safety_flag", 0)])
    row = incident_table(lines).iloc[0]
    # shown: stigmatising at 1, 3, 5 (7 is below the cut); supportive at 2 and 4
    assert row["E_stig"] == pytest.approx(W[0] + W[2] + W[4])
    assert row["E_supp"] == pytest.approx(W[1] + W[3])
    # ideal by relevance: the two 3s share positions 1-2, the 2 takes 3, the two 1s share 4-5, the two 0s 6-7 (nothing)
    assert row["Estar_supp"] == pytest.approx(W[0] + W[1])                      # both 3s: (W1 + W2) / 2 each
    assert row["Estar_stig"] == pytest.approx((W[3] + W[4]) / 2 + W[2] + 0 + 0)  # the g1 flag, the g2 event, two 0s
    assert row["n_stig"] == 4 and row["n_supp"] == 2
    assert row["ndcg5"] == pytest.approx(
        sum(g / math.log2(1 + p) for p, g in enumerate([1, 3, 0, 3, 2], 1))
        / sum(g / math.log2(1 + p) for p, g in enumerate([3, 3, 2, 1, 1], 1)))
    assert list(position_weight([1, 5, 6, 40])) == pytest.approx([1.0, W[4], 0.0, 0.0])


def _brute_force_ideal(gains):
    """Average position weight of each line over every ordering sorted by relevance (ties in every order)."""
    n = len(gains)
    orders = [p for p in itertools.permutations(range(n)) if all(gains[p[k]] >= gains[p[k + 1]] for k in range(n - 1))]
    total = np.zeros(n)
    for order in orders:
        for position, line in enumerate(order, 1):
            total[line] += W[position - 1] if position <= 5 else 0.0
    return total / len(orders)


def test_ideal_exposure_equals_brute_force_over_tied_orderings():
    rng = np.random.default_rng(7)
    for _ in range(60):
        gains = list(rng.integers(0, 4, rng.integers(1, 8)))
        assert ideal_weight(gains) == pytest.approx(_brute_force_ideal(gains)), gains
    assert ideal_weight([2, 2, 2, 2, 2, 2]) == pytest.approx([sum(W) / 6] * 6)


# --------------------------------------------------------------------------- FairRankTune on the same rankings


def _class(category: str) -> str:
    return "stig" if category in STIGMATISING else "supp" if category in SUPPORTIVE else "other"


def _ideal_orderings(lines: pd.DataFrame):
    """Every ideal (relevance-sorted) top 5: tie blocks permuted, the block crossing position 5 partially."""
    blocks, position = [], 0
    for _, block in sorted(lines.groupby("gain")["line"], key=lambda kv: -kv[0]):
        room = max(0, 5 - position)
        blocks.append(list(itertools.permutations(list(block), min(len(block), room))))
        position += len(block)
    return [sum(choice, ()) for choice in itertools.product(*blocks)]


def test_exposure_matches_fairranktune(county, section):
    frt = pytest.importorskip("FairRankTune", reason="FairRankTune is the test-only cross-check (pip install -e '.[dev]')")
    ctx = load_county(county)
    demographics = pd.read_csv(county / "demographics.csv", dtype=str).set_index("person_key")
    known = ctx.incidents["person_key"].isin(demographics.index)
    evaluated = sorted(set(ctx.relevance["incident_id"]) & set(ctx.incidents.loc[known, "incident_id"]))
    lines, _ = ranked_lines(ctx, Rules.load(), ItemScorecard.load(), evaluated)
    lines["line"] = lines["incident_id"] + "#" + lines["position"].astype(str)
    lines["cls"] = lines["category"].map(_class)
    ours = incident_table(lines)
    theirs = []
    for incident_id, part in lines.groupby("incident_id", sort=False):
        groups = dict(zip(part["line"], part["cls"]))
        count = part["cls"].value_counts()
        shown = pd.DataFrame({"service": part.sort_values("position")["line"].head(5).tolist()})
        _, avg = frt.EXP(shown, groups, "MaxMinDiff")                      # mean exposure per item of each class
        ideal = _ideal_orderings(part)
        columns = pd.DataFrame({k: list(o) + [np.nan] * (5 - len(o)) for k, o in enumerate(ideal)})
        _, avg_ideal = frt.EXP(columns, groups, "MaxMinDiff")                # summed over every ideal ordering
        theirs.append({"incident_id": incident_id,
                       **{f"E_{c}": avg.get(c, 0.0) * count.get(c, 0) for c in ("stig", "supp")},
                       **{f"Estar_{c}": avg_ideal.get(c, 0.0) * count.get(c, 0) / len(ideal) for c in ("stig", "supp")}})
    theirs = pd.DataFrame(theirs).set_index("incident_id")
    assert len(theirs) == len(ours) > 400
    for column in ("E_stig", "E_supp", "Estar_stig", "Estar_supp"):
        np.testing.assert_allclose(ours[column].to_numpy(), theirs.loc[ours.index, column].to_numpy(), atol=1e-9,
                                   err_msg=column)
    # the group figures of the audit are FairRankTune's sums, divided per race/ethnicity group
    by_race = (theirs.join(ours[["person_key"]]).join(demographics["race_ethnicity"], on="person_key")
               .groupby("race_ethnicity").sum(numeric_only=True))
    for key, cls in (("stigmatising", "stig"), ("supportive", "supp")):
        for g in _measure(section, f"ranker.exposure.{key}.ratio.race_ethnicity").groups:
            row = by_race.loc[g.group["race_ethnicity"]]
            assert g.value == pytest.approx(row[f"E_{cls}"] / row[f"Estar_{cls}"], rel=1e-9), (key, g.group)


# --------------------------------------------------------------------------- the section


def test_section_has_every_measure_with_reference_and_small_groups_not_judged(section):
    names = [m.name for m in section.measures]
    for attr in ATTRIBUTES:
        for stem in ("ndcg_at_5.ratio", "exposure.stigmatising.ratio", "exposure.supportive.ratio",
                     "data_bias_not_amplified"):
            assert f"ranker.{stem}.{attr}" in names
    assert {"ranker.demographic_invariance", "ranker.proxy_invariance.postcode",
            "ranker.proxy_invariance.shelter"} <= set(names)
    race = _measure(section, "ranker.ndcg_at_5.ratio.race_ethnicity")
    assert race.reference == {"race_ethnicity": "white"}                        # the largest group
    sizes = {g.group["race_ethnicity"]: g.persons for g in race.groups}
    assert max(sizes, key=sizes.get) == "white"
    small = [g for g in race.groups if g.persons < MIN_PERSONS]
    assert small and all(not g.sufficient for g in small)                       # native, multiple in 3,000 persons
    assert all(s in race.note for s in (f"{g.group['race_ethnicity']} ({g.persons})" for g in small))
    for m in section.measures:
        assert m.verdict in ("pass", "fail", "insufficient")
        if m.ci95 is not None:
            assert m.ci95[0] <= m.value <= m.ci95[1], m.name
    ndcg = {g.group["race_ethnicity"]: g.value for g in race.groups}
    assert all(0.8 < v <= 1.0 for v in ndcg.values())
    json.dumps(section.to_dict(), default=str)


def test_insufficient_when_no_group_but_the_reference_is_large_enough():
    persons = pd.DataFrame({"g": ["a"] * 40 + ["b"] * 10, "x": 1.0, "n": 1.0})
    table = group_ratios(persons, "g", {"rate": ("x", "n")}, 50, 0)
    measure = group_ratio_measure("m", "m", "g", table, "rate")
    assert measure.verdict == "insufficient" and measure.value is None and "b (10)" in measure.note


def test_demographic_and_proxy_invariance_is_total(section):
    checked = section.facts["invariance"]
    for kind, name in (("demographic", "ranker.demographic_invariance"), ("postcode", "ranker.proxy_invariance.postcode"),
                       ("shelter", "ranker.proxy_invariance.shelter")):
        assert checked[kind]["compared"] == SAMPLE * 5 and checked[kind]["identical"] == checked[kind]["compared"]
        m = _measure(section, name)
        assert m.value == 1.0 and m.verdict == "pass"
    assert checked["demographic"]["item_texts_renamed"] > 0                     # names inside item texts were changed too
    assert section.facts["model_features"]["n_features"] == 150
    assert section.facts["model_features"]["demographic_or_address_features"] == []


class _ReadsText:
    """A model that leaks: its score depends on the item's text (where a preferred name can appear)."""

    def terms(self, item, call_type, now, agencies=1):
        return [("text length", 0.01 * len(item.text))]


def test_invariance_check_sees_a_model_that_reads_names(county):
    ctx = load_county(county)
    demographics = pd.read_csv(county / "demographics.csv", dtype=str, keep_default_na=False).set_index("person_key")
    records = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(county / "truth.csv", dtype=str, keep_default_na=False)
    records["person_key"] = records["record_id"].map(dict(zip(truth["record_id"], truth["person_key"])))
    groups = demographics[["race_ethnicity", "sex"]]
    ids = sorted(set(ctx.relevance["incident_id"]) & set(ctx.incidents.loc[ctx.incidents["person_key"] != "", "incident_id"]))
    result = invariance(ctx, county, records, groups, ids, Rules.load(), _ReadsText(), 300, 0)
    assert result["demographic"]["identical"] < result["demographic"]["compared"]
    assert result["postcode"]["identical"] == result["postcode"]["compared"]   # it reads no address


# --------------------------------------------------------------------------- data bias (b)


def test_data_bias_raw_and_ranked_side_by_side(tmp_path, section):
    out = tmp_path / "county"
    # bias (b) against "black" (the default group): more police records, more unverified caution flags; 4,000 incidents
    # so that the group has enough persons with such lines to be judged
    generate_county(PERSONS, SEED, out, progress=False, bias="data", n_incidents=4000)
    biased = ranker_fairness(out, replicates=REPLICATES, seed=0, sample=50)
    write_report([biased], tmp_path / "report", {"county_dir": str(out)}, cards={})
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    measures = {m["name"]: m for m in report["sections"][0]["measures"]}
    measure = measures["ranker.data_bias_not_amplified.race_ethnicity"]
    black = next(g for g in measure["groups"] if g["group"] == {"race_ethnicity": "black"})["extra"]
    plain = next(g for g in _measure(section, "ranker.data_bias_not_amplified.race_ethnicity").groups
                 if g.group == {"race_ethnicity": "black"}).extra
    # the raw disparity is in the data: far more unverified safety flags and police records than the reference ...
    assert black["county_unverified_flag_share_ratio"] > 1.8 > plain["county_unverified_flag_share_ratio"] + 0.5
    assert black["county_police_records_per_person_ratio"] > 1.4 > plain["county_police_records_per_person_ratio"] + 0.2
    assert black["county_unverified_flag_share_ratio_ci95"][0] > 1.25
    # ... and beside it, for each kind of line, the ranked exposure ratio, which does not exceed the raw disparity
    for kind in ("stigmatising", "doubtful_danger", "police"):
        assert {f"{kind}_raw_ratio", f"{kind}_content_blind_ratio", f"{kind}_ranked_ratio", f"{kind}_ranked_over_blind_ci95",
                f"{kind}_persons_with_lines"} <= set(black)
        assert black[f"{kind}_persons_with_lines"] >= MIN_PERSONS                  # judged, not waved through
        assert black[f"{kind}_ranked_ratio"] <= black[f"{kind}_raw_ratio"], kind
        assert black[f"{kind}_ranked_ratio"] < black["county_unverified_flag_share_ratio"]
        assert black[f"{kind}_amplified"] is False
    assert black["doubtful_danger_raw_ratio"] > 1.25                             # the injected flags reach the incidents
    assert measure["verdict"] == "pass" and "black" in measure["note"]
    # how: item properties. The group's stigmatising lines are sunk as doubtful more often and carry larger danger-label
    # penalties; and the invariance checks show no demographic input
    terms = report["sections"][0]["facts"]["stigmatising_term_contributions"]["race_ethnicity"]
    assert terms["black"]["sunk_as_doubtful_share"] > terms["white"]["sunk_as_doubtful_share"]
    assert terms["black"]["mean_contribution"]["danger label"] < terms["white"]["mean_contribution"]["danger label"]
    assert measures["ranker.demographic_invariance"]["value"] == 1.0
