"""Address/phone histories, shelters, group homes, contact networks; the final
shuffle of persons; and export of the latent tables as DataFrames."""
from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.synth.places import Places, unique_phones
from evaluation.synth.population import (
    ADDR_GROUP, ADDR_HOME, ADDR_KIND_NAMES, ADDR_SHELTER, ADDR_STREET, ALWAYS, KINDS, NEVER, T_END,
    T_START, UTIL_NAMES, Population,
)

HIST_RATES = {  # documented in SYNTH.md
    "moves_per_8y_single": 0.8, "moves_per_8y_household": 0.45, "unit_rate": 0.3,
    "has_mobile": 0.93, "has_mobile_homeless": 0.75, "has_mobile_group_home": 0.4,
    "phone_changes_per_8y": 0.4, "phone_changes_per_8y_homeless": 2.0,
    "landline_household": 0.25, "landline_single": 0.05, "homeless_spells_extra": 1.2,
    "shelter_spell": 0.7, "caller_is_family_member": 0.3, "usual_shelter": 0.6,
}


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups with ``counts``: (group index, rank within group) per row."""
    grp = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return grp, rank


def _events(rng, n_per: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row owner and sorted event times in [lo, T_END) (first event at ``lo``)."""
    owner, rank = _expand(n_per)
    lo_r = np.maximum(lo[owner], T_START)
    t = lo_r + (rng.random(len(owner)) * (T_END - lo_r)).astype(np.int64)
    t = np.where(rank == 0, lo[owner], t)
    order = np.lexsort((t, owner))
    return owner[order], t[order]


