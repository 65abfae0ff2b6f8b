"""Reads of person data from the store, typed for the resolver and the access policy.

Items and consents are read per request (a retraction or a revoked consent takes effect on the
next request); `index_frames` feeds the resolver's in-memory index at start-up.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import select

from api.store import Store, clusters, consents, context_items, records
from scoring.item import Consent, ContextItem


def index_frames(store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records in canonical columns, clusters) for building the resolver."""
    with store.engine.connect() as connection:
        frame = pd.read_sql(select(records), connection).drop(columns=["ingested_at"])
        people = pd.read_sql(select(clusters), connection)
    return frame, people


def person_records(connection, person_id: str) -> dict[str, str | None]:
    """record_id -> agency for every record of a person."""
    rows = connection.execute(select(records.c.record_id, records.c.agency).join(
        clusters, clusters.c.record_id == records.c.record_id).where(clusters.c.person_id == person_id)).all()
    return dict(rows)


def person_items(connection, agencies: dict[str, str | None]) -> list[ContextItem]:
    rows = connection.execute(select(context_items).where(context_items.c.record_id.in_(list(agencies)))).mappings().all()
    return [ContextItem(**{k: v for k, v in row.items() if v is not None}, record_agency=agencies[row["record_id"]])
            for row in rows]


def person_consents(connection, agencies: dict[str, str | None]) -> list[Consent]:
    rows = connection.execute(select(consents).where(consents.c.record_id.in_(list(agencies)))).mappings().all()
    return [Consent(**{k: v for k, v in row.items() if v is not None}, record_agency=agencies[row["record_id"]])
            for row in rows]
