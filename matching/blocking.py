"""Blocking: which record pairs the matcher scores at all.

Candidate prediction rules are listed in priority order; each recovers a kind of true pair the
others miss (full DOB for name variants, name keys for DOB errors, phone for crisis-line and CAD
records, family phonetic + birth year for approximate ages, SSN digits with one other key,
shared address + name, swapped names, day/month-swapped DOBs). Which of them a model keeps
depends on the data: a rule is kept only while its pair count (computed exactly from key
frequencies, sum of C(n, 2) per key) fits the budget, so a million-record county does not
drown in pairs from, say, postcode + surname, while a small file gets every rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from splink import block_on

from matching.splink_internals import BlockingRuleCreator, blocking_rule_creator

PREDICTION_KEYS: tuple[tuple[str, ...], ...] = (
    ("dob",),
    ("given_canon", "family_first"),
    ("phone",),
    ("family_phonetic", "birth_year"),
    ("given_canon", "birth_year"),
    ("ssn_last4", "birth_year"),
    ("ssn_last4", "family_first"),
    ("ssn_last4", "family_phonetic"),
    ("ssn_last4", "given_canon"),
    ("ssn_last4", "postcode"),
    ("ssn_last4", "street"),
    ("address_key", "given_canon"),
    ("address_key", "family_first"),
    ("address_key", "family_phonetic"),
    ("street", "given_canon"),
    ("postcode", "family_first"),
    ("email",),
    # Partial keys, as Splink's tutorials block: the first letters of both names (a typo past them in
    # each name, with a DOB error too), either name with the day and month of birth (a year typo),
    # phonetic forms of both names, the postcode's area with the DOB or a name, the surname with the
    # given name's initial, the street with the surname's first letters, the given name with the city.
    ("given_prefix", "family_prefix"),
    ("family_prefix", "dob_md"),
    ("given_canon", "dob_md"),
    ("given_phonetic", "family_phonetic"),
    ("given_prefix", "family_prefix", "birth_year"),
    ("postcode_area", "dob"),
    ("postcode_area", "family_prefix"),
    ("postcode_area", "given_prefix"),
    ("family_first", "given_initial"),
    ("street", "family_prefix"),
    ("given_canon", "city"),
    # Last, so only data small or sparse enough keeps them: a shared address, street or SSN digits
    # alone (a household, a shelter) give too many pairs in a county but find fully renamed duplicates.
    ("ssn_last4",),
    ("address_key",),
    ("street",),
)
SWAPPED_NAMES_SQL = "l.given_name = r.family_name AND l.family_name = r.given_name"
SWAPPED_DOB_SQL = "l.dob_swap = r.dob"


@dataclass(frozen=True)
class BlockingBudget:
    """Pair budgets as multiples of the record count (with floors for small files)."""

    per_rule: float = 15.0
    total: float = 60.0
    floor_per_rule: int = 2_000_000
    floor_total: int = 10_000_000

    def limits(self, n_records: int) -> tuple[int, int]:
        return (max(self.floor_per_rule, int(self.per_rule * n_records)),
                max(self.floor_total, int(self.total * n_records)))


@dataclass
class PairCounter:
    """Exact pair counts of `block_on(columns)` rules over one frame: per key, C(n, 2), null keys excluded.

    Each column is factorised once and a rule's key is built from the integer codes, so counting the
    dozens of candidate rules costs a pass over integers each, not a group-by over strings each.
    """

    std: pd.DataFrame
    _codes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _column(self, name: str) -> np.ndarray:
        if name not in self._codes:
            self._codes[name] = pd.factorize(self.std[name], use_na_sentinel=True)[0].astype(np.int64)
        return self._codes[name]

    def pairs(self, columns: tuple[str, ...]) -> int:
        """How many pairs a `block_on(*columns)` rule generates on the frame."""
        if self.std.empty:
            return 0
        key = self._column(columns[0])
        present = key >= 0
        for name in columns[1:]:
            codes = self._column(name)
            present = present & (codes >= 0)
            # Factorised again at each step, so the combined key stays below the row count (no overflow).
            key = pd.factorize(key * (int(codes.max()) + 1) + codes)[0]
        sizes = np.bincount(key[present]).astype(np.int64) if present.any() else np.zeros(0, np.int64)
        return int((sizes * (sizes - 1) // 2).sum())


def choose_prediction_rules(std: pd.DataFrame, fields: set[str], budget: BlockingBudget | None = None) -> tuple[list[dict], list[dict]]:
    """Pick prediction rules for this data. Returns (kept, dropped), each a list of {"rule", "pairs"} dicts.

    Rules are taken in priority order; one is dropped when its own count exceeds the per-rule
    budget or when the running total (an upper bound: pairs found by several rules count once
    in Splink) would exceed the total budget. The swap rules are small and always kept.
    """
    per_rule, total = (budget or BlockingBudget()).limits(len(std))
    counter = PairCounter(std)
    kept: list[dict] = []
    dropped: list[dict] = []
    running = 0
    for columns in PREDICTION_KEYS:
        if not set(columns) <= fields:
            continue
        rule = " AND ".join(f"l.{c} = r.{c}" for c in columns)
        pairs = counter.pairs(columns)
        if pairs > per_rule or running + pairs > total:
            dropped.append({"rule": rule, "pairs": pairs})
            continue
        running += pairs
        kept.append({"rule": rule, "pairs": pairs})
    if {"given_name", "family_name"} <= fields:
        kept.append({"rule": SWAPPED_NAMES_SQL, "pairs": None})
    if "dob" in fields:
        kept.append({"rule": SWAPPED_DOB_SQL, "pairs": None})
    return kept, dropped


def as_creators(rules: list[dict]) -> list[BlockingRuleCreator]:
    """Splink blocking-rule creators for rules as returned by `choose_prediction_rules`."""
    return [blocking_rule_creator(r["rule"]) for r in rules]


def _rules(fields: set[str], candidates: list[tuple[str, ...]]) -> list[BlockingRuleCreator]:
    return [block_on(*cols) for cols in candidates if set(cols) <= fields]


MIN_EM_PAIRS = 1_000
MAX_EM_ROUNDS = 4
#: EM rounds to choose from, most informative first: each leaves every comparison that does not read
#: its columns to be estimated.
EM_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("dob",), ("given_canon", "family_first"), ("phone", "birth_year"), ("postcode", "birth_year"),
    ("ssn_last4",), ("phone",), ("given_prefix", "family_prefix"), ("email",), ("given_canon",),
    ("family_first",), ("birth_year",), ("postcode",),
)


def training_blocking_rules(std: pd.DataFrame, fields: set[str],
                            comparison_columns: dict[str, set[str]] | None = None) -> list[tuple[str, ...]]:
    """EM rounds, each blocking on columns the other rounds estimate, until every comparison is estimated.

    Splink's EM cannot estimate a comparison that reads a column the round blocks on, so a file
    whose rounds all block on the date of birth would leave the date of birth untrained (m = u:
    neutral). Rounds are taken in `EM_CANDIDATES` order while they estimate a comparison no earlier
    round did (at least two rounds, at most `MAX_EM_ROUNDS`). `comparison_columns` maps each
    comparison to the columns it reads (without it, any two viable rounds do). A round whose rule
    yields fewer than MIN_EM_PAIRS pairs on this data is skipped: EM cannot estimate anything from
    (almost) no comparisons.
    """
    counter = PairCounter(std)
    viable = [c for c in EM_CANDIDATES if set(c) <= fields and counter.pairs(c) >= MIN_EM_PAIRS]
    columns_of = comparison_columns or {}
    estimated: set[str] = set()
    rounds: list[tuple[str, ...]] = []
    for rule in viable:
        gains = {name for name, used in columns_of.items() if not used & set(rule)} - estimated
        if gains or len(rounds) < 2:
            rounds.append(rule)
            estimated |= gains
        if len(rounds) >= MAX_EM_ROUNDS or (len(rounds) >= 2 and estimated >= set(columns_of)):
            break
    return rounds


def deterministic_rules(fields: set[str]) -> list[BlockingRuleCreator]:
    """Near-certain match rules used to estimate the prior probability that two records match."""
    rules = _rules(
        fields,
        [("dob", "given_canon", "family_first"), ("ssn_last4", "dob"), ("phone", "given_canon", "family_first")],
    )
    return rules or _rules(fields, [("given_canon", "family_first", "birth_year")])
