"""Evaluate Splink comparison-level SQL natively, vectorised over candidate pairs.

The real-time resolver must give exactly the answers Splink's `predict()` gives, without
generating SQL per query. Rather than re-implementing each comparison by hand (and drifting
from the trained model), every level's `sql_condition` is parsed once with sqlglot (the parser
Splink itself uses) and compiled into numpy operations with DuckDB's semantics: SQL
three-valued logic, NULL propagation, `list_intersect` of a NULL list being empty, two empty
strings having Jaro-Winkler similarity 0, and the same string metrics (rapidfuzz's
Jaro-Winkler and Damerau-Levenshtein are the algorithms DuckDB uses; tests check every level
of the committed model against DuckDB itself).

Values arrive integer-encoded (`matching.encoding`): equality is an integer comparison and
string metrics are computed once per distinct value, not once per pair. A side (`l` or `r`)
maps column names (without `_l`/`_r`) to `Vec`s; one side may have length 1 (the query) and
the other length k (its candidates).
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping, Sequence

import numpy as np
import sqlglot
from rapidfuzz import process
from rapidfuzz.distance import OSA, DamerauLevenshtein, Jaro, JaroWinkler, Levenshtein
from sqlglot import exp

from matching.duckdb_backend import duckdb_fuses_winkler
from matching.encoding import LIST, NUM, STR, Extras, Vec, Vocabulary
from matching.lists import NOT_FROZEN

Side = Mapping[str, Vec]


class UnsupportedLevelSQL(ValueError):
    """A comparison level uses SQL the native scorer cannot evaluate exactly."""


@dataclass
class Truth:
    """SQL three-valued logic: `true` and `false` masks; neither set means NULL (unknown)."""

    true: np.ndarray
    false: np.ndarray


class Pairs:
    """The two sides of a batch of pairs, their vocabulary, and per-batch caches."""

    def __init__(self, left: Side, right: Side, n: int, vocab: Vocabulary, extras: Extras | None = None):
        self.sides = {"l": left, "r": right}
        self.n = n
        self.vocab = vocab
        self.extras = extras or Extras()
        self.cache: dict[str, Vec] = {}
        self._distinct: dict[int, tuple] = {}

    def distinct(self, vec: Vec) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """A candidate-side string column's non-null rows, its distinct codes, the inverse and the decoded
        strings: computed once per batch, shared by every metric and `length` on that column."""
        hit = self._distinct.get(id(vec.values))
        if hit is None:
            rows = np.flatnonzero(~vec.null)
            codes, inverse = np.unique(vec.values[rows], return_inverse=True)
            # `vec` is kept in the entry so its id cannot be reused by another array during this batch
            hit = self._distinct[id(vec.values)] = (rows, codes, inverse, list(self.strings(codes)), vec)
        return hit[:4]

    def column(self, name: str) -> Vec:
        try:
            return self.sides[name[-1]][name[:-2]]
        except KeyError:
            raise UnsupportedLevelSQL(f"column {name!r} is not in the index") from None

    def strings(self, codes: np.ndarray) -> np.ndarray:
        return self.vocab.decode(codes, self.extras)


_STRING_METRICS: dict[str, object] = {
    "jaro_winkler_similarity": JaroWinkler.similarity,
    "jaro_similarity": Jaro.similarity,
    "levenshtein": Levenshtein.distance,
    "damerau_levenshtein": DamerauLevenshtein.distance,
}
_SIMILARITIES = (JaroWinkler.similarity, Jaro.similarity)
#: `damerau_levenshtein(a, b) <= 1` is decided exactly by the optimal string alignment distance (the two
#: differ only from distance 2 on), which rapidfuzz computes three times faster, with an early exit past 1.
_AT_MOST_ONE_EDIT = {"scorer": OSA.distance, "score_cutoff": 1}
COMPARISONS = {exp.EQ: operator.eq, exp.NEQ: operator.ne, exp.GT: operator.gt, exp.GTE: operator.ge,
                exp.LT: operator.lt, exp.LTE: operator.le}


def _per_distinct(a: Vec, b: Vec, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Apply `fn(codes_a, codes_b)` once per distinct non-null (a, b) pair; returns (values, null)."""
    null = a.null | b.null
    x, y = np.broadcast_arrays(a.values, b.values)
    null = np.broadcast_to(null, x.shape)
    out = np.zeros(x.shape, dtype=np.float64)
    rows = np.flatnonzero(~null)
    if len(rows) == 0:
        return out, null
    if len(a.values) == 1 or len(b.values) == 1:         # one query: distinct values of the other side only
        one_left = len(a.values) == 1
        uniq, inverse = np.unique((y if one_left else x)[rows], return_inverse=True)
        fixed = np.full(len(uniq), (a if one_left else b).values[0])
        out[rows] = (fn(fixed, uniq) if one_left else fn(uniq, fixed))[inverse]
        return out, null
    key = x[rows].astype(np.int64) * (1 << 32) + y[rows].astype(np.int64)
    uniq, inverse = np.unique(key, return_inverse=True)
    out[rows] = fn(uniq >> 32, uniq & 0xFFFFFFFF)[inverse]
    return out, null


