"""Index rebuilds off the request path.

A bulk load (`briefing ingest`) appends one `rebuild` change. The fresh index is then built from the
store in a background thread at lower CPU priority, while requests keep being answered from the
current index, which keeps applying every later change (api.service.changes). When the build is
done, the changes recorded after its snapshot (upserts, deletes, erasures, key revocations) are
applied to it, and it is swapped in under the lock that orders change application
(`Service.changes_lock`): a request is answered from the old index or from the new one, each with
every change applied, so a record deleted or erased is never answered from either. No request waits
for a build.

Under `briefing serve` (api/web/serve.py) the build runs once per replica, in the gunicorn master:
the master watches the change feed (`watch`), builds, swaps, then re-forks its workers, which share
the new index copy-on-write; workers never build (`IndexRebuilder.builds_here` is off in them). The
build's state lives in anonymous shared memory, so `/readyz` on any worker reports the generation
it answers from and the master's build in progress (`RebuildStatus`).

Forking while another thread holds a lock copies the lock held into the child for ever. The
threads here hold `FORK_GUARD` while they use the service's connection pool or change the master's
index (moments), and a fork waits for it (`os.register_at_fork`); the build reads the store through
an engine of its own, which no child uses.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import RawArray
from typing import Callable

from api.service.changes import apply_changes, apply_rows, changes_after, latest
from api.service.person_data import index_frames
from api.service.store import Store, open_store
from matching.model import MatcherModel
from matching.resolve import Resolver

log = logging.getLogger("briefing")

BUILD_NICE = 10                 # the build yields the CPU to requests (Linux nice is per thread)
RETRY_AFTER = (10.0, 60.0, 300.0)   # seconds before each retry of a failed build (a store briefly away)
STATES = ("serving", "building", "failed")
#: Shares of a build's progress: reading the store up to the first, indexing up to the second, then
#: catching up with the changes made meanwhile.
READ_SHARE, INDEXED_SHARE = 0.2, 0.95

FORK_GUARD = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=FORK_GUARD.acquire, after_in_parent=FORK_GUARD.release,
                        after_in_child=FORK_GUARD.release)


def build_resolver(store: Store, matcher: MatcherModel, progress: Callable[[float], None] | None = None) -> Resolver:
    """A resolver over every record in `store`, its first-call costs paid (progress: 0..1 as it goes)."""
    report = progress or (lambda share: None)
    frame, people = index_frames(store)
    report(READ_SHARE)
    resolver = Resolver(matcher).fit(frame, people,
                                     progress=lambda done, total: report(READ_SHARE + (INDEXED_SHARE - READ_SHARE) * done / total))
    resolver.resolve({"given_name": "Warm", "family_name": "Up", "approx_age": 40})
    return resolver


@dataclass(frozen=True)
class RebuildStatus:
    """What `/readyz` says of the index: the generation answering, and the replica's build."""

    generation: int                 # the index this process answers from (1: the one built at start-up)
    newest_generation: int          # the newest the replica has swapped in (a worker not yet re-forked lags)
    state: str                      # serving | building | failed (the last build failed; the old index serves)
    progress: float | None          # of the build in progress, 0..1
    started_at: float | None        # Unix time the build in progress (or that failed) started

    def to_dict(self) -> dict:
        return {"generation": self.generation, "newest_generation": self.newest_generation, "state": self.state,
                "progress": None if self.progress is None else round(self.progress, 3),
                "started_at": self.started_at}


