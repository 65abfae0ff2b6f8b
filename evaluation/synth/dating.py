"""Dating a county relative to a given day (``as_of``): the same county, moved by whole years.

The generator's calendar is fixed (records 2018-2025, incidents 2026-01-01 .. 2026-07-01), so a
benchmark re-run on another day writes the same bytes. A service judges its access policy at the
server's clock, though, and refuses incidents from the future: a demo on a county of a fixed year
would show nothing once its consents and expiries lapse. ``redate(tables, as_of)`` moves every
date of the written files by the largest whole number of years that keeps the incident window
in the past at ``as_of`` (its end falls within the year before ``as_of``).

Whole years, not days, because the files state ages: a date of birth, a birth year and a
call-taker's approximate age must keep agreeing with each other and with the incident's date.
Every ``YYYY-…`` value of a date column gets its year moved (the rest of the text kept, so a
deliberately impossible date stays impossible; 29 February becomes the 28th in a common year),
every birth year likewise, the month an item's text names ("(case manager; 2018-09)") too, and
an Eastern-time stamp gets the UTC offset of its new date. Only the written files move: the
latent tables a ``CountySummary`` carries in memory keep the fixed calendar.
"""
from __future__ import annotations

import calendar
import re
from datetime import date

import numpy as np
import pandas as pd

from evaluation.synth.clock import dst_offsets

#: The first day after the incident window (incidents.INCIDENT_END, local time).
INCIDENT_WINDOW_END = date(2026, 7, 1)
DATE_COLUMNS = {
    "records": ("dob", "recorded_at"),
    "incidents": ("received_at", "subject_dob"),
    "context_items": ("observed_at", "last_verified_at", "review_due", "expires_at"),
    "consents": ("valid_from", "valid_until", "revoked_at", "signed_at"),
}
YEAR_COLUMNS = {"records": ("birth_year",), "demographics": ("birth_year",)}
_DATE = re.compile(r"^(\d{4})(-\d\d-\d\d)(.*)$")
_TEXT_MONTH = re.compile(r"; (\d{4})(-\d\d)\)$")
_EASTERN = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d)(:\d\d)?(-0[45]:00)$")


def years_back_from(as_of: date) -> int:
    """The whole years to add so that the incident window ends on or before ``as_of`` (negative: move back)."""
    years = as_of.year - INCIDENT_WINDOW_END.year
    return years - 1 if (as_of.month, as_of.day) < (INCIDENT_WINDOW_END.month, INCIDENT_WINDOW_END.day) else years


def redate(tables: dict[str, pd.DataFrame], as_of: date) -> dict[str, pd.DataFrame]:
    """The county's tables with every date moved by ``years_back_from(as_of)`` years (new frames)."""
    years = years_back_from(as_of)
    if years == 0:
        return tables
    out = dict(tables)
    for name, columns in DATE_COLUMNS.items():
        if name in out:
            out[name] = out[name].assign(**{c: _eastern_offsets(_mapped(out[name][c], lambda v: _date(v, years)))
                                            for c in columns if c in out[name]})
    for name, columns in YEAR_COLUMNS.items():
        if name in out:
            out[name] = out[name].assign(**{c: _mapped(out[name][c], lambda v: _year(v, years))
                                            for c in columns if c in out[name]})
    if "context_items" in out and "text" in out["context_items"]:
        out["context_items"] = out["context_items"].assign(
            text=_mapped(out["context_items"]["text"],
                         lambda v: _TEXT_MONTH.sub(lambda m: f"; {int(m[1]) + years}{m[2]})", v) if isinstance(v, str) else v))
    return out


def _mapped(column: pd.Series, fn) -> pd.Series:
    """``fn`` applied once per distinct value (dates repeat a lot)."""
    values = column.unique()
    return column.map(dict(zip(values, (fn(v) for v in values))))


def _year(value, years: int):
    text = str(value)
    if re.fullmatch(r"\d{4}", text):
        moved = str(int(text) + years)
        return int(moved) if isinstance(value, (int, np.integer)) else moved
    return value


def _date(value, years: int):
    if not isinstance(value, str):
        return value
    match = _DATE.match(value)
    if match is None:
        return value
    year = int(match[1]) + years
    rest = match[2]
    if rest == "-02-29" and not calendar.isleap(year):
        rest = "-02-28"
    return f"{year:04d}{rest}{match[3]}"


def _eastern_offsets(column: pd.Series) -> pd.Series:
    """Each US Eastern stamp (`…T10:00:00-05:00`) with the UTC offset of its (new) date, by the generator's DST rule."""
    parts = column.astype(object).where(column.map(lambda v: isinstance(v, str)), "").str.extract(_EASTERN)
    stamped = parts[0].notna().to_numpy()
    if not stamped.any():
        return column
    local = parts.loc[stamped, 0].to_numpy(dtype="datetime64[m]").astype(np.int64)
    offset = np.where(dst_offsets(local + 300) == -240, "-04:00", "-05:00")   # as if standard time, then its rule
    out = column.copy()
    out[stamped] = parts.loc[stamped, 0].to_numpy(dtype=object) + parts.loc[stamped, 1].fillna("").to_numpy(dtype=object) + offset
    return out
