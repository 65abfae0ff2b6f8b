"""Corruption functions.  Each takes explicit randomness (``random.Random`` or
uniform draws) so results depend only on the seed, never on hash ordering.

String corruptions work on upper-case ASCII names; casing is applied later,
per agency.  Date corruptions work on numpy ``datetime64[D]`` arrays.
"""
from __future__ import annotations

import random

import numpy as np

from evaluation.synth.names import pick_nickname

# --- keyboard typos ---------------------------------------------------------

_ROWS = ("QWERTYUIOP", "ASDFGHJKL", "ZXCVBNM")


def _adjacency() -> dict[str, str]:
    pos = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
    adj: dict[str, str] = {}
    for c, (r, i) in pos.items():
        near = []
        for dr in (-1, 0, 1):
            rr = r + dr
            if not 0 <= rr < len(_ROWS):
                continue
            for di in (-1, 0, 1) if dr == 0 else (0, 1) if dr == -1 else (-1, 0):
                j = i + di
                if (dr, di) != (0, 0) and 0 <= j < len(_ROWS[rr]):
                    near.append(_ROWS[rr][j])
        adj[c] = "".join(sorted(near))
    return adj


ADJACENT = _adjacency()


def keyboard_typo(s: str, rng: random.Random) -> str:
    """One adjacent-key substitution, insertion, deletion or transposition."""
    if len(s) < 3:
        return s
    letters = [i for i in range(1, len(s)) if s[i].isalpha()]
    if not letters:
        return s
    i = letters[rng.randrange(len(letters))]  # never touch the first letter
    op = rng.random()
    c = s[i]
    if op < 0.35 and c in ADJACENT:
        return s[:i] + rng.choice(ADJACENT[c]) + s[i + 1:]
    if op < 0.55 and c in ADJACENT:
        return s[:i] + rng.choice(ADJACENT[c]) + s[i:]
    if op < 0.80 and len(s) > 3:
        return s[:i] + s[i + 1:]
    if i + 1 < len(s) and s[i + 1] != c and s[i + 1].isalpha():
        return s[:i] + s[i + 1] + c + s[i + 2:]
    if i - 1 >= 1 and s[i - 1] != c:
        return s[: i - 1] + c + s[i - 1] + s[i + 1:]
    return s[:i] + s[i + 1:] if len(s) > 3 else s


# --- phonetic misspellings ----------------------------------------------------

# (pattern, replacement) pairs applied to one occurrence; both directions listed.
_PHONETIC_RULES: tuple[tuple[str, str], ...] = (
    ("PH", "F"), ("F", "PH"), ("IE", "Y"), ("Y", "IE"), ("EY", "Y"), ("Y", "EY"),
    ("CK", "K"), ("C", "K"), ("K", "C"), ("JOHN", "JON"), ("JON", "JOHN"),
    ("TH", "T"), ("EI", "IE"), ("IE", "EI"), ("OU", "OW"), ("Z", "S"), ("S", "Z"),
    ("MAC", "MC"), ("MC", "MAC"), ("ER", "OR"), ("AN", "EN"), ("EN", "AN"),
    ("SH", "SCH"), ("X", "KS"), ("QU", "KW"), ("I", "Y"), ("GH", "G"), ("V", "B"),
    ("LL", "L"), ("TT", "T"), ("NN", "N"), ("SS", "S"), ("RR", "R"), ("MM", "M"),
)
_VOWELS = set("AEIOU")


def phonetic_variant(s: str, rng: random.Random) -> str:
    """A plausible as-heard spelling: ph/f, ie/y, c/k, Jon/John, doubled letters..."""
    if len(s) < 3:
        return s
    rules = list(_PHONETIC_RULES)
    rng.shuffle(rules)
    for pat, rep in rules:
        start = 1 if len(pat) == 1 else 0  # keep the initial for single-letter swaps
        hits = []
        k = s.find(pat, start)
        while k != -1:
            hits.append(k)
            k = s.find(pat, k + 1)
        if hits:
            k = hits[rng.randrange(len(hits))]
            out = s[:k] + rep + s[k + len(pat):]
            if out != s and len(out) >= 2:
                return out
    # fall back: double (or undouble) a consonant
    cons = [i for i in range(1, len(s)) if s[i].isalpha() and s[i] not in _VOWELS]
    if not cons:
        return s
    i = cons[rng.randrange(len(cons))]
    if i + 1 < len(s) and s[i + 1] == s[i]:
        return s[:i] + s[i + 1:]
    return s[:i] + s[i] + s[i:]


# --- transliteration variants (matching bias, perturbation tests) -------------

# Alternative romanisations (Vietnamese, Chinese, Korean, Arabic, Slavic, ...), both directions
# listed; unlike the phonetic rules these may change the first letter (KIM -> GIM, PARK -> BAK).
_ROMANISATION: tuple[tuple[str, str], ...] = (
    ("UYE", "UE"), ("UY", "UI"), ("NG", "N"), ("ZH", "J"), ("ZH", "CH"), ("X", "HS"), ("X", "SH"),
    ("Q", "CH"), ("CH", "Q"), ("J", "CH"), ("CH", "J"), ("TS", "Z"), ("EE", "I"), ("OO", "U"), ("U", "OO"),
    ("OU", "O"), ("EO", "U"), ("EO", "O"), ("AE", "E"), ("K", "G"), ("G", "K"), ("P", "B"), ("B", "P"),
    ("T", "D"), ("D", "T"), ("KH", "K"), ("DH", "D"), ("SH", "S"), ("Y", "I"), ("I", "Y"), ("W", "V"),
    ("V", "W"), ("OH", "O"), ("AI", "AY"), ("AY", "AI"), ("IE", "YE"), ("R", "L"), ("L", "R"),
)
_VOWEL_SWAP = {"A": "E", "E": "I", "I": "E", "O": "U", "U": "O"}


