"""API keys: shown once, stored hashed, each a principal; revoked and expired keys stop working; key changes and
failed authentications are security events in the audit chain (bounded under a flood)."""

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from api.service.audit import verify
from api.service.keys import KeyRefused, authenticate, create_key, list_keys, revoke_key
from api.service.store import open_store
from scoring.item import Purpose, Role
from tests.cli_run import run_briefing


@pytest.fixture()
def store(tmp_path):
    return open_store(str(tmp_path / "briefing.db")).create()


def test_key_authenticates_as_its_principal_and_is_stored_only_as_a_hash(store, tmp_path):
    key = create_key(store, "cad-1", Role.dispatcher, "COUNTY_911", [Purpose.EMERGENCY, Purpose.LAW])
    principal = authenticate(store, key)
    assert (principal.name, principal.role, principal.agency, principal.purposes) == (
        "cad-1", Role.dispatcher, "COUNTY_911", (Purpose.EMERGENCY, Purpose.LAW))
    with store.engine.connect() as connection:
        connection.execute(text("PRAGMA wal_checkpoint(FULL)"))
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key.encode() not in on_disk
    assert all(key not in repr(info) for info in list_keys(store))


def test_wrong_revoked_and_expired_keys_are_refused(store):
    key = create_key(store, "ems-1", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY])
    assert authenticate(store, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert authenticate(store, "") is None and authenticate(store, "Bearer " + key) is None
    soon = create_key(store, "tmp", Role.officer, "METRO_PD", [Purpose.LAW],
                      expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    assert authenticate(store, soon) is not None
    assert authenticate(store, soon, at=datetime.now(timezone.utc) + timedelta(hours=2)) is None
    revoke_key(store, "ems-1")
    assert authenticate(store, key) is None


def test_duplicate_names_and_unknown_names_are_refused(store):
    create_key(store, "feed-1", Role.feed, "METRO_PD", [])
    with pytest.raises(KeyRefused, match="already exists"):
        create_key(store, "feed-1", Role.feed, "METRO_PD", [])
    with pytest.raises(KeyRefused, match="no key named"):
        revoke_key(store, "nobody")


@pytest.mark.parametrize("role", [Role.dispatcher, Role.officer, Role.co_responder, Role.ems])
def test_a_responder_key_without_a_purpose_is_refused_naming_the_purposes(store, role):
    # every briefing claims a purpose its key grants: a responder key with none would answer 403 to all of them
    with pytest.raises(ValueError, match=f"{role.value}.*EMERGENCY, LAW, TREATMENT, THREAT"):
        create_key(store, f"{role.value}-bare", role, "COUNTY", [])
    assert list_keys(store) == []


def test_keys_that_get_no_briefings_need_no_purpose(store):
    for role in (Role.feed, Role.steward, Role.auditor, Role.admin):
        create_key(store, f"{role.value}-1", role, "COUNTY", [])
    assert len(list_keys(store)) == 4


def test_keys_cli_refuses_a_responder_key_without_purpose(tmp_path, capsys):
    db = str(tmp_path / "k.db")
    status, message = run_briefing(["keys", "create", "--db", db, "--name", "pd-1", "--role", "officer",
                                    "--agency", "METRO_PD"])
    assert status == 2 and "--purpose" in message and "EMERGENCY, LAW, TREATMENT, THREAT" in message
    assert capsys.readouterr().out == "" and list_keys(open_store(db)) == []


def test_store_is_a_sqlite_file_in_wal_mode_with_foreign_keys(store):
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_keys_cli_prints_only_the_key_and_refuses_a_duplicate(tmp_path, capsys):
    db = str(tmp_path / "k.db")
    args = ["keys", "create", "--db", db, "--name", "co-1", "--role", "co_responder", "--agency", "COUNTY_BH",
            "--purpose", "TREATMENT", "--expires", "2030-01-01"]
    assert run_briefing(args) == (0, "")
    out = capsys.readouterr().out.strip()
    assert out.startswith("brf_") and len(out.split()) == 1
    principal = authenticate(open_store(db), out)
    assert principal.role == Role.co_responder and principal.purposes == (Purpose.TREATMENT,)
    assert run_briefing(args) == (2, "a key named 'co-1' already exists")
    assert run_briefing(["keys", "revoke", "--db", db, "--name", "co-1"]) == (0, "")
    assert authenticate(open_store(db), out) is None


# ------------------------------------------------------------------------------ security events (CJIS-style)

def _events(store, *actions) -> list[tuple[str, dict, str | None]]:
    from sqlalchemy import select

    from api.service.store import audit_events

    with store.engine.connect() as connection:
        rows = connection.execute(select(audit_events.c.action, audit_events.c.payload, audit_events.c.principal)
                                  .where(audit_events.c.action.in_(actions)).order_by(audit_events.c.seq)).all()
    return [(action, json.loads(payload), principal) for action, payload, principal in rows]


def test_creating_and_revoking_a_key_are_audited_naming_who_and_never_the_key(store):
    key = create_key(store, "cad-7", Role.dispatcher, "COUNTY_911", [Purpose.EMERGENCY], by="cli:alice")
    revoke_key(store, "cad-7", by="cli:bob")
    events = _events(store, "key_created", "key_revoked")
    assert [(a, p["name"], p["by"], who) for a, p, who in events] == [
        ("key_created", "cad-7", "cli:alice", "cli:alice"), ("key_revoked", "cad-7", "cli:bob", "cli:bob")]
    assert events[0][1] | {"by": None} == {"name": "cad-7", "role": "dispatcher", "agency": "COUNTY_911",
                                           "purposes": ["EMERGENCY"], "expires_at": None, "by": None}
    assert key not in repr(events) and verify(store).ok
    with pytest.raises(KeyRefused):                       # a refused revocation writes nothing
        revoke_key(store, "cad-7", by="cli:bob")
    assert len(_events(store, "key_created", "key_revoked")) == 2


def test_the_keys_cli_audits_its_user(tmp_path):
    db = str(tmp_path / "k.db")
    assert run_briefing(["keys", "create", "--db", db, "--name", "f-1", "--role", "feed", "--agency", "METRO_PD"]) == (0, "")
    assert run_briefing(["keys", "revoke", "--db", db, "--name", "f-1"]) == (0, "")
    events = _events(open_store(db), "key_created", "key_revoked")
    assert [a for a, _, _ in events] == ["key_created", "key_revoked"]
    assert all(p["by"].startswith("cli:") and p["by"] == who for _, p, who in events)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from api.web.app import create_app

    db = str(tmp_path_factory.mktemp("auth") / "auth.db")
    return create_app(db, Path(__file__).resolve().parents[1] / "models")


def test_failed_authentication_is_audited_until_the_lockout_and_a_flood_adds_nothing_more(app):
    from api.service.throttle import PER_CREDENTIAL, FailureThrottle

    service = app.extensions["briefing"]
    service.throttle = FailureThrottle()
    client, guess = app.test_client(), "brf_" + "g" * 43
    codes = [client.post("/v1/match", json={}, headers={"Authorization": f"Bearer {guess}"},
                         environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code for _ in range(40)]
    assert codes == [401] * PER_CREDENTIAL + [429] * (40 - PER_CREDENTIAL)
    events = _events(service.store, "auth_failed", "auth_lockout")
    assert [a for a, _, _ in events] == ["auth_failed"] * PER_CREDENTIAL + ["auth_lockout"]
    fingerprint = hashlib.sha256(guess.encode()).hexdigest()[:8]
    assert all(p["key_fingerprint"] == fingerprint and p["address"] == "198.51.100.7" and p["path"] == "/v1/match"
               for _, p, _ in events)
    assert events[-1][1]["retry_after_seconds"] >= 1 and guess not in repr(events)
    assert client.get("/v1/audit/events", headers={"Authorization": "Basic dXNlcjpwdw=="},
                      environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 401
    assert _events(service.store, "auth_failed")[-1][1] | {"path": None} == {
        "address": "203.0.113.9", "key_fingerprint": None, "reason": "no_bearer_key", "path": None}
    assert verify(service.store).ok


def test_a_flood_of_distinct_bad_keys_from_one_address_is_audited_a_bounded_number_of_times(app):
    from api.service.throttle import PER_ADDRESS, FailureThrottle

    service = app.extensions["briefing"]
    service.throttle = FailureThrottle()
    before = len(_events(service.store, "auth_failed", "auth_lockout"))
    client = app.test_client()
    for k in range(300):
        client.post("/v1/match", json={}, headers={"Authorization": f"Bearer brf_flood{k}"},
                    environ_base={"REMOTE_ADDR": "192.0.2.44"})
    events = _events(service.store, "auth_failed", "auth_lockout")[before:]
    assert [a for a, _, _ in events] == ["auth_failed"] * PER_ADDRESS + ["auth_lockout"]
