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
  (`parse_model`: the native scorer, `matching.scorer`);
- Splink's u estimation by random sampling with its per-comparison queries run side by side on DuckDB
  (`estimate_u_side_by_side`: training, `matching.train`);
- Splink's `predict()` with its blocked pairs found by a cheaper query on DuckDB (`predict`: `matching.train`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass
from typing import Mapping

import sqlglot
from sqlglot import exp
from splink import DuckDBAPI, SettingsCreator
from splink.internals.blocking import ExplodingBlockingRule
from splink.internals.blocking_rule_creator import BlockingRuleCreator
from splink.internals.blocking_rule_creator_utils import to_blocking_rule_creator
from splink.internals.chunking import _blocked_pairs_cache_key
from splink.internals.comparison_creator import ComparisonCreator
from splink.internals.constants import LEVEL_NOT_OBSERVED_TEXT
from splink.internals.estimate_u import (
    _accumulate_u_counts_from_chunk_and_check_min_count,
    _MUCountsAccumulator,
    _rows_needed_for_n_pairs,
)
from splink.internals.expectation_maximisation import compute_proportions_for_new_parameters
from splink.internals.m_u_records_to_parameters import (
    append_u_probability_to_comparison_level_trained_probabilities,
    m_u_records_to_lookup_dict,
)
from splink.internals.misc import ascii_uid, prob_to_match_weight
from splink.internals.pipeline import CTEPipeline
from splink.internals.settings import Settings
from splink.internals.splink_dataframe import SplinkDataFrame
from splink.internals.unique_id_concat import _composite_unique_id_from_nodes_sql
from splink.internals.vertically_concatenate import enqueue_df_concat

__all__ = [
    "BlockingRuleCreator", "ComparisonCreator", "LevelParameters", "ParsedModel", "TermFrequencyAdjustment",
    "blocking_rule_creator", "comparison_input_columns", "estimate_u_side_by_side", "linker_prior", "parse_model",
    "predict", "set_level_parameters", "set_linker_prior",
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


#: Splink's own default: a level seen fewer times than this in the sample is reported as rarely observed.
U_MIN_COUNT_PER_LEVEL = 100


def estimate_u_side_by_side(linker, max_pairs: float, seed: int, workers: int | None = None) -> None:
    """Splink's `linker.training.estimate_u_using_random_sampling(max_pairs, seed, num_chunks=1)` for a DuckDB
    deduplication, with its per-comparison count queries run `workers` at a time (default: as many as DuckDB's
    `threads` setting allows).

    Why: Splink counts each comparison's levels over the sample's pairs in a query of its own, one after the
    other, and DuckDB runs each on one core (it parallelises a scan by row group, and the sample of a thousand
    records is one). Here the same queries, on the same sample, run on cursors of the same database in
    parallel: the same u to the last bit (`tests/test_u_estimate.py` holds them equal to Splink's own call) in
    about half the wall time on two cores. Any other engine or link type, or a single worker, is handed to
    Splink's own call unchanged.
    """
    db_api = linker._db_api
    if isinstance(db_api, DuckDBAPI) and workers is None:
        [(threads,)] = db_api.duckdb_con.execute("SELECT current_setting('threads')").fetchall()
        workers = int(threads)
    if not isinstance(db_api, DuckDBAPI) or linker._settings_obj._link_type != "dedupe_only" or workers < 2:
        linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed, num_chunks=1)
        return
    original = linker._settings_obj
    training = deepcopy(linker)             # as Splink's own estimate: no matching columns, no tf adjustments
    settings = training._settings_obj
    settings._retain_matching_columns = False
    settings._retain_intermediate_calculation_columns = False
    for comparison in settings.comparisons:
        for level in comparison.comparison_levels:
            level._tf_adjustment_column = None
    sample = _u_sample(training, max_pairs, seed)
    uid_columns = settings.column_info_settings.unique_id_input_columns
    blocking_uids = [name for column in uid_columns for name in column.l_r_names_as_l_r]

    def counts(comparison) -> _MUCountsAccumulator:
        accumulator = _MUCountsAccumulator(comparison)
        cv_cols = Settings.columns_to_select_for_comparison_vector_values(
            unique_id_input_columns=uid_columns, comparisons=[comparison], retain_matching_columns=False,
            additional_columns_to_retain=[])
        with db_api.duckdb_con.cursor() as cursor:         # a connection of its own to the same database
            _accumulate_u_counts_from_chunk_and_check_min_count(
                db_api=DuckDBAPI(cursor), df_sample=sample, split_sqls=[],
                input_tablename_sample_l=sample.templated_name, input_tablename_sample_r=sample.templated_name,
                link_type="dedupe_only",
                source_dataset_input_column=settings.column_info_settings.source_dataset_input_column,
                unique_id_input_column=settings.column_info_settings.unique_id_input_column, comparison=comparison,
                blocking_cols=blocking_uids + comparison._columns_to_select_for_blocking(), cv_cols=cv_cols,
                rhs_chunk_num=1, rhs_num_chunks=1, counts_accumulator=accumulator,
                min_count_per_level=U_MIN_COUNT_PER_LEVEL)
        return accumulator

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            accumulated = list(pool.map(counts, settings.comparisons))
    finally:
        sample.drop_table_from_database_and_remove_from_cache()
    for accumulator, comparison in zip(accumulated, original.comparisons):
        _apply_u(db_api, accumulator.to_record_list(), comparison)
    linker._populate_m_u_from_trained_values()


