"""The Splink model's comparisons, built from the fields the data actually has.

Every comparison level is one of a small set of SQL shapes (null checks, equality, Jaro-Winkler,
(Damerau-)Levenshtein, array intersection / membership, absolute difference), written through
Splink's dialect-aware level creators or as DuckDB SQL that Splink transpiles. Keeping to this
set is deliberate: the real-time resolver evaluates the same conditions natively, and a model
must run on DuckDB and Spark alike.

The output column names are the *fields* a responder or steward sees in an explanation:
given_name, family_name, middle_name, name_suffix, dob, sex, phone, email, address, ssn_last4.
"""

from __future__ import annotations

import splink.comparison_level_library as cll
import splink.comparison_library as cl

from matching.splink_internals import ComparisonCreator


# Half-strength term-frequency adjustment on names: full strength penalises agreement on common
# surnames (Nguyen, Garcia, Williams), which are unevenly common across communities, and raised
# the false-non-match rate of those groups. Measured on a 100k held-out county: precision
# 0.99616 -> 0.99644, recall 0.96972 -> 0.97028, black-group FNMR 3.54% -> 3.20%.
NAME_TF_WEIGHT = 0.5

_SWAPPED = '"given_name_l" = "family_name_r" AND "family_name_l" = "given_name_r"'
# Swapped, each with a typo ("REE ZACHAKRY" for Zachary Rees): a call-taker's swap is often also misheard.
_SWAPPED_FUZZY = ('jaro_winkler_similarity("given_name_l", "family_name_r") >= 0.88 AND '
                  'jaro_winkler_similarity("family_name_l", "given_name_r") >= 0.88')
# A household's shared evidence: a similar street with a similar family name or phone (typos included).
_SIMILAR_STREET = 'jaro_winkler_similarity("street_l", "street_r") >= 0.9'
_FAMILY_AT_HOME = 'jaro_winkler_similarity("family_name_l", "family_name_r") >= 0.92 AND ' + _SIMILAR_STREET
_PHONE_AT_HOME = 'jaro_winkler_similarity("phone_l", "phone_r") >= 0.9 AND ' + _SIMILAR_STREET
_HOUSEHOLD = 'jaro_winkler_similarity("family_name_l", "family_name_r") >= 0.92 AND ' + _PHONE_AT_HOME
_FAMILY_BY_PHONE = 'jaro_winkler_similarity("family_name_l", "family_name_r") >= 0.92 AND jaro_winkler_similarity("phone_l", "phone_r") >= 0.9'
_SAME_FAMILY_AT_HOME = '"family_name_l" = "family_name_r" AND "address_key_l" = "address_key_r"'
_SAME_HOUSEHOLD = _SAME_FAMILY_AT_HOME + ' AND "phone_l" = "phone_r"'
_CROSSED = '"given_name_l" = "family_name_r" OR "family_name_l" = "given_name_r"'


#: A level that generalises a stricter one (label -> the stricter level's label). Where training never sees
#: the general level (a county whose city always follows its postcode never has "same postcode, other
#: city"), it takes the stricter level's parameters instead of counting for nothing
#: (`matching.train.neutralise_unobserved_levels`).
LEVEL_FALLBACKS = {
    "Same postcode, different street": "Same postcode and city, different street",
}


def _custom(sql: str, label: str) -> cll.CustomLevel:
    return cll.CustomLevel(sql, label_for_charts=label, base_dialect_str="duckdb")


def _alias_level(col: str, label: str) -> cll.CustomLevel:
    """The name on one side is among the other record's aliases (preferred names, former names)."""
    return _custom(f'array_contains("alias_names_r", "{col}_l") OR array_contains("alias_names_l", "{col}_r")', label)


def _one_typo(col: str) -> cll.CustomLevel:
    """One edit apart (Damerau-Levenshtein 1). Catches what Jaro-Winkler misses on short names:
    an early substitution (WYLD / WILD, KRKM / KROM) or an insertion (EMANUEL / ENMANUEL).
    Both names need three letters: an initial is one edit from every two-letter name (E / ED).

    The length and first-or-last-letter tests change nothing (one edit to a name of three or more
    letters moves its length by at most one and leaves its first or its last letter alone); they
    let DuckDB skip its Damerau-Levenshtein (ten times slower than its Jaro-Winkler) for about 85% of
    pairs: scoring a million-record county with the committed model took 293 s without them, 244 s with them."""
    left, right = f'"{col}_l"', f'"{col}_r"'
    return _custom(f"length({left}) >= 3 AND length({right}) >= 3 AND abs(length({left}) - length({right})) <= 1 "
                   f"AND (ascii({left}) = ascii({right}) OR ascii(reverse({left})) = ascii(reverse({right}))) "
                   f"AND damerau_levenshtein({left}, {right}) <= 1", "One typo apart")


