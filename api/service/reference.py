"""Opaque record and person references: what a responder is told instead of record and person ids.

A record id often names its source (`EHR-…`, `SUD-…`), and the agency of a record says which
program holds it; told either, an officer without consent learns that a person is a patient of a
behavioural-health or substance-use program, which 42 CFR Part 2 itself protects. Responders
therefore get `ref-` + 20 hex digits of HMAC-SHA256(secret, record id): stable for one record (so
an integrator can tell two answers about the same record apart), meaningless without the secret,
and the same on every worker and replica of a store (`BRIEFING_REFERENCE_SECRET`, else a secret
kept in the store's settings). The audit log keeps the real ids; stewards, who review records,
see them too.

Person ids need the same treatment: a person id is derived from the record that started the person
(`matching.cluster.fresh_person_id`, an unkeyed hash), so given one, a guesser who tries the few
likely record ids (`SUD-000001`, …) finds the source. Responders get `psn-` + 20 hex digits of the
keyed hash of the person id instead. The two references are keyed apart (a record's reference is
never a person's).
"""

from __future__ import annotations

import hashlib
import hmac

from api.service.store import Store, stored_secret

SECRET_SETTING = "record_reference_secret"
PREFIX = "ref-"
PERSON_PREFIX = "psn-"


def reference_secret(store: Store) -> bytes:
    """The secret that keys this store's record references."""
    return stored_secret(store, SECRET_SETTING, "BRIEFING_REFERENCE_SECRET").encode()


def record_reference(record_id: str, secret: bytes) -> str:
    """The opaque reference a responder sees for `record_id`."""
    return PREFIX + _keyed(secret, "record", record_id)


def person_reference(person_id: str, secret: bytes) -> str:
    """The opaque reference a responder sees for `person_id`."""
    return PERSON_PREFIX + _keyed(secret, "person", person_id)


def _keyed(secret: bytes, kind: str, value: str) -> str:
    return hmac.new(secret, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()[:20]