def _u_sample(training, max_pairs: float, seed: int):
    """The records Splink samples to estimate u (`estimate_u_values`), as a table: about the square root of twice
    `max_pairs` records, drawn with `seed`."""
    db_api = training._db_api
    pipeline = enqueue_df_concat(training, CTEPipeline())
    pipeline.enqueue_sql("select count(*) as count from __splink__df_concat", "__splink__df_concat_count")
    count = db_api.sql_pipeline_to_splink_dataframe(pipeline)
    total = count.as_record_list()[0]["count"]
    count.drop_table_from_database_and_remove_from_cache()
    proportion = min(1.0, _rows_needed_for_n_pairs(max_pairs) / total)
    uid_columns = training._settings_obj.column_info_settings.unique_id_input_columns
    pipeline = enqueue_df_concat(training, CTEPipeline())
    pipeline.enqueue_sql(f"select * from __splink__df_concat where 1=1 "
                         f"{training._proportion_sample_sql(proportion, uid_columns, seed=seed)}",
                         "__splink__df_concat_sample")
    return db_api.sql_pipeline_to_splink_dataframe(pipeline)


def _apply_u(db_api, counted: list[dict], comparison) -> None:
    """Set one comparison's u from its counted levels, as Splink's `estimate_u_values` does: a level never seen
    in the sample is marked not observed, not given u = 0."""
    table = db_api.register(counted, table_name=f"__splink__aggregated_m_u_counts_{ascii_uid(8)}")
    records = compute_proportions_for_new_parameters(table)
    table.drop_table_from_database_and_remove_from_cache(force_non_splink_table=True)
    seen = {int(row["comparison_vector_value"]): float(row["u_count"]) for row in counted}
    for record in records:
        if seen.get(int(record["comparison_vector_value"]), 0.0) == 0.0:
            record["u_probability"] = LEVEL_NOT_OBSERVED_TEXT
    lookup = m_u_records_to_lookup_dict(records)
    for level in comparison._comparison_levels_excluding_null:
        append_u_probability_to_comparison_level_trained_probabilities(
            level, lookup, comparison.output_column_name, "estimate u by random sampling")


