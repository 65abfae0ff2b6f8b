"""The compiled kernel decides every level and weight exactly as the numpy reference scorer does."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import OSA, Jaro, JaroWinkler, Levenshtein

from matching.duckdb_backend import duckdb_fuses_winkler
from matching.encoding import Extras, Vocabulary, vec
from matching.kernel import build_kernel
from matching.kernel_metrics import edits_capped, jaro, jaro_winkler, levenshtein
from matching.level_sql import Pairs, compile_condition, winkler_as_duckdb
from matching.model import MatcherModel
from matching.scorer import Scorer, TermFrequencies
from matching.splink_internals import LevelParameters
from tests.test_level_sql import KINDS, side

MODEL = MatcherModel.load("models/matcher.json")
SCORER = Scorer(MODEL.splink)


def _encoded(rows: list[dict], vocab: Vocabulary) -> dict:
    out = {}
    for column, kind in KINDS.items():
        values = np.empty(len(rows), dtype=object)
        values[:] = [row[column] for row in rows]
        out[column] = vec(kind, vocab.encode(values, kind))
    return out


def _frequencies(encoded: dict) -> TermFrequencies:
    tf = TermFrequencies(SCORER.tf_columns_)
    for column in SCORER.tf_columns_:
        tf.add(column, encoded[column].values)
    return tf


def _no_term_frequencies(column, codes, at, out):
    out.fill(np.nan)


def _assert_same(compiled, reference):
    assert compiled.levels.tolist() == reference.levels.tolist()
    np.testing.assert_allclose(compiled.weights, reference.weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(compiled.match_weight, reference.match_weight, rtol=0, atol=1e-9)


def test_the_committed_model_is_scored_by_its_compiled_kernel_compiled_once_at_load():
    """A query runs the one signature compiled when the kernel loaded (the serve master, before it forks):
    another (a read-only buffer, another integer type) would be compiled again inside a request."""
    assert SCORER.kernel_ is not None
    vocab = Vocabulary()
    right = _encoded([dict.fromkeys(KINDS, None) | {"given_name": "ANN", "family_name": "SMITH"}], vocab)
    vocab.freeze()
    extras = Extras()
    left = vocab.encode_query({"given_name": "ANNE", "family_name": "SMITH"}, KINDS, extras)
    SCORER.score(left, right, 1, _frequencies(right), vocab, extras)
    assert len(SCORER.kernel_.run.signatures) == 1


@settings(max_examples=80, deadline=None)
@given(side, st.lists(side, min_size=1, max_size=25), st.integers(0, 25))
def test_a_query_against_its_candidates_scores_the_same_compiled_and_in_numpy(query, candidates, built):
    """Candidates indexed at the build (frozen strings) and added since, a query with values no record has."""
    vocab = Vocabulary()
    before = _encoded(candidates[:built], vocab)
    vocab.freeze()
    after = _encoded(candidates[built:], vocab)
    right = {c: vec(KINDS[c], np.concatenate([before[c].values, after[c].values])) for c in KINDS}
    extras = Extras()
    left = vocab.encode_query(query, KINDS, extras)          # values no candidate has become query-only codes
    tf = _frequencies(right)
    args = (left, right, len(candidates), tf, vocab, extras)
    _assert_same(SCORER.score(*args), SCORER.score_reference(*args))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(side, side), min_size=1, max_size=25))
def test_pairs_of_records_score_the_same_compiled_and_in_numpy(pairs):
    vocab = Vocabulary()
    left, right = _encoded([p[0] for p in pairs], vocab), _encoded([p[1] for p in pairs], vocab)
    tf = _frequencies(right)
    args = (left, right, len(pairs), tf, vocab)
    _assert_same(SCORER.score(*args), SCORER.score_reference(*args))


atoms = st.sampled_from([
    "given_name_l = given_name_r", "given_name_l <> family_name_r", "family_name_l IS NULL", "NOT (dob_l = dob_r)",
    "abs(birth_year_l - birth_year_r) <= 1", "-birth_year_l + birth_year_r > 0", "birth_year_l = NULL",
    "jaro_winkler_similarity(family_name_l, family_name_r) >= 0.9", "damerau_levenshtein(given_name_l, given_name_r) <= 1",
    "array_contains(given_variants_l, given_name_r)", "length(given_name_l) < 4", "ascii(family_name_l) = ascii(family_name_r)",
    "array_length(list_intersect(alias_names_l, alias_names_r)) >= 1", "given_variants_r IS NULL", "TRUE", "FALSE",
    "(dob_md_l = dob_md_r OR birth_year_l = birth_year_r) AND damerau_levenshtein(dob_l, dob_r) <= 1",
])


def _conditions(depth: int):
    if depth == 0:
        return atoms
    inner = _conditions(depth - 1)
    return st.one_of(inner, st.builds(lambda a, b: f"({a}) AND ({b})", inner, inner),
                     st.builds(lambda a, b: f"({a}) OR ({b})", inner, inner), st.builds(lambda a: f"NOT ({a})", inner))


@pytest.fixture(scope="module")
def scratch_kernel_cache(tmp_path_factory):
    """Kernels of made-up conditions are compiled into a directory of their own, not the user's cache."""
    before = os.environ.get("BRIEFING_KERNEL_CACHE")
    os.environ["BRIEFING_KERNEL_CACHE"] = str(tmp_path_factory.mktemp("kernels"))
    yield
    if before is None:
        del os.environ["BRIEFING_KERNEL_CACHE"]
    else:
        os.environ["BRIEFING_KERNEL_CACHE"] = before


