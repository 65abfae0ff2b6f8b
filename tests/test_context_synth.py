"""Synthetic context in the county: context_items.csv, consents.csv, feedback.csv, relevance.csv."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import evaluation.synth.county as county_mod
from evaluation.synth.county import generate_county

PERSONS, SEED = 2000, 1
CONTEXT_FILES = ("context_items", "consents", "feedback", "relevance")
ITEM_COLUMNS = ["item_id", "record_id", "category", "code", "text", "legal_category", "security_labels", "consent_id",
                "disclosure_basis", "source_type", "observed_at", "last_verified_at", "review_due", "expires_at",
                "status"]
CONSENT_COLUMNS = ["consent_id", "record_id", "recipients", "purposes", "categories", "valid_from", "valid_until",
                   "revoked_at", "discloser", "description", "signed_at"]
CATEGORIES = {"communication_need", "sensory_need", "trauma_trigger", "effective_approach", "ineffective_approach",
              "medical", "cognitive_developmental", "safety_flag", "service_connection", "legal_status",
              "housing_context", "recent_event"}
LEGAL = {"CJI", "PHI", "PART2", "VOLUNTARY_REGISTRY", "AGENCY_OPERATIONAL"}
ROLES = {"dispatcher", "officer", "co_responder", "ems", "feed", "steward", "auditor", "admin"}
AGENCY_NAMES = {"METRO_PD", "COUNTY_911", "COUNTY_EMS", "COUNTY_BH", "CRISIS_LINE", "REGISTRY"}
PURPOSES = {"EMERGENCY", "LAW", "TREATMENT", "THREAT"}
BASES = {"consent", "registry_authorization", "hipaa_treatment", "serious_threat", "part2_medical_emergency", "cjis",
         "operational"}
LABELS = {"N", "R", "V", "ETH", "BH", "SDV", "NORDSCLCD"}
SPECIFIC_SAFETY = {"SAFE_WEAPON_KNIFE", "SAFE_WEAPON_FIREARM", "SAFE_ASSAULT_OFFICER", "SAFE_THREAT_DISCLOSURE",
                   "EVT_WEAPON_KNIFE", "EVT_WEAPON_FIREARM", "EVT_ASSAULT", "EVT_DV_INCIDENT"}
DIAGNOSIS_LABELS = r"(?i)schizo|psychot|psycho\b|bipolar|dangerous|crazy|insane|lunatic|violent|addict|junkie|" \
                   r"retard|autistic|demented|mentally ill|borderline|paranoid|disorder"
INCIDENTS_START = pd.Timestamp("2026-01-01")


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("context")
    summary = generate_county(PERSONS, SEED, out, progress=False)
    t = {name: _read(p) for name, p in summary.paths.items()}
    items = t["context_items"].merge(t["truth"], on="record_id", how="left").merge(
        t["records"][["record_id", "source_system", "recorded_at"]], on="record_id", how="left")
    return summary, t, items


def test_files_have_exactly_the_documented_columns(county):
    summary, t, _ = county
    expected = {"context_items": ITEM_COLUMNS, "consents": CONSENT_COLUMNS,
                "feedback": ["incident_id", "item_id", "helped"], "relevance": ["incident_id", "item_id", "relevance"]}
    for name, cols in expected.items():
        header = summary.paths[name].read_text().split("\n", 1)[0]
        assert header.split(",") == cols, name
        assert list(t[name].columns) == cols, name
    assert (summary.n_context_items, summary.n_consents, summary.n_feedback, summary.n_relevance) == tuple(
        len(t[n]) for n in CONTEXT_FILES)
    items = t["context_items"]
    assert items["item_id"].is_unique and items["item_id"].str.fullmatch(r"CI-\d{8}").all()
    assert items["item_id"].is_monotonic_increasing
    assert t["consents"]["consent_id"].is_unique and t["consents"]["consent_id"].str.fullmatch(r"CNS-\d{8}").all()
    assert set(items["category"]) == CATEGORIES            # all twelve occur
    assert set(items["legal_category"]) == LEGAL
    assert set(items["source_type"]) <= {"clinician", "caregiver", "self", "officer", "dispatcher", "system"}
    assert set(items["status"]) == {"active", "retracted", "entered_in_error"}
    assert set(items["disclosure_basis"]) <= BASES
    assert items["code"].str.fullmatch(r"[A-Z]+(_[A-Z0-9]+)+").all()
    for s in items["security_labels"]:
        assert set(s.split("|")) <= LABELS and s.split("|")[0] in {"N", "R", "V"}, s
    for col in ("observed_at", "review_due"):
        assert items[col].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all(), col
    for col in ("last_verified_at", "expires_at"):
        assert items[col].str.fullmatch(r"(\d{4}-\d{2}-\d{2})?").all(), col
    for name in CONTEXT_FILES:  # nothing that would need CSV quoting
        assert '"' not in summary.paths[name].read_text(), name


def test_same_seed_gives_identical_context_files(county, tmp_path):
    summary = county[0]
    again = generate_county(PERSONS, SEED, tmp_path / "again", progress=False)
    for name in CONTEXT_FILES:
        assert again.paths[name].read_bytes() == summary.paths[name].read_bytes(), name
    other = generate_county(PERSONS, SEED + 1, tmp_path / "other", progress=False)
    assert other.paths["context_items"].read_bytes() != summary.paths["context_items"].read_bytes()
    assert not list(summary.paths["records"].parent.glob(".*tmp*")), "temporary files left behind"


def test_files_do_not_depend_on_pythonhashseed(county, tmp_path):
    summary = county[0]
    out = tmp_path / "hashseed"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "evaluation.synth.county", "--persons", str(PERSONS), "--seed", str(SEED),
                    "--out", str(out), "--quiet"], check=True, env=env, cwd=root, capture_output=True)
    for name, path in summary.paths.items():
        assert (out / f"{name}.csv").read_bytes() == path.read_bytes(), name


def test_context_generation_leaves_records_and_incidents_unchanged(county, tmp_path, monkeypatch):
    """Records, truth, demographics and incidents are the same bytes with the context step stubbed out."""
    summary = county[0]

    def empty(*args):  # no context generation at all
        ct = SimpleNamespace(items=pd.DataFrame(columns=ITEM_COLUMNS), consents=pd.DataFrame(columns=CONSENT_COLUMNS))
        return ct, pd.DataFrame(columns=["incident_id", "item_id", "relevance"]), \
            pd.DataFrame(columns=["incident_id", "item_id", "helped"])

    monkeypatch.setattr(county_mod, "synth_context", empty)
    bare = generate_county(PERSONS, SEED, tmp_path / "bare", progress=False)
    assert bare.n_context_items == 0
    for name in ("records", "truth", "demographics", "incidents"):
        assert bare.paths[name].read_bytes() == summary.paths[name].read_bytes(), name


def test_items_hang_on_existing_records_of_plausible_agencies(county):
    _, t, items = county
    assert items["person_key"].ne("").all() and items["person_key"].notna().all()   # record_id is in records.csv
    where = items.groupby("legal_category")["source_system"].agg(set).to_dict()
    assert where["CJI"] <= {"RMS", "CAD"}
    assert where["PART2"] == {"EHR"}
    assert where["VOLUNTARY_REGISTRY"] == {"VR"}
    assert where["PHI"] <= {"EPCR", "EHR", "988"}
    assert where["AGENCY_OPERATIONAL"] <= {"CAD"}
    # persons without records (strangers) have no items; items are spread over many persons
    strangers = set(county[0].persons.loc[~county[0].persons["has_records"], "person_key"])
    assert not strangers & set(items["person_key"])
    assert items["person_key"].nunique() > 0.3 * PERSONS
    # an item is observed on or after its record's date, before the incidents
    assert (items["observed_at"] >= items["recorded_at"].str[:10]).all()
    assert (pd.to_datetime(items["observed_at"]) < INCIDENTS_START).all()
    verified = items["last_verified_at"] != ""
    assert (items.loc[verified, "last_verified_at"] >= items.loc[verified, "observed_at"]).all()
    assert (pd.to_datetime(items.loc[verified, "last_verified_at"]) < INCIDENTS_START).all()


def test_part2_consents_name_a_record_of_the_same_person(county):
    _, t, items = county
    cons = t["consents"].merge(t["truth"], on="record_id", how="left").merge(
        t["records"][["record_id", "source_system"]], on="record_id", how="left")
    assert cons["person_key"].notna().all() and (cons["source_system"] == "EHR").all()
    p2 = items[items["legal_category"] == "PART2"]
    with_consent = p2[p2["consent_id"] != ""]
    assert len(with_consent) > 0 and (p2["consent_id"] == "").any()
    joined = with_consent.merge(cons[["consent_id", "person_key"]], on="consent_id", how="left",
                                suffixes=("", "_consent"))
    assert joined["person_key_consent"].notna().all(), "consent_id not in consents.csv"
    assert (joined["person_key_consent"] == joined["person_key"]).all()
    assert (with_consent["disclosure_basis"] == "consent").all()
    assert (p2.loc[p2["consent_id"] == "", "disclosure_basis"] == "part2_medical_emergency").all()
    # vocabulary of the consents
    for col, vocab in (("recipients", ROLES | AGENCY_NAMES), ("purposes", PURPOSES), ("categories", LEGAL | CATEGORIES)):
        for v in cons[col]:
            assert v and set(v.split("|")) <= vocab, (col, v)
    assert (cons["valid_from"] < cons["valid_until"]).all()
    assert (cons["signed_at"] <= cons["valid_from"]).all() and cons["description"].ne("").all()
    assert (cons["discloser"] == "COUNTY_BH").all()
    assert (pd.to_datetime(cons["valid_until"]) < INCIDENTS_START).any(), "no expired consent"
    assert (cons["revoked_at"] != "").any(), "no revoked consent"
    assert cons["recipients"].str.contains("co_responder|ems", regex=False).any()
    assert cons["recipients"].str.split("|").map(lambda r: "officer" in r).any()


def test_consents_cover_exactly_the_items_of_their_scope(county):
    """Every BH-agency item of a consenting person in the consent's legal (and item) categories carries its id; no other item does."""
    _, t, items = county
    cons = t["consents"].merge(t["truth"], on="record_id")
    expected = pd.Series("", index=items.index)
    for c in cons.itertuples():
        legal, *cats = c.categories.split("|")
        m = (items["person_key"] == c.person_key) & (items["source_system"] == "EHR") & (items["legal_category"] == legal)
        if cats:
            m &= items["category"].isin(cats)
        assert (expected[m] == "").all(), "two consents cover one item"
        expected[m] = c.consent_id
    assert (items["consent_id"] == expected).all()


