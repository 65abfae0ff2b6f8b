"""Name standardisation: cleaning, nickname variants, compound surnames, phonetics.

Works on one value at a time; `matching.standardise` maps these over the *unique*
values of a column, which keeps a million-record file fast (names repeat a lot).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from importlib import resources

import jellyfish
from nicknames import NickNamer

_NON_LETTER = re.compile(r"[^A-Z ]+")
_SPACES = re.compile(r"\s+")
# Particles that start many Hispanic, Portuguese, Dutch and French compound surnames;
# "DE LA CRUZ" is one surname, not three.
_PARTICLES = {"DE", "DEL", "LA", "LAS", "LOS", "DA", "DOS", "DAS", "DI", "VAN", "VON", "DER", "LE", "ST", "Y", "E"}
_SUFFIXES = {"JR": "JR", "JUNIOR": "JR", "SR": "SR", "SENIOR": "SR", "II": "II", "III": "III", "IV": "IV", "2ND": "II", "3RD": "III"}
_UNKNOWN_NAMES = {"UNKNOWN", "UNK", "JOHN DOE", "JANE DOE", "DOE", "NONE", "NA", "N A", "REFUSED", "NOT GIVEN"}


def fold(value: str) -> str:
    """Upper-case ASCII form of a value: accents stripped ("José" -> "JOSE"), nothing else changed."""
    text = str(value)
    if text.isascii():                # NFKD leaves ASCII as it is, and no ASCII character is a combining mark
        return text.upper()
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).upper()


def clean(value: str | None) -> str | None:
    """Upper-case, strip accents and punctuation, collapse spaces; None for empty or placeholders.

    Hyphens and apostrophes become spaces so "GARCIA-LOPEZ" and "GARCIA LOPEZ" compare equal
    token by token; "O'BRIEN" becomes "O BRIEN" and `joined` turns it into "OBRIEN".
    """
    if value is None:
        return None
    text = fold(value).replace("-", " ").replace("'", " ").replace("’", " ")
    text = _SPACES.sub(" ", _NON_LETTER.sub("", text)).strip()
    if not text or text in _UNKNOWN_NAMES:
        return None
    return text


def joined(value: str | None) -> str | None:
    """The cleaned name with spaces removed: the form compared for exact equality."""
    text = clean(value)
    return text.replace(" ", "") if text else None


def surname_first(value: str | None) -> str | None:
    """The first surname of a compound surname ("GARCIA LOPEZ" -> "GARCIA"; "DE LA CRUZ RUIZ" -> "DELACRUZ").

    Agencies that record only the first of two surnames still agree with this form.
    """
    text = clean(value)
    if not text:
        return None
    tokens = text.split(" ")
    head: list[str] = []
    for token in tokens:
        head.append(token)
        if token not in _PARTICLES:
            break
    return "".join(head)


def family_and_suffix(value: str | None) -> tuple[str | None, str | None]:
    """A family name with a generational suffix typed into it ("Glass Jr", "JONES III") as (family name,
    suffix); (value, None) when its last word is no suffix or is the only word.

    Records-management systems often take the suffix in the surname field: left there, "GLASSJR" is
    a typo of "GLASS" to the comparisons, and the only mark that a namesake exists is lost.
    """
    text = clean(value)
    if text is None:
        return value, None
    words = text.split(" ")
    if len(words) > 1 and words[-1] in _SUFFIXES:
        return " ".join(words[:-1]), _SUFFIXES[words[-1]]
    return value, None


def suffix(value: str | None) -> str | None:
    """Generational suffix in one spelling (JR, SR, II, III, IV), or None."""
    text = clean(value)
    if not text:
        return None
    return _SUFFIXES.get(text.replace(" ", ""), text.replace(" ", ""))


def phonetic(value: str | None) -> str | None:
    """Metaphone code of the joined name, for blocking and a fuzzy comparison level."""
    text = joined(value)
    return jellyfish.metaphone(text) or None if text else None


@lru_cache(maxsize=1)
def _first_name_frequency() -> dict[str, float]:
    """Census first-name frequencies (the `names` package), male and female summed."""
    freq: dict[str, float] = {}
    for fname in ("dist.male.first", "dist.female.first"):
        text = resources.files("names").joinpath(fname).read_text()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                freq[parts[0]] = freq.get(parts[0], 0.0) + float(parts[1])
    return freq


@lru_cache(maxsize=1)
def _nicknamer() -> NickNamer:
    return NickNamer()


@lru_cache(maxsize=200_000)
def given_variants(value: str | None) -> tuple[str, ...]:
    """The name plus every formal name it may be a nickname of, sorted ("BOB" -> BERT, BOB, BOBBY, ROBERT).

    Two given names are nickname-compatible when their variant sets intersect. The `nicknames`
    lexicon is bidirectional and noisy, so this is a comparison level whose weight is learned,
    never a hard rule.
    """
    name = joined(value)
    if not name:
        return ()
    variants = {name} | {v.upper().replace(" ", "") for v in _nicknamer().canonicals_of(name.lower())}
    return tuple(sorted(variants))


@lru_cache(maxsize=200_000)
def given_canonical(value: str | None) -> str | None:
    """The single most common formal form of a given name ("BOBBY" -> "ROBERT"), for blocking.

    Chosen as the variant with the highest Census frequency (ties: the name itself, then
    alphabetical), so the choice is deterministic.
    """
    variants = given_variants(value)
    if not variants:
        return None
    freq = _first_name_frequency()
    name = joined(value)
    return min(variants, key=lambda v: (-freq.get(v, 0.0), v != name, v))
