"""Agglomerative clustering's machinery: union-find over scored edges, strongest first, with the rules a
merge is checked against (`matching.cluster` says what they are for and names the persons).

`Agglomeration` holds the state: cluster roots, sizes and members, the edges between two clusters
(counted from the smaller one's records when a merge asks, a refusal remembered until either grows),
steward cannot-link partners per root, generational suffix marks and birth-year tallies per root, and
the attested identities (`matching.attested`). `constrain` applies steward decisions, `run` the edges;
`held_apart` turns its refusals into the pairs a steward should see.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from matching.attested import AttestedIdentity

HELD_APART_COLUMNS = ["record_id_l", "record_id_r", "match_probability", "reason"]
FEW_LINKS = "few links"


def held_apart(labels: np.ndarray, left: np.ndarray, right: np.ndarray, prob: np.ndarray, index: pd.Index,
               refusals: list[tuple[int, str]]) -> pd.DataFrame:
    """The strongest refused edge between each two clusters that end apart, with why it was refused.
    `refusals` are (edge position, reason) in edge order, strongest first."""
    rows, seen = [], set()
    for k, reason in refusals:
        a, b = int(labels[left[k]]), int(labels[right[k]])
        key = (a, b) if a < b else (b, a)
        if a != b and key not in seen:
            seen.add(key)
            rows.append((index[left[k]], index[right[k]], float(prob[k]), reason))
    return pd.DataFrame(rows, columns=HELD_APART_COLUMNS)


def _adjacency(n: int, left: np.ndarray, right: np.ndarray) -> tuple[list[int], list[int]]:
    """Every record's neighbours over the edges, both ways (CSR: record i's are targets[starts[i]:starts[i + 1]])."""
    sources = np.concatenate([left, right])
    order = np.argsort(sources, kind="stable")
    targets = np.concatenate([right, left])[order]
    starts = np.searchsorted(sources[order], np.arange(n + 1))
    return starts.tolist(), targets.tolist()


class Agglomeration:
    """Union-find over the records with what `run` checks before a merge: the edges between two
    clusters (counted from the smaller one's records when asked, a refusal remembered until either
    grows), cannot-link partners per cluster root, and attested identities."""

    def __init__(self, n: int, left: np.ndarray, right: np.ndarray, min_density: float,
                 attested: AttestedIdentity | None):
        self.parent = list(range(n))
        self.size = [1] * n
        self.members: dict[int, list[int]] = {}
        self.starts, self.targets = _adjacency(n, left, right)
        self.apart: dict[int, set[int]] = {}
        self.verdicts: dict[tuple[int, int], tuple[int, int, str]] = {}
        self.min_density, self.attested = min_density, attested
        self.marks = list(attested.marks) if attested is not None else [0] * n   # generational suffixes, per root
        self.years: dict[int, dict[int, int]] = {}   # birth-year tallies, per root, once asked for (then kept)

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def edges_between(self, ra: int, rb: int) -> int:
        small, other = (ra, rb) if self.size[ra] <= self.size[rb] else (rb, ra)
        starts, targets, find = self.starts, self.targets, self.find
        return sum(1 for x in self.members.get(small, (small,)) for y in targets[starts[x]:starts[x + 1]] if find(y) == other)

    def checked(self, ra: int, rb: int) -> bool:
        """Whether a merge of these two needs `refusal`: both hold several records, or either a generational suffix."""
        return (self.size[ra] > 1 and self.size[rb] > 1) or bool(self.marks[ra] | self.marks[rb])

    def refusal(self, ra: int, rb: int) -> str | None:
        """Why two clusters must not merge by scores (FEW_LINKS, a conflicting field, a generation apart:
        `matching.attested`), remembered per state."""
        size = self.size
        key = (ra, rb) if ra < rb else (rb, ra)
        seen = self.verdicts.get(key)
        if seen is not None and seen[:2] == (size[key[0]], size[key[1]]):
            return seen[2]
        several = size[ra] > 1 and size[rb] > 1
        if several and self.edges_between(ra, rb) < self.min_density * size[ra] * size[rb]:
            reason = FEW_LINKS
        elif self.attested is not None:
            reason = None
            if self.marks[ra] | self.marks[rb]:
                reason = self.attested.generation(self.marks[ra], self.marks[rb], self._birth_year(ra),
                                                  self._birth_year(rb))
            if reason is None and several:
                reason = self.attested.conflict(self.members[ra], self.members[rb])
            if reason is None:
                return None
        else:
            return None
        self.verdicts[key] = (size[key[0]], size[key[1]], reason)
        return reason

    def _tally(self, root: int) -> dict[int, int]:
        """The cluster's birth years counted (from its records the first time; kept up to date by `merge`)."""
        tally = self.years.get(root)
        if tally is None:
            tally = {}
            years = self.attested.years
            for record in self.members.get(root, (root,)):
                if years[record] >= 0:
                    tally[years[record]] = tally.get(years[record], 0) + 1
            self.years[root] = tally
        return tally

    def _birth_year(self, root: int) -> int:
        """A single record's own birth year, or the one a cluster attests; -1 for none."""
        if self.size[root] == 1:
            return self.attested.years[root]
        return self.attested.birth_year_of(self._tally(root))

    def keep_apart(self, ra: int, rb: int) -> None:
        self.apart.setdefault(ra, set()).add(rb)
        self.apart.setdefault(rb, set()).add(ra)

    def kept_apart(self, ra: int, rb: int) -> bool:
        return rb in self.apart.get(ra, ())

    def merge(self, ra: int, rb: int) -> None:
        size, members, apart = self.size, self.members, self.apart
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        if ra in self.years or rb in self.years:           # keep a tally once counted: each record counted once
            into = self._tally(ra)
            for year, count in self._tally(rb).items():
                into[year] = into.get(year, 0) + count
            del self.years[rb]
        self.parent[rb] = ra
        size[ra] += size[rb]
        self.marks[ra] |= self.marks[rb]
        into = members.get(ra)
        if into is None:
            into = members[ra] = [ra]
        into.extend(members.pop(rb, (rb,)))
        if rb in apart:
            partners = apart.pop(rb)
            for other in partners:
                apart[other].discard(rb)
                apart[other].add(ra)
            apart.setdefault(ra, set()).update(partners)

    def constrain(self, must: list[tuple[int, int]], cannot: list[tuple[int, int]]) -> tuple[int, int] | None:
        """Merge the must-link pairs, then remember each cannot-link pair's roots as kept apart; the first
        cannot-link pair the must-links already joined (a contradiction), or None."""
        find = self.find
        for a, b in must:
            ra, rb = find(a), find(b)
            if ra != rb:
                self.merge(ra, rb)
        for a, b in cannot:
            ra, rb = find(a), find(b)
            if ra == rb:
                return a, b
            self.keep_apart(ra, rb)
        return None

    def run(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, int, dict, list[tuple[int, str]]]:
        """Merge over the ordered edges, a steward's cannot-link checked before any rule. Returns the labels,
        how many merges a cannot-link refused, how many edges a conflict of identities or generations refused,
        by reason, and the edges a rule refused between two clusters no cannot-link keeps apart, as (edge
        position, reason)."""
        find = self.find
        refused = 0
        conflicts: dict[str, int] = {}
        refusals: list[tuple[int, str]] = []
        for k, (a, b) in enumerate(zip(left.tolist(), right.tolist())):
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            if self.kept_apart(ra, rb):
                refused += 1
                continue
            if self.checked(ra, rb):
                reason = self.refusal(ra, rb)
                if reason is not None:
                    if reason != FEW_LINKS:
                        conflicts[reason] = conflicts.get(reason, 0) + 1
                    refusals.append((k, reason))
                    continue
            self.merge(ra, rb)
        # persons a steward keeps apart (their cannot-link partners joined them later) are decided, not held apart
        refusals = [(k, reason) for k, reason in refusals
                    if not self.kept_apart(find(int(left[k])), find(int(right[k])))]
        return self.labels(), refused, conflicts, refusals

    def labels(self) -> np.ndarray:
        n = len(self.parent)
        return np.fromiter((self.find(i) for i in range(n)), dtype=np.int64, count=n)
