"""The transactional outbox of referral events: what a receiving program must be told, kept until it is told.

`enqueue` writes a row in the caller's transaction, the one that writes the referral (api.service.referrals),
so an event exists exactly when its referral change does: a process that dies before the commit leaves
neither, one that dies after it leaves the row for a deliverer to send. A deliverer (api.service.webhooks)
`claim`s due rows under a lease: a claimed row is not claimed again until its lease runs out, so a deliverer
killed mid-send leaves it to the next one, which sends it again. The receiver tells the two apart by the
delivery id, the row's id, which every send of a row carries: redelivery is harmless by design.

After a failed send the row waits `backoff(attempts)` (1 s, 2 s, 4 s … at most 10 minutes, with jitter so a
receiver that comes back is not hit by every row at once); after `MAX_ATTEMPTS` failed sends it is parked
(kept, never sent again until an admin requeues it) and shown on the program's page.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, insert, or_, select, update

from api.service.store import Store, begin_writing, outbox
from api.service.times import utc_text

MAX_ATTEMPTS = 8
LEASE = timedelta(seconds=10)            # longer than a send may take (SEND_TIMEOUT, api.service.deliverer)
MAX_BACKOFF_SECONDS = 600


@dataclass(frozen=True)
class Delivery:
    """One outbox row as a deliverer sends it."""

    id: int
    referral_id: int
    program: str
    event: str
    occurred_at: str
    attempts: int


def enqueue(connection, referral_id: int, program: str, event: str, at: datetime) -> None:
    """Keep `event` of referral `referral_id` for `program`, in the caller's transaction (see the module docstring)."""
    stamp = utc_text(at)
    connection.execute(insert(outbox).values(referral_id=referral_id, program=program, event=event, occurred_at=stamp,
                                             attempts=0, next_attempt_at=stamp))


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """How long a row waits after its `attempts`-th failed send: 2^(attempts-1) s, capped, with ±25 % jitter."""
    base = min(2.0 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)
    return timedelta(seconds=base * (0.75 + 0.5 * (rng or random).random()))


def _due(now: str):
    return and_(outbox.c.delivered_at.is_(None), outbox.c.parked_at.is_(None), outbox.c.next_attempt_at <= now,
                or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now))


def claim(store: Store, now: datetime, limit: int = 32, lease: timedelta = LEASE) -> list[Delivery]:
    """Up to `limit` due rows, oldest first, each leased to the caller until `now + lease` (one transaction, under
    the write lock: two deliverers never claim one row at once)."""
    stamp = utc_text(now)
    with store.engine.connect() as connection:          # an idle outbox costs one read, never the write lock
        if connection.execute(select(outbox.c.id).where(_due(stamp)).limit(1)).first() is None:
            return []
    with store.begin() as connection:
        begin_writing(connection)
        rows = connection.execute(select(outbox).where(_due(stamp)).order_by(outbox.c.id).limit(limit)
                                  .with_for_update(skip_locked=True)).all()
        if not rows:
            return []
        connection.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                           .values(lease_until=utc_text(now + lease), attempts=outbox.c.attempts + 1))
    return [Delivery(r.id, r.referral_id, r.program, r.event, r.occurred_at, r.attempts + 1) for r in rows]


def delivered(store: Store, delivery: Delivery, now: datetime) -> None:
    """The receiver acknowledged the row: it is never sent again."""
    with store.begin() as connection:
        connection.execute(update(outbox).where(outbox.c.id == delivery.id).values(
            delivered_at=utc_text(now), lease_until=None, last_error=None))


def failed(store: Store, delivery: Delivery, error: str, now: datetime, park: bool = False) -> bool:
    """A send failed: retry after `backoff`, or park the row after `MAX_ATTEMPTS` (or at once with `park`);
    whether it was parked."""
    parked = park or delivery.attempts >= MAX_ATTEMPTS
    values = {"lease_until": None, "last_error": error[:500]}
    if parked:
        values["parked_at"] = utc_text(now)
    else:
        values["next_attempt_at"] = utc_text(now + backoff(delivery.attempts))
    with store.begin() as connection:
        connection.execute(update(outbox).where(outbox.c.id == delivery.id).values(**values))
    return parked


def requeue(store: Store, program: str, now: datetime) -> int:
    """Send a program's parked rows again (an admin, once its receiver is fixed); how many."""
    with store.begin() as connection:
        return connection.execute(update(outbox).where(outbox.c.program == program, outbox.c.parked_at.is_not(None),
                                                       outbox.c.delivered_at.is_(None))
                                  .values(parked_at=None, attempts=0, next_attempt_at=utc_text(now))).rowcount


def deliveries_of(store: Store, program: str, limit: int = 50) -> dict:
    """A program's delivery state for its page: how many rows were delivered and are waiting, and the parked ones."""
    mine, undelivered = outbox.c.program == program, outbox.c.delivered_at.is_(None)
    with store.engine.connect() as connection:
        done = connection.execute(select(func.count()).where(mine, outbox.c.delivered_at.is_not(None))).scalar()
        waiting = connection.execute(select(func.count()).where(mine, undelivered, outbox.c.parked_at.is_(None))).scalar()
        parked = connection.execute(select(outbox).where(mine, undelivered, outbox.c.parked_at.is_not(None))
                                    .order_by(outbox.c.id.desc()).limit(limit)).mappings().all()
    return {"delivered": done, "waiting": waiting,
            "parked": [{k: r[k] for k in ("id", "referral_id", "event", "occurred_at", "attempts", "last_error",
                                          "parked_at")} for r in parked]}
