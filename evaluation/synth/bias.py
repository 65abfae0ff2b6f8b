"""Known, injected bias for testing the fairness audit (``generate_county(..., bias=...)``).

Two kinds, each aimed at one race/ethnicity group (``bias_group``; defaults in
``DEFAULT_GROUP``). Every rate is a constant below and documented in SYNTH.md §8.

* ``"matching"`` -- the group's names are recorded far less consistently: extra phonetic
  misspellings, keyboard typos and given/family swaps (so each runs at ``NAME_FACTOR`` times
  the agency's usual rate) plus transliteration-style variants (``corrupt.transliteration_variant``)
  of the given and family name, on every record of the group's persons.
* ``"data"`` -- the group is over-policed and carries more unverified danger labels: extra
  RMS / CAD records (police contacts; expected count multiplied by ``POLICE_FACTOR``), a higher
  rate of the vague ``caution_flag`` trait, and their safety-flag items are re-confirmed less.

All extra randomness comes from streams of its own (``default_rng([seed, 12, chunk])``,
``[seed, 13]``), and nothing is drawn without a flag, so a county generated with
``bias=None`` is byte-identical to one from before this module existed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from evaluation.synth import corrupt as C
from evaluation.synth.names import RACES

KINDS = ("matching", "data")
#: Transliteration of Vietnamese, Chinese and Korean names into Latin script varies between
#: clerks and systems; police contacts and unverified caution flags are documented to fall
#: disproportionately on Black residents. Both groups are large (6 % and 20 % of persons).
DEFAULT_GROUP = {"matching": "api", "data": "black"}

# matching bias: rates per record of a person in the group
NAME_FACTOR = 3.5            # phonetic, typo and given/family-swap rates become 3.5x the agency's rate
TRANSLIT = {"given": 0.15, "family": 0.25}   # transliteration-style variant of the name part

# data bias
POLICE_FACTOR = 2.0          # expected RMS + CAD records of the group's persons: doubled
CAUTION_FLAG_EXTRA = 0.05    # added to P(caution_flag trait) of the group's persons with RMS / CAD records
SAFETY_VERIFIED_FACTOR = 0.5     # P(a safety_flag item was ever re-confirmed), group's persons
SAFETY_MAINTAINED_FACTOR = 0.5   # P(a safety_flag item was re-confirmed recently), group's persons


@dataclass(frozen=True)
class Bias:
    """An injected bias: ``kind`` (``matching`` / ``data``) aimed at ``group`` (a race/ethnicity)."""

    kind: str
    group: str

    @classmethod
    def make(cls, kind: str | None, group: str | None = None) -> "Bias | None":
        """None without ``kind``; ValueError for an unknown kind or group."""
        if kind is None:
            if group is not None:
                raise ValueError("bias_group needs a bias kind ('matching' or 'data')")
            return None
        if kind not in KINDS:
            raise ValueError(f"bias must be one of {KINDS}, got {kind!r}")
        group = DEFAULT_GROUP[kind] if group is None else group
        if group not in RACES:
            raise ValueError(f"bias_group must be one of {RACES}, got {group!r}")
        return cls(kind, group)

    def persons(self, race: np.ndarray) -> np.ndarray:
        """Boolean per person row: in the targeted group."""
        return np.asarray(race == self.group, dtype=bool)


@dataclass
class NameBias:
    """What ``sources.make_records`` needs for the matching bias of one chunk."""

    in_group: np.ndarray           # per person row of the population
    rng: np.random.Generator
    pyrng: random.Random


def bias_names(nb: NameBias, person: np.ndarray, agency: np.ndarray, given: np.ndarray, family: np.ndarray,
               swapped: np.ndarray, rate) -> None:
    """In place, on upper-case names of the group's records: extra misspellings at (NAME_FACTOR - 1) x
    the agency's rate (independent of the record's own), transliteration variants, extra swaps."""
    sel = nb.in_group[person]
    n = len(person)
    U = lambda: nb.rng.random(n)  # noqa: E731
    extra = NAME_FACTOR - 1.0
    for arr, part in ((given, "given"), (family, "family")):
        phon = sel & (U() < extra * rate(f"{part}_phonetic", agency))
        typo = sel & (U() < extra * rate(f"{part}_typo", agency))
        trans = sel & (U() < TRANSLIT[part])
        C.apply_where(arr, trans, C.transliteration_variant, nb.pyrng)
        C.apply_where(arr, phon, C.phonetic_variant, nb.pyrng)
        C.apply_where(arr, typo, C.keyboard_typo, nb.pyrng)
    swap = sel & ~swapped & (U() < extra * rate("name_swap", agency)) & (family != "")
    given[swap], family[swap] = family[swap], given[swap].copy()


def extra_police_records(in_group: np.ndarray, has_records: np.ndarray, n_rec: np.ndarray, p_agency: np.ndarray,
                         police: tuple[int, int], t_range: tuple[int, int],
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skeletons of the extra police contacts of the group's persons: (person, minute, agency),
    sorted by person. Per person Poisson((POLICE_FACTOR - 1) x expected RMS + CAD records)."""
    rms, cad = police
    lam = (POLICE_FACTOR - 1.0) * n_rec * (p_agency[:, rms] + p_agency[:, cad])
    lam = np.where(in_group & has_records, lam, 0.0)
    k = rng.poisson(lam)
    person = np.repeat(np.arange(len(k)), k)
    share_cad = p_agency[person, cad] / np.maximum(p_agency[person, rms] + p_agency[person, cad], 1e-12)
    agency = np.where(rng.random(len(person)) < share_cad, cad, rms).astype(np.int8)
    t = rng.integers(t_range[0], t_range[1], len(person))
    return person, t, agency
