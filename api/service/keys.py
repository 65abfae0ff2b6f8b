"""API keys: each key is a principal (name, role, agency, allowed purposes), stored hashed.

A key is 32 random bytes (URL-safe text with a `brf_` prefix), shown once when created; the store
keeps only its SHA-256 (a random 256-bit secret needs no slow hash: there is nothing to guess).
Authentication looks the hash up, then checks revocation and expiry. A serving worker keeps the
principals of keys it has seen (`KeyCache`); a revocation writes a `keys` row to the change feed
in the same transaction, and every worker applies the feed before it authenticates a request, so
a revoked key is refused by the very next request to any worker.

**Security events** (CJIS-style, in the audit chain, api/service/audit.py): `key_created` (name, role, agency,
purposes, expiry, who made it) in the transaction that stores the key, `key_revoked` (name, who) in the
one that revokes it, and, from `authorise` (api/web/auth.py), `auth_failed` for a refused key while the client
is under the failure throttle's limits and one `auth_lockout` when it goes over (api/service/throttle.py), so a
flood cannot grow the log without bound. No event holds a presented key or its hash: a failure carries the
key's `fingerprint` (the first 8 hex of its SHA-256, enough to tell repeated guesses apart) and the client
address.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from api.service.audit import append, record_event
from api.service.changes import record_change
from api.service.store import Store, api_keys
from api.service.times import parse_when
from scoring.item import RESPONDERS, Principal, Purpose, Role

PREFIX = "brf_"


class KeyRefused(ValueError):
    """A key operation the store refuses (duplicate name, unknown name): the message says which."""


class PurposeRequired(KeyRefused):
    """A responder key (a role that asks for briefings) with no purpose: every briefing with it would be refused."""


@dataclass(frozen=True)
class KeyInfo:
    name: str
    role: str
    agency: str
    purposes: tuple[str, ...]
    created_at: str
    expires_at: str | None
    revoked_at: str | None


def key_digest(key: str) -> str:
    """A key's SHA-256 (hex): what `api_keys` stores, and all a steward's session cookie holds of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def fingerprint(presented: str) -> str:
    """The first 8 hex of a presented key's SHA-256: names a key in the audit log without disclosing it."""
    return hashlib.sha256(presented.encode()).hexdigest()[:8]


def create_key(store: Store, name: str, role: Role, agency: str, purposes: list[Purpose],
               expires_at: datetime | None = None, by: str | None = None) -> str:
    """Store a new key for this principal and return the key itself (the only time it is seen); audited
    as `key_created`, made `by` whom (the CLI passes its user).

    A responder role (scoring.item.RESPONDERS: the roles that ask for briefings) needs at least one purpose:
    every briefing claims a purpose its key grants (scoring/policy.py), so a key without one would be
    refused every briefing; `PurposeRequired` (a ValueError) names the purposes instead."""
    if Role(role) in RESPONDERS and not purposes:
        raise PurposeRequired(f"a key with role {Role(role).value} needs at least one purpose, from "
                              f"{', '.join(p.value for p in Purpose)}: every briefing claims a purpose its key "
                              "grants, so with none each would be refused")
    key = PREFIX + secrets.token_urlsafe(32)
    row = {"name": name, "key_hash": key_digest(key), "role": Role(role).value, "agency": agency,
           "purposes": "|".join(Purpose(p).value for p in purposes), "created_at": _now().isoformat(),
           "expires_at": expires_at.isoformat() if expires_at else None, "revoked_at": None}
    try:
        with store.begin() as connection:
            connection.execute(insert(api_keys).values(**row))
            append(connection, "key_created", {"name": name, "role": row["role"], "agency": agency,
                                               "purposes": row["purposes"].split("|") if row["purposes"] else [],
                                               "expires_at": row["expires_at"], "by": by}, principal=by)
    except IntegrityError:
        raise KeyRefused(f"a key named {name!r} already exists") from None
    return key


def list_keys(store: Store) -> list[KeyInfo]:
    """Every key's principal and dates (never the key or its hash), by name."""
    with store.engine.connect() as connection:
        rows = connection.execute(select(api_keys).order_by(api_keys.c.name)).mappings().all()
    return [KeyInfo(r["name"], r["role"], r["agency"], tuple(p for p in r["purposes"].split("|") if p),
                    r["created_at"], r["expires_at"], r["revoked_at"]) for r in rows]


