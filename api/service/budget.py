"""Work under a time budget that never piles up behind a stall.

A briefing must answer within its budget (api/web/briefings.py): past it the client gets `unavailable`
at once. The work itself cannot be interrupted from outside (a stalled store query holds its
thread), so two things keep a stall from queueing stale work that would make later requests
late too:

- **No queue.** `BudgetPool(workers)` runs at most `workers` pieces of work at a time, one thread
  each, and never queues: when every thread is busy (typically with work whose request has already
  answered `unavailable`), new work is refused at once (`Outcome.busy`) instead of waiting behind it.
- **Cooperative cancellation.** Work gets a `Ticket`; when its budget runs out the ticket is
  cancelled, and the work calls `ticket.check()` between its steps (after resolving, after reading
  items), which raises `Overdue` and ends it. A stall that ends therefore frees its thread at the
  next step instead of finishing work nobody will read.

Threads start on first use, so a gunicorn worker forked from a preloaded master gets its own.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable


class Overdue(Exception):
    """Raised by `Ticket.check` in work whose budget has run out: nobody will read its result."""


class Ticket:
    """One piece of work's cancellation flag."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Stop here (raise `Overdue`) if the budget has run out."""
        if self._cancelled.is_set():
            raise Overdue


@dataclass(frozen=True)
class Outcome:
    status: str                  # "done", "overdue" (budget ran out) or "busy" (every thread busy: not started)
    value: Any = None

    @property
    def done(self) -> bool:
        return self.status == "done"


class BudgetPool:
    """At most `workers` pieces of work at once, none queued; overdue work is cancelled."""

    def __init__(self, workers: int = 8, thread_name_prefix: str = "briefing"):
        self.workers = workers
        self._slots = threading.BoundedSemaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix)
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        """Pieces of work started and not yet finished (overdue ones included)."""
        with self._lock:
            return self._running

    @property
    def queued(self) -> int:
        """Work waiting for a thread: always 0 by construction (tests assert it)."""
        return self._executor._work_queue.qsize()

    def run(self, work: Callable[[Ticket], Any], budget_seconds: float) -> Outcome:
        """`work(ticket)` on a thread of its own, waited for at most `budget_seconds`.

        Its exceptions propagate (except `Overdue`, which only ever ends work nobody waits for).
        """
        if not self._slots.acquire(blocking=False):
            return Outcome("busy")
        ticket = Ticket()
        with self._lock:
            self._running += 1

        def guarded():
            try:
                return work(ticket)
            except Overdue:
                return None
            finally:
                with self._lock:
                    self._running -= 1
                self._slots.release()

        future = self._executor.submit(guarded)
        try:
            return Outcome("done", future.result(timeout=budget_seconds))
        except FutureTimeout:
            ticket.cancel()
            if future.cancel():              # never started (cannot happen with a free slot, but never leak one)
                with self._lock:
                    self._running -= 1
                self._slots.release()
            return Outcome("overdue")
