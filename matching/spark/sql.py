"""DuckDB SQL -> Spark SQL with DuckDB's semantics: how a Briefing model (always DuckDB SQL) runs on Spark.

`spark_settings` translates each comparison level and blocking rule with sqlglot (`spark_sql`) and
replaces the functions whose Spark counterparts differ from DuckDB's:

- `jaro_winkler_similarity` / `jaro_similarity`: the Jaro-Winkler of Splink's Spark jar (Apache
  commons-text) is not DuckDB's (DuckDB embeds RapidFuzz's: ACOSTA ~ COATS is 0.811 there, 0.778 in
  the jar; 467 of 715,765 name and street pairs of a synthetic county fall on different sides of
  0.8). On Spark they are `briefing_jaro_winkler` / `briefing_jaro`, a Java UDF with DuckDB's
  algorithm and arithmetic (`matching.spark.jaro_udf`); if it could not be built, the same algorithm
  written in Spark SQL (`jaro_sql`, higher-order functions: exact too, but 1.4 million pairs took
  74 s against 17 s with the UDF, reading the results included). Both equal DuckDB's to the last
  bit on 1.4 million pairs, including DuckDB's fused multiply-add in the Winkler boost on CPUs that
  have one (`matching.duckdb_backend.duckdb_fuses_winkler`).
- `damerau_levenshtein` (from Splink's jar: the same distances as DuckDB's on those pairs) and the
  similarity functions return NULL when either side is NULL, as DuckDB's do (the jar gives 100 and
  0.0).
- `list_intersect` becomes `array_intersect`; `array_length` becomes `size` (sqlglot), with
  `size(NULL)` NULL (`spark.sql.legacy.sizeOfNull=false`, `matching.spark.session.spark_conf`) as in DuckDB.
"""

from __future__ import annotations

import copy

import sqlglot
from sqlglot import exp

from matching.duckdb_backend import CANONICAL_DIALECT, duckdb_fuses_winkler
from matching.spark.jaro_udf import jaro_udf_registered


def jaro_sql(a: str, b: str, winkler: bool) -> str:
    """DuckDB's Jaro (and Jaro-Winkler: prefix weight 0.1, up to 4 characters, boost above 0.7) in Spark SQL.

    DuckDB embeds RapidFuzz's algorithm; this is the same arithmetic in the same order, so a
    threshold such as `>= 0.8` falls on the same side. Matches are found greedily: each character
    of `a` takes the first unused equal character of `b` within max(len)/2 - 1 positions (used
    characters of `b` are masked with chr(1), so `locate` finds the next free one); transpositions
    are half the mismatches between the matched characters of `a` and of `b` in order, rounded
    down. The Winkler boost is fused (one rounding) where this machine's DuckDB fuses it
    (`duckdb_fuses_winkler`). NULL when either side is NULL, as in DuckDB.
    """
    la, lb = f"length({a})", f"length({b})"
    jaro = _jaro_expression(a, b, la, lb)
    if winkler:
        jaro = _winkler_expression(a, b, la, lb, jaro)
    return (f"CASE WHEN {a} IS NULL OR {b} IS NULL THEN NULL "
            f"WHEN {la} = 0 OR {lb} = 0 THEN CAST(0.0 AS DOUBLE) "
            f"WHEN {la} = 1 AND {lb} = 1 THEN IF({a} = {b}, CAST(1.0 AS DOUBLE), CAST(0.0 AS DOUBLE)) "
            f"ELSE {jaro} END")


def _jaro_expression(a: str, b: str, la: str, lb: str) -> str:
    """The Jaro similarity of two non-empty strings as one `aggregate` over the characters of `a`."""
    bound = f"(CAST(greatest({la}, {lb}) / 2 AS INT) - 1)"
    ch = f"substr({a}, i + 1, 1)"
    # State: `f` is `b` with its matched characters masked by chr(1) (so `locate` finds the next free one),
    # `mb` holds `b`'s matched characters in place and chr(2) elsewhere, `ma` `a`'s matched characters in order.
    found = f"locate({ch}, acc.f, greatest(0, i - {bound}) + 1)"
    step = (f"IF({found} > 0 AND {found} <= i + {bound} + 1, named_struct("
            f"'f', overlay(acc.f PLACING chr(1) FROM {found} FOR 1), "
            f"'mb', overlay(acc.mb PLACING {ch} FROM {found} FOR 1), 'ma', concat(acc.ma, {ch})), acc)")
    start = f"named_struct('f', {b}, 'mb', repeat(chr(2), {lb}), 'ma', '')"
    common = "CAST(length(acc.ma) AS DOUBLE)"
    half_mismatches = ("size(filter(sequence(1, length(acc.ma)), "
                       "k -> substr(acc.ma, k, 1) <> substr(replace(acc.mb, chr(2), ''), k, 1)))")
    transpositions = f"CAST(FLOOR({half_mismatches} / 2) AS DOUBLE)"
    sim = (f"(({common} / CAST({la} AS DOUBLE) + {common} / CAST({lb} AS DOUBLE)) "
           f"+ ({common} - {transpositions}) / {common}) / CAST(3.0 AS DOUBLE)")
    finish = f"acc -> IF(length(acc.ma) = 0, CAST(0.0 AS DOUBLE), {sim})"
    return f"aggregate(sequence(0, {la} - 1), {start}, (acc, i) -> {step}, {finish})"


