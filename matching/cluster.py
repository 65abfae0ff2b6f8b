"""Turn scored pairs into persons, and keep person ids stable across runs.

Clustering joins pairs at or above the link threshold, strongest first, but refuses to merge two
multi-record clusters that only a few edges connect (see `components`): connected components
would let one ambiguous record chain two people together. Person ids are derived
from the cluster's smallest record id, so a clustering is reproducible, and with a previous
clustering a person keeps the id of the earlier person it overlaps most; merges and splits are
reported as events.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Measured on two 100k-record synthetic counties: at threshold 0.95, pairwise precision rose from
# 0.986 / 0.993 (connected components) to 0.996 / 0.997, recall fell by under 0.002.
DEFAULT_MIN_DENSITY = 0.25


@dataclass
class Clustering:
    """`clusters`: record_id, person_id for every record. `events`: merges and splits against a previous run."""

    clusters: pd.DataFrame
    events: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["event", "person_id", "related_person_ids", "records"]))

    @property
    def n_persons(self) -> int:
        return int(self.clusters["person_id"].nunique())


def components(record_ids: pd.Series, pairs: pd.DataFrame, threshold: float, min_density: float = DEFAULT_MIN_DENSITY) -> np.ndarray:
    """Cluster label per record (in `record_ids` order) from pairs with match_probability >= threshold.

    Greedy agglomeration over edges in descending probability (ties by record ids, so the result
    is deterministic). A single record joins the cluster of its best edge. Two clusters of
    several records merge only if the edges between them cover at least `min_density` of their
    record pairs. This stops one record that matches two different people -- a father and son
    sharing a name and an address, where the record has no date of birth -- from chaining both
    people into one. `min_density=0` gives plain connected components.
    """
    index = pd.Index(record_ids.astype(str))
    if not index.is_unique:
        raise ValueError("record ids must be unique to cluster")
    edges = pairs.loc[pairs["match_probability"] >= threshold, ["record_id_l", "record_id_r", "match_probability"]]
    left = index.get_indexer(edges["record_id_l"].astype(str))
    right = index.get_indexer(edges["record_id_r"].astype(str))
    keep = (left >= 0) & (right >= 0) & (left != right)
    left, right, prob = left[keep], right[keep], edges["match_probability"].to_numpy()[keep]
    order = np.lexsort((right, left, -prob))
    return _agglomerate(len(index), left[order].tolist(), right[order].tolist(), min_density)


def _agglomerate(n: int, left: list[int], right: list[int], min_density: float) -> np.ndarray:
    """Union-find over ordered edges, with per-cluster counts of edges to each neighbouring cluster."""
    parent = list(range(n))
    size = [1] * n
    neighbours: list[dict[int, int] | None] = [None] * n
    for a, b in zip(left, right):
        for x, y in ((a, b), (b, a)):
            table = neighbours[x]
            if table is None:
                table = neighbours[x] = {}
            table[y] = table.get(y, 0) + 1

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(left, right):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        if size[ra] > 1 and size[rb] > 1 and neighbours[ra].get(rb, 0) < min_density * size[ra] * size[rb]:
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        merged, absorbed = neighbours[ra], neighbours[rb]
        for other, count in absorbed.items():
            if other == ra:
                continue
            merged[other] = merged.get(other, 0) + count
            table = neighbours[other]
            table[ra] = table.get(ra, 0) + count
            table.pop(rb, None)
        merged.pop(rb, None)
        neighbours[rb] = None
    return np.fromiter((find(i) for i in range(n)), dtype=np.int64, count=n)


def fresh_person_id(seed: str, taken: set[str]) -> str:
    """A person id derived from a record id: deterministic, lengthened on a collision, then salted.

    A record that starts a person more than once (updated, re-added) finds its earlier ids taken;
    ids are never reused for another person, so the seed is salted until a free one comes up.
    """
    for salt in itertools.count():
        digest = hashlib.sha1((seed if salt == 0 else f"{seed}#{salt}").encode()).hexdigest()
        for width in (10, 14) if salt == 0 else (14,):
            candidate = f"P{digest[:width].upper()}"
            if candidate not in taken:
                return candidate
    raise AssertionError("unreachable")


def assign_person_ids(record_ids: pd.Series, labels: np.ndarray, previous: pd.DataFrame | None = None) -> Clustering:
    """Name the components. With `previous` (record_id, person_id), reuse its ids by greatest overlap.

    Greedy by overlap size (ties: smaller previous id, then smaller component), each previous id
    used once. A component that takes records from several previous persons is a merge; a previous
    person whose records land in several components is a split.
    """
    frame = pd.DataFrame({"record_id": record_ids.astype(str).to_numpy(), "component": labels})
    seeds = frame.groupby("component")["record_id"].min()
    names: dict[int, str] = {}
    events: list[dict] = []
    taken: set[str] = set()
    if previous is not None and len(previous):
        prev = previous[["record_id", "person_id"]].astype(str)
        overlap = frame.merge(prev, on="record_id", how="inner").groupby(["component", "person_id"]).size()
        overlap = overlap.rename("n").reset_index().sort_values(["n", "person_id", "component"], ascending=[False, True, True])
        used: set[str] = set()
        for row in overlap.itertuples(index=False):
            if row.component not in names and row.person_id not in used:
                names[row.component] = row.person_id
                used.add(row.person_id)
        taken = set(prev["person_id"])
        for component, group in overlap.groupby("component"):
            if group["person_id"].nunique() > 1:
                events.append({"event": "merge", "person_id": names.get(component, ""),
                               "related_person_ids": "|".join(sorted(group["person_id"])), "records": int(group["n"].sum())})
        for person_id, group in overlap.groupby("person_id"):
            if group["component"].nunique() > 1:
                events.append({"event": "split", "person_id": person_id,
                               "related_person_ids": "", "records": int(group["n"].sum()), "_components": list(group["component"])})
    taken |= set(names.values())
    for component in seeds.sort_values().index:
        if component not in names:
            names[component] = fresh_person_id(seeds[component], taken)
            taken.add(names[component])
    for event in events:
        if "_components" in event:
            event["related_person_ids"] = "|".join(sorted(names[c] for c in event.pop("_components")))
    clusters = pd.DataFrame({"record_id": frame["record_id"], "person_id": frame["component"].map(names)})
    return Clustering(clusters=clusters, events=pd.DataFrame(events, columns=["event", "person_id", "related_person_ids", "records"]))


def cluster(record_ids: pd.Series, pairs: pd.DataFrame, threshold: float, previous: pd.DataFrame | None = None,
            min_density: float = DEFAULT_MIN_DENSITY) -> Clustering:
    """Cluster at `threshold` (see `components`) and name the clusters stably (see `assign_person_ids`)."""
    return assign_person_ids(record_ids, components(record_ids, pairs, threshold, min_density), previous)
