"""Attacks on the audit log by someone who can write the store but not read the audit key or the witness
(issue 15, finding 6): each must be reported by `verify` / `briefing audit verify`, with its kind and event.

Before issue 15 the chain was plain SHA-256 inside the store: deleting the newest events, or deleting any
events and recomputing the chain, verified clean. Here the attacker edits the store's rows directly (an
`engine.begin()` of their own, never `store.begin()`), exactly as a database user could.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update

from api.service.audit import GENESIS, KEYED_ACTION, AuditKeyMissing, append, chain_hash, keyed_hash, verify
from api.service.store import audit_events, open_store
from tests.cli_run import run_briefing

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 8


@pytest.fixture()
def db(tmp_path) -> str:
    path = str(tmp_path / "audited.db")
    store = open_store(path).create()
    with store.begin() as connection:
        for k in range(EVENTS):
            append(connection, "briefing", {"incident_id": f"INC-{k}", "items_returned": [f"I{k}"]},
                   principal="cad-1", request_id=f"req-{k}")
    assert verify(store).ok
    store.engine.dispose()
    return path


def _rows(store) -> list[dict]:
    with store.engine.connect() as connection:
        return [dict(r) for r in connection.execute(select(audit_events).order_by(audit_events.c.seq)).mappings()]


def _attack(store, *statements) -> None:
    """Run raw statements against the store, as a database user would (no Store.begin: nothing is witnessed)."""
    with store.engine.begin() as connection:
        for statement in statements:
            connection.execute(statement)


def _recompute(store, digest) -> None:
    """Re-chain every remaining event from the zeros with `digest(prev, row)`: what an attacker without the key can do."""
    prev = GENESIS
    with store.engine.begin() as connection:
        for row in connection.execute(select(audit_events).order_by(audit_events.c.seq)).mappings().all():
            new = digest(prev, row)
            connection.execute(update(audit_events).where(audit_events.c.seq == row["seq"])
                               .values(prev_hash=prev, hash=new))
            prev = new


def _plain_sha256(prev, row) -> str:
    return chain_hash(prev, row["seq"], row["at"], row["action"], row["payload"])


def _wrong_key(prev, row) -> str:
    return keyed_hash(b"k" * 32, prev, row["seq"], row["at"], row["action"], row["principal"], row["request_id"],
                      row["payload"])


def _problems(result) -> set[tuple[str, int | None]]:
    return {(p.kind, p.seq) for p in result.problems}


# ------------------------------------------------------------------------------------------- the key and witness


def test_the_key_and_the_witness_live_beside_the_store_not_in_it(db):
    key, witness = Path(db + ".audit-key"), Path(db + ".audit-witness")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    assert stat.S_IMODE(witness.stat().st_mode) == 0o600
    seqs_and_hashes = [line.split() for line in witness.read_text().splitlines()]
    store = open_store(db)
    assert seqs_and_hashes == [[str(r["seq"]), r["hash"]] for r in _rows(store)]
    on_disk = b"".join(Path(db + suffix).read_bytes() for suffix in ("", "-wal") if Path(db + suffix).exists())
    assert key.read_bytes() not in on_disk and key.read_bytes().hex().encode() not in on_disk


def test_environment_moves_the_key_and_witness_and_every_process_finds_the_same_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIEFING_AUDIT_KEY_FILE", str(tmp_path / "keys" / "audit.key"))
    monkeypatch.setenv("BRIEFING_AUDIT_WITNESS", str(tmp_path / "witness" / "audit.log"))
    db = str(tmp_path / "moved.db")
    store = open_store(db).create()
    with store.begin() as connection:
        append(connection, "briefing", {"k": "in-process"})
    script = ("import sys; from api.service.audit import append; from api.service.store import open_store\n"
              "s = open_store(sys.argv[1])\n"
              "with s.begin() as c: append(c, 'briefing', {'k': 'child'})\n")
    for _ in range(2):                       # two other processes over the same store append to the same chain
        subprocess.run([sys.executable, "-c", script, db], cwd=ROOT, check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert not Path(db + ".audit-key").exists() and not Path(db + ".audit-witness").exists()
    assert len((tmp_path / "witness" / "audit.log").read_text().splitlines()) == 3
    result = verify(open_store(db))
    assert result.ok and result.witnessed == 3 and result.events == 3


def test_a_keyed_log_is_not_appended_to_without_its_key_and_verify_says_the_key_is_missing(db):
    Path(db + ".audit-key").rename(db + ".moved-key")
    store = open_store(db)
    with pytest.raises(AuditKeyMissing, match="audit-key"), store.begin() as connection:
        append(connection, "briefing", {"k": "would start a second chain"})
    assert not Path(db + ".audit-key").exists()            # no new key was made behind the operator's back
    result = verify(store)
    assert not result.ok and result.kind == "key" and len(_rows(store)) == EVENTS


def test_a_missing_witness_is_reported(db):
    Path(db + ".audit-witness").unlink()
    result = verify(open_store(db))
    assert not result.ok and result.kind == "witness" and "moved, deleted or replaced" in result.reason


# --------------------------------------------------------------------------------------------------- the attacks


def test_deleting_only_the_newest_event_is_reported_as_truncation(db):
    store = open_store(db)
    _attack(store, delete(audit_events).where(audit_events.c.seq == EVENTS))
    result = verify(store)
    assert not result.ok and (result.kind, result.first_broken) == ("truncation", EVENTS)
    assert _problems(result) == {("truncation", EVENTS)}


def test_truncating_the_tail_is_reported_even_after_the_service_appends_again_under_a_reused_number(db):
    store = open_store(db)
    _attack(store, delete(audit_events).where(audit_events.c.seq > EVENTS - 3))
    with store.begin() as connection:                       # SQLite hands the removed numbers out again
        reused = append(connection, "briefing", {"k": "after the truncation"})
    assert reused == EVENTS - 2
    result = verify(store)
    assert not result.ok
    assert ("deletion", EVENTS - 2) in _problems(result)    # witnessed twice under one number
    assert ("truncation", EVENTS - 1) in _problems(result)  # and the rest of the old tail is gone


def test_deleting_one_middle_event_is_reported_as_deletion_with_its_seq(db):
    store = open_store(db)
    _attack(store, delete(audit_events).where(audit_events.c.seq == 4))
    result = verify(store)
    assert not result.ok and (result.kind, result.first_broken) == ("deletion", 4)
    assert _problems(result) == {("deletion", 4)}


def test_editing_one_event_is_reported_as_rewrite(db):
    store = open_store(db)
    _attack(store, update(audit_events).where(audit_events.c.seq == 5).values(payload='{"incident_id":"INC-4","items_returned":[]}'))
    result = verify(store)
    assert (result.ok, result.kind, result.first_broken) == (False, "rewrite", 5)


def test_editing_only_who_made_a_request_is_reported_as_rewrite(db):
    store = open_store(db)
    _attack(store, update(audit_events).where(audit_events.c.seq == 3).values(principal="someone-else"))
    result = verify(store)
    assert (result.ok, result.kind, result.first_broken) == (False, "rewrite", 3)


@pytest.mark.parametrize("digest", [_plain_sha256, _wrong_key], ids=["plain-sha256", "wrong-key"])
def test_deleting_events_and_recomputing_the_whole_chain_without_the_key_is_reported(db, digest):
    store = open_store(db)
    _attack(store, delete(audit_events).where(audit_events.c.seq.in_([3, EVENTS])))
    _recompute(store, digest)
    result = verify(store)
    assert not result.ok and result.first_broken == 1
    kinds = _problems(result)
    assert ("rewrite", 1) in kinds and ("deletion", 3) in kinds and ("truncation", EVENTS) in kinds
    if digest is _plain_sha256:
        assert "without the key" in result.reason


def test_a_log_recomputed_without_the_key_and_its_witness_deleted_is_still_reported(db):
    # The downgrade: delete an event, re-chain everything with plain SHA-256 so it looks like an old unkeyed log,
    # and remove the witness that would show the rewrite. The key file says the log was keyed.
    store = open_store(db)
    _attack(store, delete(audit_events).where(audit_events.c.seq == 3))
    _recompute(store, _plain_sha256)
    store.audit.witness_path.unlink()
    result = verify(store)
    assert not result.ok and result.kind == "rewrite" and "without the key" in result.reason, result


def test_restoring_a_witnessed_number_with_forged_content_is_reported(db):
    store = open_store(db)
    row = _rows(store)[-1]
    _attack(store, delete(audit_events).where(audit_events.c.seq == row["seq"]),
            insert(audit_events).values(**{**row, "payload": '{"forged":true}', "hash": "a" * 64}))
    assert (verify(store).kind, verify(store).first_broken) == ("rewrite", row["seq"])


def test_the_cli_names_truncation_deletion_and_rewrite_with_their_events(db, capsys):
    assert run_briefing(["audit", "verify", "--db", db]) == (0, "")
    assert f"{EVENTS} events; keyed, {EVENTS} witnessed" in capsys.readouterr().out
    store = open_store(db)
    _attack(store, delete(audit_events).where(audit_events.c.seq.in_([2, EVENTS])),
            update(audit_events).where(audit_events.c.seq == 5).values(action="match"))
    assert run_briefing(["audit", "verify", "--db", db]) == (1, "")
    err = capsys.readouterr().err
    assert "broken at event 2 (deletion)" in err and "broken at event 5 (rewrite)" in err
    assert f"broken at event {EVENTS} (truncation)" in err
    assert run_briefing(["audit", "verify", "--db", db, "--witness", db + ".nowhere"])[0] == 2


def test_another_replicas_witness_is_checked_too(db, tmp_path):
    """A replica on another machine keeps its own witness: deleting its newest event is caught given that file."""
    store = open_store(db)
    newest = _rows(store)[-1]
    other = tmp_path / "replica-b.witness"
    other.write_text(f"{newest['seq'] + 1} {'b' * 64}\n")  # an event only replica B saw committed
    result = verify(store, [other])
    assert not result.ok and (result.kind, result.first_broken) == ("truncation", newest["seq"] + 1)


# -------------------------------------------------------------------------------------- an old, unkeyed log


def _old_append(connection, action: str, payload: dict, k: int) -> None:
    """An event as the code before audit keys wrote it: plain SHA-256 chain, no witness."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    at = f"2025-01-0{k + 1}T00:00:00+00:00"
    seq = connection.execute(insert(audit_events).values(at=at, principal="cad-1", action=action, payload=body,
                                                         prev_hash="", hash=f"pending-{k}")).inserted_primary_key[0]
    prev = connection.execute(select(audit_events.c.hash).where(audit_events.c.seq < seq)
                              .order_by(audit_events.c.seq.desc()).limit(1)).scalar() or GENESIS
    connection.execute(update(audit_events).where(audit_events.c.seq == seq)
                       .values(prev_hash=prev, hash=chain_hash(prev, seq, at, action, body)))