def _typo_sql(col: str) -> str:
    """Damerau-Levenshtein 1, exactly, with the cheap tests of `_one_typo` first where they decide nothing
    wrongly: one edit moves the length by at most one and, in values of three or more characters, leaves the
    first or the last character alone. DuckDB then runs its slow Damerau-Levenshtein on the few pairs that
    pass (on random pairs of phones and postcodes about one in ten), in u estimation, EM and prediction."""
    left, right = f'"{col}_l"', f'"{col}_r"'
    return (f"abs(length({left}) - length({right})) <= 1 "
            f"AND (length({left}) < 3 OR length({right}) < 3 OR ascii({left}) = ascii({right}) "
            f"OR ascii(reverse({left})) = ascii(reverse({right}))) "
            f"AND damerau_levenshtein({left}, {right}) <= 1")


def _typo(col: str, label: str) -> cll.CustomLevel:
    return _custom(_typo_sql(col), label)


#: Two well-formed dates (YYYY-MM-DD, as standardisation keeps them) one edit apart share the year or the day and
#: month: a single substitution or swap of neighbours stays within one of the three parts (an edit touching a
#: hyphen, or changing the length, leaves no well-formed date).
_SAME_YEAR_OR_DAY_AND_MONTH = '("dob_md_l" = "dob_md_r" OR "birth_year_l" = "birth_year_r")'


def _dob_typo() -> cll.CustomLevel:
    """`_typo_sql` on the date of birth, after `_SAME_YEAR_OR_DAY_AND_MONTH`, which decides nothing wrongly and
    spares DuckDB its Damerau-Levenshtein on all but a few pairs: dates have one length and mostly one first and
    last character, so the tests of `_typo_sql` alone let nearly every pair through (DuckDB spent 0.31 s of the
    0.35 s the comparison took on 571,915 random pairs in that one level)."""
    return _custom(f"{_SAME_YEAR_OR_DAY_AND_MONTH} AND {_typo_sql('dob')}", "One-character typo")


def _exact_with_tf(col: str) -> cll.ExactMatchLevel:
    """An exact match on `col` with term-frequency adjustments, which it takes from its own u.

    Splink would otherwise look for the comparison's exact-match level on `col` to read that u, parsing every
    level's SQL (sqlglot) each time it writes the adjustment, in every EM iteration and every prediction; the
    level it would find is this one, so the weights are the same.
    """
    return cll.ExactMatchLevel(col, term_frequency_adjustments=True).configure(disable_tf_exact_match_detection=True)


def _either_null(*cols: str) -> str:
    return " AND ".join(f'("{c}_l" IS NULL OR "{c}_r" IS NULL)' for c in cols)


def _given_name(fields: set[str]) -> ComparisonCreator:
    levels = [
        cll.NullLevel("given_name"),
        _exact_with_tf("given_name").configure(tf_adjustment_weight=NAME_TF_WEIGHT),
        cll.ArrayIntersectLevel("given_variants", 1).configure(label_for_charts="Nickname-compatible"),
        cll.JaroWinklerLevel("given_name", 0.92),
        _one_typo("given_name"),
        _custom('"given_phonetic_l" = "given_phonetic_r"', "Sounds alike (metaphone)"),
    ]
    if "alias_names" in fields:
        levels.append(_alias_level("given_name", "Matches a known alias"))
    if "family_name" in fields:
        levels += [
            _custom(_SWAPPED, "Given and family names swapped"),
            _custom(_SWAPPED_FUZZY, "Given and family names swapped, with typos"),
            # One-sided: only here, not in the family comparison, so the evidence counts once.
            _custom(_CROSSED, "Given name recorded as the other's family name"),
        ]
    levels += [cll.JaroWinklerLevel("given_name", 0.80), cll.ElseLevel()]
    return cl.CustomComparison(levels, output_column_name="given_name", comparison_description="Given name")


def _counted_under(field: str, sql: str, label: str) -> cll.CustomLevel:
    """A level whose evidence another comparison (`field`) counts: m = u, fixed, weight 0."""
    return _custom(sql, f"{label} (counted under {field})").configure(
        m_probability=0.001, u_probability=0.001, fix_m_probability=True, fix_u_probability=True)


