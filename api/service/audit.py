"""The tamper-evident audit log: one keyed, hash-chained event per request that touches person data,
witnessed outside the store.

**Chain.** Each event stores its fields as canonical JSON (sorted keys, no spaces) and
`hash = HMAC-SHA256(key, json([prev_hash, seq, at, action, principal, request_id, payload]))` (hex; the
JSON array compact, non-ASCII kept), with `prev_hash` the previous event's hash (64 zeros for the first).
The key is kept outside the store (`store.audit`, api/service/audit_trail.py: a file beside a SQLite store, a
state directory for PostgreSQL), so someone who can write the store but not read that file cannot
recompute a hash after changing, removing, inserting or reordering events.

**Witness.** Once its transaction has committed, every event is also written as a `seq hash` line to a
witness file outside the store (an `api.service.store.after_commit` callback): a transaction that rolls back, or
a process killed before its commit, leaves no line. Removing events, even only the newest, leaves lines
that the log no longer holds.

**Appending** works only inside `store.begin()` (anything else raises: the witness follows its commit).
The row is inserted first (which takes the database's write lock on SQLite; a transaction-scoped advisory
lock is taken first on PostgreSQL), then its predecessor is read and its hash filled in, in the same
transaction. The event `audit_keyed` is the log's own and cannot be appended by callers.

**Upgrading an unkeyed log.** Logs written before keys hold
`hash = sha256(prev_hash + "\\n" + seq + "\\n" + at + "\\n" + action + "\\n" + payload)`. The first append
of each process over a store looks, under the write lock, at the newest event: if it holds under that old
scheme, an `audit_keyed` event is appended first (keyed, chained to it; payload: `scheme`,
`last_unkeyed_seq`, `last_unkeyed_hash`), and the key file is made if there is none. Events before the
`audit_keyed` event are checked with the old scheme, it and every later event with the key. A new, empty
log is keyed from its first event and has no `audit_keyed` event. A keyed log whose key file is missing is
not appended to (`AuditKeyMissing`): a new key would silently start a second chain.

**Retention** (`api.service.retention.purge`) may delete the oldest events, always a prefix of the chain and never
the newest event. The purge then appends a `retention_purge` event whose payload records the anchor:
`audit_anchor = {"seq", "hash"}` of the last event it removed (carried forward unchanged by a purge that
removes none). `verify` starts from the anchor that the newest `retention_purge` event records instead of
from the 64 zeros, and witness lines at or before the anchor are not deletions: removing more of the
prefix breaks the first kept link and leaves witnessed events missing, rewriting the anchor breaks the
purge event's keyed hash, and removing every purge event leaves the purged events missing.

**Verifying** (`verify`, `briefing audit verify`) reads the witness, then the log in one snapshot, and
reports every problem (up to `MAX_PROBLEMS`) with its kind and event:

- `truncation`: the witness saw events committed after the last event the log holds;
- `deletion`: the witness saw an event the log no longer holds between two that it does (or before the
  first kept one), an event's `prev_hash` is not its predecessor's hash, or the witness saw two different
  events committed under one number (the first was deleted and its number reused);
- `rewrite`: an event's content does not match its keyed hash (changed, or the chain recomputed with plain
  SHA-256 or another key), its hash is not the one witnessed at its commit, a witnessed event now carries
  an unkeyed hash, or a second `audit_keyed` event (the log made to look unkeyed, then upgraded again);
- `insertion`: an event at or before the retention anchor;
- `key` / `witness`: the key file is missing, or the log is keyed and the witness holds nothing for it.

Which events are keyed: from the `audit_keyed` event if the log holds one; else from the first event the
witness holds past the anchor (every keyed append is witnessed; an earlier event that holds under the key
counts as keyed too); else, with no witness lines, all of them if the first event holds under the key (and
the missing witness is reported), or none (an old log not appended to since the upgrade, checked as
before). A keyed event with no witness
line is a warning, not a failure: its process died between its commit and the witness write (a window of
microseconds) or the witness was not writable, and its keyed hash still proves the service wrote it.
Replicas on several machines each write their own witness: verify with all of them (`--witness`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import bindparam, delete, false, select, text, update

from api.service.audit_trail import AuditKeyMissing, AuditTrail, read_witness_file
from api.service.store import AUDIT_TRAIL, Store, after_commit, audit_events

GENESIS = "0" * 64
PURGE_ACTION = "retention_purge"   # the event a retention purge appends; its payload carries `audit_anchor`
KEYED_ACTION = "audit_keyed"       # the event that upgrades an unkeyed log: keyed from it on
SCHEME = "hmac-sha256"
MAX_PROBLEMS = 50
_ADVISORY_KEY = 0x42524646   # "BRFF": serialises audit appends on PostgreSQL
_THROUGHOUT = float("-inf")  # keyed_from when every event is keyed
log = logging.getLogger("briefing.audit")

__all__ = ["AuditKeyMissing", "GENESIS", "KEYED_ACTION", "PURGE_ACTION", "Problem", "Verification", "append",
           "audit_fields", "canonical", "chain_hash", "hold_audit_lock", "keyed_hash", "record_event", "retention_anchor",
           "verify"]

# Built once: the statements of every append are the same, only their parameters change.
_INSERT = audit_events.insert()
_PREVIOUS = (select(audit_events.c.hash).where(audit_events.c.seq < bindparam("b_seq"))
             .order_by(audit_events.c.seq.desc()).limit(1))
_SEAL = (update(audit_events).where(audit_events.c.seq == bindparam("b_seq"))
         .values(prev_hash=bindparam("b_prev"), hash=bindparam("b_hash")))
_NEWEST = select(audit_events).order_by(audit_events.c.seq.desc()).limit(1)


def hold_audit_lock(connection) -> None:
    """On PostgreSQL, take the audit log's transaction-scoped advisory lock (held to the commit; SQLite's single
    writer needs none). It serialises appends, orders the change feed (api.service.changes) and holds appends
    back during a retention purge (api.service.retention): take it last in a transaction, after any row locks."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})


