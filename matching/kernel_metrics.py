"""String metrics inside the scorer's compiled kernel (`matching.kernel`), over code-point buffers.

Each metric reads its two strings where they lie, `P[p0:p0 + pl]` and `T[t0:t0 + tl]`, so the kernel
never makes an array per string.

The same algorithms, with the same arithmetic in the same order, as the references the numpy path
uses and Splink's DuckDB computes: Jaro and Jaro-Winkler as RapidFuzz (which DuckDB embeds) and
`matching/spark/Jaro.java` compute them, the Winkler boost as one fused multiply-add where DuckDB
computes it so; Levenshtein by the textbook dynamic programme; and the optimal string alignment
distance capped at 2, which decides `damerau_levenshtein(a, b) <= 1` exactly. Two empty strings have
Jaro-Winkler similarity 0, as in DuckDB. Tests hold each to the reference on generated strings.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (LLVM's fma: the instruction where the CPU has it, else libm's)."""
    signature = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, sig, args):
        return builder.fma(*args)
    return signature, codegen


@njit(cache=True, nogil=True)
def jaro(P, p0, pl, T, t0, tl):
    if pl == 0 or tl == 0:
        return 0.0
    if pl == 1 and tl == 1:
        return 1.0 if P[p0] == T[t0] else 0.0
    if pl > 62 or tl > 62:
        return _jaro_long(P, p0, pl, T, t0, tl)
    bound = max(pl, tl) // 2 - 1
    p_flag = 0                       # bit i: p[i] is matched (no allocation for strings of up to 62)
    t_flag = 0
    common = 0
    for i in range(pl):
        hi = min(i + bound, tl - 1)
        for j in range(max(0, i - bound), hi + 1):
            if not (t_flag >> j) & 1 and T[t0 + j] == P[p0 + i]:
                p_flag |= 1 << i
                t_flag |= 1 << j
                common += 1
                break
    if common == 0:
        return 0.0
    k = 0
    transpositions = 0
    for i in range(pl):
        if (p_flag >> i) & 1:
            j = k
            while not (t_flag >> j) & 1:
                j += 1
            k = j + 1
            if P[p0 + i] != T[t0 + j]:
                transpositions += 1
    return _jaro_formula(common, transpositions // 2, pl, tl)


@njit(cache=True, nogil=True)
def _jaro_long(P, p0, pl, T, t0, tl):
    bound = max(pl, tl) // 2 - 1
    p_flag = np.zeros(pl, dtype=np.bool_)
    t_flag = np.zeros(tl, dtype=np.bool_)
    common = 0
    for i in range(pl):
        hi = min(i + bound, tl - 1)
        for j in range(max(0, i - bound), hi + 1):
            if not t_flag[j] and T[t0 + j] == P[p0 + i]:
                p_flag[i] = True
                t_flag[j] = True
                common += 1
                break
    if common == 0:
        return 0.0
    k = 0
    transpositions = 0
    for i in range(pl):
        if p_flag[i]:
            j = k
            while not t_flag[j]:
                j += 1
            k = j + 1
            if P[p0 + i] != T[t0 + j]:
                transpositions += 1
    return _jaro_formula(common, transpositions // 2, pl, tl)


@njit(cache=True, nogil=True)
def _jaro_formula(common, transpositions, pl, tl):
    sim = 0.0
    sim += common / pl
    sim += common / tl
    sim += (common - transpositions) / common
    return sim / 3.0


@njit(cache=True, nogil=True)
def jaro_winkler(P, p0, pl, T, t0, tl, fused):
    prefix = 0
    max_prefix = min(4, min(pl, tl))
    while prefix < max_prefix and P[p0 + prefix] == T[t0 + prefix]:
        prefix += 1
    sim = jaro(P, p0, pl, T, t0, tl)
    if sim > 0.7:
        w = prefix * 0.1
        sim = _fma(w, 1.0 - sim, sim) if fused else sim + w * (1.0 - sim)
        sim = min(sim, 1.0)
    return sim


@njit(cache=True, nogil=True)
def levenshtein(P, p0, pl, T, t0, tl):
    previous = np.arange(tl + 1)
    current = np.empty(tl + 1, dtype=previous.dtype)
    for i in range(1, pl + 1):
        current[0] = i
        for j in range(1, tl + 1):
            cost = 0 if P[p0 + i - 1] == T[t0 + j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
        previous, current = current, previous
    return float(previous[tl])


@njit(cache=True, nogil=True)
def edits_capped(P, p0, pl, T, t0, tl):
    """The optimal string alignment distance if it is 0 or 1, else 2."""
    if abs(pl - tl) > 1:
        return 2.0
    start = 0
    while start < pl and start < tl and P[p0 + start] == T[t0 + start]:
        start += 1
    if start == pl and start == tl:
        return 0.0
    end_p, end_t = pl, tl
    while end_p > start and end_t > start and P[p0 + end_p - 1] == T[t0 + end_t - 1]:
        end_p -= 1
        end_t -= 1
    rest_p, rest_t = end_p - start, end_t - start
    if rest_p <= 1 and rest_t <= 1:
        return 1.0                   # one substitution, insertion or deletion
    if rest_p == 2 and rest_t == 2 and P[p0 + start] == T[t0 + start + 1] and P[p0 + start + 1] == T[t0 + start]:
        return 1.0                   # one transposition of neighbours
    return 2.0