def _family_name(fields: set[str]) -> ComparisonCreator:
    household = []
    if {"street", "households"} <= fields:
        household.append(_counted_under("address", _FAMILY_AT_HOME, "Similar family name and street"))
    if {"phone", "households"} <= fields:
        household.append(_counted_under("phone", _FAMILY_BY_PHONE, "Similar family name and phone"))
    levels = [
        cll.NullLevel("family_name"),
        *household,
        _exact_with_tf("family_name").configure(tf_adjustment_weight=NAME_TF_WEIGHT),
        _custom('"family_first_l" = "family_first_r"', "First surname of a compound matches"),
        cll.JaroWinklerLevel("family_name", 0.92),
        _one_typo("family_name"),
        _custom('"family_phonetic_l" = "family_phonetic_r"', "Sounds alike (metaphone)"),
    ]
    if "alias_names" in fields:
        levels.append(_alias_level("family_name", "Matches a known alias or former name"))
    if "given_name" in fields:
        # The swap's evidence is counted once, under given_name; here it is neutral (m = u, fixed).
        for sql, label in ((_SWAPPED, "Swapped with given name (counted under given_name)"),
                           (_SWAPPED_FUZZY, "Swapped with given name, with typos (counted under given_name)")):
            levels.append(_custom(sql, label).configure(
                m_probability=0.001, u_probability=0.001, fix_m_probability=True, fix_u_probability=True))
    levels += [cll.JaroWinklerLevel("family_name", 0.80), cll.ElseLevel()]
    return cl.CustomComparison(levels, output_column_name="family_name", comparison_description="Family name")


def _exact_then(col: str, sql: str, label: str, description: str) -> ComparisonCreator:
    """Null, exact match, one weaker agreement (`sql`, `label`), everything else."""
    levels = [cll.NullLevel(col), cll.ExactMatchLevel(col), _custom(sql, label), cll.ElseLevel()]
    return cl.CustomComparison(levels, output_column_name=col, comparison_description=description)


def _middle_name() -> ComparisonCreator:
    return _exact_then("middle_name", '"middle_initial_l" = "middle_initial_r"', "Same initial", "Middle name")


def _date_of_birth(fields: set[str]) -> ComparisonCreator:
    has_dob = "dob" in fields
    null_sql = _either_null("dob", "birth_year") if has_dob else _either_null("birth_year")
    levels = [_custom(null_sql, "No date or year of birth on one side").configure(is_null_level=True)]
    one_side_year_only = _either_null("dob") + " AND " if has_dob else ""
    if has_dob:
        levels += [
            cll.ExactMatchLevel("dob"),
            _custom('"dob_swap_l" = "dob_r"', "Day and month transposed"),
            _custom('"dob_md_l" = "dob_md_r" AND abs("birth_year_l" - "birth_year_r") = 1', "Year off by one"),
            _dob_typo(),
        ]
    if "birth_year_only" in fields or not has_dob:
        levels += [
            _custom(one_side_year_only + '"birth_year_l" = "birth_year_r"', "Same birth year (no full date on one side)"),
            _custom(one_side_year_only + 'abs("birth_year_l" - "birth_year_r") <= 3', "Birth years within 3 (approximate age)"),
            # An age guessed within 3 years, turned into a year of birth at the call (year - age), lands
            # up to 4 years from the true year: a birthday later in the year adds one.
            _custom(one_side_year_only + 'abs("birth_year_l" - "birth_year_r") <= 5', "Birth years within 5 (approximate age)"),
        ]
    # A generation apart: parent and child sharing a name and an address (Jr / Sr) land here.
    levels += [_custom('abs("birth_year_l" - "birth_year_r") >= 15', "Born 15 or more years apart"), cll.ElseLevel()]
    return cl.CustomComparison(levels, output_column_name="dob", comparison_description="Date of birth")


def _home_levels(fields: set[str]) -> list[cll.CustomLevel]:
    """The street's agreement with the phone and, where the file has households (`matching.household`),
    the family name: learned jointly, strictest first."""
    family, phone = {"family_name", "households"} <= fields, "phone" in fields
    shapes = [(family and phone, _SAME_HOUSEHOLD, "Same family name, phone and address"),
              (family, _SAME_FAMILY_AT_HOME, "Same family name and address"),
              (family and phone, _HOUSEHOLD, "Similar family name, phone and street"),
              (family, _FAMILY_AT_HOME, "Similar family name and street"),
              (phone, _PHONE_AT_HOME, "Similar phone and street")]
    return [_custom(sql, label) for wanted, sql, label in shapes if wanted]


