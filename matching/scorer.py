"""The trained Splink model, evaluated natively: match weights for a batch of pairs.

Splink's `predict()` assigns each pair one level per comparison (the first level whose SQL
condition is true, the null level first), adds the level's match weight, adds a
term-frequency adjustment on levels that have one, and adds the prior's log-odds. `Scorer`
does exactly that: the level conditions compiled by `matching.level_sql`, the weights taken
from Splink's own parsed settings objects (`matching.splink_internals.parse_model`, so clamping and
defaults are Splink's), and term frequencies computed the way Splink computes them (value count /
non-null count over the records being linked). Tests hold its weights to Splink's within 1e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable, Mapping

import numpy as np
from numba import njit

from matching.duckdb_backend import duckdb_fuses_winkler
from matching.encoding import Extras, Vocabulary
from matching.kernel import Kernel, build_kernel
from matching.level_sql import Pairs, Side, columns_used, compile_condition
from matching.splink_internals import LevelParameters, parse_model


@dataclass(frozen=True)
class Level:
    """One comparison level: its condition, Splink weight and term-frequency settings."""

    label: str
    condition: Callable[[Pairs], np.ndarray] | None   # None: the ELSE level
    weight: float
    is_null: bool
    tf_column: str | None = None
    tf_weight: float = 0.0
    tf_minimum_u: float = 0.0
    log2_u_exact: float = 0.0


@dataclass(frozen=True)
class Comparison:
    field: str
    levels: tuple[Level, ...]

    @cached_property
    def weights(self) -> np.ndarray:
        """Each level's weight (before term-frequency adjustment), indexable by level number."""
        return np.array([lv.weight for lv in self.levels])


NOT_COUNTED = -1
NOT_COUNTED_LABEL = "Differs; not counted (may describe the caller or the scene, not the subject)"


@dataclass
class Scores:
    """Per pair: total match weight, and per comparison the level index and its weight."""

    match_weight: np.ndarray          # (n,)
    levels: np.ndarray                # (n, comparisons) index into Comparison.levels
    weights: np.ndarray               # (n, comparisons) weight incl. term-frequency adjustment

    @property
    def match_probability(self) -> np.ndarray:
        return probability(self.match_weight)

    def drop_disagreement(self, columns: Iterable[int]) -> None:
        """Treat a disagreement (negative weight) on these comparisons as a missing value.

        The weight then is exactly Splink's for the same pair with that field left out. For
        query fields that may describe someone else (a caller's phone, an incident's address).
        """
        _drop_disagreement(self.match_weight, self.levels, self.weights, np.fromiter(columns, dtype=np.int64), NOT_COUNTED)


@njit(cache=True, nogil=True)
def _drop_disagreement(match_weight, levels, weights, columns, not_counted):
    """`Scores.drop_disagreement` in one pass (the same subtractions in the same order as column by column)."""
    for r in range(weights.shape[0]):
        for j in columns:
            if weights[r, j] < 0:
                match_weight[r] -= weights[r, j]
                weights[r, j] = 0.0
                levels[r, j] = not_counted


def probability(match_weight: np.ndarray | float) -> np.ndarray:
    """Match probability from a match weight (log2 odds), as Splink computes it."""
    w = np.asarray(match_weight, dtype=np.float64)
    return 1.0 / (1.0 + np.exp2(-np.clip(w, -1000, 1000)))


class TermFrequencies:
    """Value counts of the term-frequency columns over the records being matched, by string code.

    Splink's tf value is count(value) / count(non-null values) over the input table; kept as
    counts so adding or deleting a record updates it in O(1).
    """

    def __init__(self, columns: Iterable[str]):
        self.counts: dict[str, np.ndarray] = {c: np.zeros(0, dtype=np.int64) for c in columns}
        self.totals: dict[str, int] = {c: 0 for c in self.counts}
        _tf_of(np.zeros(0, dtype=np.int64), 0, np.zeros(0, dtype=np.int64))   # compiled now, not in a request
        _tf_into(np.zeros(0, dtype=np.int64), 0, np.zeros((1, 1)), 0, np.zeros(1))
        _drop_disagreement(np.zeros(1), np.zeros((1, 1), dtype=np.int16), np.zeros((1, 1)), np.zeros(1, dtype=np.int64),
                           NOT_COUNTED)

    def add(self, column: str, codes: np.ndarray, sign: int = 1) -> None:
        present = codes[codes >= 0]
        if len(present) == 0:
            return
        counts = self.counts[column]
        if present.max() >= len(counts):
            grown = np.zeros(max(int(present.max()) + 1, 2 * len(counts)), dtype=np.int64)
            grown[: len(counts)] = counts
            counts = self.counts[column] = grown
        np.add.at(counts, present, sign)
        self.totals[column] += sign * len(present)

    def values(self, column: str, codes: np.ndarray) -> np.ndarray:
        """tf per code; NaN for null codes and values no record has (query-only values)."""
        counts = self.counts[column]
        if len(codes) == 1:                       # a query's one value: no array work
            code, total = int(codes[0]), self.totals[column]
            found = int(counts[code]) if 0 <= code < len(counts) else 0
            return np.array([found / total if found > 0 and total else np.nan])
        return _tf_of(counts, self.totals[column], np.ascontiguousarray(codes, dtype=np.int64))

    def fill(self, column: str, codes: np.ndarray, at: int, out: np.ndarray) -> None:
        """`values` of the codes in column `at` of `codes` (a float64 matrix, one row per pair, as the compiled
        kernel holds them), written into `out`."""
        _tf_into(self.counts[column], self.totals[column], codes, at, out)


