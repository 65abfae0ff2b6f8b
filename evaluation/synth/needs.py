"""Latent needs: what responders *should* know about a person, before any agency
writes it down.

``latent_traits`` derives per-person traits from the population (registry
condition, behavioural-health sub-traits, medical conditions, police history,
housing) and ``draw_needs`` turns them into a small set of (person, need) pairs
from the ``NEEDS_SPEC`` catalogue.  context.py then records each need at the agencies
of the person that plausibly hold it (items, legal categories, dates), so the
same need can appear at two agencies (corroboration) or nowhere (the person has
no record at an agency that would know).  Every rate is in ``TRAIT_RATES`` /
``NEEDS_SPEC`` (needs_catalogue.py) and documented in evaluation/SYNTH.md §7.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.synth.bias import CAUTION_FLAG_EXTRA
from evaluation.synth.needs_catalogue import NEEDS_SPEC
from evaluation.synth.population import ADDR_SHELTER, ADDR_STREET, T_END, Population, address_at
from evaluation.synth.sources import BH, CAD, CRISIS, RMS, VR

CATEGORIES = ("communication_need", "sensory_need", "trauma_trigger", "effective_approach", "ineffective_approach",
              "medical", "cognitive_developmental", "safety_flag", "service_connection", "legal_status",
              "housing_context", "recent_event")
CAT = {c: i for i, c in enumerate(CATEGORIES)}
D_END = T_END // 1440                     # 2026-01-01 as days since 1970: first day of the incident window

# Registry condition (the latent reason a person or caregiver enrolled; never written as a label).
# Probabilities by age band at the end of the window: < 18, 18-64, >= 65.
REG_CONDITIONS = ("autism", "intellectual", "deaf", "blind", "mobility", "brain_injury", "dementia")
REG_MIX = np.array([
    [0.55, 0.25, 0.12, 0.03, 0.05, 0.00, 0.00],
    [0.30, 0.25, 0.15, 0.06, 0.12, 0.10, 0.02],
    [0.00, 0.05, 0.20, 0.10, 0.15, 0.00, 0.50],
])
TRAIT_RATES = {  # per person (documented in SYNTH.md §7); tuples are by utilisation low / medium / high
    "nonverbal_of_autism_or_id": 0.25, "interpreter": 0.03, "bh_trauma": 0.55, "bh_sud": 0.30,
    "bh_sud_homeless_extra": 0.20,
    "diabetes": 0.03, "diabetes_50_extra": 0.07, "seizures": 0.015, "seizures_id_tbi_extra": 0.10,
    "oxygen_60": 0.04, "cardiac_60": 0.04, "allergy": 0.02,
    "probation": (0.06, 0.12, 0.20), "protected_party": 0.03, "restrained_party": 0.03,
    "warrant": (0.03, 0.06, 0.10), "knife_history": (0.015, 0.04, 0.08), "firearm_history": (0.01, 0.02, 0.03),
    "assault_officer": (0.005, 0.015, 0.03), "dv_history": (0.03, 0.06, 0.08),
    "recent_safety_event": (0.02, 0.05, 0.10), "dog_at_home": 0.03, "serious_threat": 0.01,
    "caution_flag": 0.02, "caution_flag_bh_extra": 0.03, "caution_flag_homeless_extra": 0.03,
    "caution_flag_high_util_extra": 0.02, "caution_premise": 0.015,
}
RECENT_KINDS = (("recent_knife", 0.30), ("recent_firearm", 0.15), ("recent_assault", 0.30), ("recent_dv", 0.25))

AGENCY_CODE = {"RMS": RMS, "CAD": CAD, "EPCR": 2, "EHR": BH, "CRISIS": CRISIS, "VR": VR}
MAX_HOLDERS = 4


@dataclass(frozen=True)
class Catalogue:
    """``NEEDS_SPEC`` as arrays indexed by need row."""
    code: np.ndarray         # object
    category: np.ndarray     # int index into CATEGORIES
    holders: np.ndarray      # (n_needs, MAX_HOLDERS) agency codes, -1 = none
    flags: dict              # flag -> bool array
    exp_lo: np.ndarray       # expiry override in days (-1 = category default, -2 = never)
    exp_hi: np.ndarray
    templates: np.ndarray    # flat object array of text variants
    t_start: np.ndarray      # first template of each need
    t_count: np.ndarray
    traits: tuple            # per need: ((trait, p), ...)


def catalogue() -> Catalogue:
    """Parse ``NEEDS_SPEC`` (validated: known categories, agencies and flags)."""
    n = len(NEEDS_SPEC)
    holders = np.full((n, MAX_HOLDERS), -1, dtype=np.int64)
    names = ("part2", "cji", "recent", "vague", "threat", "sdv", "noexp")
    flags = {f: np.zeros(n, bool) for f in names}
    exp_lo, exp_hi = np.full(n, -1), np.full(n, -1)
    templates, t_start, t_count, traits = [], [], [], []
    for i, (code, cat, tr, hold, fl, texts) in enumerate(NEEDS_SPEC):
        if cat not in CAT:
            raise ValueError(f"{code}: unknown category {cat}")
        for j, h in enumerate(hold.split()):
            holders[i, j] = AGENCY_CODE[h]
        for f in fl.split():
            if f.startswith("exp="):
                exp_lo[i], exp_hi[i] = (int(x) for x in f[4:].split("-"))
            elif f in flags:
                flags[f][i] = True
            else:
                raise ValueError(f"{code}: unknown flag {f}")
        if flags["noexp"][i]:
            exp_lo[i] = exp_hi[i] = -2
        traits.append(tuple((k, float(p)) for k, p in (x.split(":") for x in tr.split())))
        t_start.append(len(templates))
        t_count.append(len(texts))
        templates.extend(texts)
    return Catalogue(np.array([s[0] for s in NEEDS_SPEC], dtype=object),
                     np.array([CAT[s[1]] for s in NEEDS_SPEC]), holders, flags, exp_lo, exp_hi,
                     np.array(templates, dtype=object), np.array(t_start), np.array(t_count), tuple(traits))


def _by_util(rate, util: np.ndarray) -> np.ndarray:
    return np.asarray(rate, dtype=float)[util] if isinstance(rate, tuple) else np.full(len(util), float(rate))


def latent_traits(pop: Population, has_agency: np.ndarray, rng: np.random.Generator,
                  biased: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Boolean per-person traits.  Registry enrollees get one condition (by age band,
    ``REG_MIX``) plus ``nonverbal`` for some autistic / intellectually disabled persons;
    BH clients get trauma / substance-use sub-traits; medical traits depend on age;
    police traits exist only for persons with an RMS record (``recent_*`` and caution
    flags also with a CAD record) and rise with utilisation.  ``has_agency`` is the
    (persons x 6) "has a record at this agency" matrix.  ``biased`` (data bias, bias.py): persons
    whose caution-flag rate is raised by ``bias.CAUTION_FLAG_EXTRA`` -- no extra draws."""
    a, n = pop.a, pop.n
    U = lambda: rng.random(n)  # noqa: E731 -- one fresh uniform vector per decision
    R = TRAIT_RATES
    util, bh, reg, homeless = a["util"], a["bh"], a["reg"], a["homeless"]
    age = (D_END - a["dob"].astype("datetime64[D]").astype(np.int64)) / 365.25
    band = np.where(age < 18, 0, np.where(age < 65, 1, 2))
    cond = (U()[:, None] > np.cumsum(REG_MIX, 1)[band]).sum(1).clip(0, len(REG_CONDITIONS) - 1)
    t = {c: reg & (cond == k) for k, c in enumerate(REG_CONDITIONS)}
    t["nonverbal"] = (t["autism"] | t["intellectual"]) & (U() < R["nonverbal_of_autism_or_id"])
    t["registry"] = reg
    t["elderly"] = age >= 65
    t["interpreter"] = U() < R["interpreter"]
    t["sex_x"] = a["is_x"]
    t["preferred"] = (a["preferred"] != "") & ~a["is_x"]
    t["bh"] = bh
    t["bh_high"] = bh & (util == 2)
    t["trauma"] = bh & (U() < R["bh_trauma"])
    t["sud"] = bh & (U() < R["bh_sud"] + R["bh_sud_homeless_extra"] * homeless)
    _, kind_end = address_at(pop, np.arange(n), np.full(n, T_END - 1))
    t["homeless"] = homeless
    t["homeless_shelter"] = homeless & (kind_end == ADDR_SHELTER)
    t["homeless_street"] = homeless & (kind_end == ADDR_STREET)
    t["group_home"] = a["kind"] == 4
    t["diabetes"] = U() < R["diabetes"] + R["diabetes_50_extra"] * (age >= 50)
    t["seizures"] = U() < R["seizures"] + R["seizures_id_tbi_extra"] * (t["intellectual"] | t["brain_injury"])
    t["oxygen"] = (age >= 60) & (U() < R["oxygen_60"])
    t["cardiac"] = (age >= 60) & (U() < R["cardiac_60"])
    t["allergy"] = U() < R["allergy"]
    rms, cad = has_agency[:, RMS], has_agency[:, CAD]
    for k in ("probation", "protected_party", "restrained_party", "warrant", "knife_history", "firearm_history",
              "assault_officer", "dv_history"):
        t[k] = rms & (U() < _by_util(R[k], util))
    recent = (rms | cad) & (U() < _by_util(R["recent_safety_event"], util))
    cum = np.cumsum([p for _, p in RECENT_KINDS])
    which = np.searchsorted(cum, U() * cum[-1], side="right").clip(0, len(RECENT_KINDS) - 1)
    for k, (name, _) in enumerate(RECENT_KINDS):
        t[name] = recent & (which == k)
    t["dog_at_home"] = cad & (U() < R["dog_at_home"])
    t["serious_threat"] = bh & has_agency[:, BH] & (U() < R["serious_threat"])
    p_caution = (R["caution_flag"] + R["caution_flag_bh_extra"] * bh + R["caution_flag_homeless_extra"] * homeless
                 + R["caution_flag_high_util_extra"] * (util == 2))
    if biased is not None:
        p_caution = p_caution + CAUTION_FLAG_EXTRA * biased
    t["caution_flag"] = (rms | cad) & (U() < p_caution)
    t["caution_premise"] = cad & (U() < R["caution_premise"])
    t["crisis_caller"] = has_agency[:, CRISIS]
    return t


def draw_needs(cat: Catalogue, traits: dict[str, np.ndarray],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(person row, need row) pairs, sorted by person then need: need k is present
    with probability 1 - prod(1 - p) over the catalogue's (trait, p) of k that the
    person has.  Persons without records may have needs; nothing records them."""
    n = len(next(iter(traits.values())))
    persons, needs = [], []
    for k, tr in enumerate(cat.traits):
        miss = np.ones(n)
        for name, p in tr:
            miss *= np.where(traits[name], 1.0 - p, 1.0)
        hit = np.flatnonzero(rng.random(n) < 1.0 - miss)
        persons.append(hit)
        needs.append(np.full(len(hit), k))
    person, need = np.concatenate(persons), np.concatenate(needs)
    order = np.lexsort((need, person))
    return person[order], need[order]
