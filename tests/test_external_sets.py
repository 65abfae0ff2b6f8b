"""The committed gecko-syndata benchmark sets (evaluation/data/external/) and the script that makes them.

The SHA-256 of each committed file is pinned here, and the generator (evaluation/synth/gecko_sets.py) is re-run
into a temporary directory to check it writes exactly those bytes, so neither the files nor the script can
change silently. Regenerating both sets takes about 6 s. If a change is intended: run
``python -m evaluation.synth.gecko_sets --out evaluation/data/external`` and update PINNED (and evaluation/DATA.md).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pandas as pd
import pytest

from matching.record import read_records
from tests.postgres import in_ci

EXTERNAL = Path(__file__).resolve().parents[1] / "evaluation" / "data" / "external"

#: name -> (SHA-256 of the committed .csv.gz, SHA-256 of the CSV inside it, records, persons, max records/person)
PINNED = {
    "gecko_small": ("5f3832441e65a8b57bb2369ecc47da845ed3ad724db28025f41cadcd44e74d62",
                    "1a3c872910d28e8265ac61c71f896600a82a5e277419f6c0aadfd697487fb3aa", 16324, 7000, 10),
    "gecko_large": ("23fe6fcffcaa0b221d4688ab55d910641d4e28bf21d908ef47270036cfaccdfd",
                    "313d768dc9b0b0852379daa8e69211a8cbf4aa60833e3689866fac064ea63c76", 57260, 13000, 20),
}
COLUMNS = ["record_id", "agency", "given_name", "family_name", "dob", "sex", "phone", "street", "city",
           "postcode", "person_key"]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_committed_file_matches_pinned_hashes(name):
    data = (EXTERNAL / f"{name}.csv.gz").read_bytes()
    gz_sha, csv_sha, *_ = PINNED[name]
    assert _sha256(data) == gz_sha, f"{name}.csv.gz changed; regenerate it with evaluation.synth.gecko_sets"
    assert _sha256(gzip.decompress(data)) == csv_sha
    assert len(data) < 3_000_000


@pytest.mark.parametrize("name", sorted(PINNED))
def test_committed_file_reads_cleanly(name, tmp_path):
    _, _, records, persons, max_per_person = PINNED[name]
    csv = tmp_path / f"{name}.csv"
    csv.write_bytes(gzip.decompress((EXTERNAL / f"{name}.csv.gz").read_bytes()))

    parsed = read_records(csv)  # raises RecordsFileError if any row is rejected
    assert len(parsed.frame) == records
    assert parsed.impossible_dates == 0
    assert len(parsed.warnings) == 1 and "ignored unknown columns: 'person_key'" in parsed.warnings[0]

    raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(raw.columns) == COLUMNS
    assert raw["record_id"].is_monotonic_increasing and raw["record_id"].is_unique
    assert (raw["person_key"] != "").all()
    per_person = raw.groupby("person_key").size()
    assert len(per_person) == persons
    assert per_person.min() == 1 and per_person.max() == max_per_person
    assert raw["sex"].isin(["", "M", "F"]).all()
    assert raw["dob"].str.fullmatch(r"(\d{4}-\d{2}-\d{2})?").all()
    assert raw["postcode"].str.fullmatch(r"(\d{5})?").all()
    assert (raw["phone"].str.replace(r"\D", "", regex=True).str.len().isin([0, 10])).all()


def test_generator_reproduces_committed_files(tmp_path):
    try:
        import gecko  # noqa: F401
    except ImportError as exc:  # the Makefile installs gecko-syndata==0.6.4 --no-deps (and lxml)
        if in_ci():
            pytest.fail(f"CI=true: gecko-syndata must be installed: {exc}", pytrace=False)
        pytest.skip(f"gecko-syndata not installed: {exc}")
    from evaluation.synth import gecko_sets

    assert gecko_sets.main(["--out", str(tmp_path), "--quiet"]) == 0
    for name, (gz_sha, csv_sha, *_) in PINNED.items():
        data = (tmp_path / f"{name}.csv.gz").read_bytes()
        assert _sha256(gzip.decompress(data)) == csv_sha, f"evaluation.synth.gecko_sets no longer reproduces {name}"
        assert _sha256(data) == gz_sha, f"{name}: same CSV but different gzip bytes (zlib differs?)"
