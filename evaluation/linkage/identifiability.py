"""What an incident's subject shares with the records of the person it truly is.

A resolver can only find a person through values the call-taker's description shares with that
person's records. This module classifies each subject that has records, before any model is
involved, so the top-1 figure of the real-time resolver can be read against a ceiling that no
matcher could pass:

- ``nothing``: no identifying value in common ("unknown male, about 40"; a first name the
  records never use and a phone number they never held);
- ``given name only``: at most a given name (exactly, as a nickname, phonetically or with a
  typo) and nothing else identifying: in a county, "Lisa, about 41" names hundreds of people;
- ``more``: a given name plus something, or any family name, date of birth, phone, e-mail,
  street or SSN digits in common.

Sex and approximate age never count: they narrow a search but identify nobody. Values are
compared after Briefing's own standardisation; names and streets also match loosely
(Jaro-Winkler >= 0.85 or at most two edits), so the ``more`` share is an upper bound on what
any resolver could find, not an estimate of what one should.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from matching.query import Subject, standardise_subject

NOTHING, GIVEN_ONLY, MORE = "nothing", "given name only", "more"
CLASSES = (NOTHING, GIVEN_ONLY, MORE)
EXACT_FIELDS = ("dob", "phone", "email", "address_key", "ssn_last4")


def _close(value: str, others: Iterable[str]) -> bool:
    return any(JaroWinkler.similarity(value, o) >= 0.85 or DamerauLevenshtein.distance(value, o) <= 2 for o in others)


def _values(records: pd.DataFrame, column: str) -> set:
    if column not in records.columns:
        return set()
    out: set = set()
    for v in records[column].dropna():
        out.update(v if isinstance(v, (list, tuple)) else [v])
    return out


def shared_fields(query: Mapping[str, object], records: pd.DataFrame) -> set[str]:
    """Fields of a standardised `query` that some record of `records` (standardised) shares, loosely."""
    shared: set[str] = set()
    aliases = _values(records, "alias_names")
    given = query.get("given_name")
    if given:
        names = _values(records, "given_name") | _values(records, "given_variants") | aliases
        if (set(query.get("given_variants") or ()) & names or _close(given, names)
                or query.get("given_phonetic") in _values(records, "given_phonetic")):
            shared.add("given_name")
    family = query.get("family_name")
    if family:
        names = _values(records, "family_name") | _values(records, "family_first") | aliases
        if (_close(family, names) or query.get("family_first") in names
                or query.get("family_phonetic") in _values(records, "family_phonetic")):
            shared.add("family_name")
    street = query.get("street")
    if street and _close(street, _values(records, "street")):
        shared.add("street")
    for field in EXACT_FIELDS:
        if query.get(field) is not None and query[field] in _values(records, field):
            shared.add(field)
    return shared


def identifiability(subjects: list[Subject], person_keys: list[str], standardised: pd.DataFrame,
                    truth: pd.Series) -> list[str | None]:
    """The class of each subject (None for a subject with no record: `person_key` empty).

    `standardised`: the indexed records after `matching.standardise.standardise`; `truth`:
    record_id -> person_key.
    """
    by_person = standardised.assign(_person=standardised["unique_id"].map(truth)).groupby("_person")
    out: list[str | None] = []
    for subject, key in zip(subjects, person_keys):
        if not key:
            out.append(None)
            continue
        query, _ = standardise_subject(subject)
        shared = shared_fields(query, by_person.get_group(key)) if key in by_person.groups else set()
        out.append(NOTHING if not shared else GIVEN_ONLY if shared == {"given_name"} else MORE)
    return out
