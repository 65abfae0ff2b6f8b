"""What a cluster of records says about who it is, so clustering never merges two people who say otherwise.

Pairwise scores cannot tell a father from the son named after him, or twins apart, when the record
that joins them lacks the one field that differs: a son's record without a date of birth matches
his father's records on name, phone and street as well as his own. Once each has several records,
though, the clusters themselves disagree: the father's records attest one date of birth, the son's
another; twins' records attest the same date and street but two given names. A data steward would
refuse that merge on sight, and so does clustering (`matching.cluster`).

A value is *attested* by a cluster when at least two of its records carry it and it is the value of
a strict majority of the records that have the field: one corrupted record attests nothing, and a
copy error shared by a minority is outvoted. Two clusters conflict when both attest a value of the
same field and the values are too far apart to be one person's recorded two ways:

- dates of birth: not the same day and month (a year typo keeps them), not day and month swapped,
  and years two or more apart (a one-year slip is a typo too);
- given names: not within one edit, not nickname-compatible (`matching.name.given_variants`), not
  sounding alike (the same metaphone: KATHIE / KATHY, FELIX / FELIKS), not similar (Jaro-Winkler <
  `GIVEN_SIMILAR`), and neither cluster carries the other's given name as a family name (a swapped
  name order is one person's).

Only merges of two clusters of several records are checked: a single record attests nothing, and
refusing single records on one field cost up to 13 points of recall on FEBRL, whose corruption
replaces whole values in single records.

One exception reaches single records: a generational suffix (Jr, Sr, II, III, IV) is the file's own
word that a namesake of another generation exists. So no merge by scores (a single record's
included, `generation`) joins a record or cluster marked Jr with one marked Sr, nor, where either
side carries a generational suffix, two sides born a generation apart (`GENERATION` years or more
between their birth years: a single record's own, a cluster's attested one). A file without
suffixes is untouched. Steward must-links are never refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd
from rapidfuzz.distance import JaroWinkler, Levenshtein

#: Given names at least this similar (Jaro-Winkler) may be one name recorded two ways.
GIVEN_SIMILAR = 0.9
#: A value needs this many records of a cluster (and a strict majority of those with the field).
MIN_ATTESTING = 2
#: Birth years this far apart are a generation apart (the date-of-birth comparison's last level).
GENERATION = 15
#: Suffix marks, as bits: a side's marks are the OR of its records'.
JR, SR, OTHER_GENERATION = 1, 2, 4
_SUFFIX_MARKS = {"JR": JR, "SR": SR, "II": OTHER_GENERATION, "III": OTHER_GENERATION, "IV": OTHER_GENERATION}


def suffix_mark(suffix: str | None) -> int:
    """A standardised name suffix's mark (JR, SR, OTHER_GENERATION; 0 for none or another suffix)."""
    return _SUFFIX_MARKS.get(suffix, 0) if suffix else 0


def dates_far(a: str, b: str) -> bool:
    """Whether two ISO dates of birth are too far apart to be one person's (see the module docstring)."""
    if a[5:] == b[5:] or (a[5:7] == b[8:10] and a[8:10] == b[5:7]):
        return False
    try:
        return abs(int(a[:4]) - int(b[:4])) >= 2
    except ValueError:
        return False


def given_names_far(a: str, b: str, variants_a: tuple[str, ...] = (), variants_b: tuple[str, ...] = (),
                    sound_a: str | None = None, sound_b: str | None = None) -> bool:
    """Whether two given names are different names, not one name misspelt, spelt another way, or nicknamed
    (`variants_*`: nickname variants, `sound_*`: phonetic codes, as standardisation gives them)."""
    if a == b or set(variants_a) & set(variants_b) or (sound_a is not None and sound_a == sound_b):
        return False
    return Levenshtein.distance(a, b) > 1 and JaroWinkler.similarity(a, b) < GIVEN_SIMILAR


