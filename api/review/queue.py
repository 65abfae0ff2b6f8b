"""The steward review queue: which pairs of records wait for a decision, in what order, and why.

**Contents.** `review_pairs` holds one row per unordered pair of records, filled by the writers
(api.service.stewardship.open_pairs: a bulk link's pairs in the review band, `batch_band`; the
strongest pair of two persons a bulk link kept apart against their scores, or of a record written
one at a time and the person a rule kept it from, `held_apart`, with the rule in `detail`; a record that joined no person at `certain`, `new_record`, stored as
(best-matching existing record, new record): the *right* record is the newcomer, the one a
`not_a_match` decision splits out, api.review.decisions). Pairs naming a record that has since been
deleted are not shown.

**Priority** (`queue`): pairs touching a person seen in a recent incident first -- a person, or a
record, among the candidates of a `briefing`, `match` or `fhir_match` audit event of the last
`RECENT_DAYS` days (at most the newest `RECENT_EVENTS_SCANNED` such events are read: the window's
first event is found by a binary search over seq, then the log is read newest first, with the
person ids taken from the canonical JSON by a regular expression) -- then the pair closest to a coin flip (|p - 0.5| ascending;
a `held_apart` pair counts as a coin flip, its score and a rule disagreeing), then the oldest, then the
lowest pair id. A pair "touches" a person when either record belongs to it now.

**Status.** `open` pairs wait; `decided` pairs have a live decision (match, not_a_match or
unsure). An `unsure` pair leaves the default queue (a steward has looked and wants a second
opinion): `QueueFilters(status="unsure")` lists those, and a steward takes one up by undoing the
unsure decision (which reopens the pair) and deciding again. `label_rows`: the live decisions as labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, func, or_, select

from api.service.stewardship import Reason
from api.service.store import audit_events, clusters, records, review_decisions, review_pairs
from api.service.times import parse_when

REASON_TEXT: dict[Reason, str] = {"new_record": "new record joined no person", "batch_band": "batch link: in the review band",
               "held_apart": "scored a match, held apart by a rule"}
HELD_TEXT = {"few links": "few links between the two persons' records",
             "date of birth": "their records attest different dates of birth",
             "given name": "their records attest different given names",
             "suffix": "one is marked Jr, the other Sr",
             "generation": "a generational suffix, and born a generation apart"}
RECENT_TEXT = " · person in a recent incident"
RECENT_DAYS = 7
RECENT_EVENTS_SCANNED = 20_000
INCIDENT_ACTIONS = ("briefing", "match", "fhir_match")
#: Pairs per statement that names them.
PAGE_WINDOW = 500
STATUSES = ("open", "unsure", "decided", "all")
_PERSON = re.compile(r'"person_id":"((?:[^"\\]|\\.)*)"')
_RECORD = re.compile(r'"record_id":"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class QueueFilters:
    reason: Reason | None = None
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
    reason: Reason
    reason_text: str
    recent_incident: bool
    created_at: str
    age_days: float
    status: str                            # "open" | "decided"
    decision: str | None = None            # the live decision of a decided pair
    decision_id: int | None = None
    detail: str | None = None              # held_apart: the rule that kept the two persons apart


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


def _statement(filters: QueueFilters, keys: bool = False):
    """The queue's rows under `filters`, joined to what an entry shows; `keys`: only what puts them in order (the
    pair's id, records, persons, reason, probability and age), for every pair."""
    left, right = records.alias("rec_l"), records.alias("rec_r")
    person_l, person_r = clusters.alias("person_l"), clusters.alias("person_r")
    decision = review_decisions.alias("live")
    columns = ([review_pairs.c.pair_id, review_pairs.c.record_id_l, review_pairs.c.record_id_r,
                person_l.c.person_id, person_r.c.person_id, review_pairs.c.reason, review_pairs.c.match_probability,
                review_pairs.c.created_at] if keys else
               [review_pairs, left.c.agency.label("agency_l"), right.c.agency.label("agency_r"),
                person_l.c.person_id.label("person_id_l"), person_r.c.person_id.label("person_id_r"),
                decision.c.decision.label("live_decision")])
    statement = (select(*columns).select_from(review_pairs)
                 .join(left, left.c.record_id == review_pairs.c.record_id_l)
                 .join(right, right.c.record_id == review_pairs.c.record_id_r)
                 .outerjoin(person_l, person_l.c.record_id == review_pairs.c.record_id_l)
                 .outerjoin(person_r, person_r.c.record_id == review_pairs.c.record_id_r))
    if not keys or filters.status == "unsure":
        statement = statement.outerjoin(decision, decision.c.id == review_pairs.c.decision_id)
    statement = statement.where(*_pair_conditions(filters))
    if filters.status == "unsure":
        statement = statement.where(decision.c.decision == "unsure")
    if filters.agency is not None:
        statement = statement.where(or_(left.c.agency == filters.agency, right.c.agency == filters.agency))
    return statement


