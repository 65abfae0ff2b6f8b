import unicodedata

import pandas as pd
from hypothesis import given, settings, strategies as st

from matching import name as nm
from matching.standardise import available_fields, phone, postcode, standardise, standardise_row, street


def test_accents_punctuation_and_hyphens_are_folded():
    assert nm.joined("José-María") == "JOSEMARIA"
    assert nm.joined("O'Brien") == "OBRIEN"
    assert nm.clean("  garcía   lópez ") == "GARCIA LOPEZ"


@given(st.text(max_size=20) | st.text(alphabet=st.characters(max_codepoint=127), max_size=20))
def test_folding_is_unicode_decomposition_without_combining_marks_ascii_or_not(value):
    decomposed = unicodedata.normalize("NFKD", value)
    assert nm.fold(value) == "".join(ch for ch in decomposed if not unicodedata.combining(ch)).upper()


def test_placeholder_names_are_null():
    assert nm.clean("Unknown") is None
    assert nm.clean("John Doe") is None
    assert nm.clean("   ") is None


def test_compound_surname_first_part_agrees_with_first_surname_only():
    assert nm.surname_first("García López") == nm.surname_first("Garcia") == "GARCIA"
    assert nm.surname_first("de la Cruz Ruiz") == "DELACRUZ"
    assert nm.joined("Garcia-Lopez") == nm.joined("Garcia Lopez")


def test_nickname_and_formal_name_share_a_variant_and_a_blocking_key():
    assert set(nm.given_variants("Bob")) & set(nm.given_variants("Robert"))
    assert nm.given_canonical("Bobby") == "ROBERT"
    assert nm.given_canonical("Jim") == nm.given_canonical("James") == "JAMES"


def test_phone_formats_reduce_to_the_same_digits():
    forms = ["(555) 201-3344", "555.201.3344", "+1 555 201 3344", "15552013344", "555-201-3344"]
    assert {phone(f) for f in forms} == {"5552013344"}
    assert phone("000-000-0000") is None
    assert phone("12") is None


def test_street_abbreviations_and_units():
    assert street("12 North Main Street, Apt 4") == street("12 N. Main St") == "12 N MAIN ST"
    assert street("5 Elm Avenue #3") == "5 ELM AVE"
    assert postcode("12345-6789") == "12345"


def test_day_month_swap_and_birth_year_columns():
    std = standardise(pd.DataFrame({"record_id": ["a", "b", "c"], "dob": ["1980-03-04", "1980-03-13", None],
                                    "birth_year": [None, None, "1975"]}))
    assert std.loc[0, "dob_swap"] == "1980-04-03"
    assert std.loc[1, "dob_swap"] is None  # day 13 cannot be a month
    assert list(std["birth_year"]) == [1980, 1980, 1975]


def test_available_fields_follow_the_data_not_the_schema():
    std = standardise(pd.DataFrame({"record_id": ["a", "b"], "given_name": ["Ann", None], "phone": [None, None]}))
    fields = available_fields(std)
    assert "given_name" in fields and "phone" not in fields and "dob" not in fields


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_name_cleaning_is_idempotent_and_ascii_upper(text):
    once = nm.clean(text)
    if once is not None:
        assert nm.clean(once) == once
        assert once == once.upper() and once.isascii()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789()-. +", max_size=20))
def test_phone_is_none_or_digits(text):
    result = phone(text)
    assert result is None or (result.isdigit() and len(result) >= 7)


def test_a_suffix_typed_into_the_family_name_is_taken_out_the_same_way_in_batch_and_one_at_a_time():
    frame = pd.DataFrame({"record_id": ["a", "b", "c", "d", "e"], "agency": ["X"] * 5,
                          "family_name": ["Glass Jr.", "JONES III", "Sr", "Smith", "Lee Senior"],
                          "name_suffix": ["", "", "", "II", "JR"]})
    batch = standardise(frame)
    assert list(batch["family_name"]) == ["GLASS", "JONES", "SR", "SMITH", "LEE"]
    assert list(batch["name_suffix"]) == ["JR", "III", None, "II", "JR"]      # the suffix field wins where it is given
    for row, record in zip(batch.to_dict("records"), frame.to_dict("records")):
        one = standardise_row(record)
        assert (one["family_name"], one["family_first"], one["name_suffix"]) == \
            (row["family_name"], row["family_first"], row["name_suffix"])


words = st.lists(st.text(alphabet="ABCDEFGH", min_size=1, max_size=6), min_size=1, max_size=3).map(" ".join)


@given(words, st.sampled_from([("JR", "JR"), ("Sr.", "SR"), ("III", "III"), ("junior", "JR"), ("iv", "IV")]))
def test_taking_the_suffix_out_keeps_the_name_and_finds_the_suffix(name, suffix):
    typed, meant = suffix
    family, found = nm.family_and_suffix(f"{name} {typed}")
    assert (nm.joined(family), found) == (nm.joined(name), meant)
    assert nm.family_and_suffix(name) == (name, None)          # no suffix: the name is left as it was
    assert nm.family_and_suffix(typed) == (typed, None)        # a suffix alone is a name, not a suffix
