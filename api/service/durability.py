"""A SQLite store's commits made durable outside the write lock (api.service.store: "Durable commits").

Connections run `synchronous=NORMAL`: SQLite's commit writes the transaction to the write-ahead log and
releases the write lock without flushing. `LogFlusher.flush`, called by the store once the commit has
returned, flushes the log (`fdatasync`) before the caller goes on. Three rules keep that as safe as a flush
inside the commit:

- **The log SQLite writes.** Its path is read from SQLite itself (`PRAGMA database_list`, symbolic links
  resolved, as SQLite names the log), not derived from the URL.
- **One descriptor per process.** Linux reports a failed write-back once per open file, to the first flush
  that asks; a descriptor opened afresh for each flush could miss the failure of another's frames. The
  descriptor is reopened only when the log was replaced (the last connection to close checkpointed it into
  the database, flushed, and removed it) or in a forked child.
- **A failed flush is final.** Once a flush fails, every later transaction is refused before it begins
  (`refuse_if_failed`, called by the store): commits after it may sit on
  pages the system could not write, and the store must be looked at (as PostgreSQL stops on a failed flush).

The flush of a commit also flushes every other writer's frames before it, so writers committed together share it.
A reader may see a commit a moment before its writer's flush has returned; no one has been answered for it yet.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

from sqlalchemy import Engine


_LIVE: "weakref.WeakSet[LogFlusher]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A lock held by another thread at the fork stays held in the child for ever: each flusher starts afresh."""
    for flusher in _LIVE:
        flusher._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class LogFlushFailed(OSError):
    """A flush of the store's write-ahead log failed; every later commit is refused until the store is looked at."""


class LogFlusher:
    """Flushes a SQLite file store's write-ahead log; does nothing for PostgreSQL or an in-memory store."""

    def __init__(self, engine: Engine):
        self.engine = engine
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self.applies = bool(database) and database != ":memory:"
        self._path: Path | None = None
        self._handle: int | None = None
        self._owner = 0                    # the process that opened `_handle`
        self._failed: OSError | None = None
        self._lock = threading.Lock()
        _LIVE.add(self)

    def path(self) -> Path | None:
        """The write-ahead log SQLite writes for this store, or None when there is none to flush."""
        if self.applies and self._path is None:
            with self.engine.connect() as connection:
                rows = connection.exec_driver_sql("PRAGMA database_list").all()
            main = next((file for _, name, file in rows if name == "main"), "")
            self._path = Path(os.path.realpath(main) + "-wal") if main else None
            self.applies = self._path is not None
        return self._path

    def refuse_if_failed(self) -> None:
        """Raise `LogFlushFailed` if a flush in this process failed: called before a transaction begins, so nothing
        more is written to a store whose log the system could not write."""
        with self._lock:
            if self._failed is not None:
                raise LogFlushFailed(f"an earlier flush of {self._path} failed ({self._failed}): this store's writes "
                                     f"are refused until it is checked and the service restarted")

    def flush(self) -> None:
        """Flush the log to disk: every commit before this call survives a power loss. Raises `LogFlushFailed`
        if this flush, or any before it in this process, failed."""
        path = self.path()
        if path is None:
            return
        self.refuse_if_failed()
        with self._lock:
            try:
                handle = self._current(path)
                if handle is not None:
                    os.fdatasync(handle)
            except OSError as error:
                self._failed = error
                raise LogFlushFailed(f"flushing {path} failed: {error}") from error

    def _current(self, path: Path) -> int | None:
        """This process's descriptor of the log at `path`, opened again if the file there was replaced; None if
        there is no log (everything is in the database, flushed when the log was checkpointed away)."""
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return None
        if self._handle is not None and self._owner == os.getpid():
            held = os.fstat(self._handle)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                return self._handle
            os.close(self._handle)
        try:
            self._handle, self._owner = os.open(path, os.O_RDONLY), os.getpid()
        except FileNotFoundError:
            self._handle = None
        return self._handle