@pytest.mark.usefixtures("scratch_kernel_cache")
@settings(max_examples=40, deadline=None)  # each example compiles a kernel (~0.6 s)
@given(st.lists(_conditions(2), min_size=1, max_size=3, unique=True), st.lists(st.tuples(side, side), min_size=1, max_size=15))
def test_any_chain_of_conditions_picks_the_level_sql_picks(conditions, pairs):
    levels = [LevelParameters(f"level {i}", c, False, False, float(i)) for i, c in enumerate(conditions)]
    kernel = build_kernel([levels + [LevelParameters("else", "ELSE", True, False, -1.0)]], duckdb_fuses_winkler())
    assert kernel is not None
    vocab = Vocabulary()
    p = Pairs(_encoded([q[0] for q in pairs], vocab), _encoded([q[1] for q in pairs], vocab), len(pairs), vocab)
    vocab.freeze()
    total, chosen, _ = kernel.score(p, _no_term_frequencies, 0.0)
    expected = np.full(len(pairs), len(conditions))
    for i in reversed(range(len(conditions))):                # the first TRUE condition wins
        expected[compile_condition(conditions[i])(p)] = i
    assert chosen[:, 0].tolist() == expected.tolist()
    assert total.tolist() == [float(i) if i < len(conditions) else -1.0 for i in expected]


words = st.text(st.sampled_from("ABCDEJNOS É"), max_size=9) | st.text(st.sampled_from("AB"), min_size=60, max_size=70)


@settings(max_examples=300, deadline=None)
@given(words, words)
def test_the_kernels_string_metrics_equal_the_numpy_paths(a, b):
    p, t = (np.frombuffer(("<>" + x).encode("utf-32-le"), dtype=np.uint32)[2:] for x in (a, b))
    jw = JaroWinkler.similarity(a, b) if (a or b) else 0.0
    both = (p, 0, len(p), t, 0, len(t))
    assert jaro_winkler(*both, duckdb_fuses_winkler()) == winkler_as_duckdb([a], [b], np.array([jw]))[0]
    assert jaro(*both) == (Jaro.similarity(a, b) if (a or b) else 0.0)
    assert levenshtein(*both) == Levenshtein.distance(a, b)
    assert edits_capped(*both) == OSA.distance(a, b, score_cutoff=1)


def test_jaro_winkler_is_duckdbs_to_the_last_bit_where_it_decides_a_level():
    """DuckDB rounds the Winkler boost once (a fused multiply-add on this CPU): 0.92 exactly, not 0.9199999999999999."""
    condition = 'jaro_winkler_similarity("street_l", "street_r") >= 0.92'
    row = {c: None for c in KINDS}
    left, right = dict(row, street="1484 JOHNSON DR"), dict(row, street="1863 JOHNSON DR")
    expected = duckdb.connect().execute("SELECT jaro_winkler_similarity('1484 JOHNSON DR', '1863 JOHNSON DR') >= 0.92").fetchone()[0]
    vocab = Vocabulary()
    p = Pairs(_encoded([left], vocab), _encoded([right], vocab), 1, vocab)
    assert compile_condition(condition)(p).tolist() == [expected]
    kernel = build_kernel([[LevelParameters("close", condition, False, False, 1.0),
                            LevelParameters("else", "ELSE", True, False, 0.0)]], duckdb_fuses_winkler())
    _, chosen, _ = kernel.score(p, _no_term_frequencies, 0.0)
    assert chosen[:, 0].tolist() == [0 if expected else 1]
