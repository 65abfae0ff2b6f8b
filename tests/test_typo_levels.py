"""The typo levels' cheap tests before Damerau-Levenshtein change nothing: the level holds exactly when DL <= 1."""

from datetime import date

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.comparisons import _dob_typo, _typo

text = st.text(alphabet="AB1-", min_size=0, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(text, text), min_size=1, max_size=40))
def test_the_guarded_typo_level_is_damerau_levenshtein_at_most_one(pairs):
    condition = _typo("phone", "One-character typo").get_comparison_level("duckdb").sql_condition
    con = duckdb.connect()
    con.execute("CREATE TABLE p (phone_l VARCHAR, phone_r VARCHAR)")
    con.executemany("INSERT INTO p VALUES (?, ?)", pairs)
    rows = con.execute(f"SELECT phone_l, phone_r, coalesce({condition}, false), "
                       "damerau_levenshtein(phone_l, phone_r) <= 1 FROM p").fetchall()
    assert all(guarded == plain for _, _, guarded, plain in rows), [r for r in rows if r[2] != r[3]]


#: Well-formed dates, as standardisation keeps them, and an edit of one: a character replaced, two neighbours swapped.
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2026, 12, 31)).map(date.isoformat)


@st.composite
def date_pairs(draw) -> tuple[str, str]:
    first = draw(dates)
    at = draw(st.integers(0, len(first) - 1))
    second = draw(st.one_of(
        dates,
        st.sampled_from("0123456789").map(lambda c: first[:at] + c + first[at + 1:]),
        st.just(first[:at] + first[at + 1:at + 2] + first[at:at + 1] + first[at + 2:]),
    ).filter(_is_date))
    return first, second


@settings(max_examples=400, deadline=None)
@given(st.lists(date_pairs(), min_size=1, max_size=40))
def test_the_date_of_birth_typo_level_is_damerau_levenshtein_at_most_one_on_well_formed_dates(pairs):
    """The year-or-day-and-month test before it refuses no two well-formed dates one edit apart."""
    condition = _dob_typo().get_comparison_level("duckdb").sql_condition
    con = duckdb.connect()
    con.execute("CREATE TABLE p (dob_l VARCHAR, dob_r VARCHAR)")
    con.executemany("INSERT INTO p VALUES (?, ?)", pairs)
    rows = con.execute(f"""
        SELECT dob_l, dob_r, coalesce({condition}, false), damerau_levenshtein(dob_l, dob_r) <= 1
        FROM (SELECT *, substr(dob_l, 6, 5) AS dob_md_l, substr(dob_r, 6, 5) AS dob_md_r,
                     CAST(substr(dob_l, 1, 4) AS INTEGER) AS birth_year_l,
                     CAST(substr(dob_r, 1, 4) AS INTEGER) AS birth_year_r FROM p)""").fetchall()
    assert all(guarded == plain for _, _, guarded, plain in rows), [r for r in rows if r[2] != r[3]]


def _is_date(text: str) -> bool:
    try:
        return date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False
