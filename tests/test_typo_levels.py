"""The typo levels' cheap tests before Damerau-Levenshtein change nothing: the level holds exactly when DL <= 1."""

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.comparisons import _typo

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
