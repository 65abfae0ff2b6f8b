"""911 incidents as a CAD call-taker captures them (``incidents.csv``).

Each incident happens in the six months *after* the record window, so the
service has to resolve a new call against history.  The subject is partial and
noisy: names as heard, an age guess instead of a DOB, the caller's phone, the
scene address.  10 % of subjects have no record at all (strangers from the
latent population) and must not be matched.  Rates are in ``RATES`` /
``CALL_MIX`` and documented in evaluation/SYNTH.md ("Incidents"); the file
format is in evaluation/DATA.md.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.synth import corrupt as C
from evaluation.synth.clock import format_recorded_at
from evaluation.synth.places import (
    STYLE_TITLE_ABBR, STYLE_TITLE_FULL, STYLE_TITLE_HASH, STYLE_UPPER_ABBR, STYLE_UPPER_FULL, unique_phones,
)
from evaluation.synth.population import (
    ADDR_SHELTER, ADDR_STREET, T_END, Population, address_at, family_at, mobile_at,
)
from evaluation.synth.sources import CAD_AGE_ERR, format_phone, upper_or_title
from scoring.item import CallType

COLUMNS = (
    "incident_id", "call_type", "received_at", "location_street", "location_city", "location_postcode",
    "callback_phone", "subject_given_name", "subject_middle_name", "subject_family_name", "subject_name_suffix",
    "subject_dob", "subject_approx_age", "subject_sex", "subject_phone", "subject_email", "subject_street",
    "subject_city", "subject_postcode", "person_key",
)
CALL_TYPES = tuple(c.value for c in CallType)   # order matters: BASE_MIX and CALL_MIX follow it
# incidents: local (US Eastern) 2026-01-01T00:00-05:00 .. 2026-07-01T00:00-04:00, right after the record window
INCIDENT_START = T_END + 5 * 60
INCIDENT_END = T_END + 181 * 1440 + 4 * 60

RATES = {  # per incident (documented in SYNTH.md)
    "no_record": 0.10, "near_empty": 0.01,
    "given_present": 0.98, "preferred_used": 0.50, "given_nickname": 0.20, "given_phonetic": 0.08, "given_typo": 0.03,
    "family_present": 0.96, "maiden_used": 0.08, "compound_first_only": 0.75, "family_phonetic": 0.12,
    "family_typo": 0.04, "middle_full": 0.05, "middle_initial": 0.03, "suffix_recorded": 0.15,
    "dob_present": 0.15, "dob_swap": 0.02, "dob_year_off": 0.02, "approx_age": 0.90,
    "sex_present": 0.92, "sex_unknown": 0.03, "email": 0.01, "upper_case": 0.80,
    "landline_pref": 0.15, "caregiver_caller": 0.40, "caller1_of_family": 0.75,
    "subject_phone_if_known_caller": 0.90, "subject_phone_if_bystander": 0.10,
    "unit_dropped": 0.20, "street_typo": 0.01,
}
# call type -> (P(at the subject's home), P(caller = subject), P(caller = family/caregiver); rest bystander)
CALL_MIX = {
    "disturbance": (0.35, 0.10, 0.20), "welfare_check": (0.70, 0.05, 0.55), "overdose": (0.45, 0.10, 0.40),
    "suicidal_person": (0.60, 0.40, 0.45), "mental_health_crisis": (0.60, 0.35, 0.45), "trespass": (0.05, 0.03, 0.07),
    "domestic": (0.85, 0.45, 0.35), "medical": (0.65, 0.35, 0.40), "missing_person": (0.50, 0.0, 0.85),
    "other": (0.40, 0.25, 0.25),
}
BASE_MIX = np.array([0.18, 0.14, 0.06, 0.05, 0.07, 0.06, 0.14, 0.16, 0.04, 0.10])
# multipliers on BASE_MIX by latent attribute (order of CALL_TYPES)
MULT = {
    "bh": (1.0, 1.5, 1.5, 2.5, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    "homeless": (1.5, 1.5, 2.0, 1.0, 1.0, 4.0, 0.3, 1.0, 1.0, 1.0),
    "registry": (1.0, 1.5, 1.0, 1.0, 1.5, 1.0, 0.7, 1.0, 3.0, 1.0),
    "group_home": (1.3, 1.0, 1.0, 1.0, 1.5, 1.0, 0.3, 1.0, 1.5, 1.0),
    "high_util": (1.3, 1.0, 1.2, 1.0, 1.0, 1.5, 1.0, 1.0, 1.0, 1.0),
    "age_65": (0.7, 2.0, 0.5, 0.7, 0.7, 0.5, 0.5, 2.0, 1.5, 1.0),
    "age_18": (1.0, 1.0, 0.7, 1.2, 1.0, 0.5, 0.7, 0.8, 3.0, 1.0),
}
# street style (weights) of the CAD that captured the incident; see places.render_street
STYLE_MIX = ((STYLE_UPPER_ABBR, 0.60), (STYLE_UPPER_FULL, 0.10), (STYLE_TITLE_ABBR, 0.15),
             (STYLE_TITLE_HASH, 0.10), (STYLE_TITLE_FULL, 0.05))
PHONE_MIX = ((2, 0.55), (1, 0.20), (0, 0.15), (4, 0.05), (3, 0.05))  # digits, dashes, parens, +1, dots
SELF, FAMILY, BYSTANDER = 0, 1, 2


def default_n_incidents(persons: int) -> int:
    """Enough incidents for >= 1,000 queries at every benchmarked county size."""
    return max(1000, int(persons) // 8)


def _choose(u: np.ndarray, options: tuple) -> np.ndarray:
    """Map uniforms to the values of ``((value, weight), ...)``."""
    vals = np.array([v for v, _ in options])
    cum = np.cumsum([w for _, w in options])
    return vals[np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(vals) - 1)]


def pick_subjects(pop: Population, rng: np.random.Generator, n: int) -> np.ndarray:
    """Person rows of the subjects: ``RATES['no_record']`` strangers (uniformly),
    the rest from persons with records weighted by their record count, so
    frequent callers recur across incidents."""
    a = pop.a
    strangers = np.flatnonzero(~a["has_records"])
    known = np.flatnonzero(a["has_records"])
    n_str = int(round(RATES["no_record"] * n)) if len(strangers) else 0
    w = a["n_rec"][known].astype(float)
    out = np.concatenate([strangers[rng.integers(0, max(len(strangers), 1), n_str)],
                          rng.choice(known, size=n - n_str, p=w / w.sum())])
    return out[rng.permutation(len(out))]


def call_types(pop: Population, rng: np.random.Generator, person: np.ndarray, age: np.ndarray,
               homeless: np.ndarray) -> np.ndarray:
    """Call type index per incident: ``BASE_MIX`` times the multipliers of the
    subject's latent attributes (BH client, homeless, registry, group home, high
    utiliser, age), so behavioural-health clients get more crisis calls."""
    a = pop.a
    w = np.tile(BASE_MIX, (len(person), 1))
    flags = {"bh": a["bh"][person], "homeless": homeless, "registry": a["reg"][person],
             "group_home": a["kind"][person] == 4, "high_util": a["util"][person] == 2,
             "age_65": age >= 65, "age_18": age < 18}
    for k, f in flags.items():
        w[f] *= np.asarray(MULT[k])
    cum = np.cumsum(w / w.sum(1, keepdims=True), axis=1)
    return (rng.random(len(person))[:, None] > cum).sum(1).clip(0, len(CALL_TYPES) - 1)


def locations(pop: Population, rng: np.random.Generator, person: np.ndarray, home: np.ndarray,
              homeless: np.ndarray, ctype: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(address id of the scene, at-home flag).  At home with the call type's rate
    when the subject has a current address (home, group home or shelter); else
    homeless persons: their usual shelter 35 %, their hotspot 30 %, any hotspot 10 %,
    anywhere 25 %; others: frequent location 1 / 2 40 / 20 %, hotspot 10 %, anywhere 30 %."""
    a = pop.a
    n = len(person)
    p_home = np.array([CALL_MIX[c][0] for c in CALL_TYPES])[ctype]
    at_home = (home >= 0) & (rng.random(n) < p_home)
    u = rng.random(n)
    hot = pop.hotspots[rng.integers(0, len(pop.hotspots), n)]
    anywhere = rng.integers(0, len(pop.places.book()[0]), n)
    shelter = np.where(a["usual_shelter"][person] >= 0, a["usual_shelter"][person], hot)
    away_homeless = np.select([u < 0.35, u < 0.65, u < 0.75], [shelter, a["loc1"][person], hot], anywhere)
    away_housed = np.select([u < 0.40, u < 0.60, u < 0.70], [a["loc1"][person], a["loc2"][person], hot], anywhere)
    loc = np.where(at_home, home, np.where(homeless, away_homeless, away_housed))
    return loc, at_home


