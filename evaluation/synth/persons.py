"""Drawing the latent persons: households (families, twins, Jr/Sr, group homes), sex, age, names and their
changes, utilisation, homelessness and contact details; then their address and phone histories
(population_history.py) make the `Population`.

Everything is vectorised with one ``numpy.random.Generator``. The `Population` and the lookups on it
(address, phone, family name at a time) are in population.py; the rates are ``RATES`` here (SYNTH.md).
"""
from __future__ import annotations

import numpy as np

from evaluation.synth import names as N
from evaluation.synth.places import build_places
from evaluation.synth.population import ALWAYS, NEVER, T_END, T_START, Population
from evaluation.synth.population_history import build_histories

REF = np.datetime64("2022-01-01", "D")   # ages are drawn relative to this date

RACE_SHARE = {"white": 0.56, "black": 0.20, "hispanic": 0.14, "api": 0.06, "native": 0.01, "multiple": 0.03}

RATES = {  # person-level rates (documented in SYNTH.md)
    "stranger_share": 0.10, "twin_persons": 0.006, "jr_sr_persons": 0.006, "group_home_persons": 0.005,
    "family_persons": 0.03, "sex_x": 0.004, "has_middle": 0.93, "compound_hispanic": 0.35,
    "compound_hyphen": 0.30, "married_before": 0.18, "married_during": 0.10, "married_hyphenated": 0.10,
    "other_suffix_male": 0.008, "preferred_name_bh": 0.35, "has_email": 0.65,
}


def _sample_names(rng, pool_of, sex: np.ndarray, race: np.ndarray) -> np.ndarray:
    out = np.empty(len(sex), dtype=object)
    u = rng.random(len(sex))
    for s in np.unique(sex):
        for r in N.RACES:
            m = (sex == s) & (race == r)
            if m.any():
                out[m] = pool_of(s).sample(r, u[m])
    return out


def _ages_to_dob(rng, age_years: np.ndarray) -> np.ndarray:
    days = (age_years * 365.25).astype(np.int64) + rng.integers(0, 365, len(age_years))
    return REF - days.astype("timedelta64[D]")


def _draw_ages(rng, n: int) -> np.ndarray:
    seg = rng.choice(4, size=n, p=[0.07, 0.40, 0.33, 0.20])
    lo = np.array([12, 18, 35, 55])[seg]
    hi = np.array([18, 35, 55, 88])[seg]
    return lo + rng.random(n) * (hi - lo)


