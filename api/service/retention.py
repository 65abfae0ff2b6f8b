"""Retention: `purge` deletes what is older than the retention period, in one audited transaction.

`purge(store, older_than_days)` — `briefing purge --db URL --older-than DAYS` — removes, with the
cutoff `now - older_than_days`:

- **context items** that expired before the cutoff; or whose newest known time (`observed_at`,
  `last_verified_at`, whichever is later) is before it; or, with neither known, that the store
  last received (`updated_at`) before it; and retracted / entered-in-error items whose status
  last changed (`updated_at`) before it (never shown; the retraction stays in the audit log);
- **consents** whose `valid_until` or `revoked_at` is before the cutoff (a consent that no
  longer permits anything); items naming a purged consent are then simply not covered by it;
- **feedback** created before the cutoff;
- **referrals** closed (rejected, completed, cancelled, failed) before the cutoff, with their lifecycle events
  and the list of items that travelled (api.service.referrals; an open referral is care in progress and is
  kept), and the record of whom a briefing resolved (`briefed_persons`, what a referral names) from before it;
  webhook deliveries (`outbox`) of the purged referrals and any delivered before the cutoff;
- **changes** (the workers' change feed, `api.service.changes`) written before the cutoff, always
  keeping the newest row so the sequence never restarts below what a worker has applied. Every
  worker applies the feed before each request and a starting worker reads the store, so rows
  that old have been applied by every worker that served a request since; a worker idle for
  longer than the retention period should be restarted after a purge.

**Review decisions are kept**: they are steward labels and must-link / cannot-link constraints
on clustering (record ids, a decision, a reviewer), needed for as long as the records are.

**Audit events** have their own retention period, `audit_older_than_days` (default 2,190 days
= 6 years, the HIPAA documentation retention of 45 CFR 164.316(b)(2)). A shorter period is
allowed, because the period a deployment must keep its access log is set by its own law and
policy, but it is reported as a warning (in the summary, on the command line's stderr and in the
purge's audit event). Only a prefix of the chain is removed — events up to the first one at or
after the audit cutoff — and never the newest event, so appends always have a predecessor.
The purge's own audit event (`retention_purge`) records the counts, the cutoffs and the
anchor, `{"seq", "hash"}` of the last removed event, from which `api.service.audit.verify` then checks
the chain; the witness's lines at or before the anchor are then not deletions, so a purge
verifies clean while removing events beyond the anchor does not (see api/service/audit.py). The purge
event is appended like any other (keyed, witnessed once committed; an unkeyed log is upgraded
first), and an upgraded log whose `audit_keyed` event ages out still verifies: every kept event
is keyed.

Times are compared as datetimes (stored ISO 8601 text may carry any offset; naive means UTC);
a value that does not parse never causes a deletion. Everything — the deletes and the audit
event — is one transaction. The rows are chosen first without holding the write lock (reading a
large store takes a while, and briefings must keep appending their audit events meanwhile); then
the write lock is taken (SQLite; on PostgreSQL the chosen rows are locked FOR UPDATE and audit
appends are held back with the audit log's advisory lock), items and consents are judged again
on what they now hold, and everything is deleted and audited. `dry_run=True` chooses the same
rows and writes nothing (not even an audit event).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select

from api.service.audit import PURGE_ACTION, append, hold_audit_lock, retention_anchor
from api.service.store import (Store, audit_events, begin_writing, briefed_persons, changes, consents, context_items,
                               feedback, outbox, referrals)
from api.service.times import parse_time, utc_text
from scoring.referral import CLOSED

CLOSED_STATUSES = [s.value for s in CLOSED]

AUDIT_RETENTION_DAYS = 2190           # 6 years: HIPAA documentation retention, 45 CFR 164.316(b)(2)
MAX_DAYS = 36_500
_CHUNK = 500
log = logging.getLogger("briefing.retention")


class RetentionError(ValueError):
    """A purge that was refused before anything was read or written."""


@dataclass
class PurgeSummary:
    """What a purge removed (or, in a dry run, would remove), per table."""

    now: str
    cutoff: str
    audit_cutoff: str
    dry_run: bool
    context_items: int = 0
    consents: int = 0
    feedback: int = 0
    referrals: int = 0
    briefed_persons: int = 0
    changes: int = 0
    audit_events: int = 0
    audit_anchor: int | None = None        # seq of the last audit event removed so far (this purge or an earlier one)
    audit_seq: int | None = None           # the purge's own audit event (None in a dry run)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"context_items": self.context_items, "consents": self.consents, "feedback": self.feedback,
                "referrals": self.referrals, "briefed_persons": self.briefed_persons, "changes": self.changes,
                "audit_events": self.audit_events}

    def to_dict(self) -> dict:
        return asdict(self)


def _before(value, cutoff: datetime) -> bool:
    parsed = parse_time(value)
    return parsed is not None and parsed < cutoff


def item_is_past(row, cutoff: datetime) -> bool:
    """Whether a context item row (mapping of its stored columns) is past the retention cutoff."""
    if _before(row["expires_at"], cutoff):
        return True
    if row["status"] not in (None, "", "active") and _before(row["updated_at"], cutoff):
        return True
    known = [t for t in (parse_time(row["observed_at"]), parse_time(row["last_verified_at"])) if t is not None]
    if known:
        return max(known) < cutoff
    if row["observed_at"] or row["last_verified_at"]:
        return False                     # a time is there but does not parse: keep
    return _before(row["updated_at"], cutoff)


def consent_is_past(row, cutoff: datetime) -> bool:
    return _before(row["valid_until"], cutoff) or _before(row["revoked_at"], cutoff)


def _days(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise RetentionError(f"{name} must be a whole number of days from 0 to {MAX_DAYS:,}; got {value!r}")
    return value


def purge(store: Store, older_than_days: int, audit_older_than_days: int = AUDIT_RETENTION_DAYS,
          now: datetime | None = None, dry_run: bool = False, principal: str = "briefing purge") -> PurgeSummary:
    """Delete what is past retention (see the module docstring) and audit it, in one transaction."""
    older_than_days = _days(older_than_days, "older_than_days")
    audit_older_than_days = _days(audit_older_than_days, "audit_older_than_days")
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise RetentionError("now must be an aware datetime")
    cutoff = now - timedelta(days=older_than_days)
    audit_cutoff = now - timedelta(days=audit_older_than_days)
    summary = PurgeSummary(now=now.isoformat(), cutoff=cutoff.isoformat(), audit_cutoff=audit_cutoff.isoformat(),
                           dry_run=dry_run)
    if audit_older_than_days < AUDIT_RETENTION_DAYS:
        summary.warnings.append(f"audit events older than {audit_older_than_days:,} days are removed: less than the "
                                f"{AUDIT_RETENTION_DAYS:,} days (6 years) HIPAA asks documentation to be kept "
                                "(45 CFR 164.316(b)(2))")
    opener = store.engine.connect if dry_run else store.begin
    with opener() as connection:
        # Choose first, without holding the write lock (a large store takes a while to read) ...
        item_ids = _candidates(connection, context_items.c.item_id, _ITEM_COLUMNS, item_is_past, cutoff)
        consent_ids = _candidates(connection, consents.c.consent_id, _CONSENT_COLUMNS, consent_is_past, cutoff)
        feedback_ids = [r.id for r in connection.execute(select(feedback.c.id, feedback.c.created_at))
                        if _before(r.created_at, cutoff)]
        referral_ids = [r.id for r in connection.execute(select(referrals.c.id, referrals.c.updated_at)
                                                         .where(referrals.c.status.in_(CLOSED_STATUSES)))
                        if _before(r.updated_at, cutoff)]
        briefed_before = briefed_persons.c.briefed_at < utc_text(cutoff)      # written by utc_text: text order is time order
        newest_change = connection.execute(select(func.max(changes.c.seq))).scalar() or 0
        change_ids = [r.seq for r in connection.execute(select(changes.c.seq, changes.c.at).where(changes.c.seq < newest_change))
                      if _before(r.at, cutoff)]
        last_purged, purged_hash, audit_count = _audit_prefix(connection, audit_cutoff)
        if dry_run:
            previous = retention_anchor(connection)
            summary.context_items, summary.consents, summary.feedback = len(item_ids), len(consent_ids), len(feedback_ids)
            summary.referrals = len(referral_ids)
            summary.briefed_persons = connection.execute(select(func.count()).where(briefed_before)).scalar()
            summary.changes, summary.audit_events = len(change_ids), audit_count
            summary.audit_anchor = last_purged if last_purged is not None else (previous[0] if previous else None)
            return summary
        # ... then lock, judge the rows that can change again, and delete. Feedback, change-feed and audit rows are
        # never rewritten, so what was chosen stays chosen (a concurrent purge may have removed some: counts are rowcounts).
        begin_writing(connection)
        item_ids = _confirmed(connection, context_items.c.item_id, _ITEM_COLUMNS, item_is_past, cutoff, item_ids)
        consent_ids = _confirmed(connection, consents.c.consent_id, _CONSENT_COLUMNS, consent_is_past, cutoff, consent_ids)
        hold_audit_lock(connection)                                       # no append meanwhile
        previous = retention_anchor(connection)
        if last_purged is not None and (previous is None or last_purged > previous[0]):
            anchor = {"seq": last_purged, "hash": purged_hash}
        else:
            anchor = {"seq": previous[0], "hash": previous[1]} if previous else None
        summary.audit_anchor = anchor["seq"] if anchor else None
        summary.context_items = _delete_in_chunks(connection, context_items.c.item_id, item_ids)
        summary.consents = _delete_in_chunks(connection, consents.c.consent_id, consent_ids)
        summary.feedback = _delete_in_chunks(connection, feedback.c.id, feedback_ids)
        summary.referrals = _delete_in_chunks(connection, referrals.c.id, referral_ids)    # events and items cascade
        _delete_in_chunks(connection, outbox.c.referral_id, referral_ids)                # and what was owed of them
        connection.execute(delete(outbox).where(outbox.c.delivered_at < utc_text(cutoff)))   # delivered long ago
        summary.briefed_persons = connection.execute(delete(briefed_persons).where(briefed_before)).rowcount
        summary.changes = _delete_in_chunks(connection, changes.c.seq, change_ids)
        if last_purged is not None:
            summary.audit_events = connection.execute(delete(audit_events).where(audit_events.c.seq <= last_purged)).rowcount
        summary.audit_seq = append(connection, PURGE_ACTION, {
            "principal": principal, "older_than_days": older_than_days, "audit_older_than_days": audit_older_than_days,
            "now": summary.now, "cutoff": summary.cutoff, "audit_cutoff": summary.audit_cutoff,
            "deleted": summary.counts(), "audit_anchor": anchor, "review_decisions": "kept", "warnings": summary.warnings,
        }, principal=principal)
    for warning in summary.warnings:
        log.warning(warning)
    return summary


_ITEM_COLUMNS = ("expires_at", "status", "updated_at", "observed_at", "last_verified_at")
_CONSENT_COLUMNS = ("valid_until", "revoked_at")


def _candidates(connection, key, columns: tuple[str, ...], is_past, cutoff: datetime) -> list:
    """Ids of the rows of `key`'s table past the cutoff."""
    wanted = [key, *(key.table.c[c] for c in columns)]
    return [row[key.name] for row in connection.execute(select(*wanted)).mappings() if is_past(row, cutoff)]


