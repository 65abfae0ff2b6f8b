"""`evaluate_ranking` / `briefing eval ranking`: the figures, their invariants, and a split that never
lets the scorecard see a test incident."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

import scoring.ranker_fit as ranker_fit
from evaluation.ranking.evaluate import average_precision, evaluate_ranking, ndcg, split_incidents
from evaluation.synth.county import generate_county
from scoring.item import ContextItem
from scoring.rank import rank
from scoring.ranker_fit import feedback_hash
from scoring.rules import Rules
from tests.cli_run import run_briefing

PERSONS, SEED = 3000, 1
BOOT = 300


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_ranking_county")
    generate_county(PERSONS, SEED, out, progress=False)
    return out


@pytest.fixture(scope="module")
def report(county):
    return evaluate_ranking(county, seed=0, bootstrap=BOOT)




# --------------------------------------------------------------------------- metrics


def test_ndcg_and_average_precision_by_hand():
    assert ndcg([3, 2, 1, 0], 5) == 1.0
    assert ndcg([0, 3], 3) == pytest.approx((3 / math.log2(3)) / 3)
    assert math.isnan(ndcg([0, 0], 5))
    assert ndcg([1, 0, 0, 0, 0, 3], 5) == pytest.approx(1 / (3 + 1 / math.log2(3)))  # the 3 is below the cut
    assert average_precision([2, 0, 3]) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert math.isnan(average_precision([1, 1, 0]))


# --------------------------------------------------------------------------- the report


def test_report_has_every_figure_with_confidence_intervals(report):
    for metric in ("ndcg_at_5", "ndcg_at_3", "map"):
        assert set(report[metric]) == {"rules", "model", "combined"}
        for method, entry in report[metric].items():
            low, high = entry["ci95"]
            assert 0.0 <= low <= entry["mean"] <= high <= 1.0, (metric, method)
            assert entry["n_incidents"] > 50
    low, high = report["combined_minus_rules_ci95"]
    assert low <= report["combined_minus_rules"] <= high
    n = report["n_incidents"]
    assert n["train"] + n["test"] == n["total"] == 1000 and 0 < n["test_ranked"] <= n["test"]
    assert report["rules_version"] == Rules.load().version
    assert report["model"]["training_rows"] > 100
    json.dumps(report)  # JSON-able as is


def test_invariants_expired_never_shown_pin_held_no_doubtful_danger_first(report):
    assert report["expired_shown"] == 0
    assert report["safety_pin_incidents"] > 0 and report["safety_pin_recall"] == 1.0, report["safety_pin_misses"]
    assert report["unverified_danger_top1"] == 0
    assert report["unverified_danger_top1_by_method"] == {"rules": 0, "model": 0, "combined": 0}


def test_the_learned_orderings_are_far_better_than_chance(report):
    # a random order of these short item lists scores about 0.84 NDCG@5 (measured); the rankings must beat it clearly
    for method in ("rules", "model", "combined"):
        assert report["ndcg_at_5"][method]["mean"] > 0.9


# --------------------------------------------------------------------------- the split


def test_split_is_seeded_disjoint_and_complete():
    ids = [f"INC-{k:08d}" for k in range(101)]
    train, test = split_incidents(ids, 0, 0.5)
    assert not set(train) & set(test) and sorted(train + test) == ids and len(test) == 50
    assert split_incidents(ids, 0, 0.5) == (train, test)
    assert split_incidents(ids, 1, 0.5)[1] != test
    with pytest.raises(ValueError):
        split_incidents(ids, 0, 1.0)


def test_evaluation_never_trains_on_a_test_incident(county, monkeypatch):
    seen = []
    real = ranker_fit.train_scorecard

    def spy(examples, **kw):
        seen.append(examples.rows.copy())
        return real(examples, **kw)

    monkeypatch.setattr(ranker_fit, "train_scorecard", spy)
    result = evaluate_ranking(county, seed=3, bootstrap=0)
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    feedback = pd.read_csv(county / "feedback.csv", dtype=str, keep_default_na=False)
    train, test = split_incidents(incidents["incident_id"], 3, 0.5)
    assert len(seen) == 1
    used = set(seen[0]["incident_id"])
    assert used and not used & set(test) and used <= set(train)
    expected = feedback[feedback["incident_id"].isin(set(train))]
    assert len(seen[0]) == len(expected)
    assert result["model"]["training_data_sha256"] == feedback_hash(expected)


def test_the_training_data_hash_changes_with_the_split_seed(county, report):
    other = evaluate_ranking(county, seed=1, bootstrap=0)
    assert other["model"]["training_data_sha256"] != report["model"]["training_data_sha256"]
    assert other["split"]["test_incident_ids_sha256"] != report["split"]["test_incident_ids_sha256"]


# --------------------------------------------------------------------------- command


def test_eval_ranking_prints_a_table_and_writes_json(county, tmp_path, capsys):
    out = tmp_path / "reports" / "ranking.json"
    status, err = run_briefing(["eval", "ranking", str(county), "--json", str(out), "--bootstrap", "50", "--quiet"])
    assert status == 0, err
    text = capsys.readouterr().out
    assert "ndcg_at_5" in text and "rules + model" in text and "safety-pin recall" in text
    written = json.loads(out.read_text())
    assert written["bootstrap"]["replicates"] == 50 and set(written["ndcg_at_5"]) == {"rules", "model", "combined"}


@pytest.mark.parametrize("missing", ["relevance.csv", "feedback.csv", "context_items.csv", "truth.csv"])
def test_eval_ranking_names_a_missing_file(county, tmp_path, missing):
    copy = tmp_path / "county"
    shutil.copytree(county, copy)
    (copy / missing).unlink()
    status, err = run_briefing(["eval", "ranking", str(copy), "--json", str(tmp_path / "r.json"), "--quiet"])
    assert status == 2 and missing in err and not (tmp_path / "r.json").exists()


def test_add_parsers_puts_ranking_under_the_existing_eval_command():
    from api.cli.main import build_parser

    parser = build_parser()                    # api.cli.main registers the ranking commands itself
    assert parser.parse_args(["eval", "ranking", "DIR"]).func.__name__ == "cmd_eval_ranking"
    assert parser.parse_args(["eval", "linkage", "--clusters", "c", "--truth", "t"]).func.__name__ == "cmd_eval_linkage"
    assert parser.parse_args(["train-ranker", "DIR", "--out", "r.json"]).out == "r.json"
    with pytest.raises(SystemExit):            # a command writes only where it is told to: no default --out
        parser.parse_args(["train-ranker", "DIR"])


# --------------------------------------------------------------------------- merged copies and the safety pin


def test_a_recent_safety_event_merged_under_an_older_reverified_copy_is_still_pinned():
    now = datetime(2026, 2, 1, tzinfo=timezone.utc)
    rules = Rules.load()

    def item(item_id, category, code, observed, verified, agency, source="clinician"):
        return ContextItem(item_id=item_id, record_id=f"R-{item_id}", record_agency=agency, category=category, code=code,
                           legal_category="CJI", source_type=source, observed_at=now - timedelta(days=observed),
                           last_verified_at=now - timedelta(days=verified))

    knife_old = item("K1", "safety_flag", "SAFE_WEAPON_KNIFE", 600, 20, "METRO_PD", "officer")   # re-verified lately
    knife_new = item("K2", "safety_flag", "SAFE_WEAPON_KNIFE", 100, 90, "COUNTY_911", "officer")  # pinnable on its own
    assert not rules.is_pinnable(knife_old, now) and rules.is_pinnable(knife_new, now)
    others = [item(f"A{k}", "effective_approach", f"APPR_{k}", 30, 30, "COUNTY_BH") for k in range(5)]
    ranked = rank(others + [knife_old, knife_new], "welfare_check", "certain", now, rules)
    position = next(k for k, line in enumerate(ranked) if line.code == "SAFE_WEAPON_KNIFE")
    assert position < 3
