"""The tamper-evident audit log: one hash-chained event per request that touches person data.

Each event stores its fields as canonical JSON (sorted keys, no spaces) and
`hash = sha256(prev_hash + "\\n" + seq + "\\n" + at + "\\n" + action + "\\n" + payload)`, with
`prev_hash` the previous event's hash (64 zeros for the first). Changing, deleting or reordering
any event breaks every hash after it; `verify` recomputes the chain and names the first broken
event.

Retention (`api.retention.purge`) may delete the oldest events, always a prefix of the chain and
never the newest event. The purge then appends a `retention_purge` event whose payload records
the anchor: `audit_anchor = {"seq", "hash"}` of the last event it removed (carried forward
unchanged by a purge that removes none). `verify` starts from the anchor that the newest
`retention_purge` event in the log records instead of from the 64 zeros, so after a purge it
still recomputes every kept event and still catches any change, removal or insertion among
them: removing more of the prefix breaks the first kept link, rewriting the anchor breaks the
purge event's own hash, and removing every purge event leaves a first event that does not
follow the zeros.

Appending is safe across processes: the row is inserted first (which takes the database's write
lock on SQLite, and a transaction-scoped advisory lock is taken on PostgreSQL), then its
predecessor is read and its hash filled in, in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import bindparam, select, text, update

from api.store import Store, audit_events

GENESIS = "0" * 64
PURGE_ACTION = "retention_purge"   # the event a retention purge appends; its payload carries `audit_anchor`
_ADVISORY_KEY = 0x42524646   # "BRFF": serialises audit appends on PostgreSQL


# Built once: the statements of every append are the same, only their parameters change.
_INSERT = audit_events.insert()
_PREVIOUS = (select(audit_events.c.hash).where(audit_events.c.seq < bindparam("b_seq"))
             .order_by(audit_events.c.seq.desc()).limit(1))
_SEAL = (update(audit_events).where(audit_events.c.seq == bindparam("b_seq"))
         .values(prev_hash=bindparam("b_prev"), hash=bindparam("b_hash")))


def canonical(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(prev_hash: str, seq: int, at: str, action: str, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{seq}\n{at}\n{action}\n{payload}".encode()).hexdigest()


def append(connection, action: str, payload: dict, principal: str | None = None, request_id: str | None = None,
           at: datetime | None = None) -> int:
    """Append one event inside the caller's transaction (`connection` from `engine.begin()`); returns its seq."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
    when = (at or datetime.now(timezone.utc)).isoformat()
    body = canonical(payload)
    seq = connection.execute(_INSERT, {"at": when, "request_id": request_id, "principal": principal, "action": action,
                                       "payload": body, "prev_hash": "",
                                       "hash": f"pending-{uuid.uuid4().hex}"}).inserted_primary_key[0]  # fits String(64)
    prev = connection.execute(_PREVIOUS, {"b_seq": seq}).scalar() or GENESIS
    connection.execute(_SEAL, {"b_seq": seq, "b_prev": prev, "b_hash": chain_hash(prev, seq, when, action, body)})
    return seq


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_broken: int | None = None
    reason: str = ""
    anchor: int | None = None          # the chain was checked from after this (purged) event; None: from the start


def retention_anchor(connection) -> tuple[int, str] | None:
    """(seq, hash) of the last event removed by retention, as the newest purge event records it; None if none."""
    row = connection.execute(select(audit_events.c.payload).where(audit_events.c.action == PURGE_ACTION)
                             .order_by(audit_events.c.seq.desc()).limit(1)).first()
    if row is None:
        return None
    try:
        anchor = json.loads(row[0]).get("audit_anchor")
        return (int(anchor["seq"]), str(anchor["hash"])) if anchor else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None      # a mangled purge event vouches for nothing: checked from the zeros, so it cannot pass


def verify(store: Store) -> Verification:
    """Recompute the chain in order (from the retention anchor, if any); the first event that does not hold, and why."""
    count = 0
    with store.engine.connect() as connection:
        anchor = retention_anchor(connection)
        prev = anchor[1] if anchor else GENESIS
        rows = connection.execute(select(audit_events).order_by(audit_events.c.seq)).mappings()
        for row in rows:
            count += 1
            if anchor is not None and row["seq"] <= anchor[0]:
                return Verification(False, count, row["seq"], f"it is at or before event {anchor[0]}, the last one retention "
                                                              "removed (an event was inserted or restored)", anchor[0])
            if row["prev_hash"] != prev:
                return Verification(False, count, row["seq"], "its prev_hash is not the previous event's hash "
                                                              "(an event before it was changed, removed or inserted)",
                                    anchor and anchor[0])
            if chain_hash(prev, row["seq"], row["at"], row["action"], row["payload"]) != row["hash"]:
                return Verification(False, count, row["seq"], "its content does not match its hash (the event was changed)",
                                    anchor and anchor[0])
            prev = row["hash"]
    return Verification(True, count, anchor=anchor and anchor[0])
