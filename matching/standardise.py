"""Standardise canonical records into the columns the matcher compares.

Input: the canonical frame from `matching.record.read_records` (or any DataFrame with a
subset of the canonical columns). Output: one row per record with `unique_id` (the
record id) and the standardised comparison / blocking columns listed in `STANDARD_COLUMNS`.
Everything is computed over unique values and mapped back, so a million records take
seconds, and the same function serves batch linking and the real-time resolver.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import phonenumbers

from matching import name as nm

# Standardised column -> the canonical field(s) it is derived from (used for explanations
# and to decide which comparisons a file can support).
STANDARD_COLUMNS: dict[str, tuple[str, ...]] = {
    "given_name": ("given_name",),
    "given_variants": ("given_name",),
    "given_canon": ("given_name",),
    "given_phonetic": ("given_name",),
    "given_prefix": ("given_name",),
    "given_initial": ("given_name",),
    "middle_name": ("middle_name",),
    "middle_initial": ("middle_name",),
    "family_name": ("family_name",),
    "family_first": ("family_name",),
    "family_phonetic": ("family_name",),
    "family_prefix": ("family_name",),
    "name_suffix": ("name_suffix",),
    "alias_names": ("aliases",),
    "dob": ("dob",),
    "dob_swap": ("dob",),
    "dob_md": ("dob",),
    "birth_year": ("dob", "birth_year"),
    "sex": ("sex",),
    "phone": ("phone",),
    "email": ("email",),
    "street": ("street",),
    "postcode": ("postcode",),
    "postcode_area": ("postcode",),
    "city": ("city",),
    "address_key": ("street", "postcode"),
    "ssn_last4": ("ssn_last4",),
}

#: Prefix lengths of the partial keys blocking uses (as Splink's tutorials block on the first letters of
#: each name and of the postcode): a typo after the prefix in both names still shares these keys.
GIVEN_PREFIX, FAMILY_PREFIX, POSTCODE_AREA = 3, 4, 3

#: Standardised columns holding lists, and numbers; every other one holds strings.
LIST_COLUMNS = ("given_variants", "alias_names")
NUMERIC_COLUMNS = ("birth_year",)

_STREET_TOKENS = {
    "STREET": "ST", "STR": "ST", "AVENUE": "AVE", "AV": "AVE", "ROAD": "RD", "DRIVE": "DR",
    "LANE": "LN", "BOULEVARD": "BLVD", "COURT": "CT", "PLACE": "PL", "CIRCLE": "CIR",
    "TERRACE": "TER", "HIGHWAY": "HWY", "PARKWAY": "PKWY", "SQUARE": "SQ", "TRAIL": "TRL",
    "CRESCENT": "CRES", "WAY": "WAY", "NORTH": "N", "SOUTH": "S", "EAST": "E", "WEST": "W",
    "NORTHEAST": "NE", "NORTHWEST": "NW", "SOUTHEAST": "SE", "SOUTHWEST": "SW",
    "FIRST": "1ST", "SECOND": "2ND", "THIRD": "3RD", "FOURTH": "4TH", "FIFTH": "5TH",
    "MOUNT": "MT", "SAINT": "ST", "FORT": "FT",
}
_UNIT_MARKERS = {"APT", "APARTMENT", "UNIT", "STE", "SUITE", "RM", "ROOM", "FL", "FLOOR", "LOT", "BLDG"}
_PLACEHOLDER_PHONES = {"0000000000", "9999999999", "1111111111", "1234567890"}
_NON_ALNUM = re.compile(r"[^A-Z0-9 ]+")
_NON_DIGIT = re.compile(r"\D+")


def _map_unique(series: pd.Series, fn: Callable[[str | None], object]) -> pd.Series:
    """Apply `fn` once per distinct value (None for nulls) and broadcast back."""
    values = series.astype(object).where(series.notna(), None)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[:-1] = [fn(u) for u in uniques]
    mapped[-1] = fn(None)
    return pd.Series(mapped[codes], index=series.index, dtype=object)


def street(value: str | None) -> str | None:
    """Street line in USPS-like abbreviations, without the unit ("12 North Main Street, Apt 4" -> "12 N MAIN ST")."""
    if value is None:
        return None
    text = nm.fold(value).replace("#", " APT ")
    text = _NON_ALNUM.sub(" ", text.replace(",", " "))
    tokens: list[str] = []
    for token in text.split():
        if token in _UNIT_MARKERS:
            break
        tokens.append(_STREET_TOKENS.get(token, token))
    return " ".join(tokens) or None


def postcode(value: str | None) -> str | None:
    """First five digits of a ZIP / ZIP+4, or the cleaned value for other postcodes."""
    if value is None:
        return None
    digits = _NON_DIGIT.sub("", str(value))
    if len(digits) >= 5:
        return digits[:5]
    return digits or None


def city(value: str | None) -> str | None:
    """City or suburb, letters only and without spaces ("O'Co nnor" -> "OCONNOR")."""
    return nm.joined(value)


def phone(value: str | None) -> str | None:
    """A phone number as its national significant digits (US 10-digit; others via `phonenumbers`).

    Placeholders (all zeros, 1234567890) and strings too short to be a number become None.
    """
    if value is None:
        return None
    digits = _NON_DIGIT.sub("", str(value))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) == 10:
        return None if digits in _PLACEHOLDER_PHONES else digits
    try:
        parsed = phonenumbers.parse(str(value), "US")
    except phonenumbers.NumberParseException:
        return None
    national = str(parsed.national_number)
    return national if len(national) >= 7 and phonenumbers.is_possible_number(parsed) else None


def email(value: str | None) -> str | None:
    """Lower-cased, trimmed e-mail address; None unless it has exactly one '@' with text on both sides."""
    if value is None:
        return None
    text = str(value).strip().lower()
    local, _, domain = text.partition("@")
    return text if local and domain and "@" not in domain else None


def ssn_last4(value: str | None) -> str | None:
    """Four digits, or None (placeholders such as 0000 included)."""
    if value is None:
        return None
    digits = _NON_DIGIT.sub("", str(value))
    return digits if len(digits) == 4 and digits != "0000" else None


def _dob_swap(dob: str | None) -> str | None:
    """The date with day and month exchanged, when that is also a valid, different date."""
    if dob is None:
        return None
    year, month, day = dob[:4], dob[5:7], dob[8:10]
    if day == month or int(day) > 12:
        return None
    return f"{year}-{day}-{month}"


def _sex(value: str | None) -> str | None:
    text = (value or "").strip().upper()[:1]
    return text if text in {"M", "F", "X"} else None


def _alias_names(value: str | None) -> tuple[str, ...]:
    """Every name token of every alias, joined form ("Bobby Lee|B. Smith-Jones" -> BOBBY, LEE, SMITH, JONES, SMITHJONES)."""
    if value is None:
        return ()
    out: set[str] = set()
    for alias in str(value).split("|"):
        cleaned = nm.clean(alias)
        if not cleaned:
            continue
        tokens = [t for t in cleaned.split(" ") if len(t) > 1]
        out.update(tokens)
        if len(tokens) > 1:
            out.add("".join(tokens[1:]))
    return tuple(sorted(out))


def standardise(records: pd.DataFrame) -> pd.DataFrame:
    """Return the matcher's view of `records`: `unique_id`, `agency`, `source_system` and `STANDARD_COLUMNS`.

    Columns absent from `records` come out all-null. Lists (given_variants, alias_names) are
    Python lists so DuckDB and Spark receive them as arrays; empty lists become None so the
    null levels of array comparisons apply.
    """
    frame = records.reset_index(drop=True)

    def col(name: str) -> pd.Series:
        if name in frame.columns:
            return frame[name].astype(object).where(frame[name].notna(), None)
        return pd.Series([None] * len(frame), dtype=object)

    out = pd.DataFrame({"unique_id": col("record_id").astype(str)})
    out["agency"] = col("agency")
    out["source_system"] = col("source_system")

    given = col("given_name")
    out["given_name"] = _map_unique(given, nm.joined)
    out["given_variants"] = _map_unique(given, lambda v: list(nm.given_variants(v)) or None)
    out["given_canon"] = _map_unique(given, nm.given_canonical)
    out["given_phonetic"] = _map_unique(given, nm.phonetic)
    out["given_prefix"] = out["given_name"].str[:GIVEN_PREFIX]
    out["given_initial"] = out["given_name"].str[:1]
    middle = col("middle_name")
    out["middle_name"] = _map_unique(middle, nm.joined)
    out["middle_initial"] = out["middle_name"].str[:1]
    family_and_suffix = _map_unique(col("family_name"), nm.family_and_suffix)
    family = family_and_suffix.str[0]
    out["family_name"] = _map_unique(family, nm.joined)
    out["family_first"] = _map_unique(family, nm.surname_first)
    out["family_phonetic"] = _map_unique(out["family_first"], nm.phonetic)
    out["family_prefix"] = out["family_first"].str[:FAMILY_PREFIX]
    suffix = _map_unique(col("name_suffix"), nm.suffix)
    out["name_suffix"] = suffix.where(suffix.notna(), family_and_suffix.str[1])
    out["alias_names"] = _map_unique(col("aliases"), lambda v: list(_alias_names(v)) or None)

    dob = col("dob")
    out["dob"] = dob
    out["dob_swap"] = _map_unique(dob, _dob_swap)
    out["dob_md"] = dob.str[5:10]
    dob_year = pd.to_numeric(dob.str[:4], errors="coerce")
    given_year = pd.to_numeric(col("birth_year"), errors="coerce")
    out["birth_year"] = dob_year.fillna(given_year).astype("Int64")

    out["sex"] = _map_unique(col("sex"), _sex)
    out["phone"] = _map_unique(col("phone"), phone)
    out["email"] = _map_unique(col("email"), email)
    out["street"] = _map_unique(col("street"), street)
    out["postcode"] = _map_unique(col("postcode"), postcode)
    out["postcode_area"] = out["postcode"].str[:POSTCODE_AREA]
    out["city"] = _map_unique(col("city"), city)
    both = out["street"].notna() & out["postcode"].notna()
    out["address_key"] = (out["street"] + " " + out["postcode"]).where(both, out["street"])
    out["ssn_last4"] = _map_unique(col("ssn_last4"), ssn_last4)
    return out


def to_arrow(standardised: pd.DataFrame) -> pa.Table:
    """Standardised records as an Arrow table with explicit types (lists as list<string>)."""
    columns = {}
    for name in standardised.columns:
        series = standardised[name]
        if name in LIST_COLUMNS:
            columns[name] = pa.array(series.tolist(), type=pa.list_(pa.string()))
        elif name == "birth_year":
            columns[name] = pa.array(series.astype("Int64"), type=pa.int64(), from_pandas=True)
        else:
            columns[name] = pa.array(series.tolist(), type=pa.string())
    return pa.table(columns)


def available_fields(standardised: pd.DataFrame) -> set[str]:
    """Standardised columns with at least one non-null value: the comparisons this data can support.

    Adds the pseudo-field `birth_year_only` when some record has a birth year but no full date
    (approximate ages), which is what the birth-year comparison levels need to be trainable.
    """
    fields = {c for c in STANDARD_COLUMNS if c in standardised.columns and standardised[c].notna().any()}
    if {"dob", "birth_year"} <= set(standardised.columns) and (standardised["dob"].isna() & standardised["birth_year"].notna()).any():
        fields.add("birth_year_only")
    return fields


def _text(record: Mapping[str, object], name: str) -> str | None:
    value = record.get(name)
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    return str(value)


def standardise_row(record: Mapping[str, object]) -> dict[str, object]:
    """One record (canonical field names) standardised exactly as `standardise` would, without pandas.

    The resolver's per-query path: microseconds instead of a DataFrame round trip. Nulls are
    None, lists are lists, `birth_year` an int. `standardise` and this function must agree
    value for value (a property test checks it).
    """
    out: dict[str, object] = {"unique_id": _text(record, "record_id"), "agency": _text(record, "agency"),
                              "source_system": _text(record, "source_system")}
    given = _text(record, "given_name")
    out["given_name"] = nm.joined(given)
    out["given_variants"] = list(nm.given_variants(given)) or None
    out["given_canon"] = nm.given_canonical(given)
    out["given_phonetic"] = nm.phonetic(given)
    out["given_prefix"] = _prefix(out["given_name"], GIVEN_PREFIX)
    out["given_initial"] = _prefix(out["given_name"], 1)
    out["middle_name"] = nm.joined(_text(record, "middle_name"))
    out["middle_initial"] = out["middle_name"][:1] if out["middle_name"] is not None else None
    family, family_suffix = nm.family_and_suffix(_text(record, "family_name"))
    out["family_name"] = nm.joined(family)
    out["family_first"] = nm.surname_first(family)
    out["family_phonetic"] = nm.phonetic(out["family_first"])
    out["family_prefix"] = _prefix(out["family_first"], FAMILY_PREFIX)
    out["name_suffix"] = nm.suffix(_text(record, "name_suffix")) or family_suffix
    out["alias_names"] = list(_alias_names(_text(record, "aliases"))) or None
    dob = _text(record, "dob")
    out["dob"] = dob
    out["dob_swap"] = _dob_swap(dob)
    out["dob_md"] = dob[5:10] if dob is not None else None
    out["birth_year"] = _year(dob[:4] if dob is not None else None)
    if out["birth_year"] is None:
        out["birth_year"] = _year(_text(record, "birth_year"))
    out["sex"] = _sex(_text(record, "sex"))
    out["phone"] = phone(_text(record, "phone"))
    out["email"] = email(_text(record, "email"))
    out["street"] = street(_text(record, "street"))
    out["postcode"] = postcode(_text(record, "postcode"))
    out["postcode_area"] = _prefix(out["postcode"], POSTCODE_AREA)
    out["city"] = city(_text(record, "city"))
    if out["street"] is not None and out["postcode"] is not None:
        out["address_key"] = f"{out['street']} {out['postcode']}"
    else:
        out["address_key"] = out["street"]
    out["ssn_last4"] = ssn_last4(_text(record, "ssn_last4"))
    return out


def _prefix(text: str | None, length: int) -> str | None:
    return text[:length] if text is not None else None


def _year(text: str | None) -> int | None:
    """`pd.to_numeric(..., errors="coerce")` for one value, as an int year."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if np.isfinite(value) and value == int(value) else None
