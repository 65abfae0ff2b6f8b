"""SQLite's writers wait their turn on a file lock, woken the moment it is free, not in SQLite's busy handler.

SQLite lets one connection write at a time. Another that wants to write meanwhile gets `SQLITE_BUSY`, and its busy
handler sleeps and tries again: 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms, … So a briefing whose audit append
finds another worker's in progress (about a millisecond) may sleep 10 to 50 ms; at 300 briefings a second, with two
workers appending, those sleeps hold the requests queued behind them into bursts of 100 ms and more.

So every transaction `Store` opens on a SQLite file first takes an exclusive `flock` on `<database>.write-lock`, and
releases it after the commit or rollback: the kernel wakes a waiting writer as soon as the lock is free, so a writer
waits as long as the transaction ahead of it and no longer. Each transaction opens the file itself, so threads of one
process queue as processes do; a thread already holding the lock (a transaction opened inside another) does not take
it again. The lock is released explicitly, never left to a close, so a process forked meanwhile, which inherits the
open file, cannot keep it. Writers outside `Store` (another tool, an older version) still meet SQLite's busy timeout,
as before.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class WriteLock:
    """The write lock of one SQLite file (`path`, the database), or of nothing (`None`: a server database, whose
    writers wait on the server's own locks, or an in-memory one, which has one connection)."""

    def __init__(self, database: Path | None):
        self.path = None if database is None else database.with_name(database.name + ".write-lock")
        self._held = threading.local()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block: wait for it if another transaction holds it."""
        if self.path is None or getattr(self._held, "depth", 0):
            yield
            return
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            os.close(handle)