@pytest.fixture()
def old_db(tmp_path) -> str:
    path = str(tmp_path / "old.db")
    store = open_store(path).create()
    with store.engine.begin() as connection:
        for k in range(4):
            _old_append(connection, "briefing", {"k": k}, k)
    store.engine.dispose()
    return path


def test_an_old_unkeyed_log_verifies_as_before_and_upgrades_through_one_audit_keyed_event(old_db):
    store = open_store(old_db)
    before = verify(store)
    assert before.ok and not before.keyed and before.events == 4
    assert not Path(old_db + ".audit-key").exists()         # verifying makes no key
    with store.begin() as connection:
        append(connection, "briefing", {"k": "first keyed"})
    with store.begin() as connection:
        append(connection, "briefing", {"k": "second keyed"})
    rows = _rows(store)
    upgrade = rows[4]
    assert [r["action"] for r in rows].count(KEYED_ACTION) == 1 and upgrade["action"] == KEYED_ACTION
    assert json.loads(upgrade["payload"]) == {"scheme": "hmac-sha256", "last_unkeyed_seq": 4,
                                              "last_unkeyed_hash": rows[3]["hash"]}
    after = verify(store)
    assert after.ok and after.keyed and after.upgraded_at == 5 and after.events == 7 and after.witnessed == 3
    other = open_store(old_db)                              # another process: no second upgrade
    with other.begin() as connection:
        append(connection, "briefing", {"k": "third keyed"})
    assert [r["action"] for r in _rows(other)].count(KEYED_ACTION) == 1 and verify(other).ok


