"""How each agency records a person at a moment in time.

``make_records`` takes record skeletons (person row, minute, agency code) and
returns the canonical record columns.  Every rate below is *per record* of that
agency; the tuple order is (RMS, CAD, EPCR, EHR, 988, VR).  SYNTH.md lists them.
"""
from __future__ import annotations

import random

import numpy as np

from evaluation.synth import corrupt as C
from evaluation.synth.bias import NameBias, bias_names
from evaluation.synth.places import (
    STATE, STYLE_TITLE_ABBR, STYLE_TITLE_FULL, STYLE_TITLE_HASH, STYLE_UPPER_ABBR, STYLE_UPPER_FULL,
)
from evaluation.synth.population import ADDR_STREET, Population, address_at, family_at, mobile_at

RMS, CAD, EMS, BH, CRISIS, VR = range(6)
AGENCIES = (("METRO_PD", "RMS"), ("COUNTY_911", "CAD"), ("COUNTY_EMS", "EPCR"),
            ("COUNTY_BH", "EHR"), ("CRISIS_LINE", "988"), ("REGISTRY", "VR"))
SHARE = np.array([0.30, 0.24, 0.20, 0.13, 0.05, 0.08])

#            RMS    CAD    EPCR   EHR    988    VR
R = {
    "given_nickname": (0.16, 0.30, 0.20, 0.02, 0.25, 0.04),
    "given_phonetic": (0.02, 0.10, 0.03, 0.00, 0.03, 0.00),
    "given_typo": (0.02, 0.03, 0.03, 0.01, 0.02, 0.01),
    "family_phonetic": (0.06, 0.16, 0.10, 0.00, 0.00, 0.00),
    "maiden_used": (0.20, 0.15, 0.25, 0.10, 0.0, 0.15),  # married before the window: old surname
    "family_typo": (0.05, 0.05, 0.06, 0.03, 0.00, 0.03),
    "name_swap": (0.005, 0.03, 0.02, 0.0, 0.0, 0.0),
    "middle_full": (0.85, 0.55, 0.70, 0.95, 0.0, 0.95),
    "middle_initial": (0.07, 0.12, 0.10, 0.02, 0.0, 0.02),
    "middle_wrong": (0.01, 0.02, 0.02, 0.005, 0.0, 0.005),
    "suffix_recorded": (0.65, 0.25, 0.35, 0.55, 0.0, 0.80),
    "suffix_in_family": (0.08, 0.10, 0.08, 0.0, 0.0, 0.0),
    "unknown_patient": (0.0, 0.0, 0.02, 0.0, 0.0, 0.0),
    "dob_present": (0.97, 0.0, 0.78, 0.995, 0.0, 0.98),
    "dob_swap": (0.008, 0.0, 0.015, 0.004, 0.0, 0.005),
    "dob_year_off": (0.008, 0.0, 0.015, 0.004, 0.0, 0.005),
    "dob_impossible": (0.0, 0.0, 0.0, 0.0, 0.0, 0.004),
    "approx_age": (0.5, 1.0, 1.0, 0.0, 0.0, 0.0),   # share of dob-less records given an estimated birth_year
    "sex_unknown": (0.01, 0.10, 0.05, 0.0, 1.0, 0.0),
    "phone_own": (0.85, 0.60, 0.50, 0.88, 0.97, 0.10),
    "phone_stale": (0.25, 0.0, 0.0, 0.15, 0.0, 0.0),
    "phone_caller1": (0.0, 0.22, 0.15, 0.0, 0.02, 0.0),
    "phone_caller2": (0.0, 0.04, 0.0, 0.0, 0.0, 0.0),
    "phone_bystander": (0.0, 0.14, 0.08, 0.0, 0.01, 0.0),
    "phone_caregiver": (0.0, 0.0, 0.0, 0.0, 0.0, 0.85),
    "phone_typo": (0.005, 0.01, 0.005, 0.003, 0.0, 0.003),
    "landline_pref": (0.15, 0.15, 0.15, 0.15, 0.05, 0.15),
    "email": (0.08, 0.0, 0.0, 0.30, 0.0, 0.85),
    "addr_home": (0.85, 0.60, 0.75, 0.95, 0.0, 0.97),
    "addr_stale": (0.10, 0.0, 0.0, 0.0, 0.0, 0.0),
    "addr_loc1": (0.0, 0.14, 0.08, 0.0, 0.0, 0.0),
    "addr_loc2": (0.0, 0.07, 0.0, 0.0, 0.0, 0.0),
    "addr_hotspot": (0.0, 0.03, 0.0, 0.0, 0.0, 0.0),
    "addr_random": (0.0, 0.16, 0.12, 0.0, 0.0, 0.0),
    "cad_anchor": (0.0, 0.9, 0.0, 0.0, 0.0, 0.0),
    "unit_dropped": (0.15, 0.25, 0.15, 0.10, 0.0, 0.10),
    "street_typo": (0.01, 0.02, 0.01, 0.005, 0.0, 0.005),
    "alt_style": (0.08, 0.05, 0.10, 0.10, 0.0, 0.20),
    "zip4": (0.0, 0.0, 0.0, 0.15, 0.0, 0.0),
    "ssn_last4": (0.25, 0.0, 0.0, 0.90, 0.0, 0.10),
    "ssn_typo": (0.01, 0.0, 0.0, 0.01, 0.0, 0.01),
    "aliases": (0.25, 0.0, 0.0, 0.0, 0.0, 0.0),      # RMS: known aliases on the record
    "preferred_alias": (0.0, 0.0, 0.0, 0.90, 0.0, 0.50),
    "preferred_given": (0.0, 0.0, 0.0, 0.0, 0.60, 0.0),
    "upper_case": (1.0, 1.0, 0.0, 0.0, 0.2, 0.15),
}
CAD_AGE_ERR = (np.arange(-3, 4), np.array([0.05, 0.10, 0.20, 0.30, 0.20, 0.10, 0.05]))
EMS_AGE_ERR = (np.arange(-4, 5), np.array([0.03, 0.05, 0.10, 0.17, 0.30, 0.17, 0.10, 0.05, 0.03]))
# (primary style, alternate style) per agency
STYLES = ((STYLE_UPPER_ABBR, STYLE_UPPER_FULL), (STYLE_UPPER_ABBR, STYLE_UPPER_FULL),
          (STYLE_TITLE_ABBR, STYLE_TITLE_FULL), (STYLE_TITLE_ABBR, STYLE_TITLE_HASH),
          (STYLE_TITLE_ABBR, STYLE_TITLE_ABBR), (STYLE_TITLE_HASH, STYLE_TITLE_ABBR))
