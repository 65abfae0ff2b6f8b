"""The scorer's compiled kernel: every comparison level of a query's candidates decided in one pass.

`Scorer.score_reference` evaluates each level's SQL condition as a chain of numpy calls on a few
hundred candidates: dozens of calls per query, each paying interpreter overhead around arithmetic
that needs microseconds, and string metrics that must first decode the strings. Here each model's
conditions become one generated Python function that numba compiles: per pair, the levels in order
with SQL's three-valued logic, evaluated lazily (a string metric is computed only when a level
reaching it is still undecided, and once per distinct pair of strings in a call: candidates share
surnames and streets), the metric itself run on the vocabulary's code points where they lie
(`matching.strings`, `matching.kernel_metrics`), the list functions (`array_contains`, the size of a
`list_intersect`) on the vocabulary's flat lists (`matching.lists`), then the level's weight, its
term-frequency adjustment and the sum. The columns are gathered once; only string literals and the
length of a list are looked up beforehand by the numpy path's own code.

The source depends only on the model's conditions (its weights are arguments), so models trained
from the same comparisons share it. It is written once to a cache directory (`BRIEFING_KERNEL_CACHE`,
default `~/.cache/briefing/kernels`) where numba keeps the machine code beside it: a process loads it
in a fraction of a second, and `briefing serve` does so in the master, before forking its workers, so
no request pays a compile (a first compile takes 10-20 s). Where numba is missing or a condition uses
SQL the kernel cannot express, `build_kernel` returns None and the scorer keeps its numpy path; tests
hold the two to the same levels and weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sqlglot import exp

from matching.encoding import LIST, NUM, STR, Vec, column_kind
from matching.gather import codes_past, row_into, warm_up
from matching.lists import FlatLists, flat_members
from matching.level_sql import (COMPARISONS, LevelCompiler, Pairs, UnsupportedLevelSQL, arguments, at_most_one_edit,
                                function_name, parse_level)
from matching.kernel_prelude import LISTS as _LISTS
from matching.kernel_prelude import PRELUDE as _PRELUDE
from matching.splink_internals import LevelParameters
from matching.strings import code_points

log = logging.getLogger("briefing")

_OPERATORS = {exp.EQ: "==", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
assert set(_OPERATORS) == set(COMPARISONS)
_METRICS = {"jaro_winkler_similarity": "jaro_winkler({a}, {b}, FUSED)", "jaro_similarity": "jaro({a}, {b})",
            "levenshtein": "levenshtein({a}, {b})"}
_WHERE = "where(int({code}), PO, NF, XC, XO)"
_METRICS_SOURCE = Path(__file__).with_name("kernel_metrics.py")



#: Slots of the per-call memo of string metrics (a power of two; filled at most half).
MEMO_SLOTS = 1 << 14


@dataclass(frozen=True, eq=False)
class Kernel:
    """A compiled kernel and what it reads: leaves (columns, list functions) and term-frequency columns."""

    leaves: tuple[Callable[[Pairs], Vec], ...]
    string_leaves: tuple[int, ...]              # the leaves holding string codes
    list_leaves: tuple[int, ...]                # the leaves holding list codes
    literals: tuple[tuple[int, str], ...]       # the leaves that are string literals, and their text
    columns: tuple[tuple[int, str, str, str], ...]   # the leaves that are plain columns: (leaf, side, column, kind)
    tf_columns: tuple[str, ...]
    level_weights: np.ndarray                   # `level_parameters`
    level_tf: np.ndarray
    run: Callable
    memos: threading.local = field(default_factory=threading.local)   # one memo per thread (the kernel drops the GIL)

    def memo(self) -> tuple[np.ndarray, np.ndarray, int]:
        """This thread's memo (keys: stamp, metric, a, b; column 4 of rows 0/1: stamp and count) and a fresh stamp."""
        memo = self.memos
        if not hasattr(memo, "keys"):
            memo.keys, memo.values, memo.stamp = np.zeros((MEMO_SLOTS, 5), dtype=np.int64), np.zeros(MEMO_SLOTS), 0
        memo.stamp += 1
        return memo.keys, memo.values, memo.stamp

    @cached_property
    def _computed(self) -> tuple[int, ...]:
        """The leaves that are neither plain columns nor literals (the length of a list): their own code computes them."""
        plain = {leaf for leaf, _, _, _ in self.columns} | {leaf for leaf, _ in self.literals}
        return tuple(i for i in range(len(self.leaves)) if i not in plain)

    @cached_property
    def _side_columns(self) -> dict[str, list[tuple[int, str, str]]]:
        """Per side, its plain-column leaves, their columns and kinds."""
        return {side: [(leaf, column, kind) for leaf, s, column, kind in self.columns if s == side] for side in "lr"}

    @cached_property
    def _leaf_of(self) -> dict[tuple[str, str], int]:
        """The leaf of each (side, column) that is a plain column."""
        return {(side, column): leaf for leaf, side, column, _ in self.columns}

    @cached_property
    def _string_leaves(self) -> np.ndarray:
        return np.array(self.string_leaves, dtype=np.int64)

    @cached_property
    def _list_leaves(self) -> np.ndarray:
        return np.array(self.list_leaves, dtype=np.int64)

    @cached_property
    def _side_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per side, its plain-column leaves and whether each is a number, as the arrays `row_into` takes."""
        return {side: (np.array([leaf for leaf, _, _ in leaves], dtype=np.int64),
                       np.array([kind == NUM for _, _, kind in leaves], dtype=np.bool_))
                for side, leaves in self._side_columns.items()}

    def _gather_columns(self, pairs: Pairs, values: np.ndarray, null: np.ndarray) -> None:
        """Copy the plain-column leaves and their NULL masks in (`matching.gather`). A side of one row (a query)
        is written as one row down the matrix; an index's candidate rows are gathered by the side itself where
        it offers that (`Rows.gather`), without a `Vec` per column."""
        try:
            for side in "lr":
                source, leaves = pairs.sides[side], self._side_columns[side]
                gather = getattr(source, "gather", None)
                if gather is not None:
                    gather([column for _, column, _ in leaves], values, null, [leaf for leaf, _, _ in leaves])
                    continue
                columns = [source[column].values for _, column, _ in leaves]
                if all(len(c) == 1 for c in columns):           # a query: one row, written down the matrix
                    at, is_number = self._side_arrays[side]
                    row_into(np.fromiter((c[0] for c in columns), dtype=np.float64, count=len(columns)), is_number,
                             at, values, null)
                    continue
                for (leaf, _, kind), column in zip(leaves, columns):
                    values[:, leaf] = column
                    null[:, leaf] = np.isnan(values[:, leaf]) if kind == NUM else values[:, leaf] < 0
        except KeyError as exc:
            raise UnsupportedLevelSQL(f"column {exc} is not in the index") from None

    def score(self, pairs: Pairs, tf_fill: Callable[[str, np.ndarray, int, np.ndarray], None],
              prior: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(match weight, levels, weights) of `pairs.n` pairs, as `Scorer.score_reference` returns them.
        `tf_fill(column, codes, at, out)` writes the term frequencies of column `at` of a code matrix
        (`TermFrequencies.fill`)."""
        n = pairs.n
        values = np.empty((n, len(self.leaves)), dtype=np.float64)      # a pair's leaves side by side
        null = np.empty((n, len(self.leaves)), dtype=np.bool_)
        self._gather_columns(pairs, values, null)
        for i, text in self.literals:
            values[:, i] = pairs.vocab.find_constant(text, pairs.extras)
            null[:, i] = False
        for i in self._computed:
            vec = self.leaves[i](pairs)
            values[:, i] = vec.values
            null[:, i] = vec.null
        tf = np.empty((len(self.tf_columns), 2, n), dtype=np.float64)
        for t, column in enumerate(self.tf_columns):
            for s, side in enumerate("lr"):
                leaf = self._leaf_of.get((side, column))
                if leaf is None:                         # not a column any level reads
                    codes = np.broadcast_to(pairs.sides[side][column].values, (n,)).astype(np.float64).reshape(n, 1)
                    tf_fill(column, codes, 0, tf[t, s])
                else:
                    tf_fill(column, values, leaf, tf[t, s])
        vocab = pairs.vocab
        strings = vocab.strings
        # strings not in the frozen buffer (the query's own, records added since the build): this call's X
        others = codes_past(values, self._string_leaves, strings.frozen)
        vocabulary, extras = len(strings), pairs.extras.strings
        texts = [strings.text(int(c)) if c < vocabulary else extras[int(c)] for c in others]
        points, offsets = code_points(texts)
        flat = vocab.flat_lists                 # and so for lists: the query's own and those made since the build
        other_lists = codes_past(values, self._list_leaves, flat.frozen)
        list_offsets, list_members = flat_members([sorted(vocab.members(int(c), pairs.extras)) for c in other_lists])
        levels = np.empty((n, len(self.level_weights)), dtype=np.int16)
        weights = np.empty((n, len(self.level_weights)), dtype=np.float64)
        total = np.empty(n, dtype=np.float64)
        self.run(values, null, tf, self.level_weights, self.level_tf, *strings.code_points(), strings.frozen,
                 points, others, offsets, flat.offsets, flat.members, flat.frozen, other_lists, list_offsets, list_members,
                 *self.memo(), prior, levels, weights, total)
        return total, levels, weights