@pytest.fixture()
def upgraded(old_db):
    store = open_store(old_db)
    for k in range(3):
        with store.begin() as connection:
            append(connection, "briefing", {"k": f"keyed-{k}"})
    assert verify(store).ok and verify(store).upgraded_at == 5
    return store


def test_removing_the_upgrade_event_is_reported(upgraded):
    _attack(upgraded, delete(audit_events).where(audit_events.c.action == KEYED_ACTION))
    result = verify(upgraded)
    assert not result.ok and (result.kind, result.first_broken) == ("deletion", 5)


def test_forging_the_upgrade_event_is_reported(upgraded):
    forged = json.dumps({"last_unkeyed_hash": GENESIS, "last_unkeyed_seq": 0, "scheme": "hmac-sha256"},
                        sort_keys=True, separators=(",", ":"))
    _attack(upgraded, update(audit_events).where(audit_events.c.seq == 5).values(payload=forged))
    result = verify(upgraded)
    assert not result.ok and (result.kind, result.first_broken) == ("rewrite", 5)


def test_making_an_upgraded_log_look_unkeyed_again_is_reported(upgraded):
    """Drop the upgrade event, recompute everything as an old log: the witness still holds the keyed hashes,
    and the service's next append (which sees an old log and upgrades it again) does not hide it."""
    _attack(upgraded, delete(audit_events).where(audit_events.c.action == KEYED_ACTION))
    _recompute(upgraded, _plain_sha256)
    result = verify(upgraded)
    assert not result.ok and result.first_broken == 5 and ("deletion", 5) in _problems(result)
    assert {("rewrite", 6), ("rewrite", 7), ("rewrite", 8)} <= _problems(result)
    again = open_store(str(upgraded.engine.url.database))
    with again.begin() as connection:
        append(connection, "briefing", {"k": "after the attack"})
    assert not verify(again).ok and verify(again).first_broken == 5


def test_an_old_log_rewritten_before_its_upgrade_is_still_caught_as_a_changed_unkeyed_event(old_db):
    store = open_store(old_db)
    _attack(store, update(audit_events).where(audit_events.c.seq == 2).values(payload='{"k":99}'))
    result = verify(store)
    assert (result.ok, result.kind, result.first_broken) == (False, "rewrite", 2)


def test_a_log_holding_keyed_events_needs_them_witnessed_even_with_its_key(db):
    """Every line of the witness replaced by an attacker's (who has no write access to it in the threat model,
    but the check must not trust a witness that disagrees): each mismatch is a rewrite."""
    store = open_store(db)
    witness = Path(db + ".audit-witness")
    witness.write_text("".join(f"{r['seq']} {hashlib.sha256(r['hash'].encode()).hexdigest()}\n" for r in _rows(store)))
    result = verify(store)
    assert not result.ok and result.kind == "rewrite" and result.first_broken == 1
