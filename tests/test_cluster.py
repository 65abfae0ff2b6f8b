import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.cluster import cluster


def _pairs(rows):
    return pd.DataFrame(rows, columns=["record_id_l", "record_id_r", "match_probability"])


IDS = pd.Series(["a", "b", "c", "d", "e"])


def test_pairs_at_or_above_threshold_join_transitively():
    result = cluster(IDS, _pairs([("a", "b", 0.99), ("b", "c", 0.95), ("d", "e", 0.5)]), threshold=0.95)
    person = dict(zip(result.clusters.record_id, result.clusters.person_id))
    assert person["a"] == person["b"] == person["c"]
    assert person["d"] != person["e"]
    assert result.n_persons == 3


def test_person_ids_are_reproducible():
    pairs = _pairs([("a", "b", 0.99)])
    first = cluster(IDS, pairs, 0.9).clusters
    second = cluster(IDS.sample(frac=1, random_state=3), pairs, 0.9).clusters
    assert dict(zip(first.record_id, first.person_id)) == dict(zip(second.record_id, second.person_id))


def test_previous_ids_survive_a_rerun_with_a_new_record():
    before = cluster(IDS, _pairs([("a", "b", 0.99), ("c", "d", 0.99)]), 0.9).clusters
    ids = pd.Series(list(IDS) + ["f"])
    after = cluster(ids, _pairs([("a", "b", 0.99), ("c", "d", 0.99), ("f", "a", 0.99)]), 0.9, previous=before)
    old = dict(zip(before.record_id, before.person_id))
    new = dict(zip(after.clusters.record_id, after.clusters.person_id))
    assert new["a"] == new["f"] == old["a"]
    assert new["c"] == old["c"]
    assert after.events.empty


def test_merge_and_split_are_reported_as_events():
    before = cluster(IDS, _pairs([("a", "b", 0.99), ("c", "d", 0.99)]), 0.9).clusters
    merged = cluster(IDS, _pairs([("a", "b", 0.99), ("c", "d", 0.99), ("b", "c", 0.99)]), 0.9, previous=before)
    assert list(merged.events.event) == ["merge"]
    assert merged.clusters.person_id.nunique() == 2
    split = cluster(IDS, _pairs([("c", "d", 0.99)]), 0.9, previous=before)
    events = split.events.set_index("event")
    assert "split" in events.index
    old_ab = before.set_index("record_id").person_id["a"]
    assert events.loc["split", "person_id"] == old_ab
    assert len(events.loc["split", "related_person_ids"].split("|")) == 2


def test_one_ambiguous_record_does_not_chain_two_people_together():
    # father f1..f3 and son s1..s3 are each tightly linked; x (no date of birth) matches one of each
    ids = pd.Series(["f1", "f2", "f3", "s1", "s2", "s3", "x"])
    rows = [(a, b, 0.999) for a, b in (("f1", "f2"), ("f1", "f3"), ("f2", "f3"), ("s1", "s2"), ("s1", "s3"), ("s2", "s3"))]
    rows += [("x", "f1", 0.99), ("x", "s1", 0.98)]
    person = cluster(ids, _pairs(rows), 0.95).clusters.set_index("record_id").person_id
    assert person["f1"] != person["s1"]
    assert person["x"] == person["f1"]  # it joins its strongest match
    chained = cluster(ids, _pairs(rows), 0.95, min_density=0).clusters.set_index("record_id").person_id
    assert chained["f1"] == chained["s1"]  # plain connected components would merge them


def test_the_persons_a_refused_chain_keeps_apart_are_reported_with_their_strongest_pair():
    ids = pd.Series(["f1", "f2", "f3", "s1", "s2", "s3", "x"])
    rows = [(a, b, 0.999) for a, b in (("f1", "f2"), ("f1", "f3"), ("f2", "f3"), ("s1", "s2"), ("s1", "s3"), ("s2", "s3"))]
    rows += [("x", "f1", 0.99), ("x", "s1", 0.98), ("f3", "s3", 0.96), ("x", "s2", 0.5)]
    held = cluster(ids, _pairs(rows), 0.95).held_apart
    assert held.to_dict("records") == [
        {"record_id_l": "x", "record_id_r": "s1", "match_probability": 0.98, "reason": "few links"}]
    assert cluster(ids, _pairs(rows), 0.95, cannot_link=[("x", "s1"), ("f3", "s3")]).held_apart.empty
    assert cluster(ids, _pairs(rows), 0.95, min_density=0).held_apart.empty


def test_densely_connected_halves_of_one_person_still_merge():
    ids = pd.Series(["a1", "a2", "b1", "b2"])
    rows = [("a1", "a2", 0.999), ("b1", "b2", 0.999), ("a1", "b1", 0.97), ("a2", "b2", 0.96)]
    assert cluster(ids, _pairs(rows), 0.95).n_persons == 1  # 2 of 4 cross pairs = density 0.5


def _reference_components(n, edges, min_density):
    """The density rule spelt out: scan every edge to count those between two clusters, at every merge."""
    label = list(range(n))
    for a, b, _ in edges:
        la, lb = label[a], label[b]
        if la == lb:
            continue
        members_a = [i for i in range(n) if label[i] == la]
        members_b = [i for i in range(n) if label[i] == lb]
        if len(members_a) > 1 and len(members_b) > 1:
            between = sum(1 for x, y, _ in edges if {label[x], label[y]} == {la, lb})
            if between < min_density * len(members_a) * len(members_b):
                continue
        label = [la if lab == lb else lab for lab in label]
    return label


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=2, max_value=9).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from([0.96, 0.97, 0.98, 0.99])),
             max_size=25),
    st.sampled_from([0.0, 0.25, 0.5]))))
def test_clustering_follows_the_density_rule_exactly(case):
    n, raw, min_density = case
    seen, edges = set(), []
    for a, b, p in raw:
        if a != b and (min(a, b), max(a, b)) not in seen:
            seen.add((min(a, b), max(a, b)))
            edges.append((min(a, b), max(a, b), p))
    edges.sort(key=lambda e: (-e[2], e[0], e[1]))
    ids = pd.Series([f"r{i}" for i in range(n)])
    pairs = _pairs([(f"r{a}", f"r{b}", p) for a, b, p in edges])
    ours = cluster(ids, pairs, 0.95, min_density=min_density).clusters.person_id.tolist()
    expected = _reference_components(n, edges, min_density)
    same = {(i, j) for i in range(n) for j in range(n) if ours[i] == ours[j]}
    assert same == {(i, j) for i in range(n) for j in range(n) if expected[i] == expected[j]}
    strongest: dict = {}
    for a, b, p in edges:                       # strongest first: the first edge between two persons is theirs
        strongest.setdefault(frozenset((expected[a], expected[b])), (f"r{a}", f"r{b}", p, "few links"))
    held = cluster(ids, pairs, 0.95, min_density=min_density).held_apart
    assert sorted(held.itertuples(index=False, name=None)) == sorted(
        row for key, row in strongest.items() if len(key) == 2)