class _Source:
    """Statements of one kernel, generated from the levels' sqlglot trees."""

    def __init__(self) -> None:
        self.leaves: list[Callable[[Pairs], Vec]] = []
        self.string_leaves: list[int] = []
        self.list_leaves: list[int] = []
        self.literals: list[tuple[int, str]] = []
        self.columns: list[tuple[int, str, str, str]] = []
        self.leaf_at: dict[str, int] = {}
        self.memo: dict[str, int] = {}         # metric -> its number (its per-pair variable is m<number>)
        self.lines: list[str] = []
        self.depth = 2
        self.temps = 0

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def temp(self) -> str:
        self.temps += 1
        return f"t{self.temps}"

    def leaf(self, key: str, fn: Callable[[Pairs], Vec], kind: str = NUM, column: bool = False) -> tuple[str, str]:
        """The value and null expressions of a leaf: a value computed outside the kernel (`fn`), or with `column`
        the column `key` (`given_name_r`), which `Kernel.score` copies in directly."""
        i = self.leaf_at.get(key)
        if i is None:
            i = self.leaf_at[key] = len(self.leaves)
            self.leaves.append(fn)
            if kind == STR:
                self.string_leaves.append(i)
            elif kind == LIST:
                self.list_leaves.append(i)
            if column:
                self.columns.append((i, key[-1], key[:-2], kind))
        return f"V[r, {i}]", f"N[r, {i}]"

    def truth(self, node: exp.Expression, sql: LevelCompiler) -> str:
        """Emit statements computing `node`'s truth value; returns the variable (or literal) holding it."""
        if isinstance(node, exp.Paren):
            return self.truth(node.this, sql)
        if isinstance(node, (exp.And, exp.Or)):
            out, first = self.temp(), self.truth(node.left, sql)
            self.emit(f"{out} = {first}")
            self.emit(f"if {out} != {0 if isinstance(node, exp.And) else 1}:")   # else decided: skip the right
            self.depth += 1
            second = self.truth(node.right, sql)
            self.emit(f"{out} = {'t_and' if isinstance(node, exp.And) else 't_or'}({out}, {second})")
            self.depth -= 1
            return out
        if isinstance(node, exp.Not):
            inner, out = self.truth(node.this, sql), self.temp()
            self.emit(f"{out} = {inner} if {inner} == -1 else 1 - {inner}")
            return out
        out = self.temp()
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            _, null, _ = self.value(node.this, sql)
            self.emit(f"{out} = 1 if {null} else 0")
        elif type(node) in _OPERATORS:
            left = self.edits(node, sql) if at_most_one_edit(node) else self.value(node.left, sql)
            right = self.value(node.right, sql)
            op = _OPERATORS[type(node)]
            if not (left[2] == right[2] == NUM or left[2] == right[2] == STR and op in ("==", "!=")):
                raise sql.fail(node)
            self.emit(f"{out} = known({left[1]} or {right[1]}, {left[0]} {op} {right[0]})")
        elif isinstance(node, exp.ArrayContains):
            (codes, codes_null, kind), (item, item_null, item_kind) = self.value(node.this, sql), self.value(node.expression, sql)
            if kind != LIST or item_kind != STR:
                raise sql.fail(node)
            self.emit(f"{out} = known({codes_null} or {item_null}, list_has({_LISTS}, int({codes}), int({item})))")
        elif isinstance(node, exp.Boolean):
            return "1" if node.this else "0"
        else:
            raise sql.fail(node)
        return out

    def value(self, node: exp.Expression, sql: LevelCompiler) -> tuple[str, str, str]:
        """(value expression, null expression, kind) of a value node, after emitting what it needs."""
        if isinstance(node, exp.Paren):
            return self.value(node.this, sql)
        if isinstance(node, exp.Column):
            kind = column_kind(node.name[:-2])                       # a LIST column only for IS NULL
            return (*self.leaf(node.name, sql.value(node), kind, column=True), kind)
        if isinstance(node, exp.Literal):
            if node.is_string:
                key = node.sql("duckdb")
                if key not in self.leaf_at:
                    self.literals.append((len(self.leaves), node.this))
                return (*self.leaf(key, sql.value(node), STR), STR)
            return repr(float(node.this)), "False", NUM
        if isinstance(node, exp.Null):
            return "0.0", "True", NUM
        if isinstance(node, (exp.Neg, exp.Abs)):
            value, null, kind = self.value(node.this, sql)
            if kind != NUM:
                raise sql.fail(node)
            return (f"(-{value})" if isinstance(node, exp.Neg) else f"abs({value})"), null, NUM
        if isinstance(node, (exp.Sub, exp.Add)):
            a, b = self.value(node.left, sql), self.value(node.right, sql)
            if a[2] != NUM or b[2] != NUM:
                raise sql.fail(node)
            return f"({a[0]} {'-' if isinstance(node, exp.Sub) else '+'} {b[0]})", f"({a[1]} or {b[1]})", NUM
        if isinstance(node, exp.Length):
            return self.per_string(node.this, "{s}_n", sql)
        if isinstance(node, exp.Ascii):                  # ascii(x): first character; ascii(reverse(x)): last
            last = isinstance(node.this, exp.Reverse)
            return self.per_string(node.this.this if last else node.this,
                                   "(P if {s}_p else X)[{s}_0 + {s}_n - 1]" if last else "(P if {s}_p else X)[{s}_0]", sql)
        if isinstance(node, exp.ArraySize) and function_name(node.this) in ("list_intersect", "array_intersect"):
            lists = [self.value(arg, sql) for arg in arguments(node.this)]
            if len(lists) != 2 or any(kind != LIST for _, _, kind in lists):
                raise sql.fail(node)
            (a, a_null, _), (b, b_null, _) = lists
            out = self.temp()
            self.emit(f"{out} = list_overlap({_LISTS}, -1 if {a_null} else int({a}), -1 if {b_null} else int({b}))")
            return out, "False", NUM
        if isinstance(node, exp.ArraySize):
            return (*self.leaf(node.sql("duckdb"), sql.value(node)), NUM)
        name = function_name(node)
        if name in _METRICS:
            return self.metric(node, _METRICS[name], sql)
        raise sql.fail(node)

    def strings(self, nodes: Sequence[exp.Expression], sql: LevelCompiler, node: exp.Expression) -> list[tuple]:
        out = [self.value(arg, sql) for arg in nodes]
        if any(kind != STR for _, _, kind in out):
            raise sql.fail(node)
        return out

    def per_string(self, arg: exp.Expression, formula: str, sql: LevelCompiler) -> tuple[str, str, str]:
        """A number of one string (its length, a character's code; 0 for an empty string), per pair."""
        [(code, null, _)] = self.strings([arg], sql, arg)
        out, s = self.temp(), self.temp()
        self.emit(f"{out} = 0.0")
        self.emit(f"if not {null}:")
        self.emit(f"    {s}_p, {s}_0, {s}_n = {_WHERE.format(code=code)}")
        self.emit(f"    {out} = float({formula.format(s=s)}) if {s}_n else 0.0")
        return out, null, NUM

    def metric(self, node: exp.Expression, formula: str, sql: LevelCompiler) -> tuple[str, str, str]:
        """A string metric, computed at most once per pair, when a condition first reaches it."""
        args = arguments(node)
        if len(args) != 2:
            raise sql.fail(node)
        (ca, na, _), (cb, nb, _) = self.strings(args, sql, node)
        key = formula + node.sql("duckdb")
        metric = self.memo.setdefault(key, len(self.memo))
        var = f"m{metric}"
        self.emit(f"if not {var}_done and not ({na} or {nb}):")     # once per pair, and per query value pair
        self.emit(f"    {var}_slot = memo_slot(K, stamp, {metric}, int({ca}), int({cb}))")
        self.emit(f"    if {var}_slot >= 0:")
        self.emit(f"        {var} = KV[{var}_slot]")
        self.emit("    else:")
        self.emit(f"        {var}_ap, {var}_a0, {var}_an = {_WHERE.format(code=ca)}")
        self.emit(f"        {var}_bp, {var}_b0, {var}_bn = {_WHERE.format(code=cb)}")
        a, b = (f"P if {var}_{x}p else X, {var}_{x}0, {var}_{x}n" for x in "ab")
        self.emit(f"        {var} = {formula.format(a=a, b=b)}")
        self.emit(f"        memo_put(K, KV, -1 - {var}_slot, stamp, {metric}, int({ca}), int({cb}), {var})")
        self.emit(f"    {var}_done = True")
        return var, f"({na} or {nb})", NUM

    def edits(self, node: exp.Expression, sql: LevelCompiler) -> tuple[str, str, str]:
        """`damerau_levenshtein(a, b)` where only whether it is at most 1 matters (`at_most_one_edit`)."""
        return self.metric(node.left, "edits_capped({a}, {b})", sql)


