"""Opaque record references: what a responder is told instead of a record id.

A record id often names its source (`EHR-…`, `SUD-…`), and the agency of a record says which
program holds it; told either, an officer without consent learns that a person is a patient of a
behavioural-health or substance-use program, which 42 CFR Part 2 itself protects. Responders
therefore get `ref-` + 20 hex digits of HMAC-SHA256(secret, record id): stable for one record (so
an integrator can tell two answers about the same record apart), meaningless without the secret,
and the same on every worker and replica of a store (`BRIEFING_REFERENCE_SECRET`, else a secret
kept in the store's settings). The audit log keeps the real ids; stewards, who review records,
see them too.
"""

from __future__ import annotations

import hashlib
import hmac

from api.store import Store, stored_secret

SECRET_SETTING = "record_reference_secret"
PREFIX = "ref-"


def reference_secret(store: Store) -> bytes:
    """The secret that keys this store's record references."""
    return stored_secret(store, SECRET_SETTING, "BRIEFING_REFERENCE_SECRET").encode()


def record_reference(record_id: str, secret: bytes) -> str:
    """The opaque reference a responder sees for `record_id`."""
    return PREFIX + hmac.new(secret, record_id.encode(), hashlib.sha256).hexdigest()[:20]
