"""Context items and consents (``context_items.csv``, ``consents.csv``).

Each latent need (needs.py) is written down by the agencies of the person that
would plausibly know it: the first holder agency (catalogue preference order)
at which the person has a record always records it, every other holder agency
the person has records at with ``RATES['corroborate']`` — so the same need can
appear at two agencies.  An item hangs on one record of that agency and is
observed on or after that record's date.  Agencies verify and review items at
different rates, so some items are stale; legal, event and housing items expire, and a
clinician's serious-threat disclosure (observed in the last ``RATES['threat_days']`` before the
incident window) expires 7-14 days after its verification, inside the policy's 14-day cap.
Part 2 items (and some behavioural-health PHI) are covered by consents.
Formats: evaluation/DATA.md; rates: evaluation/SYNTH.md §7.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluation.synth.bias import SAFETY_MAINTAINED_FACTOR, SAFETY_VERIFIED_FACTOR
from evaluation.synth.needs import CAT, CATEGORIES, D_END, Catalogue
from evaluation.synth.needs_catalogue import SPECIFIC_SAFETY
from evaluation.synth.sources import AGENCIES, BH, CAD, CRISIS, EMS, RMS, VR

ITEM_COLUMNS = ("item_id", "record_id", "category", "code", "text", "legal_category", "security_labels", "consent_id",
                "disclosure_basis", "source_type", "observed_at", "last_verified_at", "review_due", "expires_at",
                "status")
CONSENT_COLUMNS = ("consent_id", "record_id", "recipients", "purposes", "categories", "valid_from", "valid_until",
                   "revoked_at", "discloser", "description", "signed_at")
SOURCE_TYPES = ("clinician", "caregiver", "self", "officer", "dispatcher", "system")
CJI, PHI, PART2, VOLREG, AGOP = range(5)
LEGAL = ("CJI", "PHI", "PART2", "VOLUNTARY_REGISTRY", "AGENCY_OPERATIONAL")
STATUS = ("active", "retracted", "entered_in_error")
BASES = ("consent", "registry_authorization", "hipaa_treatment", "serious_threat", "part2_medical_emergency", "cjis",
         "operational")

RATES = {  # documented in SYNTH.md §7
    "corroborate": 0.30, "maintained_mean_age_days": 150, "entry_verify_days": 30, "event_verify_days": 14,
    "recent_days": 182, "status_normal": (0.95, 0.03, 0.02), "status_vague": (0.85, 0.12, 0.03),
    "part2_consent": 0.65, "consent_mean_age_days": 500, "plan_consent": 0.12, "consent_revoked": 0.08,
    "threat_days": 28,
}
#                  clinician caregiver self officer dispatcher system
SOURCE_MIX = np.array([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0],    # RMS
                       [0.0, 0.0, 0.0, 0.3, 0.7, 0.0],    # CAD
                       [0.8, 0.1, 0.1, 0.0, 0.0, 0.0],    # EPCR
                       [0.9, 0.0, 0.1, 0.0, 0.0, 0.0],    # EHR
                       [0.6, 0.0, 0.4, 0.0, 0.0, 0.0],    # 988
                       [0.0, 0.7, 0.3, 0.0, 0.0, 0.0]])   # VR
VAGUE_MIX = np.array([[0.0, 0.0, 0.0, 0.6, 0.0, 0.4], [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]])  # RMS, CAD
LEGAL_MIX = np.array([[0.0, 0.0, 0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]])  # legal_status at RMS, CAD
P_VERIFIED = np.array([0.85, 0.90, 0.60, 0.70, 0.25, 0.15])      # by source type: ever re-confirmed
P_MAINTAINED = np.array([0.45, 0.20, 0.35, 0.70, 0.25, 0.80])    # by agency: re-verified recently
REVIEW_DAYS = np.array([730, 730, 365, 365, 365, 365, 730, 365, 365, 365, 180, 365])  # by category
# default expiry (days after observation, uniform lo..hi) by category; -1 = none
EXPIRY_DEFAULT = {CAT["legal_status"]: (365, 1095), CAT["recent_event"]: (730, 730), CAT["housing_context"]: (365, 365)}
SOURCE_LABEL = {  # (source type, agency) -> who, as written in the text; else SOURCE_DEFAULT
    (0, BH): "case manager", (0, CRISIS): "crisis counsellor", (0, EMS): "paramedic", (5, CAD): "CAD premise flag",
}
SOURCE_DEFAULT = ("clinician", "caregiver", "self-reported", "officer", "dispatcher", "records system")
# consents: (recipients, purposes, share) for Part 2; then the crisis-plan PHI consent
PART2_KINDS = (("co_responder|ems", "EMERGENCY|TREATMENT", 0.50), ("co_responder", "TREATMENT", 0.20),
               ("COUNTY_EMS|CRISIS_LINE", "EMERGENCY|TREATMENT", 0.15), ("officer|co_responder|ems", "EMERGENCY", 0.10),
               ("ems", "EMERGENCY", 0.05))
PART2_SCOPES = (("PART2", 0.7), ("PART2|medical|service_connection", 0.3))
PLAN = ("officer|dispatcher|co_responder|ems", "EMERGENCY",
        "PHI|communication_need|sensory_need|trauma_trigger|effective_approach|ineffective_approach")
DESCRIPTIONS = ("substance use treatment enrolment and treatment medication for emergency care",
                "crisis plan: communication needs and triggers and approaches that help")
DURATIONS = ((365, 0.45), (730, 0.35), (1825, 0.20))


@dataclass
class ContextTables:
    """The two files plus per-item arrays (file order) that feedback.py grades."""
    items: pd.DataFrame
    consents: pd.DataFrame
    person: np.ndarray       # person row
    category: np.ndarray     # index into CATEGORIES
    observed: np.ndarray     # days since 1970
    verified: np.ndarray     # last_verified_at in days, -1 = never
    review_due: np.ndarray
    expires: np.ndarray      # days, -1 = never
    status: np.ndarray       # index into STATUS
    vague: np.ndarray        # unspecific danger label
    specific: np.ndarray     # code in SPECIFIC_SAFETY


def _pick(rng: np.random.Generator, table: np.ndarray, row: np.ndarray) -> np.ndarray:
    """One categorical draw per element of ``row`` from the probability rows ``table[row]``."""
    cum = np.cumsum(table, 1)
    return (rng.random(len(row))[:, None] > cum[row]).sum(1).clip(0, cum.shape[1] - 1)


def _choice(rng: np.random.Generator, probs, n: int) -> np.ndarray:
    """``n`` categorical draws from one probability vector."""
    cum = np.cumsum(probs)
    return np.searchsorted(cum / cum[-1], rng.random(n), side="right").clip(0, len(cum) - 1)


def _lookup_strings(x: np.ndarray, fmt) -> np.ndarray:
    """``fmt(v)`` for every value of the int array ``x`` (object array), formatting each
    distinct value once -- dates and codes repeat a lot, so this is much faster."""
    if len(x) == 0:
        return np.empty(0, dtype=object)
    lo, hi = int(x.min()), int(x.max())
    if hi - lo <= 100_000:   # small range (dates): a direct table, no sort
        present = np.flatnonzero(np.bincount(x - lo, minlength=hi - lo + 1))
        table = np.empty(hi - lo + 1, dtype=object)
        table[present] = [fmt(int(v) + lo) for v in present]
        return table[x - lo]
    uniq, inv = np.unique(x, return_inverse=True)
    return np.array([fmt(int(v)) for v in uniq], dtype=object)[inv.reshape(-1)]


_EPOCH = np.datetime64("1970-01-01", "D")


def _days(d: np.ndarray) -> np.ndarray:
    """Days since 1970 -> ``YYYY-MM-DD``; negative -> empty."""
    return _lookup_strings(d, lambda v: str(_EPOCH + v) if v >= 0 else "")


def _ids(prefix: str, numbers: np.ndarray) -> np.ndarray:
    """``prefix`` + 8-digit zero-padded numbers (vectorised), as an object array."""
    digits = (numbers[:, None] // 10 ** np.arange(7, -1, -1)) % 10 + ord("0")
    body = np.ascontiguousarray(digits.astype(np.uint8)).view("S8").reshape(-1)
    return np.char.add(prefix.encode(), body).astype(str).astype(object)


def record_groups(rec_person: np.ndarray, rec_agency: np.ndarray, n_persons: int):
    """Records grouped by (person, agency): (order, start, count), group key person*6 + agency."""
    key = rec_person.astype(np.int64) * len(AGENCIES) + rec_agency
    order = np.argsort(key, kind="stable")
    start = np.searchsorted(key[order], np.arange(n_persons * len(AGENCIES)))
    return order, start, np.bincount(key, minlength=n_persons * len(AGENCIES))


def _pick_record(rng, groups, person, agency) -> np.ndarray:
    order, start, count = groups
    g = person.astype(np.int64) * len(AGENCIES) + agency
    return order[start[g] + (rng.random(len(g)) * count[g]).astype(np.int64)]


def make_items(cat: Catalogue, person_need: tuple[np.ndarray, np.ndarray], groups, rec_day: np.ndarray,
               preferred: np.ndarray, rng: np.random.Generator, biased: np.ndarray | None = None) -> dict:
    """Per-item arrays (not yet in file order): who holds each need, on which record,
    observed / verified / review / expiry days, status, source type, legal category.
    ``biased`` (data bias, bias.py): persons whose safety-flag items are re-confirmed less
    (``SAFETY_VERIFIED_FACTOR``, ``SAFETY_MAINTAINED_FACTOR``) -- no extra draws."""
    P, K = person_need
    has = (groups[2].reshape(-1, len(AGENCIES)) > 0)
    H = cat.holders[K]
    present = (H >= 0) & has[P[:, None], np.maximum(H, 0)]
    first = present.argmax(1)
    take = present & ((np.arange(H.shape[1]) == first[:, None]) | (rng.random(H.shape) < RATES["corroborate"]))
    pair, slot = np.nonzero(take)
    person, need, agency = P[pair], K[pair], H[pair, slot]
    n = len(pair)
    rec = _pick_record(rng, groups, person, agency)
    category = cat.category[need]
    fl = {k: v[need] for k, v in cat.flags.items()}
    rday = rec_day[rec]
    u = rng.random(n)
    lo = np.where(fl["recent"], np.maximum(rday, D_END - RATES["recent_days"]),
                  np.where(fl["threat"], np.maximum(rday, D_END - RATES["threat_days"]), rday))
    observed = lo + (u * (D_END - lo)).astype(np.int64)
    # copies of one event (recent_event) share its date (+0-2 days), never before their own record
    primary = np.searchsorted(pair, pair)
    event = category == CAT["recent_event"]
    shared = np.maximum(observed[primary] + rng.integers(0, 3, n), rday)
    observed = np.minimum(np.where(event, shared, observed), D_END - 1)
    # source type, verification
    source = _pick(rng, SOURCE_MIX, agency)
    at_cad = (agency == CAD).astype(np.int64)
    police_legal = (category == CAT["legal_status"]) & ((agency == RMS) | (agency == CAD))
    source = np.where(police_legal, _pick(rng, LEGAL_MIX, at_cad), source)
    source = np.where(fl["vague"], _pick(rng, VAGUE_MIX, at_cad), source)
    source = np.where(fl["recent"], 3, np.where(fl["threat"], 0, source))
    p_verified, p_maintained = P_VERIFIED[source], P_MAINTAINED[agency]
    if biased is not None:
        flagged = biased[person] & (category == CAT["safety_flag"])
        p_verified = np.where(flagged, p_verified * SAFETY_VERIFIED_FACTOR, p_verified)
        p_maintained = np.where(flagged, p_maintained * SAFETY_MAINTAINED_FACTOR, p_maintained)
    verified_any = (rng.random(n) < p_verified) & ~fl["vague"]
    maintained = rng.random(n) < p_maintained
    recent_lv = D_END - 1 - rng.exponential(RATES["maintained_mean_age_days"], n).astype(np.int64)
    entry_lv = observed + rng.integers(0, RATES["entry_verify_days"] + 1, n)
    event_lv = observed + rng.integers(0, RATES["event_verify_days"] + 1, n)
    lv = np.where(maintained, np.maximum(recent_lv, observed), entry_lv)
    forced = fl["recent"] | fl["threat"]
    lv = np.where(forced, event_lv, np.where(verified_any, lv, -1))
    lv = np.where(lv >= 0, np.minimum(lv, D_END - 1), -1)
    review = np.where(lv >= 0, lv, observed) + REVIEW_DAYS[category]
    # expiry: catalogue override, else category default
    e_lo, e_hi = cat.exp_lo[need].copy(), cat.exp_hi[need].copy()
    for c, (dl, dh) in EXPIRY_DEFAULT.items():
        m = (category == c) & (e_lo == -1)
        e_lo[m], e_hi[m] = dl, dh
    span = e_lo + (rng.random(n) * (e_hi - e_lo + 1)).astype(np.int64)
    # re-verified housing information lasts longer; a serious-threat disclosure expires within days of
    # its verification (HIPAA 164.512(j): an imminent threat; the policy caps it at 14 days)
    start = np.where((category == CAT["housing_context"]) | fl["threat"], np.maximum(observed, lv), observed)
    expires = np.where(e_lo >= 0, start + span, -1)
    status = np.where(fl["vague"], _choice(rng, RATES["status_vague"], n), _choice(rng, RATES["status_normal"], n))
    legal = np.select([agency == RMS, agency == CAD, agency == VR, (agency == BH) & fl["part2"]],
                      [CJI, np.where(fl["cji"], CJI, AGOP), VOLREG, PART2], PHI)
    # text: behaviour + who said it + month observed
    ti = cat.t_start[need] + (rng.random(n) * cat.t_count[need]).astype(np.int64)
    labels = [SOURCE_LABEL.get((s, g), SOURCE_DEFAULT[s]) for s in range(6) for g in range(6)]
    month = observed.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)   # months since 1970-01
    key = (ti * 36 + source * 6 + agency) * 10_000 + month
    text = _lookup_strings(key, lambda k: f"{cat.templates[k // 360_000]} ({labels[k // 10_000 % 36]}; "
                                          f"{np.datetime64(k % 10_000, 'M')})")
    named = np.flatnonzero(np.array(["{name}" in t for t in cat.templates])[ti])
    text[named] = [t.replace("{name}", preferred[p].title()) for t, p in zip(text[named], person[named])]
    return dict(person=person, need=need, agency=agency, rec=rec, category=category, observed=observed, lv=lv,
                review=review, expires=expires, status=status, source=source, legal=legal, text=text, fl=fl)


def make_consents(it: dict, groups, rec_day: np.ndarray, rec_ids: np.ndarray, rng: np.random.Generator):
    """Consents of the behavioural-health agency: Part 2 consents for persons with
    Part 2 items (``RATES['part2_consent']``, kinds ``PART2_KINDS``) and crisis-plan
    PHI consents (``RATES['plan_consent']``) that let officers see approach guidance.
    Returns (consents frame in id order, consent id per consent (draw order), per-item
    index of the covering consent or -1)."""
    plan_cats = [CAT[c] for c in PLAN[2].split("|")[1:]]
    ehr = it["agency"] == BH
    p2_persons = np.unique(it["person"][it["legal"] == PART2])
    plan_persons = np.unique(it["person"][ehr & (it["legal"] == PHI) & np.isin(it["category"], plan_cats)])
    p2 = p2_persons[rng.random(len(p2_persons)) < RATES["part2_consent"]]
    pl = plan_persons[rng.random(len(plan_persons)) < RATES["plan_consent"]]
    person = np.concatenate([p2, pl])
    is_p2 = np.arange(len(person)) < len(p2)
    n = len(person)
    rec = _pick_record(rng, groups, person, np.full(n, BH))
    kind = _choice(rng, [k[2] for k in PART2_KINDS], n)
    scope = _choice(rng, [s[1] for s in PART2_SCOPES], n)
    signed = np.maximum(rec_day[rec], D_END - 1 - rng.exponential(RATES["consent_mean_age_days"], n).astype(np.int64))
    until = signed + np.array([d for d, _ in DURATIONS])[_choice(rng, [w for _, w in DURATIONS], n)]
    revoked = np.where(rng.random(n) < RATES["consent_revoked"],
                       signed + (rng.random(n) * (D_END - signed)).astype(np.int64), -1)
    order = np.lexsort((~is_p2, person, signed))
    ids = _ids("CNS-", 10_000 + np.cumsum(rng.integers(1, 4, n)))
    cid = np.empty(n, dtype=object)
    cid[order] = ids
    kinds = np.array([k[0] for k in PART2_KINDS] + [PLAN[0]], dtype=object)
    purposes = np.array([k[1] for k in PART2_KINDS] + [PLAN[1]], dtype=object)
    k = np.where(is_p2, kind, len(PART2_KINDS))
    cats = np.where(is_p2, np.array([s[0] for s in PART2_SCOPES], dtype=object)[scope], PLAN[2])
    df = pd.DataFrame({
        "consent_id": cid, "record_id": rec_ids[rec], "recipients": kinds[k], "purposes": purposes[k],
        "categories": cats, "valid_from": _days(signed), "valid_until": _days(until), "revoked_at": _days(revoked),
        "discloser": AGENCIES[BH][0], "description": np.where(is_p2, DESCRIPTIONS[0], DESCRIPTIONS[1]),
        "signed_at": _days(signed),
    }, columns=list(CONSENT_COLUMNS)).iloc[order].reset_index(drop=True)
    # coverage: items the BH agency holds about the person, of the consent's legal category (and item categories)
    n_p = int(max(it["person"].max(initial=0), person.max(initial=0))) + 1
    covered = np.full(len(it["person"]), -1)
    for legal, sel in ((PART2, is_p2), (PHI, ~is_p2)):
        of = np.full(n_p, -1)
        of[person[sel]] = np.flatnonzero(sel)
        c = np.where(ehr & (it["legal"] == legal), of[it["person"]], -1)
        allowed = np.zeros((n + 1, len(CATEGORIES)), bool)
        for j in np.flatnonzero(sel):
            names = cats[j].split("|")[1:]
            allowed[j, [CAT[x] for x in names] if names else slice(None)] = True
        ok = (c >= 0) & allowed[np.where(c >= 0, c, n), it["category"]]
        covered[ok] = c[ok]
    return df, cid, covered


def make_context(cat: Catalogue, person_need, rec_person, rec_agency, rec_day, rec_ids, preferred, n_persons: int,
                 seed: int, biased: np.ndarray | None = None) -> ContextTables:
    """Items and consents for the county; randomness ``default_rng([seed, 9])``.
    ``rec_*`` are per-record arrays (pre-shuffle order), ``rec_day`` the local date of
    ``recorded_at`` in days since 1970."""
    rng = np.random.default_rng([seed, 9])
    groups = record_groups(rec_person, rec_agency, n_persons)
    it = make_items(cat, person_need, groups, rec_day, preferred, rng, biased)
    consents, cid, covered = make_consents(it, groups, rec_day, rec_ids, rng)
    legal, fl = it["legal"], it["fl"]
    basis = np.select([covered >= 0, legal == PART2, legal == VOLREG, legal == CJI, legal == AGOP, fl["threat"]],
                      [0, 4, 1, 5, 6, 3], 2)
    lab = np.select([legal == PART2, (legal == PHI) & np.isin(it["agency"], (BH, CRISIS)), legal == PHI,
                     legal == CJI], [0, 1, 2, 2], 3)
    labels = np.array(["V|ETH|NORDSCLCD", "R|BH", "R", "N", "V|ETH|NORDSCLCD|SDV", "R|BH|SDV", "R|SDV", "N|SDV"],
                      dtype=object)[lab + 4 * fl["sdv"]]
    # file order: by observation date, then person, need, agency; ids increase with it (small gaps)
    order = np.lexsort((it["agency"], it["need"], it["person"], it["observed"]))
    m = len(order)
    item_ids = _ids("CI-", 10_000 + np.cumsum(rng.integers(1, 4, m)))
    o = order
    items = pd.DataFrame({
        "item_id": item_ids, "record_id": rec_ids[it["rec"][o]],
        "category": np.array(CATEGORIES, dtype=object)[it["category"][o]], "code": cat.code[it["need"][o]],
        "text": it["text"][o], "legal_category": np.array(LEGAL, dtype=object)[legal[o]],
        "security_labels": labels[o], "consent_id": np.where(covered[o] >= 0, cid[np.maximum(covered[o], 0)], ""),
        "disclosure_basis": np.array(BASES, dtype=object)[basis[o]],
        "source_type": np.array(SOURCE_TYPES, dtype=object)[it["source"][o]],
        "observed_at": _days(it["observed"][o]), "last_verified_at": _days(it["lv"][o]),
        "review_due": _days(it["review"][o]), "expires_at": _days(it["expires"][o]),
        "status": np.array(STATUS, dtype=object)[it["status"][o]],
    }, columns=list(ITEM_COLUMNS))
    return ContextTables(items, consents, it["person"][o], it["category"][o], it["observed"][o], it["lv"][o],
                         it["review"][o], it["expires"][o], it["status"][o], fl["vague"][o],
                         np.isin(cat.code[it["need"][o]], SPECIFIC_SAFETY))