def _metric(scorer, p: Pairs, a: Vec, b: Vec, **cutoff) -> Vec:
    """A string metric per pair; `cutoff` (rapidfuzz's score_cutoff) only where a comparison allows it."""
    if (len(a.values) == 1) != (len(b.values) == 1) and p.n == max(len(a.values), len(b.values)):
        return _metric_one_query(scorer, p, a, b, cutoff)

    def run(ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
        left, right = p.strings(ca), p.strings(cb)
        values = process.cpdist(left, right, scorer=scorer, dtype=np.float64, **cutoff)
        if scorer is JaroWinkler.similarity:
            values = winkler_as_duckdb(left, right, values)
        if scorer in _SIMILARITIES:
            # DuckDB scores two empty strings 0.0 (rapidfuzz: 1.0).
            empty = p.vocab.find("", p.extras)
            values = np.where((ca == empty) & (cb == empty), 0.0, values)
        return values
    values, null = _per_distinct(a, b, run)
    return Vec(NUM, values, null)


def _metric_one_query(scorer, p: Pairs, a: Vec, b: Vec, cutoff: dict) -> Vec:
    """One query value against its candidates' values: the metric once per distinct candidate value."""
    one_left = len(a.values) == 1
    single, many = (a, b) if one_left else (b, a)
    out = np.zeros(p.n, dtype=np.float64)
    if single.null[0]:
        return Vec(NUM, out, np.ones(p.n, dtype=bool))
    rows, codes, inverse, strings = p.distinct(many)
    if len(codes):
        query = p.strings(single.values[:1])
        # (query, candidate) in the order the SQL names them; the metrics are symmetric all the same
        values = (process.cdist(query, strings, scorer=scorer, dtype=np.float64, **cutoff)[0] if one_left else
                  process.cdist(strings, query, scorer=scorer, dtype=np.float64, **cutoff)[:, 0])
        if scorer is JaroWinkler.similarity:
            queries = [query[0]] * len(strings)
            values = winkler_as_duckdb(*((queries, strings) if one_left else (strings, queries)), values)
        if scorer in _SIMILARITIES and query[0] == "":
            values = np.where(codes == single.values[0], 0.0, values)    # DuckDB: two empty strings score 0.0
        out[rows] = values[inverse]
    return Vec(NUM, out, many.null.copy())


def winkler_as_duckdb(left: Sequence[str], right: Sequence[str], values: np.ndarray) -> np.ndarray:
    """RapidFuzz's Jaro-Winkler similarities with the Winkler boost s + w (1 - s) rounded once, as a
    fused multiply-add, where this machine's DuckDB computes it so (`duckdb_fuses_winkler`): the two
    differ in the last bit for some pairs, which decides a threshold such as `>= 0.92` (exactly 0.92
    for '1484 JOHNSON DR' and '1863 JOHNSON DR' in DuckDB, 0.9199999999999999 in RapidFuzz)."""
    if not duckdb_fuses_winkler():
        return values
    out = values.copy()
    for k in np.flatnonzero(values > 0.7):      # the boost applies only above 0.7, and only raises
        a, b = left[k], right[k]
        prefix = len(os.path.commonprefix([a[:4], b[:4]]))
        sim = Jaro.similarity(a, b)
        if prefix and sim > 0.7:
            out[k] = min(float(Fraction(prefix * 0.1) * Fraction(1.0 - sim) + Fraction(sim)), 1.0)
    return out


def _num(vec: Vec, node: exp.Expression) -> np.ndarray:
    if vec.kind != NUM:
        raise UnsupportedLevelSQL(f"{node.sql('duckdb')!r}: arithmetic on a non-numeric column")
    return np.where(vec.null, 0.0, vec.values)


class LevelCompiler:
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
                def conjunction(p: Pairs) -> Truth:
                    x = a(p)
                    if x.false.all():                 # decided: skip the right-hand side
                        return x
                    y = b(p)
                    return Truth(x.true & y.true, x.false | y.false)
                return conjunction

            def disjunction(p: Pairs) -> Truth:
                x = a(p)
                if x.true.all():
                    return x
                y = b(p)
                return Truth(x.true | y.true, x.false & y.false)
            return disjunction
        if isinstance(node, exp.Not):
            inner = self.truth(node.this)
            return lambda p: (lambda t: Truth(t.false, t.true))(inner(p))
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            value = self.value(node.this)
            return lambda p: (lambda v: Truth(v.null, ~v.null))(value(p))
        if type(node) in COMPARISONS:
            return self.comparison(node)
        if isinstance(node, exp.ArrayContains):
            return self.array_contains(node)
        if isinstance(node, exp.Boolean):
            flag = node.this
            return lambda p: Truth(np.full(p.n, flag), np.full(p.n, not flag))
        raise self.fail(node)

    def comparison(self, node: exp.Expression) -> Callable[[Pairs], Truth]:
        op = COMPARISONS[type(node)]
        if at_most_one_edit(node):
            a = self.cached(node.left, self.metric(node.left, **_AT_MOST_ONE_EDIT), key="at most one edit: ")
        else:
            a = self.value(node.left)
        b = self.value(node.right)
        ordered = op not in (operator.eq, operator.ne)

        def run(p: Pairs) -> Truth:
            x, y = a(p), b(p)
            null = x.null | y.null
            if x.kind == y.kind == STR and not ordered:
                result = op(x.values, y.values)
            elif x.kind == y.kind == NUM:
                result = op(_num(x, node), _num(y, node))
            else:
                raise self.fail(node)
            return Truth(result & ~null, ~result & ~null)
        return run

    def array_contains(self, node: exp.Expression) -> Callable[[Pairs], Truth]:
        lists, item = self.value(node.this), self.value(node.expression)

        def run(p: Pairs) -> Truth:
            xs, it = lists(p), item(p)
            if xs.kind != LIST or it.kind != STR:
                raise self.fail(node)
            null = np.broadcast_to(xs.null | it.null, (p.n,))
            if len(it) == 1 and len(xs) == p.n:         # one value against many lists
                hit = _containing(p, xs, int(it.values[0])) if not it.null[0] else np.zeros(p.n, bool)
            elif len(xs) == 1 and len(it) == p.n:         # one list against many values
                members = sorted(p.vocab.members(int(xs.values[0]), p.extras)) if not xs.null[0] else []
                hit = _member_of(it.values, np.asarray(members, dtype=np.int64))
            else:
                hit, _ = _per_distinct(xs, it, lambda lc, ic: np.array(
                    [int(i) in p.vocab.members(int(c), p.extras) for c, i in zip(lc, ic)], dtype=np.float64))
                hit = hit.astype(bool)
            hit = hit & ~null
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
            if node.is_string:
                text = node.this
                return lambda p: Vec(STR, np.array([p.vocab.find_constant(text, p.extras)]), np.zeros(1, dtype=bool))
            const = Vec(NUM, np.array([float(node.this)]), np.zeros(1, dtype=bool))
            return lambda p: const
        if isinstance(node, exp.Null):
            const = Vec(NUM, np.array([np.nan]), np.ones(1, dtype=bool))
            return lambda p: const
        if isinstance(node, exp.Neg):
            inner = self.value(node.this)
            return lambda p: (lambda v: Vec(NUM, -_num(v, node), v.null))(inner(p))
        if isinstance(node, (exp.Sub, exp.Add)):
            op = operator.sub if isinstance(node, exp.Sub) else operator.add
            a, b = self.value(node.left), self.value(node.right)
            return lambda p: (lambda x, y: Vec(NUM, op(_num(x, node), _num(y, node)), x.null | y.null))(a(p), b(p))
        if isinstance(node, exp.Abs):
            inner = self.value(node.this)
            return lambda p: (lambda v: Vec(NUM, np.abs(_num(v, node)), v.null))(inner(p))
        if isinstance(node, exp.Length):
            return self.cached(node, self.per_string(node.this, "length"))
        if isinstance(node, exp.Ascii):           # ascii(x): first character; ascii(reverse(x)): last
            last = isinstance(node.this, exp.Reverse)
            return self.cached(node, self.per_string(node.this.this if last else node.this, "last" if last else "first"))
        if isinstance(node, exp.ArraySize):
            if function_name(node.this) in ("list_intersect", "array_intersect"):
                return self.intersection_size(node.this)
            inner = self.value(node.this)

            def size(p: Pairs) -> Vec:
                v = inner(p)
                if v.kind != LIST:
                    raise self.fail(node)
                lengths = np.array([0 if n else p.vocab.length(int(c), p.extras) for c, n in zip(v.values, v.null)], dtype=np.float64)
                return Vec(NUM, lengths, v.null)
            return size
        name = function_name(node)
        if name in _STRING_METRICS:
            return self.cached(node, self.metric(node, _STRING_METRICS[name]))
        raise self.fail(node)

    def cached(self, node: exp.Expression, fn: Callable[[Pairs], Vec], key: str = "") -> Callable[[Pairs], Vec]:
        key += node.sql("duckdb")

        def run(p: Pairs) -> Vec:
            hit = p.cache.get(key)
            if hit is None:
                hit = p.cache[key] = fn(p)
            return hit
        return run

    def operands(self, node: exp.Expression, kind: str) -> Callable[[Pairs], tuple[Vec, Vec]]:
        """The two arguments of a function, checked to be of `kind` when evaluated."""
        args = arguments(node)
        if len(args) != 2:
            raise self.fail(node)
        a, b = self.value(args[0]), self.value(args[1])

        def run(p: Pairs) -> tuple[Vec, Vec]:
            x, y = a(p), b(p)
            if x.kind != kind or y.kind != kind:
                raise self.fail(node)
            return x, y
        return run

    def metric(self, node: exp.Expression, scorer, **cutoff) -> Callable[[Pairs], Vec]:
        both = self.operands(node, STR)
        return lambda p: _metric(scorer, p, *both(p), **cutoff)

    def per_string(self, node: exp.Expression, feature: str) -> Callable[[Pairs], Vec]:
        """A number from each text value (`matching.strings.FEATURES`: its length, a character's code), kept
        per vocabulary code. Standardised values are plain ASCII, so DuckDB's grapheme count and Spark's
        character count agree with Python's."""
        inner = self.value(node)

        def run(p: Pairs) -> Vec:
            v = inner(p)
            if v.kind != STR:
                raise self.fail(node)
            out = np.zeros(len(v.values), dtype=np.float64)
            rows = np.flatnonzero(~v.null)
            out[rows] = p.vocab.feature(feature, v.values[rows], p.extras)
            return Vec(NUM, out, v.null)
        return run

    def intersection_size(self, node: exp.Expression) -> Callable[[Pairs], Vec]:
        """array_length(list_intersect(a, b)): distinct common elements; 0 (not NULL) when a list is NULL."""
        both = self.operands(node, LIST)

        def run(p: Pairs) -> Vec:
            x, y = both(p)
            if len(x) == 1 and len(y) == p.n:
                counts = _overlap_counts(p, x.values[0], x.null[0], y)
            elif len(y) == 1 and len(x) == p.n:
                counts = _overlap_counts(p, y.values[0], y.null[0], x)
            else:
                counts, _ = _per_distinct(x, y, lambda ca, cb: np.array(
                    [len(p.vocab.members(int(u), p.extras) & p.vocab.members(int(v), p.extras)) for u, v in zip(ca, cb)],
                    dtype=np.float64))
            return Vec(NUM, counts, np.zeros(p.n, dtype=bool))
        return run


def _member_of(values: np.ndarray, sorted_codes: np.ndarray) -> np.ndarray:
    """values ∈ sorted_codes, elementwise (a binary search; faster than np.isin on small sets)."""
    if len(sorted_codes) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_codes, values), len(sorted_codes) - 1)
    return sorted_codes[at] == values


