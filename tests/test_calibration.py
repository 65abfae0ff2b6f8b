"""The prior, the default link threshold and the household test, from the data at hand (no labels)."""

import numpy as np
import pandas as pd
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from matching.blocking import EM_CANDIDATES, training_blocking_rules
from matching.calibration import BayesFactors, default_link_threshold, estimate_prior, expected_of_linked
from matching.household import has_households, household_share
from matching.standardise import standardise, standardise_row
from matching.train import comparison_columns


def _mixture(prior: float, n_records: int, matches_bits: float = 35.0, rng_seed: int = 0) -> BayesFactors:
    """Blocked pairs of a file whose true prior is `prior`: the matches score `matches_bits`, non-matches -10."""
    all_pairs = n_records * (n_records - 1) / 2
    matches = prior * all_pairs
    return BayesFactors(bits=np.array([matches_bits, -10.0]), pairs=np.array([matches, 50 * n_records]), n_records=n_records)


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1e-7, max_value=1e-3), st.integers(min_value=2_000, max_value=2_000_000))
def test_prior_is_recovered_from_well_separated_scores_whatever_its_size(prior, n_records):
    assume(prior * n_records * (n_records - 1) / 2 >= 10)  # a file with a few matches at least
    estimate = estimate_prior(_mixture(prior, n_records), fallback=1e-9)
    assert abs(estimate / prior - 1) < 0.01


def test_prior_falls_back_when_no_pair_looks_like_a_match():
    factors = BayesFactors(bits=np.array([-12.0]), pairs=np.array([1e6]), n_records=10_000)
    assert estimate_prior(factors, fallback=3e-6) == 3e-6


def test_default_link_threshold_is_the_lowest_the_model_expects_to_be_precise():
    # 1,000 sure matches, and 100 pairs the model calls even odds: linking those costs precision
    factors = BayesFactors(bits=np.array([30.0, 0.0]), pairs=np.array([1_000.0, 100.0]), n_records=1_000)
    prior = 0.5  # bits are relative to the prior: with prior 0.5 the second group sits at p = 0.5
    threshold, sweep = default_link_threshold(factors, prior)
    assert threshold == 0.6
    assert sweep[0]["threshold"] == 0.5 and sweep[0]["expected_precision"] < 0.995


def test_expected_precision_and_recall_of_linked_pairs():
    linked = np.array([0.99, 0.99])
    expected = expected_of_linked(len(linked), linked.sum(), prior=2.78 / (10 * 9 / 2), n_records=10)
    assert expected["expected_precision"] == 0.99
    assert abs(expected["expected_recall"] - 1.98 / 2.78) < 1e-6


def _people(rows):
    return standardise(pd.DataFrame(rows, columns=["record_id", "given_name", "family_name", "dob", "street"]))


def test_households_are_told_from_duplicates_by_the_people_sharing_a_street():
    duplicates = _people([(f"r{i}{k}", "JOHN", f"SMITH{i}", "1980-01-01", f"{i} MAIN ST") for i in range(20) for k in range(2)])
    families = _people([(f"r{i}{k}", given, f"SMITH{i}", dob, f"{i} MAIN ST") for i in range(20)
                        for k, (given, dob) in enumerate((("JOHN", "1980-01-01"), ("MARY", "2010-05-05")))])
    assert household_share(duplicates) == 0.0 and not has_households(duplicates)
    assert household_share(families) == 1.0 and has_households(families)


def test_em_rounds_estimate_every_comparison():
    rng = np.random.default_rng(3)
    n = 3_000
    records = pd.DataFrame({
        "record_id": [f"r{i}" for i in range(n)],
        "given_name": rng.choice(["ANN", "BOB", "CAROL", "DAVE", "EVE"], n),
        "family_name": rng.choice(["SMITH", "JONES", "BROWN", "LEE"], n),
        "dob": [f"19{rng.integers(50, 99)}-0{rng.integers(1, 9)}-1{rng.integers(0, 9)}" for _ in range(n)],
        "ssn_last4": [f"{rng.integers(0, 30):04d}" for _ in range(n)],
    })
    std = standardise(records)
    fields = {"given_name", "family_name", "dob", "birth_year", "ssn_last4"}
    columns = comparison_columns(fields)
    rounds = training_blocking_rules(std, fields, columns)
    assert set(rounds) <= set(EM_CANDIDATES) and len(rounds) >= 2
    for name, used in columns.items():
        assert any(not used & set(rule) for rule in rounds), f"{name} is never estimated"


def test_partial_keys_are_the_same_for_a_batch_record_and_a_query():
    row = {"record_id": "x", "given_name": "Jeffrey", "family_name": "García López", "postcode": "02139", "dob": "1980-02-03"}
    batch = standardise(pd.DataFrame([row])).iloc[0]
    single = standardise_row(row)
    for column in ("given_prefix", "given_initial", "family_prefix", "postcode_area"):
        assert batch[column] == single[column]
    assert (single["given_prefix"], single["given_initial"], single["postcode_area"]) == ("JEF", "J", "021")