class IndexRebuilder:
    """Builds a service's next index in a background thread and swaps it in (see the module docstring).

    `on_swap` runs after each swap (the master re-forks its workers there). `builds_here` is turned off
    in forked workers: their replica's master builds. A failed build is retried after each of
    `retry_after` seconds, then left to the next bulk load; the old index answers throughout.
    """

    def __init__(self, service, on_swap: Callable[[], None] | None = None, nice: int = BUILD_NICE,
                 retry_after: tuple[float, ...] = RETRY_AFTER):
        self.service, self.on_swap, self.nice, self.retry_after = service, on_swap, nice, retry_after
        self.builds_here = True
        self._lock = threading.Lock()
        self._pending: int | None = None          # the newest rebuild change asked for and not yet built
        self._thread: threading.Thread | None = None
        # state, newest generation, progress, started_at: written by the builder, read by every forked worker
        self._shared = RawArray(ctypes.c_double, 4)
        self._shared[1] = service.generation

    def request(self, seq: int) -> None:
        """Ask for an index that holds the store as of change `seq` or later; returns at once."""
        if not self.builds_here:
            return
        with self._lock:
            self._pending = max(seq, self._pending or 0)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="index-rebuild", daemon=True)
                self._thread.start()

    def status(self) -> RebuildStatus:
        state, newest, progress, started = self._shared[:]
        building = STATES[int(state)] == "building"
        return RebuildStatus(self.service.generation, int(newest), STATES[int(state)],
                             progress if building else None, started or None)

    def wait(self, timeout: float) -> bool:
        """Wait until no build is running or asked for; False if `timeout` seconds passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._thread is None:
                    return True
            time.sleep(0.02)
        return False

    def _run(self) -> None:
        _lower_priority(self.nice)
        failures = 0
        while True:
            with self._lock:
                if self._pending is None:
                    self._thread = None
                    return
                target, self._pending = self._pending, None
            self._shared[:] = [STATES.index("building"), self._shared[1], 0.0, time.time()]
            try:
                self._build()
                failures = 0
            except Exception:                     # the old index keeps serving; a few retries, then the next load
                log.exception("index rebuild failed; still answering from generation %d", self.service.generation)
                self._shared[0] = STATES.index("failed")
                if failures < len(self.retry_after):
                    time.sleep(self.retry_after[failures])
                    failures += 1
                    with self._lock:
                        self._pending = max(target, self._pending or 0)

    def _build(self) -> None:
        service = self.service
        with FORK_GUARD, service.store.engine.connect() as connection:
            snapshot = latest(connection)          # read first: changes after it are applied below
        # Read through an engine of its own: a fork (a worker spawned) while it reads copies no lock the
        # service's connection pool needs, so the read, seconds long, need not hold FORK_GUARD.
        reader = open_store(service.store.engine.url.render_as_string(hide_password=False))
        try:
            resolver = build_resolver(reader, service.resolver.base_model, progress=self._progress)
        finally:
            reader.engine.dispose()
        with FORK_GUARD, service.store.engine.connect() as connection:
            rows = changes_after(connection, snapshot)        # most of the catching up, outside the swap's lock
            apply_rows(connection, resolver, rows)
        position = rows[-1].seq if rows else snapshot
        with FORK_GUARD, service.changes_lock, service.store.engine.connect() as connection:   # this order everywhere
            rows += (late := changes_after(connection, position))
            apply_rows(connection, resolver, late)
            end = rows[-1].seq if rows else snapshot
            if any(r.op == "keys" and r.seq > service.applied for r in rows):
                service.keys.clear()
            later_rebuilds = [r.seq for r in rows if r.op == "rebuild"]
            service.resolver, service.applied = resolver, max(end, service.applied)
            service.generation += 1
        self._shared[:] = [STATES.index("serving"), service.generation, 1.0, 0.0]
        log.info("index generation %d swapped in: %d records", service.generation, resolver.index_.n_records)
        if later_rebuilds:
            with self._lock:
                self._pending = max(later_rebuilds[-1], self._pending or 0)
        if self.on_swap:
            self.on_swap()

    def _progress(self, share: float) -> None:
        self._shared[2] = share


def watch(service, interval: float = 1.0) -> threading.Thread:
    """Apply the change feed to `service` every `interval` seconds in a daemon thread (the gunicorn master,
    which answers no requests, learns of bulk loads this way and builds their index)."""
    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                with FORK_GUARD:
                    apply_changes(service)
            except Exception:                     # the store unreachable for a moment: try again next time
                log.exception("watching the change feed failed")

    thread = threading.Thread(target=loop, name="change-feed", daemon=True)
    thread.start()
    return thread


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority (Linux: niceness is per thread); elsewhere, nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass
