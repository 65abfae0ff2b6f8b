"""Two labelled benchmark sets of person records corrupted with gecko-syndata, not with Briefing's own model.

``python -m evaluation.synth.gecko_sets --out DIR`` writes ``DIR/gecko_small.csv.gz`` and ``DIR/gecko_large.csv.gz``
(``--only NAME`` writes one set, ``--quiet`` prints nothing). The committed copies live in
``evaluation/data/external/``; ``tests/test_external_sets.py`` pins their SHA-256 and checks that this script
reproduces them byte for byte. Formats and the error model are described in ``evaluation/DATA.md``
("External sets (gecko-syndata)"); this docstring lists every parameter and seed.

Why: every other labelled set of the project (the synthetic county) is corrupted by Briefing's own
``evaluation/synth/corrupt.py``, so a matcher tuned on it may only have learnt that model. These two sets use an
independent corruption library, gecko-syndata 0.6.4 (Jugl et al., the successor of Christen's GeCo), with two
deliberately different error mixes, so a tweak tuned to one does not automatically fit the other.

Columns (Briefing's canonical record format, ``matching/record.py``): ``record_id, agency, given_name,
family_name, dob, sex, phone, street, city, postcode`` plus the truth column ``person_key`` (string, ``P`` + 6
digits; records with the same key are the same person). Empty string = null. ``dob`` is ISO ``YYYY-MM-DD``
(always a real calendar date, never after :data:`REFERENCE_DATE`) or empty; ``sex`` is ``M``/``F`` or empty;
``phone`` has 10 US digits (some agencies format them); ``postcode`` has 5 digits.

Sources of clean values (all read from installed packages; nothing is downloaded):

* given names: ``names`` 0.3.0 ``dist.male.first`` / ``dist.female.first`` (1990 US census, percent of
  persons); a person's given name is drawn from the list of their sex, weighted by frequency;
* family names and street-name stems: ``names`` 0.3.0 ``dist.all.last`` (88,799 census surnames). Its
  frequencies are rounded to 0.001 %; the 69,960 names listed as 0.000 % share equally what the listed
  frequencies leave of the file's 90.483 % total (about 10.8 %), so the long tail of rare names is kept;
* cities: the 161 US places of Faker's ``faker.providers.geo.Provider.land_coords`` (real towns with
  coordinates); street suffixes: Faker ``en_US`` ``street_suffixes`` (a hand-set weight favours the
  common ones, see :data:`COMMON_SUFFIXES`); street formats follow Faker ``en_US`` (``{name} {suffix}``),
  plus numbered streets (``5th Street``);
* nicknames (large set only): ``nicknames`` 1.0.1 ``names.csv`` (``has_nickname`` rows).

:data:`INPUT_SHA256` pins a digest of these inputs; if a package update changes them the script stops with a
clear error instead of silently writing different files.

Clean population (per set; ``REFERENCE_DATE`` = 2025-01-01, ages 0-95 on that day)
---------------------------------------------------------------------------------
Households are drawn until the set's person count is reached, with kinds (probabilities
:data:`HOUSEHOLD_KINDS`): single adult; couple (partner of the other sex 95 %, shares the family name
:data:`PARTNER_SHARES_NAME`, own age = head's +- N(0, 4 years)); family (couple or, for
``single_parent``, one adult aged 22-60, plus 1-4 children aged 0-17 and at least 18 years younger, who share
the head's family name); roommates (2-3 unrelated adults). Within a family household
:data:`TWIN_SHARE` of those with 2+ children have twins (same dob, family name and address, different given
names) and a son gets his father's given name with :data:`JUNIOR_SHARE` (a Jr: same full name, address and
phone as his father). Every household has one address (house number, street of its city, city, one of the
city's postcodes) and a landline; each adult keeps their own mobile with :data:`OWN_MOBILE_SHARE`, everyone
else uses the landline, so family members share family name, address and phone. Finally
:data:`NAMESAKE_SHARE` of adults take the given name, family name and sex of an unrelated adult (common
names repeated across different persons), on top of the repeats the census frequencies give.

Cities get weights ``1 / rank^0.8`` (rank = a seeded permutation), 1-4 postcodes each (5 digits, rising
from east to west like real ZIP codes, never shared between cities) and one area code; each city has
``max(6, households / 5)`` streets. Adult ages at the reference date are drawn in bands
(:data:`ADULT_AGE_BANDS`, :data:`PARENT_AGE_BANDS`) with gecko's ``from_group`` of ``from_datetime_range``.

Records
-------
Each person gets ``k`` records, ``P(k) ~ k^-s`` for ``k = 1..K`` (small: 7,000 persons, ``s = 1.6,
K = 10``; large: 13,000 persons, ``s = 1.25, K = 20``). Each record picks an agency (weights in the set spec). A share of records
(:attr:`SetSpec.move_share`) shows another household's address (the person lived there at the time).
Then gecko corrupts the records (:func:`_corrupt` has the exact mutators), fields an agency does not
record are emptied, and each agency's formatting is applied.

Errors, in the order applied. Each number is the share of records that gets that error. The errors listed
for one field are exclusive (gecko's ``with_group``: a field gets at most one of them); the name swap, the
missing values and the agency's empty fields come on top. An error that cannot apply to a value (no
phonetic rule or OCR confusion matches it, a day above 12 for a day/month swap) leaves it unchanged, so the
measured rates are somewhat lower:

========================  =====================================  ==========================================
field                     gecko_small                            gecko_large
========================  =====================================  ==========================================
given_name                keyboard .05, phonetic .04, OCR .02,   nickname .06, keyboard .05, transpose .02,
                          missing .01                            delete .02, missing .04
family_name               keyboard .05, phonetic .04, OCR .02,   phonetic .10, OCR .07, keyboard .04,
                          missing .01                            insert .02, missing .04
given <-> family swap     .03                                    .02
dob                       day/month swap .02, day offset .02,    day/month swap .03, day offset .04,
                          year digit .02, missing .02            year digit .04, missing .08
sex                       missing .01                            other sex .01, missing .05
phone                     keyboard .03, transpose .01,           keyboard .05, transpose .03, substitute
                          missing .03                            .03, missing .10
street                    keyboard .03, missing .02              keyboard .05, delete .03, transpose .02,
                                                                 missing .05
city                      keyboard .01, missing .01              keyboard .03, missing .05
postcode                  substitute .02, missing .02            OCR .04, transpose .03, substitute .02,
                                                                 missing .06
moved (other address)     .04                                    .12
========================  =====================================  ==========================================

Keyboard typos use a US QWERTY keymap written in CLDR format (:func:`_write_keymap`); letters only on
names, streets and cities, digits only on phones. Phonetic rules: :data:`PHONETIC_RULES`; OCR confusions:
:data:`OCR_LETTERS`, :data:`OCR_DIGITS`; date errors: :data:`DAY_MONTH_SWAP`, :func:`_year_typo_table`
and gecko's ``with_datetime_offset`` (+-1..9 days inside the month). A date error that would give an
impossible or future date is undone.

Agencies: small set ``HOSPITAL, POLICE, EMS`` (all fields, title case, 10-digit phones). Large set (fields
not listed are empty): ``HOSPITAL`` all fields, phone ``(AAA) EEE-LLLL``; ``POLICE`` no phone, upper
case, street suffix abbreviated (``St``, ``Ave``...) 70 %; ``SOCIAL`` no address; ``CLINIC`` no city,
phone ``AAA-EEE-LLLL``; ``DISPATCH`` no dob, sex or postcode, upper case, suffix abbreviated 70 %.

Seeds and determinism
---------------------
Every random draw comes from ``numpy.random.default_rng([seed, stream])`` with the set's seed
(:data:`SETS`: small 20251, large 20252) and a fixed stream number per purpose (:data:`STREAMS`); each gecko
generator and mutator gets its own generator. No set or dict ordering, clock or machine property
reaches the output: rows are shuffled with a seeded permutation, numbered (``GS-000001`` /
``GL-000001``) and written sorted by ``record_id``; all values are strings (no floats); the CSV is
UTF-8 with ``\\n`` line ends, gzip-compressed at level 9 with mtime 0 and no file name.

gecko 0.6.4 under numpy 2 / pandas 2.3 (it pins numpy<2; installed with ``--no-deps``, it needs lxml)
-----------------------------------------------------------------------------------------------------
* ``with_cldr_keymap_file`` builds its keymap with ``np.chararray``, deprecated in numpy 2 (a
  ``DeprecationWarning``, still works): the call is wrapped to silence it (:func:`_keymap_mutator`).
* Not numpy-related, a gecko bug: ``with_cldr_keymap_file`` replaces the *first* occurrence of the chosen
  character once for every distinct replacement drawn in the batch, so a name with a repeated letter
  (``ROBERT``) can get several typos. :func:`_first_change_only` keeps only the first changed character.
* ``with_generator`` aligns generated values by index label, so with ``p < 1`` most selected rows get the
  same value; it is not used (moves are drawn here with numpy instead).
* gecko warns (``GeckoWarning``) when a probability cannot be met (e.g. day/month swaps need a day <= 12);
  these warnings are silenced.

Code: the set specs, source tables, clean population and clean records are in
``evaluation/synth/gecko_population.py``; this module corrupts them, applies each agency's style and writes the files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from evaluation.synth.gecko_population import (COLUMNS, FIELDS, REFERENCE_DATE, SETS, STREAMS, SetSpec, Sources,
                                               build_population, load_sources, person_records, set_rng)

GECKO_VERSION = "0.6.4"

#: SHA-256 of the source tables (see :func:`_input_digest`); a mismatch means an installed package changed them.
INPUT_SHA256 = "c214ce22dc41141b3529f251989849caaa49ff7d6893512184505354111a67b7"

#: USPS abbreviations used by agencies that abbreviate street suffixes.
SUFFIX_ABBREVIATIONS = (("Street", "St"), ("Avenue", "Ave"), ("Drive", "Dr"), ("Road", "Rd"), ("Lane", "Ln"),
                        ("Court", "Ct"), ("Place", "Pl"), ("Circle", "Cir"),
                        ("Terrace", "Ter"), ("Trail", "Trl"), ("Parkway", "Pkwy"))

#: Phonetic variations (source, target, gecko flags: ^ start, $ end, _ middle, empty = anywhere), upper case.
PHONETIC_RULES = (
    ("PH", "F", ""), ("F", "PH", "^"), ("CK", "K", "_$"), ("K", "CK", "$"), ("C", "K", "^"), ("K", "C", "^"),
    ("CH", "K", "^"), ("KR", "CHR", "^"), ("Z", "S", "_$"), ("S", "Z", "_"), ("EE", "EA", ""), ("EA", "EE", ""),
    ("IE", "Y", "$"), ("Y", "IE", "$"), ("EY", "Y", "$"), ("Y", "EY", "$"), ("Y", "I", "_"), ("I", "Y", "_"),
    ("OU", "OW", "_"), ("OW", "OU", "_"), ("AI", "AY", "_$"), ("AY", "AI", "_"), ("EI", "IE", "_"),
    ("IE", "EI", "_"), ("MAC", "MC", "^"), ("MC", "MAC", "^"), ("SCH", "SH", "^_"), ("SH", "SCH", "^"),
    ("TH", "T", ""), ("GH", "", "_$"), ("WR", "R", "^"), ("KN", "N", "^"), ("GN", "N", "_$"),
    ("X", "KS", "_$"), ("KS", "X", "_$"), ("QU", "KW", ""), ("J", "G", "^"), ("G", "J", "^"),
    ("DGE", "GE", "_$"), ("W", "V", "^"), ("V", "W", "^"), ("SEN", "SON", "$"), ("SON", "SEN", "$"),
    ("MANN", "MAN", "$"), ("MAN", "MANN", "$"), ("TT", "T", "_"), ("T", "TT", "_"), ("LL", "L", "_$"),
    ("L", "LL", "_"), ("NN", "N", "_$"), ("N", "NN", "_"), ("RR", "R", "_"), ("SS", "S", "_$"),
    ("S", "SS", "$"), ("MM", "M", "_"), ("FF", "F", "_$"), ("F", "FF", "_$"), ("AE", "E", "_"),
    ("OE", "O", "_"), ("ER", "OR", "$"), ("OR", "ER", "$"), ("ON", "AN", "$"), ("AN", "EN", "$"),
    ("EN", "AN", "$"), ("NE", "N", "$"), ("N", "NE", "$"), ("ITH", "YTH", "$"), ("D", "T", "$"),
    ("T", "D", "$"), ("CE", "SE", "$"), ("SE", "CE", "$"), ("EL", "LE", "$"), ("LE", "EL", "$"),
)
#: OCR confusions on upper-case names (source, target); a letter may become a digit.
OCR_LETTERS = (
    ("O", "Q"), ("Q", "O"), ("O", "D"), ("D", "O"), ("O", "0"), ("C", "G"), ("G", "C"), ("E", "F"), ("F", "E"),
    ("P", "F"), ("R", "B"), ("B", "R"), ("B", "8"), ("I", "L"), ("L", "I"), ("I", "1"), ("I", "J"), ("J", "I"),
    ("U", "V"), ("V", "U"), ("W", "VV"), ("VV", "W"), ("M", "N"), ("N", "M"), ("H", "N"), ("S", "5"),
    ("Z", "2"), ("G", "6"), ("K", "X"), ("CL", "D"), ("RN", "M"), ("NN", "M"),
)
#: OCR confusions on postcodes.
OCR_DIGITS = (("0", "8"), ("8", "0"), ("1", "7"), ("7", "1"), ("3", "8"), ("8", "3"), ("5", "6"), ("6", "5"),
              ("5", "8"), ("9", "4"), ("4", "9"), ("2", "7"))
#: Day and month swapped, for days 01-12 (gecko regex table: a group is replaced by its column's value,
#: in which ``(?P<name>)`` stands for what group ``name`` matched).
DAY_MONTH_SWAP = ((r"^\d{4}-(?P<m>\d{2})-(?P<d>0[1-9]|1[0-2])$", {"m": "(?P<d>)", "d": "(?P<m>)"}),)

LETTERS_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LETTERS_LOWER = LETTERS_UPPER.lower()
DIGITS = "0123456789"


# --------------------------------------------------------------------------- gecko helpers


def _write_keymap(path: Path) -> None:
    """A US QWERTY keyboard in CLDR keyboard XML (the format gecko's with_cldr_keymap_file reads)."""
    rows = (("E", "1234567890", "!@#$%^&*()"), ("D", "qwertyuiop", "QWERTYUIOP"), ("C", "asdfghjkl", "ASDFGHJKL"),
            ("B", "zxcvbnm", "ZXCVBNM"))
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<keyboard locale="en-t-k0-windows">']
    for layer, attr in ((1, ""), (2, ' modifiers="shift"')):
        lines.append(f"  <keyMap{attr}>")
        for row, *keys in rows:
            for col, ch in enumerate(keys[layer - 1], start=1):
                lines.append(f'    <map iso="{row}{col:02d}" to={quoteattr(ch)}/>')
        lines.append("  </keyMap>")
    lines.append("</keyboard>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _first_change_only(mutate: Callable) -> Callable:
    """Wrap a substituting mutator so a value keeps only its first changed character (see module doc)."""

    def _mutate(srs_lst: list[pd.Series], p: float = 1.0) -> list[pd.Series]:
        out = mutate(srs_lst, p)
        fixed = []
        for before, after in zip(srs_lst, out):
            after = after.copy()
            changed = (before != after) & (before.str.len() == after.str.len())
            for idx in after.index[changed.to_numpy()]:
                b, a = before.at[idx], after.at[idx]
                i = next(i for i in range(len(b)) if a[i] != b[i])
                after.at[idx] = b[:i] + a[i] + b[i + 1:]
            fixed.append(after)
        return fixed

    return _mutate


def _keymap_mutator(keymap: Path, charset: str, rng: np.random.Generator) -> Callable:
    from gecko import mutator as gm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # np.chararray under numpy 2
        return _first_change_only(gm.with_cldr_keymap_file(keymap, charset=charset, rng=rng))


def _regex_table(rules: tuple[tuple[str, dict[str, str]], ...]) -> pd.DataFrame:
    groups = sorted({g for _, repl in rules for g in repl})
    return pd.DataFrame({"pattern": [p for p, _ in rules],
                         **{g: [repl.get(g, "") for _, repl in rules] for g in groups}})


def _year_typo_table() -> pd.DataFrame:
    """Year errors: last digit +-1, decade digit +-1, last two digits transposed."""
    rules: list[tuple[str, dict[str, str]]] = []
    for k in range(10):
        for step in (1, -1):
            rules.append((rf"^\d{{3}}(?P<y>{k})-", {"y": str((k + step) % 10)}))
            rules.append((rf"^\d{{2}}(?P<t>{k})\d-", {"t": str((k + step) % 10)}))
    rules.append((r"^\d{2}(?P<a>\d)(?P<b>\d)-", {"a": "(?P<b>)", "b": "(?P<a>)"}))
    return _regex_table(tuple(rules))


def _pairs(rows: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"source": [a for a, _ in rows], "target": [b for _, b in rows]})


def _phonetic_table() -> pd.DataFrame:
    return pd.DataFrame({"source": [r[0] for r in PHONETIC_RULES], "target": [r[1] for r in PHONETIC_RULES],
                         "flags": [r[2] for r in PHONETIC_RULES]})


# --------------------------------------------------------------------------- corruption


def _valid_dob(values: pd.Series) -> np.ndarray:
    parsed = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
    return (parsed.notna() & (parsed <= pd.Timestamp(REFERENCE_DATE)) & (parsed.dt.year >= 1900)).to_numpy()


def _corrupt(spec: SetSpec, rec: pd.DataFrame, src: Sources, keymap: Path) -> pd.DataFrame:
    """Apply the set's gecko mutators (see the module doc table)."""
    from gecko import mutator as gm

    def R(name: str) -> np.random.Generator:
        return set_rng(spec, name)

    def kb(charset: str, stream: str):
        return _keymap_mutator(keymap, charset, R(stream))

    def missing(stream: str):
        return gm.with_missing_value("", rng=R(stream))

    phonetic = lambda s: gm.with_phonetic_replacement_table(_phonetic_table(), "source", "target", "flags", rng=R(s))  # noqa: E731
    ocr = lambda s: gm.with_replacement_table(_pairs(OCR_LETTERS), "source", "target", inline=True, rng=R(s))  # noqa: E731
    dm_swap = gm.with_regex_replacement_table(_regex_table(DAY_MONTH_SWAP), rng=R("m_dob_dm"))
    year = gm.with_regex_replacement_table(_year_typo_table(), rng=R("m_dob_year"))
    offset = gm.with_datetime_offset(9, "d", "%Y-%m-%d", prevent_wraparound=True, rng=R("m_dob_off"))

    def group(stream: str, rates: list[tuple[float, Callable]]) -> tuple[float, Callable]:
        """(total rate, gecko with_group): a field gets at most one of the errors, each with its rate."""
        total = sum(rate for rate, _ in rates)
        weights = [rate / total for rate, _ in rates]
        weights[-1] -= max(0.0, sum(weights) - 1.0)  # float rounding must not push the sum above 1
        return round(total, 6), gm.with_group([(w, m) for w, (_, m) in zip(weights, rates)], rng=R(stream))

    df = rec[list(FIELDS)].copy()
    if spec.name == "gecko_small":
        names_plan = [
            ("given_name", group("g_given", [(0.05, kb(LETTERS_UPPER, "m_given_kb")),
                                             (0.04, phonetic("m_given_phon")), (0.02, ocr("m_given_ocr"))])),
            ("family_name", group("g_family", [(0.05, kb(LETTERS_UPPER, "m_family_kb")),
                                               (0.04, phonetic("m_family_phon")), (0.02, ocr("m_family_ocr"))])),
            (("given_name", "family_name"), (0.03, gm.with_permute(rng=R("m_swap")))),
        ]
        date_plan = [("dob", group("g_dob", [(0.02, dm_swap), (0.02, offset), (0.02, year)]))]
        other_plan = [
            ("phone", group("g_phone", [(0.03, kb(DIGITS, "m_phone_kb")),
                                        (0.01, gm.with_transpose(rng=R("m_phone_trans")))])),
            ("street", (0.03, kb(LETTERS_LOWER, "m_street_kb"))),
            ("city", (0.01, kb(LETTERS_LOWER, "m_city_kb"))),
            ("postcode", (0.02, gm.with_substitute(DIGITS, rng=R("m_post_sub")))),
        ]
        missing_rates = dict(given_name=0.01, family_name=0.01, dob=0.02, sex=0.01, phone=0.03, street=0.02,
                             city=0.01, postcode=0.02)
    else:
        given = set(df["given_name"])
        nick_rows = [(a, b) for a, b in src.nicknames if a in given and a != b]
        nickname = gm.with_replacement_table(_pairs(nick_rows), "source", "target", inline=False,
                                             rng=R("m_given_nick"))
        names_plan = [
            ("given_name", group("g_given", [(0.06, nickname), (0.05, kb(LETTERS_UPPER, "m_given_kb")),
                                             (0.02, gm.with_transpose(rng=R("m_given_trans"))),
                                             (0.02, gm.with_delete(rng=R("m_given_del")))])),
            ("family_name", group("g_family", [(0.10, phonetic("m_family_phon")), (0.07, ocr("m_family_ocr")),
                                               (0.04, kb(LETTERS_UPPER, "m_family_kb")),
                                               (0.02, gm.with_insert(LETTERS_UPPER, rng=R("m_family_ins")))])),
            (("given_name", "family_name"), (0.02, gm.with_permute(rng=R("m_swap")))),
        ]
        date_plan = [("dob", group("g_dob", [(0.03, dm_swap), (0.04, offset), (0.04, year)]))]
        other_plan = [
            ("sex", (0.01, gm.with_categorical_values(pd.DataFrame({"sex": ["F", "M"]}), "sex",
                                                      rng=R("m_sex_flip")))),
            ("phone", group("g_phone", [(0.05, kb(DIGITS, "m_phone_kb")),
                                        (0.03, gm.with_transpose(rng=R("m_phone_trans"))),
                                        (0.03, gm.with_substitute(DIGITS, rng=R("m_phone_sub")))])),
            ("street", group("g_street", [(0.05, kb(LETTERS_LOWER, "m_street_kb")),
                                          (0.03, gm.with_delete(rng=R("m_street_del"))),
                                          (0.02, gm.with_transpose(rng=R("m_street_trans")))])),
            ("city", (0.03, kb(LETTERS_LOWER, "m_city_kb"))),
            ("postcode", group("g_post", [
                (0.04, gm.with_replacement_table(_pairs(OCR_DIGITS), "source", "target", inline=True,
                                                 rng=R("m_post_ocr"))),
                (0.03, gm.with_transpose(rng=R("m_post_trans"))),
                (0.02, gm.with_substitute(DIGITS, rng=R("m_post_sub")))])),
        ]
        missing_rates = dict(given_name=0.04, family_name=0.04, dob=0.08, sex=0.05, phone=0.10, street=0.05,
                             city=0.05, postcode=0.06)
    streams = dict(given_name="m_given_miss", family_name="m_family_miss", dob="m_dob_miss", sex="m_sex_miss",
                   phone="m_phone_miss", street="m_street_miss", city="m_city_miss", postcode="m_post_miss")
    missing_plan = [(col, (missing_rates[col], missing(streams[col]))) for col in FIELDS]

    df = gm.mutate_data_frame(df, names_plan)
    before = df["dob"].copy()
    df = gm.mutate_data_frame(df, date_plan)
    bad = ~_valid_dob(df["dob"])
    df.loc[bad, "dob"] = before[bad]  # a date error that gives an impossible or future date is undone
    df = gm.mutate_data_frame(df, other_plan)
    df = gm.mutate_data_frame(df, missing_plan)
    out = rec.copy()
    for col in FIELDS:
        out[col] = df[col].to_numpy(dtype=object)
    return out


def _format_phone(values: pd.Series, style: str) -> pd.Series:
    if style == "digits":
        return values
    ok = values.str.len() == 10
    a, e, n = values.str[:3], values.str[3:6], values.str[6:]
    formatted = ("(" + a + ") " + e + "-" + n) if style == "paren" else (a + "-" + e + "-" + n)
    return values.where(~ok, formatted)


def _agency_style(spec: SetSpec, rec: pd.DataFrame) -> pd.DataFrame:
    """Fields the agency does not record become empty; case, phone format and suffix abbreviations."""
    from gecko import mutator as gm

    out = rec.copy()
    abbrev = _regex_table(tuple((rf" (?P<s>{full})$", {"s": short}) for full, short in SUFFIX_ABBREVIATIONS))
    for col in ("given_name", "family_name"):
        out[col] = out[col].str.title()
    for number, agency in enumerate(spec.agencies):
        mask = (out["agency"] == agency.name).to_numpy()
        if not mask.any():
            continue
        part = out.loc[mask].copy()
        if agency.abbreviate:
            with _Quiet():
                mutator = gm.with_regex_replacement_table(abbrev, rng=np.random.default_rng(
                    [spec.seed, STREAMS["m_street_abbr"], number]))
                part = gm.mutate_data_frame(part, [("street", (agency.abbreviate, mutator))])
        part["phone"] = _format_phone(part["phone"], agency.phone_format)
        if agency.upper:
            for col in ("given_name", "family_name", "street", "city"):
                part[col] = part[col].str.upper()
        for col in FIELDS:
            if col not in agency.fields:
                part[col] = ""
        out.loc[mask, list(FIELDS)] = part[list(FIELDS)].to_numpy(dtype=object)
    return out


class _Quiet:
    def __enter__(self):
        from gecko import GeckoWarning

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", GeckoWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# --------------------------------------------------------------------------- assembly and output


def check_environment(src: Sources) -> None:
    version = metadata.version("gecko-syndata")
    if version != GECKO_VERSION:
        raise RuntimeError(f"gecko-syndata {GECKO_VERSION} is required, found {version}")
    if src.digest != INPUT_SHA256:
        raise RuntimeError(
            "the source tables (names 0.3.0 census files, Faker's US places and street suffixes, nicknames "
            f"1.0.1) differ from the ones the committed sets were made with: digest {src.digest}, expected "
            f"{INPUT_SHA256}. Regenerate the sets and update the pinned hashes deliberately.")


def generate(spec: SetSpec, src: Sources) -> pd.DataFrame:
    """The set as a DataFrame in output order (all values strings)."""
    persons, households = build_population(spec, src)
    rec = person_records(spec, persons, households)
    with _Quiet(), tempfile.TemporaryDirectory() as tmp:
        keymap = Path(tmp) / "en-US-qwerty.xml"
        _write_keymap(keymap)
        rec = _corrupt(spec, rec, src, keymap)
    rec = _agency_style(spec, rec)
    # person keys and record ids carry no household or generation order
    keys = set_rng(spec, "keys").permutation(len(persons))
    rec["person_key"] = [f"P{keys[p] + 1:06d}" for p in rec["person"]]
    order = set_rng(spec, "shuffle").permutation(len(rec))
    rec = rec.iloc[order].reset_index(drop=True)
    rec["record_id"] = [f"{spec.prefix}-{i + 1:06d}" for i in range(len(rec))]
    out = rec[list(COLUMNS)].astype(str)
    return out.sort_values("record_id", kind="stable").reset_index(drop=True)


def to_gzip_bytes(frame: pd.DataFrame) -> bytes:
    text = frame.to_csv(index=False, lineterminator="\n")
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def write_sets(out_dir: Path, only: str | None = None) -> dict[str, pd.DataFrame]:
    out_dir.mkdir(parents=True, exist_ok=True)
    src = load_sources()
    check_environment(src)
    frames = {}
    for spec in SETS:
        if only and spec.name != only:
            continue
        frame = generate(spec, src)
        (out_dir / f"{spec.name}.csv.gz").write_bytes(to_gzip_bytes(frame))
        frames[spec.name] = frame
    return frames


def summary(frame: pd.DataFrame) -> str:
    per_person = frame.groupby("person_key").size()
    dist = per_person.value_counts().sort_index()
    lines = [f"records {len(frame)}, persons {len(per_person)}, records/person mean {per_person.mean():.2f}",
             "records per person: " + ", ".join(f"{k}:{v}" for k, v in dist.items()),
             "null share: " + ", ".join(f"{c} {(frame[c] == '').mean():.3f}" for c in FIELDS)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="directory for gecko_small.csv.gz, gecko_large.csv.gz")
    ap.add_argument("--only", choices=[s.name for s in SETS], help="write one set only")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    frames = write_sets(args.out, args.only)
    if not args.quiet:
        for name, frame in frames.items():
            data = (args.out / f"{name}.csv.gz").read_bytes()
            print(f"{name}: {hashlib.sha256(data).hexdigest()}  {len(data)} bytes")
            print(summary(frame))
        print(f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
