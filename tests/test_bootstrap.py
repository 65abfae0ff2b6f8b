import pandas as pd

from evaluation.stats import fnmr_bootstrap, person_counts


def _world(split_every: int, groups=("a", "b"), persons_per_group=40):
    truth, clusters, demo = [], [], []
    for g in groups:
        for p in range(persons_per_group):
            key = f"{g}{p}"
            demo.append((key, g))
            for r in range(3):
                rid = f"{key}-{r}"
                truth.append((rid, key))
                # every `split_every`-th person of group b loses one record to its own cluster
                split = g == "b" and p % split_every == 0 and r == 2
                clusters.append((rid, f"c-{rid}" if split else f"c-{key}"))
    return (pd.DataFrame(clusters, columns=["record_id", "person_id"]), pd.DataFrame(truth, columns=["record_id", "person_key"]),
            pd.DataFrame(demo, columns=["person_key", "race_ethnicity"]))


def test_person_pair_counts_count_kept_pairs():
    clusters, truth, _ = _world(split_every=1, groups=("b",), persons_per_group=1)
    counts = person_counts(clusters, truth)
    assert counts.loc["b0", "true_pairs"] == 3 and counts.loc["b0", "kept_pairs"] == 1


def test_bootstrap_reports_group_rates_with_intervals_containing_them():
    clusters, truth, demo = _world(split_every=4)
    result = fnmr_bootstrap(clusters, truth, demo, "race_ethnicity", replicates=200)
    a, b = result["groups"]["a"], result["groups"]["b"]
    assert a["fnmr"] == 0.0
    assert abs(b["fnmr"] - (10 * 2) / (40 * 3)) < 1e-12
    assert b["ci95"][0] <= b["fnmr"] <= b["ci95"][1]
    assert result["ratio"] is None  # min rate 0: the ratio is unbounded, reported as None


def test_small_groups_are_left_out():
    clusters, truth, demo = _world(split_every=4, persons_per_group=10)
    assert fnmr_bootstrap(clusters, truth, demo, "race_ethnicity", min_persons=30)["groups"] == {}
