"""Name-swap test: would the matcher decide differently had these persons' names come from another group's pool?

* **Roots and variants.** Per person, the name tokens of all their records (given, middle, family
  and alias names, upper-cased, split on spaces and hyphens) are grouped into *roots* -- their
  most frequent spellings, by field kind (given, middle, family) -- and *variants* of a root (a
  nickname, a phonetic respelling, or any spelling with Jaro-Winkler >= 0.80: typos,
  transliterations). Suffixes (JR, SR, II ...) stay; initials follow their middle/given root.
* **Who is swapped** (`swap_plan`): per race/ethnicity group, whole surnames at a time (persons
  ordered by a seeded hash of their main surname root, until ``share`` of the group and at least
  ``min(group size, MIN_SWAP)`` persons), so relatives who share a surname are swapped together.
  Target pool: the largest group's for every other group, the second largest's for the largest.
* **New names** (`swap_names`): a root becomes the name of the *same frequency rank* in the
  target group's census pool (first names by the person's sex; surnames): SMITH, the commonest
  white surname, becomes WILLIAMS, the commonest black one -- the same for every swapped person,
  so distinct names stay distinct and a father and son called WILLIAM WILLIAMS stay namesakes; a
  given name takes the nearest rank (within 5) that keeps whether it has nicknames and is its own
  canonical form. A variant becomes a variant of the new root with the *same comparison
  signature* (the matcher's comparison level -- exact, nickname-compatible or first surname,
  Jaro-Winkler >= 0.92, metaphone, Jaro-Winkler >= 0.80, else -- and agreement of the blocking
  key) when one is found in 40 draws of the generator's own corruptions (`nickname_or_variant`,
  `phonetic_variant`, `keyboard_typo`, `transliteration_variant`), else the closest draw; two
  variants of one root stay two spellings. Casing is kept per value; every other field is kept
  byte for byte. A swap within one pool maps every name to itself.
* **Flips** (`flip_counts`): pairwise decisions at the link threshold before and after, over the
  pairs touching swapped persons that are true pairs or linked in either run -- leaving out the
  pairs whose name comparisons the swap did not preserve (level or blocking-key agreement of
  given or family names, middle-name agreement): there a flip would measure the swap, not the
  matcher. What can still flip a decision is what a pool itself brings: how common the new
  names are in the county (term-frequency adjustments), and blocking on other keys.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from functools import lru_cache

import jellyfish
import numpy as np
import pandas as pd

from evaluation.synth import corrupt as C
from evaluation.synth.names import first_name_pool, nickname_table, surname_pool
from matching import name as nm

MIN_SWAP = 100                  # persons swapped per group at least (or all of a smaller group)
SUFFIXES = {"JR", "SR", "II", "III", "IV"}
NAME_FIELDS = ("given_name", "middle_name", "family_name", "aliases")
GIVEN, MIDDLE, FAMILY = 0, 1, 2
_TOKENS = re.compile(r"[^\s\-|]+|[\s\-|]+")
_SEPARATOR = re.compile(r"[\s\-|]+")
_TRIES = 40
_joined = lru_cache(maxsize=500_000)(nm.joined)


def _values(frame: pd.DataFrame, field: str) -> np.ndarray:
    if field not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    return frame[field].astype(object).where(frame[field].notna(), "").astype(str).to_numpy(dtype=object)


def person_tokens(records: pd.DataFrame, truth: pd.DataFrame) -> dict[str, dict[str, list[int]]]:
    """person_key -> upper-case token -> counts in (given / alias-first, middle, family / alias-rest) fields."""
    owner = truth.astype(str).set_index("record_id")["person_key"].reindex(records["record_id"].astype(str)).to_numpy()
    out: dict[str, dict[str, list[int]]] = {}
    for f in NAME_FIELDS:
        for person, value in zip(owner, _values(records, f)):
            if not value:
                continue
            counts = out.setdefault(person, {})
            for part in value.split("|") if f == "aliases" else (value,):
                for j, tok in enumerate(t.upper() for t in _SEPARATOR.split(part) if t):
                    slot = FAMILY if f == "family_name" or (f == "aliases" and j > 0) else MIDDLE if f == "middle_name" else GIVEN
                    counts.setdefault(tok, [0, 0, 0])[slot] += 1
    return out


@lru_cache(maxsize=500_000)
def _nick(a: str, b: str) -> bool:
    return bool(set(nm.given_variants(a)) & set(nm.given_variants(b)))


def _related(root: str, tok: str) -> bool:
    return _nick(root, tok) or nm.phonetic(root) == nm.phonetic(tok) or jellyfish.jaro_winkler_similarity(root, tok) >= 0.80


def roots_of(tokens: dict[str, list[int]]) -> dict[tuple[int, str], tuple[int, str]]:
    """(slot, token) -> (kind, root). Per kind, the most frequent tokens written in that slot are roots
    and a related token is a variant of one; a token in a slot of another kind (a surname in the
    given-name field) maps as in its own kind; kind -1: an initial of a middle (else given) root."""
    order = sorted(tokens, key=lambda t: (-sum(tokens[t]), nm.given_canonical(t) != t, -len(t), t))
    roots: dict[int, list[str]] = {GIVEN: [], MIDDLE: [], FAMILY: []}
    for tok in order:
        if tok in SUFFIXES or len(tok) == 1:
            continue
        kind = int(np.argmax(tokens[tok]))
        if not any(_related(r, tok) for r in roots[kind]):
            roots[kind].append(tok)
    out = {}
    for tok, counts in tokens.items():
        for slot in (GIVEN, MIDDLE, FAMILY):
            if not counts[slot] or tok in SUFFIXES:
                continue
            if len(tok) == 1:
                root = next((r for r in roots[MIDDLE] + roots[GIVEN] if r[0] == tok), None)
                if root is not None:
                    out[(slot, tok)] = (-1, root)
                continue
            found = None
            for kinds in ((slot,), [k for k in (GIVEN, MIDDLE, FAMILY) if k != slot]):
                found = found or next(((k, tok) for k in kinds if tok in roots[k]), None) or \
                    next(((k, r) for k in kinds for r in roots[k] if _related(r, tok)), None)
            out[(slot, tok)] = found or (slot, tok)
    return out


@lru_cache(maxsize=500_000)
def _signature(root: str, variant: str, family: bool) -> tuple[int, bool]:
    """How the matcher sees (root, variant): the comparison level it falls in (exact, nickname-compatible
    or first surname, Jaro-Winkler >= 0.92, metaphone, Jaro-Winkler >= 0.80, else), and whether the
    blocking key agrees (canonical given name / metaphone of the first surname)."""
    a, b = _joined(root) or "", _joined(variant) or ""
    jw = jellyfish.jaro_winkler_similarity(a, b)
    if family:
        tests = (a == b, nm.surname_first(root) == nm.surname_first(variant), jw >= 0.92,
                 nm.phonetic(root) == nm.phonetic(variant), jw >= 0.80)
        key = nm.phonetic(nm.surname_first(root)) == nm.phonetic(nm.surname_first(variant))
    else:
        tests = (a == b, _nick(root, variant), jw >= 0.92, nm.phonetic(root) == nm.phonetic(variant), jw >= 0.80)
        key = nm.given_canonical(root) == nm.given_canonical(variant)
    return next((k for k, hit in enumerate(tests) if hit), len(tests)), key


def _rng(*key) -> random.Random:
    return random.Random(hashlib.sha256(":".join(map(str, key)).encode()).hexdigest())


def _given_class(name: str) -> tuple[bool, bool]:
    """Whether a given name has nicknames to be recorded as, and is its own canonical form."""
    return name in nickname_table(), nm.given_canonical(name) == name


@lru_cache(maxsize=None)
def _ranked(family: bool, sex: str, race: str) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """A group's pool, most common name first: names, mid-point of each name's cumulative mass, index."""
    pool = surname_pool() if family else first_name_pool(sex)
    p = pool.prob[race]
    order = np.lexsort((pool.names.astype(str), -p))
    mass = p[order]
    return pool.names[order], np.cumsum(mass) - mass / 2, {str(n): i for i, n in enumerate(pool.names[order])}


@lru_cache(maxsize=None)
def new_root(root: str, family: bool, sex: str, source: str, target: str, seed: int) -> str:
    """The target pool's name of the rank ``root`` has in the source pool (by frequency in the group,
    most common first: SMITH, the first white surname, becomes WILLIAMS, the first black one), so
    distinct names stay distinct; a root outside the pool gets the rank of a seeded random quantile.
    A given name takes the nearest name (within 5 ranks) that keeps its class (``_given_class``)."""
    names_s, mid_s, index_s = _ranked(family, sex, source)
    names_t, _, _ = _ranked(family, sex, target)
    j = index_s.get(root)
    if j is None:
        j = int(np.searchsorted(mid_s, _rng(seed, "root", root, family, sex, source, target).random()))
    j = min(j, len(names_t) - 1)
    if not family:
        want = _given_class(root)
        for k in sorted(range(max(j - 5, 0), min(j + 6, len(names_t))), key=lambda k: (abs(k - j), k)):
            if _given_class(str(names_t[k])) == want:
                return str(names_t[k])
    return str(names_t[j])


class Mapper:
    """Variants of the swapped names, for one swap: each (root, variant) is drawn once, and distinct
    variants of one root stay distinct spellings (two misspellings of EARL do not become one)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.memo: dict[tuple, str] = {}
        self.used: dict[tuple, set[str]] = {}

    def variant(self, root: str, variant: str, family: bool, sex: str, source: str, target: str) -> str:
        key = (root, variant, family, sex, source, target)
        if key not in self.memo:
            new = new_root(root, family, sex, source, target, self.seed)
            if new == root:                   # the root keeps its name (a same-pool swap): so do its variants
                self.memo[key] = variant
            else:
                used = self.used.setdefault((new, family), {new})
                self.memo[key] = _draw_variant(new, _signature(root, variant, family), family, used,
                                               _rng(self.seed, "variant", *key))
                used.add(self.memo[key])
        return self.memo[key]


