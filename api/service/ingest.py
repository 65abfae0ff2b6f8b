"""`briefing ingest`: load records, context items and consents into the store, all or nothing.

Each file's kind is known from its columns (consents: `consent_id` + `recipients`; items:
`item_id` + `category`; records: `record_id`). Every file is validated before anything is
written: records by the strict reader (`matching.record`), items and consents row by row by
their typed models, and every item's and consent's `record_id` must name a record in the store
or in the same load. Any problem rejects the whole load with `file:line:column` messages.

Ownership: an item or a consent belongs to the agency of the record it hangs on when first
written, and never moves to a record of another agency: a load that would hang a stored item or
consent on a record of another agency, or change the agency of a stored record that items or
consents hang on (they would move with it), is rejected. `upsert` enforces the same rule in the
statement itself (`OwnershipConflict`), so no writer, and no race between two writers, can move one.

Times of items and consents are stored as UTC text of one fixed width (`utc_text`), so text
order is time order; a time with no UTC equivalent (years 1 to 9999) is refused. A resent
consent keeps the earliest revocation, compared as times (rows stored before normalisation may
carry any offset).

New records are linked so that every record belongs to a person: a bulk load (at least
`BULK_MIN` new records, or an empty store) re-links the whole store with the committed matcher
keeping person ids stable; a few records go through the real-time resolver (join a person at
`certain`, else start one). Rows upsert by id, so a feed may resend a file safely. Linking
happens before the write, so a failure leaves the store as it was; records written or deleted by
others while it linked are found in the change feed: a record written meanwhile keeps its person, one
deleted stays deleted, and a load hanging items on a record deleted meanwhile is refused whole. The
write is one transaction, or on SQLite, for a bulk load, staging in short ones and one short swap
(api.service.staging).

Stewards' live decisions bind both paths (api.service.stewardship): the bulk link gets them as
must-link / cannot-link constraints, the resolver path checks each record against them
(`steward_person`). Both store the pairs a steward should review in the same transaction: the
bulk link every pair in the model's review band `[review_low, link)` and the strongest pair of
every two persons it kept apart against their scores, the resolver each new record that joined
no person at `certain` (`reason` batch_band, held_apart / new_record); a pair already decided is
not reopened.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from operator import itemgetter
from pathlib import Path

import pandas as pd
from pydantic import Field, ValidationError, field_validator
from sqlalchemy import Table, select

from api.service.audit import append
from api.service.changes import latest, record_change, written_since
from api.service.staging import StagingConflict, staged_write
from api.service.stewardship import from_resolver, live_constraints, open_pairs, pair_rows, steward_person
from api.service.bulk import bulk_upsert
from api.service.owned_upsert import (OWNED, OwnershipConflict, carried_keys, chunked_rows, owners_of,
                                     refuse_resurrection, refuse_strays, upsert)
from api.service.store import RECORD_FIELDS, Store, clusters, consents, context_items, records
from api.service.times import in_utc_range, utc_text
from matching.model import MatcherModel
from matching.link import link_records
from matching.record import RecordsFileError, read_records
from matching.resolve import Resolver
from scoring.item import CONSENT_CATEGORIES, ID_LENGTH, LEGAL_CATEGORIES, Consent, ContextItem, Purpose

BULK_MIN = 1_000


class ItemIn(ContextItem):
    """A context item as a feed or a load writes it: a ContextItem whose times exist in UTC, and that
    was not observed or verified in the future (more than a day ahead of the writer's clock): a
    verification dated ahead would rank a copy above every other agency's and stretch a
    serious-threat disclosure's cap."""

    _utc_range = field_validator("observed_at", "last_verified_at", "review_due", "expires_at", mode="after")(in_utc_range)

    @field_validator("observed_at", "last_verified_at", mode="after")
    @classmethod
    def _not_ahead(cls, value):
        if value is not None and value > datetime.now(timezone.utc) + timedelta(days=1):
            raise ValueError("is in the future: an item is observed or verified no later than it is sent")
        return value


class ConsentIn(Consent):
    """A consent as a feed or a load writes it: stricter than the `Consent` the policy reads.

    Its times exist in UTC; every list is filled and bounded; every category is one Briefing
    knows, with at least one legal category: a consent of item categories alone would release
    nothing, and a misspelt category (`medicl`, `part2`) is refused here rather than stored to
    cover nothing. A consent already stored is still read as a `Consent`, and the policy fails
    closed on it (scoring.consent).
    """

    recipients: tuple[str, ...] = Field(min_length=1, max_length=50)
    purposes: tuple[Purpose, ...] = Field(min_length=1, max_length=len(Purpose))
    categories: tuple[str, ...] = Field(min_length=1, max_length=len(CONSENT_CATEGORIES))

    _utc_range = field_validator("valid_from", "valid_until", "revoked_at", "signed_at", mode="after")(in_utc_range)

    @field_validator("recipients", mode="after")
    @classmethod
    def _named(cls, values):
        if any(not value.strip() or len(value) > ID_LENGTH for value in values):
            raise ValueError(f"each recipient is an agency or a role name of 1 to {ID_LENGTH} characters")
        return values

    @field_validator("categories", mode="after")
    @classmethod
    def _known(cls, values):
        unknown = sorted(set(values) - CONSENT_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown[:5]))}: "
                             "use legal categories (PART2, PHI, CJI, ...) and item categories (medical, ...) as written")
        if not LEGAL_CATEGORIES.intersection(values):
            raise ValueError("list the legal categories the consent releases (PART2, PHI, ...): item categories "
                             "alone release nothing")
        return values


