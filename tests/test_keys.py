"""API keys: shown once, stored hashed, each a principal; revoked and expired keys stop working."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from api.keys import KeyRefused, authenticate, create_key, list_keys, revoke_key
from api.store import open_store
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