def audit_fields(principal, *fields: str) -> dict:
    """The start of an audit payload about `principal`: its name under `principal`, then each of `fields`
    (`"agency"`, `"role"`) as stored (the role by its value)."""
    payload = {"principal": principal.name}
    for name in fields:
        payload[name] = principal.role.value if name == "role" else getattr(principal, name)
    return payload


def record_event(store: Store, action: str, payload: dict, principal: str | None = None,
                 request_id: str | None = None) -> int:
    """Append one event in a transaction of its own (for what is audited apart from any write); its seq."""
    with store.begin() as connection:
        return append(connection, action, payload, principal=principal, request_id=request_id)


def canonical(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(prev_hash: str, seq: int, at: str, action: str, payload: str) -> str:
    """The unkeyed scheme of logs written before keys (checked up to their `audit_keyed` event)."""
    return hashlib.sha256(f"{prev_hash}\n{seq}\n{at}\n{action}\n{payload}".encode()).hexdigest()


def keyed_hash(key: bytes, prev_hash: str, seq: int, at: str, action: str, principal: str | None,
               request_id: str | None, payload: str) -> str:
    message = json.dumps([prev_hash, seq, at, action, principal, request_id, payload], separators=(",", ":"),
                         ensure_ascii=False)
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _keyed_of(key: bytes, row) -> str:
    return keyed_hash(key, row["prev_hash"], row["seq"], row["at"], row["action"], row["principal"],
                      row["request_id"], row["payload"])


def _unkeyed_of(row) -> str:
    return chain_hash(row["prev_hash"], row["seq"], row["at"], row["action"], row["payload"])


def append(connection, action: str, payload: dict, principal: str | None = None, request_id: str | None = None,
           at: datetime | None = None) -> int:
    """Append one event inside the caller's `store.begin()` transaction; its seq. Witnessed once committed."""
    trail = connection.info.get(AUDIT_TRAIL)
    if trail is None:
        raise RuntimeError("audit events are appended inside store.begin(): the witness follows its commit")
    if action == KEYED_ACTION:
        raise ValueError(f"{KEYED_ACTION!r} is the audit log's own upgrade event")
    hold_audit_lock(connection)
    when = (at or datetime.now(timezone.utc)).isoformat()
    key = _append_key(connection, trail, when)
    return _write(connection, trail, key, action, canonical(payload), when, principal, request_id)


def _write(connection, trail: AuditTrail, key: bytes, action: str, body: str, when: str, principal: str | None,
           request_id: str | None) -> int:
    seq = connection.execute(_INSERT, {"at": when, "request_id": request_id, "principal": principal, "action": action,
                                       "payload": body, "prev_hash": "",
                                       "hash": f"pending-{uuid.uuid4().hex}"}).inserted_primary_key[0]  # fits String(64)
    prev = connection.execute(_PREVIOUS, {"b_seq": seq}).scalar() or GENESIS
    digest = keyed_hash(key, prev, seq, when, action, principal, request_id, body)
    connection.execute(_SEAL, {"b_seq": seq, "b_prev": prev, "b_hash": digest})
    after_commit(connection, lambda: trail.witness(seq, digest))
    return seq


def _append_key(connection, trail: AuditTrail, when: str) -> bytes:
    """The key to append with; the first time in this process, decided under the write lock (upgrading an
    unkeyed log, or making the key of a new one). Confirmed for the process once that transaction commits."""
    if trail.confirmed is not None:
        return trail.confirmed
    if connection.dialect.name == "sqlite":
        connection.execute(delete(audit_events).where(false()))     # the write lock now: one process decides
    newest = connection.execute(_NEWEST).mappings().first()
    key = trail.key()
    if newest is None or (key is not None and hmac.compare_digest(_keyed_of(key, newest), newest["hash"])):
        key = key or trail.key(create=True)
    elif _unkeyed_of(newest) == newest["hash"]:
        key = key or trail.key(create=True)
        _write(connection, trail, key, KEYED_ACTION, canonical({
            "scheme": SCHEME, "last_unkeyed_seq": newest["seq"], "last_unkeyed_hash": newest["hash"]}),
            when, None, None)
    elif key is None:
        raise AuditKeyMissing(f"the audit log is keyed but its key is not at {trail.key_path} (moved without it? "
                              "see BRIEFING_AUDIT_KEY_FILE); nothing is appended without it")
    else:
        log.warning("the newest audit event (%s) holds under no scheme (changed, or keyed with another key: do all "
                    "replicas share the key file?); appending keyed, `briefing audit verify` reports it", newest["seq"])
    after_commit(connection, lambda: trail.confirm(key))
    return key


@dataclass(frozen=True)
class Problem:
    kind: str            # truncation | deletion | rewrite | insertion | key | witness
    seq: int | None      # the event concerned (None: the log as a whole)
    reason: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_broken: int | None = None
    reason: str = ""
    anchor: int | None = None          # the chain was checked from after this (purged) event; None: from the start
    kind: str = ""                     # the first problem's kind
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()
    keyed: bool = False                # some events are keyed (else: an old log, not appended to since the upgrade)
    upgraded_at: int | None = None     # the `audit_keyed` event, if the log holds one
    witnessed: int = 0                 # witness lines after the anchor


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


class _Witness:
    """The witness lines of one verification: {seq: hash}, and every other hash seen for a seq."""

    def __init__(self, trail: AuditTrail, extra: Iterable[Path]):
        self.trail, self.seen, self.others, self.warnings = trail, {}, {}, []
        own = trail.read_witness()
        self.offset = own.end
        for name, read in [(trail.describe(), own), *((str(p), read_witness_file(Path(p))) for p in extra)]:
            if read.bad_lines:
                self.warnings.append(f"witness ({name}): {len(read.bad_lines)} line(s) that do not parse "
                                     f"(first: line {read.bad_lines[0]}), ignored")
            for seq, digest in read.lines:
                known = self.seen.setdefault(seq, digest)
                if known != digest:
                    self.others.setdefault(seq, set()).add(digest)

    def hashes(self, seq: int) -> set[str]:
        return {self.seen[seq], *self.others.get(seq, ())}

    def later(self) -> set[int]:
        """Seqs of the lines written since this witness was read (events committed meanwhile)."""
        return {seq for seq, _ in self.trail.read_witness(self.offset).lines}


class _Check:
    """The state of one pass over the log in seq order (see the module docstring for what is checked)."""

    def __init__(self, trail: AuditTrail, anchor: tuple[int, str] | None, upgrades: list[int], witness: _Witness):
        self.trail, self.witness, self.key = trail, witness, trail.key()          # never made by a verification
        self.anchor_seq, self.prev_hash = anchor if anchor else (None, GENESIS)
        self.prev_seq, self.prev_ok, self.events, self.keyed_rows = self.anchor_seq, True, 0, 0
        self.problems: dict[tuple[str, int | None], Problem] = {}
        self.unwitnessed: list[int] = []
        self.expected = sorted(s for s in witness.seen if anchor is None or s > anchor[0])
        self.next = 0
        upgrades = [s for s in upgrades if anchor is None or s > anchor[0]]
        for extra in upgrades[1:]:
            self.add("rewrite", extra, f"a second {KEYED_ACTION} event (the first is {upgrades[0]}): the log was made to "
                                       "look unkeyed, then upgraded again")
        self.upgraded_at = upgrades[0] if upgrades else None
        # Keyed from the upgrade event; without one, from the first witnessed event (an event before it that holds
        # under the key is keyed too: its witness line was lost); with neither, the first event decides.
        self.keyed_from = self.upgraded_at if upgrades else (self.expected[0] if self.expected else None)
        self.lenient = not upgrades
        self.decided = bool(upgrades or self.expected)

    def add(self, kind: str, seq: int | None, reason: str) -> None:
        self.problems.setdefault((kind, seq), Problem(kind, seq, reason))

    def row(self, row) -> None:
        self.events += 1
        seq = row["seq"]
        if self.anchor_seq is not None and seq <= self.anchor_seq:
            self.add("insertion", seq, f"it is at or before event {self.anchor_seq}, the last one retention removed "
                                       "(an event was inserted or restored)")
            return
        gap = False
        while self.next < len(self.expected) and self.expected[self.next] < seq:
            gone = self.expected[self.next]
            self.next, gap = self.next + 1, True
            self.add("deletion", gone, f"the witness saw event {gone} committed; the log no longer holds it")
        witnessed = None
        if self.next < len(self.expected) and self.expected[self.next] == seq:
            witnessed, self.next = self.witness.hashes(seq), self.next + 1
        if not self.decided:                       # no upgrade event and no witness lines: keyed only if it holds so
            self.decided = True
            if self.key is not None and hmac.compare_digest(_keyed_of(self.key, row), row["hash"]):
                self.keyed_from = _THROUGHOUT
                self.add("witness", None, f"the log is keyed but its witness holds nothing for it ({self.trail.describe()}):"
                                          " it was moved, deleted or replaced")
        keyed = self.keyed_from is not None and seq >= self.keyed_from
        if not keyed and self.lenient and self.key is not None and _keyed_of(self.key, row) == row["hash"]:
            keyed = True
        ok = self._content(row, keyed)
        if row["prev_hash"] != self.prev_hash and not gap and self.prev_ok and ok is not False:
            before = (f"event {self.prev_seq}" if self.prev_seq is not None and self.prev_seq != self.anchor_seq else
                      f"event {self.anchor_seq}, the last one retention removed" if self.anchor_seq is not None else
                      "the zeros that start a log")
            self.add("deletion", seq, f"its prev_hash is not the hash of {before}: an event before it was removed")
        if keyed:
            self.keyed_rows += 1
            if witnessed is None:
                self.unwitnessed.append(seq)
            elif row["hash"] not in witnessed:
                self.add("rewrite", seq, "its hash is not the one the witness recorded at its commit (the event was "
                                         "changed, or the chain recomputed)")
            if witnessed is not None and len(witnessed) > 1:
                self.add("deletion", seq, f"the witness saw {len(witnessed)} different events committed as event {seq}:"
                                          " one was deleted and its number reused")
        elif witnessed is not None:
            self.add("rewrite", seq, "the witness recorded it as a keyed event; it now carries an unkeyed hash (the "
                                     "chain was recomputed without the key)")
        if row["action"] == KEYED_ACTION and seq == self.upgraded_at and ok is not False:
            self._upgrade(row)
        self.prev_seq, self.prev_hash, self.prev_ok = seq, row["hash"], ok is not False

    def _content(self, row, keyed: bool) -> bool | None:
        seq = row["seq"]
        if not keyed:
            if _unkeyed_of(row) == row["hash"]:
                return True
            self.add("rewrite", seq, "its content does not match its (unkeyed) hash: the event was changed")
            return False
        if self.key is None:
            self.add("key", None, f"the audit key is missing ({self.trail.describe()}): keyed events cannot be checked")
            return None
        if hmac.compare_digest(_keyed_of(self.key, row), row["hash"]):
            return True
        self.add("rewrite", seq, "its hash is a plain SHA-256 of its content, not its keyed hash: the chain was "
                                 "recomputed without the key" if _unkeyed_of(row) == row["hash"] else
                                 "its content does not match its keyed hash: the event was changed (or its hash "
                                 "computed with another key)")
        return False

    def _upgrade(self, row) -> None:
        try:
            recorded = json.loads(row["payload"])
            claims = (recorded["last_unkeyed_seq"], recorded["last_unkeyed_hash"])
        except (ValueError, TypeError, KeyError):
            claims = None
        if claims is None or claims != (self.prev_seq, self.prev_hash) or claims[1] != row["prev_hash"]:
            self.add("rewrite", row["seq"], f"the {KEYED_ACTION} event does not record the unkeyed event before it")

    def finish(self) -> None:
        rest = self.expected[self.next:]
        if rest:
            after = f"event {self.prev_seq}, the last in the log" if self.prev_seq is not None else "the start of the log"
            which = f"event {rest[0]}" if len(rest) == 1 else f"{len(rest)} events, {rest[0]} to {rest[-1]}"
            self.add("truncation", rest[0], f"the witness saw {which} committed after {after}; removed from its end")
        if self.keyed_rows and not self.expected and self.key is not None:
            self.add("witness", None, f"the log is keyed but its witness holds nothing for it ({self.trail.describe()}):"
                                      " it was moved, deleted or replaced")
        if self.events and not self.keyed_rows and self.key is not None:
            # A key is made only by a keyed append, so a log without one keyed event was downgraded: recomputed with
            # plain SHA-256 (and the witness removed, or this would be reported as a rewrite of witnessed events).
            self.add("rewrite", None, f"an audit key exists ({self.trail.describe()}) but no event in the log is keyed: "
                                      "the chain was recomputed without the key")

    def result(self, anchor: tuple[int, str] | None) -> Verification:
        problems = sorted(self.problems.values(), key=lambda p: (p.seq is not None, p.seq or 0))
        warnings = list(self.witness.warnings)
        if self.unwitnessed and self.expected:
            late = self.witness.later()
            missing = [s for s in self.unwitnessed if s not in late]
            if missing:
                warnings.append(f"{len(missing)} keyed event(s) have no witness line (first: {missing[:5]}): written by "
                                "a process that died between its commit and the witness write, or the witness was not "
                                "writable; their keyed hashes hold")
        first = problems[0] if problems else None
        return Verification(not problems, self.events, first_broken=next((p.seq for p in problems if p.seq is not None),
                                                                         None),
                            reason=first.reason if first else "", anchor=anchor and anchor[0],
                            kind=first.kind if first else "", problems=tuple(problems[:MAX_PROBLEMS]),
                            warnings=tuple(warnings), keyed=self.keyed_from is not None,
                            upgraded_at=self.upgraded_at, witnessed=len(self.expected))


@contextmanager
def _snapshot(store: Store):
    """A connection that sees one state of the log for all its reads (a purge committing meanwhile is not half-seen)."""
    with store.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        elif connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN")      # the driver starts none for reads; rolled back on close
        yield connection


def verify(store: Store, witnesses: Iterable[Path | str] = ()) -> Verification:
    """Check the log against its key and witness (plus `witnesses`, other replicas' files); every problem found."""
    witness = _Witness(store.audit, [Path(p) for p in witnesses])   # first: each line read is of an event committed
    with _snapshot(store) as connection:                            # before the snapshot, so the log must hold it
        anchor = retention_anchor(connection)
        upgrades = connection.execute(select(audit_events.c.seq).where(audit_events.c.action == KEYED_ACTION)
                                      .order_by(audit_events.c.seq)).scalars().all()
        check = _Check(store.audit, anchor, list(upgrades), witness)
        rows = connection.execute(select(audit_events).order_by(audit_events.c.seq)
                                  .execution_options(yield_per=2_000)).mappings()
        for row in rows:
            check.row(row)
        check.finish()
    return check.result(anchor)
