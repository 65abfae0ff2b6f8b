"""The steward review queue: which pairs of records wait for a decision, in what order, and why.

**Contents.** `review_pairs` holds one row per unordered pair of records (`pair_key` is the two
ids sorted), filled from two places:

- `batch_band`: a bulk link in `briefing ingest` (api.ingest) stores every scored pair whose
  probability is in the model's review band `[thresholds.review_low, thresholds.link)`.
- `new_record`: a record written through `POST /v1/records` or a small ingest that joined no
  person at `certain` (the resolver's `AddOutcome.review_pair`). Such a pair is stored as
  (best-matching existing record, new record): the *right* record is the newcomer, the one a
  `not_a_match` decision splits out (api.review).

A pair seen again is never reopened: a decided pair keeps its decision (and its probability); an
open pair takes the newer probability. Pairs naming a record that has since been deleted are
not shown.

**Priority** (`queue`): pairs touching a person seen in a recent incident first -- a person, or a
record, among the candidates of a `briefing`, `match` or `fhir_match` audit event of the last
`RECENT_DAYS` days (at most the newest `RECENT_EVENTS_SCANNED` such events are read: the window's
first event is found by a binary search over seq, then the log is read newest first, with the
person ids taken from the canonical JSON by a regular expression) -- then the pair closest to a coin flip (|p - 0.5| ascending), then the
oldest, then the lowest pair id. A pair "touches" a person when either record belongs to it now.

**Status.** `open` pairs wait; `decided` pairs have a live decision (match, not_a_match or
unsure). An `unsure` pair leaves the default queue (a steward has looked and wants a second
opinion): `QueueFilters(status="unsure")` lists those, and a steward takes one up by undoing the
unsure decision (which reopens the pair) and deciding again.

**Constraints.** Live decisions are constraints: `match` a must-link, `not_a_match` a cannot-link
(and a split of a record out of a person cannot-links it with the records that stayed, a merge
of two persons must-links one record of each). `live_constraints` feeds the next bulk link;
`steward_person` keeps a single record written through a feed or a small ingest on the right
side of them (the resolver knows scores, not decisions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, func, or_, select

from api.store import audit_events, clusters, records, review_constraints, review_decisions, review_pairs

REASONS = ("new_record", "batch_band")
REASON_TEXT = {"new_record": "new record joined no person", "batch_band": "batch link: in the review band"}
RECENT_TEXT = " · person in a recent incident"
RECENT_DAYS = 7
RECENT_EVENTS_SCANNED = 20_000
INCIDENT_ACTIONS = ("briefing", "match", "fhir_match")
STATUSES = ("open", "unsure", "decided", "all")
_SEP = "\x1f"
_PERSON = re.compile(r'"person_id":"((?:[^"\\]|\\.)*)"')
_RECORD = re.compile(r'"record_id":"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class QueueFilters:
    reason: str | None = None              # "new_record" | "batch_band"
    agency: str | None = None              # either record's agency
    min_probability: float | None = None
    max_probability: float | None = None
    status: str = "open"                   # "open" | "unsure" (decided unsure) | "decided" | "all"


@dataclass
class QueueEntry:
    pair_id: int
    record_id_l: str
    record_id_r: str
    person_id_l: str | None
    person_id_r: str | None
    agencies: list[str]
    match_probability: float
    reason: str                            # "new_record" | "batch_band"
    reason_text: str
    recent_incident: bool
    created_at: str
    age_days: float
    status: str                            # "open" | "decided"
    decision: str | None = None            # the live decision of a decided pair
    decision_id: int | None = None


def pair_key(record_id_l: str, record_id_r: str) -> str:
    return _SEP.join(sorted((str(record_id_l), str(record_id_r))))


def from_resolver(review_pair: dict) -> dict:
    """A resolver's review pair (new record, best match) as stored: (best match, new record)."""
    return {"record_id_l": review_pair["record_id_r"], "record_id_r": review_pair["record_id_l"],
            "match_probability": review_pair["match_probability"]}


def open_pairs(connection, pairs, reason: str, now: str | None = None, chunk: int = 500) -> int:
    """Store pairs (dicts with record_id_l, record_id_r, match_probability) for review; how many were given.

    A pair already stored keeps its row; an open one takes the newer probability.
    """
    if reason not in REASONS:
        raise ValueError(f"unknown review reason {reason!r}")
    now = now or datetime.now(timezone.utc).isoformat()
    rows: dict[str, dict] = {}
    for pair in pairs:
        left, right = str(pair["record_id_l"]), str(pair["record_id_r"])
        if left != right:
            rows.setdefault(pair_key(left, right), {
                "pair_key": pair_key(left, right), "record_id_l": left, "record_id_r": right,
                "match_probability": float(pair["match_probability"]), "reason": reason, "status": "open",
                "created_at": now, "updated_at": now})
    if not rows:
        return 0
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    values = list(rows.values())
    for start in range(0, len(values), chunk):
        statement = insert(review_pairs).values(values[start: start + chunk])
        connection.execute(statement.on_conflict_do_update(
            index_elements=["pair_key"], where=review_pairs.c.status == "open",
            set_={"match_probability": statement.excluded.match_probability, "updated_at": statement.excluded.updated_at}))
    return len(values)


def _parse(at: str) -> datetime:
    value = datetime.fromisoformat(at)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def recent_incidents(connection, now: datetime | None = None) -> tuple[set[str], set[str]]:
    """(person ids, record ids) among the candidates of the recent incident look-ups (see the module docstring)."""
    since = ((now or datetime.now(timezone.utc)) - timedelta(days=RECENT_DAYS)).astimezone(timezone.utc).isoformat()
    rows = connection.execute(select(audit_events.c.payload).where(
        audit_events.c.seq >= _first_seq_since(connection, since), audit_events.c.action.in_(INCIDENT_ACTIONS),
        audit_events.c.at >= since).order_by(audit_events.c.seq.desc()).limit(RECENT_EVENTS_SCANNED)).scalars()
    persons: set[str] = set()
    record_ids: set[str] = set()
    for payload in rows:
        if '"candidates":[]' in payload:
            continue
        persons.update(_PERSON.findall(payload))
        record_ids.update(_RECORD.findall(payload))
    return persons, record_ids


def _first_seq_since(connection, since: str) -> int:
    """The first audit event at or after `since`, by binary search over seq (events are appended in time order,
    give or take the milliseconds between two processes): a few primary-key look-ups, not a scan of the log."""
    lo, hi = connection.execute(select(func.min(audit_events.c.seq), func.max(audit_events.c.seq))).one()
    if lo is None:
        return 0
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = connection.execute(select(audit_events.c.seq, audit_events.c.at).where(audit_events.c.seq >= mid)
                                 .order_by(audit_events.c.seq).limit(1)).first()
        if row is None or row.at >= since:
            hi = mid
        else:
            lo = row.seq + 1
    return lo


def _statement(filters: QueueFilters):
    left, right = records.alias("rec_l"), records.alias("rec_r")
    person_l, person_r = clusters.alias("person_l"), clusters.alias("person_r")
    decision = review_decisions.alias("live")
    statement = (select(review_pairs, left.c.agency.label("agency_l"), right.c.agency.label("agency_r"),
                        person_l.c.person_id.label("person_id_l"), person_r.c.person_id.label("person_id_r"),
                        decision.c.decision.label("live_decision"))
                 .join(left, left.c.record_id == review_pairs.c.record_id_l)
                 .join(right, right.c.record_id == review_pairs.c.record_id_r)
                 .outerjoin(person_l, person_l.c.record_id == review_pairs.c.record_id_l)
                 .outerjoin(person_r, person_r.c.record_id == review_pairs.c.record_id_r)
                 .outerjoin(decision, decision.c.id == review_pairs.c.decision_id))
    if filters.status not in STATUSES:
        raise ValueError(f"unknown queue status {filters.status!r} (one of {', '.join(STATUSES)})")
    if filters.status == "open":
        statement = statement.where(review_pairs.c.status == "open")
    elif filters.status == "decided":
        statement = statement.where(review_pairs.c.status == "decided")
    elif filters.status == "unsure":
        statement = statement.where(review_pairs.c.status == "decided", decision.c.decision == "unsure")
    if filters.reason is not None:
        statement = statement.where(review_pairs.c.reason == filters.reason)
    if filters.agency is not None:
        statement = statement.where(or_(left.c.agency == filters.agency, right.c.agency == filters.agency))
    if filters.min_probability is not None:
        statement = statement.where(review_pairs.c.match_probability >= filters.min_probability)
    if filters.max_probability is not None:
        statement = statement.where(review_pairs.c.match_probability <= filters.max_probability)
    return statement


def _entry(row, recent: tuple[set[str], set[str]], now: datetime) -> QueueEntry:
    persons, record_ids = recent
    touched = bool({row.person_id_l, row.person_id_r} & persons or {row.record_id_l, row.record_id_r} & record_ids)
    return QueueEntry(
        pair_id=row.pair_id, record_id_l=row.record_id_l, record_id_r=row.record_id_r,
        person_id_l=row.person_id_l, person_id_r=row.person_id_r,
        agencies=sorted({a for a in (row.agency_l, row.agency_r) if a}), match_probability=float(row.match_probability),
        reason=row.reason, reason_text=REASON_TEXT.get(row.reason, row.reason) + (RECENT_TEXT if touched else ""),
        recent_incident=touched, created_at=row.created_at,
        age_days=round(max((now - _parse(row.created_at)).total_seconds(), 0.0) / 86400.0, 3),
        status=row.status, decision=row.live_decision if row.status == "decided" else None,
        decision_id=row.decision_id if row.status == "decided" else None)


def _priority(entry: QueueEntry) -> tuple:
    return (not entry.recent_incident, abs(entry.match_probability - 0.5), entry.created_at, entry.pair_id)


def queue(store, filters: QueueFilters = QueueFilters(), limit: int = 50, offset: int = 0,
          now: datetime | None = None) -> tuple[list[QueueEntry], int]:
    """The pairs matching `filters` (default: the open ones) in priority order, `limit` from `offset`; and their count."""
    now = now or datetime.now(timezone.utc)
    with store.engine.connect() as connection:
        return entries(connection, filters, limit, offset, now)


def entries(connection, filters: QueueFilters = QueueFilters(), limit: int = 50, offset: int = 0,
            now: datetime | None = None) -> tuple[list[QueueEntry], int]:
    """`queue` on an open connection."""
    now = now or datetime.now(timezone.utc)
    rows = connection.execute(_statement(filters)).all()
    recent = recent_incidents(connection, now) if rows else (set(), set())
    found = sorted((_entry(row, recent, now) for row in rows), key=_priority)
    return found[offset: offset + max(limit, 0)], len(found)


def entry(connection, pair_id: int, now: datetime | None = None) -> QueueEntry | None:
    """One pair as a queue entry, whatever its status (None if unknown or if a record of it was deleted)."""
    now = now or datetime.now(timezone.utc)
    row = connection.execute(_statement(QueueFilters(status="all")).where(review_pairs.c.pair_id == pair_id)).first()
    return None if row is None else _entry(row, recent_incidents(connection, now), now)


def next_open_pair(connection, now: datetime | None = None) -> int | None:
    found, _ = entries(connection, QueueFilters(), limit=1, now=now)
    return found[0].pair_id if found else None


# ------------------------------------------------------------------------------------------ constraints
def live_constraints(connection) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(must_link, cannot_link) record id pairs of every live steward decision, for the next bulk link."""
    rows = connection.execute(select(review_constraints.c.kind, review_constraints.c.record_id_l,
                                     review_constraints.c.record_id_r)
                              .where(review_constraints.c.undone_at.is_(None)).order_by(review_constraints.c.id)).all()
    must = [(r.record_id_l, r.record_id_r) for r in rows if r.kind == "must_link"]
    cannot = [(r.record_id_l, r.record_id_r) for r in rows if r.kind == "cannot_link"]
    return must, cannot


def constraints_touching(connection, record_ids) -> list:
    """Live constraint rows naming any of `record_ids`."""
    ids = list(record_ids)
    if not ids:
        return []
    found = []
    for start in range(0, len(ids), 500):
        chunk = ids[start: start + 500]
        found += connection.execute(select(review_constraints).where(
            review_constraints.c.undone_at.is_(None),
            or_(review_constraints.c.record_id_l.in_(chunk), review_constraints.c.record_id_r.in_(chunk)))).all()
    unique = {row.id: row for row in found}
    return [unique[k] for k in sorted(unique)]


def steward_person(connection, record_id: str, proposed: str, taken, previous: str | None = None
                   ) -> tuple[str, bool | None]:
    """The person a record written by a feed or a small ingest belongs to, given stewards' live decisions.

    `proposed` is the resolver's choice. A must-link partner's person wins (unless a cannot-link
    forbids it); a proposed person holding a cannot-link partner is refused for `previous` (the
    record's person before this write, if any and allowed) or else a fresh person id (`taken`: ids
    not to use). Returns (person_id, joined): joined is None when `proposed` stands.
    """
    rows = constraints_touching(connection, [record_id])
    if not rows:
        return proposed, None
    partners = [(r.kind, r.record_id_r if r.record_id_l == record_id else r.record_id_l) for r in rows]
    persons = dict(connection.execute(select(clusters.c.record_id, clusters.c.person_id).where(
        clusters.c.record_id.in_([p for _, p in partners]), clusters.c.record_id != record_id)).all())
    apart = {persons[p] for kind, p in partners if kind == "cannot_link" and p in persons}
    for kind, partner in reversed(partners):            # the newest must-link first
        if kind == "must_link" and partner in persons and persons[partner] not in apart:
            return persons[partner], True
    if proposed not in apart:
        return proposed, None
    if previous is not None and previous not in apart:
        return previous, False
    return fresh_person(connection, record_id, taken), False


class _Taken:
    """`in` over a worker's every-id-ever-used set plus ids found taken in the store (no copy of the big set)."""

    def __init__(self, known, extra: set[str]):
        self.known, self.extra = known, extra

    def __contains__(self, person_id) -> bool:
        return person_id in self.extra or person_id in self.known


def fresh_person(connection, seed: str, taken=()) -> str:
    """A person id (matching.cluster.fresh_person_id) used neither in `taken` nor anywhere in the store."""
    from api.store import person_events
    from matching.cluster import fresh_person_id

    extra: set[str] = set()
    while True:
        candidate = fresh_person_id(seed, _Taken(taken, extra))
        used = connection.execute(select(func.count()).select_from(clusters).where(clusters.c.person_id == candidate)).scalar()
        used = used or connection.execute(select(func.count()).select_from(person_events).where(
            or_(person_events.c.person_id == candidate, person_events.c.related_person_id == candidate))).scalar()
        if not used:
            return candidate
        extra.add(candidate)


def label_rows(connection) -> list[dict]:
    """Live pair decisions as labels (one per pair; unsure included, evaluation.labels counts and skips them):
    record_id_l, record_id_r, decision, match_probability (as the steward saw it), reviewer, decided_at."""
    kinds = ("match", "not_a_match", "unsure")
    rows = connection.execute(select(review_decisions.c.record_id_l, review_decisions.c.record_id_r,
                                     review_decisions.c.decision, review_pairs.c.match_probability,
                                     review_decisions.c.reviewer, review_decisions.c.created_at)
                              .join(review_pairs, review_pairs.c.pair_id == review_decisions.c.pair_id)
                              .where(review_decisions.c.undone_at.is_(None), review_decisions.c.decision.in_(kinds),
                                     and_(review_decisions.c.pair_id.is_not(None)))
                              .order_by(review_decisions.c.id)).all()
    return [{"record_id_l": r.record_id_l, "record_id_r": r.record_id_r, "decision": r.decision,
             "match_probability": r.match_probability, "reviewer": r.reviewer, "decided_at": r.created_at} for r in rows]
