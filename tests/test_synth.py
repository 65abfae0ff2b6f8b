"""Synthetic county generator: formats, determinism, realism, messiness minimums."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from evaluation.synth.county import generate_county
from matching.record import CANONICAL_COLUMNS as RECORD_COLUMNS
from evaluation.synth.messiness import MINIMUMS, measure_messiness
from evaluation.synth.names import surname_pool

PERSONS, SEED = 5000, 1


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("county")
    summary = generate_county(PERSONS, SEED, out, progress=False)
    read = lambda p: pd.read_csv(p, dtype=str, keep_default_na=False)  # noqa: E731
    records = read(summary.paths["records"])
    truth = read(summary.paths["truth"])
    demo = read(summary.paths["demographics"])
    joined = records.merge(truth, on="record_id").merge(
        summary.persons, on="person_key", suffixes=("", "_true"))
    return summary, records, truth, demo, joined


def _norm_family(s: pd.Series) -> pd.Series:
    return s.str.upper().str.strip()


def test_same_seed_gives_identical_files(county, tmp_path):
    summary = county[0]
    again = generate_county(PERSONS, SEED, tmp_path / "again", progress=False)
    for name, path in summary.paths.items():
        assert path.read_bytes() == again.paths[name].read_bytes(), name
    other = generate_county(PERSONS, SEED + 1, tmp_path / "other", progress=False)
    assert other.paths["records"].read_bytes() != summary.paths["records"].read_bytes()
    assert not list(summary.paths["records"].parent.glob(".*tmp*")), "temporary files left behind"


def test_records_have_exactly_the_canonical_columns(county):
    summary, records = county[0], county[1]
    header = summary.paths["records"].read_text().split("\n", 1)[0]
    assert header.split(",") == list(RECORD_COLUMNS)
    assert list(records.columns) == list(RECORD_COLUMNS)
    assert records["record_id"].is_unique
    assert records["record_id"].str.fullmatch(r"(RMS|CAD|EPCR|EHR|988|VR)-\d{8}").all()
    assert summary.n_records == len(records) and summary.n_persons == PERSONS
    dob = records["dob"][records["dob"] != ""]
    assert dob.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    impossible = pd.to_datetime(dob, format="%Y-%m-%d", errors="coerce").isna()
    assert impossible.mean() < 0.005
    assert set(records.loc[impossible[impossible].index, "source_system"]) <= {"VR"}
    assert records["birth_year"].str.fullmatch(r"(\d{4})?").all()
    has_dob = records["dob"] != ""
    assert (records.loc[has_dob, "birth_year"] == records.loc[has_dob, "dob"].str[:4]).all()
    assert set(records["sex"]) <= {"M", "F", "X", "U", ""}
    assert records["recorded_at"].str.fullmatch(r"20(1[89]|2[0-5])-\d\d-\d\dT\d\d:\d\d:00-0[45]:00").all()
    phone_formats = r"\(\d{3}\) \d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\d{10}|\d{3}\.\d{3}\.\d{4}|\+1 \d{3} \d{3} \d{4}|"
    assert records["phone"].str.fullmatch(phone_formats).all()
    assert records["postcode"].str.fullmatch(r"(\d{5}(-\d{4})?)?").all()
    assert records["ssn_last4"].str.fullmatch(r"(\d{4})?").all()
    assert records["email"].str.fullmatch(r"([a-z0-9.]+@example\.(com|net|org))?").all()
    for col in ("given_name", "family_name", "street", "aliases"):
        assert not records[col].str.contains(r"[,\"\n]").any(), col
    shares = records["source_system"].value_counts(normalize=True)
    expected = {"RMS": 0.30, "CAD": 0.24, "EPCR": 0.20, "EHR": 0.13, "988": 0.05, "VR": 0.08}
    for k, v in expected.items():
        assert abs(shares[k] - v) < 0.03, (k, shares[k])


def test_within_person_messiness_meets_minimums(county):
    records, truth = county[1], county[2]
    rates = measure_messiness(records, truth)
    for key, minimum in MINIMUMS.items():
        assert rates[key] >= minimum, (key, rates[key])
    assert rates["n_pairs"] > 10_000
    # DOB-bearing pairs mostly agree: strong identifiers stay right most of the time
    assert rates["dob_different_given_both_present"] < 0.05


def test_measure_messiness_counts_pairs_as_documented():
    records = pd.DataFrame({
        "record_id": ["a", "b", "c", "d"],
        "given_name": ["Bob", "ROBERT", " robert ", "Ann"],
        "middle_name": ["J", "", "J", "L"],
        "family_name": ["Smith", "SMITH", "smith", "Lee"],
        "dob": ["1980-01-02", "1980-02-01", "1980-01-02", ""],
        "street": ["1 Oak St", "1 OAK ST", "", "9 Elm St"],
        "postcode": ["43001", "43001", "", "43002"],
        "phone": ["(614) 555-0101", "+1 614 555 0101", "6145550102", ""],
    })
    truth = pd.DataFrame({"record_id": list("abcd"), "person_key": ["p", "p", "p", "q"]})
    r = measure_messiness(records, truth)
    assert r["n_pairs"] == 3  # ab, ac, bc
    assert r["given_name_varied"] == pytest.approx(2 / 3)  # Bob differs from ROBERT twice
    assert r["family_name_varied"] == 0
    assert r["middle_name_missing_or_different"] == pytest.approx(2 / 3)  # b missing in ab, bc
    assert r["dob_missing_swapped_or_off_by_year"] == pytest.approx(2 / 3)
    assert r["address_different"] == 0  # only ab has two streets, and they agree
    assert r["phone_different"] == pytest.approx(2 / 3)  # +1 prefix ignored; ac, bc differ
    person = measure_messiness(records, truth, weighting="person")
    assert person["given_name_varied"] == pytest.approx(2 / 3)


def test_common_surnames_cluster_by_group(county):
    pool = surname_pool()
    idx = {n: i for i, n in enumerate(pool.names)}
    mean = 1.0 / len(pool.names)
    for race, name in (("api", "NGUYEN"), ("hispanic", "GARCIA"), ("black", "WILLIAMS"),
                       ("white", "SMITH"), ("native", "BEGAY")):
        assert pool.prob[race][idx[name]] > 200 * mean, (race, name)
    assert pool.prob["api"][idx["NGUYEN"]] > 50 * pool.prob["white"][idx["NGUYEN"]]
    assert pool.prob["hispanic"][idx["GARCIA"]] > 20 * pool.prob["white"][idx["GARCIA"]]
    persons = county[0].persons
    first = persons["family_name_birth"].str.split(r"[ \-]").str[0]
    for race, name in (("hispanic", "GARCIA"), ("api", "NGUYEN")):
        inside = (first[persons["race_ethnicity"] == race] == name).mean()
        outside = (first[persons["race_ethnicity"] != race] == name).mean()
        assert inside > 0.005 and inside > 10 * outside, (name, inside, outside)


def test_compound_hispanic_surname_full_in_one_agency_first_only_in_another(county):
    persons, joined = county[0].persons, county[4]
    hisp = persons[persons["race_ethnicity"] == "hispanic"]
    assert 0.2 < hisp["compound_surname"].mean() < 0.5
    comp = joined[joined["compound_surname"] & (joined["family_name"] != "")]
    tokens = _norm_family(comp["family_name"]).str.replace("-", " ").str.split().str.len()
    bh = tokens[comp["source_system"] == "EHR"]
    cad = tokens[comp["source_system"] == "CAD"]
    assert len(bh) > 20 and len(cad) > 20
    assert (bh >= 2).mean() > 0.9
    assert (cad == 1).mean() > 0.85
    first = comp["family_name_birth"].str.split(r"[ \-]").str[0]
    cad_rows = comp["source_system"] == "CAD"
    assert (_norm_family(comp.loc[cad_rows, "family_name"]) == first[cad_rows]).mean() > 0.6


def test_crisis_line_records_carry_only_first_name_and_phone(county):
    records = county[1]
    crisis = records[records["source_system"] == "988"]
    assert len(crisis) > 100
    assert (crisis["agency"] == "CRISIS_LINE").all()
    kept = {"record_id", "agency", "source_system", "given_name", "phone", "recorded_at"}
    for col in set(RECORD_COLUMNS) - kept:
        assert (crisis[col] == "").all(), col
    assert (crisis["given_name"] != "").all() and (crisis["phone"] != "").all()


def test_twins_share_dob_surname_address(county):
    summary, joined = county[0], county[4]
    p = summary.persons.set_index("person_key")
    twins = p[p["twin_of"] != ""]
    assert len(twins) >= 10
    mate = p.loc[twins["twin_of"]]
    assert (twins["dob"].values == mate["dob"].values).all()
    assert (twins["family_name_birth"].values == mate["family_name_birth"].values).all()
    assert (twins["given_name"].values != mate["given_name"].values).all()
    hist = summary.address_history.groupby("person_key")["address_id"].apply(tuple)
    assert (hist.loc[twins.index].values == hist.loc[twins["twin_of"]].values).all()
    # and in the records: each twin pair shares a recorded dob and a recorded street
    rec = joined[joined["twin_of"] != ""]
    dobs = rec[rec["dob"] != ""].groupby("person_key")["dob"].agg(set)
    streets = rec[rec["street"] != ""].groupby("person_key")["street"].agg(lambda s: set(s.str.upper()))
    shared_dob = [bool(dobs[a] & dobs[b]) for a, b in twins["twin_of"].items() if a in dobs and b in dobs]
    shared_st = [bool(streets[a] & streets[b]) for a, b in twins["twin_of"].items() if a in streets and b in streets]
    assert len(shared_dob) >= 4 and np.mean(shared_dob) > 0.7
    assert len(shared_st) >= 4 and np.mean(shared_st) > 0.5


def test_jr_sr_share_name_and_address_with_distant_dob(county):
    p = county[0].persons.set_index("person_key")
    jr = p[(p["jr_sr_of"] != "") & (p["name_suffix"] == "JR")]
    assert len(jr) >= 5
    sr = p.loc[jr["jr_sr_of"]]
    assert (jr["given_name"].values == sr["given_name"].values).all()
    assert (jr["family_name_birth"].values == sr["family_name_birth"].values).all()
    gap = (pd.to_datetime(jr["dob"]).values - pd.to_datetime(sr["dob"]).values) / np.timedelta64(365, "D")
    assert (gap >= 20).all()


def test_group_home_residents_share_address_and_phone(county):
    summary, joined = county[0], county[4]
    gh = summary.persons[summary.persons["group_home"]]
    sizes = gh.groupby("household_key").size()
    assert len(sizes) >= 1 and sizes.between(4, 10).all()
    assert gh.groupby("household_key")["family_name_birth"].nunique().min() >= 3  # unrelated
    rec = joined[joined["group_home"]].copy()
    rec["digits"] = rec["phone"].str.replace(r"\D", "", regex=True).str[-10:]
    rec["st"] = rec["street"].str.upper()
    for home, g in rec.groupby("household_key"):
        by_street = g[g["st"] != ""].groupby("st")["person_key"].nunique()
        by_phone = g[g["digits"] != ""].groupby("digits")["person_key"].nunique()
        assert by_street.max() >= min(3, g["person_key"].nunique()), home
        assert by_phone.max() >= 2, home


def test_truth_covers_every_record_and_demographics_every_person(county):
    summary, records, truth, demo = county[0], county[1], county[2], county[3]
    assert list(truth.columns) == ["record_id", "person_key"]
    assert truth["record_id"].is_unique and set(truth["record_id"]) == set(records["record_id"])
    assert list(demo.columns) == ["person_key", "race_ethnicity", "sex", "birth_year"]
    assert demo["person_key"].is_unique and set(demo["person_key"]) == set(truth["person_key"])
    assert set(demo["race_ethnicity"]) <= {"white", "black", "hispanic", "api", "native", "multiple"}
    assert demo["birth_year"].str.fullmatch(r"\d{4}").all()
    persons = summary.persons
    strangers = persons[~persons["has_records"]]
    assert 0.07 < len(strangers) / PERSONS < 0.13
    assert not set(strangers["person_key"]) & set(truth["person_key"])
    n = truth.groupby("person_key").size()
    assert 2.2 < n.mean() < 2.9 and n.max() >= 10 and (n <= 40).all()
    # rows are shuffled, not grouped by person
    same_next = (truth["person_key"].values[1:] == truth["person_key"].values[:-1]).mean()
    assert same_next < 0.01


def test_no_race_column_in_records(county):
    summary, records = county[0], county[1]
    header = summary.paths["records"].read_text().split("\n", 1)[0].lower()
    for word in ("race", "ethnic", "hispanic", "person_key"):
        assert word not in header
    races = {"white", "black", "hispanic", "api", "native", "multiple"}
    for col in records.columns:
        values = set(records[col].str.lower().unique())
        assert not (values and values <= races | {""}), col