def _address(fields: set[str]) -> ComparisonCreator:
    """Street, postcode and city as one comparison (they describe one place, so their evidence counts once).

    A shared street, phone and family name are one piece of evidence too: everyone in a household has
    all three, so counting them apart made a parent and child look like one person by where they live
    alone (on a household-rich file, 4 % of the pairs linked were such). The street's agreement with
    the phone, and with the family name where the file has households, is learned as levels here
    (`_home_levels`) and is neutral under phone and family_name."""
    has_city = "city" in fields
    same_city = '"city_l" = "city_r"'
    similar_street = _SIMILAR_STREET
    levels: list = []
    if "street" in fields:
        null_sql = _either_null("street", "postcode") if "postcode" in fields else _either_null("street")
        levels.append(_custom(null_sql, "No address on one side").configure(is_null_level=True))
        levels += _home_levels(fields)
        levels.append(_exact_with_tf("address_key").configure(label_for_charts="Same address"))
        if "postcode" in fields:
            levels.append(_custom(f'{similar_street} AND "postcode_l" = "postcode_r"', "Similar street, same postcode"))
        if has_city:
            levels.append(_custom(f"{similar_street} AND {same_city}", "Similar street, same city"))
        levels.append(_custom(similar_street, "Similar street, different or no postcode"))
    else:
        levels.append(cll.NullLevel("postcode"))
    if "postcode" in fields:
        if has_city:
            levels.append(_custom(f'"postcode_l" = "postcode_r" AND {same_city}', "Same postcode and city, different street"))
        levels += [
            cll.ExactMatchLevel("postcode").configure(label_for_charts="Same postcode, different street"),
            _typo("postcode", "Postcode one typo away"),
        ]
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(levels, output_column_name="address", comparison_description="Address")


def _suffix() -> ComparisonCreator:
    """Generational suffix. Jr against Sr is a different person (up to a recording error), which EM cannot
    learn: father and son agree on everything else, so EM takes them for one person. Its m is fixed."""
    levels = [
        cll.NullLevel("name_suffix"),
        cll.ExactMatchLevel("name_suffix"),
        _custom(
            "(\"name_suffix_l\" = 'JR' AND \"name_suffix_r\" = 'SR') OR (\"name_suffix_l\" = 'SR' AND \"name_suffix_r\" = 'JR')",
            "Jr against Sr",
        ).configure(m_probability=0.002, fix_m_probability=True),
        cll.ElseLevel(),
    ]
    return cl.CustomComparison(levels, output_column_name="name_suffix", comparison_description="Generational suffix")


def _sex() -> ComparisonCreator:
    """Sex. X (non-binary) against M or F is its own level: records and call-takers often write the
    sex a person's name or appearance suggests, so that disagreement is weak evidence, unlike M against F."""
    return _exact_then("sex", "\"sex_l\" = 'X' OR \"sex_r\" = 'X'", "X on one side, M or F on the other", "Sex")


def _phone(fields: set[str]) -> ComparisonCreator:
    """Phone; where the street agrees too, the evidence is counted once, under address (m = u, fixed).
    Where the file has households, a similar phone and family name (no street to go by) are learned
    as one level here, and are neutral under family_name."""
    first = [_counted_under("address", _PHONE_AT_HOME, "Similar phone and street")] if "street" in fields else []
    if {"family_name", "households"} <= fields:
        first.append(_custom(_FAMILY_BY_PHONE, "Similar phone and family name"))
    return _exact_fuzzy("phone", "Phone", tf=True, typo=True, first=first)


def _exact_fuzzy(col: str, description: str, tf: bool = False, typo: bool = False,
                 first: list | None = None) -> ComparisonCreator:
    levels = [cll.NullLevel(col), *(first or []), _exact_with_tf(col) if tf else cll.ExactMatchLevel(col)]
    if typo:
        levels.append(_typo(col, "One-character typo"))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(levels, output_column_name=col, comparison_description=description)


def build_comparisons(fields: set[str]) -> list[ComparisonCreator]:
    """Comparisons for the standardised fields present in the data (see `standardise.available_fields`)."""
    comparisons: list[ComparisonCreator] = []
    if "given_name" in fields:
        comparisons.append(_given_name(fields))
    if "family_name" in fields:
        comparisons.append(_family_name(fields))
    if "middle_name" in fields:
        comparisons.append(_middle_name())
    if "name_suffix" in fields:
        comparisons.append(_suffix())
    if "birth_year" in fields:
        comparisons.append(_date_of_birth(fields))
    if "sex" in fields:
        comparisons.append(_sex())
    if "phone" in fields:
        comparisons.append(_phone(fields))
    if "email" in fields:
        comparisons.append(_exact_fuzzy("email", "E-mail", typo=True))
    if "street" in fields or "postcode" in fields:
        comparisons.append(_address(fields))
    if "ssn_last4" in fields:
        comparisons.append(_exact_fuzzy("ssn_last4", "Last four of SSN", typo=True))
    if len(comparisons) < 2:
        raise ValueError(
            "records need at least two comparable fields (e.g. given_name and dob); found: "
            + (", ".join(sorted(fields)) or "none")
        )
    return comparisons
