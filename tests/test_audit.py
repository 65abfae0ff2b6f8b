"""The audit log: hash-chained, any change or removal found and named, appends safe across writers."""

import threading

import pytest
from sqlalchemy import delete, update

from api.audit import append, verify
from api.store import audit_events, open_store
from tests.cli_run import run_briefing


@pytest.fixture()
def store(tmp_path):
    store = open_store(str(tmp_path / "a.db")).create()
    with store.begin() as connection:
        for k in range(5):
            append(connection, "briefing", {"incident_id": f"INC-{k}", "items": [f"I{k}"]}, principal="cad-1", request_id=f"r{k}")
    return store


def test_an_untouched_chain_verifies(store):
    result = verify(store)
    assert (result.ok, result.events, result.first_broken) == (True, 5, None)


def test_a_changed_event_is_named(store):
    with store.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == 3)
                           .values(payload='{"incident_id":"INC-2","items":[]}'))
    result = verify(store)
    assert (result.ok, result.first_broken) == (False, 3) and "changed" in result.reason


def test_a_removed_event_breaks_the_next_link(store):
    with store.begin() as connection:
        connection.execute(delete(audit_events).where(audit_events.c.seq == 2))
    result = verify(store)
    assert (result.ok, result.first_broken) == (False, 3) and "prev_hash" in result.reason


def test_concurrent_writers_keep_one_unbroken_chain(store):
    def writer(name):
        for k in range(20):
            with store.begin() as connection:
                append(connection, "briefing", {"by": name, "k": k}, principal=name)
    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = verify(store)
    assert result.ok and result.events == 5 + 80


def test_audit_verify_cli_exits_1_naming_the_first_broken_event(store, tmp_path, capsys):
    db = str(tmp_path / "a.db")
    assert run_briefing(["audit", "verify", "--db", db]) == (0, "")
    with store.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == 4).values(action="other"))
    assert run_briefing(["audit", "verify", "--db", db]) == (1, "")
    assert "broken at event 4" in capsys.readouterr().err
