"""Native evaluation of Splink level SQL agrees with DuckDB itself, value for value."""

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.comparisons import build_comparisons
from matching.encoding import LIST, NUM, STR, Extras, Vocabulary, vec
from matching.index import key_hashes
from matching.level_sql import Pairs, UnsupportedLevelSQL, columns_used, compile_condition
from matching.model import MatcherModel
from matching.standardise import standardise, standardise_row

MODEL = MatcherModel.load("models/matcher.json")
#: Every field a model can compare, households included: the levels `briefing link` trains today.
ALL_FIELDS = {"given_name", "family_name", "middle_name", "name_suffix", "alias_names", "birth_year", "birth_year_only",
              "dob", "sex", "phone", "email", "street", "postcode", "city", "ssn_last4", "households"}
TODAYS_LEVELS = [level for creator in build_comparisons(ALL_FIELDS)
                 for level in creator.get_comparison("duckdb").as_dict()["comparison_levels"]]
#: The committed model's conditions and those of the comparisons built today (a model trained now may carry them).
CONDITIONS = sorted(({lv["sql_condition"] for c in MODEL.splink["comparisons"] for lv in c["comparison_levels"]}
                     | {lv["sql_condition"] for lv in TODAYS_LEVELS}) - {"ELSE"})
COLUMNS = sorted(set().union(*(columns_used(c) for c in CONDITIONS)))
LIST_COLUMNS = {"given_variants", "alias_names"}
INT_COLUMNS = {"birth_year"}

names = st.sampled_from(["JOHN", "JON", "JOHNNY", "SMITH", "SMYTH", "GARCIA", "GARCIALOPEZ", "LOPEZ", "ANN", "ANNE", "JR", "SR", ""])
dates = st.sampled_from(["1980-01-02", "1980-02-01", "1981-01-02", "1980-01-03", "1979-12-31", "2001-10-11"])
texts = st.one_of(st.none(), names, dates, st.text(alphabet="ABJNOS0123-", min_size=0, max_size=6))


def _value(column: str):
    if column in LIST_COLUMNS:
        return st.one_of(st.none(), st.lists(names, min_size=0, max_size=3))
    if column in INT_COLUMNS:
        return st.one_of(st.none(), st.integers(1960, 2005))
    return texts


side = st.fixed_dictionaries({c: _value(c) for c in COLUMNS})


def _duckdb_truth(rows_l: list[dict], rows_r: list[dict]) -> dict[str, np.ndarray]:
    data = {f"{c}_{s}": [row[c] for row in rows] for s, rows in (("l", rows_l), ("r", rows_r)) for c in COLUMNS}
    schema = pa.schema([(name, pa.list_(pa.string()) if name[:-2] in LIST_COLUMNS else
                         pa.int64() if name[:-2] in INT_COLUMNS else pa.string()) for name in data])
    pairs_table = pa.table(data, schema=schema)
    select = ", ".join(f"coalesce(({c}), false) AS c{i}" for i, c in enumerate(CONDITIONS))
    out = duckdb.connect().execute(f"SELECT {select} FROM pairs_table").fetchall()
    return {c: np.array([row[i] for row in out], dtype=bool) for i, c in enumerate(CONDITIONS)}


KINDS = {c: LIST if c in LIST_COLUMNS else NUM if c in INT_COLUMNS else STR for c in COLUMNS}


def _encode(rows: list[dict], vocab: Vocabulary) -> dict:
    out = {}
    for c in COLUMNS:
        values = np.empty(len(rows), dtype=object)
        values[:] = [row[c] for row in rows]
        out[c] = vec(KINDS[c], vocab.encode(values, KINDS[c]))
    return out


def _native_truth(rows_l: list[dict], rows_r: list[dict]) -> dict[str, np.ndarray]:
    vocab = Vocabulary()
    pairs = Pairs(_encode(rows_l, vocab), _encode(rows_r, vocab), len(rows_l), vocab)
    return {c: compile_condition(c)(pairs) for c in CONDITIONS}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(side, side), min_size=1, max_size=40))
