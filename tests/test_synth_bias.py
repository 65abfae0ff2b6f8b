"""Injected bias in the synthetic county (evaluation/synth/bias.py, SYNTH.md §8)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from evaluation.synth.bias import DEFAULT_GROUP, Bias
from evaluation.synth.county import generate_county
from evaluation.synth.messiness import measure_messiness
from tests.cli_run import run_briefing

# sha256 of the files of a 2 000-person county (seed 3) written by the generator *before* the bias
# flag existed. A deliberate change to the generator changes them: regenerate them then, after
# checking that the change is meant to alter the unbiased county. Issue 15 did so on purpose:
# serious-threat items now expire within 14 days of verification (context items, and the feedback
# and relevance that follow from them).
UNBIASED_2000_SEED_3 = {
    "records.csv": "44afaa84cdfd769b52fd122c7652c24ed56c64f679cabc4c1cfc36aec4da70f5",
    "truth.csv": "cec8a014292a7dcd94300c427d0fcf8f730fcd35c7048a9bd4000cb7c7feb30b",
    "demographics.csv": "d21c5010964a32a8043ad501ac0e46be600e9928f0d54d45ee86d240faf2df0e",
    "incidents.csv": "0e58a54693a5bb5e0281dd5b2ecbe38851519b2fccb84cf034e697b5e5893d9d",
    "context_items.csv": "275777a8fe0d97a7ba6806f0a318db564bb321512ffe8791c593387d1c263d26",
    "consents.csv": "b52b40b2b267be3c37c95dbb88b1a4859d372f24f384d33bb77df3a938334b3f",
    "feedback.csv": "eb6f8747a54f56a35d0bf68e12319702f955da8f2c025974e7b9401f1b8e0120",
    "relevance.csv": "5f895f109a33383a55837d29e07c5cf7e0a2a650bc65a5e319e2810312b0bbaa",
}
PERSONS, SEED = 4000, 5
NAME_COLUMNS = ["given_name", "family_name"]


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def counties(tmp_path_factory):
    out = {}
    for bias in (None, "matching", "data"):
        summary = generate_county(PERSONS, SEED, tmp_path_factory.mktemp(f"county_{bias}"), progress=False, bias=bias)
        tables = {name: _read(path) for name, path in summary.paths.items()}
        race = tables["demographics"].set_index("person_key")["race_ethnicity"]
        tables["records"]["race"] = tables["truth"].set_index("record_id")["person_key"].map(race) \
            .reindex(tables["records"]["record_id"]).to_numpy()
        out[bias] = (summary, tables)
    return out


def test_without_a_bias_the_files_are_those_of_the_generator_before_the_flag(tmp_path):
    summary = generate_county(2000, 3, tmp_path, progress=False, bias=None, bias_group=None)
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in summary.paths.values()}
    assert got == UNBIASED_2000_SEED_3


def test_matching_bias_garbles_only_the_groups_names(counties):
    plain, biased = counties[None][1], counties["matching"][1]
    for name in ("truth", "demographics", "incidents", "context_items", "consents", "feedback", "relevance"):
        assert plain[name].equals(biased[name]), name
    a, b = plain["records"], biased["records"]
    assert a["record_id"].equals(b["record_id"])
    others = [c for c in a.columns if c not in NAME_COLUMNS]
    assert a[others].equals(b[others])                              # every non-name field, every person
    group = a["race"] == DEFAULT_GROUP["matching"]
    assert a.loc[~group, NAME_COLUMNS].equals(b.loc[~group, NAME_COLUMNS])
    changed = (a.loc[group, NAME_COLUMNS] != b.loc[group, NAME_COLUMNS]).any(axis=1).mean()
    assert 0.3 < changed < 0.8
    truth = plain["truth"]
    in_group = truth["record_id"].isin(a.loc[group, "record_id"])
    before = measure_messiness(a[group.to_numpy()], truth[in_group])
    after = measure_messiness(b[group.to_numpy()], truth[in_group])
    assert after["family_name_varied"] > 2 * before["family_name_varied"]
    assert after["given_name_varied"] > 1.5 * before["given_name_varied"]


def test_data_bias_adds_police_records_and_unverified_safety_flags_for_the_group(counties):
    group = DEFAULT_GROUP["data"]
    rows = {}
    for bias in (None, "data"):
        summary, t = counties[bias]
        persons = t["demographics"]["race_ethnicity"].value_counts()
        rec = t["records"]
        police = rec[rec["source_system"].isin(["RMS", "CAD"])].groupby("race").size() / persons
        items = t["context_items"].merge(rec[["record_id", "race"]], on="record_id")
        flags = items[items["category"] == "safety_flag"]
        rows[bias] = {"police": police, "flags": flags.groupby("race").size() / persons,
                      "unverified": flags.groupby("race")["last_verified_at"].apply(lambda s: (s == "").mean()),
                      "records": summary.n_records}
    plain, biased = rows[None], rows["data"]
    assert 1.6 < biased["police"][group] / plain["police"][group] < 2.4
    others = plain["police"].index.drop(group)
    np.testing.assert_allclose(biased["police"][others], plain["police"][others])   # nobody else's records change
    assert biased["flags"][group] > 1.5 * plain["flags"][group]
    assert biased["unverified"][group] > plain["unverified"][group] + 0.1
    assert biased["records"] > plain["records"]


def test_data_bias_keeps_every_other_record_as_it_was(counties):
    """The extra police records are new rows: the unbiased county's records are all there, ids aside."""
    a, b = counties[None][1]["records"], counties["data"][1]["records"]
    content = [c for c in a.columns if c != "record_id"]
    key = lambda f: f[content].apply(tuple, axis=1).value_counts()  # noqa: E731
    before, after = key(a), key(b)
    assert (after.reindex(before.index, fill_value=0) >= before).all()
    extra = b[~b[content].apply(tuple, axis=1).isin(before.index)]
    assert set(extra["race"]) == {DEFAULT_GROUP["data"]}
    assert set(extra["source_system"]) <= {"RMS", "CAD"}


def test_bias_arguments_are_checked():
    assert Bias.make(None) is None
    assert Bias.make("matching") == Bias("matching", "api")
    assert Bias.make("data", "hispanic") == Bias("data", "hispanic")
    with pytest.raises(ValueError, match="bias must be one of"):
        Bias.make("names")
    with pytest.raises(ValueError, match="bias_group must be one of"):
        Bias.make("data", "martian")
    with pytest.raises(ValueError, match="needs a bias kind"):
        Bias.make(None, "api")


def test_briefing_synth_takes_the_bias_flags(tmp_path, capsys):
    status, error = run_briefing(["synth", "--persons", "600", "--seed", "2", "--out", str(tmp_path / "c"), "--quiet",
                                  "--bias", "matching", "--bias-group", "hispanic"])
    assert (status, error) == (0, "")
    printed = json.loads(capsys.readouterr().out)
    assert printed["bias"] == "matching" and printed["bias_group"] == "hispanic"
    status, error = run_briefing(["synth", "--persons", "600", "--out", str(tmp_path / "d"), "--quiet",
                                  "--bias-group", "api"])
    assert status == 2 and "--bias-group needs --bias" in error
    assert not (tmp_path / "d").exists()
