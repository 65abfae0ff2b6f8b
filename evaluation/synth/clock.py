"""The synthetic county's clock: US Eastern time, as every agency of the county stamps its records and calls.

Times inside the generator are minutes since the epoch (UTC, ``int64``); `dst_offsets` gives each its UTC offset
under the US daylight-saving rule and `format_recorded_at` writes it as a local stamp with that offset (records'
``recorded_at``, incidents' ``received_at``). dating.py moves stamps to other years with the same rule.
"""
from __future__ import annotations

import numpy as np


def dst_offsets(t: np.ndarray) -> np.ndarray:
    """UTC offset in minutes for US Eastern time (DST: 2nd Sun Mar 07:00 UTC to 1st Sun Nov 06:00 UTC)."""
    years = np.arange(1970, 2201)
    def nth_sunday(y, month, nth):
        first = np.array([f"{yy}-{month:02d}-01" for yy in y], dtype="datetime64[D]")
        dow = (first.astype(np.int64) + 3) % 7  # 0 = Monday
        return first + ((6 - dow) % 7 + 7 * (nth - 1)).astype("timedelta64[D]")
    start = nth_sunday(years, 3, 2).astype("datetime64[m]").astype(np.int64) + 7 * 60
    end = nth_sunday(years, 11, 1).astype("datetime64[m]").astype(np.int64) + 6 * 60
    yi = (t.astype("datetime64[m]").astype("datetime64[Y]").astype(np.int64)).clip(0, len(years) - 1)
    dst = (t >= start[yi]) & (t < end[yi])
    return np.where(dst, -240, -300)


def format_recorded_at(t: np.ndarray) -> np.ndarray:
    """Minutes since the epoch (UTC) as US Eastern local stamps, ``YYYY-MM-DDTHH:MM:00-05:00`` (-04:00 in DST)."""
    off = dst_offsets(t)
    local = np.datetime_as_string((t + off).astype("datetime64[m]"), unit="m")
    suffix = np.where(off == -240, ":00-04:00", ":00-05:00")
    return np.char.add(local.astype("U16"), suffix).astype(object)