def revoke_key(store: Store, name: str, by: str | None = None) -> None:
    """Revoke a key by name: its next request to any worker is refused. Audited as `key_revoked`."""
    with store.begin() as connection:
        done = connection.execute(update(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                                  .values(revoked_at=_now().isoformat()))
        if done.rowcount == 0:
            exists = connection.execute(select(api_keys.c.name).where(api_keys.c.name == name)).first()
            raise KeyRefused(f"no key named {name!r}" if exists is None else f"key {name!r} is already revoked")
        record_change(connection, "keys")
        append(connection, "key_revoked", {"name": name, "by": by}, principal=by)


def audit_failed_authentication(store: Store, header: str, address: str, path: str, lockout: bool = False,
                                retry_after: float | None = None) -> None:
    """`auth_failed` (or, for the failure that went over the throttle's limit, `auth_lockout`) for the
    Authorization header `header`: the client address, the path and the presented key's fingerprint, never the key."""
    scheme, _, presented = header.partition(" ")
    presented = presented.strip() if scheme == "Bearer" else ""
    payload = {"address": address, "path": path, "key_fingerprint": fingerprint(presented) if presented else None,
               "reason": "key_not_accepted" if presented else "no_bearer_key"}
    if lockout:
        payload["retry_after_seconds"] = int(retry_after or 0)
    record_event(store, "auth_lockout" if lockout else "auth_failed", payload)


def authenticate(store: Store, presented: str, at: datetime | None = None) -> Principal | None:
    """The principal of a presented key, or None (unknown, revoked or expired)."""
    found = _lookup(store, presented)
    return found[0] if found is not None and not _expired(found[1], at) else None


def principal_by_digest(store: Store, digest: str, at: datetime | None = None) -> Principal | None:
    """The principal of the key whose SHA-256 is `digest` (`key_digest`), or None (unknown, revoked or expired)."""
    found = _lookup_digest(store, digest)
    return found[0] if found is not None and not _expired(found[1], at) else None


def _lookup(store: Store, presented: str) -> tuple[Principal, datetime | None] | None:
    """(principal, expiry) of an unrevoked key, or None."""
    if not presented or not presented.startswith(PREFIX):
        return None
    return _lookup_digest(store, key_digest(presented))


def _lookup_digest(store: Store, digest: str) -> tuple[Principal, datetime | None] | None:
    """(principal, expiry) of the unrevoked key whose SHA-256 is `digest`, or None: the one look-up of a key."""
    with store.engine.connect() as connection:
        row = connection.execute(select(api_keys).where(api_keys.c.key_hash == digest)).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    purposes = tuple(Purpose(p) for p in row["purposes"].split("|") if p)
    expires = parse_when(row["expires_at"]) if row["expires_at"] is not None else None
    return Principal(name=row["name"], role=Role(row["role"]), agency=row["agency"], purposes=purposes), expires


def _expired(expires: datetime | None, at: datetime | None = None) -> bool:
    return expires is not None and expires <= (at or _now())


class KeyCache:
    """A worker's memory of the keys it has authenticated (never of refused ones).

    Emptied by `clear()` when the change feed says keys changed; an entry also lapses after
    `ttl` seconds, in case a key was changed in the store by hand, outside `revoke_key`.
    """

    def __init__(self, store: Store, ttl: float = 60.0):
        self.store, self.ttl = store, ttl
        self._known: dict[str, tuple[Principal, datetime | None, float]] = {}

    def authenticate(self, presented: str) -> Principal | None:
        digest = key_digest(presented or "")
        hit = self._known.get(digest)
        if hit is None or time.monotonic() - hit[2] > self.ttl:
            found = _lookup(self.store, presented)
            if found is None:
                self._known.pop(digest, None)
                return None
            hit = (*found, time.monotonic())
            self._known[digest] = hit
        return None if _expired(hit[1]) else hit[0]

    def clear(self) -> None:
        self._known.clear()