SUFFIX_FORMS = ({"JR": "JR", "SR": "SR"}, {"JR": "JR", "SR": "SR"}, {"JR": "Jr", "SR": "Sr"},
                {"JR": "Jr.", "SR": "Sr."}, {}, {"JR": "Jr", "SR": "Sr"})
PHONE_FORMATS = (  # (format index, weight) per agency; see format_phone
    ((0, 0.8), (1, 0.2)), ((2, 0.9), (1, 0.1)), ((1, 0.7), (0, 0.3)),
    ((3, 0.5), (0, 0.5)), ((4, 0.6), (2, 0.4)), ((4, 0.4), (3, 0.3), (0, 0.3)),
)


def rate(name: str, agency: np.ndarray) -> np.ndarray:
    return np.asarray(R[name])[agency]


def format_phone(num: int, f: int) -> str:
    """A 10-digit number in format ``f``: (AAA) EEE-LLLL, AAA-EEE-LLLL, digits, AAA.EEE.LLLL or +1 AAA EEE LLLL."""
    s = f"{num:010d}"
    a, b, c = s[:3], s[3:6], s[6:]
    return (f"({a}) {b}-{c}", f"{a}-{b}-{c}", s, f"{a}.{b}.{c}", f"+1 {a} {b} {c}")[f]