def _draw_variant(new: str, want: tuple, family: bool, used: set[str], rng: random.Random) -> str:
    """A spelling of ``new`` not in ``used`` whose signature is ``want`` (comparison level first, then
    blocking key), or the closest of ``_TRIES`` draws of the generator's corruptions."""
    makers = (lambda: C.nickname_or_variant(new, rng.random(), rng), lambda: C.phonetic_variant(new, rng),
              lambda: C.keyboard_typo(new, rng), lambda: C.transliteration_variant(new, rng))
    best, best_score = None, -1
    for k in range(_TRIES):
        cand = makers[0 if not family and want[0] == 1 and k < _TRIES // 4 else 1 + rng.randrange(3)]()
        if cand in used:
            continue
        sig = _signature(new, cand, family)
        score = 2 * (sig[0] == want[0]) + 2 * (sig[1] == want[1])
        if score > best_score:
            best, best_score = cand, score
        if score == 4:
            break
    return best or new + new[-1]


def main_surname(tokens: dict[str, list[int]]) -> str:
    """The person's most frequent family-name token (suffixes and initials left out); "" without one."""
    fam = [(c[FAMILY], t) for t, c in tokens.items() if c[FAMILY] and t not in SUFFIXES and len(t) > 1]
    return max(fam)[1] if fam else ""


def swap_plan(demographics: pd.DataFrame, tokens: dict[str, dict[str, list[int]]], share: float = 0.2,
              seed: int = 0, group_col: str = "race_ethnicity") -> pd.DataFrame:
    """person_key, source (their group), target (the pool their new names come from), sex, surname."""
    d = demographics.dropna(subset=[group_col]).astype({group_col: str, "person_key": str})
    d = d[d["person_key"].isin(tokens.keys())]
    sizes = d[group_col].value_counts()
    cols = ["person_key", "source", "target", "sex", "surname"]
    if len(sizes) < 2:
        return pd.DataFrame(columns=cols)
    order = sorted(sizes.index, key=lambda g: (-sizes[g], g))
    rows = []
    for g in sorted(sizes.index):
        members = d[d[group_col] == g]
        surname = members["person_key"].map(lambda k: main_surname(tokens[k]))
        rank = surname.map(lambda s: hashlib.sha256(f"{seed}:{g}:{s}".encode()).hexdigest())
        members = members.assign(surname=surname, rank=rank).sort_values(["rank", "person_key"])
        need = min(len(members), max(math.ceil(share * len(members)), MIN_SWAP))
        last_rank = members["rank"].iloc[need - 1]
        picked = members[members["rank"] <= last_rank]            # whole surnames
        sex = picked["sex"].astype(str) if "sex" in picked.columns else pd.Series("U", index=picked.index)
        rows.append(pd.DataFrame({"person_key": picked["person_key"], "source": g,
                                  "target": order[1] if g == order[0] else order[0], "sex": sex, "surname": picked["surname"]}))
    return pd.concat(rows, ignore_index=True).sort_values("person_key").reset_index(drop=True)


def case_like(template: str, text: str) -> str:
    """`text` cased like `template`: upper, lower or title case (upper when the template has no letters)."""
    if template.isupper() or not any(ch.isalpha() for ch in template):
        return text.upper()
    return text.lower() if template.islower() else text.title()


def _rewrite(value: str, field: str, mapping: dict[tuple[int, str], str]) -> str:
    out = []
    for part in value.split("|") if field == "aliases" else (value,):
        words, j = [], 0
        for piece in _TOKENS.findall(part):
            if _SEPARATOR.fullmatch(piece):
                words.append(piece)
                continue
            slot = FAMILY if field == "family_name" or (field == "aliases" and j > 0) else \
                MIDDLE if field == "middle_name" else GIVEN
            new = mapping.get((slot, piece.upper()))
            words.append(piece if new is None else case_like(piece, new))
            j += 1
        out.append("".join(words))
    return "|".join(out)


def swap_names(records: pd.DataFrame, truth: pd.DataFrame, plan: pd.DataFrame,
               tokens: dict[str, dict[str, list[int]]], seed: int = 0) -> pd.DataFrame:
    """A copy of ``records`` whose plan persons' records carry names from their target pools (module doc)."""
    out = records.copy()
    owner = truth.astype(str).set_index("record_id")["person_key"].reindex(out["record_id"].astype(str)).to_numpy()
    chosen = plan.set_index("person_key")
    rows = np.flatnonzero(pd.Series(owner).isin(chosen.index).to_numpy())
    maps: dict[str, dict[tuple[int, str], str]] = {}
    mapper = Mapper(seed)
    for key in chosen.index:
        source, target, sex = (str(chosen.at[key, c]) for c in ("source", "target", "sex"))
        if sex not in ("M", "F"):
            sex = "MF"[int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest(), 16) % 2]
        mapping = {}
        for (slot, tok), (kind, root) in roots_of(tokens.get(key, {})).items():
            family = kind == FAMILY
            if kind == -1:                                  # an initial
                mapping[slot, tok] = new_root(root, False, sex, source, target, seed)[0]
            elif tok == root:
                mapping[slot, tok] = new_root(root, family, sex, source, target, seed)
            else:
                mapping[slot, tok] = mapper.variant(root, tok, family, sex, source, target)
        maps[key] = mapping
    for f in [f for f in NAME_FIELDS if f in out.columns]:
        values = _values(out, f)
        for i in rows:
            if values[i]:
                values[i] = _rewrite(values[i], f, maps[owner[i]])
        out[f] = pd.Series(values, index=out.index, dtype=object).where(records[f].notna().to_numpy(), None)
    return out