def test_required_variety(county):
    _, t, items = county
    review = pd.to_datetime(items["review_due"])
    expires = pd.to_datetime(items["expires_at"].replace("", None))
    observed = pd.to_datetime(items["observed_at"])
    stale = review < INCIDENTS_START
    assert 0.05 < stale.mean() < 0.6
    assert 0.01 < (expires < INCIDENTS_START).mean() < 0.3
    # corroborated: the same need (category + code) of a person at two agencies
    per_need = items.groupby(["person_key", "category", "code"])["source_system"].nunique()
    assert (per_need >= 2).sum() >= 20
    # unverified danger labels
    safety = items["category"] == "safety_flag"
    unverified = safety & (items["last_verified_at"] == "") & items["source_type"].isin(["dispatcher", "system"])
    assert unverified.sum() >= 10
    assert (items.loc[items["code"].str.startswith("SAFE_CAUTION"), "last_verified_at"] == "").all()
    # recent, verified, specific safety events for a minority of persons
    recent = (items["code"].isin(SPECIFIC_SAFETY) & (items["last_verified_at"] != "")
              & (observed >= INCIDENTS_START - pd.Timedelta(days=365)) & (items["status"] == "active")
              & ~(expires < INCIDENTS_START))
    persons = items.loc[recent, "person_key"].nunique()
    assert 10 <= persons < 0.15 * PERSONS
    assert (items.loc[recent, "category"].isin(["recent_event", "safety_flag"])).all()
    assert (items["status"] == "active").mean() > 0.9


