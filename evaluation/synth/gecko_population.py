"""The gecko-syndata benchmark sets' clean side: set specs, source tables, the clean population and its records.

What `evaluation.synth.gecko_sets` corrupts: per set (:data:`SETS`), households of persons with clean names,
dates of birth, addresses and phones drawn from the installed source tables (:func:`load_sources`), and each
person's clean records with their agencies (:func:`person_records`). Every parameter, seed and the method are
described in the module docstring of `evaluation.synth.gecko_sets`; the output is hash-pinned by
tests/test_external_sets.py, so nothing here may change without regenerating the committed sets.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE_DATE = dt.date(2025, 1, 1)
MAX_AGE = 95
COLUMNS = ("record_id", "agency", "given_name", "family_name", "dob", "sex", "phone", "street", "city",
           "postcode", "person_key")
FIELDS = ("given_name", "family_name", "dob", "sex", "phone", "street", "city", "postcode")


#: Stream numbers for ``default_rng([seed, stream])``: one per purpose, never reused.
STREAMS = {
    "households": 1, "given_m": 2, "given_f": 3, "family": 4, "dob_adult": 5, "dob_parent": 6,
    "address": 7, "cities": 8, "streets": 9, "street_stem": 10, "street_suffix": 11, "records": 12,
    "moves": 13, "agencies": 14, "shuffle": 15, "keys": 16, "namesakes": 17, "phones": 18,
    "street_stem_first": 19, "address_city": 20,
    # mutators
    "m_given_kb": 30, "m_given_phon": 31, "m_given_ocr": 32, "m_given_miss": 33, "m_given_nick": 34,
    "m_given_trans": 35, "m_given_del": 36,
    "m_family_kb": 40, "m_family_phon": 41, "m_family_ocr": 42, "m_family_miss": 43, "m_family_ins": 44,
    "m_swap": 45,
    "m_dob_dm": 50, "m_dob_off": 51, "m_dob_year": 52, "m_dob_miss": 53,
    "m_sex_miss": 55, "m_sex_flip": 56,
    "m_phone_kb": 60, "m_phone_trans": 61, "m_phone_sub": 62, "m_phone_miss": 63,
    "m_street_kb": 70, "m_street_del": 71, "m_street_trans": 72, "m_street_miss": 73, "m_street_abbr": 74,
    "m_city_kb": 80, "m_city_miss": 81,
    "m_post_ocr": 90, "m_post_trans": 91, "m_post_sub": 92, "m_post_miss": 93,
    # gecko with_group: which error (if any) a field of a record gets
    "g_given": 100, "g_family": 101, "g_dob": 102, "g_sex": 103, "g_phone": 104, "g_street": 105,
    "g_city": 106, "g_post": 107,
}

HOUSEHOLD_KINDS = (("single", 0.30), ("couple", 0.22), ("family", 0.28), ("single_parent", 0.10),
                   ("roommates", 0.10))
PARTNER_SHARES_NAME = 0.75
TWIN_SHARE = 0.12
JUNIOR_SHARE = 0.15
OWN_MOBILE_SHARE = 0.45
NAMESAKE_SHARE = 0.02
#: (min age, max age, weight) at REFERENCE_DATE for adults of single, couple and roommate households.
ADULT_AGE_BANDS = ((18, 29, 0.22), (30, 44, 0.26), (45, 64, 0.30), (65, 79, 0.16), (80, 95, 0.06))
#: The same for heads of family / single-parent households (children need a parent 18+ years older).
PARENT_AGE_BANDS = ((22, 34, 0.30), (35, 44, 0.40), (45, 60, 0.30))
#: Weight of the common Faker en_US street suffixes; every other Faker suffix shares COMMON_SUFFIX_REST.
COMMON_SUFFIXES = (("Street", 26), ("Avenue", 17), ("Drive", 11), ("Road", 10), ("Lane", 7), ("Court", 6),
                   ("Way", 5), ("Place", 4), ("Circle", 3), ("Terrace", 2), ("Trail", 2),
                   ("Parkway", 1))
COMMON_SUFFIX_REST = 3


@dataclass(frozen=True)
class Agency:
    name: str
    weight: float
    fields: tuple[str, ...]
    upper: bool = False
    phone_format: str = "digits"  # digits | paren | dash
    abbreviate: float = 0.0


@dataclass(frozen=True)
class SetSpec:
    name: str
    prefix: str
    seed: int
    persons: int
    max_records: int
    zipf: float
    move_share: float
    agencies: tuple[Agency, ...]


SETS = (
    SetSpec("gecko_small", "GS", 20251, persons=7000, max_records=10, zipf=1.6, move_share=0.04, agencies=(
        Agency("HOSPITAL", 0.40, FIELDS), Agency("POLICE", 0.35, FIELDS), Agency("EMS", 0.25, FIELDS))),
    SetSpec("gecko_large", "GL", 20252, persons=13000, max_records=20, zipf=1.25, move_share=0.12, agencies=(
        Agency("HOSPITAL", 0.25, FIELDS, phone_format="paren"),
        Agency("POLICE", 0.25, tuple(f for f in FIELDS if f != "phone"), upper=True, abbreviate=0.7),
        Agency("SOCIAL", 0.15, ("given_name", "family_name", "dob", "sex", "phone")),
        Agency("CLINIC", 0.20, tuple(f for f in FIELDS if f != "city"), phone_format="dash"),
        Agency("DISPATCH", 0.15, ("given_name", "family_name", "phone", "street", "city"), upper=True,
               abbreviate=0.7))),
)


def set_rng(spec: SetSpec, stream: str) -> np.random.Generator:
    return np.random.default_rng([spec.seed, STREAMS[stream]])


# --------------------------------------------------------------------------- source tables


@dataclass
class Sources:
    male: pd.DataFrame      # value, freq (int)
    female: pd.DataFrame
    last: pd.DataFrame
    cities: list[tuple[str, float]]  # (name, longitude), sorted by name
    suffixes: tuple[str, ...]
    nicknames: list[tuple[str, str]]  # (NAME, NICKNAME), sorted
    digest: str


def _census(path: Path) -> tuple[pd.DataFrame, bytes]:
    """A census name file as (value, freq): freq in 10^-6 percent, the 0.000 % tail sharing what is left."""
    raw = path.read_bytes()
    rows = [line.split() for line in raw.decode("ascii").splitlines() if line.strip()]
    names = [r[0] for r in rows]
    thousandths = np.array([int(round(float(r[1]) * 1000)) for r in rows], dtype=np.int64)
    total = int(round(float(rows[-1][2]) * 1000))
    freq = thousandths * 1000
    zero = thousandths == 0
    if zero.any():
        freq[zero] = max(1, (total - int(thousandths.sum())) * 1000 // int(zero.sum()))
    return pd.DataFrame({"value": names, "freq": freq}), raw


def load_sources() -> Sources:
    import names as names_pkg
    from faker.providers.address.en_US import Provider as Address
    from faker.providers.geo import Provider as Geo
    from nicknames import with_names_csv_path

    base = Path(names_pkg.__file__).parent
    male, raw_m = _census(base / "dist.male.first")
    female, raw_f = _census(base / "dist.female.first")
    last, raw_l = _census(base / "dist.all.last")
    cities = sorted({(c[2], float(c[1])) for c in Geo.land_coords if c[3] == "US"})
    suffixes = tuple(dict.fromkeys(Address.street_suffixes))  # Faker lists some twice
    with with_names_csv_path() as p:
        raw_n = Path(p).read_bytes()
    nick = pd.read_csv(io.BytesIO(raw_n), dtype=str, keep_default_na=False)
    nick = nick[nick["relationship"] == "has_nickname"]
    nicknames = sorted({(a.upper(), b.upper()) for a, b in zip(nick["name1"], nick["name2"])})
    h = hashlib.sha256()
    for part in (raw_m, raw_f, raw_l, repr(cities).encode(), repr(suffixes).encode(), raw_n):
        h.update(hashlib.sha256(part).digest())
    return Sources(male, female, last, cities, suffixes, nicknames, h.hexdigest())


# --------------------------------------------------------------------------- clean population


def _date_range(min_age: int, max_age: int) -> tuple[str, str]:
    """Birth dates of persons aged min_age..max_age (whole years) on REFERENCE_DATE."""
    ref = REFERENCE_DATE
    last = ref.replace(year=ref.year - min_age)
    first = ref.replace(year=ref.year - max_age - 1) + dt.timedelta(days=1)
    return first.isoformat(), last.isoformat()


def _dob_pool(bands, count: int, rng: np.random.Generator) -> list[str]:
    from gecko import generator as gg

    weights = np.array([w for *_, w in bands], dtype=float)
    weights = weights / weights.sum()
    group = gg.from_group(
        [(float(w), gg.from_datetime_range(*_date_range(lo, hi), "%Y-%m-%d", "D", rng=rng))
         for (lo, hi, _), w in zip(bands, weights)],
        max_rounding_adjustment=len(bands), rng=rng)
    return group(count)[0].tolist()


def _age_days(dob: str) -> int:
    return (REFERENCE_DATE - dt.date.fromisoformat(dob)).days


def _places(spec: SetSpec, src: Sources, households: int) -> tuple[pd.DataFrame, dict[str, list[str]], dict]:
    """City table (city, postcode, freq), streets per city, area code per city."""
    from gecko import generator as gg

    r = set_rng(spec, "cities")
    n = len(src.cities)
    rank = r.permutation(n) + 1
    weight = 1.0 / rank.astype(float) ** 0.8
    # ZIP codes rise from east to west: order the cities by longitude, east first
    east_first = sorted(range(n), key=lambda i: (-src.cities[i][1], src.cities[i][0]))
    slot = 98000 // n
    rows, area_codes, used_area = [], {}, set()
    for pos, i in enumerate(east_first):
        city = src.cities[i][0]
        base = 1000 + pos * slot + int(r.integers(0, slot - 40))
        k = int(r.integers(1, 5))
        zips = sorted({base + int(x) for x in r.integers(0, 40, size=k)})
        per_zip = max(1, int(round(weight[i] * 1_000_000 / len(zips))))
        rows.extend((city, f"{z:05d}", per_zip) for z in zips)
    for city, _lon in src.cities:  # area codes in name order
        while True:
            code = f"{int(r.integers(2, 10))}{int(r.integers(0, 9))}{int(r.integers(0, 10))}"
            if code not in used_area and code[1:] != "11":
                used_area.add(code)
                area_codes[city] = code
                break
    table = pd.DataFrame(rows, columns=["city", "postcode", "freq"])

    # streets: Faker en_US formats "{name} {suffix}" with census names, plus numbered streets
    common = dict(COMMON_SUFFIXES)
    missing = sorted(set(common) - set(src.suffixes))
    if missing:
        raise RuntimeError(f"Faker en_US street_suffixes lacks {missing}")
    suffix_table = pd.DataFrame({"value": list(src.suffixes),
                                 "freq": [common.get(s, 0) * 100 or COMMON_SUFFIX_REST for s in src.suffixes]})
    share = weight / weight.sum()
    n_streets = {src.cities[i][0]: max(6, int(round(share[i] * households / 5))) for i in range(n)}
    total = sum(n_streets.values())
    rs = set_rng(spec, "streets")
    stems_last = gg.from_frequency_table(src.last, "value", "freq", rng=set_rng(spec, "street_stem"))(total)
    stems_first = gg.from_frequency_table(src.male, "value", "freq", rng=set_rng(spec, "street_stem_first"))(total)
    suffixes = gg.from_frequency_table(suffix_table, "value", "freq", rng=set_rng(spec, "street_suffix"))(total)
    kind = rs.random(total)
    ordinals = np.arange(1, 41)
    ordinal = rs.choice(ordinals, size=total, p=(1.0 / ordinals) / (1.0 / ordinals).sum())
    names = []
    for j in range(total):
        if kind[j] < 0.70:
            stem = stems_last[0].iat[j].title()
        elif kind[j] < 0.85:
            stem = stems_first[0].iat[j].title()
        else:
            o = int(ordinal[j])
            stem = f"{o}{'th' if 10 <= o % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(o % 10, 'th')}"
        names.append(f"{stem} {suffixes[0].iat[j]}")
    streets, j = {}, 0
    for city, _lon in src.cities:
        streets[city] = list(dict.fromkeys(names[j:j + n_streets[city]]))
        j += n_streets[city]
    return table, streets, area_codes


def build_population(spec: SetSpec, src: Sources) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (persons, households): clean values of every person and every household's address."""
    from gecko import generator as gg

    r = set_rng(spec, "households")
    kinds = [k for k, _ in HOUSEHOLD_KINDS]
    kind_p = np.array([p for _, p in HOUSEHOLD_KINDS])
    adult_dobs = _dob_pool(ADULT_AGE_BANDS, spec.persons + 10, set_rng(spec, "dob_adult"))
    parent_dobs = _dob_pool(PARENT_AGE_BANDS, spec.persons + 10, set_rng(spec, "dob_parent"))
    a_i = p_i = 0
    min_adult = 18 * 365 + 5

    # household structure: members with role, sex, dob, family-name slot, flags
    members: list[dict] = []
    n_households = 0
    family_slots = 0
    while len(members) < spec.persons:
        hh = n_households
        n_households += 1
        kind = kinds[int(r.choice(len(kinds), p=kind_p))]
        head_sex = "M" if r.random() < 0.5 else "F"
        slot = family_slots
        family_slots += 1
        if kind in ("family", "single_parent"):
            head_dob = parent_dobs[p_i]
            p_i += 1
        else:
            head_dob = adult_dobs[a_i]
            a_i += 1
        members.append(dict(hh=hh, role="head", sex=head_sex, dob=head_dob, slot=slot, adult=True))
        if kind in ("couple", "family"):
            sex = ("F" if head_sex == "M" else "M") if r.random() < 0.95 else head_sex
            age = _age_days(head_dob) + int(round(r.normal(0, 4 * 365.25)))
            age = int(np.clip(age, min_adult, (MAX_AGE + 1) * 365))
            pdob = (REFERENCE_DATE - dt.timedelta(days=age)).isoformat()
            if r.random() < PARTNER_SHARES_NAME:
                pslot = slot
            else:
                pslot = family_slots
                family_slots += 1
            members.append(dict(hh=hh, role="partner", sex=sex, dob=pdob, slot=pslot, adult=True))
        if kind in ("family", "single_parent"):
            n_children = 1 + min(3, int(r.geometric(0.55)) - 1)
            head_age = _age_days(head_dob)
            lo = max(0, head_age - 45 * 365)
            hi = min(18 * 365 - 1, head_age - min_adult)
            if hi >= lo:
                twins = n_children >= 2 and r.random() < TWIN_SHARE
                junior_done = False
                prev_dob = None
                for c in range(n_children):
                    sex = "M" if r.random() < 0.5 else "F"
                    if twins and c == 1:
                        cdob = prev_dob
                    else:
                        cdob = (REFERENCE_DATE - dt.timedelta(days=int(r.integers(lo, hi + 1)))).isoformat()
                    junior = (not junior_done and sex == "M" and head_sex == "M" and not (twins and c < 2)
                              and r.random() < JUNIOR_SHARE)
                    junior_done = junior_done or junior
                    members.append(dict(hh=hh, role="child", sex=sex, dob=cdob, slot=slot, adult=False,
                                        twin_of=len(members) - 1 if twins and c == 1 else None,
                                        junior=junior))
                    prev_dob = cdob
        if kind == "roommates":
            for _ in range(1 + int(r.integers(1, 3))):
                members.append(dict(hh=hh, role="roommate", sex="M" if r.random() < 0.5 else "F",
                                    dob=adult_dobs[a_i], slot=family_slots, adult=True))
                a_i += 1
                family_slots += 1
    members = members[:spec.persons]
    n_households = members[-1]["hh"] + 1

    # names, drawn with gecko from the census frequency tables
    n_m = sum(m["sex"] == "M" for m in members)
    n_f = len(members) - n_m
    pool_m = gg.from_frequency_table(src.male, "value", "freq", rng=set_rng(spec, "given_m"))(n_m + 200)[0].tolist()
    pool_f = gg.from_frequency_table(src.female, "value", "freq", rng=set_rng(spec, "given_f"))(n_f + 200)[0].tolist()
    family = gg.from_frequency_table(src.last, "value", "freq", rng=set_rng(spec, "family"))(family_slots)[0].tolist()
    im = jf = 0
    for idx, m in enumerate(members):
        if m["sex"] == "M":
            m["given"] = pool_m[im]
            im += 1
        else:
            m["given"] = pool_f[jf]
            jf += 1
        m["family"] = family[m["slot"]]
        if m.get("twin_of") is not None:
            twin = members[m["twin_of"]]
            while m["given"] == twin["given"]:  # twins have different given names
                if m["sex"] == "M":
                    m["given"] = pool_m[im]
                    im += 1
                else:
                    m["given"] = pool_f[jf]
                    jf += 1
        if m.get("junior"):
            father = next(x for x in members[idx::-1] if x["hh"] == m["hh"] and x["role"] == "head")
            m["given"] = father["given"]

    # namesakes: some adults carry the full name (and sex) of an unrelated adult
    rn = set_rng(spec, "namesakes")
    adults = [i for i, m in enumerate(members) if m["adult"] and m["role"] != "partner"]
    for i in adults:
        if rn.random() < NAMESAKE_SHARE:
            j = adults[int(rn.integers(0, len(adults)))]
            if members[j]["hh"] != members[i]["hh"]:
                for key in ("given", "family", "sex"):
                    members[i][key] = members[j][key]

    # addresses: (city, postcode) drawn with gecko from the city table; street of that city; house number
    table, streets, area_codes = _places(spec, src, n_households)
    cp = gg.from_multicolumn_frequency_table(table, ["city", "postcode"], "freq", rng=set_rng(spec, "address_city"))(
        n_households)
    ra = set_rng(spec, "address")
    house = np.clip(np.exp(ra.normal(6.0, 1.3, n_households)), 1, 19999).astype(int)
    hh_rows = []
    for h in range(n_households):
        city, postcode = cp[0].iat[h], cp[1].iat[h]
        street = streets[city][int(ra.integers(0, len(streets[city])))]
        hh_rows.append((h, f"{house[h]} {street}", city, postcode, area_codes[city]))
    households = pd.DataFrame(hh_rows, columns=["hh", "street", "city", "postcode", "area"])

    # phones: a landline per household; adults keep their own mobile with OWN_MOBILE_SHARE
    rp = set_rng(spec, "phones")
    all_areas = [area_codes[c] for c, _ in src.cities]

    def number(area: str) -> str:
        return f"{area}{int(rp.integers(2, 10))}{int(rp.integers(0, 100)):02d}{int(rp.integers(0, 10000)):04d}"

    landline = [number(households.at[h, "area"]) for h in range(n_households)]
    for m in members:
        if m["adult"] and rp.random() < OWN_MOBILE_SHARE:
            area = households.at[m["hh"], "area"] if rp.random() < 0.8 else all_areas[
                int(rp.integers(0, len(all_areas)))]
            m["phone"] = number(area)
        else:
            m["phone"] = landline[m["hh"]]

    persons = pd.DataFrame({
        "person": np.arange(len(members)),
        "hh": [m["hh"] for m in members],
        "role": [m["role"] for m in members],
        "given_name": [m["given"] for m in members],
        "family_name": [m["family"] for m in members],
        "dob": [m["dob"] for m in members],
        "sex": [m["sex"] for m in members],
        "phone": [m["phone"] for m in members],
    })
    persons = persons.merge(households[["hh", "street", "city", "postcode"]], on="hh", how="left")
    return persons, households


# --------------------------------------------------------------------------- records


def person_records(spec: SetSpec, persons: pd.DataFrame, households: pd.DataFrame) -> pd.DataFrame:
    r = set_rng(spec, "records")
    k = np.arange(1, spec.max_records + 1)
    p = k.astype(float) ** -spec.zipf
    counts = r.choice(k, size=len(persons), p=p / p.sum())
    rec = persons.loc[np.repeat(persons.index.to_numpy(), counts)].reset_index(drop=True)
    ag = set_rng(spec, "agencies")
    w = np.array([a.weight for a in spec.agencies])
    rec["agency"] = [spec.agencies[i].name for i in ag.choice(len(spec.agencies), size=len(rec), p=w / w.sum())]
    # moves: the record shows another household's address
    rm = set_rng(spec, "moves")
    moved = np.flatnonzero(rm.random(len(rec)) < spec.move_share)
    other = rm.integers(0, len(households), size=len(moved))
    for col in ("street", "city", "postcode"):
        values = rec[col].to_numpy(dtype=object)
        values[moved] = households[col].to_numpy(dtype=object)[other]
        rec[col] = values
    return rec
