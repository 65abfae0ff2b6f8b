"""The candidate index's key table: every record's key hashes, sorted, with their slots, found in compiled code.

A query probes a few dozen key hashes (several blocking keys, an approximate birth year at each year
within the slack). Bisecting the whole table for each, as `np.searchsorted` does, reads some twenty
scattered cache lines per probe on a table of tens of millions of hashes at 1M records: most of the
lookup's time. A directory by the hashes' top bits (`KEYS_PER_ENTRY` hashes per entry on average; hashes
are uniform) narrows each probe to a few neighbouring hashes first, and the search runs in numba, one
call for all probes. The table is built once and only read afterwards, so forked workers share it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Hashes per directory entry on average: the directory costs 8 / KEYS_PER_ENTRY bytes per hash.
KEYS_PER_ENTRY = 16


@njit(cache=True, nogil=True)
def _find(keys, directory, shift, hashes, first, end):
    """first[i], end[i]: the range of `keys` equal to hashes[i] (empty where none is)."""
    for i in range(hashes.shape[0]):
        h = hashes[i]
        entry = np.int64(h >> shift)          # < 2 ** 30; as int64, so entry + 1 stays an integer
        lo, hi = directory[entry], directory[entry + 1]
        top = hi
        while lo < hi:                       # the first key >= h
            mid = (lo + hi) >> 1
            if keys[mid] < h:
                lo = mid + 1
            else:
                hi = mid
        first[i] = lo
        hi = top
        while lo < hi:                       # the first key > h
            mid = (lo + hi) >> 1
            if keys[mid] <= h:
                lo = mid + 1
            else:
                hi = mid
        end[i] = lo


class KeyTable:
    """Sorted 64-bit key hashes and the record slot of each; `find` gives each probe's range of slots."""

    def __init__(self, keys: np.ndarray, slots: np.ndarray):
        if len(keys) != len(slots):
            raise ValueError("one slot per key hash")
        order = np.argsort(keys, kind="stable")
        self.keys = np.ascontiguousarray(keys[order], dtype=np.uint64)
        self.slots = np.ascontiguousarray(slots[order], dtype=np.int32)
        bits = min(30, max(1, math.ceil(math.log2(max(len(self.keys), 1) / KEYS_PER_ENTRY + 1))))
        self.shift = np.uint64(64 - bits)
        starts = np.arange(1 << bits, dtype=np.uint64) << self.shift
        self.directory = np.append(np.searchsorted(self.keys, starts, "left"), len(self.keys)).astype(np.int64)
        self.find(np.empty(0, dtype=np.uint64))   # compiled (or loaded from numba's cache) now, not in a request

    @classmethod
    def empty(cls) -> "KeyTable":
        return cls(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int32))

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first, end) per hash: its slots are `slots[first:end]`, empty where no record has it."""
        first, end = np.empty(len(hashes), dtype=np.int64), np.empty(len(hashes), dtype=np.int64)
        _find(self.keys, self.directory, self.shift, np.ascontiguousarray(hashes, dtype=np.uint64), first, end)
        return first, end

    def __len__(self) -> int:
        return len(self.keys)
