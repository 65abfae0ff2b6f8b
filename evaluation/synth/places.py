"""Places and phone numbers: street/city/postcode pools (built once with a
seeded Faker), an address book, street rendering styles, and unique phones."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STATE = "OH"
# Local area codes (weights) -- numbers are random, valid-looking, never taken
# from any real person or directory.
AREA_CODES = np.array([614, 740, 380, 937, 513])
AREA_WEIGHTS = np.array([0.50, 0.25, 0.15, 0.06, 0.04])

# (full, USPS abbreviation, weight)
SUFFIXES: tuple[tuple[str, str, float], ...] = (
    ("Street", "St", 0.22), ("Avenue", "Ave", 0.16), ("Road", "Rd", 0.14), ("Drive", "Dr", 0.12),
    ("Lane", "Ln", 0.08), ("Court", "Ct", 0.06), ("Boulevard", "Blvd", 0.04), ("Place", "Pl", 0.04),
    ("Circle", "Cir", 0.04), ("Way", "Way", 0.04), ("Terrace", "Ter", 0.03), ("Parkway", "Pkwy", 0.03),
)
_FULL = np.array([s[0] for s in SUFFIXES], dtype=object)
_ABBR = np.array([s[1] for s in SUFFIXES], dtype=object)
_TREES = ("Oak", "Maple", "Elm", "Pine", "Cedar", "Walnut", "Cherry", "Willow", "Birch", "Hickory",
          "Sycamore", "Chestnut", "Poplar", "Ash", "Spruce", "Magnolia", "Dogwood", "Locust")
_ORDINALS = tuple(f"{i}{'th' if 10 <= i % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(i % 10, 'th')}"
                  for i in range(1, 41))

# Street rendering styles (index -> description), used by sources.py.
STYLE_UPPER_ABBR = 0   # 123 MAPLE AVE APT 4
STYLE_TITLE_ABBR = 1   # 123 Maple Ave Apt 4
STYLE_TITLE_HASH = 2   # 123 Maple Ave #4
STYLE_UPPER_FULL = 3   # 123 MAPLE AVENUE UNIT 4
STYLE_TITLE_FULL = 4   # 123 Maple Avenue Apt 4


@dataclass
class Places:
    street_base: np.ndarray      # object, title case
    street_suffix: np.ndarray    # int index into SUFFIXES
    street_city: np.ndarray      # int index into city_names
    street_zip: np.ndarray       # object, 5 digits
    city_names: np.ndarray       # object, title case
    # address book (grown by add_addresses)
    a_num: list = field(default_factory=list)
    a_street: list = field(default_factory=list)
    a_unit: list = field(default_factory=list)
    _frozen: tuple | None = None

    def add_addresses(self, rng: np.random.Generator, n: int, unit_rate: float = 0.3) -> np.ndarray:
        start = sum(len(x) for x in self.a_num)
        num = np.where(rng.random(n) < 0.7, rng.integers(100, 3000, n), rng.integers(1, 9999, n))
        street = rng.integers(0, len(self.street_base), n)
        has_unit = rng.random(n) < unit_rate
        unit_no = rng.integers(1, 40, n)
        letter = rng.random(n) < 0.3
        unit = np.array([("" if not h else f"{u}{'AB'[u % 2]}" if lt else str(u))
                         for h, u, lt in zip(has_unit, unit_no, letter)], dtype=object)
        self.a_num.append(num.astype(np.int32))
        self.a_street.append(street.astype(np.int32))
        self.a_unit.append(unit)
        self._frozen = None
        return np.arange(start, start + n, dtype=np.int64)

    def book(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._frozen is None:
            self._frozen = (np.concatenate(self.a_num), np.concatenate(self.a_street),
                            np.concatenate(self.a_unit))
        return self._frozen

    def components(self, addr: np.ndarray) -> dict[str, np.ndarray]:
        """Latent address parts for address ids (``-1`` -> empty)."""
        num, street, unit = self.book()
        ok = addr >= 0
        a = np.where(ok, addr, 0)
        s = street[a]
        return {
            "number": np.where(ok, num[a], 0),
            "street_idx": np.where(ok, s, -1),
            "unit": np.where(ok, unit[a], ""),
            "city": np.where(ok, self.city_names[self.street_city[s]], ""),
            "postcode": np.where(ok, self.street_zip[s], ""),
        }

    def render_street(self, addr: np.ndarray, style: np.ndarray, drop_unit: np.ndarray) -> np.ndarray:
        """Street line for address ids in the given styles; '' for ``addr < 0``."""
        num, street, unit = self.book()
        out = np.empty(len(addr), dtype=object)
        base = self.street_base
        up_base = np.array([b.upper() for b in base], dtype=object)
        suf = self.street_suffix
        for i in range(len(addr)):
            a = addr[i]
            if a < 0:
                out[i] = ""
                continue
            s = street[a]
            st = style[i]
            u = "" if drop_unit[i] else unit[a]
            k = suf[s]
            if st == STYLE_UPPER_ABBR:
                line = f"{num[a]} {up_base[s]} {_ABBR[k].upper()}" + (f" APT {u}" if u else "")
            elif st == STYLE_TITLE_ABBR:
                line = f"{num[a]} {base[s]} {_ABBR[k]}" + (f" Apt {u}" if u else "")
            elif st == STYLE_TITLE_FULL:
                line = f"{num[a]} {base[s]} {_FULL[k]}" + (f" Apt {u}" if u else "")
            elif st == STYLE_TITLE_HASH:
                line = f"{num[a]} {base[s]} {_ABBR[k]}" + (f" #{u}" if u else "")
            else:
                line = f"{num[a]} {up_base[s]} {_FULL[k].upper()}" + (f" UNIT {u}" if u else "")
            out[i] = line
        return out


def build_places(seed: int, n_streets: int = 3000, n_cities: int = 9) -> Places:
    """Street, city and postcode pools from a seeded Faker (called once)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = np.random.default_rng([seed, 101])
    cities: list[str] = []
    while len(cities) < n_cities:
        c = fake.city()
        if c not in cities:
            cities.append(c)
    # street names: Faker's en_US name lists (read once) plus trees and ordinals
    from faker.providers.person.en_US import Provider as _Person

    pool = sorted({n for n in list(_Person.last_names) + list(_Person.first_names) if n.isalpha()} - set(_TREES))
    pick = rng.permutation(len(pool))[: max(n_streets - len(_TREES) - len(_ORDINALS), 0)]
    bases = list(_TREES) + list(_ORDINALS) + [pool[i] for i in sorted(pick)]
    n_streets = len(bases)
    # each city gets 1-4 postcodes (a made-up block of 5-digit codes)
    zip_pool = rng.choice(np.arange(43001, 43999), size=n_cities * 4, replace=False)
    city_weight = rng.dirichlet(np.full(n_cities, 2.0))
    street_city = rng.choice(n_cities, size=n_streets, p=city_weight)
    n_zip = rng.integers(1, 5, n_cities)
    street_zip = np.array([str(zip_pool[c * 4 + rng.integers(0, n_zip[c])]) for c in street_city], dtype=object)
    w = np.array([s[2] for s in SUFFIXES])
    suffix = rng.choice(len(SUFFIXES), size=n_streets, p=w / w.sum())
    return Places(np.array(bases, dtype=object), suffix, street_city, street_zip, np.array(cities, dtype=object))


def unique_phones(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct 10-digit US numbers (int64): local area code, NXX 200-999
    excluding N11, 555, 950, 958, 959, 976."""
    bad = {555, 950, 958, 959, 976} | {x * 100 + 11 for x in range(2, 10)}
    ok_nxx = np.array([x for x in range(200, 1000) if x not in bad])
    got = np.empty(0, dtype=np.int64)
    while len(got) < n:
        m = int((n - len(got)) * 1.05) + 16
        area = AREA_CODES[rng.choice(len(AREA_CODES), size=m, p=AREA_WEIGHTS)]
        nums = area.astype(np.int64) * 10_000_000 + ok_nxx[rng.integers(0, len(ok_nxx), m)] * 10_000 \
            + rng.integers(0, 10_000, m)
        allv = np.concatenate([got, nums])
        _, first = np.unique(allv, return_index=True)
        got = allv[np.sort(first)]
    return got[:n]
