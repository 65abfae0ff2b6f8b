"""The latent population: the `Population` (per-person arrays, address and phone histories, places) and
what is true of a person at a given time (`address_at`, `mobile_at`, `family_at`), with the record window
and the kinds of persons and addresses.

Persons are drawn in persons.py and their histories in population_history.py; per-person arrays
live in ``Population.a`` (index = person row) and are exported as DataFrames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.synth.places import Places

WINDOW_START = np.datetime64("2018-01-01T00:00", "m")
WINDOW_END = np.datetime64("2026-01-01T00:00", "m")
T_START = int(WINDOW_START.astype(np.int64))
T_END = int(WINDOW_END.astype(np.int64))
NEVER = np.iinfo(np.int64).max // 4      # "no event"
ALWAYS = -NEVER                          # "before any record"

KINDS = ("single", "family", "twins", "jr_sr", "group_home")
ADDR_HOME, ADDR_SHELTER, ADDR_STREET, ADDR_GROUP = 0, 1, 2, 3
ADDR_KIND_NAMES = ("home", "shelter", "street", "group_home")
UTIL_NAMES = ("low", "medium", "high")


@dataclass
class Population:
    a: dict                 # per-person numpy arrays
    addr_hist: dict         # person, valid_from, addr, kind (sorted by person, valid_from)
    phone_hist: dict        # person, valid_from, phone (mobile numbers; sorted)
    places: Places
    shelters: np.ndarray    # address ids
    hotspots: np.ndarray    # address ids (public places used as incident locations)

    @property
    def n(self) -> int:
        return len(self.a["race"])


def _lookup(hist_person: np.ndarray, hist_from: np.ndarray, person: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Row index of the history entry valid at ``t`` (-1 if none).  Histories are
    sorted by (person, valid_from); keys pack person and a clipped time band."""
    if len(hist_person) == 0:
        return np.full(len(person), -1, dtype=np.int64)
    band = 2**27
    key = hist_person.astype(np.int64) * 2**29 + (np.clip(hist_from - T_START, -band, band) + band)
    qkey = person.astype(np.int64) * 2**29 + (np.clip(t - T_START, -band, band) + band)
    pos = np.searchsorted(key, qkey, side="right") - 1
    ok = (pos >= 0) & (hist_person[np.maximum(pos, 0)] == person)
    return np.where(ok, pos, -1)


def _take(values: np.ndarray, i: np.ndarray, fill) -> np.ndarray:
    if len(values) == 0:
        return np.full(len(i), fill)
    return np.where(i >= 0, values[np.maximum(i, 0)], fill)


def address_at(pop: Population, person: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(address id, kind) of each person at minute ``t``; id -1 = no fixed address."""
    h = pop.addr_hist
    i = _lookup(h["person"], h["valid_from"], person, t)
    return _take(h["addr"], i, -1), _take(h["kind"], i, ADDR_STREET)


def mobile_at(pop: Population, person: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Own mobile number at ``t`` (int64, -1 = none)."""
    h = pop.phone_hist
    i = _lookup(h["person"], h["valid_from"], person, t)
    return _take(h["phone"], i, -1)


def family_at(pop: Population, person: np.ndarray, t: np.ndarray) -> np.ndarray:
    a = pop.a
    married = (a["marriage_at"][person] <= t) & (a["family_married"][person] != "")
    return np.where(married, a["family_married"][person], a["family_birth"][person])
