"""The tamper-evident audit log: one hash-chained event per request that touches person data.

Each event stores its fields as canonical JSON (sorted keys, no spaces) and
`hash = sha256(prev_hash + "\\n" + seq + "\\n" + at + "\\n" + action + "\\n" + payload)`, with
`prev_hash` the previous event's hash (64 zeros for the first). Changing, deleting or reordering
any event breaks every hash after it; `verify` recomputes the chain and names the first broken
event.

Appending is safe across processes: the row is inserted first (which takes the database's write
lock on SQLite, and a transaction-scoped advisory lock is taken on PostgreSQL), then its
predecessor is read and its hash filled in, in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select, text, update

from api.store import Store, audit_events

GENESIS = "0" * 64
_ADVISORY_KEY = 0x42524646   # "BRFF": serialises audit appends on PostgreSQL


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
    seq = connection.execute(audit_events.insert().values(
        at=when, request_id=request_id, principal=principal, action=action, payload=body,
        prev_hash="", hash=f"pending-{request_id or ''}-{when}-{id(payload)}")).inserted_primary_key[0]
    before = connection.execute(select(audit_events.c.hash).where(audit_events.c.seq < seq)
                                .order_by(audit_events.c.seq.desc()).limit(1)).scalar()
    prev = before or GENESIS
    connection.execute(update(audit_events).where(audit_events.c.seq == seq)
                       .values(prev_hash=prev, hash=chain_hash(prev, seq, when, action, body)))
    return seq


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_broken: int | None = None
    reason: str = ""


def verify(store: Store) -> Verification:
    """Recompute the chain in order; the first event whose link or hash does not hold, and why."""
    prev, count = GENESIS, 0
    with store.engine.connect() as connection:
        rows = connection.execute(select(audit_events).order_by(audit_events.c.seq)).mappings()
        for row in rows:
            count += 1
            if row["prev_hash"] != prev:
                return Verification(False, count, row["seq"], "its prev_hash is not the previous event's hash "
                                                              "(an event before it was changed, removed or inserted)")
            if chain_hash(prev, row["seq"], row["at"], row["action"], row["payload"]) != row["hash"]:
                return Verification(False, count, row["seq"], "its content does not match its hash (the event was changed)")
            prev = row["hash"]
    return Verification(True, count)