def predict(linker, **threshold) -> SplinkDataFrame:
    """`linker.inference.predict(**threshold)`: the same pairs and scores. On DuckDB, for a deduplication of one
    table whose blocking rules are all plain joins, the blocked pairs are found first by a cheaper query of the
    same rows, and dropped once scored.

    Why: Splink keeps each pair once by joining the records afresh for each rule and dropping the pairs an
    earlier rule found (`AND NOT (rule 1 OR rule 2 ...)`), so every later join carries the columns of every
    earlier rule and tests them all: half the blocking's time on 57,260 records and 25 rules. Here each
    rule's join keeps only the two ids, and a pair found by several rules keeps the first one's number as its
    match key, as Splink's does (`tests/test_blocked_pairs.py`). Record ids are unique (`record_checks`): Splink
    would repeat a pair of duplicated ids, this query would not.
    """
    settings = linker._settings_obj
    rules = settings._blocking_rules_to_generate_predictions
    cache, key = linker._intermediate_table_cache, _blocked_pairs_cache_key()
    if (not isinstance(linker._db_api, DuckDBAPI) or settings._link_type != "dedupe_only" or not rules
            or len(linker._input_tables_dict) != 1 or key in cache
            or any(isinstance(rule, ExplodingBlockingRule) for rule in rules)):
        return linker.inference.predict(**threshold)
    blocked = cache[key] = _blocked_pairs(linker, rules)
    try:
        return linker.inference.predict(**threshold)
    finally:
        blocked.drop_table_from_database_and_remove_from_cache(force_non_splink_table=True)


#: Left records per grouping of the blocked pairs: a file of a million records is grouped in four stretches or more,
#: so that no hash table of the pairs holds more than a quarter of them (all at once took the 1M link from 6 to 8 GB).
RECORDS_PER_GROUPING = 250_000
#: Ordered pairs per grouping, on average, as `_pairs_upper_bound` counts them (a pair of a rule on one column twice):
#: the rules of a model trained on a tenth of the records find more pairs per record than rules chosen within the
#: pair budget, and a quarter of a million records per grouping was not enough for them (BENCHMARKS.md, issue 18,
#: "the committed model's link held to its memory").
PAIRS_PER_GROUPING = 40_000_000
#: Smaller files are not counted (a few per cent of their link): the pairs of rules within the budget fit one grouping.
COUNT_PAIRS_FROM = 100_000


def _blocked_pairs(linker, rules) -> SplinkDataFrame:
    """Splink's `__splink__blocked_id_pairs` of a DuckDB deduplication of one table: (match_key, join_key_l,
    join_key_r), each pair once, its match key the first rule that finds it (as text, as Splink writes it).
    Grouped a stretch of left records at a time (`_stretches`), each stretch a hash of the left id."""
    source = input_table(linker).physical_name
    uid_columns = linker._settings_obj.column_info_settings.unique_id_input_columns
    left, right = (_composite_unique_id_from_nodes_sql(uid_columns, side) for side in ("l", "r"))
    connection = linker._db_api.duckdb_con
    [(records,)] = connection.execute(f"SELECT count(*) FROM {source}").fetchall()
    counted = _pairs_upper_bound(connection, source, rules) if records >= COUNT_PAIRS_FROM else None
    stretches = _stretches(records, counted)
    physical = f"__splink__blocked_id_pairs_{ascii_uid(9)}"
    try:
        for stretch in range(stretches):
            where = f"{left} < {right}" + (f" AND hash({left}) % {stretches} = {stretch}" if stretches > 1 else "")
            joins = " UNION ALL ".join(
                f"SELECT {number} AS match_key, {left} AS join_key_l, {right} AS join_key_r "
                f"FROM {source} AS l INNER JOIN {source} AS r ON ({rule.blocking_rule_sql}) WHERE {where}"
                for number, rule in enumerate(rules))
            # The smallest rule number, as a number (as text, rule 10 would come before rule 2), then as text.
            grouped = (f"SELECT CAST(min(match_key) AS VARCHAR) AS match_key, join_key_l, join_key_r "
                       f"FROM ({joins}) GROUP BY join_key_l, join_key_r")
            connection.execute(f"CREATE TABLE {physical} AS {grouped}" if stretch == 0
                               else f"INSERT INTO {physical} {grouped}")
    except BaseException:
        connection.execute(f"DROP TABLE IF EXISTS {physical}")
        raise
    return linker._db_api.table_to_splink_dataframe("__splink__blocked_id_pairs", physical)


