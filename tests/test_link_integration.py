"""`briefing link` end to end on a small synthetic county: outputs, stable ids, warnings."""

import json

import pandas as pd
import pytest

from api.cli.main import main
from matching.accuracy import linkage_metrics
from evaluation.synth.county import generate_county


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("county")
    generate_county(1500, 11, out, progress=False)
    return out


@pytest.fixture(scope="module")
def linked(county, tmp_path_factory):
    out = tmp_path_factory.mktemp("link") / "run"
    assert main(["link", str(county / "records.csv"), "--out", str(out), "--max-pairs-u", "3e5", "--quiet"]) == 0
    return out


def test_link_writes_every_output_with_every_record(linked, county):
    for name in ("clusters.csv", "pairs.csv", "model.json", "summary.json"):
        assert (linked / name).exists()
    clusters = pd.read_csv(linked / "clusters.csv", dtype=str)
    records = pd.read_csv(county / "records.csv", dtype=str)
    assert set(clusters.record_id) == set(records.record_id)
    pairs = pd.read_csv(linked / "pairs.csv")
    assert list(pairs.columns) == ["record_id_l", "record_id_r", "match_weight", "match_probability"]
    assert pairs.match_probability.min() >= 0.01


def test_unsupervised_link_is_accurate_on_a_small_county(linked, county):
    clusters = pd.read_csv(linked / "clusters.csv", dtype=str)
    truth = pd.read_csv(county / "truth.csv", dtype=str)
    m = linkage_metrics(clusters, truth)
    assert m.pairwise_precision >= 0.98
    assert m.pairwise_recall >= 0.85


def test_relinking_with_the_saved_model_and_previous_keeps_person_ids(linked, county, tmp_path):
    again = tmp_path / "again"
    status = main(["link", str(county / "records.csv"), "--model", str(linked / "model.json"),
                   "--previous", str(linked / "clusters.csv"), "--out", str(again), "--quiet"])
    assert status == 0
    before = pd.read_csv(linked / "clusters.csv", dtype=str).set_index("record_id").person_id
    after = pd.read_csv(again / "clusters.csv", dtype=str).set_index("record_id").person_id
    assert (before.sort_index() == after.sort_index()).all()
    assert json.loads((again / "summary.json").read_text())["events"] == {}


def test_impossible_date_is_nulled_and_counted_in_summary(county, linked, tmp_path):
    records = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    row = records.index[records.dob != ""][0]
    records.loc[row, "dob"] = "1983-02-30"
    path = tmp_path / "records.csv"
    records.to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["link", str(path), "--model", str(linked / "model.json"), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["impossible_dates"] >= 1
    assert any("impossible" in w for w in summary["warnings"])


def test_input_with_only_some_columns_links(tmp_path, county):
    records = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    slim = records[["record_id", "given_name", "family_name", "dob"]].head(1500)
    path = tmp_path / "slim.csv"
    slim.to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["link", str(path), "--out", str(out), "--max-pairs-u", "2e5", "--quiet"]) == 0
    model = json.loads((out / "model.json").read_text())
    compared = {c["output_column_name"] for c in model["splink"]["comparisons"]}
    assert compared == {"given_name", "family_name", "dob"}
    assert pd.read_csv(out / "clusters.csv").shape[0] == 1500


def test_a_trained_link_scores_pairs_as_its_saved_model_does(linked, county, tmp_path):
    """Training repairs levels it could not estimate after EM; the pairs it writes must be scored with the
    repaired model, exactly as a later link with the saved model.json scores them."""
    model = json.loads((linked / "model.json").read_text())
    assert model["training"]["levels_made_neutral"], "the fixture should exercise the repair"
    again = tmp_path / "again"
    assert main(["link", str(county / "records.csv"), "--model", str(linked / "model.json"), "--out", str(again),
                 "--quiet"]) == 0
    keys = ["record_id_l", "record_id_r"]
    first = pd.read_csv(linked / "pairs.csv", dtype={k: str for k in keys}).set_index(keys)["match_weight"]
    second = pd.read_csv(again / "pairs.csv", dtype={k: str for k in keys}).set_index(keys)["match_weight"]
    assert set(first.index) == set(second.index)
    assert (first - second.reindex(first.index)).abs().max() <= 1e-9
