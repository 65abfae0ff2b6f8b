"""Steward decisions in batch clustering: must-link joins, cannot-link keeps apart, contradictions raise."""

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.cluster import check_constraints, cluster, components
from matching.link import link_records
from matching.model import MatcherModel

MODEL = Path(__file__).resolve().parents[1] / "models" / "matcher.json"


def _pairs(rows):
    return pd.DataFrame(rows, columns=["record_id_l", "record_id_r", "match_probability"])


def _persons(result):
    return result.clusters.set_index("record_id").person_id


IDS = pd.Series(["a", "b", "c", "d", "e"])


def test_must_link_joins_two_records_that_score_below_the_threshold():
    pairs = _pairs([("a", "b", 0.30)])
    assert _persons(cluster(IDS, pairs, 0.95))["a"] != _persons(cluster(IDS, pairs, 0.95))["b"]
    result = cluster(IDS, pairs, 0.95, must_link=[("a", "b")])
    person = _persons(result)
    assert person["a"] == person["b"]
    assert result.n_persons == 4
    assert result.constraints["must_link"] == {"given": 1, "applied": 1, "ignored": 0}


def test_must_link_joins_two_records_with_no_scored_pair_at_all():
    person = _persons(cluster(IDS, _pairs([]), 0.95, must_link=[("e", "a")]))
    assert person["a"] == person["e"]


def test_must_link_overrides_the_density_rule_between_two_people():
    # two tight trios with a single weak cross edge: the density rule alone keeps them apart
    ids = pd.Series(["f1", "f2", "f3", "s1", "s2", "s3"])
    rows = [(a, b, 0.999) for a, b in (("f1", "f2"), ("f1", "f3"), ("f2", "f3"), ("s1", "s2"), ("s1", "s3"), ("s2", "s3"))]
    rows.append(("f1", "s1", 0.96))
    assert cluster(ids, _pairs(rows), 0.95).n_persons == 2
    assert cluster(ids, _pairs(rows), 0.95, must_link=[("f3", "s3")]).n_persons == 1


def test_cannot_link_keeps_two_records_apart_despite_a_0999_edge():
    result = cluster(IDS, _pairs([("a", "b", 0.999)]), 0.95, cannot_link=[("b", "a")])
    person = _persons(result)
    assert person["a"] != person["b"]
    assert result.constraints["cannot_link"]["edges_refused"] == 1


def test_cannot_link_holds_through_a_chain_of_strong_edges():
    pairs = _pairs([("a", "b", 0.999), ("b", "c", 0.998)])
    person = _persons(cluster(IDS, pairs, 0.95, cannot_link=[("a", "c")]))
    assert person["a"] != person["c"]
    assert person["b"] == person["a"]  # b joins its strongest match; its weaker edge to c is refused


def test_a_record_kept_apart_from_its_best_match_joins_its_next_best():
    pairs = _pairs([("a", "b", 0.999), ("a", "c", 0.97)])
    person = _persons(cluster(IDS, pairs, 0.95, cannot_link=[("a", "b")]))
    assert person["a"] == person["c"] != person["b"]


def test_must_links_that_chain_a_cannot_link_pair_together_raise_naming_the_pair():
    with pytest.raises(ValueError, match=r"'a' and 'c'.*'a' = 'b' = 'c'"):
        cluster(IDS, _pairs([]), 0.95, must_link=[("a", "b"), ("c", "b")], cannot_link=[("c", "a")])


def test_a_pair_marked_both_match_and_not_a_match_raises():
    with pytest.raises(ValueError, match=r"'a' and 'b'.*both"):
        components(IDS, _pairs([]), 0.95, must_link=[("a", "b")], cannot_link=[("b", "a")])


def test_contradictions_are_found_without_clustering_and_deleted_records_break_a_chain():
    with pytest.raises(ValueError, match=r"'p' and 'r'.*'p' = 'q' = 'r'"):
        check_constraints([("p", "q"), ("q", "r")], [("p", "r")])
    assert check_constraints([("p", "q")], [("p", "r")]).summary["cannot_link"]["applied"] == 1
    # q was deleted: its must-links no longer join p and r
    check_constraints([("p", "q"), ("q", "r")], [("p", "r")], record_ids=pd.Series(["p", "r"]))


def test_decisions_about_records_no_longer_present_are_ignored_and_counted():
    result = cluster(IDS, _pairs([("a", "b", 0.99)]), 0.95, must_link=[("a", "gone"), ("c", "d")],
                     cannot_link=[("gone", "b"), ("x", "y")])
    person = _persons(result)
    assert person["a"] == person["b"] and person["c"] == person["d"]
    assert result.constraints["must_link"] == {"given": 2, "applied": 1, "ignored": 1}
    assert result.constraints["cannot_link"] == {"given": 2, "applied": 0, "ignored": 2, "edges_refused": 0}


def test_repeated_decisions_count_once_whichever_way_round():
    result = cluster(IDS, _pairs([]), 0.95, must_link=[("a", "b"), ("b", "a"), ("a", "b")])
    assert result.constraints["must_link"]["given"] == 1


def test_person_ids_of_clusters_the_decisions_do_not_touch_are_unchanged():
    pairs = _pairs([("a", "b", 0.99), ("c", "d", 0.99)])
    before = cluster(IDS, pairs, 0.95).clusters
    after = cluster(IDS, pairs, 0.95, previous=before, cannot_link=[("c", "d")], must_link=[("e", "a")])
    old, new = before.set_index("record_id").person_id, _persons(after)
    assert new["a"] == new["b"] == new["e"] == old["a"]  # e joined a's person, which keeps its id
    assert new["c"] == old["c"] or new["d"] == old["c"]  # one side of the split keeps the old id
    assert new["c"] != new["d"]


