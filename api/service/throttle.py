"""Throttling of failed authentication: 429 after repeated failures, never for a valid key; bounded memory.

Failures are counted per (presented credential, client address) and per client address, in a sliding
window. A request whose key is valid is never throttled, so a guessing client next to a working CAD
integration cannot lock the integration out; a client that keeps presenting bad keys gets 429 with
`Retry-After`. Counts live in each worker's memory (a guesser spread over workers is still slowed by
every one of them).

`record` also says whether this failure is the one that took the client over a limit (`lockout`), so
that the caller audits each failure only while the client is under the limits and then one lockout: a
flood adds at most limit + 1 events per client and window to the audit log (api/web/auth.py `authorise`).

**Memory is bounded.** An entry keeps at most limit + 1 failure times (more never changes an answer);
an entry whose newest failure is older than the window is forgotten (looked for from the least recently
failed end on every failure: amortised constant work); and at most `max_entries` entries are kept, the
least recently failed evicted first. 100,000 distinct bad keys therefore leave at most `max_entries`
entries (about 1 KiB each). The price of the cap: under a flood of distinct credentials and addresses,
an evicted client starts counting again; a flood from one address keeps that address's entry fresh, so
it stays limited.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

WINDOW_SECONDS = 60.0
PER_CREDENTIAL = 5
PER_ADDRESS = 20
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Verdict:
    wait: float | None       # seconds to wait if the client is now over a limit, else None
    lockout: bool = False    # this failure took the client over a limit (it was under before it)


class FailureThrottle:
    def __init__(self, window: float = WINDOW_SECONDS, per_credential: int = PER_CREDENTIAL, per_address: int = PER_ADDRESS,
                 max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic):
        if max_entries < 2:
            raise ValueError("max_entries must leave room for a client's credential and address entries (>= 2)")
        self.window, self.per_credential, self.per_address = window, per_credential, per_address
        self.max_entries, self.clock = max_entries, clock
        self._failures: OrderedDict[tuple, deque] = OrderedDict()     # least recently failed first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many (credential, address) and address entries are tracked."""
        return len(self._failures)

    def _recent(self, key: tuple, limit: int, now: float) -> deque:
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=limit + 1)
        else:
            self._failures.move_to_end(key)
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def _forget(self, now: float) -> None:
        """Drop the entries whose newest failure left the window, then the least recently failed over the cap."""
        while self._failures:
            times = next(iter(self._failures.values()))
            if times and now - times[-1] <= self.window:
                break
            self._failures.popitem(last=False)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)

    def record(self, credential: str, address: str) -> Verdict:
        """Record one failure: how long to wait if the client is now over a limit, and whether it just went over."""
        now = self.clock()
        fingerprint = hashlib.sha256(credential.encode()).hexdigest()[:16]
        with self._lock:
            per_key = self._recent(("key", fingerprint, address), self.per_credential, now)
            per_address = self._recent(("address", address), self.per_address, now)
            was_over = len(per_key) > self.per_credential or len(per_address) > self.per_address
            per_key.append(now)
            per_address.append(now)
            self._forget(now)
            over_key, over_address = len(per_key) > self.per_credential, len(per_address) > self.per_address
            if over_key or over_address:
                oldest = per_key[0] if over_key else per_address[0]
                return Verdict(max(1.0, self.window - (now - oldest)), lockout=not was_over)
        return Verdict(None)

    def failed(self, credential: str, address: str) -> float | None:
        """Record one failure; seconds to wait if the client is now over a limit, else None."""
        return self.record(credential, address).wait
