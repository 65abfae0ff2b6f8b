"""Train the Splink matcher (unsupervised) and score candidate pairs.

`Matcher` follows scikit-learn's conventions: parameters in `__init__`; `fit` learns `model_`
(a `MatcherModel`) and `fields_`, and leaves `linker_` (the Splink linker over the training
records) and `predictions_` (its scored blocked pairs) for `link_records` to reuse. There is no
`Matcher.predict`: `predict_pairs` scores the blocked pairs of a set of standardised records with
a model. Splink's SQL runs on DuckDB (in memory, the default) or on Spark (`engine="spark"`, see
`matching.engine`); the model JSON is the same whichever engine trains it.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import pandas as pd
from splink import SettingsCreator, block_on

from matching.blocking import (
    BlockingBudget,
    as_creators,
    choose_prediction_rules,
    deterministic_rules,
    training_blocking_rules,
)
from matching.calibration import LINK_EXPECTED_PRECISION, bayes_factors, default_link_threshold, estimate_prior, logit2
from matching.comparisons import LEVEL_FALLBACKS, build_comparisons
from matching.engine import build_linker, model_json
from matching.household import HOUSEHOLD_SHARE, household_share
from matching.model import MatcherModel, Thresholds
from matching.splink_internals import (comparison_input_columns, estimate_u_side_by_side, linker_prior, predict,
                                       set_level_parameters,
                                       set_linker_prior)
from matching.standardise import available_fields, to_arrow

log = logging.getLogger(__name__)

SPLINK_LOG_LEVEL = logging.ERROR


def data_hash(standardised: pd.DataFrame) -> str:
    """SHA-256 (first 16 hex) of the record ids in order: identifies the training data in the model card."""
    digest = hashlib.sha256()
    for chunk_start in range(0, len(standardised), 100_000):
        chunk = standardised["unique_id"].iloc[chunk_start : chunk_start + 100_000]
        digest.update("\n".join(chunk.astype(str)).encode())
    return digest.hexdigest()[:16]


def linker_for(standardised: pd.DataFrame, settings: Any, engine: str = "duckdb", spark_master: str | None = None):
    """A Splink Linker over `standardised` records with `settings` (creator, dict or path) on `engine`.

    `engine`: "duckdb" (in memory, the default) or "spark" (`spark_master`, default local[2]); see
    `matching.engine`. Settings and models are always given in DuckDB SQL.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        linker = build_linker(to_arrow(standardised), settings, engine, spark_master)
    # Splink logs a warning per untrainable level in each EM round (expected: a round cannot
    # estimate the fields it blocks on); the model card records what was trained.
    logging.getLogger("splink").setLevel(SPLINK_LOG_LEVEL)
    return linker


#: Random pairs per record sampled to estimate u, within [MIN_U_PAIRS, Matcher.max_pairs_u]: the
#: sample grows with the data, so a small file does not pay for five million comparisons.
U_PAIRS_PER_RECORD = 10
MIN_U_PAIRS = 250_000


def u_sample_size(n_records: int, cap: float) -> int:
    """How many random pairs estimate u for `n_records` records (at most `cap`)."""
    return int(min(cap, max(MIN_U_PAIRS, U_PAIRS_PER_RECORD * n_records)))


#: `Matcher._calibrate` keeps the pairs a link with a floor this low could need, should the calibrated
#: prior be up to MAX_PRIOR_RISE times the one training started from.
KEPT_FLOOR = 0.001
MAX_PRIOR_RISE = 256


@dataclass
class ScoredPairs:
    """Splink's predictions over the blocked pairs, scored with `prior`; `link_records` reuses them.

    Pairs whose Bayes factor is below 2 ** `lowest_bits` were left out."""

    table: Any
    prior: float
    lowest_bits: float


def comparison_columns(fields: set[str]) -> dict[str, set[str]]:
    """Each comparison's output name -> the standardised columns its levels read."""
    return dict(comparison_input_columns(creator) for creator in build_comparisons(fields))


