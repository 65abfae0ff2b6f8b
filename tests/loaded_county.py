"""A synthetic county loaded into a fresh store: the starting point of the service tests.

The service judges its access policy at its clock. The county's calendar is fixed (incidents from
2026-01-01 to 2026-07-01), so a test that posts the county's incidents and expects their items
freezes the app's clock at `COUNTY_NOW`, the end of that window: `create_app(db, clock=county_clock)`.
A test that wants the real clock instead dates the county with `as_of` (evaluation/synth/dating.py).
"""

from datetime import date, datetime, timezone
from pathlib import Path

from sqlalchemy import select

from api.service.ingest import ingest
from api.service.reference import person_reference, record_reference, reference_secret
from api.service.store import Store, open_store, records
from evaluation.synth.county import generate_county
from matching.model import MatcherModel

#: The end of the synthetic county's incident window: every incident is before it, within half a year.
COUNTY_NOW = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)


def county_clock() -> datetime:
    """The service clock of tests that replay the county's incidents."""
    return COUNTY_NOW


def loaded_county(directory: Path, persons: int, seed: int, db: str | None = None,
                  as_of: date | None = None) -> tuple[str, Store]:
    """Generate a county in `directory`, ingest its records, items and consents; (db, store).

    `db`: the store, a SQLite path or a SQLAlchemy URL (an empty database); `directory/briefing.db` when absent.
    `as_of`: date the county so that its incidents are in the past on that day (default: the fixed calendar).
    """
    generate_county(persons, seed, directory, progress=False, as_of=as_of)
    db = db or str(directory / "briefing.db")
    store = open_store(db).create()
    ingest(store, [directory / "records.csv", directory / "context_items.csv", directory / "consents.csv"],
           MatcherModel.load("models/matcher.json"))
    return db, store


def shown_person(store: Store, person_id: str) -> str:
    """What a responder is told for `person_id` by a service over `store` (api.service.reference)."""
    return person_reference(person_id, reference_secret(store))


def shown_record(store: Store, record_id: str) -> str:
    """What a responder is told for `record_id` by a service over `store` (api.service.reference)."""
    return record_reference(record_id, reference_secret(store))


SUBJECT_FIELDS = ("given_name", "middle_name", "family_name", "name_suffix", "dob", "sex", "phone", "email", "street",
                  "city", "postcode")


def stored_subject(store: Store, record_id: str) -> dict:
    """A subject that describes one stored record: its identity fields that are filled."""
    with store.engine.connect() as connection:
        row = connection.execute(select(records).where(records.c.record_id == record_id)).mappings().one()
    return {k: row[k] for k in SUBJECT_FIELDS if row[k]}