def _pair_signature(names: dict[str, tuple], l: str, r: str) -> tuple:
    (gl, ml, fl), (gr, mr, fr) = names[l], names[r]
    return (_signature(gl, gr, False) if gl and gr else None, _signature(fl, fr, True) if fl and fr else None,
            None if not (ml and mr) else (ml == mr, ml[:1] == mr[:1]))


def flip_counts(before: pd.DataFrame, after: pd.DataFrame, records: pd.DataFrame, swapped_records: pd.DataFrame,
                truth: pd.DataFrame, swapped: set[str], threshold: float) -> pd.DataFrame:
    """Per swapped person: ``considered`` pairs, ``flipped`` decisions among them, and ``unfaithful`` pairs left out.

    Decisions are pairwise (linked: match probability >= threshold in that run's scored pairs ``before`` /
    ``after``; a pair not scored is not linked). Considered: pairs touching one of the person's records
    that are true pairs or were linked in either run, and whose name comparisons the swap preserved (the
    same given- and family-name comparison level and blocking-key agreement, the same middle-name
    agreement) -- where it did not, a flip would measure the swap, not the matcher. A pair of two swapped
    persons counts for each of them."""
    owner_s = truth.astype(str).set_index("record_id")["person_key"]
    owner = owner_s.to_dict()

    def linked(pairs: pd.DataFrame) -> set[tuple[str, str]]:
        hit = pairs[pairs["match_probability"] >= threshold]
        return {tuple(sorted(p)) for p in zip(hit["record_id_l"].astype(str), hit["record_id_r"].astype(str))}

    def names(frame: pd.DataFrame) -> dict[str, tuple]:
        cols = [[_joined(v) if v else None for v in _values(frame, f)] for f in ("given_name", "middle_name", "family_name")]
        return dict(zip(frame["record_id"].astype(str), zip(*cols)))

    a, b = linked(before), linked(after)
    recs = owner_s[owner_s.isin(swapped)]
    considered = {p for p in a | b if owner[p[0]] in swapped or owner[p[1]] in swapped}
    for ids in recs.groupby(recs).groups.values():
        ids = sorted(map(str, ids))
        considered.update((x, y) for k, x in enumerate(ids) for y in ids[k + 1:])
    old, new = names(records), names(swapped_records)
    rows = []
    for pair in considered:
        faithful = _pair_signature(old, *pair) == _pair_signature(new, *pair)
        flip = faithful and (pair in a) != (pair in b)
        for person in {owner[pair[0]], owner[pair[1]]} & swapped:
            rows.append((person, int(faithful), int(flip), int(not faithful)))
    frame = pd.DataFrame(rows, columns=["person_key", "considered", "flipped", "unfaithful"])
    return frame.groupby("person_key")[["considered", "flipped", "unfaithful"]].sum().reindex(sorted(swapped), fill_value=0)