def build_histories(rng: np.random.Generator, places: Places, v: dict) -> Population:
    nt = len(v["race"])
    kind, hh, pos = v["kind"], v["hh"], v["pos"]
    n_hh = int(hh.max()) + 1
    first = np.searchsorted(hh, np.arange(n_hh))
    hkind = kind[first]
    hsize = np.bincount(hh, minlength=n_hh)
    # ---- shelters, hotspots, group-home addresses ----
    n_sh = int(np.clip(round(nt / 40000), 4, 12))
    shelters = places.add_addresses(rng, n_sh, unit_rate=0.0)
    hotspots = places.add_addresses(rng, 12, unit_rate=0.0)
    # ---- household address histories ----
    lam = np.where(hkind == 0, HIST_RATES["moves_per_8y_single"], HIST_RATES["moves_per_8y_household"])
    lam[hkind == 4] = 0.0
    n_addr = 1 + rng.poisson(lam)
    h_owner, h_from = _events(rng, n_addr, np.full(n_hh, ALWAYS, dtype=np.int64))
    h_addr = places.add_addresses(rng, len(h_owner), unit_rate=HIST_RATES["unit_rate"])
    gh_rows = hkind[h_owner] == 4
    gh_addr = places.add_addresses(rng, int(gh_rows.sum()), unit_rate=0.0)
    h_addr[gh_rows] = gh_addr
    h_kind = np.where(gh_rows, ADDR_GROUP, ADDR_HOME)
    # expand to persons
    h_start = np.searchsorted(h_owner, np.arange(n_hh))
    p_of_row, r = _expand(n_addr[hh])
    src = h_start[hh[p_of_row]] + r
    a_person, a_from, a_addr, a_kind = p_of_row, h_from[src], h_addr[src], h_kind[src]
    # homeless persons: drop home rows from homeless_from on, add shelter/street spells
    hf = v["homeless_from"]
    keep = a_from < hf[a_person]
    a_person, a_from, a_addr, a_kind = a_person[keep], a_from[keep], a_addr[keep], a_kind[keep]
    hl = np.flatnonzero(v["homeless"])
    usual_shelter = np.full(nt, -1, dtype=np.int64)
    usual_shelter[hl] = shelters[rng.integers(0, n_sh, len(hl))]
    n_sp = 1 + rng.poisson(HIST_RATES["homeless_spells_extra"], len(hl))
    s_own, s_from = _events(rng, n_sp, hf[hl])
    s_person = hl[s_own]
    shelter_spell = rng.random(len(s_person)) < HIST_RATES["shelter_spell"]
    s_addr = np.where(rng.random(len(s_person)) < HIST_RATES["usual_shelter"], usual_shelter[s_person],
                      shelters[rng.integers(0, n_sh, len(s_person))])
    s_addr = np.where(shelter_spell, s_addr, -1)
    s_kind = np.where(shelter_spell, ADDR_SHELTER, ADDR_STREET)
    a_person = np.concatenate([a_person, s_person])
    a_from = np.concatenate([a_from, s_from])
    a_addr = np.concatenate([a_addr, s_addr])
    a_kind = np.concatenate([a_kind, s_kind])
    # ---- phones ----
    homeless = v["homeless"]
    p_mob = np.where(homeless, HIST_RATES["has_mobile_homeless"],
                     np.where(kind == 4, HIST_RATES["has_mobile_group_home"], HIST_RATES["has_mobile"]))
    has_mob = rng.random(nt) < p_mob
    n_mob = np.where(has_mob, 1 + rng.poisson(np.where(homeless, HIST_RATES["phone_changes_per_8y_homeless"],
                                                        HIST_RATES["phone_changes_per_8y"])), 0)
    hh_land = rng.random(n_hh) < np.where(hkind == 0, HIST_RATES["landline_single"], HIST_RATES["landline_household"])
    hh_land[hkind == 4] = True
    n_gh = int((hkind == 4).sum())
    counts = [int(n_mob.sum()), int(hh_land.sum()), nt, n_gh, 2 * nt]
    pool = unique_phones(rng, sum(counts))
    cuts = np.cumsum([0] + counts)
    mob_nums, land_nums, care_nums, staff_nums, caller_nums = (pool[cuts[i]:cuts[i + 1]] for i in range(5))
    m_owner, m_from = _events(rng, n_mob, np.full(nt, ALWAYS, dtype=np.int64))
    hh_landline = np.full(n_hh, -1, dtype=np.int64)
    hh_landline[hh_land] = land_nums
    landline = hh_landline[hh]
    first_mobile = np.full(nt, -1, dtype=np.int64)
    m_first = np.searchsorted(m_owner, np.arange(nt))
    has_any = n_mob > 0
    first_mobile[has_any] = mob_nums[m_first[has_any]]
    gh_index = np.cumsum(hkind == 4) - 1
    caregiver = np.where(v["reg"], care_nums, -1)
    in_gh = kind == 4
    caregiver[in_gh] = staff_nums[gh_index[hh[in_gh]]]
    caller1, caller2 = caller_nums[:nt].copy(), caller_nums[nt:].copy()
    # family members call about each other: caller1 = another member's phone
    other = np.minimum(np.where(pos == 0, first[hh] + 1, first[hh]), nt - 1)
    multi = (hsize[hh] >= 2) & (kind != 4)
    fam_phone = np.where(first_mobile[other] >= 0, first_mobile[other], landline)
    use = multi & (fam_phone >= 0) & (rng.random(nt) < HIST_RATES["caller_is_family_member"])
    caller1[use] = fam_phone[use]
    caller1[in_gh] = landline[in_gh]
    # ---- frequent incident locations (CAD) ----
    loc = places.add_addresses(rng, 2 * nt, unit_rate=0.15)
    loc1, loc2 = loc[:nt], loc[nt:]
    loc1[homeless] = hotspots[rng.integers(0, len(hotspots), homeless.sum())]
    loc2[homeless] = usual_shelter[homeless]
    # ---- shuffle persons ----
    perm = rng.permutation(nt)
    inv = np.empty(nt, dtype=np.int64)
    inv[perm] = np.arange(nt)
    a = {k: v[k][perm] for k in v}
    a.update(landline=landline[perm], caregiver=caregiver[perm], caller1=caller1[perm], caller2=caller2[perm],
             loc1=loc1[perm], loc2=loc2[perm], usual_shelter=usual_shelter[perm], first_mobile=first_mobile[perm])
    a["head"] = inv[a["head"]]
    a["partner"] = np.where(a["partner"] >= 0, inv[np.maximum(a["partner"], 0)], -1)
    hh_order = np.unique(a["hh"], return_index=True)[1]
    relabel = np.empty(n_hh, dtype=np.int64)
    relabel[a["hh"][np.sort(hh_order)]] = np.arange(n_hh)
    a["hh"] = relabel[a["hh"]]
    ap = inv[a_person]
    o = np.lexsort((a_from, ap))
    addr_hist = {"person": ap[o], "valid_from": a_from[o], "addr": a_addr[o], "kind": a_kind[o]}
    mp = inv[m_owner]
    o = np.lexsort((m_from, mp))
    phone_hist = {"person": mp[o], "valid_from": m_from[o], "phone": mob_nums[o]}
    places._frozen = None
    return Population(a, addr_hist, phone_hist, places, shelters, hotspots)