def _overlap_counts(p: Pairs, code: int, is_null: bool, many: Vec) -> np.ndarray:
    """|members(code) & members(c)| for every list c of `many` (0 where either is NULL), by the flat lists."""
    if is_null:
        return np.zeros(len(many), dtype=np.float64)
    wanted = np.array(sorted(p.vocab.members(int(code), p.extras)), dtype=np.int64)
    counts = p.vocab.flat_lists.overlaps(many.values, wanted)
    for row in np.flatnonzero(counts == NOT_FROZEN):          # lists made since the freeze
        counts[row] = len(p.vocab.members(int(code), p.extras) & p.vocab.members(int(many.values[row]), p.extras))
    return counts


def _containing(p: Pairs, lists: Vec, value: int) -> np.ndarray:
    """Whether each list of `lists` holds string code `value` (False where NULL), by the flat lists."""
    hit = p.vocab.flat_lists.contains(lists.values, value)
    for row in np.flatnonzero(hit == NOT_FROZEN):             # lists made since the freeze
        hit[row] = value in p.vocab.members(int(lists.values[row]), p.extras)
    return hit.astype(bool)


def at_most_one_edit(node: exp.Expression) -> bool:
    """`damerau_levenshtein(a, b) <= 1` (or `< 2`, or `<= 0`): a predicate OSA decides exactly."""
    if not (isinstance(node, (exp.LTE, exp.LT)) and function_name(node.left) == "damerau_levenshtein"
            and isinstance(node.right, exp.Literal) and not node.right.is_string):
        return False
    bound = float(node.right.this)
    return bound <= 1 if isinstance(node, exp.LTE) else bound <= 2


