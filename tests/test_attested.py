"""Clustering refuses to merge two people whose records say who they are (matching/attested.py)."""

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from matching.attested import Identities, dates_far, given_names_far
from matching.cluster import cluster
from matching.standardise import standardise


def _records(rows):
    """Raw records (record_id, given_name, family_name, dob) standardised as linking does."""
    return standardise(pd.DataFrame(rows, columns=["record_id", "given_name", "family_name", "dob"]))


def _pairs(rows):
    return pd.DataFrame(rows, columns=["record_id_l", "record_id_r", "match_probability"])


def _two_households(father, son, every_pair_links=True):
    """Father f1..f3 and son s1..s3, each tightly linked, and every cross pair linking too (their
    records lacking the differing field score high against both): density alone merges them."""
    std = _records(father + son)
    ids = std["unique_id"]
    f, s = [r[0] for r in father], [r[0] for r in son]
    rows = [(a, b, 0.999) for group in (f, s) for i, a in enumerate(group) for b in group[i + 1:]]
    if every_pair_links:
        rows += [(a, b, 0.97) for a in f for b in s]
    return std, ids, _pairs(rows)


FATHER = [("f1", "ERIK", "MOUSA", "1986-10-21"), ("f2", "ERIK", "MOUSA", "1986-10-21"), ("f3", "ERIK", "MOUSA", None)]
SON = [("s1", "ERIK", "MOUSA", "2016-08-28"), ("s2", "ERIK", "MOUSA", "2016-08-28"), ("s3", "ERIK", "MOUSA", None)]


def test_a_father_and_his_namesake_son_stay_apart_when_their_records_attest_different_dates_of_birth():
    std, ids, pairs = _two_households(FATHER, SON)
    assert cluster(ids, pairs, 0.95).n_persons == 1  # without the identities, density merges them
    result = cluster(ids, pairs, 0.95, identities=Identities.of(std))
    person = result.clusters.set_index("record_id").person_id
    assert person["f1"] == person["f3"] != person["s1"] == person["s3"]
    assert result.identity_conflicts["date of birth"] >= 1


def test_twins_stay_apart_when_their_records_attest_different_given_names():
    twins = ([("a1", "HERBERT", "WILLIAMS", "2012-11-05"), ("a2", "HERBERT", "WILLIAMS", "2012-11-05"), ("a3", None, "WILLIAMS", None)],
             [("b1", "ROGER", "WILLIAMS", "2012-11-05"), ("b2", "ROGER", "WILLIAMS", "2012-11-05"), ("b3", None, "WILLIAMS", None)])
    std, ids, pairs = _two_households(*twins)
    result = cluster(ids, pairs, 0.95, identities=Identities.of(std))
    assert result.n_persons == 2
    assert result.identity_conflicts == {"given name": result.identity_conflicts["given name"]}


def test_one_person_recorded_two_ways_still_merges():
    """A year typo, day and month swapped, a nickname, a typo in the name, names in swapped order:
    one person's records, which must still come together."""
    for variant in (("f", "ERIK", "MOUSA", "1987-10-21"),   # year typo (same day and month)
                    ("f", "ERIK", "MOUSA", "1986-21-10"),   # day and month swapped
                    ("f", "ERIK", "MOUSA", "1985-10-22"),   # a year and a day off: still not two years apart
                    ("f", "ERICK", "MOUSA", "1986-10-21"),  # one edit
                    ("f", "ERYK", "MOUSA", "1986-10-21"),   # spelt another way (sounds alike)
                    ("f", "MOUSA", "ERIK", "1986-10-21")):  # given and family name swapped
        other = [(f"o{i}", *variant[1:]) for i in (1, 2)]
        std, ids, pairs = _two_households(FATHER[:2], other)
        assert cluster(ids, pairs, 0.95, identities=Identities.of(std)).n_persons == 1, variant
    nickname = [("o1", "BOB", "SMITH", "1970-01-01"), ("o2", "BOB", "SMITH", "1970-01-01")]
    formal = [("p1", "ROBERT", "SMITH", "1970-01-01"), ("p2", "ROBERT", "SMITH", "1970-01-01")]
    std, ids, pairs = _two_households(formal, nickname)
    assert cluster(ids, pairs, 0.95, identities=Identities.of(std)).n_persons == 1