def test_merges_and_splits_caused_by_decisions_name_their_cause():
    pairs = _pairs([("a", "b", 0.99), ("c", "d", 0.99), ("b", "e", 0.60)])
    before = cluster(IDS, pairs, 0.95).clusters
    after = cluster(IDS, pairs, 0.95, previous=before, cannot_link=[("c", "d")], must_link=[("b", "e")])
    causes = dict(zip(after.events.event, after.events.cause))
    assert causes == {"merge": "must_link", "split": "cannot_link"}
    by_scores = cluster(IDS, _pairs([("a", "b", 0.99)]), 0.95, previous=before)
    assert set(by_scores.events.cause) == {"scores"}


def _closure_groups(n, must):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in must:
        parent[find(a)] = find(b)
    return [find(i) for i in range(n)]


@st.composite
def _problems(draw, consistent: bool):
    n = draw(st.integers(2, 9))
    ids = [f"r{i}" for i in range(n)]
    index_pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1])
    edges = draw(st.lists(st.tuples(index_pairs, st.sampled_from([0.3, 0.6, 0.9, 0.95, 0.97, 0.99, 0.999])), max_size=20))
    if consistent:  # decisions agree with some hidden truth, so they cannot contradict each other
        truth = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
        must = [p for p in draw(st.lists(index_pairs, max_size=6)) if truth[p[0]] == truth[p[1]]]
        cannot = [p for p in draw(st.lists(index_pairs, max_size=6)) if truth[p[0]] != truth[p[1]]]
    else:
        must = draw(st.lists(index_pairs, max_size=6))
        cannot = draw(st.lists(index_pairs, max_size=4))
    pairs = _pairs([(ids[a], ids[b], p) for (a, b), p in edges])
    named = lambda ps: [(ids[a], ids[b]) for a, b in ps]  # noqa: E731
    density = draw(st.sampled_from([0.0, 0.25, 1.0]))
    return ids, pairs, must, cannot, named(must), named(cannot), density


@settings(max_examples=300, deadline=None)
@given(_problems(consistent=True))
def test_no_cluster_holds_a_cannot_link_pair_and_every_must_link_pair_shares_one(problem):
    ids, pairs, _, _, must, cannot, density = problem
    person = _persons(cluster(pd.Series(ids), pairs, 0.95, min_density=density, must_link=must, cannot_link=cannot))
    assert all(person[a] == person[b] for a, b in must)
    assert all(person[a] != person[b] for a, b in cannot)


@settings(max_examples=300, deadline=None)
@given(_problems(consistent=False))
def test_decisions_raise_exactly_when_must_links_join_a_cannot_link_pair(problem):
    ids, pairs, must_idx, cannot_idx, must, cannot, density = problem
    group = _closure_groups(len(ids), must_idx)
    contradictory = any(group[a] == group[b] for a, b in cannot_idx)
    if contradictory:
        with pytest.raises(ValueError, match="contradictory steward decisions"):
            cluster(pd.Series(ids), pairs, 0.95, min_density=density, must_link=must, cannot_link=cannot)
    else:
        person = _persons(cluster(pd.Series(ids), pairs, 0.95, min_density=density, must_link=must, cannot_link=cannot))
        assert all(person[a] == person[b] for a, b in must)
        assert all(person[a] != person[b] for a, b in cannot)


@settings(max_examples=100, deadline=None)
@given(_problems(consistent=True))
def test_without_decisions_clustering_is_what_it_was(problem):
    ids, pairs, *_, density = problem
    plain = cluster(pd.Series(ids), pairs, 0.95, min_density=density).clusters
    empty = cluster(pd.Series(ids), pairs, 0.95, min_density=density, must_link=[], cannot_link=[]).clusters
    pd.testing.assert_frame_equal(plain, empty)


@pytest.fixture(scope="module")
def six_records():
    rows = [("p1", "Ann", "Lee", "1980-01-02", "5550101"), ("p2", "Ann", "Lee", "1980-01-02", "5550101"),
            ("p3", "Ann", "Lee", "1980-01-02", ""), ("q1", "Bo", "Tran", "1955-07-30", "5550199"),
            ("q2", "Robert", "Tran", "1955-07-30", ""), ("z1", "Cy", "Okafor", "2001-11-12", "5550142")]
    return pd.DataFrame(rows, columns=["record_id", "given_name", "family_name", "dob", "phone"]).assign(agency="PD")


def test_link_records_applies_steward_decisions_and_reports_them(six_records):
    model = MatcherModel.load(MODEL)
    plain = link_records(six_records, model=model)
    person = _persons(plain.clustering)
    assert person["p1"] == person["p2"] and person["z1"] != person["p1"]
    result = link_records(six_records, model=model, previous=plain.clustering.clusters,
                          must_link=[("z1", "q1")], cannot_link=[("p1", "p2"), ("p1", "deleted")])
    person = _persons(result.clustering)
    assert person["z1"] == person["q1"]
    assert person["p1"] != person["p2"]
    assert result.summary["constraints"]["must_link"]["applied"] == 1
    assert result.summary["constraints"]["cannot_link"]["ignored"] == 1
    assert result.summary["events_caused_by_stewards"] >= 1


def test_link_records_refuses_contradictory_decisions_before_scoring(six_records):
    steps = []
    with pytest.raises(ValueError, match="contradictory steward decisions"):
        link_records(six_records, model=MatcherModel.load(MODEL), progress=steps.append,
                     must_link=[("p1", "q1"), ("q1", "z1")], cannot_link=[("z1", "p1")])
    assert "scoring candidate pairs" not in steps