def kernel_source(comparisons: Sequence[Sequence[LevelParameters]], fused: bool) -> tuple[str, _Source, list[str]]:
    """The kernel's source, what it reads and its term-frequency columns (UnsupportedLevelSQL if it cannot say a level).

    The source holds the model's conditions, not its weights (`level_parameters`): models trained from the
    same comparisons share one compiled kernel."""
    source = _Source()
    tf_columns = sorted({level.tf.column for levels in comparisons for level in levels if level.tf})
    for j, levels in enumerate(comparisons):
        source.emit(f"# comparison {j}")
        chosen, closers = False, 0
        for i, level in enumerate(levels):
            w = f"W[{j}, {i}]"
            if level.tf is not None:
                t = tf_columns.index(level.tf.column)
                w += f" + tf_adjustment(TF[{t}, 0, r], TF[{t}, 1, r], TFP[{j}, {i}, 0], TFP[{j}, {i}, 1], TFP[{j}, {i}, 2])"
            if level.is_else:
                source.emit(f"levels[r, {j}] = {i}")
                source.emit(f"w = {w}")
                chosen = True
                break
            hit = source.truth(parse_level(level.sql_condition), LevelCompiler(level.sql_condition))
            source.emit(f"if {hit} == 1:")
            source.emit(f"    levels[r, {j}] = {i}")
            source.emit(f"    w = {w}")
            source.emit("else:")
            source.depth += 1
            closers += 1
        if not chosen:                              # no ELSE level: the numpy path leaves level 0
            source.emit(f"levels[r, {j}] = 0")
            source.emit(f"w = W[{j}, 0]")
        source.depth -= closers
        source.emit(f"weights[r, {j}] = w")
        source.emit("s += w")
    memo = "".join(f"        m{k} = 0.0\n        m{k}_done = False\n" for k in source.memo.values())
    code = (_PRELUDE.format(fused=fused) + "\n\n@njit(cache=True, nogil=True)\n"
            f"def kernel(V, N, TF, W, TFP, P, PO, NF, X, XC, XO, {_LISTS}, K, KV, stamp, prior, levels, weights, total):\n"
            "    for r in range(V.shape[0]):\n        s = 0.0\n        w = 0.0\n" + memo + "\n".join(source.lines)
            + "\n        total[r] = prior + s\n")
    return code, source, tf_columns


