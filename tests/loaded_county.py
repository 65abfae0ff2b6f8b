"""A synthetic county loaded into a fresh store: the starting point of the service tests."""

from pathlib import Path

from api.ingest import ingest
from api.store import Store, open_store
from evaluation.synth.county import generate_county
from matching.model import MatcherModel


def loaded_county(directory: Path, persons: int, seed: int, db: str | None = None) -> tuple[str, Store]:
    """Generate a county in `directory`, ingest its records, items and consents; (db, store).

    `db`: the store, a SQLite path or a SQLAlchemy URL (an empty database); `directory/briefing.db` when absent.
    """
    generate_county(persons, seed, directory, progress=False)
    db = db or str(directory / "briefing.db")
    store = open_store(db).create()
    ingest(store, [directory / "records.csv", directory / "context_items.csv", directory / "consents.csv"],
           MatcherModel.load("models/matcher.json"))
    return db, store
