"""Evaluate Splink comparison-level SQL natively, vectorised over candidate pairs.

The real-time resolver must give exactly the answers Splink's `predict()` gives, without
generating SQL per query. Rather than re-implementing each comparison by hand (and drifting
from the trained model), every level's `sql_condition` is parsed once with sqlglot (the parser
Splink itself uses) and compiled into numpy operations with DuckDB's semantics: SQL
three-valued logic, NULL propagation, `list_intersect` of a NULL list being empty, and the
same string metrics (rapidfuzz's Jaro-Winkler and Damerau-Levenshtein are the algorithms
DuckDB uses; tests check both against DuckDB itself).

A side (`l` or `r`) is a mapping from column name (without the `_l`/`_r` suffix) to a numpy
object array, `None` for null. Either side may have length 1 (one query) and the other length
k (its candidates): numpy broadcasting does the rest.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import sqlglot
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, Jaro, JaroWinkler, Levenshtein
from sqlglot import exp

Side = Mapping[str, np.ndarray]


class UnsupportedLevelSQL(ValueError):
    """A comparison level uses SQL the native scorer cannot evaluate exactly."""


@dataclass
class Vec:
    """A column of SQL values: `values` (object or float array) with a NULL mask."""

    values: np.ndarray
    null: np.ndarray


@dataclass
class Truth:
    """SQL three-valued logic: `true` and `false` masks; neither set means NULL (unknown)."""

    true: np.ndarray
    false: np.ndarray


class Pairs:
    """The two sides of a batch of pairs, with per-batch caches of null masks and metrics."""

    def __init__(self, left: Side, right: Side, n: int):
        self.sides = {"l": left, "r": right}
        self.n = n
        self.cache: dict[str, Vec | Truth] = {}

    def column(self, name: str) -> Vec:
        vec = self.cache.get(name)
        if vec is None:
            base, side = name[:-2], name[-1]
            try:
                values = self.sides[side][base]
            except KeyError:
                raise UnsupportedLevelSQL(f"column {name!r} is not in the index") from None
            vec = Vec(values, np.equal(values, None))
            self.cache[name] = vec
        return vec


_STRING_METRICS: dict[str, object] = {
    "jaro_winkler_similarity": JaroWinkler.similarity,
    "jaro_similarity": Jaro.similarity,
    "levenshtein": Levenshtein.distance,
    "damerau_levenshtein": DamerauLevenshtein.distance,
}
_SIMILARITIES = (JaroWinkler.similarity, Jaro.similarity)
_COMPARISONS = {exp.EQ: operator.eq, exp.NEQ: operator.ne, exp.GT: operator.gt, exp.GTE: operator.ge,
                exp.LT: operator.lt, exp.LTE: operator.le}


def _string_metric(scorer, a: Vec, b: Vec) -> Vec:
    null = a.null | b.null
    left = np.where(a.null, "", a.values)
    right = np.where(b.null, "", b.values)
    if len(left) == 1:
        values = process.cdist(left, right, scorer=scorer, dtype=np.float64)[0]
    elif len(right) == 1:
        values = process.cdist(right, left, scorer=scorer, dtype=np.float64)[0]
    else:
        values = process.cpdist(left, right, scorer=scorer, dtype=np.float64)
    if scorer in _SIMILARITIES:
        # DuckDB scores two empty strings 0.0 (rapidfuzz: 1.0).
        values = np.where((left == "") & (right == ""), 0.0, values)
    return Vec(values, null)


def _to_float(vec: Vec) -> np.ndarray:
    if vec.values.dtype != object:
        return vec.values.astype(np.float64)
    return np.where(vec.null, 0, vec.values).astype(np.float64)


def _object(values: list, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = values
    return out


class _Compiler:
    """Turns a sqlglot tree into a function of `Pairs`, node by node."""

    def __init__(self, sql: str):
        self.sql = sql

    def fail(self, node: exp.Expression) -> UnsupportedLevelSQL:
        return UnsupportedLevelSQL(f"cannot evaluate {node.sql('duckdb')!r} in level {self.sql!r}")

    def truth(self, node: exp.Expression) -> Callable[[Pairs], Truth]:
        if isinstance(node, exp.Paren):
            return self.truth(node.this)
        if isinstance(node, (exp.And, exp.Or)):
            a, b = self.truth(node.left), self.truth(node.right)
            if isinstance(node, exp.And):
                return lambda p: _and(a(p), b(p))
            return lambda p: _or(a(p), b(p))
        if isinstance(node, exp.Not):
            inner = self.truth(node.this)
            return lambda p: (lambda t: Truth(t.false, t.true))(inner(p))
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            value = self.value(node.this)
            return lambda p: (lambda v: Truth(v.null, ~v.null))(value(p))
        if type(node) in _COMPARISONS:
            return self.comparison(node)
        if isinstance(node, exp.ArrayContains):
            return self.array_contains(node)
        if isinstance(node, exp.Boolean):
            flag = node.this
            return lambda p: Truth(np.full(p.n, flag), np.full(p.n, not flag))
        raise self.fail(node)

    def comparison(self, node: exp.Expression) -> Callable[[Pairs], Truth]:
        op = _COMPARISONS[type(node)]
        a, b = self.value(node.left), self.value(node.right)
        ordered = op not in (operator.eq, operator.ne)

        def run(p: Pairs) -> Truth:
            x, y = a(p), b(p)
            null = x.null | y.null
            if not ordered and x.values.dtype == object and y.values.dtype == object:
                result = op(x.values, y.values)
            else:
                result = op(_to_float(x), _to_float(y))
            result = np.asarray(result, dtype=bool)
            return Truth(result & ~null, ~result & ~null)
        return run

    def array_contains(self, node: exp.Expression) -> Callable[[Pairs], Truth]:
        lists, item = self.value(node.this), self.value(node.expression)

        def run(p: Pairs) -> Truth:
            xs, it = lists(p), item(p)
            null = xs.null | it.null
            if len(it.values) == 1 and len(xs.values) > 1:      # one query value against candidates' lists
                e = it.values[0]
                hit = np.fromiter((e is not None and v is not None and e in v for v in xs.values), dtype=bool, count=len(xs.values))
            elif len(xs.values) == 1 and len(it.values) > 1:    # a query list against candidates' values
                fixed = set(xs.values[0] or ())
                hit = np.fromiter((e in fixed for e in it.values), dtype=bool, count=len(it.values)) & ~null
            else:
                vals, elems, nulls = np.broadcast_arrays(xs.values, it.values, null)
                hit = np.fromiter((not nl and e in v for v, e, nl in zip(vals, elems, nulls)), dtype=bool, count=vals.size)
            return Truth(hit, ~hit & ~null)
        return run

    def value(self, node: exp.Expression) -> Callable[[Pairs], Vec]:
        if isinstance(node, exp.Paren):
            return self.value(node.this)
        if isinstance(node, exp.Column):
            name = node.name
            if name[-2:] not in ("_l", "_r") or node.table:
                raise self.fail(node)
            return lambda p: p.column(name)
        if isinstance(node, exp.Literal):
            literal = node.this if node.is_string else (int(node.this) if node.this.lstrip("-").isdigit() else float(node.this))
            const = Vec(np.array([literal], dtype=object if node.is_string else np.float64), np.zeros(1, dtype=bool))
            return lambda p: const
        if isinstance(node, exp.Null):
            const = Vec(np.array([None], dtype=object), np.ones(1, dtype=bool))
            return lambda p: const
        if isinstance(node, exp.Neg):
            inner = self.value(node.this)
            return lambda p: (lambda v: Vec(-_to_float(v), v.null))(inner(p))
        if isinstance(node, (exp.Sub, exp.Add)):
            op = operator.sub if isinstance(node, exp.Sub) else operator.add
            a, b = self.value(node.left), self.value(node.right)
            return lambda p: (lambda x, y: Vec(op(_to_float(x), _to_float(y)), x.null | y.null))(a(p), b(p))
        if isinstance(node, exp.Abs):
            inner = self.value(node.this)
            return lambda p: (lambda v: Vec(np.abs(_to_float(v)), v.null))(inner(p))
        if isinstance(node, exp.ArraySize):
            if _function_name(node.this) in ("list_intersect", "array_intersect"):
                return self.intersection_size(node.this)
            inner = self.value(node.this)
            return lambda p: (lambda v: Vec(np.array([0 if n else len(x) for x, n in zip(v.values, v.null)], dtype=np.float64), v.null))(inner(p))
        name = _function_name(node)
        if name in _STRING_METRICS:
            return self.cached(node, self.metric(node, _STRING_METRICS[name]))
        if name in ("list_intersect", "array_intersect"):
            return self.intersect(node)
        raise self.fail(node)

    def cached(self, node: exp.Expression, fn: Callable[[Pairs], Vec]) -> Callable[[Pairs], Vec]:
        key = node.sql("duckdb")

        def run(p: Pairs) -> Vec:
            hit = p.cache.get(key)
            if hit is None:
                hit = p.cache[key] = fn(p)
            return hit
        return run

    def metric(self, node: exp.Expression, scorer) -> Callable[[Pairs], Vec]:
        args = _arguments(node)
        if len(args) != 2:
            raise self.fail(node)
        a, b = self.value(args[0]), self.value(args[1])
        return lambda p: _string_metric(scorer, a(p), b(p))

    def intersection_size(self, node: exp.Expression) -> Callable[[Pairs], Vec]:
        """array_length(list_intersect(a, b)) without building the lists: distinct common non-null elements."""
        args = _arguments(node)
        if len(args) != 2:
            raise self.fail(node)
        a, b = self.value(args[0]), self.value(args[1])

        def run(p: Pairs) -> Vec:
            x, y = a(p), b(p)
            if len(x.values) == 1 or len(y.values) == 1:
                one, many = (x.values[0], y.values) if len(x.values) == 1 else (y.values[0], x.values)
                fixed = set(one or ()) - {None}
                counts = [0 if v is None else len(fixed.intersection(v)) for v in many]
            else:
                counts = [0 if u is None or v is None else len(set(u).intersection(v) - {None}) for u, v in zip(x.values, y.values)]
            n = max(len(x.values), len(y.values))
            return Vec(np.array(counts, dtype=np.float64), np.zeros(n, dtype=bool))
        return run

    def intersect(self, node: exp.Expression) -> Callable[[Pairs], Vec]:
        args = _arguments(node)
        if len(args) != 2:
            raise self.fail(node)
        a, b = self.value(args[0]), self.value(args[1])

        def run(p: Pairs) -> Vec:
            x, y = a(p), b(p)
            xs, ys = np.broadcast_arrays(x.values, y.values)
            # DuckDB: list_intersect with a NULL list is the empty list, not NULL.
            both = [[] if u is None or v is None else sorted(set(u) & set(v) - {None}) for u, v in zip(xs, ys)]
            return Vec(_object(both, len(both)), np.zeros(len(both), dtype=bool))
        return run


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.JarowinklerSimilarity):
        return "jaro_winkler_similarity"
    if isinstance(node, exp.Levenshtein):
        return "levenshtein"
    if isinstance(node, exp.ArrayIntersect):
        return "array_intersect"
    return type(node).__name__.lower()


def _arguments(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    if isinstance(node, exp.ArrayIntersect):
        return list(node.expressions)
    return [a for a in (node.this, node.expression) if a is not None]


def _and(a: Truth, b: Truth) -> Truth:
    return Truth(a.true & b.true, a.false | b.false)


def _or(a: Truth, b: Truth) -> Truth:
    return Truth(a.true | b.true, a.false & b.false)


def compile_condition(sql: str) -> Callable[[Pairs], np.ndarray]:
    """Compile one level's `sql_condition` into a function returning, per pair, whether it is TRUE.

    Raises `UnsupportedLevelSQL` (naming the construct) for SQL this module cannot evaluate
    with DuckDB's exact semantics, so an unsupported model fails at load, never silently.
    """
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise UnsupportedLevelSQL(f"cannot parse level {sql!r}: {exc}") from None
    truth = _Compiler(sql).truth(tree)

    def run(p: Pairs) -> np.ndarray:
        true = truth(p).true
        return true if true.shape == (p.n,) else np.broadcast_to(true, (p.n,))
    return run


def columns_used(sql: str) -> set[str]:
    """Base column names (without `_l` / `_r`) a condition reads."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    return {c.name[:-2] for c in tree.find_all(exp.Column) if c.name[-2:] in ("_l", "_r")}