class IngestError(ValueError):
    """The load was rejected; `problems` are `file:line:column: message` lines. Nothing was written."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems[:20]) + (f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""))
        self.problems = problems


@dataclass
class IngestSummary:
    records: int = 0
    new_records: int = 0
    context_items: int = 0
    consents: int = 0
    linking: str = "none"
    persons_touched: int = 0
    review_pairs: list[dict] = field(default_factory=list)    # record_id_l, record_id_r, match_probability[, reason, detail]
    review_reason: str = "new_record"                         # of a pair that names none
    seconds: dict = field(default_factory=dict)               # validate, link, write: where a load's time goes


def file_kind(columns: list[str]) -> str | None:
    names = set(columns)
    if {"consent_id", "recipients"} <= names:
        return "consents"
    if {"item_id", "category"} <= names:
        return "context_items"
    if "record_id" in names:
        return "records"
    return None


def ingest(store: Store, paths: list[str | Path], model: MatcherModel, progress=None,
           principal: str = "cli:ingest") -> IngestSummary:
    """Validate every file, link new records, then write everything (and one audit event) in one transaction."""
    step = progress or (lambda label: None)
    step("validating")
    started = time.perf_counter()
    batch_records, problems, headers = [], [], {}
    carried: dict[Table, list[tuple[Path, int, tuple]]] = {table: [] for table in OWNED}
    for path in map(Path, paths):
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        header = headers[path] = list(pd.read_csv(path, nrows=0, dtype=str).columns)
        kind = file_kind(header)
        if kind is None:
            problems.append(f"{path}:1: cannot tell what this file holds: records need record_id, context items "
                            f"item_id and category, consents consent_id and recipients")
        elif kind == "records":
            try:
                batch_records.append((path, read_records(path).frame))
            except RecordsFileError as exc:
                problems.extend(str(p) for p in exc.problems)
        else:
            table = context_items if kind == "context_items" else consents
            problems.extend(_validate_rows(path, header, table, carried[table]))
    with store.engine.connect() as connection:
        position = latest(connection)            # writes after it are caught up by a staged bulk write
    existing = _stored_records(store)
    frames = [frame for _, frame in batch_records]
    batch = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["record_id"])
    known = set(existing["record_id"]) | set(batch["record_id"].astype(str))
    for table, rows in carried.items():
        at = _COLUMNS[table].index("record_id")
        problems.extend(f"{path}:{line}: record_id {values[at]!r} is in neither the store nor this load"
                        for path, line, values in rows if values[at] not in known)
    del known
    present, moved = {}, frozenset()
    if not problems:
        problems, present, moved = _ownership_problems(store, existing, batch_records, carried, headers)
    if problems:
        raise IngestError(problems)
    del batch_records, frames                    # held no longer than needed: the load's memory peaks in its link

    summary = IngestSummary(records=len(batch), context_items=len(carried[context_items]),
                            consents=len(carried[consents]))
    owned_values = {table: [values for _, _, values in rows] for table, rows in carried.items()}
    del carried
    validated = time.perf_counter()
    person_rows = _link(store, existing, batch, model, summary, step)
    step("writing")
    linked = time.perf_counter()
    now = datetime.now(timezone.utc).isoformat()
    try:
        _write(store, position, paths, batch, person_rows, owned_values, summary, now, principal, moved, present)
    except (OwnershipConflict, StagingConflict) as exc:   # a writer moved a row, or bulk-loaded, since the checks
        raise IngestError([str(exc)]) from None
    summary.seconds.update({"validate": round(validated - started, 2), "link": round(linked - validated, 2),
                            "write": round(time.perf_counter() - linked, 2)})
    return summary


def _write(store: Store, position: int, paths, batch, person_rows, owned_values: dict, summary: IngestSummary,
           now: str, principal: str, moved: frozenset[str], present: dict) -> None:
    """Everything the load writes, and its audit event, all or nothing: in one transaction, or on SQLite a
    bulk load's records, persons, items and consents staged first and swapped in (api.service.staging).
    `owned_values`: the load's items and consents, by table, as `_validate_rows` holds them.
    `moved`: the stored records the load gives to another agency (nothing may have been attached to them since);
    `present`: the load's items and consents that were stored when it was checked (none may have been deleted since:
    the load would bring it back)."""
    record_rows = batch_record_rows(batch, now)
    owned_rows = {table: [dict(zip(_COLUMNS[table], values), updated_at=now) for values in rows]
                  for table, rows in owned_values.items()}
    attached = {row["record_id"] for rows in owned_rows.values() for row in rows}
    if summary.linking == "batch" and store.engine.dialect.name == "sqlite":
        pairs = pair_rows(summary.review_pairs, summary.review_reason, now)

        def rest(connection) -> None:             # items and consents are staged with the records
            _write_attached(connection, paths, person_rows, {}, summary, principal)

        summary.seconds.update(staged_write(store, position, record_rows, person_rows, pairs, owned_rows, rest, moved,
                                            present))
        return
    with store.begin() as connection:
        bulk_upsert(connection, records, record_rows)
        _, deleted = written_since(connection, position)          # records deleted since the load read the store
        if deleted & attached:
            raise StagingConflict(f"record {sorted(deleted & attached)[0]!r}, which this load hangs items or "
                                  f"consents on, was deleted while the load was linked: nothing was written")
        if person_rows is not None:      # every record read has a row here; one written since keeps its own
            bulk_upsert(connection, clusters, [r for r in person_rows if r["record_id"] not in deleted])
        open_pairs(connection, [p for p in summary.review_pairs if not {p["record_id_l"], p["record_id_r"]} & deleted],
                   summary.review_reason, now)
        refuse_resurrection(connection, present)
        _write_attached(connection, paths, person_rows, owned_rows, summary, principal)
        refuse_strays(connection, set(moved), carried_keys(owned_rows))


def _write_attached(connection, paths, person_rows, owned_rows: dict, summary: IngestSummary, principal: str) -> None:
    """The load's items and consents (`owned_rows`, by table), its changes and its audit event."""
    for table, key in OWNED.items():
        upsert(connection, table, key, owned_rows.get(table, []))
    if person_rows is not None:               # last: on PostgreSQL it takes the lock that orders changes
        if summary.linking == "batch":
            record_change(connection, "rebuild")
        else:
            for row in person_rows:
                record_change(connection, "upsert", row["record_id"])
    append(connection, "ingest", {"files": [str(p) for p in paths], "records": summary.records,
                                  "new_records": summary.new_records, "context_items": summary.context_items,
                                  "consents": summary.consents, "linking": summary.linking,
                                  "persons_touched": summary.persons_touched,
                                  "review_pairs": len(summary.review_pairs)}, principal=principal)


