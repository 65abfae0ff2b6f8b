"""The match prior and the default link threshold, from the model's own scores on the data at hand.

Splink estimates the prior (the probability that two random records match) from a few
deterministic rules and an assumed recall of those rules. That assumption is the data's, not the
model's: on files with a typo in most records the rules find a twelfth of the matches and the
prior comes out an order of magnitude low, so every probability is under-confident. Here the
prior is instead the fixed point of expectation maximisation over every blocked pair, with the
m and u probabilities training found held fixed: the prior λ for which the expected number of
matches among the blocked pairs, Σ P(match | pair, λ), equals λ times the number of all pairs.
Pairs blocking never generates are taken as non-matches, so the estimate is low by at most the
share of true pairs blocking misses.

The same scores give what the model itself expects of any threshold: the expected precision of the
pairs at or above it (their mean probability) and the expected recall (their share of the expected
matches). The default link threshold is the lowest that the model expects to link at
`LINK_EXPECTED_PRECISION`; it follows the data instead of a fixed 0.95 that suits one county.

Scores are summarised as a histogram of Bayes factors (match weight less the prior's weight,
rounded to `BITS_RESOLUTION`), computed by one SQL aggregate over Splink's predictions, so the
cost is one pass over the pairs whatever their number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Histogram bin width in bits; a probability moves by at most 1.2 % within a bin.
BITS_RESOLUTION = 0.05
#: The precision the model must expect of the pairs it links by default.
LINK_EXPECTED_PRECISION = 0.995
#: Candidate default link thresholds, lowest first; never below an even chance.
LINK_CANDIDATES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99)


def logit2(probability: float) -> float:
    """log2 of the odds: the match weight of a probability."""
    return math.log2(probability / (1.0 - probability))


@dataclass(frozen=True)
class BayesFactors:
    """Blocked pairs summarised as (Bayes factor in bits, number of pairs), plus the record count."""

    bits: np.ndarray
    pairs: np.ndarray
    n_records: int

    @property
    def all_pairs(self) -> float:
        return max(self.n_records * (self.n_records - 1) / 2.0, 1.0)

    def probabilities(self, prior: float) -> np.ndarray:
        """Match probability of each bin's pairs under `prior`."""
        return 1.0 / (1.0 + np.exp2(-(self.bits + logit2(prior))))

    def expected_matches(self, prior: float) -> float:
        return float((self.pairs * self.probabilities(prior)).sum())

    def expected_at(self, prior: float, threshold: float) -> dict:
        """Expected precision and recall of the pairs with probability >= `threshold`, and how many they are."""
        p = self.probabilities(prior)
        kept = p >= threshold
        expected_true = float((self.pairs[kept] * p[kept]).sum())
        linked = float(self.pairs[kept].sum())
        total = self.expected_matches(prior)
        return {"threshold": threshold,
                "expected_precision": round(expected_true / linked, 6) if linked else 1.0,
                "expected_recall": round(expected_true / total, 6) if total else 1.0,
                "pairs": int(linked)}


def bayes_factors(linker, predictions, prior: float, n_records: int) -> BayesFactors:
    """Histogram of the Bayes factors of every pair in `predictions` (a Splink table scored with `prior`)."""
    width = BITS_RESOLUTION
    sql = f"""
        SELECT round((match_weight - {logit2(prior)!r}) / {width!r}) * {width!r} AS bits, count(*) AS pairs
        FROM {predictions.physical_name}
        WHERE match_weight BETWEEN -1e300 AND 1e300
        GROUP BY 1
    """
    table = linker.misc.query_sql(sql, output_type="pandas")
    return BayesFactors(bits=table["bits"].to_numpy(dtype=float), pairs=table["pairs"].to_numpy(dtype=float),
                        n_records=n_records)


def estimate_prior(factors: BayesFactors, fallback: float) -> float:
    """The prior λ at which Σ P(match | pair, λ) over the blocked pairs equals λ · all pairs.

    Solved by bisection on log λ. Returns `fallback` when the pairs carry no evidence of any
    match (no root above one match in the whole file).
    """
    lowest = min(0.5, 0.5 / factors.all_pairs)

    def excess(prior: float) -> float:
        return factors.expected_matches(prior) / factors.all_pairs - prior

    if not len(factors.bits) or excess(lowest) <= 0:
        return fallback
    lo, hi = math.log(lowest), math.log(0.5)
    if excess(0.5) >= 0:
        return 0.5
    for _ in range(100):
        mid = (lo + hi) / 2
        if excess(math.exp(mid)) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6:
            break
    return math.exp((lo + hi) / 2)


def default_link_threshold(factors: BayesFactors, prior: float) -> tuple[float, list[dict]]:
    """The lowest candidate threshold the model expects to link at `LINK_EXPECTED_PRECISION`, and the sweep."""
    sweep = [factors.expected_at(prior, t) for t in LINK_CANDIDATES]
    for point in sweep:
        if point["expected_precision"] >= LINK_EXPECTED_PRECISION:
            return point["threshold"], sweep
    return LINK_CANDIDATES[-1], sweep


def expected_of_linked(n_linked: int, probability_sum: float, prior: float, n_records: int) -> dict:
    """Expected precision and recall of `n_linked` pairs whose probabilities sum to `probability_sum`.

    Precision is the mean probability of the pairs linked; recall is their expected number of
    matches over the model's expected number of matches in the whole file (prior · all pairs),
    so matches that blocking or the scoring floor left out count against it.
    """
    total = prior * max(n_records * (n_records - 1) / 2.0, 1.0)
    return {"expected_precision": round(probability_sum / n_linked, 6) if n_linked else 1.0,
            "expected_recall": round(min(probability_sum / total, 1.0), 6) if total else 1.0}
