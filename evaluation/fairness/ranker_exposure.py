"""Exposure in the ranker audit: what each ranked line of an incident gets from its position, and what it deserves.

A line at position p gets w(p) = 1/log2(1 + p) for p <= 5, else 0 (`position_weight`); its deserved weight is
what the same lines get, in expectation, from the ideal order by relevance with ties broken at random
(`ideal_weight`); its content-blind weight what they get from a random order (`neutral_weight`).
`ranked_lines` ranks every incident for its true subject as the service does; `incident_table` sums the
weights per incident and class of line (stigmatising, supportive, doubtful danger label, police-sourced).
The audit itself and the definitions: `evaluation.fairness.ranker`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.ranking.evaluate import ndcg
from scoring.rank import rank
from scoring.rules import Rules

TOP = 5
STIGMATISING = ("safety_flag", "recent_event", "legal_status")
SUPPORTIVE = ("communication_need", "sensory_need", "trauma_trigger", "effective_approach", "ineffective_approach",
              "cognitive_developmental", "service_connection")
POLICE_AGENCIES = frozenset({"METRO_PD", "COUNTY_911"})   # RMS and CAD records: police contacts
TERM_FAMILIES = ("category", "recency / age", "source", "verification", "review date", "danger label", "corroboration")


def position_weight(position, k: int = TOP) -> np.ndarray:
    """w(p) = 1/log2(1 + p) for 1 <= p <= k, else 0."""
    p = np.asarray(position, dtype=float)
    return np.where(p <= k, 1.0 / np.log2(1.0 + p), 0.0)


def ideal_weight(gains, k: int = TOP) -> np.ndarray:
    """Each line's expected w under the relevance-sorted order with ties broken uniformly at random."""
    g = np.asarray(gains, dtype=float)
    cum = np.concatenate([[0.0], np.cumsum(position_weight(np.arange(1, len(g) + 1), k))])
    above, tied = (g[None, :] > g[:, None]).sum(1), (g[None, :] == g[:, None]).sum(1)
    return (cum[above + tied] - cum[above]) / tied


def neutral_weight(n_lines) -> np.ndarray:
    """Expected w of each of n lines under a uniformly random order: (w(1) + ... + w(min(n, 5))) / n."""
    n = np.asarray(n_lines, dtype=float)
    cum = np.cumsum(position_weight(np.arange(1, TOP + 1)))
    return cum[np.minimum(n, TOP).astype(int) - 1] / n


def incident_table(lines: pd.DataFrame) -> pd.DataFrame:
    """Per incident (from `ranked_lines`): exposure E_, deserved exposure Estar_, neutral exposure N_ (random order) and
    line count n_ of stig, supp, doubtful and police lines; NDCG@5."""
    by = lines.groupby("incident_id", sort=False)["gain"]
    w, w_ideal = position_weight(lines["position"]), by.transform(lambda g: ideal_weight(g.to_numpy())).to_numpy(float)
    w_neutral = neutral_weight(by.transform("size").to_numpy())
    masks = {"stig": lines["category"].isin(STIGMATISING), "supp": lines["category"].isin(SUPPORTIVE),
             "doubtful": lines["doubtful"].astype(bool), "police": lines["police"].astype(bool)}
    cols = {f"{kind}_{key}": value * mask.to_numpy(float) for key, mask in masks.items()
            for kind, value in (("E", w), ("Estar", w_ideal), ("N", w_neutral), ("n", 1.0))}
    table = (pd.DataFrame(cols, index=lines.index).assign(incident_id=lines["incident_id"])
             .groupby("incident_id", sort=False).sum())
    table["ndcg5"] = by.agg(lambda g: ndcg(list(g), TOP))
    return lines.groupby("incident_id", sort=False)[["person_key"]].first().join(table).assign(incidents=1.0)



def term_family(term: dict) -> str:
    """The family of a rank term (rule or model): category, recency / age, source, verification, review date, ..."""
    name = term["term"].removeprefix("model: ")
    for needle, family in (("corroborated", "corroboration"), ("danger label", "danger label"),
                           ("review date", "review date"), ("unverified since", "review date"),
                           ("days since", "recency / age"), ("recency", "recency / age"), ("date seen", "recency / age"),
                           ("verified", "verification"), ("source ", "source")):
        if needle in name:
            return family
    return "category"


def ranked_lines(ctx, rules: Rules, model, incident_ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per ranked line: incident, person, position, category, gain, doubtful, police;
    one row per term of every stigmatising line: incident, person, position, family, contribution, sunk)."""
    grade = {(i, j): int(r) for i, j, r in ctx.relevance[["incident_id", "item_id", "relevance"]].itertuples(index=False)}
    person_of = dict(zip(ctx.incidents["incident_id"], ctx.incidents["person_key"]))
    rows, terms = [], []
    for incident_id in incident_ids:
        call_type, now = ctx.when[incident_id]
        person = person_of[incident_id]
        for position, line in enumerate(rank(ctx.person_items.get(person, []), call_type, "certain", now, rules, model), 1):
            doubtful = rules.is_doubtful_danger(line.head, now)
            rows.append((incident_id, person, position, line.category,
                         max(grade.get((incident_id, s["item_id"]), 0) for s in line.sources), doubtful,
                         any(s["agency"] in POLICE_AGENCIES for s in line.sources)))
            if line.category in STIGMATISING:
                terms += [(incident_id, person, position, term_family(t), t["contribution"], doubtful) for t in line.terms]
    return (pd.DataFrame(rows, columns=["incident_id", "person_key", "position", "category", "gain", "doubtful", "police"]),
            pd.DataFrame(terms, columns=["incident_id", "person_key", "position", "family", "contribution", "sunk"]))