def _validate_rows(path: Path, header: list[str], table: Table, out: list[tuple[Path, int, tuple]]) -> list[str]:
    """Validate a file of `table`'s rows (items or consents) by their typed model, appending `(path, line, values)`
    to `out` for each valid row, its values in `_COLUMNS[table]` order (`updated_at` left None, stamped when written);
    returns the `file:line:column` problems.

    Each row is made a row as soon as it is valid, not kept as its model, and is held as a tuple whose strings are
    shared with every equal one of the file: a load holds them through its link, when its memory peaks. A 1M
    county's 600,000 items took 1.6 GB as models, 0.3 GB so."""
    model_type, to_row = _CARRIED[table]
    key_at, in_order = _COLUMNS[table].index(OWNED[table]), itemgetter(*_COLUMNS[table])
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    problems = []
    seen: dict[str, int] = {}
    shared: dict[str, str] = {}
    names = [str(name) for name in frame.columns]
    for offset, values in enumerate(zip(*(frame[name].tolist() for name in frame.columns))):  # not to_dict: 3x slower
        line = offset + 2
        try:
            row = to_row(model_type(**{k: v for k, v in zip(names, values) if v != ""}), None)
        except ValidationError as exc:
            for error in exc.errors():
                name = str(error["loc"][0]) if error["loc"] else "row"
                column = header.index(name) + 1 if name in header else 1
                problems.append(f"{path}:{line}:{column}: {name}: {error['msg']}")
            continue
        values = in_order(row)
        kept = tuple(map(shared.setdefault, values, values))
        if kept[key_at] in seen:
            problems.append(f"{path}:{line}:{header.index(OWNED[table]) + 1}: {OWNED[table]} {kept[key_at]!r} "
                            f"repeats line {seen[kept[key_at]]}")
        seen[kept[key_at]] = line
        out.append((path, line, kept))
    return problems


