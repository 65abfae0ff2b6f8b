"""Every use of Splink's internals (`splink.internals.*`, private attributes), in one place.

Briefing uses Splink's public API (`splink.Linker`, `SettingsCreator`, `block_on`, the comparison
libraries) where it can. A few things it needs have no public API in Splink 5, and they are all
here, so that a Splink upgrade touches this one file:

- the creator types of comparisons and blocking rules (`ComparisonCreator`, `BlockingRuleCreator`)
  and a blocking rule from DuckDB SQL (`blocking_rule_creator`);
- the columns a comparison's levels read (`comparison_input_columns`: EM round choice, `matching.train`);
- reading and setting a linker's match prior while training (`linker_prior`, `set_linker_prior`), and its
  levels' m and u once training has repaired them (`set_level_parameters`);
- a frame registered as a table for `predict_between`, and the linker's input table (`register_table`,
  `input_table`: the evaluations that time Splink's own real-time path);
- a trained model's parameters as Splink itself parses them, with its clamping and defaults
  (`parse_model`: the native scorer, `matching.scorer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from splink import SettingsCreator
from splink.internals.blocking_rule_creator import BlockingRuleCreator
from splink.internals.blocking_rule_creator_utils import to_blocking_rule_creator
from splink.internals.comparison_creator import ComparisonCreator
from splink.internals.misc import prob_to_match_weight

__all__ = [
    "BlockingRuleCreator", "ComparisonCreator", "LevelParameters", "ParsedModel", "TermFrequencyAdjustment",
    "blocking_rule_creator", "comparison_input_columns", "linker_prior", "parse_model", "set_level_parameters",
    "set_linker_prior",
]


def blocking_rule_creator(sql: str) -> BlockingRuleCreator:
    """A Splink blocking rule from a DuckDB SQL condition (`l.x = r.x AND ...`)."""
    return to_blocking_rule_creator({"blocking_rule": sql, "sql_dialect": "duckdb"})


def comparison_input_columns(creator: ComparisonCreator) -> tuple[str, set[str]]:
    """(output column name, the input columns its levels read) of one comparison."""
    comparison = creator.get_comparison("duckdb")
    return comparison.output_column_name, {col.input_name for col in comparison._input_columns_used_by_case_statement}


def linker_prior(linker) -> float:
    """The probability that two random records match, as the linker currently holds it."""
    return linker._settings_obj._probability_two_random_records_match


def register_table(linker, frame, name: str):
    """`frame` (pandas or Arrow) registered as table `name` in the linker's database, as Splink's own tables are:
    the form `predict_between` takes (Splink 5 has no public way to hand it a frame of records)."""
    return linker._db_api.register(frame, table_name=name)


def input_table(linker):
    """The linker's input records as a Splink table (its first, and for Briefing only, input)."""
    return next(iter(linker._input_tables_dict.values()))


def set_linker_prior(linker, prior: float) -> None:
    """Set the linker's match prior (training: the floor when no rule finds a match, then the calibrated prior)."""
    linker._settings_obj._probability_two_random_records_match = prior


def set_level_parameters(linker, splink_model: Mapping) -> None:
    """Give the linker's comparison levels the m and u of `splink_model` (the same comparisons, as `model_json`
    returned them and training then repaired): the linker predicts with that model without being rebuilt."""
    comparisons = linker._settings_obj.comparisons
    if [c.output_column_name for c in comparisons] != [c["output_column_name"] for c in splink_model["comparisons"]]:
        raise ValueError("the model's comparisons are not the linker's")
    for comparison, source in zip(comparisons, splink_model["comparisons"]):
        levels, source_levels = comparison.comparison_levels, source["comparison_levels"]
        if len(levels) != len(source_levels):
            raise ValueError(f"comparison {comparison.output_column_name}: the model's levels are not the linker's")
        for level, values in zip(levels, source_levels):
            if level.is_null_level:
                continue
            level.m_probability = values.get("m_probability")
            level.u_probability = values.get("u_probability")


@dataclass(frozen=True)
class TermFrequencyAdjustment:
    """A level's term-frequency adjustment: column, weight, minimum u, and the u of an exact match."""

    column: str
    weight: float
    minimum_u: float
    u_exact: float


@dataclass(frozen=True)
class LevelParameters:
    """One comparison level as Splink parses it. `match_weight` is None on a null level (never read) or
    where m / u were never trained; `tf` is set only on a non-null, non-ELSE level with an adjustment."""

    label: str
    sql_condition: str
    is_else: bool
    is_null: bool
    match_weight: float | None
    tf: TermFrequencyAdjustment | None = None


@dataclass(frozen=True)
class ParsedModel:
    """A trained Splink model: the prior's match weight and each comparison's (output name, levels)."""

    prior_match_weight: float
    comparisons: tuple[tuple[str, tuple[LevelParameters, ...]], ...]


def parse_model(splink_settings: Mapping) -> ParsedModel:
    """A trained model (settings dict with m / u) parsed by Splink, so clamping and defaults are Splink's."""
    settings = SettingsCreator.from_path_or_dict(dict(splink_settings)).get_settings("duckdb")
    prior = float(prob_to_match_weight(settings._probability_two_random_records_match))
    comparisons = tuple(
        (comparison.output_column_name,
         tuple(_level_parameters(level, comparison.comparison_levels) for level in comparison.comparison_levels))
        for comparison in settings.comparisons
    )
    return ParsedModel(prior, comparisons)


def _level_parameters(level, all_levels) -> LevelParameters:
    is_else = bool(level._is_else_level)
    if level.is_null_level:
        return LevelParameters(level.label_for_charts, level.sql_condition, is_else, True, None)
    weight = level._match_weight
    tf = None
    if weight is not None and level._has_tf_adjustments and level._tf_adjustment_weight and not is_else:
        tf = TermFrequencyAdjustment(
            column=level._tf_adjustment_input_column_name,
            weight=float(level._tf_adjustment_weight),
            minimum_u=float(level._tf_minimum_u_value),
            u_exact=level._u_probability_corresponding_to_exact_match(all_levels),
        )
    return LevelParameters(level.label_for_charts, level.sql_condition, is_else, False, weight, tf)