def test_text_describes_behaviour_with_source_and_month(county):
    items = county[2]
    assert not items["text"].str.contains(DIAGNOSIS_LABELS, regex=True).any(), \
        items.loc[items["text"].str.contains(DIAGNOSIS_LABELS, regex=True), "text"].head().tolist()
    assert not items["text"].str.contains(",").any()
    suffix = items["text"].str.extract(r"\(([a-zA-Z -]+); (\d{4}-\d{2})\)$")
    assert suffix.notna().all().all()
    assert (suffix[1] == items["observed_at"].str[:7]).all()
    assert items["text"].str.len().between(20, 200).all()


def _incident_view(t):
    inc = t["incidents"][["incident_id", "call_type", "received_at", "person_key"]].rename(
        columns={"person_key": "subject"})
    return inc


def test_relevance_covers_every_item_of_each_subject_and_zeroes_dead_items(county):
    _, t, items = county
    rel = t["relevance"].merge(_incident_view(t), on="incident_id", how="left").merge(
        items[["item_id", "person_key", "status", "expires_at", "category"]], on="item_id", how="left")
    rel["relevance"] = rel["relevance"].astype(int)
    assert rel["relevance"].between(0, 3).all()
    assert (rel["subject"] == rel["person_key"]).all()
    per_person = items.groupby("person_key").size()
    inc = _incident_view(t)
    expected = inc["subject"].map(per_person).fillna(0).astype(int)
    got = inc["incident_id"].map(t["relevance"].groupby("incident_id").size()).fillna(0).astype(int)
    assert (expected == got).all()
    assert not t["relevance"].duplicated(["incident_id", "item_id"]).any()
    day = rel["received_at"].str[:10]
    dead = (rel["status"] != "active") | ((rel["expires_at"] != "") & (rel["expires_at"] <= day))
    assert dead.any() and (rel.loc[dead, "relevance"] == 0).all()
    assert set(rel["relevance"]) == {0, 1, 2, 3}
    # call type matters: medical items matter more at medical/overdose calls than at trespass
    med = rel[rel["category"] == "medical"]
    assert med[med["call_type"].isin(["medical", "overdose"])]["relevance"].mean() > \
        med[med["call_type"] == "trespass"]["relevance"].mean()


def test_feedback_is_about_shown_items_of_the_subject_and_noisy(county):
    _, t, items = county
    fb = t["feedback"].merge(_incident_view(t), on="incident_id", how="left").merge(
        items[["item_id", "person_key", "status", "expires_at", "category"]], on="item_id", how="left").merge(
        t["relevance"], on=["incident_id", "item_id"], how="left")
    assert len(fb) > 100
    assert (fb["subject"] == fb["person_key"]).all()
    assert (fb["status"] == "active").all()
    assert ((fb["expires_at"] == "") | (fb["expires_at"] > fb["received_at"].str[:10])).all()
    assert fb["helped"].isin(["0", "1"]).all() and not fb.duplicated(["incident_id", "item_id"]).any()
    assert fb.groupby("incident_id").size().max() <= 6
    helped, rel = fb["helped"].astype(int), fb["relevance"].astype(int)
    assert helped[rel >= 2].mean() > helped[rel == 0].mean() + 0.2
    assert 0 < helped[rel == 0].mean() and helped[rel >= 2].mean() < 1          # noisy both ways
    by_cat = fb.assign(h=helped).groupby("category")["h"].mean()
    assert by_cat["effective_approach"] > by_cat["safety_flag"]