@njit(cache=True, nogil=True)
def _tf_of(counts, total, codes):
    """`TermFrequencies.values` of many codes: count / total, NaN for null and unseen codes."""
    out = np.empty(codes.shape[0])
    for i in range(codes.shape[0]):
        code = codes[i]
        found = counts[code] if 0 <= code < counts.shape[0] else 0
        out[i] = found / total if found > 0 and total > 0 else np.nan
    return out


@njit(cache=True, nogil=True)
def _tf_into(counts, total, codes, at, out):
    """`TermFrequencies.fill`: `_tf_of` of column `at` of a code matrix."""
    for i in range(codes.shape[0]):
        code = int(codes[i, at])
        found = counts[code] if 0 <= code < counts.shape[0] else 0
        out[i] = found / total if found > 0 and total > 0 else np.nan


class Scorer:
    """Match weights of pairs under one trained Splink model (`MatcherModel.splink`).

    `score` runs the model's compiled kernel (`matching.kernel`, in `kernel_`) where one could be built,
    else `score_reference`: the numpy evaluation, level by level, that the kernel is tested against.
    """

    def __init__(self, splink_settings: Mapping, compiled: bool = True):
        parsed = parse_model(splink_settings)
        self.prior_weight_ = parsed.prior_match_weight
        self.comparisons_ = tuple(Comparison(field, tuple(_level(level) for level in levels))
                                  for field, levels in parsed.comparisons)
        used: set[str] = set()
        for _, levels in parsed.comparisons:
            for level in levels:
                if not level.is_else:
                    used |= columns_used(level.sql_condition)
        self.tf_columns_ = sorted({lv.tf_column for c in self.comparisons_ for lv in c.levels if lv.tf_column})
        self.columns_ = sorted(used | set(self.tf_columns_))
        self.kernel_: Kernel | None = (build_kernel([levels for _, levels in parsed.comparisons], duckdb_fuses_winkler())
                                       if compiled else None)

    def score(self, left: Side, right: Side, n: int, tf: TermFrequencies, vocab: Vocabulary,
              extras: Extras | None = None) -> Scores:
        """Score `n` pairs: `left` and `right` map column -> encoded `Vec` (length n, or 1 to broadcast)."""
        if self.kernel_ is None:
            return self.score_reference(left, right, n, tf, vocab, extras)
        total, levels, weights = self.kernel_.score(Pairs(left, right, n, vocab, extras), tf.fill, self.prior_weight_)
        return Scores(total, levels, weights)

    def score_reference(self, left: Side, right: Side, n: int, tf: TermFrequencies, vocab: Vocabulary,
                        extras: Extras | None = None) -> Scores:
        """`score` by numpy, level by level (see the class docstring)."""
        pairs = Pairs(left, right, n, vocab, extras)
        ncomp = len(self.comparisons_)
        levels = np.zeros((ncomp, n), dtype=np.int16)
        weights = np.zeros((ncomp, n), dtype=np.float64)
        for j, comparison in enumerate(self.comparisons_):
            level_of = levels[j]
            open_ = np.ones(n, dtype=bool)
            for i, level in enumerate(comparison.levels):
                hit = open_ if level.condition is None else open_ & level.condition(pairs)
                if level.condition is None or hit.any():
                    level_of[hit] = i
                    if level.tf_column:
                        rows = np.flatnonzero(hit)
                        weights[j, rows] = _tf_adjustment(level, pairs, rows, tf)
                    if level.condition is None:
                        break
                    open_ &= ~hit
                    if not open_.any():
                        break
            weights[j] += comparison.weights[level_of]
        weights, levels = weights.T, levels.T
        return Scores(self.prior_weight_ + weights.sum(axis=1), levels, weights)

    def explain(self, scores: Scores, row: int) -> list[dict]:
        """Per-field explanation of one scored pair: field, comparison level label, weight."""
        return [{"field": c.field, "level": _label(c, int(scores.levels[row, j])), "weight": round(float(scores.weights[row, j]), 6)}
                for j, c in enumerate(self.comparisons_)]


def _label(comparison: Comparison, level: int) -> str:
    return NOT_COUNTED_LABEL if level == NOT_COUNTED else comparison.levels[level].label


def _level(level: LevelParameters) -> Level:
    """Freeze one comparison level, as Splink parses it, into what the scorer needs."""
    condition = None if level.is_else else compile_condition(level.sql_condition)
    if level.is_null:
        return Level(level.label, condition, 0.0, True)
    if level.match_weight is None:
        raise ValueError(f"level {level.label!r} has no trained m/u probabilities")
    tf = level.tf
    if tf is None:
        return Level(level.label, condition, float(level.match_weight), False)
    return Level(level.label, condition, float(level.match_weight), False, tf.column, tf.weight, tf.minimum_u,
                 math.log2(tf.u_exact))


def _tf_adjustment(level: Level, pairs: Pairs, rows: np.ndarray, tf: TermFrequencies) -> np.ndarray:
    """Splink's adjustment: weight * (log2 u_exact - log2 max(tf_l, tf_r, minimum)); 0 when neither side has a tf."""
    tfs = []
    for side in ("l", "r"):
        codes = pairs.sides[side][level.tf_column].values
        tfs.append(tf.values(level.tf_column, np.broadcast_to(codes, (pairs.n,))[rows]))
    left, right = tfs
    either = ~(np.isnan(left) & np.isnan(right))
    u = np.fmax(np.fmax(left, right), level.tf_minimum_u)
    out = np.zeros(len(rows), dtype=np.float64)
    out[either] = level.tf_weight * (level.log2_u_exact - np.log2(u[either]))
    return out