def _winkler_expression(a: str, b: str, la: str, lb: str, jaro: str) -> str:
    """The Winkler boost on `jaro`: prefix weight 0.1 over up to 4 common leading characters, above 0.7."""
    prefix = (f"aggregate(sequence(1, least(4, {la}, {lb})), 0, "
              f"(n, k) -> IF(n = k - 1 AND substr({a}, k, 1) = substr({b}, k, 1), n + 1, n))")
    weight = f"CAST({prefix} AS DOUBLE) * CAST(0.1 AS DOUBLE)"
    if duckdb_fuses_winkler():
        boosted = f"CAST(reflect('java.lang.Math', 'fma', {weight}, CAST(1.0 AS DOUBLE) - s, s) AS DOUBLE)"
    else:
        boosted = f"s + ({weight}) * (CAST(1.0 AS DOUBLE) - s)"
    return (f"element_at(transform(array({jaro}), s -> IF(s > CAST(0.7 AS DOUBLE), "
            f"least({boosted}, CAST(1.0 AS DOUBLE)), s)), 1)")


def _null_if_either_null(a: str, b: str, call: str) -> str:
    return f"CASE WHEN {a} IS NULL OR {b} IS NULL THEN NULL ELSE {call} END"


def _args(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    return [node.this, node.expression]


def _to_spark(node: exp.Expression) -> exp.Expression:
    name = node.name.lower() if isinstance(node, exp.Anonymous) else None
    if isinstance(node, exp.JarowinklerSimilarity) or name in ("jaro_winkler_similarity", "jaro_similarity"):
        a, b = (f"({arg.sql(dialect='spark')})" for arg in _args(node)[:2])
        winkler = name != "jaro_similarity"
        if jaro_udf_registered():
            return sqlglot.parse_one(f"briefing_jaro{'_winkler' if winkler else ''}({a}, {b})", read="spark")
        return sqlglot.parse_one(jaro_sql(a, b, winkler=winkler), read="spark")
    if name == "damerau_levenshtein":
        a, b = (f"({arg.sql(dialect='spark')})" for arg in _args(node)[:2])
        return sqlglot.parse_one(_null_if_either_null(a, b, f"damerau_levenshtein({a}, {b})"), read="spark")
    if name in ("list_intersect", "array_intersect"):
        return exp.Anonymous(this="array_intersect", expressions=list(node.expressions))
    return node


def spark_sql(condition: str) -> str:
    """One DuckDB SQL condition (a comparison level or blocking rule) in Spark SQL with DuckDB's semantics."""
    if condition.strip().upper() == "ELSE":
        return condition
    tree = sqlglot.parse_one(condition, read=CANONICAL_DIALECT)
    return tree.transform(_to_spark).sql(dialect="spark")


def spark_settings(canonical: dict) -> dict:
    """A copy of `canonical` (a settings dict in DuckDB SQL, `matching.engine.canonical_settings`) with every
    SQL condition in Spark SQL (DuckDB semantics kept: see the module docstring)."""
    out = copy.deepcopy(canonical)
    out["sql_dialect"] = "spark"
    for comparison in out.get("comparisons", []):
        for level in comparison["comparison_levels"]:
            level["sql_condition"] = spark_sql(level["sql_condition"])
    rules = []
    for rule in out.get("blocking_rules_to_generate_predictions", []):
        if isinstance(rule, str):
            rule = {"blocking_rule": rule}
        rules.append({**rule, "blocking_rule": spark_sql(rule["blocking_rule"]), "sql_dialect": "spark"})
    out["blocking_rules_to_generate_predictions"] = rules
    return out