def _stretches(records: int, counted: int | None) -> int:
    """Groupings of the blocked pairs: a stretch per `RECORDS_PER_GROUPING` left records, more if `counted` (ordered
    pairs, or None: not counted) would put over `PAIRS_PER_GROUPING` in one on average."""
    by_pairs = 0 if counted is None else -(-counted // PAIRS_PER_GROUPING)
    return max(1, -(-records // RECORDS_PER_GROUPING), by_pairs)


def _pairs_upper_bound(connection, source: str, rules) -> int | None:
    """The ordered pairs the rules' joins give before any is dropped, or more: each rule's counted from the value
    counts of its equality keys (`_equality_keys`: Splink's pre-filter count), so a pair of a rule on one column counts
    twice and each record once with itself. None if a rule has no such keys (an OR, a function of both records):
    its pairs cannot be counted so, and the records alone then size the groupings."""
    total = 0
    for rule in rules:
        keys = _equality_keys(rule.blocking_rule_sql)
        if keys is None:
            return None
        names = ", ".join(f"k{i}" for i in range(len(keys)))
        left = ", ".join(f"{l_key} AS k{i}" for i, (l_key, _) in enumerate(keys))
        right = ", ".join(f"{r_key} AS k{i}" for i, (_, r_key) in enumerate(keys))
        [(ordered,)] = connection.execute(
            f"SELECT coalesce(sum(count_l * count_r), 0) FROM "
            f"(SELECT {left}, count(*) AS count_l FROM {source} GROUP BY ALL) "
            f"JOIN (SELECT {right}, count(*) AS count_r FROM {source} GROUP BY ALL) USING ({names})").fetchall()
        total += int(ordered)
    return total


def _equality_keys(rule_sql: str) -> list[tuple[str, str]] | None:
    """The (left record's, right record's) SQL of each equality of a rule `A = B AND C ...` whose sides read one
    record each (`equality_sides`). Other terms of the conjunction only filter its pairs and are left out; None for a
    rule with no such equality, or not a conjunction (an OR)."""
    sides = [found for found in map(equality_sides, rule_terms(rule_sql) or []) if found is not None]
    return [tuple(_without_table(side).sql(dialect="duckdb") for side in pair) for pair in sides] or None


def rule_terms(rule_sql: str) -> list[exp.Expression] | None:
    """The terms of a blocking rule's conjunction, parentheses dropped (a rule that is no AND is its one term); None
    if the SQL does not parse."""
    try:
        tree = sqlglot.parse_one(rule_sql, read="duckdb").unnest()
    except sqlglot.errors.ParseError:
        return None
    return [term.unnest() for term in (tree.flatten() if isinstance(tree, exp.And) else [tree])]


def equality_sides(term: exp.Expression) -> tuple[exp.Expression, exp.Expression] | None:
    """(the left record's side, the right record's side) of an equality whose sides read one record each, `l` and
    `r` (`l.a = r.b`, `substr(r.a, 1, 2) = substr(l.a, 1, 2)`); None for any other term."""
    if not isinstance(term, exp.EQ):
        return None
    sides = {}
    for side in (term.left, term.right):
        tables = {column.table for column in side.find_all(exp.Column)}
        sides[tables.pop() if len(tables) == 1 else None] = side
    return (sides["l"], sides["r"]) if set(sides) == {"l", "r"} else None


def _without_table(expression: exp.Expression) -> exp.Expression:
    copy = expression.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", None)
    return copy