def test_every_model_level_is_true_exactly_when_duckdb_says_so(pairs):
    rows_l, rows_r = [p[0] for p in pairs], [p[1] for p in pairs]
    expected, actual = _duckdb_truth(rows_l, rows_r), _native_truth(rows_l, rows_r)
    for condition in CONDITIONS:
        assert actual[condition].tolist() == expected[condition].tolist(), condition


@settings(max_examples=60, deadline=None)
@given(side, st.lists(side, min_size=1, max_size=20))
def test_a_query_against_its_candidates_equals_duckdb_even_for_values_no_record_has(query, candidates):
    vocab = Vocabulary()
    right = _encode(candidates, vocab)              # the index knows only the candidates' values
    extras = Extras()
    left = vocab.encode_query(query, KINDS, extras)
    many = Pairs(left, right, len(candidates), vocab, extras)
    expected = _duckdb_truth([query] * len(candidates), candidates)
    for condition in CONDITIONS:
        assert compile_condition(condition)(many).tolist() == expected[condition].tolist(), condition


@pytest.mark.parametrize("sql", ["regexp_matches(\"given_name_l\", 'A.*')", "\"dob_l\" > current_date",
                                 "l.given_name = r.given_name"])
def test_sql_the_scorer_cannot_evaluate_exactly_is_refused_at_load(sql):
    with pytest.raises(UnsupportedLevelSQL):
        compile_condition(sql)


record_fields = st.fixed_dictionaries({
    "record_id": st.just("R-1"),
    "given_name": st.one_of(st.none(), st.sampled_from(["Bob", "José", "o'neil", "  ", "Mary-Jo", "UNKNOWN", "Ann Marie"])),
    "middle_name": st.one_of(st.none(), st.sampled_from(["J", "Lee", "", "Ann-Marie"])),
    "family_name": st.one_of(st.none(), st.sampled_from(["García López", "Smith Jr", "de la Cruz", "O'Brien", "nguyen"])),
    "name_suffix": st.one_of(st.none(), st.sampled_from(["Jr.", "SR", "III", "x"])),
    "aliases": st.one_of(st.none(), st.sampled_from(["Bobby Smith", "B. Smith-Jones|Rob", ""])),
    "dob": st.one_of(st.none(), st.sampled_from(["1980-03-04", "1980-12-31", "1999-05-05"])),
    "birth_year": st.one_of(st.none(), st.sampled_from(["1975", "1983"])),
    "sex": st.one_of(st.none(), st.sampled_from(["m", "F", "X", "U", "unknown"])),
    "phone": st.one_of(st.none(), st.sampled_from(["(614) 201-3344", "+1 614 201 3344", "000-000-0000", "12"])),
    "email": st.one_of(st.none(), st.sampled_from(["A@Example.com", "bad@", "x@y@z"])),
    "street": st.one_of(st.none(), st.sampled_from(["12 North Main Street, Apt 4", "5 Oak Ave #2", "PO"])),
    "postcode": st.one_of(st.none(), st.sampled_from(["43215-1234", "4321", "43215"])),
    "ssn_last4": st.one_of(st.none(), st.sampled_from(["0042", "0000", "12"])),
})


@settings(max_examples=150, deadline=None)
@given(record_fields)
def test_standardise_row_equals_the_batch_standardiser(record):
    batch = standardise(pd.DataFrame([record])).iloc[0].to_dict()
    single = standardise_row(record)
    for column, value in batch.items():
        expected = None if (not isinstance(value, list) and pd.isna(value)) else value
        if column == "birth_year" and expected is not None:
            expected = int(expected)
        assert single[column] == expected, column


def test_key_hashes_are_the_same_in_bulk_and_one_by_one():
    codes = np.array([5, 0, 123456, 7], dtype=np.int32)
    years = np.array([1980.0, 1979.0, 2001.0, 1980.0])
    bulk = key_hashes([codes, years])
    single = [key_hashes([codes[i:i + 1], years[i:i + 1]])[0] for i in range(4)]
    assert bulk.tolist() == single and len(set(bulk.tolist())) == 4
