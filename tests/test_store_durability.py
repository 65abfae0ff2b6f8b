"""A SQLite store's commits are flushed to disk after SQLite's commit, outside the write lock, before the caller goes on."""

import os
import sqlite3

import pytest
from sqlalchemy import select

from api.service import durability
from api.service.audit import append
from api.service.changes import record_change
from api.service.store import changes, open_store


@pytest.fixture()
def store(tmp_path):
    return open_store(str(tmp_path / "durable.db")).create()


@pytest.fixture()
def flushes(monkeypatch, store):
    """Each `os.fdatasync` the store calls: (the file flushed, whether another writer could take the write lock at
    that moment, the witness lines written by then)."""
    seen = []
    flush = os.fdatasync

    def recorded(handle):
        other = sqlite3.connect(store.engine.url.database, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")                 # fails at once while any transaction holds the lock
            other.execute("ROLLBACK")
            free = True
        except sqlite3.OperationalError:
            free = False
        finally:
            other.close()
        witnessed = store.audit.witness_path.read_text().count("\n") if store.audit.witness_path.exists() else 0
        seen.append((os.readlink(f"/proc/self/fd/{handle}"), free, witnessed))
        flush(handle)

    monkeypatch.setattr(durability.os, "fdatasync", recorded)
    return seen


def test_a_committed_transaction_is_flushed_with_the_write_lock_free_before_its_witness(store, flushes):
    with store.begin() as connection:
        append(connection, "test", {"n": 1}, principal="test")
    assert flushes == [(store.engine.url.database + "-wal", True, 0)]     # the witness line follows the flush
    assert store.audit.witness_path.read_text().count("\n") == 1


def test_a_transaction_for_moving_tables_is_flushed_too(store, flushes):
    with store.begin_unchecked() as connection:
        record_change(connection, "rebuild")
    assert [(path, free) for path, free, _ in flushes] == [(store.engine.url.database + "-wal", True)]


def test_a_failed_transaction_flushes_nothing_and_writes_nothing(store, flushes):
    with pytest.raises(RuntimeError):
        with store.begin() as connection:
            record_change(connection, "rebuild")
            raise RuntimeError("the caller fails")
    assert flushes == []
    with store.engine.connect() as connection:
        assert connection.execute(select(changes)).all() == []


def test_store_connections_leave_the_flush_to_the_store(store):
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1        # NORMAL
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_an_in_memory_store_has_no_log_to_flush(monkeypatch):
    store = open_store("sqlite://").create()
    monkeypatch.setattr(durability.os, "fdatasync", lambda handle: pytest.fail("nothing to flush"))
    with store.begin() as connection:
        record_change(connection, "rebuild")
    assert store.log.path() is None


def test_the_log_flushed_is_the_one_sqlite_writes_when_the_store_is_named_through_a_link(tmp_path, monkeypatch):
    real = open_store(str(tmp_path / "real.db")).create()
    (tmp_path / "link.db").symlink_to(tmp_path / "real.db")
    store = open_store(f"sqlite:///{tmp_path / 'link.db'}")
    flushed = []
    monkeypatch.setattr(durability.os, "fdatasync", lambda handle: flushed.append(os.readlink(f"/proc/self/fd/{handle}")))
    with store.begin() as connection:
        record_change(connection, "rebuild")
    assert flushed == [str(tmp_path / "real.db") + "-wal"]
    assert real.log.path() == store.log.path()


def test_after_a_failed_flush_every_later_commit_is_refused(store, monkeypatch):
    def broken(handle):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(durability.os, "fdatasync", broken)
    with pytest.raises(durability.LogFlushFailed, match="Input/output error"):
        with store.begin() as connection:
            record_change(connection, "rebuild")
    monkeypatch.undo()                                     # the disk answers again: the store still refuses
    with pytest.raises(durability.LogFlushFailed, match="an earlier flush .* failed"):
        with store.begin() as connection:
            record_change(connection, "rebuild")
    with store.engine.connect() as connection:                # refused before it wrote: only the first is stored
        assert len(connection.execute(select(changes)).all()) == 1
