"""The deliverer: sends the outbox's due rows to the programs' webhooks, signed, retried, parked.

`briefing deliver --db DB` runs one as its own process, and `briefing serve` keeps one running beside the
workers (restarting it if it dies). Each pass `claim`s due rows (api.service.outbox: a lease, so a deliverer
killed mid-send leaves its rows to the next, which sends them again under the same delivery id) and sends
them from a thread pool, so one slow receiver does not hold up the others. A 2xx answer marks a row
delivered; anything else (an error status, a refused connection, a timeout) schedules a retry with backoff,
and a row that keeps failing is parked. A program whose webhook was removed parks its rows at once.

The pass runs again as soon as the last found work, else every `poll` seconds (0.1 s by default: a referral
written by any worker reaches its receiver well within a second).
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable

from api.service.outbox import Delivery, claim, delivered, failed
from api.service.store import Store
from api.service.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, Hook, hook_of, message_body, signature_header

log = logging.getLogger("briefing.deliver")
SEND_TIMEOUT = 5.0


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = SEND_TIMEOUT) -> None:
    """POST `body` to `url`; raises unless the answer is 2xx (redirects are not followed: a 3xx is a failure)."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as answer:
        if not 200 <= answer.status < 300:
            raise urllib.error.HTTPError(url, answer.status, "not a 2xx answer", answer.headers, None)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Deliverer:
    """Sends due outbox rows (see the module docstring); `run` until `stop` is set, or `run_once` for one pass."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = _utc_now,
                 send: Callable[[str, bytes, dict[str, str]], None] = post, workers: int = 8, poll: float = 0.1):
        self.store, self.clock, self.send, self.poll = store, clock, send, poll
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deliver")
        self.batch = workers * 4

    def run_once(self) -> int:
        """Claim the due rows and send them all; how many were claimed."""
        rows = claim(self.store, self.clock(), limit=self.batch)
        if rows:
            list(self.pool.map(self._send_one, rows))
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:                       # a store that is briefly unavailable: log, wait, try again
                log.exception("delivery pass failed")
                busy = 0
            if not busy:
                stop.wait(self.poll)
        self.pool.shutdown(wait=True)

    def _send_one(self, row: Delivery) -> None:
        now = self.clock()
        with self.store.engine.connect() as connection:
            hook = hook_of(connection, row.program, now)
        if hook is None:
            failed(self.store, row, "the program has no webhook", now, park=True)
            return
        try:
            self._post(hook, row, now)
        except Exception as error:                  # any failure to deliver is retried; the reason is kept
            parked = failed(self.store, row, f"{type(error).__name__}: {error}", self.clock())
            log.warning("delivery %s to %s failed (attempt %s%s): %s", row.id, row.program, row.attempts,
                        ", parked" if parked else "", error)
            return
        delivered(self.store, row, self.clock())

    def _post(self, hook: Hook, row: Delivery, now: datetime) -> None:
        body = message_body(row.id, row.event, row.referral_id, row.occurred_at)
        self.send(hook.url, body, {DELIVERY_HEADER: str(row.id),
                                   SIGNATURE_HEADER: signature_header(hook.secrets, int(now.timestamp()), body)})