def _pair_conditions(filters: QueueFilters) -> list:
    """The filters that `review_pairs` alone decides (status, reason, probability band)."""
    if filters.status not in STATUSES:
        raise ValueError(f"unknown queue status {filters.status!r} (one of {', '.join(STATUSES)})")
    conditions = []
    if filters.status in ("open", "decided", "unsure"):
        conditions.append(review_pairs.c.status == ("open" if filters.status == "open" else "decided"))
    if filters.reason is not None:
        conditions.append(review_pairs.c.reason == filters.reason)
    if filters.min_probability is not None:
        conditions.append(review_pairs.c.match_probability >= filters.min_probability)
    if filters.max_probability is not None:
        conditions.append(review_pairs.c.match_probability <= filters.max_probability)
    return conditions


def _entry(row, recent: tuple[set[str], set[str]], now: datetime) -> QueueEntry:
    persons, record_ids = recent
    touched = bool({row.person_id_l, row.person_id_r} & persons or {row.record_id_l, row.record_id_r} & record_ids)
    return QueueEntry(
        pair_id=row.pair_id, record_id_l=row.record_id_l, record_id_r=row.record_id_r,
        person_id_l=row.person_id_l, person_id_r=row.person_id_r,
        agencies=sorted({a for a in (row.agency_l, row.agency_r) if a}), match_probability=float(row.match_probability),
        reason=row.reason, detail=row.detail,
        reason_text=(REASON_TEXT.get(row.reason, row.reason) + (f" ({HELD_TEXT.get(row.detail, row.detail)})"
                                                                  if row.detail else "") + (RECENT_TEXT if touched else "")),
        recent_incident=touched, created_at=row.created_at,
        age_days=round(max((now - parse_when(row.created_at)).total_seconds(), 0.0) / 86400.0, 3),
        status=row.status, decision=row.live_decision if row.status == "decided" else None,
        decision_id=row.decision_id if row.status == "decided" else None)


def _order(not_recent: bool, reason: str, probability: float, created_at: str, pair_id: int) -> tuple:
    """A pair's place in the queue (the module docstring's priority): the lower, the sooner."""
    doubt = 0.0 if reason == "held_apart" else abs(probability - 0.5)
    return (not_recent, doubt, created_at, pair_id)


def queue(store, filters: QueueFilters = QueueFilters(), limit: int = 50, offset: int = 0,
          now: datetime | None = None) -> tuple[list[QueueEntry], int]:
    """The pairs matching `filters` (default: the open ones) in priority order, `limit` from `offset`; and their count."""
    now = now or datetime.now(timezone.utc)
    with store.engine.connect() as connection:
        return entries(connection, filters, limit, offset, now)


def entries(connection, filters: QueueFilters = QueueFilters(), limit: int = 50, offset: int = 0,
            now: datetime | None = None) -> tuple[list[QueueEntry], int]:
    """`queue` on an open connection.

    Every pair under the filters is read with only what puts it in order (`_statement(keys=True)`), to order and
    count them; only the page's pairs are then read with all an entry shows. A page of a county's queue of a
    hundred thousand pairs makes 50 entries, not a hundred thousand."""
    now = now or datetime.now(timezone.utc)
    pairs = connection.execute(_statement(filters, keys=True)).all()
    persons, record_ids = recent_incidents(connection, now) if pairs else (set(), set())
    ordered = [key[-1] for key in sorted(
        _order(not (person_l in persons or person_r in persons or left in record_ids or right in record_ids),
               reason, probability, created_at, pair_id)
        for pair_id, left, right, person_l, person_r, reason, probability, created_at in pairs)]
    chosen = ordered[max(offset, 0): max(offset, 0) + max(limit, 0)]
    rows = {row.pair_id: row for start in range(0, len(chosen), PAGE_WINDOW) for row in connection.execute(
        _statement(filters).where(review_pairs.c.pair_id.in_(chosen[start: start + PAGE_WINDOW])))}
    return [_entry(rows[pair_id], (persons, record_ids), now) for pair_id in chosen if pair_id in rows], len(ordered)


def entry(connection, pair_id: int, now: datetime | None = None) -> QueueEntry | None:
    """One pair as a queue entry, whatever its status (None if unknown or if a record of it was deleted)."""
    now = now or datetime.now(timezone.utc)
    row = connection.execute(_statement(QueueFilters(status="all")).where(review_pairs.c.pair_id == pair_id)).first()
    return None if row is None else _entry(row, recent_incidents(connection, now), now)


def next_open_pair(connection, now: datetime | None = None) -> int | None:
    found, _ = entries(connection, QueueFilters(), limit=1, now=now)
    return found[0].pair_id if found else None


def label_rows(connection) -> list[dict]:
    """Live pair decisions as labels (one per pair; unsure included, evaluation.linkage.labels counts and skips them):
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
