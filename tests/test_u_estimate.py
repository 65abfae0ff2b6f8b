"""u estimated with the comparisons side by side is Splink's own estimate, level for level."""

import pandas as pd
import pytest

from evaluation.synth.county import generate_county
from matching.engine import model_json
from matching.record import read_records
from matching.splink_internals import estimate_u_side_by_side
from matching.standardise import available_fields, standardise
from matching.train import Matcher, linker_for


@pytest.fixture(scope="module")
def standardised(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("county")
    generate_county(800, 5, out, progress=False)
    return standardise(read_records(out / "records.csv").frame)


def _u_by_level(linker) -> dict:
    return {(comparison["output_column_name"], level.get("label_for_charts")): level.get("u_probability")
            for comparison in model_json(linker)["comparisons"] for level in comparison["comparison_levels"]}


@pytest.mark.parametrize("seed, workers", [(1, 2), (42, 3), (7, None)])
def test_side_by_side_u_is_splinks_own_u_for_every_level(standardised, seed, workers):
    """`workers=None`: as many as DuckDB's threads, the way training calls it."""
    settings = Matcher().settings_for(available_fields(standardised), [])
    splinks, ours = linker_for(standardised, settings), linker_for(standardised, settings)
    splinks.training.estimate_u_using_random_sampling(max_pairs=40_000, seed=seed, num_chunks=1)
    estimate_u_side_by_side(ours, max_pairs=40_000, seed=seed, workers=workers)
    expected = _u_by_level(splinks)
    assert sum(u is not None for u in expected.values()) > 10, "the county should give most levels a u"
    assert _u_by_level(ours) == expected


def test_a_level_the_sample_never_shows_stays_unobserved_as_in_splink(standardised):
    settings = Matcher().settings_for(available_fields(standardised), [])
    splinks, ours = linker_for(standardised, settings), linker_for(standardised, settings)
    splinks.training.estimate_u_using_random_sampling(max_pairs=300, seed=3, num_chunks=1)
    estimate_u_side_by_side(ours, max_pairs=300, seed=3, workers=2)
    expected = _u_by_level(splinks)
    assert any(u is None for u in expected.values()), "a sample this small should miss some level"
    assert _u_by_level(ours) == expected