class NotTrainable(ValueError):
    """The records cannot support unsupervised training (too few comparable pairs)."""


class Matcher:
    """Unsupervised Splink model over whichever standardised fields the data has.

    Parameters
    ----------
    max_pairs_u : at most this many random pairs are sampled to estimate u probabilities
        (`u_sample_size`: 10 per record, at least 250,000).
    em_max_pairs : cap on pairs per EM round (None: all blocked pairs).
    prior_recall : assumed recall of the deterministic rules that give the starting match prior
        (the prior itself is then calibrated on all blocked pairs, `matching.calibration`).
    seed : makes u sampling reproducible (within one engine: u samples differ between DuckDB and Spark).
    blocking_budget : how many candidate pairs prediction may generate (see `matching.blocking`).
    engine, spark_master : where Splink's SQL runs (`matching.engine`); the model is the same format either way.
    """

    def __init__(self, max_pairs_u: float = 5e6, em_max_pairs: float | None = 2e6, prior_recall: float = 0.6,
                 seed: int = 42, blocking_budget: BlockingBudget | None = None, engine: str = "duckdb",
                 spark_master: str | None = None):
        self.max_pairs_u = max_pairs_u
        self.em_max_pairs = em_max_pairs
        self.prior_recall = prior_recall
        self.seed = seed
        self.blocking_budget = blocking_budget
        self.engine = engine
        self.spark_master = spark_master

    def settings_for(self, fields: set[str], prediction_rules: list[dict]) -> SettingsCreator:
        return SettingsCreator(
            link_type="dedupe_only",
            unique_id_column_name="unique_id",
            comparisons=build_comparisons(fields),
            blocking_rules_to_generate_predictions=as_creators(prediction_rules),
            retain_matching_columns=False,
            retain_intermediate_calculation_columns=False,
            em_convergence=0.001,
            max_iterations=25,
        )

    def fit(self, standardised: pd.DataFrame, progress=None) -> "Matcher":
        """Estimate the prior, u (random sampling) and m (EM over several blocking rules)."""
        started = time.perf_counter()
        fields = available_fields(standardised)
        households = household_share(standardised)
        if households > HOUSEHOLD_SHARE:
            fields.add("households")
        em_rules = training_blocking_rules(standardised, fields, comparison_columns(fields))
        if not em_rules:
            raise NotTrainable(
                f"{len(standardised):,} records give too few comparable pairs to train a matcher "
                "(no blocking rule yields enough pairs for expectation maximisation); "
                "link them with a trained model instead (--model, e.g. models/matcher.json)"
            )
        kept, dropped = choose_prediction_rules(standardised, fields, self.blocking_budget)
        linker = linker_for(standardised, self.settings_for(fields, kept), self.engine, self.spark_master)
        step = progress or (lambda label: None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step("estimating the match prior")
            linker.training.estimate_probability_two_random_records_match(deterministic_rules(fields), recall=self.prior_recall)
            _floor_prior(linker, len(standardised), self.prior_recall)
            step("estimating u by random sampling")
            u_pairs = u_sample_size(len(standardised), self.max_pairs_u)
            # One chunk, one query per comparison over the whole sample, the comparisons side by side. Splink's
            # default first probes 1 % of it, keeps that only if every level was seen 100 times (rare levels such
            # as swapped names never are) and otherwise counts the whole sample again in ten chunks: the same
            # counts, eleven queries each.
            estimate_u_side_by_side(linker, max_pairs=u_pairs, seed=self.seed)
            for columns in em_rules:
                step("expectation maximisation")
                kwargs = {"max_pairs": self.em_max_pairs} if self.em_max_pairs else {}
                linker.training.estimate_parameters_using_expectation_maximisation(block_on(*columns), **kwargs)
        splink_model, neutralised = neutralise_unobserved_levels(model_json(linker))
        self.fields_ = fields
        set_level_parameters(linker, splink_model)
        self.linker_ = linker
        step("calibrating the prior on every blocked pair")
        calibration = self._calibrate(splink_model, len(standardised))
        link = calibration["link_threshold"]
        self.model_ = MatcherModel(
            splink=splink_model,
            thresholds=Thresholds(link=link, review_low=min(Thresholds.review_low, link),
                                  chosen_by=f"calibrated: the lowest threshold the model expects to link at "
                                            f"precision >= {calibration['link_expected_precision']} (no labels)"),
            training={
                "records": int(len(standardised)),
                "fields": sorted(fields),
                "household_share": round(households, 4),
                "data_hash": data_hash(standardised),
                "seed": self.seed,
                "max_pairs_u": self.max_pairs_u,
                "u_pairs_sampled": u_pairs,
                "calibration": calibration,
                "engine": self.engine,
                "prediction_blocking_rules": kept,
                "blocking_rules_dropped_for_size": dropped,
                "em_blocking_rules": [" AND ".join(f"l.{c} = r.{c}" for c in columns) for columns in em_rules],
                "levels_made_neutral": neutralised,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
        return self

    def _calibrate(self, splink_model: dict, n_records: int) -> dict:
        """Score every blocked pair once, set the calibrated prior on the model and the linker, keep the scores.

        The predictions stay in the engine as `predictions_` (scored with the starting prior), so
        `link_records` re-weights them instead of predicting again. Only pairs whose Bayes factor is at
        least 1 are kept (lower for a small file, down to what a `KEPT_FLOOR` probability needs should the
        prior rise `MAX_PRIOR_RISE`-fold): each pair left out adds less than the prior to the expected
        matches, under 0.01 % of them on a million records, and keeping all of them (38 million pairs
        there) took the link past 8 GB.
        """
        start = linker_prior(self.linker_)
        lowest_bits = min(0.0, logit2(KEPT_FLOOR) - logit2(min(0.5, MAX_PRIOR_RISE * start)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = predict(self.linker_, threshold_match_weight=logit2(start) + lowest_bits)
        factors = bayes_factors(self.linker_, table, start, n_records)
        prior = estimate_prior(factors, fallback=start)
        set_linker_prior(self.linker_, prior)
        splink_model["probability_two_random_records_match"] = prior
        self.predictions_ = ScoredPairs(table=table, prior=start, lowest_bits=lowest_bits)
        link, sweep = default_link_threshold(factors, prior)
        return {"prior_from_deterministic_rules": start, "prior": prior, "blocked_pairs": int(factors.pairs.sum()),
                "expected_matches": round(factors.expected_matches(prior), 1), "link_threshold": link,
                "link_expected_precision": LINK_EXPECTED_PRECISION, "sweep": sweep}


def _floor_prior(linker, n_records: int, recall: float) -> None:
    """If the deterministic rules found no match at all, use the prior they would give for one.

    A prior of zero is a match weight of minus infinity: EM and every prediction would fail.
    """
    if linker_prior(linker) <= 0:
        all_pairs = max(n_records * (n_records - 1) / 2, 1)
        set_linker_prior(linker, min(1.0 / (recall * all_pairs), 0.5))


#: The smallest m probability training may leave on a level. EM over a couple of million pairs cannot
#: tell an m of 1e-30 from one of 1e-7, and an m near zero is a veto (-80 bits) that no other field can
#: outweigh: a similar street in another postcode would forbid a match whatever the names and DOB say.
M_FLOOR = 1e-6


def neutralise_unobserved_levels(splink_model: dict) -> tuple[dict, list[str]]:
    """Repair levels training could not estimate; returns the model and the "field: level" labels changed.

    - A level training never observed at all (no m, no u: "same postcode, different street" in data
      where the city always follows the postcode) takes the parameters of the stricter level it
      generalises (`comparisons.LEVEL_FALLBACKS`) when training estimated that one, so a shared postcode
      still counts where one side lacks the city; otherwise it gets m = u: weight 0, instead of
      Splink's arbitrary default.
    - A level EM never saw among matches (a DOB typo in data with no DOB typos: m missing or zero)
      gets m = u too, instead of minus infinity on real data where it occurs.
    - A level EM drove to almost zero gets m = `M_FLOOR`: strong evidence against, not a veto.
    """
    changed = []
    for comparison in splink_model["comparisons"]:
        by_label = {level.get("label_for_charts"): level for level in comparison["comparison_levels"]}
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level") or level.get("fix_m_probability"):
                continue
            m, u = level.get("m_probability"), level.get("u_probability")
            label = f"{comparison['output_column_name']}: {level.get('label_for_charts')}"
            parent = by_label.get(LEVEL_FALLBACKS.get(level.get("label_for_charts")), {})
            if m is None and u is None and parent.get("m_probability") and parent.get("u_probability"):
                level["m_probability"], level["u_probability"] = parent["m_probability"], parent["u_probability"]
                changed.append(f"{label} (never observed: as '{parent['label_for_charts']}')")
            elif m is None and u is None and level.get("sql_condition", "").strip().upper() != "ELSE":
                level["m_probability"] = level["u_probability"] = M_FLOOR
                changed.append(f"{label} (never observed: neutral)")
            elif u and (m is None or m <= 0):
                level["m_probability"] = u
                changed.append(f"{label} (no matches seen: neutral)")
            elif m is not None and 0 < m < M_FLOOR:
                level["m_probability"] = M_FLOOR
                changed.append(f"{label} (m {m:.2g} raised to {M_FLOOR:g})")
    return splink_model, changed


def predict_pairs(standardised: pd.DataFrame, model: MatcherModel, floor: float = 0.01, linker=None,
                  engine: str = "duckdb", spark_master: str | None = None,
                  scored: ScoredPairs | None = None) -> pd.DataFrame:
    """Score every blocked pair of `standardised` with `model`; pairs with probability >= floor.

    Returns `record_id_l, record_id_r, match_weight, match_probability` (ids as in the input,
    the lower id on the left as Splink orders them). `linker` reuses one already built on
    these records (as `Matcher.fit` leaves it); otherwise one is built on `engine`. `scored`:
    the fit's own predictions (`Matcher.predictions_`), re-weighted to the model's prior
    instead of predicted again.
    """
    return scored_pairs(linker or linker_for(standardised, model.splink, engine, spark_master), floor,
                        scored=scored, prior=model.splink["probability_two_random_records_match"])


def scored_pairs(linker, floor: float = 0.01, scored: ScoredPairs | None = None, prior: float | None = None) -> pd.DataFrame:
    """Run the linker's `predict()` (or re-weight `scored` to `prior`) and return its pairs in Briefing's column names."""
    if scored is not None and (floor <= 0 or logit2(floor) - logit2(prior) < scored.lowest_bits):
        scored.table.drop_table_from_database_and_remove_from_cache()
        scored = None  # the floor asks for pairs the fit did not keep: predict again
    if scored is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = predict(linker, threshold_match_probability=floor)
        columns, where = "match_weight, match_probability", ""
    else:
        table = scored.table
        weight = f"(match_weight + {logit2(prior) - logit2(scored.prior)!r})"
        columns = f"{weight} AS match_weight, 1.0 / (1.0 + pow(2.0, -{weight})) AS match_probability"
        where = f"WHERE {weight} >= {logit2(floor)!r}"
    sql = f"""
        SELECT unique_id_l AS record_id_l, unique_id_r AS record_id_r, {columns}
        FROM {table.physical_name} {where}
    """
    pairs = linker.misc.query_sql(sql, output_type="pandas")
    table.drop_table_from_database_and_remove_from_cache()
    return pairs