def test_a_value_on_one_record_or_a_minority_attests_nothing():
    """One corrupted date in a cluster (or a tie) does not make it a different person."""
    father = [("f1", "ERIK", "MOUSA", "1986-10-21"), ("f2", "ERIK", "MOUSA", "1986-10-21"), ("f3", "ERIK", "MOUSA", "2016-08-28")]
    stray = [("x1", "ERIK", "MOUSA", "2016-08-28"), ("x2", "ERIK", "MOUSA", "1986-10-21")]  # a tie: no majority
    std, ids, pairs = _two_households(father, stray)
    assert cluster(ids, pairs, 0.95, identities=Identities.of(std)).n_persons == 1


def test_a_single_record_still_joins_its_best_match_whatever_its_date_of_birth():
    std = _records(FATHER + [("x", "ERIK", "MOUSA", "2016-08-28")])
    rows = [("f1", "f2", 0.999), ("f1", "f3", 0.999), ("f2", "f3", 0.999), ("x", "f1", 0.97)]
    assert cluster(std["unique_id"], _pairs(rows), 0.95, identities=Identities.of(std)).n_persons == 1


def _suffixed(rows):
    """Raw records (record_id, given_name, family_name, name_suffix, birth_year) standardised as linking does."""
    return standardise(pd.DataFrame(rows, columns=["record_id", "given_name", "family_name", "name_suffix", "birth_year"]))


def test_a_single_record_marked_jr_never_joins_a_person_marked_sr_by_scores():
    std = _suffixed([("f1", "MICHAEL", "GOODING", "SR", "1940"), ("f2", "MICHAEL", "GOODING", "", "1940"),
                     ("j", "MICHAEL", "GOODING", "JR", "")])
    rows = [("f1", "f2", 0.999), ("j", "f2", 0.99)]
    result = cluster(std["unique_id"], _pairs(rows), 0.95, identities=Identities.of(std))
    person = result.clusters.set_index("record_id").person_id
    assert person["f1"] == person["f2"] != person["j"]
    assert result.held_apart.to_dict("records") == [
        {"record_id_l": "j", "record_id_r": "f2", "match_probability": 0.99, "reason": "suffix"}]


def test_where_a_suffix_marks_a_namesake_a_record_born_a_generation_apart_stays_out():
    """'Glass Jr' in the family name field is a suffix too; the father's record carries none."""
    std = _suffixed([("f", "GARRETT", "GLASS", "", "1961"), ("j", "GARRETT", "Glass Jr", "", "1998")])
    assert list(std["family_name"]) == ["GLASS", "GLASS"] and list(std["name_suffix"]) == [None, "JR"]
    result = cluster(std["unique_id"], _pairs([("f", "j", 0.998)]), 0.95, identities=Identities.of(std))
    assert result.n_persons == 2 and result.identity_conflicts == {"generation": 1}


def test_without_a_suffix_or_within_a_generation_a_single_record_joins_as_before():
    for rows in ([("f", "GARRETT", "GLASS", "", "1961"), ("j", "GARRETT", "GLASS", "", "1998")],      # no suffix
                 [("f", "GARRETT", "GLASS", "", "1961"), ("j", "GARRETT", "GLASS", "JR", "1962")],    # a year apart
                 [("f", "GARRETT", "GLASS", "JR", "1961"), ("j", "GARRETT", "GLASS", "JR", "")]):     # no year
        std = _suffixed(rows)
        assert cluster(std["unique_id"], _pairs([("f", "j", 0.998)]), 0.95,
                       identities=Identities.of(std)).n_persons == 1, rows


@given(st.sampled_from(["JR", "SR", "II", "III", ""]), st.sampled_from(["JR", "SR", "II", "III", ""]),
       st.integers(1900, 2020), st.integers(1900, 2020))
def test_the_generation_rule_spelt_out(suffix_a, suffix_b, year_a, year_b):
    std = _suffixed([("a", "ANN", "LEE", suffix_a, str(year_a)), ("b", "ANN", "LEE", suffix_b, str(year_b))])
    joined = cluster(std["unique_id"], _pairs([("a", "b", 0.999)]), 0.95, identities=Identities.of(std)).n_persons == 1
    jr_sr = {suffix_a, suffix_b} == {"JR", "SR"}
    generation = bool(suffix_a or suffix_b) and abs(year_a - year_b) >= 15
    assert joined == (not jr_sr and not generation)
    must = cluster(std["unique_id"], _pairs([("a", "b", 0.999)]), 0.95, identities=Identities.of(std),
                   must_link=[("a", "b")])
    assert must.n_persons == 1                               # a steward's must-link wins