def level_parameters(comparisons: Sequence[Sequence[LevelParameters]]) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's `W` (each level's weight) and `TFP` (its term-frequency minimum u, weight, log2 u_exact)."""
    shape = (len(comparisons), max(len(levels) for levels in comparisons))
    weights, tf = np.zeros(shape), np.zeros(shape + (3,))
    for j, levels in enumerate(comparisons):
        for i, level in enumerate(levels):
            weights[j, i] = 0.0 if level.is_null or level.is_else and level.match_weight is None else level.match_weight
            if level.tf is not None:
                tf[j, i] = level.tf.minimum_u, level.tf.weight, math.log2(level.tf.u_exact)
    return weights, tf


_LOADED: dict[str, Callable] = {}


def build_kernel(comparisons: Sequence[Sequence[LevelParameters]], fused: bool) -> Kernel | None:
    """The compiled kernel for a model's comparisons, or None (see the module docstring). `fused`: whether
    the Winkler boost is one fused multiply-add, as in the DuckDB Splink scores with."""
    try:
        code, source, tf_columns = kernel_source(comparisons, fused)
    except UnsupportedLevelSQL as exc:
        log.info("the scorer keeps its numpy path: %s", exc)
        return None
    digest = hashlib.sha256((code + _METRICS_SOURCE.read_text()).encode()).hexdigest()[:16]
    run = _LOADED.get(digest)
    if run is None:
        try:
            run = _load(code, digest, (len(source.leaves), len(tf_columns), comparisons))
        except ImportError:                  # numba is not installed: the numpy path serves
            return None
        except Exception:                    # no cache directory to write, numba refusing the source: serve, slower
            log.warning("the scorer's compiled kernel could not be loaded; the numpy path serves", exc_info=True)
            return None
        _LOADED[digest] = run
        warm_up()                            # the gathering into the kernel's matrix (`matching.gather`)
    return Kernel(tuple(source.leaves), tuple(source.string_leaves), tuple(source.list_leaves), tuple(source.literals),
                  tuple(source.columns), tuple(tf_columns),
                  *level_parameters(comparisons), run)


def _load(code: str, digest: str, shape: tuple[int, int, Sequence]) -> Callable:
    """Import the generated module from the cache directory and compile (or load) it, by one call on dummy
    input of `shape` (leaves, term-frequency columns, comparisons)."""
    directory = Path(os.environ.get("BRIEFING_KERNEL_CACHE") or Path.home() / ".cache" / "briefing" / "kernels")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"briefing_kernel_{digest}.py"
    if not path.exists() or path.read_text() != code:
        handle, partial = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            out.write(code)
        os.replace(partial, path)            # atomic: a concurrent process or thread reads a whole file
    name = f"briefing_kernel_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    leaves, tf_columns, comparisons = shape
    points, offsets = code_points(["warm-up"])                 # the types `Kernel.score` passes, exactly
    others, other_offsets = code_points([])
    flat = FlatLists([frozenset({0})])
    list_offsets, list_members = flat_members([])
    module.kernel(np.zeros((1, leaves)), np.ones((1, leaves), dtype=np.bool_), np.full((tf_columns, 2, 1), np.nan),
                  *level_parameters(comparisons), points, offsets, 1, others, np.zeros(0, dtype=np.int64), other_offsets,
                  flat.offsets, flat.members, flat.frozen, np.zeros(0, dtype=np.int64), list_offsets, list_members,
                  np.zeros((MEMO_SLOTS, 5), dtype=np.int64), np.zeros(MEMO_SLOTS), 1, 0.0,
                  np.zeros((1, len(comparisons)), dtype=np.int16), np.zeros((1, len(comparisons))), np.zeros(1))
    return module.kernel
