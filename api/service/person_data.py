"""Reads of person data from the store, typed for the resolver and the access policy.

Items and consents are read per request (a retraction or a revoked consent takes effect on the
next request); `index_frames` feeds the resolver's in-memory index at start-up; `person_identity` is a
steward's audited read of a person's records (identity fields only).

A stored row that no longer reads as an item or a consent (written before a rule tightened, or
by hand) is left out and logged, never raised: one bad row must not turn every briefing about the
person into an error, and leaving it out fails closed (an unread consent permits nothing, an
unread item is not shown).
"""

from __future__ import annotations

import logging

import pandas as pd
from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam, select

from api.service.audit import append, audit_fields
from api.service.refusals import NotFound
from api.service.store import RECORD_FIELDS, Store, clusters, consents, context_items, records
from scoring.item import Consent, ContextItem, Principal

log = logging.getLogger("briefing")


def index_frames(store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records in canonical columns, clusters) for building the resolver: every record with its person, read
    by one statement, so a record deleted or written while a million are read is in both frames or in neither."""
    with store.engine.connect() as connection:
        both = pd.read_sql(select(records, clusters.c.person_id).join(
            clusters, clusters.c.record_id == records.c.record_id), connection)
    return both.drop(columns=["ingested_at", "person_id"]), both[["record_id", "person_id"]]


def _of_person(table):
    """The rows of `table` hanging on a person's records (`person_id` a bound parameter), each with its record's
    agency. Built once per table: every briefing reads both, and building a statement costs more than running it."""
    return (select(table, records.c.agency.label("record_agency"))
            .join(records, records.c.record_id == table.c.record_id)
            .join(clusters, clusters.c.record_id == table.c.record_id)
            .where(clusters.c.person_id == bindparam("person_id")))


_ITEMS, _CONSENTS = _of_person(context_items), _of_person(consents)


def person_items(connection, person_id: str) -> list[ContextItem]:
    """Every context item on a person's records that reads as one (one query)."""
    return _readable(ContextItem, connection.execute(_ITEMS, {"person_id": person_id}).mappings(), "item_id")


def person_consents(connection, person_id: str) -> list[Consent]:
    """Every consent on a person's records that reads as one (one query)."""
    return _readable(Consent, connection.execute(_CONSENTS, {"person_id": person_id}).mappings(), "consent_id")


def _readable(model: type[BaseModel], rows, key: str) -> list:
    out = []
    for row in rows:
        try:
            out.append(model(**{k: v for k, v in row.items() if v is not None}))
        except ValidationError as exc:
            log.warning("stored %s %r does not read as one and is left out: %s", key, row[key], exc.errors()[0]["msg"])
    return out


def person_identity(store: Store, principal: Principal, person_id: str) -> list[dict]:
    """A person's records, identity fields only (record_id and every RECORD_FIELDS value; no context items), for a
    steward reviewing matches; audited as `person_read` in the transaction that reads. NotFound if unknown."""
    with store.begin() as connection:
        rows = connection.execute(select(records).join(clusters, clusters.c.record_id == records.c.record_id)
                                  .where(clusters.c.person_id == person_id).order_by(records.c.record_id)).mappings().all()
        if not rows:
            raise NotFound(f"no person {person_id!r}")
        append(connection, "person_read", {**audit_fields(principal, "role"), "person_id": person_id,
                                           "records": [r["record_id"] for r in rows]}, principal=principal.name)
    return [{"record_id": r["record_id"], **{f: r[f] for f in RECORD_FIELDS}} for r in rows]
