import numpy as np
import pandas as pd

from matching.thresholds import choose_thresholds, lowest_threshold_with_precision


def test_lowest_threshold_keeps_precision_at_every_higher_cut():
    p = np.array([0.99, 0.98, 0.97, 0.96, 0.5, 0.4])
    y = np.array([1, 1, 0, 1, 1, 0], dtype=bool)
    assert lowest_threshold_with_precision(p, y, 1.0) == 0.98
    assert lowest_threshold_with_precision(p, y, 0.7) == 0.98  # precision dips to 2/3 at 0.97
    assert lowest_threshold_with_precision(p, y, 0.6) == 0.4
    assert lowest_threshold_with_precision(np.array([0.9]), np.array([False]), 0.9) is None


def test_thresholds_chosen_from_truth_meet_their_precision_targets():
    rng = np.random.default_rng(0)
    n = 400
    truth = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "person_key": [f"p{i // 2}" for i in range(n)]})
    rows = []
    for i in range(0, n, 2):
        rows.append((f"r{i}", f"r{i + 1}", float(rng.uniform(0.9, 1.0))))  # true pairs score high
    for _ in range(300):
        a, b = rng.choice(n, 2, replace=False)
        if a // 2 != b // 2:
            rows.append((f"r{a}", f"r{b}", float(rng.uniform(0.0, 0.92))))  # false pairs mostly low
    pairs = pd.DataFrame(rows, columns=["record_id_l", "record_id_r", "match_probability"])
    t = choose_thresholds(truth["record_id"], pairs, truth)
    assert t.possible <= t.probable <= t.certain
    assert t.measured["at_link"]["precision"] >= 0.995
    above = pairs[pairs.match_probability >= t.certain]
    person = dict(zip(truth.record_id, truth.person_key))
    assert (above.record_id_l.map(person) == above.record_id_r.map(person)).mean() >= 0.999
