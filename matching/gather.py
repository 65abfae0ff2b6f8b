"""Copying a batch's plain columns into the compiled scorer's leaf matrix (`matching.kernel`), compiled.

The kernel reads each pair's leaves side by side in one float64 matrix with its NULL mask. Filling it
by numpy fancy indexing, a query broadcast down the matrix and a few hundred candidates' rows of the
index's code matrix, took a tenth of a query's time in temporaries; these loops write each cell once.
A NULL is a NaN number or a negative code, as `matching.encoding.vec` says.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def rows_into(codes, slots, positions, at, values, null):
    """values[i, at[j]] = codes[slots[i], positions[j]] for every row i, NULL where the code is negative."""
    for i in range(slots.shape[0]):
        slot = slots[i]
        for j in range(positions.shape[0]):
            code = codes[slot, positions[j]]
            values[i, at[j]] = code
            null[i, at[j]] = code < 0


@njit(cache=True, nogil=True)
def row_into(row, is_number, at, values, null):
    """Every row of `values` gets `row` at columns `at`; NULL where a number is NaN or a code is negative."""
    for j in range(at.shape[0]):
        value = row[j]
        missing = np.isnan(value) if is_number[j] else value < 0
        for i in range(values.shape[0]):
            values[i, at[j]] = value
            null[i, at[j]] = missing


@njit(cache=True, nogil=True)
def codes_past(values, leaves, frozen):
    """The distinct codes at or past `frozen` in columns `leaves` of `values`, sorted (int64): a call's strings or
    lists that the frozen buffers do not hold, which the kernel is handed beside them."""
    out = np.empty(values.shape[0] * leaves.shape[0], dtype=np.int64)
    last = np.full(leaves.shape[0], -1.0)          # a query's code repeats down its column: kept once
    k = 0
    for i in range(values.shape[0]):
        for j in range(leaves.shape[0]):
            code = values[i, leaves[j]]
            if code >= frozen and code != last[j]:
                last[j] = code
                out[k] = np.int64(code)
                k += 1
    return np.unique(out[:k])


def warm_up() -> None:
    """Compile (or load from numba's cache) each with the types a query passes, not in a request."""
    values, null = np.zeros((1, 1)), np.zeros((1, 1), dtype=np.bool_)
    codes_past(values, np.zeros(1, dtype=np.int64), 0)
    rows_into(np.zeros((1, 1), dtype=np.int32), np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int64),
              np.zeros(1, dtype=np.int64), values, null)
    row_into(np.zeros(1), np.zeros(1, dtype=np.bool_), np.zeros(1, dtype=np.int64), values, null)
