"""The audit log: keyed, hash-chained and witnessed; any change or removal found and named, appends safe across writers.

The attacks on it (truncation, deletion, recomputed chains, an old log's upgrade) are in
tests/adversarial/test_audit_tamper.py.
"""

import threading

import pytest
from sqlalchemy import delete, update

from api.service.audit import KEYED_ACTION, append, verify
from api.service.store import audit_events, open_store
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
    assert result.keyed and result.witnessed == 5 and result.upgraded_at is None and not result.warnings


def test_a_changed_event_is_named(store):
    with store.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == 3)
                           .values(payload='{"incident_id":"INC-2","items":[]}'))
    result = verify(store)
    assert (result.ok, result.first_broken, result.kind) == (False, 3, "rewrite") and "changed" in result.reason


def test_a_removed_event_is_named_as_a_deletion(store):
    with store.begin() as connection:
        connection.execute(delete(audit_events).where(audit_events.c.seq == 2))
    result = verify(store)
    assert (result.ok, result.first_broken, result.kind) == (False, 2, "deletion") and "no longer holds" in result.reason


def test_appending_needs_a_store_transaction_and_a_rolled_back_event_is_never_witnessed(store):
    with store.engine.begin() as connection, pytest.raises(RuntimeError, match="store.begin"):
        append(connection, "briefing", {"k": "outside"})
    with pytest.raises(ValueError, match="own upgrade event"), store.begin() as connection:
        append(connection, KEYED_ACTION, {})
    with pytest.raises(ZeroDivisionError), store.begin() as connection:
        append(connection, "briefing", {"k": "rolled back"})
        1 / 0
    lines = store.audit.witness_path.read_text().splitlines()
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 4, 5]
    with store.begin() as connection:
        seq = append(connection, "briefing", {"k": "after"})
    assert seq == 6 and verify(store).ok and verify(store).witnessed == 6


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


# ------------------------------------------------------------------- 42 CFR 2.51(c): medical-emergency disclosures

def _emergency(item_id, program, at, call_type="overdose", attestation="Medic Rivera: patient unresponsive"):
    return {"item_id": item_id, "reason": "PERMIT_PART2_MEDICAL_EMERGENCY", "consent_id": None, "log": {
        "exception": "42 CFR 2.51 medical emergency", "disclosed_to": "ems-1", "recipient_agency": "COUNTY_EMS",
        "disclosing_agency": program, "item_id": item_id, "disclosed_at": at, "nature_of_emergency": call_type,
        "incident_id": f"INC-{item_id}", "attestation": attestation}}


@pytest.fixture()
def disclosures_db(tmp_path):
    from datetime import datetime, timezone

    db = str(tmp_path / "p2.db")
    store = open_store(db).create()
    with store.begin() as connection:
        append(connection, "briefing", {"principal": "ems-1", "agency": "COUNTY_EMS", "incident_id": "INC-old",
                                        "disclosures": [_emergency("SUD-1", "HARBOR_SUD", "2026-01-02T03:04:05+00:00")]},
               principal="ems-1", request_id="r-old", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
        append(connection, "briefing", {"principal": "ems-1", "agency": "COUNTY_EMS", "incident_id": "INC-2", "disclosures": [
            _emergency("SUD-2", "HARBOR_SUD", "2026-03-01T10:00:00-05:00"),
            _emergency("EHR-9", "COUNTY_BH", "2026-03-01T15:00:01+00:00", "suicidal_person"),
            {"item_id": "EHR-8", "reason": "PERMIT_PART2_CONSENT", "consent_id": "C-1", "log": {"consent_id": "C-1"}}]},
               principal="ems-1", request_id="r-2")
        append(connection, "match", {"note": "PERMIT_PART2_MEDICAL_EMERGENCY named in another event"})
    return db


def test_part2_emergencies_lists_each_programs_2_51c_fields_since_a_time(disclosures_db, capsys):
    import json

    assert run_briefing(["audit", "part2-emergencies", "--db", disclosures_db, "--since", "2026-02-01"]) == (0, "")
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [(r["program"], r["item_id"]) for r in rows] == [("COUNTY_BH", "EHR-9"), ("HARBOR_SUD", "SUD-2")]
    bh = rows[0]
    assert (bh["medical_personnel"], bh["affiliation"], bh["nature_of_emergency"], bh["disclosed_at"]) == (
        "ems-1", "COUNTY_EMS", "suicidal_person", "2026-03-01T15:00:01+00:00")
    assert bh["attestation"] == "Medic Rivera: patient unresponsive" and "on behalf of COUNTY_BH" in bh["disclosed_by"]
    assert (bh["incident_id"], bh["audit_seq"], bh["request_id"]) == ("INC-EHR-9", 2, "r-2")
    assert "2 medical-emergency disclosure(s) from 2 program(s)" in out.err
    assert run_briefing(["audit", "part2-emergencies", "--db", disclosures_db, "--since", "2025-12-31T00:00:00",
                         "--program", "HARBOR_SUD", "--format", "table"]) == (0, "")
    table = capsys.readouterr().out
    assert table.startswith("HARBOR_SUD: 2 medical-emergency disclosure(s)") and "COUNTY_BH" not in table
    assert table.index("2026-01-02T03:04:05") < table.index("2026-03-01T10:00:00")
    # 2026-03-01T10:00-05:00 is 15:00 UTC: compared as times, not as text
    assert run_briefing(["audit", "part2-emergencies", "--db", disclosures_db, "--since", "2026-03-01T14:59:59Z",
                         "--until", "2026-03-01T15:00:01Z"]) == (0, "")
    assert [json.loads(line)["item_id"] for line in capsys.readouterr().out.splitlines()] == ["SUD-2"]


def test_part2_emergencies_refuses_bad_input_with_status_2(disclosures_db, tmp_path):
    status, message = run_briefing(["audit", "part2-emergencies", "--db", disclosures_db, "--since", "last tuesday"])
    assert status == 2 and "not a date or ISO 8601 time" in message and "\n" not in message
    assert run_briefing(["audit", "part2-emergencies", "--db", disclosures_db, "--since", "2026-03-01",
                         "--until", "2026-02-01"]) == (2, "--until must be after --since")
    status, message = run_briefing(["audit", "part2-emergencies", "--db", str(tmp_path / "none.db"), "--since", "2026-01-01"])
    assert status == 2 and "no such store" in message and not (tmp_path / "none.db").exists()