def function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.JarowinklerSimilarity):
        return "jaro_winkler_similarity"
    if isinstance(node, exp.Levenshtein):
        return "levenshtein"
    if isinstance(node, exp.ArrayIntersect):
        return "array_intersect"
    return type(node).__name__.lower()


def arguments(node: exp.Expression) -> list[exp.Expression]:
    """A function node's arguments, in order."""
    if isinstance(node, (exp.Anonymous, exp.ArrayIntersect)):
        return list(node.expressions)
    return [a for a in (node.this, node.expression) if a is not None]


def compile_condition(sql: str) -> Callable[[Pairs], np.ndarray]:
    """Compile one level's `sql_condition` into a function returning, per pair, whether it is TRUE.

    Raises `UnsupportedLevelSQL` (naming the construct) for SQL this module cannot evaluate
    with DuckDB's exact semantics, so an unsupported model fails at load, never silently.
    """
    truth = LevelCompiler(sql).truth(parse_level(sql))

    def run(p: Pairs) -> np.ndarray:
        true = truth(p).true
        return true if true.shape == (p.n,) else np.broadcast_to(true, (p.n,))
    return run


def parse_level(sql: str) -> exp.Expression:
    """A level's `sql_condition` as a sqlglot tree (UnsupportedLevelSQL if it does not parse)."""
    try:
        return sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise UnsupportedLevelSQL(f"cannot parse level {sql!r}: {exc}") from None


def columns_used(sql: str) -> set[str]:
    """Base column names (without `_l` / `_r`) a condition reads."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    return {c.name[:-2] for c in tree.find_all(exp.Column) if c.name[-2:] in ("_l", "_r")}
