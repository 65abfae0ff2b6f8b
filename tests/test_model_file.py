import json

import pytest

from matching.model import MatcherModel, Thresholds


def test_thresholds_grade_probabilities():
    t = Thresholds(link=0.95, review_low=0.5, certain=0.99, probable=0.9, possible=0.5)
    assert [t.grade(p) for p in (0.995, 0.95, 0.6, 0.2)] == ["certain", "probable", "possible", None]


def test_inconsistent_thresholds_are_rejected():
    with pytest.raises(ValueError, match="possible <= probable <= certain"):
        Thresholds(certain=0.8, probable=0.9)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Thresholds(link=1.0)


def test_model_round_trips_and_splink_part_is_untouched(tmp_path):
    model = MatcherModel(splink={"comparisons": [], "link_type": "dedupe_only"},
                         thresholds=Thresholds(link=0.9, review_low=0.4, certain=0.99, probable=0.95, possible=0.4))
    path = tmp_path / "m.json"
    model.save(path)
    again = MatcherModel.load(path)
    assert again.splink == model.splink and again.thresholds == model.thresholds
    assert json.loads(path.read_text())["format"] == "briefing.matcher/1"
    assert again.version == model.version


def test_bare_splink_json_loads_with_default_thresholds(tmp_path):
    path = tmp_path / "splink.json"
    path.write_text(json.dumps({"comparisons": [], "link_type": "dedupe_only"}))
    assert MatcherModel.load(path).thresholds == Thresholds()


def test_garbage_model_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        MatcherModel.load(path)


def test_prior_is_rescaled_to_the_population_linked():
    model = MatcherModel(splink={"comparisons": [], "probability_two_random_records_match": 1e-4}, training={"records": 100_001})
    bigger = model.for_population(1_000_001)
    assert bigger.splink["probability_two_random_records_match"] == pytest.approx(1e-5)
    assert bigger.training["prior_rescaled"]["base_version"] == model.version
    assert model.splink["probability_two_random_records_match"] == 1e-4  # the original is untouched
    assert model.for_population(100_001) is model
