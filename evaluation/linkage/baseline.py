"""Plain Splink, for comparison: the raw canonical columns, Splink's own library comparisons,
no standardisation (no nickname variants, compound surnames, phone digits, street abbreviations,
DOB-swap columns). Trained and predicted exactly like Briefing's matcher, so the difference in
accuracy and time is the worth of Briefing's standardisation and comparison design.
"""

from __future__ import annotations

import time
import warnings

import pandas as pd
import splink.comparison_library as cl
from splink import SettingsCreator, block_on

from matching.train import linker_for, scored_pairs

RAW_COLUMNS = ("given_name", "family_name", "dob", "phone", "street", "postcode", "ssn_last4", "sex", "email")


def plain_frame(records: pd.DataFrame) -> pd.DataFrame:
    """Canonical records as Splink input: unique_id plus the raw columns, empty strings as null."""
    frame = pd.DataFrame({"unique_id": records["record_id"].astype(str)})
    for col in RAW_COLUMNS:
        values = records[col] if col in records.columns else pd.Series([None] * len(records))
        frame[col] = values.astype(object).where(values.notna() & (values.astype(str) != ""), None).to_numpy()
    return frame


def plain_settings(frame: pd.DataFrame) -> SettingsCreator:
    present = {c for c in RAW_COLUMNS if frame[c].notna().any()}
    library = {
        "given_name": lambda: cl.NameComparison("given_name"),
        "family_name": lambda: cl.NameComparison("family_name"),
        "dob": lambda: cl.DateOfBirthComparison("dob", input_is_string=True),
        "phone": lambda: cl.ExactMatch("phone").configure(term_frequency_adjustments=True),
        "street": lambda: cl.LevenshteinAtThresholds("street", [1, 3]),
        "postcode": lambda: cl.ExactMatch("postcode"),
        "ssn_last4": lambda: cl.ExactMatch("ssn_last4"),
        "sex": lambda: cl.ExactMatch("sex"),
        "email": lambda: cl.EmailComparison("email"),
    }
    rules = [block_on(*cols) for cols in (("dob",), ("given_name", "family_name"), ("phone",), ("ssn_last4",), ("street", "postcode"))
             if set(cols) <= present]
    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=[library[c]() for c in RAW_COLUMNS if c in present],
        blocking_rules_to_generate_predictions=rules,
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def plain_link(records: pd.DataFrame, max_pairs_u: float = 5e6, seed: int = 42) -> tuple[pd.DataFrame, dict]:
    """Train and predict with plain settings; returns (pairs, seconds per step)."""
    frame = plain_frame(records)
    present = {c for c in RAW_COLUMNS if frame[c].notna().any()}
    timings = {}
    t0 = time.perf_counter()
    linker = linker_for(frame, plain_settings(frame))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deterministic = [block_on(*c) for c in (("given_name", "family_name", "dob"),) if set(c) <= present]
        linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.6)
        linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs_u, seed=seed)
        for cols in (("dob",), ("given_name", "family_name")):
            if set(cols) <= present:
                linker.training.estimate_parameters_using_expectation_maximisation(block_on(*cols), max_pairs=2e6)
    timings["train"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    pairs = scored_pairs(linker, floor=0.01)
    timings["predict"] = time.perf_counter() - t1
    return pairs, timings
