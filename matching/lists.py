"""List columns (nickname variants, alias tokens) held flat, and the two list functions models use, compiled.

A model's levels ask, for a query against each of its few hundred candidates, how many distinct members
two lists share (`array_length(list_intersect(a, b))`) and whether a list holds a string
(`array_contains(list, x)`). Asked of Python sets per candidate, or through inverted lists of every list
holding a name (thousands for a common one at a million records), this was a fifth of a query's time.
Here the lists present when the vocabulary is frozen are one array of members with offsets (forked
workers share it, as `matching.strings` shares strings), and both functions run per candidate in numba:
here for the numpy scorer, and inside the compiled kernel (`matching.kernel`), which is handed a call's
other lists (the query's own, those of records added since the build) flat as well. Here a list made
after the freeze is answered by the caller from its set (`NOT_FROZEN` rows).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from numba import njit

#: An overlap count or membership the flat lists cannot answer: the list was made after the freeze.
NOT_FROZEN = -2.0


@njit(cache=True, nogil=True)
def _overlaps(offsets, members, codes, wanted):
    """Per list code: how many of its members are in `wanted` (sorted); 0 for NULL, NOT_FROZEN past the freeze."""
    frozen = offsets.shape[0] - 1
    out = np.zeros(codes.shape[0])
    for i in range(codes.shape[0]):
        code = codes[i]
        if code < 0:
            continue
        if code >= frozen:
            out[i] = NOT_FROZEN
            continue
        count = 0
        for j in range(offsets[code], offsets[code + 1]):
            at = np.searchsorted(wanted, members[j])
            if at < wanted.shape[0] and wanted[at] == members[j]:
                count += 1
        out[i] = count
    return out


@njit(cache=True, nogil=True)
def _contains(offsets, members, codes, value):
    """Per list code: 1.0 if it holds `value`, else 0.0 (NULL too); NOT_FROZEN past the freeze."""
    frozen = offsets.shape[0] - 1
    out = np.zeros(codes.shape[0])
    for i in range(codes.shape[0]):
        code = codes[i]
        if code < 0:
            continue
        if code >= frozen:
            out[i] = NOT_FROZEN
            continue
        for j in range(offsets[code], offsets[code + 1]):
            if members[j] == value:
                out[i] = 1.0
                break
    return out


def flat_members(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, members) of lists of string codes, each list's members in the order given (int64 arrays)."""
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    offsets[1:] = list(itertools.accumulate(len(members) for members in lists))
    return offsets, np.fromiter((m for members in lists for m in members), dtype=np.int64, count=int(offsets[-1]))


class FlatLists:
    """Lists of string codes 0 … n-1 as one members array (each list's distinct members, sorted) with offsets;
    the compiled kernel (`matching.kernel`) reads them too. `frozen`: how many lists (the codes below it)."""

    def __init__(self, lists: Sequence[frozenset]):
        self.offsets, self.members = flat_members([sorted(members) for members in lists])
        self.frozen = len(lists)
        self.overlaps(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))   # compiled now, not in a request
        self.contains(np.zeros(0, dtype=np.int64), 0)

    def overlaps(self, codes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """Per list code, the number of its distinct members in the sorted codes `wanted` (see `_overlaps`)."""
        return _overlaps(self.offsets, self.members, np.ascontiguousarray(codes, dtype=np.int64),
                         np.ascontiguousarray(wanted, dtype=np.int64))

    def contains(self, codes: np.ndarray, value: int) -> np.ndarray:
        """Per list code, whether it holds string code `value` (see `_contains`)."""
        return _contains(self.offsets, self.members, np.ascontiguousarray(codes, dtype=np.int64), int(value))