def _confirmed(connection, key, columns: tuple[str, ...], is_past, cutoff: datetime, chosen: list) -> list:
    """Those of `chosen` still past the cutoff, read again under the write lock (rows locked FOR UPDATE on PostgreSQL),
    so a row a feed rewrote since it was chosen is judged on what it now holds."""
    wanted = [key, *(key.table.c[c] for c in columns)]
    confirmed = []
    for start in range(0, len(chosen), _CHUNK):
        rows = connection.execute(select(*wanted).where(key.in_(chosen[start: start + _CHUNK])).with_for_update()).mappings()
        confirmed.extend(row[key.name] for row in rows if is_past(row, cutoff))
    return confirmed


def _audit_prefix(connection, audit_cutoff: datetime) -> tuple[int | None, str | None, int]:
    """(seq, hash) of the last event of the longest prefix older than the audit cutoff that leaves the
    newest event in place, and how many events that prefix holds; (None, None, 0) if it is empty."""
    newest = connection.execute(select(func.max(audit_events.c.seq))).scalar()
    last, last_hash, count = None, None, 0
    if newest is None:
        return last, last_hash, count
    rows = connection.execute(select(audit_events.c.seq, audit_events.c.at, audit_events.c.hash)
                              .where(audit_events.c.seq < newest).order_by(audit_events.c.seq)
                              .execution_options(yield_per=1_000))
    for row in rows:
        when = parse_time(row.at)
        if when is None or when >= audit_cutoff:
            break
        last, last_hash, count = row.seq, row.hash, count + 1
    rows.close()
    return last, last_hash, count


def _delete_in_chunks(connection, column, ids: list) -> int:
    """Delete the rows with these ids; how many there were."""
    deleted = 0
    for start in range(0, len(ids), _CHUNK):
        deleted += connection.execute(delete(column.table).where(column.in_(ids[start: start + _CHUNK]))).rowcount
    return deleted