def phones(pop: Population, rng: np.random.Generator, person: np.ndarray, t: np.ndarray, ctype: np.ndarray,
           near_empty: np.ndarray, exclude_phones: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(callback number, subject phone or -1, caller kind).  The caller is the
    subject (own landline or current mobile), family/caregiver (the person's
    ``caller1``/``caller2`` or caregiver numbers, which records also carry) or a
    bystander (a fresh number: not in the population, not in ``exclude_phones``), by call type."""
    a = pop.a
    used = [a["caller1"], a["caller2"], a["caregiver"], a["landline"], pop.phone_hist["phone"]]
    exclude = np.sort(np.concatenate(used + ([exclude_phones] if exclude_phones is not None else [])))
    n = len(person)
    mix = np.array([CALL_MIX[c][1:] for c in CALL_TYPES])[ctype]
    u = rng.random(n)
    kind = np.where(u < mix[:, 0], SELF, np.where(u < mix.sum(1), FAMILY, BYSTANDER))
    kind[near_empty] = BYSTANDER
    mob, land = mobile_at(pop, person, t), a["landline"][person]
    own = np.where((land >= 0) & ((mob < 0) | (rng.random(n) < RATES["landline_pref"])), land, mob)
    kind[(kind == SELF) & (own < 0)] = FAMILY
    care = a["caregiver"][person]
    fam = np.where((care >= 0) & (rng.random(n) < RATES["caregiver_caller"]), care,
                   np.where(rng.random(n) < RATES["caller1_of_family"], a["caller1"][person], a["caller2"][person]))
    n_by = int((kind == BYSTANDER).sum())
    pool = np.empty(0, dtype=np.int64)
    while len(pool) < n_by:  # ``exclude`` is sorted; drop candidates found in it
        cand = unique_phones(rng, int(n_by * 1.2) + 100)
        pos = np.minimum(np.searchsorted(exclude, cand), max(len(exclude) - 1, 0))
        pool = cand[exclude[pos] != cand] if len(exclude) else cand
    callback = np.select([kind == SELF, kind == FAMILY], [own, fam], 0)
    callback[kind == BYSTANDER] = rng.permutation(pool)[:n_by]
    share = np.where(kind == BYSTANDER, RATES["subject_phone_if_bystander"], RATES["subject_phone_if_known_caller"])
    subject = np.where(~near_empty & (rng.random(n) < share), callback, -1)
    return callback, subject, kind


def subject_names(pop: Population, rng: np.random.Generator, pyrng: random.Random, person: np.ndarray,
                  t: np.ndarray, blank: np.ndarray) -> tuple[np.ndarray, ...]:
    """(given, middle, family, suffix) as heard, upper case: preferred name or
    nickname sometimes, at most one misspelt part, compound surnames usually cut
    to the first surname, middle name and suffix rarely, parts often missing."""
    a = pop.a
    n = len(person)
    U = lambda: rng.random(n)  # noqa: E731 -- one fresh uniform vector per decision
    given = a["given"][person].copy()
    pref = a["preferred"][person]
    use_pref = (pref != "") & (U() < RATES["preferred_used"])
    given[use_pref] = pref[use_pref]
    C.nickname_where(given, ~use_pref & (U() < RATES["given_nickname"]), U(), pyrng)
    g_phon = U() < RATES["given_phonetic"]
    g_typo = ~g_phon & (U() < RATES["given_typo"])
    C.apply_where(given, g_phon, C.phonetic_variant, pyrng)
    C.apply_where(given, g_typo, C.keyboard_typo, pyrng)
    spelled = g_phon | g_typo
    family = family_at(pop, person, t).copy()
    maiden = (a["family_married"][person] != "") & (U() < RATES["maiden_used"])
    family[maiden] = a["family_birth"][person][maiden]
    cut = U() < RATES["compound_first_only"]
    family[cut] = C.first_surname(family[cut])
    f_phon = ~spelled & (U() < RATES["family_phonetic"])
    f_typo = ~spelled & ~f_phon & (U() < RATES["family_typo"])
    C.apply_where(family, f_phon, C.phonetic_variant, pyrng)
    C.apply_where(family, f_typo, C.keyboard_typo, pyrng)
    m0 = a["middle"][person]
    um = U()
    middle = np.where(um < RATES["middle_full"], m0, "").astype(object)
    ini = (um >= RATES["middle_full"]) & (um < RATES["middle_full"] + RATES["middle_initial"]) & (m0 != "")
    middle[ini] = np.array([m[0] for m in m0[ini]], dtype=object)
    suffix = np.where(U() < RATES["suffix_recorded"], a["suffix"][person], "").astype(object)
    given[blank | (U() >= RATES["given_present"])] = ""
    family[blank | (U() >= RATES["family_present"])] = ""
    middle[blank] = ""
    suffix[blank] = ""
    return given, middle, family, suffix


def approx_ages(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """A call-taker's age estimate: true age + an error from ``CAD_AGE_ERR`` (-3..+3 years),
    the distribution CAD records use, since the same call-takers capture both; at least 1."""
    err = rng.choice(CAD_AGE_ERR[0], len(age), p=CAD_AGE_ERR[1])
    return np.maximum(age + err, 1).astype(np.int64)


def make_incidents(pop: Population, keys: np.ndarray, seed: int, n: int,
                   exclude_phones: np.ndarray | None = None) -> pd.DataFrame:
    """``n`` incidents (columns ``COLUMNS``), ordered by ``received_at``.
    ``exclude_phones``: numbers used by records (bystanders must not reuse them)."""
    a = pop.a
    rng = np.random.default_rng([seed, 7])
    pyrng = random.Random(seed * 1_000_003 + 700_001)
    U = lambda: rng.random(n)  # noqa: E731
    person = pick_subjects(pop, rng, n)
    t = np.sort(rng.integers(INCIDENT_START, INCIDENT_END, n))
    day = (t // 1440).astype("datetime64[D]")
    age = ((day - a["dob"][person]).astype(np.int64) / 365.25).astype(np.int64)
    home, hkind = address_at(pop, person, t)  # current home as of the end of the history
    homeless = (hkind == ADDR_SHELTER) | (hkind == ADDR_STREET)
    ctype = call_types(pop, rng, person, age, homeless)
    blank = U() < RATES["near_empty"]
    loc, at_home = locations(pop, rng, person, home, homeless, ctype)
    callback, subj_phone, _ = phones(pop, rng, person, t, ctype, blank, exclude_phones)
    given, middle, family, suffix = subject_names(pop, rng, pyrng, person, t, blank)
    upper = U() < RATES["upper_case"]
    given, middle, family = (upper_or_title(x, upper) for x in (given, middle, family))
    suffix = np.array([s if u else {"JR": "Jr", "SR": "Sr"}.get(s, s) for s, u in zip(suffix, upper)], dtype=object)
    # date of birth (ID shown / subject known) and the age the call-taker entered
    has_dob = ~blank & (U() < RATES["dob_present"])
    dob = C.swap_day_month(a["dob"][person], has_dob & (U() < RATES["dob_swap"]))
    dob = C.shift_year(dob, has_dob & (U() < RATES["dob_year_off"]), rng.choice([-1, 1], n))
    dob_age = ((day - dob).astype(np.int64) / 365.25).astype(np.int64)
    est = approx_ages(rng, age)
    approx = np.where(has_dob, dob_age, est)
    has_age = has_dob | blank | (U() < RATES["approx_age"])
    sex = np.where(a["sex"][person] == "X", a["name_sex"][person], a["sex"][person]).astype(object)
    sex[U() < RATES["sex_unknown"]] = "U"
    sex[~blank & (U() >= RATES["sex_present"])] = ""
    email = np.where(~blank & (U() < RATES["email"]), a["email"][person], "").astype(object)
    # scene address in this CAD's style; the subject's address only when the scene is their home
    style = _choose(U(), STYLE_MIX)
    street = pop.places.render_street(loc, style, U() < RATES["unit_dropped"])
    C.apply_where(street, U() < RATES["street_typo"], C.keyboard_typo, pyrng)
    comp = pop.places.components(loc)
    up_style = np.isin(style, (STYLE_UPPER_ABBR, STYLE_UPPER_FULL))
    city = np.array([c.upper() if u else c for c, u in zip(comp["city"], up_style)], dtype=object)
    fmt = _choose(U(), PHONE_MIX)
    fmt_phone = lambda x: np.array(["" if p < 0 else format_phone(int(p), int(f))  # noqa: E731
                                    for p, f in zip(x, fmt)], dtype=object)
    mine = at_home & ~blank
    ids = np.array([f"INC-{x:08d}" for x in 10_000 + np.cumsum(rng.integers(1, 4, n))], dtype=object)
    df = pd.DataFrame({
        "incident_id": ids, "call_type": np.array(CALL_TYPES, dtype=object)[ctype],
        "received_at": format_recorded_at(t), "location_street": street, "location_city": city,
        "location_postcode": comp["postcode"].astype(object), "callback_phone": fmt_phone(callback),
        "subject_given_name": given, "subject_middle_name": middle, "subject_family_name": family,
        "subject_name_suffix": suffix, "subject_dob": np.where(has_dob, np.datetime_as_string(dob), "").astype(object),
        "subject_approx_age": np.where(has_age, approx.astype(str), "").astype(object), "subject_sex": sex,
        "subject_phone": fmt_phone(subj_phone), "subject_email": email,
        **{f"subject_{k}": np.where(mine, v, "").astype(object)
           for k, v in (("street", street), ("city", city), ("postcode", comp["postcode"]))},
        "person_key": np.where(a["has_records"][person], keys[person], "").astype(object),
    }, columns=list(COLUMNS))
    return df


# ---- resolver queries ------------------------------------------------------------

QUERY_FIELDS = ("given_name", "middle_name", "family_name", "name_suffix", "dob", "approx_age", "sex", "phone",
                "email", "street", "city", "postcode")


def incident_queries(incidents: pd.DataFrame) -> list[dict]:
    """One resolver query per incident row: the ``subject_*`` fields without
    their prefix plus ``received_at``; empty values omitted, ``approx_age`` an int."""
    cols = [f"subject_{f}" for f in QUERY_FIELDS if f"subject_{f}" in incidents.columns]
    if "received_at" in incidents.columns:
        cols.append("received_at")
    out = []
    for row in incidents[cols].itertuples(index=False, name=None):
        q = {}
        for col, v in zip(cols, row):
            if not (pd.isna(v) or (isinstance(v, str) and not v.strip())):  # None, NaN, NA, "" -> omitted
                key = col.removeprefix("subject_")
                q[key] = int(float(v)) if key == "approx_age" else (v if isinstance(v, str) else str(v))
        out.append(q)
    return out


def write_queries_jsonl(incidents: pd.DataFrame, path: Path | str) -> Path:
    """Write ``incident_queries(incidents)`` as JSON Lines (one object per row, in order), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for q in incident_queries(incidents):
                f.write(json.dumps(q) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