def test_a_person_a_steward_joined_from_a_jr_and_a_sr_is_no_ones_jr_or_sr():
    std = _suffixed([("a", "ANN", "LEE", "JR", "1980"), ("b", "ANN", "LEE", "SR", "1950"), ("c", "ANN", "LEE", "JR", "")])
    result = cluster(std["unique_id"], _pairs([("a", "c", 0.99)]), 0.95, identities=Identities.of(std),
                     must_link=[("a", "b")])
    assert result.n_persons == 1 and result.held_apart.empty


def test_persons_a_stewards_cannot_link_keeps_apart_are_not_reported_as_held_apart():
    std = _suffixed([("a", "ANN", "LEE", "JR", ""), ("b", "ANN", "LEE", "SR", ""), ("c", "ANN", "LEE", "", ""),
                     ("d", "ANN", "LEE", "", "")])
    pairs = _pairs([("a", "b", 0.99), ("a", "c", 0.98), ("b", "d", 0.97)])
    alone = cluster(std["unique_id"], pairs, 0.95, identities=Identities.of(std))
    assert alone.held_apart[["record_id_l", "record_id_r", "reason"]].values.tolist() == [["a", "b", "suffix"]]
    decided = cluster(std["unique_id"], pairs, 0.95, identities=Identities.of(std), cannot_link=[("c", "d")])
    assert decided.n_persons == 2 and decided.held_apart.empty


def test_a_stewards_must_link_overrides_attested_identities():
    std, ids, pairs = _two_households(FATHER, SON)
    result = cluster(ids, pairs, 0.95, identities=Identities.of(std), must_link=[("f1", "s1")])
    assert result.n_persons == 1


def test_identities_of_other_records_are_refused():
    std, ids, pairs = _two_households(FATHER, SON)
    try:
        cluster(ids, pairs, 0.95, identities=Identities.of(std.iloc[:4]))
    except ValueError as exc:
        assert "identities describe 4 records" in str(exc)
    else:
        raise AssertionError("identities of other records were accepted")


dates = st.dates().map(lambda d: d.isoformat())


@given(dates, dates)
def test_date_distance_is_symmetric(a, b):
    assert dates_far(a, b) == dates_far(b, a)


@given(dates)
def test_a_date_is_never_far_from_itself_a_year_typo_or_its_day_month_swap(a):
    year, month, day = a[:4], a[5:7], a[8:10]
    assert not dates_far(a, a)
    assert not dates_far(a, f"{int(year) % 9000 + 1:04d}-{month}-{day}")
    if int(day) <= 12:
        assert not dates_far(a, f"{year}-{day}-{month}")


@given(dates, st.integers(min_value=2, max_value=80))
def test_dates_two_or_more_years_apart_on_another_day_are_far(a, years):
    year = int(a[:4])
    other_day = "01" if a[8:10] != "01" else "02"
    b = f"{year + years:04d}-{a[5:7]}-{other_day}"
    if a[5:7] != other_day:  # not a day/month swap of a
        assert dates_far(a, b)


names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=10)


@given(names, names)
def test_given_name_distance_is_symmetric_and_never_far_from_itself(a, b):
    assert given_names_far(a, b, (a,), (b,)) == given_names_far(b, a, (b,), (a,))
    assert not given_names_far(a, a, (a,), (a,))
    assert not given_names_far(a, a + "X", (a,), (a + "X",))  # one edit


def test_names_spelt_another_way_are_not_different_names():
    for a, b in (("KATHIE", "KATHY"), ("FELIX", "FELIKS"), ("KIELA", "KYLA"), ("AMMBOR", "AMBER")):
        std = _records([("1", a, "X", None), ("2", b, "X", None)])
        ids = Identities.of(std)
        assert not given_names_far(a, b, ids.given_variants[ids.given[0]], ids.given_variants[ids.given[1]],
                                   ids.given_sounds[ids.given[0]], ids.given_sounds[ids.given[1]]), (a, b)
    assert given_names_far("HERBERT", "ROGER") and given_names_far("JOHNNY", "PERRY")
