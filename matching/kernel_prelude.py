"""The fixed start of every generated kernel (`matching.kernel`): SQL truth values, where a string's code
points lie, the per-call memo of string metrics, term-frequency adjustments and the list functions.

It is source text, compiled with each kernel into its cache file, so a change here makes a new kernel.
"""

#: What every generated kernel starts with: SQL truth values are 1 (TRUE), 0 (FALSE), -1 (NULL).
PRELUDE = '''
import math
import numpy as np
from numba import njit
from matching.kernel_metrics import edits_capped, jaro, jaro_winkler, levenshtein

FUSED = {fused}


@njit(cache=True)
def t_and(a, b):
    if a == 0 or b == 0:
        return 0
    if a == -1 or b == -1:
        return -1
    return 1


@njit(cache=True)
def t_or(a, b):
    if a == 1 or b == 1:
        return 1
    if a == -1 or b == -1:
        return -1
    return 0


@njit(cache=True)
def known(null, value):
    if null:
        return -1
    return 1 if value else 0


@njit(cache=True)
def where(code, PO, NF, XC, XO):
    """Where a string's code points are: in P (the frozen strings) or X (this call's others), start, length.
    (Indices, not a slice: a slice costs some 90 ns, the whole metric little more.)"""
    if code < NF:
        return True, PO[code], PO[code + 1] - PO[code]
    k = np.searchsorted(XC, code)
    return False, XO[k], XO[k + 1] - XO[k]


@njit(cache=True)
def memo_slot(K, stamp, metric, a, b):
    """The slot of (metric, a, b) in this call's memo (>= 0), or -1 - the free slot to put it in."""
    mask = K.shape[0] - 1
    h = (a * 2654435761 + b * 40503 + metric * 97) & mask
    while True:
        if K[h, 0] != stamp:
            return -1 - h
        if K[h, 1] == metric and K[h, 2] == a and K[h, 3] == b:
            return h
        h = (h + 1) & mask


@njit(cache=True)
def memo_put(K, KV, slot, stamp, metric, a, b, value):
    """Remember a metric's value for this call, while the memo is at most half full."""
    if K[0, 4] == stamp and K[1, 4] * 2 >= K.shape[0]:
        return
    if K[0, 4] != stamp:
        K[0, 4] = stamp
        K[1, 4] = 0
    K[1, 4] += 1
    K[slot, 0] = stamp
    K[slot, 1] = metric
    K[slot, 2] = a
    K[slot, 3] = b
    KV[slot] = value


@njit(cache=True)
def tf_adjustment(left, right, minimum_u, weight, log2_u_exact):
    if math.isnan(left) and math.isnan(right):
        return 0.0
    u = right if math.isnan(left) else left if math.isnan(right) else max(left, right)
    return weight * (log2_u_exact - math.log2(max(u, minimum_u)))


@njit(cache=True)
def list_members(code, LO, LM, LF, LXC, LXO, LXM):
    """A list's distinct members, sorted: in LM (the lists frozen at the build) or LXM (this call's others)."""
    if code < LF:
        return LM[LO[code]:LO[code + 1]]
    k = np.searchsorted(LXC, code)
    return LXM[LXO[k]:LXO[k + 1]]


@njit(cache=True)
def list_has(LO, LM, LF, LXC, LXO, LXM, code, value):
    """array_contains(list, value) of two known codes."""
    if code < 0 or value < 0:
        return False
    members = list_members(code, LO, LM, LF, LXC, LXO, LXM)
    k = np.searchsorted(members, value)
    return k < members.shape[0] and members[k] == value


@njit(cache=True)
def list_overlap(LO, LM, LF, LXC, LXO, LXM, a, b):
    """array_length(list_intersect(a, b)): the distinct members two lists share; 0 where either is NULL."""
    if a < 0 or b < 0:
        return 0.0
    x = list_members(a, LO, LM, LF, LXC, LXO, LXM)
    y = list_members(b, LO, LM, LF, LXC, LXO, LXM)
    i = j = count = 0
    while i < x.shape[0] and j < y.shape[0]:
        if x[i] == y[j]:
            count += 1
            i += 1
            j += 1
        elif x[i] < y[j]:
            i += 1
        else:
            j += 1
    return float(count)
'''
LISTS = "LO, LM, LF, LXC, LXO, LXM"
