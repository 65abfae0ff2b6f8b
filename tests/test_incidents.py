"""Synthetic 911 incidents (incidents.csv): format, determinism, truth, noise, queries."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evaluation.synth.county import generate_county
from evaluation.synth.incidents import incident_queries, write_queries_jsonl

PERSONS, SEED = 2000, 3
EXPECTED_COLUMNS = [
    "incident_id", "call_type", "received_at", "location_street", "location_city", "location_postcode",
    "callback_phone", "subject_given_name", "subject_middle_name", "subject_family_name", "subject_name_suffix",
    "subject_dob", "subject_approx_age", "subject_sex", "subject_phone", "subject_email", "subject_street",
    "subject_city", "subject_postcode", "person_key",
]
CALL_TYPES = {"disturbance", "welfare_check", "overdose", "suicidal_person", "mental_health_crisis", "trespass",
              "domestic", "medical", "missing_person", "other"}
PHONE = r"\(\d{3}\) \d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\d{10}|\d{3}\.\d{3}\.\d{4}|\+1 \d{3} \d{3} \d{4}"


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("incidents")
    summary = generate_county(PERSONS, SEED, out, progress=False)
    return (summary, _read(summary.paths["incidents"]), _read(summary.paths["records"]),
            _read(summary.paths["truth"]), _read(summary.paths["demographics"]))


def test_columns_order_and_formats(county):
    summary, inc = county[0], county[1]
    header = summary.paths["incidents"].read_text().split("\n", 1)[0]
    assert header.split(",") == EXPECTED_COLUMNS
    assert list(inc.columns) == EXPECTED_COLUMNS
    assert len(inc) == summary.n_incidents == 1000  # max(1000, 2000 // 8)
    assert set(inc["call_type"]) == CALL_TYPES
    assert inc["callback_phone"].str.fullmatch(PHONE).all()
    assert inc["subject_phone"].str.fullmatch(f"({PHONE})?").all()
    assert (inc["location_street"] != "").all() and inc["location_postcode"].str.fullmatch(r"\d{5}").all()
    assert inc["subject_dob"].str.fullmatch(r"(\d{4}-\d{2}-\d{2})?").all()
    assert inc["subject_approx_age"].str.fullmatch(r"(\d{1,3})?").all()
    assert set(inc["subject_sex"]) <= {"M", "F", "U", ""}
    assert inc["person_key"].str.fullmatch(r"(P\d{8})?").all()
    for col in EXPECTED_COLUMNS:
        assert not inc[col].str.contains(r"[,\"\n]").any(), col


def test_same_seed_gives_identical_incidents(county, tmp_path):
    summary = county[0]
    again = generate_county(PERSONS, SEED, tmp_path / "again", progress=False)
    assert again.paths["incidents"].read_bytes() == summary.paths["incidents"].read_bytes()
    other = generate_county(PERSONS, SEED + 1, tmp_path / "other", progress=False)
    assert other.paths["incidents"].read_bytes() != summary.paths["incidents"].read_bytes()
    fewer = generate_county(PERSONS, SEED, tmp_path / "fewer", progress=False, n_incidents=300)
    assert len(_read(fewer.paths["incidents"])) == 300
    assert not list(summary.paths["incidents"].parent.glob(".*tmp*"))


def test_about_a_tenth_of_subjects_have_no_record(county):
    summary, inc, truth = county[0], county[1], county[3]
    empty = inc["person_key"] == ""
    assert 0.07 <= empty.mean() <= 0.13
    keys = set(truth["person_key"])
    assert set(inc.loc[~empty, "person_key"]) <= keys
    # subjects without a record are real (latent) people: mostly named, never linked
    assert (inc.loc[empty, "subject_given_name"] != "").mean() > 0.7
    # frequent callers recur: subjects are weighted towards high utilisers
    n_rec = summary.persons.set_index("person_key")["n_records"]
    assert n_rec[inc.loc[~empty, "person_key"]].mean() > 1.5 * n_rec[n_rec > 0].mean()


def test_approx_age_is_close_to_true_birth_year(county):
    inc, demo = county[1], county[4]
    k = inc[(inc["person_key"] != "") & (inc["subject_approx_age"] != "")]
    birth = k["person_key"].map(demo.set_index("person_key")["birth_year"].astype(int))
    implied = k["received_at"].str[:4].astype(int) - k["subject_approx_age"].astype(int)
    err = (implied - birth).abs()
    assert len(k) > 0.7 * (inc["person_key"] != "").sum()
    assert (err <= 10).mean() > 0.9
    assert err.max() <= 30
    assert (err > 1).mean() > 0.2  # a caller's guess, not the truth


def test_incidents_follow_the_record_window(county):
    inc, records = county[1], county[2]
    fmt = r"2026-0[1-6]-\d\dT\d\d:\d\d:00-0[45]:00"
    assert inc["received_at"].str.fullmatch(fmt).all()
    t = pd.to_datetime(inc["received_at"], utc=True)
    assert t.min() > pd.to_datetime(records["recorded_at"], utc=True).max()
    assert t.max() < pd.Timestamp("2026-07-01T04:00Z")
    assert t.max() - t.min() > pd.Timedelta(days=150)  # spread over the six months


def test_incident_ids_unique_and_increasing_with_time(county):
    inc = county[1]
    assert inc["incident_id"].str.fullmatch(r"INC-\d{8}").all()
    assert inc["incident_id"].is_unique
    num = inc["incident_id"].str[4:].astype(int).to_numpy()
    t = pd.to_datetime(inc["received_at"], utc=True).astype("int64").to_numpy()
    order = np.argsort(num, kind="stable")
    assert (np.diff(num[order]) > 0).all()
    assert (np.diff(t[order]) >= 0).all()


def test_subject_is_partial_and_noisy(county):
    summary, inc = county[0], county[1]
    k = inc[inc["person_key"] != ""]
    latent = summary.persons.set_index("person_key").loc[k["person_key"]]
    given = k["subject_given_name"].str.upper().to_numpy()
    present = given != ""
    exact = given[present] == latent["given_name"].to_numpy()[present]
    assert 0.5 < exact.mean() < 0.95
    share = lambda col: (inc[col] != "").mean()  # noqa: E731
    assert 0.85 < share("subject_given_name") < 0.99
    assert 0.75 < share("subject_family_name") < 0.97
    assert 0.08 < share("subject_dob") < 0.25
    assert share("subject_approx_age") > 0.75
    assert share("subject_middle_name") < 0.15 and share("subject_email") < 0.03
    # the subject's address is only ever the scene (an incident at their home)
    at_home = inc["subject_street"] != ""
    assert 0.3 < at_home.mean() < 0.7
    assert (inc.loc[at_home, "subject_street"] == inc.loc[at_home, "location_street"]).all()
    assert (inc.loc[at_home, "subject_postcode"] == inc.loc[at_home, "location_postcode"]).all()
    # the subject's phone, when there is one, is the number that called
    has_phone = inc["subject_phone"] != ""
    assert 0.3 < has_phone.mean() < 0.8
    assert (inc.loc[has_phone, "subject_phone"] == inc.loc[has_phone, "callback_phone"]).all()
    # some subjects are near-empty ("unknown male, about 40")
    blank = (inc[["subject_given_name", "subject_family_name", "subject_dob", "subject_phone"]] == "").all(1)
    assert 0.005 < blank.mean() < 0.06


def test_call_type_depends_on_behavioural_health(county):
    summary, inc = county[0], county[1]
    bh_keys = set(summary.persons.loc[summary.persons["bh_client"], "person_key"])
    bh = inc["person_key"].isin(bh_keys)
    crisis = inc["call_type"].isin(["mental_health_crisis", "suicidal_person"])
    assert crisis[bh].mean() > 1.5 * crisis[~bh].mean()


def test_incident_queries_strip_prefix_and_omit_empties(tmp_path):
    df = pd.DataFrame([
        {"incident_id": "INC-00000001", "call_type": "medical", "received_at": "2026-01-02T10:00:00-05:00",
         "location_street": "1 OAK ST", "callback_phone": "6142013344", "subject_given_name": "BOB",
         "subject_middle_name": "", "subject_family_name": "SMITH", "subject_dob": "",
         "subject_approx_age": "40", "subject_sex": "M", "subject_phone": "6142013344", "subject_street": "",
         "person_key": "P00000001"},
        {"incident_id": "INC-00000002", "call_type": "other", "received_at": "2026-01-03T10:00:00-05:00",
         "location_street": "2 ELM ST", "callback_phone": "6142013345", "subject_given_name": "",
         "subject_middle_name": "J", "subject_family_name": "", "subject_dob": "1980-01-02",
         "subject_approx_age": "", "subject_sex": "", "subject_phone": "", "subject_street": "2 ELM ST",
         "person_key": ""},
    ])
    q = incident_queries(df)
    assert q == [
        {"given_name": "BOB", "family_name": "SMITH", "approx_age": 40, "sex": "M", "phone": "6142013344",
         "received_at": "2026-01-02T10:00:00-05:00"},
        {"middle_name": "J", "dob": "1980-01-02", "street": "2 ELM ST", "received_at": "2026-01-03T10:00:00-05:00"},
    ]
    assert isinstance(q[0]["approx_age"], int)
    path = write_queries_jsonl(df, tmp_path / "q.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == q


def test_incident_queries_on_generated_incidents(county, tmp_path):
    inc = county[1]
    q = incident_queries(inc)
    assert len(q) == len(inc)
    allowed = {"given_name", "middle_name", "family_name", "name_suffix", "dob", "approx_age", "sex", "phone",
               "email", "street", "city", "postcode", "received_at"}
    assert all(set(x) <= allowed and all(v != "" for v in x.values()) for x in q)
    assert sum("given_name" in x for x in q) == (inc["subject_given_name"] != "").sum()
    assert [x["received_at"] for x in q] == inc["received_at"].tolist()
    lines = write_queries_jsonl(inc, tmp_path / "all.jsonl").read_text().splitlines()
    assert len(lines) == len(inc) and json.loads(lines[7]) == q[7]