def build_population(n_with_records: int, seed: int) -> Population:
    if n_with_records < 1:
        raise ValueError("persons must be >= 1")
    rng = np.random.default_rng([seed, 1])
    places = build_places(seed)
    n_str = int(round(RATES["stranger_share"] * n_with_records))
    nt = n_with_records + n_str
    # ---- structures (in "structure order"; shuffled at the end) ----
    n_tw = int(round(RATES["twin_persons"] * nt / 2))
    n_js = int(round(RATES["jr_sr_persons"] * nt / 2))
    gh_sizes = [int(x) for x in rng.integers(4, 11, int(round(RATES["group_home_persons"] * nt / 7)))]
    fam_sizes = [int(x) for x in rng.choice([2, 3, 4], int(round(RATES["family_persons"] * nt / 2.7)), p=[0.5, 0.3, 0.2])]
    n_struct = 2 * n_tw + 2 * n_js + sum(gh_sizes) + sum(fam_sizes)
    n_single = nt - n_struct
    if n_single < n_str + 1:
        raise ValueError("county too small")
    kind = np.concatenate([np.full(2 * n_tw, 2), np.full(2 * n_js, 3), np.full(sum(gh_sizes), 4),
                           np.full(sum(fam_sizes), 1), np.zeros(n_single, int)]).astype(np.int8)
    sizes = [2] * n_tw + [2] * n_js + gh_sizes + fam_sizes + [1] * n_single
    hh = np.repeat(np.arange(len(sizes)), sizes)
    pos = np.arange(nt) - np.repeat(np.cumsum(sizes) - np.array(sizes), sizes)  # rank within household
    hh_first = np.cumsum(sizes) - np.array(sizes)
    head = hh_first[hh]                                   # structural index of household head
    partner = np.where((kind <= 3) & (pos == 1), head, -1)  # twin/jr-sr partner, family partner
    # ---- race, sex ----
    races = np.array(N.RACES, dtype=object)
    hh_race = rng.choice(len(races), size=len(sizes), p=[RACE_SHARE[r] for r in N.RACES])
    race_i = hh_race[hh]
    own = (kind == 4) | ((kind == 1) & (pos > 0) & (rng.random(nt) < 0.10))
    race_i = np.where(own, rng.choice(len(races), size=nt, p=[RACE_SHARE[r] for r in N.RACES]), race_i)
    race = races[race_i]
    sex = np.where(rng.random(nt) < 0.55, "M", "F").astype(object)
    sex[kind == 3] = "M"
    fam_partner = (kind == 1) & (pos == 1)
    flip = rng.random(nt) < 0.9
    sex[fam_partner & flip] = np.where(sex[head[fam_partner & flip]] == "M", "F", "M")
    name_sex = sex.copy()
    is_x = (kind == 0) & (rng.random(nt) < RATES["sex_x"])
    sex[is_x] = "X"
    # ---- dates of birth ----
    age = _draw_ages(rng, nt)
    age[kind == 2] = np.maximum(age[kind == 2], 14)
    js_son = (kind == 3) & (pos == 0)
    age[js_son] = 14 + rng.random(js_son.sum()) * 36
    age[kind == 4] = 18 + rng.random((kind == 4).sum()) * 52
    fam_head = (kind == 1) & (pos == 0)
    age[fam_head] = 40 + rng.random(fam_head.sum()) * 35
    dob = _ages_to_dob(rng, age)
    twin2 = (kind == 2) & (pos == 1)
    dob[twin2] = dob[head[twin2]]
    js_father = (kind == 3) & (pos == 1)
    dob[js_father] = dob[head[js_father]] - (rng.integers(20 * 365, 40 * 365, js_father.sum())).astype("timedelta64[D]")
    dob[fam_partner] = dob[head[fam_partner]] + rng.integers(-6 * 365, 6 * 365, fam_partner.sum()).astype("timedelta64[D]")
    kid = (kind == 1) & (pos >= 2)
    kid_dob = dob[head[kid]] + rng.integers(20 * 365, 38 * 365, kid.sum()).astype("timedelta64[D]")
    latest = REF - np.timedelta64(int(12 * 365.25), "D")
    dob[kid] = np.minimum(kid_dob, latest - rng.integers(0, 3 * 365, kid.sum()).astype("timedelta64[D]"))
    # ---- given / middle names ----
    given = _sample_names(rng, N.first_name_pool, name_sex, race)
    for _ in range(20):  # twins get different given names
        same = twin2 & (given == given[head])
        if not same.any():
            break
        given[same] = _sample_names(rng, N.first_name_pool, name_sex[same], race[same])
    middle = _sample_names(rng, N.first_name_pool, name_sex, race)
    middle[middle == given] = _sample_names(rng, N.first_name_pool, name_sex[middle == given], race[middle == given])
    middle[rng.random(nt) >= RATES["has_middle"]] = ""
    given[js_father] = given[head[js_father]]
    middle[js_father] = middle[head[js_father]]
    # ---- surnames (household-level, compound hispanic) ----
    sp = N.surname_pool()
    fam = _sample_names(rng, lambda s: sp, np.full(nt, "A", dtype=object), race)
    hisp = race == "hispanic"
    comp = hisp & (rng.random(nt) < RATES["compound_hispanic"])
    second = sp.sample("hispanic", rng.random(nt))
    sep = np.where(rng.random(nt) < RATES["compound_hyphen"], "-", " ")
    fam = np.where(comp & (second != fam), fam + sep + second, fam)
    shares = (kind == 2) | (kind == 3) | ((kind == 1) & ((pos != 1) | (rng.random(nt) < 0.7)))
    fam = np.where(shares, fam[head], fam)
    compound = np.array([(" " in f) or ("-" in f) for f in fam])
    # ---- marriage name changes ----
    family_birth = fam.copy()
    family_married = np.full(nt, "", dtype=object)
    marriage_at = np.full(nt, NEVER, dtype=np.int64)
    age_ref = (REF - dob).astype(int) / 365.25
    elig = (sex == "F") & ~compound & (kind <= 1) & (age_ref >= 22) & (age_ref <= 60) & ~fam_partner
    u = rng.random(nt)
    before = elig & (u < RATES["married_before"])
    during = elig & (u >= RATES["married_before"]) & (u < RATES["married_before"] + RATES["married_during"])
    spouse = sp.sample("white", rng.random(nt))
    spouse = np.where(rng.random(nt) < 0.85, _sample_names(rng, lambda s: sp, np.full(nt, "A", dtype=object), race), spouse)
    hyph = rng.random(nt) < RATES["married_hyphenated"]
    married = np.where(hyph, family_birth + "-" + spouse, spouse)
    chg = (before | during) & (spouse != family_birth)
    family_married[chg] = married[chg]
    marriage_at[chg & before] = ALWAYS
    marriage_at[chg & during] = rng.integers(T_START, T_END, (chg & during).sum())
    # family partners who took the head's surname: birth surname becomes the maiden name
    took = fam_partner & shares & (sex == "F")
    family_married[took] = fam[took]
    family_birth[took] = _sample_names(rng, lambda s: sp, np.full(took.sum(), "A", dtype=object), race[took])
    marriage_at[took] = ALWAYS
    # ---- suffixes ----
    suffix = np.full(nt, "", dtype=object)
    suffix[js_son] = "JR"
    suffix[js_father] = "SR"
    other = (kind == 0) & (sex == "M") & (rng.random(nt) < RATES["other_suffix_male"])
    suffix[other] = rng.choice(np.array(["JR", "II", "III"], dtype=object), other.sum(), p=[0.5, 0.3, 0.2])
    # ---- who has records, utilisation, flags ----
    single_idx = np.flatnonzero(kind == 0)
    stranger = np.zeros(nt, bool)
    stranger[rng.choice(single_idx, n_str, replace=False)] = True
    has_records = ~stranger
    util = rng.choice(3, size=nt, p=[0.85, 0.125, 0.025])
    util[kind == 4] = rng.choice(3, size=(kind == 4).sum(), p=[0.75, 0.20, 0.05])
    pair_kind = (kind == 2) | (kind == 3)  # twins, Jr/Sr: mostly low utilisers
    util[pair_kind] = rng.choice(3, size=pair_kind.sum(), p=[0.95, 0.05, 0.0])
    n_rec = np.where(util == 0, rng.choice([1, 2, 3], size=nt, p=[0.61, 0.26, 0.13]),
                     np.where(util == 1, rng.integers(4, 10, nt), 10 + (rng.beta(1.0, 2.2, nt) * 31).astype(int)))
    n_rec[stranger] = 0
    homeless = (kind == 0) & has_records & (rng.random(nt) < np.array([0.03, 0.10, 0.30])[util])
    homeless_from = np.full(nt, NEVER, dtype=np.int64)
    homeless_from[homeless] = np.where(rng.random(homeless.sum()) < 0.6, ALWAYS,
                                       rng.integers(T_START, T_END - 60 * 24 * 365, homeless.sum()))
    bh = rng.random(nt) < np.array([0.25, 0.45, 0.70])[util] + 0.3 * homeless + 0.4 * (kind == 4) + 0.5 * is_x
    reg = rng.random(nt) < np.array([0.10, 0.18, 0.30])[util] + 0.75 * (kind == 4)
    # preferred names (BH aliases)
    preferred = np.full(nt, "", dtype=object)
    pref_u = rng.random(nt)
    for i in np.flatnonzero(bh & (rng.random(nt) < RATES["preferred_name_bh"])):
        nick = N.pick_nickname(given[i], pref_u[i])
        if nick:
            preferred[i] = nick
    other_sex = np.where(name_sex == "M", "F", "M").astype(object)
    alt = _sample_names(rng, N.first_name_pool, other_sex, race)
    preferred[is_x] = alt[is_x]
    # ---- contact details ----
    email = _emails(rng, given, family_birth, family_married, nt)
    ssn4 = np.array([f"{x:04d}" for x in rng.integers(1, 10000, nt)], dtype=object)
    keep = ("kind hh pos head partner race sex name_sex is_x dob given middle family_birth family_married "
            "marriage_at compound suffix has_records util n_rec homeless homeless_from bh reg preferred "
            "email ssn4").split()
    scope = locals()
    return build_histories(rng, places, {k: scope[k] for k in keep})


def _emails(rng, given, fb, fm, nt) -> np.ndarray:
    fam = np.where(fm != "", fm, fb)
    doms = np.array(["example.com", "example.net", "example.org"], dtype=object)
    pat = rng.integers(0, 4, nt)
    num = rng.integers(1, 99, nt)
    dom = doms[rng.integers(0, 3, nt)]
    out = np.empty(nt, dtype=object)
    for i in range(nt):
        g = given[i].lower().replace("'", "")
        f = fam[i].lower().replace(" ", "").replace("-", "").replace("'", "")
        p = pat[i]
        local = (f"{g}.{f}" if p == 0 else f"{g}{f}{num[i]}" if p == 1 else f"{g[0]}{f}{num[i]}" if p == 2
                 else f"{f}.{g}{num[i]}")
        out[i] = f"{local}@{dom[i]}"
    out[rng.random(nt) >= RATES["has_email"]] = ""
    return out