def _digit_typo(num: int, rng: random.Random) -> int:
    s = list(f"{num:010d}")
    i = rng.randrange(3, 9)
    s[i], s[i + 1] = s[i + 1], s[i]
    return int("".join(s))


def _pick(u: np.ndarray, agency: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Categorical choice among the named rates (remainder -> len(names))."""
    out = np.full(len(u), len(names), dtype=np.int8)
    acc = np.zeros(len(u))
    for k, n in enumerate(names):
        lo = acc.copy()
        acc = acc + rate(n, agency)
        out[(u >= lo) & (u < acc) & (out == len(names))] = k
    return out


def upper_or_title(values: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Each value as given where ``upper`` (the generator writes upper case), else title-cased."""
    return np.array([v if u else v.title() for v, u in zip(values, upper)], dtype=object)


def make_records(pop: Population, person: np.ndarray, t: np.ndarray, agency: np.ndarray,
                 rng: np.random.Generator, pyrng: random.Random, spare_phones: np.ndarray,
                 name_bias: NameBias | None = None) -> dict[str, np.ndarray]:
    """The canonical record columns of these skeletons. ``name_bias`` (matching bias, bias.py)
    adds misspellings to its group's names from streams of its own; None draws nothing extra."""
    a = pop.a
    n = len(person)
    U = lambda: rng.random(n)  # noqa: E731 -- one fresh uniform vector per decision
    ag = agency
    # ---- names ----
    given = a["given"][person].copy()
    pref = a["preferred"][person]
    use_pref = (pref != "") & (U() < rate("preferred_given", ag))
    given[use_pref] = pref[use_pref]
    C.nickname_where(given, U() < rate("given_nickname", ag), U(), pyrng)
    g_phon = U() < rate("given_phonetic", ag)
    g_typo = ~g_phon & (U() < rate("given_typo", ag))
    C.apply_where(given, g_phon, C.phonetic_variant, pyrng)
    C.apply_where(given, g_typo, C.keyboard_typo, pyrng)
    spelled = g_phon | g_typo  # at most one misspelt name part per record
    family_true = family_at(pop, person, t)
    family = family_true.copy()
    maiden = (a["marriage_at"][person] <= t) & (a["family_married"][person] != "") & (U() < rate("maiden_used", ag))
    family[maiden] = a["family_birth"][person][maiden]
    rms_space = (ag == RMS) & np.array(["-" in f for f in family])
    family[rms_space] = np.array([f.replace("-", " ") for f in family[rms_space]], dtype=object)
    first_only = (ag == CAD) | (ag == EMS)
    family[first_only] = C.first_surname(family[first_only])
    f_phon = ~spelled & (U() < rate("family_phonetic", ag))
    f_typo = ~spelled & ~f_phon & (U() < rate("family_typo", ag))
    C.apply_where(family, f_phon, C.phonetic_variant, pyrng)
    C.apply_where(family, f_typo, C.keyboard_typo, pyrng)
    middle0 = a["middle"][person]
    mchoice = _pick(U(), ag, ("middle_full", "middle_initial"))
    middle = np.where(mchoice == 0, middle0, "").astype(object)
    ini = (mchoice == 1) & (middle0 != "")
    middle[ini] = np.array([m[0] for m in middle0[ini]], dtype=object)
    wrong = (mchoice <= 1) & (U() < rate("middle_wrong", ag))
    middle[wrong] = a["middle"][rng.integers(0, pop.n, wrong.sum())]
    sfx0 = a["suffix"][person]
    has_sfx = sfx0 != ""
    rec_sfx = has_sfx & (U() < rate("suffix_recorded", ag))
    in_fam = rec_sfx & (U() < rate("suffix_in_family", ag))
    suffix = np.full(n, "", dtype=object)
    for i in np.flatnonzero(rec_sfx):
        s = SUFFIX_FORMS[ag[i]].get(sfx0[i], sfx0[i])
        if in_fam[i]:
            family[i] = f"{family[i]} {sfx0[i]}"
        else:
            suffix[i] = s
    swap = U() < rate("name_swap", ag)
    given[swap], family[swap] = family[swap], given[swap].copy()
    if name_bias is not None:
        bias_names(name_bias, person, ag, given, family, swap, rate)
    # aliases
    aliases = np.full(n, "", dtype=object)
    for i in np.flatnonzero((ag == RMS) & (U() < rate("aliases", ag))):
        p = person[i]
        out = []
        nick = C.pick_nickname(a["given"][p], pyrng.random())
        if nick:
            out.append(f"{nick} {family_true[i]}")
        if a["family_married"][p] and family_true[i] != a["family_birth"][p] and pyrng.random() < 0.6:
            out.append(f"{a['given'][p]} {a['family_birth'][p]}")
        if pyrng.random() < 0.05:  # an unrelated AKA (given and surname of two different people)
            out.append(f"{a['given'][pyrng.randrange(pop.n)]} {a['family_birth'][pyrng.randrange(pop.n)]}")
        aliases[i] = "|".join(out)
    pal = (pref != "") & (U() < rate("preferred_alias", ag))
    aliases[pal] = pref[pal] + " " + family_true[pal]
    # unknown patients
    unknown = U() < rate("unknown_patient", ag)
    for arr in (given, family, middle, suffix, aliases):
        arr[unknown] = ""
    crisis = ag == CRISIS
    for arr in (family, middle, suffix, aliases):
        arr[crisis] = ""
    # casing
    upper = U() < rate("upper_case", ag)
    lower = crisis & ~upper & (U() < 0.12)
    given, middle, family, aliases = (upper_or_title(x, upper) for x in (given, middle, family, aliases))
    given[lower] = np.array([g.lower() for g in given[lower]], dtype=object)
    # ---- date of birth / birth year ----
    dob = a["dob"][person].copy()
    has_dob = (U() < rate("dob_present", ag)) & ~unknown
    dob = C.swap_day_month(dob, has_dob & (U() < rate("dob_swap", ag)))
    dob = C.shift_year(dob, has_dob & (U() < rate("dob_year_off", ag)), rng.choice([-1, 1], n))
    dob_s = np.where(has_dob, np.datetime_as_string(dob), "").astype(object)
    for i in np.flatnonzero(has_dob & (U() < rate("dob_impossible", ag))):
        dob_s[i] = C.impossible_date(dob_s[i], pyrng)
    byear = np.array([s[:4] for s in dob_s], dtype=object)
    est = ~has_dob & (U() < rate("approx_age", ag))
    age = ((t // 1440).astype("datetime64[D]") - a["dob"][person]).astype(np.int64) // 365.25
    err = np.where(ag == CAD, rng.choice(CAD_AGE_ERR[0], n, p=CAD_AGE_ERR[1]),
                   rng.choice(EMS_AGE_ERR[0], n, p=EMS_AGE_ERR[1]))
    t_year = (t // 1440).astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    est_year = (t_year - np.maximum(age + err, 1)).astype(int)
    byear[est] = est_year[est].astype(str)
    # ---- sex ----
    sex = a["sex"][person].copy()
    xs = (sex == "X") & ~((ag == BH) | (ag == VR))
    sex[xs] = a["name_sex"][person][xs]
    sex[U() < rate("sex_unknown", ag)] = "U"
    sex[crisis] = ""
    # ---- phone ----
    mob = mobile_at(pop, person, t)
    stale = U() < rate("phone_stale", ag)
    mob_old = mobile_at(pop, person, t - rng.integers(365, 4 * 365, n) * 1440)
    mob = np.where(stale & (mob_old >= 0), mob_old, mob)
    land = a["landline"][person]
    pref_land = np.where(a["kind"][person] == 4, 0.6, rate("landline_pref", ag))
    own = np.where((land >= 0) & ((mob < 0) | (U() < pref_land)), land, mob)
    src = _pick(U(), ag, ("phone_own", "phone_caller1", "phone_caller2", "phone_bystander", "phone_caregiver"))
    n_by = int((src == 3).sum())
    phone = np.select([src == 0, src == 1, src == 2, src == 3, src == 4],
                      [own, a["caller1"][person], a["caller2"][person], 0, a["caregiver"][person]], -1)
    phone[src == 3] = spare_phones[:n_by]
    phone[crisis & (phone < 0)] = a["caller1"][person][crisis & (phone < 0)]
    for i in np.flatnonzero((phone >= 0) & (U() < rate("phone_typo", ag))):
        phone[i] = _digit_typo(int(phone[i]), pyrng)
    fmt = np.zeros(n, dtype=np.int8)
    uf = U()
    for k, opts in enumerate(PHONE_FORMATS):
        m = ag == k
        acc = 0.0
        for f, w in opts:
            fmt[m & (uf >= acc) & (uf < acc + w)] = f
            acc += w
    phone_s = np.array(["" if p < 0 else format_phone(int(p), int(f)) for p, f in zip(phone, fmt)], dtype=object)
    # ---- email, ssn ----
    email = np.where(U() < rate("email", ag), a["email"][person], "").astype(object)
    ssn = np.where(U() < rate("ssn_last4", ag), a["ssn4"][person], "").astype(object)
    for i in np.flatnonzero((ssn != "") & (U() < rate("ssn_typo", ag))):
        s = list(ssn[i])
        j = pyrng.randrange(4)
        s[j] = str((int(s[j]) + pyrng.randrange(1, 10)) % 10)
        ssn[i] = "".join(s)
    # ---- address ----
    home, kind = address_at(pop, person, t)
    shelter = a["usual_shelter"][person]
    home = np.where((ag == BH) & (kind == ADDR_STREET) & (shelter >= 0), shelter, home)
    old, _ = address_at(pop, person, t - rng.integers(365, 3 * 365, n) * 1440)
    n_book = len(pop.places.book()[0])
    asrc = _pick(U(), ag, ("addr_home", "addr_stale", "addr_loc1", "addr_loc2", "addr_hotspot", "addr_random"))
    addr = np.select(
        [asrc == 0, asrc == 1, asrc == 2, asrc == 3, asrc == 4, asrc == 5],
        [home, old, a["loc1"][person], a["loc2"][person],
         pop.hotspots[rng.integers(0, len(pop.hotspots), n)], rng.integers(0, n_book, n)], -1)
    # CAD: if neither the subject's own phone nor home address was taken, usually restore the address
    no_anchor = (ag == CAD) & (src != 0) & (asrc != 0) & (home >= 0) & (U() < rate("cad_anchor", ag))
    addr[no_anchor] = home[no_anchor]
    style = np.array([STYLES[g][1] if u else STYLES[g][0] for g, u in zip(ag, U() < rate("alt_style", ag))])
    street = pop.places.render_street(addr, style, U() < rate("unit_dropped", ag))
    C.apply_where(street, U() < rate("street_typo", ag), C.keyboard_typo, pyrng)
    comp = pop.places.components(addr)
    city = upper_or_title(comp["city"].astype(object), upper)
    postcode = comp["postcode"].astype(object)
    z4 = (addr >= 0) & (U() < rate("zip4", ag))
    postcode[z4] = np.array([f"{z}-{(int(x) * 7919) % 10000:04d}" for z, x in zip(postcode[z4], addr[z4])], dtype=object)
    state = np.where(addr >= 0, STATE, "").astype(object)
    return {
        "given_name": given, "middle_name": middle, "family_name": family, "name_suffix": suffix,
        "aliases": aliases, "dob": dob_s, "birth_year": byear, "sex": sex, "phone": phone_s, "email": email,
        "street": street, "city": city, "state": state, "postcode": postcode, "ssn_last4": ssn,
        "_n_spare_used": np.array([n_by]),
    }