@dataclass(frozen=True)
class Identities:
    """The identity columns of the records being clustered, as integer codes (-1: missing), in cluster order."""

    dob: np.ndarray
    given: np.ndarray
    family: np.ndarray
    dob_values: list[str]
    given_values: list[str]
    given_variants: list[tuple[str, ...]]
    given_sounds: list[str | None]
    birth_year: np.ndarray | None = None      # -1: missing
    suffix_marks: np.ndarray | None = None    # JR | SR | OTHER_GENERATION bits, 0: none

    @classmethod
    def of(cls, standardised: pd.DataFrame) -> "Identities":
        """Codes for `standardised`'s rows, from its dob, given_name, given_variants, given_phonetic,
        family_name, birth_year and name_suffix columns (a column it lacks counts as missing everywhere).

        Family names share the given names' codes, so a given name recorded as another
        record's family name (a swapped name order) is recognised by code.
        """
        def column(name: str) -> pd.Series:
            if name in standardised.columns:
                return standardised[name].reset_index(drop=True)
            return pd.Series([None] * len(standardised), dtype=object)

        dob, dob_values = pd.factorize(column("dob"))
        names = pd.concat([column("given_name"), column("family_name")], ignore_index=True)
        name_codes, name_values = pd.factorize(names)
        n = len(standardised)
        variants_of: dict[int, tuple[str, ...]] = {}
        sound_of: dict[int, str | None] = {}
        for code, variants, sound in zip(name_codes[:n], column("given_variants"), column("given_phonetic")):
            if code >= 0 and code not in variants_of:
                variants_of[code] = tuple(variants) if variants is not None else ()
                sound_of[code] = sound
        years = pd.to_numeric(column("birth_year"), errors="coerce").fillna(-1).astype(np.int64).to_numpy()
        marks = column("name_suffix").map(_SUFFIX_MARKS).fillna(0).astype(np.int64).to_numpy()
        return cls(dob=dob, given=name_codes[:n], family=name_codes[n:], dob_values=list(dob_values),
                   given_values=list(name_values),
                   given_variants=[variants_of.get(code, ()) for code in range(len(name_values))],
                   given_sounds=[sound_of.get(code) for code in range(len(name_values))],
                   birth_year=years, suffix_marks=marks)


class AttestedIdentity:
    """Whether two clusters of records attest different identities (`conflict(records_a, records_b)`, asked by
    merges of two multi-record clusters: tallies counted from their records when asked) or are a generation
    apart (`generation`, asked by any merge where a suffix is present, with the birth years the caller keeps:
    `marks` and `years` per record, `birth_year_of` a cluster's tally of years)."""

    def __init__(self, identities: Identities):
        self._ids = identities
        self._dob, self._given, self._family = identities.dob.tolist(), identities.given.tolist(), identities.family.tolist()
        n = len(self._dob)
        self.marks = identities.suffix_marks.tolist() if identities.suffix_marks is not None else [0] * n
        self.years = identities.birth_year.tolist() if identities.birth_year is not None else [-1] * n
        self._dates_far = lru_cache(maxsize=100_000)(self._codes_dates_far)
        self._names_far = lru_cache(maxsize=100_000)(self._codes_names_far)

    def conflict(self, records_a: Sequence[int], records_b: Sequence[int]) -> str | None:
        """'date of birth' or 'given name' if the two clusters (record positions) attest different ones, else None."""
        da, db = _attested(self._dob, records_a), _attested(self._dob, records_b)
        if da is not None and db is not None and da != db and self._dates_far(da, db):
            return "date of birth"
        ga, gb = _attested(self._given, records_a), _attested(self._given, records_b)
        if (ga is not None and gb is not None and ga != gb and self._names_far(ga, gb)
                and all(self._family[r] != ga for r in records_b) and all(self._family[r] != gb for r in records_a)):
            return "given name"
        return None

    @staticmethod
    def generation(marks_a: int, marks_b: int, year_a: int, year_b: int) -> str | None:
        """'suffix' (one side marked Jr, the other Sr) or 'generation' (a suffix on either side, birth years
        `GENERATION` or more apart; -1: none) if two sides must not merge, else None (module docstring). A
        side marked both Jr and Sr (a steward joined them) is no side's Jr or Sr."""
        if not marks_a | marks_b:
            return None
        one_a, one_b = marks_a & (JR | SR), marks_b & (JR | SR)
        if {one_a, one_b} == {JR, SR}:
            return "suffix"
        if year_a >= 0 and year_b >= 0 and abs(year_a - year_b) >= GENERATION:
            return "generation"
        return None

    @staticmethod
    def birth_year_of(tally: dict[int, int]) -> int:
        """The birth year a cluster's `tally` of birth years attests; -1 for none."""
        found = _majority(tally)
        return -1 if found is None else found

    def _codes_dates_far(self, a: int, b: int) -> bool:
        return dates_far(self._ids.dob_values[a], self._ids.dob_values[b])

    def _codes_names_far(self, a: int, b: int) -> bool:
        ids = self._ids
        return given_names_far(ids.given_values[a], ids.given_values[b], ids.given_variants[a], ids.given_variants[b],
                               ids.given_sounds[a], ids.given_sounds[b])


def _attested(codes: list[int], records: Sequence[int]) -> int | None:
    """The value `records` attest: carried by >= MIN_ATTESTING of them and a strict majority of those with one."""
    tally: dict[int, int] = {}
    for record in records:
        code = codes[record]
        if code >= 0:
            tally[code] = tally.get(code, 0) + 1
    return _majority(tally)


def _majority(tally: dict[int, int]) -> int | None:
    """The value a tally attests (see `_attested`), or None."""
    if not tally:
        return None
    value = max(tally, key=tally.__getitem__)
    count = tally[value]
    return value if count >= MIN_ATTESTING and 2 * count > sum(tally.values()) else None
