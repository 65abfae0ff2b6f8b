"""Throttling of failed authentication: 429 after repeated failures, never for a valid key.

Failures are counted per (presented credential, client address) and per client address, in a
sliding window. A request whose key is valid is never throttled, so a guessing client next to a
working CAD integration cannot lock the integration out; a client that keeps presenting bad keys
gets 429 with `Retry-After`. Counts live in each worker's memory (a guesser spread over workers
is still slowed by every one of them).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict, deque

WINDOW_SECONDS = 60.0
PER_CREDENTIAL = 5
PER_ADDRESS = 20


class FailureThrottle:
    def __init__(self, window: float = WINDOW_SECONDS, per_credential: int = PER_CREDENTIAL, per_address: int = PER_ADDRESS):
        self.window, self.per_credential, self.per_address = window, per_credential, per_address
        self._failures: dict[tuple, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: tuple, now: float) -> deque:
        times = self._failures[key]
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def failed(self, credential: str, address: str) -> float | None:
        """Record one failure; seconds to wait if the client is now over a limit, else None."""
        now = time.monotonic()
        fingerprint = hashlib.sha256(credential.encode()).hexdigest()[:16]
        with self._lock:
            per_key = self._recent(("key", fingerprint, address), now)
            per_address = self._recent(("address", address), now)
            per_key.append(now)
            per_address.append(now)
            if len(per_key) > self.per_credential or len(per_address) > self.per_address:
                oldest = per_key[0] if len(per_key) > self.per_credential else per_address[0]
                return max(1.0, self.window - (now - oldest))
        return None
