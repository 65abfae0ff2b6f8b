"""Programs' webhooks: where a program is told of its referrals, and how the message is signed.

An admin registers a program's URL (`briefing programs webhook`); HTTPS only, unless the deployment sets
`BRIEFING_ALLOW_HTTP_WEBHOOKS=1` (tests and local benchmarks). Registering makes a secret (`whsec_…`, shown
once); `rotate_secret` makes a new one and keeps signing with the old one too for a grace period (default
24 h), so a receiver can switch without losing a message.

Every message is a POST whose body is only the event and the referral's id (`{"delivery_id", "event",
"referral_id", "occurred_at"}`): the receiver fetches the rest with its own key, an audited read, so nothing
about a person travels in a message that could be logged on the way. Headers:

    Briefing-Delivery: <delivery id>                 the same on every send of one event (deduplicate on it)
    Briefing-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]

`v1` is HMAC-SHA256 with the program's secret over `"<t>." + body` (the scheme Stripe's and Svix's webhooks
use); during a rotation there is one `v1` per live secret. A receiver recomputes it with its secret, compares
in constant time, and refuses a `t` more than five minutes from its clock (a replayed message): `verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as random_secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import orjson
from sqlalchemy import select, update

from api.service.audit import append
from api.service.refusals import FieldRefusal, NotFound
from api.service.store import Store, programs
from api.service.times import parse_time, utc_text

SIGNATURE_HEADER = "Briefing-Signature"
DELIVERY_HEADER = "Briefing-Delivery"
TOLERANCE_SECONDS = 300
ROTATION_GRACE = timedelta(hours=24)
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class Hook:
    """A program's webhook: its URL and the secrets it is signed with now (the newest first)."""

    url: str
    secrets: tuple[str, ...]


def allows_http() -> bool:
    return os.environ.get("BRIEFING_ALLOW_HTTP_WEBHOOKS", "").strip() in ("1", "true", "yes")


def _checked_url(url: str) -> str:
    parts = urlsplit(url.strip())
    schemes = ("https", "http") if allows_http() else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise FieldRefusal({"url": "a webhook URL must be https://host/… (http only where "
                                   "BRIEFING_ALLOW_HTTP_WEBHOOKS=1, for tests)"})
    return url.strip()


def set_webhook(store: Store, program: str, url: str, by: str) -> str:
    """Register (or replace) `program`'s webhook URL with a new secret; the secret, shown only now. Audited."""
    url, secret = _checked_url(url), SECRET_PREFIX + random_secrets.token_urlsafe(32)
    _update(store, program, by, "webhook_registered", {"url": url},
            webhook_url=url, webhook_secret=secret, previous_secret=None, previous_until=None)
    return secret


def rotate_secret(store: Store, program: str, by: str, now: datetime, grace: timedelta = ROTATION_GRACE) -> str:
    """A new secret for `program`'s webhook; the old one keeps signing until `now + grace`. Audited."""
    with store.engine.connect() as connection:
        row = connection.execute(select(programs.c.webhook_secret).where(programs.c.name == program)).first()
    if row is None or row.webhook_secret is None:
        raise NotFound(f"program {program!r} has no webhook to rotate")
    secret = SECRET_PREFIX + random_secrets.token_urlsafe(32)
    until = utc_text(now + grace)
    _update(store, program, by, "webhook_secret_rotated", {"old_secret_valid_until": until},
            webhook_secret=secret, previous_secret=row.webhook_secret, previous_until=until)
    return secret


def _update(store: Store, program: str, by: str, action: str, audited: dict, **values) -> None:
    with store.begin() as connection:
        changed = connection.execute(update(programs).where(programs.c.name == program).values(**values)).rowcount
        if not changed:
            raise NotFound(f"no program {program!r}")
        append(connection, action, {"by": by, "program": program, **audited}, principal=by)


def hook_of(connection, program: str, now: datetime) -> Hook | None:
    """`program`'s webhook as it is signed at `now`, or None when it has none (it polls)."""
    row = connection.execute(select(programs).where(programs.c.name == program)).first()
    if row is None or not row.webhook_url:
        return None
    live = [row.webhook_secret]
    until = parse_time(row.previous_until)
    if row.previous_secret and until is not None and now < until:
        live.append(row.previous_secret)
    return Hook(row.webhook_url, tuple(live))


def message_body(delivery_id: int, event: str, referral_id: int, occurred_at: str) -> bytes:
    """The body of a message: the event and ids only (see the module docstring)."""
    return orjson.dumps({"delivery_id": delivery_id, "event": event, "referral_id": referral_id,
                         "occurred_at": occurred_at})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 (hex) of `"<timestamp>." + body` with `secret`."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(live_secrets: tuple[str, ...], timestamp: int, body: bytes) -> str:
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in live_secrets)])


def verify(header: str, body: bytes, secret: str, now: float, tolerance: int = TOLERANCE_SECONDS) -> bool:
    """The receiver's check: a `v1` of `header` is the HMAC of this body with `secret`, and `t` is within
    `tolerance` seconds of `now` (unix seconds)."""
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in fields if k.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    expected = sign(secret, int(stamps[0]), body)
    return any(hmac.compare_digest(expected, v.strip()) for k, v in fields if k.strip() == "v1")
