"""Hidden item relevance per incident (``relevance.csv``) and the noisy responder
feedback a ranker would be trained on (``feedback.csv``).

Relevance is the evaluation truth: every item of every incident subject who has
records, graded 0-3 by a fixed function of call type x category, recency
(half-life per category from the last verification, else the observation),
verification and vagueness; retracted, entered-in-error and expired items are 0.
Feedback is what responders click: for a handful of the subject's displayable
items (active, unexpired) shown at random, a responder marks some of them, and
"helped" follows relevance plus noise and responders' own biases (approach
guidance and communication needs liked, danger labels and stale items less).
Rates and the grading table: evaluation/SYNTH.md §7.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.synth.context import ContextTables
from evaluation.synth.incidents import CALL_TYPES

#   communication sensory trigger approach ineffective medical cognitive safety service legal housing event
WEIGHT = np.array([
    [2, 2, 2, 3, 2, 1, 2, 3, 1, 1, 1, 3],   # disturbance
    [3, 2, 2, 3, 2, 2, 3, 1, 2, 0, 2, 1],   # welfare_check
    [2, 1, 1, 1, 1, 3, 1, 1, 2, 0, 1, 2],   # overdose
    [2, 1, 3, 3, 3, 2, 1, 2, 3, 0, 1, 2],   # suicidal_person
    [3, 2, 3, 3, 3, 1, 2, 2, 3, 0, 1, 2],   # mental_health_crisis
    [2, 1, 2, 2, 2, 1, 1, 2, 1, 1, 3, 1],   # trespass
    [2, 1, 2, 2, 2, 1, 1, 3, 1, 3, 0, 3],   # domestic
    [3, 2, 1, 2, 1, 3, 2, 1, 1, 0, 1, 1],   # medical
    [3, 2, 1, 2, 1, 2, 3, 0, 2, 1, 2, 1],   # missing_person
    [2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1],   # other
], dtype=float)
HALF_LIFE = np.array([1825, 1825, 1095, 1095, 1095, 1095, 1825, 730, 365, 365, 180, 365], dtype=float)  # days
UNVERIFIED = 0.6          # relevance factor for items never verified
VAGUE = 0.3               # ... for unspecific danger labels (SAFE_CAUTION_*)
#   responders' bias on the logit of "helped", by category (same order as WEIGHT's columns)
BIAS = np.array([0.7, 0.4, 0.2, 0.8, 0.4, 0.2, 0.4, -1.0, 0.3, -0.5, -0.2, -0.4])
FEEDBACK = {"intercept": -1.5, "per_grade": 1.0, "stale": -0.7, "incident_sd": 0.6,
            "shown_extra_mean": 2.0, "shown_max": 6, "marked": 0.7}


def incident_arrays(incidents: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subject person row or -1, local date of ``received_at`` in days, call type index)."""
    key = incidents["person_key"].to_numpy(dtype=object)
    person = np.array([int(k[1:]) if k else -1 for k in key], dtype=np.int64)
    day = np.array(incidents["received_at"].str[:10].to_numpy(dtype=str), dtype="datetime64[D]").astype(np.int64)
    ctype = pd.Categorical(incidents["call_type"], categories=CALL_TYPES).codes.astype(np.int64)
    if (ctype < 0).any():
        raise ValueError("unknown call type in incidents")
    return person, day, ctype


def incident_item_pairs(ct: ContextTables, inc_person: np.ndarray, n_persons: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (incident, item) with the item about the incident's subject, in incident
    then item (file) order.  Subjects without records (-1) have no items."""
    by_person = np.argsort(ct.person, kind="stable")
    start = np.searchsorted(ct.person[by_person], np.arange(n_persons))
    count = np.bincount(ct.person, minlength=n_persons)
    c = np.where(inc_person >= 0, count[np.maximum(inc_person, 0)], 0)
    inc = np.repeat(np.arange(len(inc_person)), c)
    rank = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
    return inc, by_person[start[inc_person[inc]] + rank]


def grades(ct: ContextTables, item: np.ndarray, day: np.ndarray, ctype: np.ndarray) -> np.ndarray:
    """Relevance 0-3 of ``item`` at an incident on ``day`` of type ``ctype``:
    round(WEIGHT[call type, category] x 0.5^(age / HALF_LIFE[category]) x UNVERIFIED
    (never verified) x VAGUE (unspecific danger label)); age counts from the last
    verification, else the observation.  0 unless active and unexpired on that day."""
    cat = ct.category[item]
    ref = np.where(ct.verified[item] >= 0, ct.verified[item], ct.observed[item])
    decay = 0.5 ** (np.maximum(day - ref, 0) / HALF_LIFE[cat])
    r = (WEIGHT[ctype, cat] * decay * np.where(ct.verified[item] < 0, UNVERIFIED, 1.0)
         * np.where(ct.vague[item], VAGUE, 1.0))
    g = np.clip(np.floor(r + 0.5), 0, 3).astype(np.int64)
    live = (ct.status[item] == 0) & ((ct.expires[item] < 0) | (ct.expires[item] > day))
    return np.where(live, g, 0)


def make_relevance_and_feedback(ct: ContextTables, incidents: pd.DataFrame, n_persons: int,
                                seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(relevance frame, feedback frame); randomness ``default_rng([seed, 10])``."""
    rng = np.random.default_rng([seed, 10])
    person, day, ctype = incident_arrays(incidents)
    inc, item = incident_item_pairs(ct, person, n_persons)
    g = grades(ct, item, day[inc], ctype[inc])
    ids, item_ids = incidents["incident_id"].to_numpy(dtype=object), ct.items["item_id"].to_numpy(dtype=object)
    relevance = pd.DataFrame({"incident_id": ids[inc], "item_id": item_ids[item], "relevance": g})
    # shown: a random handful of the displayable items; marked by the responder with FEEDBACK['marked']
    n_inc = len(person)
    k = np.minimum(1 + rng.poisson(FEEDBACK["shown_extra_mean"], n_inc), FEEDBACK["shown_max"])
    shows = (ct.status[item] == 0) & ((ct.expires[item] < 0) | (ct.expires[item] > day[inc]))
    key = rng.random(len(inc))
    cand = np.flatnonzero(shows)
    o = cand[np.lexsort((key[cand], inc[cand]))]
    first = np.searchsorted(inc[o], inc[o])
    shown = np.zeros(len(inc), bool)
    shown[o[(np.arange(len(o)) - first) < k[inc[o]]]] = True
    marked = shown & (rng.random(len(inc)) < FEEDBACK["marked"])
    z = rng.normal(0.0, FEEDBACK["incident_sd"], n_inc)
    stale = ct.review_due[item] < day[inc]
    logit = (FEEDBACK["intercept"] + FEEDBACK["per_grade"] * g + BIAS[ct.category[item]] + FEEDBACK["stale"] * stale
             + z[inc])
    helped = (rng.random(len(inc)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    feedback = pd.DataFrame({"incident_id": ids[inc][marked], "item_id": item_ids[item][marked],
                             "helped": helped[marked]})
    return relevance, feedback