# ---- export ------------------------------------------------------------------

def person_keys(n: int) -> np.ndarray:
    return np.array([f"P{i:08d}" for i in range(n)], dtype=object)


def _minutes_to_str(t: np.ndarray, none: str = "") -> np.ndarray:
    out = np.full(len(t), none, dtype=object)
    ok = (t > ALWAYS) & (t < NEVER)
    out[ok] = np.datetime_as_string(t[ok].astype("datetime64[m]"), unit="D").astype(object)
    out[t <= ALWAYS] = "before-window"
    return out


def _phone_str(x: np.ndarray) -> np.ndarray:
    return np.array(["" if p < 0 else str(p) for p in x], dtype=object)


def persons_frame(pop: Population) -> pd.DataFrame:
    a = pop.a
    keys = person_keys(pop.n)
    # twins / jr-sr: each points at the other
    pair = (a["kind"] == 2) | (a["kind"] == 3)
    mate = np.full(pop.n, -1, dtype=np.int64)
    p1 = np.flatnonzero(pair & (a["pos"] == 1))
    mate[p1] = a["head"][p1]
    mate[a["head"][p1]] = p1
    mk = np.where(mate >= 0, keys[np.maximum(mate, 0)], "")
    return pd.DataFrame({
        "person_key": keys, "has_records": a["has_records"], "n_records": a["n_rec"],
        "utilisation": np.array(UTIL_NAMES, dtype=object)[a["util"]],
        "race_ethnicity": a["race"], "sex": a["sex"], "dob": np.datetime_as_string(a["dob"]).astype(object),
        "given_name": a["given"], "middle_name": a["middle"], "family_name_birth": a["family_birth"],
        "family_name_married": a["family_married"], "marriage_date": _minutes_to_str(a["marriage_at"]),
        "compound_surname": a["compound"], "name_suffix": a["suffix"], "preferred_name": a["preferred"],
        "household_key": np.array([f"H{h:08d}" for h in a["hh"]], dtype=object),
        "household_kind": np.array(KINDS, dtype=object)[a["kind"]],
        "twin_of": np.where(a["kind"] == 2, mk, ""), "jr_sr_of": np.where(a["kind"] == 3, mk, ""),
        "group_home": a["kind"] == 4, "homeless": a["homeless"], "homeless_from": _minutes_to_str(a["homeless_from"]),
        "bh_client": a["bh"], "registry_enrolled": a["reg"], "email": a["email"], "ssn_last4": a["ssn4"],
        "landline": _phone_str(a["landline"]), "caregiver_phone": _phone_str(a["caregiver"]),
        "caller_phones": np.array([f"{x}|{y}" for x, y in zip(a["caller1"], a["caller2"])], dtype=object),
    })


def address_history_frame(pop: Population) -> pd.DataFrame:
    h = pop.addr_hist
    c = pop.places.components(h["addr"])
    style = np.full(len(h["addr"]), 1)
    return pd.DataFrame({
        "person_key": person_keys(pop.n)[h["person"]], "valid_from": _minutes_to_str(h["valid_from"]),
        "valid_from_minute": h["valid_from"], "kind": np.array(ADDR_KIND_NAMES, dtype=object)[h["kind"]],
        "address_id": h["addr"], "street": pop.places.render_street(h["addr"], style, np.zeros(len(style), bool)),
        "city": c["city"], "postcode": c["postcode"],
    })


def phone_history_frame(pop: Population) -> pd.DataFrame:
    h = pop.phone_hist
    return pd.DataFrame({"person_key": person_keys(pop.n)[h["person"]], "valid_from": _minutes_to_str(h["valid_from"]),
                         "valid_from_minute": h["valid_from"], "phone": _phone_str(h["phone"])})