def transliteration_variant(s: str, rng: random.Random) -> str:
    """One transliteration-style change: an alternative romanisation (40 %), a vowel swap
    (25 %), a dropped letter (15 %) or a doubled letter (20 %); falls through to the next kind
    when a kind does not apply. Words of 2+ letters; the result differs from ``s``."""
    if len(s) < 2:
        return s
    u = rng.random()
    kinds = (0, 1, 2, 3) if u < 0.40 else (1, 2, 3, 0) if u < 0.65 else (2, 3, 0, 1) if u < 0.80 else (3, 0, 1, 2)
    for kind in kinds:
        if kind == 0:
            rules = list(_ROMANISATION)
            rng.shuffle(rules)
            for pat, rep in rules:
                hits = [k for k in range(len(s)) if s.startswith(pat, k)]
                if hits:
                    k = hits[rng.randrange(len(hits))]
                    out = s[:k] + rep + s[k + len(pat):]
                    if out != s and len(out) >= 2:
                        return out
        elif kind == 1:
            vow = [i for i in range(1, len(s)) if s[i] in _VOWEL_SWAP]
            if vow:
                i = vow[rng.randrange(len(vow))]
                return s[:i] + _VOWEL_SWAP[s[i]] + s[i + 1:]
        elif kind == 2 and len(s) > 3:
            letters = [i for i in range(1, len(s)) if s[i].isalpha()]
            if letters:
                i = letters[rng.randrange(len(letters))]
                return s[:i] + s[i + 1:]
        elif kind == 3:
            letters = [i for i in range(1, len(s)) if s[i].isalpha()]
            if letters:
                i = letters[rng.randrange(len(letters))]
                return s[:i] + s[i] + s[i:]
    return s


def nickname_or_variant(s: str, u: float, rng: random.Random) -> str:
    """A nickname from the nicknames package; a phonetic variant if there is none."""
    nick = pick_nickname(s, u)
    return nick if nick is not None else phonetic_variant(s, rng)


# --- vectorised helpers -------------------------------------------------------


def apply_where(values: np.ndarray, mask: np.ndarray, fn, rng: random.Random) -> None:
    """In place: ``values[i] = fn(values[i], rng)`` for masked, non-empty entries."""
    idx = np.flatnonzero(mask)
    for i in idx:
        v = values[i]
        if v:
            values[i] = fn(v, rng)


def nickname_where(values: np.ndarray, mask: np.ndarray, u: np.ndarray, rng: random.Random) -> None:
    idx = np.flatnonzero(mask)
    for i in idx:
        v = values[i]
        if v:
            values[i] = nickname_or_variant(v, float(u[i]), rng)


def first_surname(values: np.ndarray) -> np.ndarray:
    """'GARCIA LOPEZ' / 'GARCIA-LOPEZ' -> 'GARCIA' (vectorised over object arrays)."""
    out = values.copy()
    for i, v in enumerate(values):
        if " " in v or "-" in v:
            out[i] = v.replace("-", " ").split(" ", 1)[0]
    return out


# --- date corruptions ---------------------------------------------------------


def swap_day_month(dob: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Swap day and month where the result is a valid, different date."""
    y = dob.astype("datetime64[Y]")
    m = (dob.astype("datetime64[M]") - y.astype("datetime64[M]")).astype(int) + 1
    d = (dob - dob.astype("datetime64[M]").astype("datetime64[D]")).astype(int) + 1
    ok = mask & (d <= 12) & (d != m)
    out = dob.copy()
    if ok.any():
        yy = y[ok].astype(int) + 1970
        new = np.array([f"{a:04d}-{b:02d}-{c:02d}" for a, b, c in zip(yy, d[ok], m[ok])], dtype="datetime64[D]")
        out[ok] = new
    return out


def shift_year(dob: np.ndarray, mask: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Move the year by ``delta`` (+-1); Feb 29 falls back to Feb 28."""
    out = dob.copy()
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return out
    s = np.datetime_as_string(dob[idx])
    new = []
    for v, dl in zip(s, delta[idx]):
        y = int(v[:4]) + int(dl)
        md = v[5:]
        if md == "02-29" and not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
            md = "02-28"
        new.append(f"{y:04d}-{md}")
    out[idx] = np.array(new, dtype="datetime64[D]")
    return out


def impossible_date(dob_str: str, rng: random.Random) -> str:
    """A well-formed but impossible date near ``dob_str`` (e.g. 1983-02-30, 1990-04-31)."""
    y = dob_str[:4]
    choice = rng.randrange(3)
    if choice == 0:
        return f"{y}-02-{rng.choice(('30', '31'))}"
    if choice == 1:
        return f"{y}-{rng.choice(('04', '06', '09', '11'))}-31"
    return f"{y}-02-29" if int(y) % 4 != 0 else f"{y}-02-30"
