"""SQLite writers queue on the store's write lock (api/service/write_lock.py), not in SQLite's busy handler."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
from sqlalchemy import insert, select

from api.service.store import Store, audit_events, open_store

HOLD = 0.2     # how long the first transaction stays open: long enough that a second writer would get in meanwhile


def _event(connection, action: str) -> None:
    connection.execute(insert(audit_events).values(at="2026-12-07T00:00:00+00:00", action=action, payload="{}",
                                                   prev_hash="", hash=f"h-{action}"))


@pytest.fixture()
def store(tmp_path) -> Store:
    return open_store(str(tmp_path / "briefing.db")).create()


def _actions(store: Store) -> list[str]:
    with store.engine.connect() as connection:
        return list(connection.execute(select(audit_events.c.action).order_by(audit_events.c.seq)).scalars())


def test_a_second_transaction_enters_only_after_the_first_has_committed(store):
    order: list[str] = []
    first_inside = threading.Event()

    def first():
        with store.begin() as connection:
            _event(connection, "first")
            first_inside.set()
            time.sleep(HOLD)
            order.append("first committing")

    def second():
        first_inside.wait()
        with store.begin() as connection:
            order.append("second inside")
            _event(connection, "second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order == ["first committing", "second inside"]
    assert _actions(store) == ["first", "second"]


def _write_in_child(database: str, go: multiprocessing.Event, entered_at) -> None:
    child = open_store(database)
    go.wait(30)
    with child.begin() as connection:
        entered_at.value = time.monotonic()
        _event(connection, "child")


def test_a_forked_process_waits_for_the_parent_s_transaction(store):
    context = multiprocessing.get_context("fork")       # as gunicorn's workers are made: before any transaction
    go, entered_at = context.Event(), context.Value("d", 0.0)
    child = context.Process(target=_write_in_child, args=(str(store.engine.url.database), go, entered_at))
    child.start()
    with store.begin() as connection:
        _event(connection, "parent")
        go.set()
        time.sleep(HOLD)
        released = time.monotonic()
    child.join(30)
    assert child.exitcode == 0
    assert entered_at.value >= released
    assert _actions(store) == ["parent", "child"]


def test_a_transaction_opened_inside_another_on_the_same_thread_does_not_wait_for_itself(store):
    with store.begin() as outer:
        _event(outer, "outer")
        with store.begin() as inner:                     # a read: SQLite lets it run beside the outer write
            assert inner.execute(select(audit_events.c.action)).scalars().all() == []
    assert _actions(store) == ["outer"]


def test_a_transaction_that_fails_releases_the_lock(store):
    with pytest.raises(RuntimeError):
        with store.begin() as connection:
            _event(connection, "rolled back")
            raise RuntimeError("the work failed")
    done = threading.Event()

    def write():
        with store.begin() as connection:
            _event(connection, "after")
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(10)
    assert _actions(store) == ["after"]


def test_a_bulk_load_s_transaction_queues_on_the_same_lock(store):
    order: list[str] = []
    inside = threading.Event()

    def load():
        with store.begin_unchecked() as connection:
            inside.set()
            time.sleep(HOLD)
            order.append("load committing")

    def briefing():
        inside.wait()
        with store.begin() as connection:
            order.append("briefing inside")
            _event(connection, "briefing")

    threads = [threading.Thread(target=load), threading.Thread(target=briefing)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order == ["load committing", "briefing inside"]


def test_an_in_memory_store_has_no_lock_file():
    assert open_store("sqlite://").writing.path is None