def _agencies(existing: pd.DataFrame, batches: list[tuple[Path, pd.DataFrame]]
              ) -> tuple[dict[str, str | None], dict[str, str | None], list[tuple[Path, str]]]:
    """Every record's agency in the store and after the load, and the (file, record) the load gives another agency."""
    stored = {str(r): _text(a) for r, a in zip(existing["record_id"], existing["agency"])}
    after, changed = dict(stored), []
    for path, frame in batches:
        agencies = frame["agency"] if "agency" in frame else [None] * len(frame)
        for record_id, agency in zip(frame["record_id"].astype(str), agencies):
            if record_id in stored and stored[record_id] != _text(agency):
                changed.append((path, record_id))
            after[record_id] = _text(agency)
    return stored, after, changed


def _ownership_problems(store: Store, existing: pd.DataFrame, batches: list[tuple[Path, pd.DataFrame]],
                        carried: dict[Table, list[tuple[Path, int, tuple]]],
                        headers: dict[Path, list[str]]) -> tuple[list[str], dict, frozenset[str]]:
    """`file:line:column` problems of a load that would move a stored item or consent to another agency's record;
    the keys of the load's items and consents already stored, by table; and the stored records the load gives to
    another agency."""
    stored, after, changed = _agencies(existing, batches)
    problems, present = [], {}
    with store.engine.connect() as connection:
        for table, rows in carried.items():
            key = OWNED[table]
            key_at, record_at = _COLUMNS[table].index(key), _COLUMNS[table].index("record_id")
            hung = owners_of(connection, table, key, [values[key_at] for _, _, values in rows])
            present[table] = set(hung)
            for path, line, values in rows:
                ident, record_id = values[key_at], values[record_at]
                if ident in hung and stored.get(hung[ident]) != after.get(record_id):
                    problems.append(f"{path}:{line}:{headers[path].index('record_id') + 1}: record_id: {key} {ident!r} "
                                    f"hangs on a record of another agency than {record_id!r}: an item or consent "
                                    f"never moves to a record of another agency")
        attached = {r for table in (context_items, consents) for (r,) in chunked_rows(
            connection, lambda ids: select(table.c.record_id.distinct()).where(table.c.record_id.in_(ids)),
            [record_id for _, record_id in changed])}
    for path, record_id in changed:
        if record_id in attached:
            line, column = _record_line(path, record_id)
            problems.append(f"{path}:{line}:{column}: agency: record {record_id!r} has context items or consents: its "
                            f"agency cannot change (they would move with it to another agency)")
    return problems, present, frozenset(record_id for _, record_id in changed)


def _record_line(path: Path, record_id: str) -> tuple[int, int]:
    """(line where `record_id`'s row starts, column of `agency`) in a records CSV; read only to report a problem."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        at, column = header.index("record_id"), header.index("agency") + 1 if "agency" in header else 1
        start = reader.line_num + 1
        for row in reader:
            if len(row) > at and row[at].strip() == record_id:
                return start, column
            start = reader.line_num + 1
    return 1, column


def _stored_records(store: Store) -> pd.DataFrame:
    with store.engine.connect() as connection:
        frame = pd.read_sql(select(records), connection)
        people = pd.read_sql(select(clusters), connection)
    return frame.merge(people, on="record_id", how="left")


def _link(store: Store, existing: pd.DataFrame, batch: pd.DataFrame, model: MatcherModel, summary: IngestSummary,
          step) -> list[dict] | None:
    """Person ids for the load's records (and, for a bulk load, every record): rows for `clusters`."""
    if batch.empty:
        return None
    new_ids = set(batch["record_id"].astype(str)) - set(existing["record_id"])
    summary.new_records = len(new_ids)
    if existing.empty or len(new_ids) >= BULK_MIN:
        step(f"linking all {len(existing) + len(new_ids):,} records")
        kept = existing[~existing["record_id"].isin(set(batch["record_id"]))].drop(columns=["person_id", "ingested_at"])
        every = pd.concat([kept, batch], ignore_index=True) if len(kept) else batch
        previous = existing.dropna(subset=["person_id"])[["record_id", "person_id"]]
        with store.engine.connect() as connection:
            must, cannot = live_constraints(connection)
        result = link_records(every, model=model, previous=previous if len(previous) else None,
                              must_link=must, cannot_link=cannot)
        summary.linking = "batch"
        summary.persons_touched = int(result.clustering.clusters["person_id"].nunique())
        low, link_at = result.model.thresholds.review_low, result.model.thresholds.link
        pairs = result.pairs
        band = pairs[(pairs["match_probability"] >= low) & (pairs["match_probability"] < link_at)]
        held = result.clustering.held_apart.rename(columns={"reason": "detail"}).assign(reason="held_apart")
        summary.review_pairs = (band[["record_id_l", "record_id_r", "match_probability"]].to_dict("records")
                                + held.to_dict("records"))
        summary.review_reason = "batch_band"
        return result.clustering.clusters.to_dict("records")
    step(f"resolving {len(batch):,} records against {len(existing):,}")
    resolver = Resolver(model).fit(existing.drop(columns=["person_id", "ingested_at"]), existing[["record_id", "person_id"]])
    rows = []
    with store.engine.connect() as connection:
        for record in batch.astype(object).where(batch.notna(), None).to_dict("records"):
            record = {k: v for k, v in record.items() if v is not None}
            previous = None
            if record["record_id"] in resolver.index_.slot_of:
                previous = resolver.index_.person_of(record["record_id"])
                outcome = resolver.update_record(record)
            else:
                outcome = resolver.add_record(record)
            person, _ = steward_person(connection, outcome.record_id, outcome.person_id, resolver.index_.person_id_set,
                                       previous)
            if person != outcome.person_id:           # a steward's decision overrules the scores
                resolver.put_record(record, person)
            rows.append({"record_id": outcome.record_id, "person_id": person})
            if outcome.review_pair:
                summary.review_pairs.append(from_resolver(outcome.review_pair))
    summary.linking = "resolver"
    summary.persons_touched = len({r["person_id"] for r in rows})
    return rows


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    return str(value)


def record_row(record: dict, now: str) -> dict:
    return {"record_id": str(record["record_id"]), **{f: _text(record.get(f)) for f in RECORD_FIELDS}, "ingested_at": now}


def batch_record_rows(batch: pd.DataFrame, now: str) -> list[dict]:
    """`record_row` of every row of `batch`, built a column at a time: a million records in seconds, where a
    row-at-a-time build (`DataFrame.to_dict`) takes tens of seconds of a bulk load's write."""
    def texts(column: str) -> list:
        if column not in batch:
            return [None] * len(batch)
        values = batch[column]
        return [None if missing else str(value) for value, missing in zip(values.astype(object).tolist(), values.isna().tolist())]

    keys = ("record_id", *RECORD_FIELDS, "ingested_at")
    columns = [batch["record_id"].astype(str).tolist(), *map(texts, RECORD_FIELDS), [now] * len(batch)]
    return [dict(zip(keys, values)) for values in zip(*columns)]


# A load's items share a few thousand dates and label lists among hundreds of thousands of rows: each is written
# once (a million calls of `utc_text` were a fifth of validating a county's items). Both are pure functions of
# a hashable value (equal times give equal UTC text), and the caches are bounded.
@lru_cache(maxsize=1 << 16)
def _stored_time(value: datetime | None) -> str | None:
    return utc_text(value)


@lru_cache(maxsize=1 << 12)
def _joined(values: tuple) -> str | None:
    return "|".join(str(getattr(v, "value", v)) for v in values) if values else None


def item_row(item: ContextItem, now: str) -> dict:
    return {"item_id": item.item_id, "record_id": item.record_id, "category": item.category.value, "code": item.code,
            "text": item.text, "legal_category": item.legal_category.value, "security_labels": _joined(item.security_labels),
            "consent_id": item.consent_id, "disclosure_basis": item.disclosure_basis, "source_type": item.source_type,
            "observed_at": _stored_time(item.observed_at), "last_verified_at": _stored_time(item.last_verified_at),
            "review_due": _stored_time(item.review_due), "expires_at": _stored_time(item.expires_at),
            "status": item.status.value, "updated_at": now}


def consent_row(consent: Consent, now: str) -> dict:
    return {"consent_id": consent.consent_id, "record_id": consent.record_id, "recipients": _joined(consent.recipients),
            "purposes": _joined(consent.purposes), "categories": _joined(consent.categories),
            "valid_from": _stored_time(consent.valid_from), "valid_until": _stored_time(consent.valid_until),
            "revoked_at": _stored_time(consent.revoked_at), "discloser": consent.discloser,
            "description": consent.description, "signed_at": _stored_time(consent.signed_at), "updated_at": now}


#: What validates a loaded row of each `OWNED` table, and makes it the table's row.
_CARRIED = {context_items: (ItemIn, item_row), consents: (ConsentIn, consent_row)}
#: Each `OWNED` table's columns, the order in which a load holds its rows' values.
_COLUMNS = {table: tuple(column.name for column in table.columns) for table in OWNED}
