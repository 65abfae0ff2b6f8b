"""Retention: `purge` removes only what is past its cutoff, keeps the audit chain verifiable, and is audited."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, update

from api.service.audit import PURGE_ACTION, append, verify
from api.service.retention import AUDIT_RETENTION_DAYS, RetentionError, purge
from api.service.store import audit_events, changes, consents, context_items, feedback, metadata, open_store, records, review_decisions
from tests.cli_run import run_briefing
from tests.loaded_county import loaded_county

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
ZONES = [timezone.utc, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30))]


def _iso(when: datetime | None, zone=timezone.utc) -> str | None:
    return when.astimezone(zone).isoformat() if when is not None else None


def _memory_store():
    return open_store("sqlite://").create()


def _dump(store) -> dict:
    with store.engine.connect() as connection:
        return {name: sorted(map(tuple, connection.execute(select(table)).all()), key=repr)
                for name, table in metadata.tables.items()}


def _seed(store, items=(), consent_rows=(), feedback_times=(), change_times=()):
    """One record, and items / consents / feedback / change-feed rows with the given times."""
    with store.begin() as connection:
        connection.execute(insert(records).values(record_id="R1", agency="COUNTY_BH", ingested_at=_iso(NOW)))
        for k, item in enumerate(items):
            connection.execute(insert(context_items).values(
                item_id=f"I{k}", record_id="R1", category="effective_approach", code="C", text="t",
                legal_category="PHI", **item))
        for k, consent in enumerate(consent_rows):
            connection.execute(insert(consents).values(
                consent_id=f"C{k}", record_id="R1", recipients="co_responder", purposes="TREATMENT", categories="PHI",
                valid_from=_iso(NOW - timedelta(days=4000)), updated_at=_iso(NOW), **consent))
        for when in feedback_times:
            connection.execute(insert(feedback).values(incident_id="INC", item_id="I0", principal="co", helped=1,
                                                       created_at=when))
        for when in change_times:
            connection.execute(insert(changes).values(record_id="R1", op="upsert", at=when))


def _ids(store, column) -> set:
    with store.engine.connect() as connection:
        return set(connection.execute(select(column)).scalars())


# ----------------------------------------------------------------------------------- what is removed

minutes = st.integers(min_value=-3 * 24 * 60, max_value=3 * 24 * 60)      # around the cutoff, to the minute
maybe_minutes = st.none() | minutes
zones = st.sampled_from(ZONES)
item_strategy = st.fixed_dictionaries({
    "expires": maybe_minutes, "observed": maybe_minutes, "verified": maybe_minutes, "updated": minutes,
    "status": st.sampled_from(["active", "retracted", "entered_in_error"]), "zone": zones})
consent_strategy = st.fixed_dictionaries({"until": maybe_minutes, "revoked": maybe_minutes, "zone": zones})


def _item_past(item, cutoff_minutes=0) -> bool:
    """The rule, in words: expired before the cutoff; or retracted before it; or last observed / verified before it
    (the later of the two); or, with neither known, last received before it."""
    if item["expires"] is not None and item["expires"] < cutoff_minutes:
        return True
    if item["status"] != "active" and item["updated"] < cutoff_minutes:
        return True
    known = [t for t in (item["observed"], item["verified"]) if t is not None]
    return (max(known) if known else item["updated"]) < cutoff_minutes


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=3000), st.lists(item_strategy, max_size=12),
       st.lists(consent_strategy, max_size=6), st.lists(minutes, max_size=6), st.lists(minutes, max_size=6))
def test_purge_removes_only_what_is_past_the_cutoff(days, items, consent_specs, feedback_at, changes_at):
    cutoff = NOW - timedelta(days=days)

    def at(offset, zone=timezone.utc):
        return _iso(cutoff + timedelta(minutes=offset), zone) if offset is not None else None

    store = _memory_store()
    _seed(store,
          items=[{"expires_at": at(i["expires"], i["zone"]), "observed_at": at(i["observed"], i["zone"]),
                  "last_verified_at": at(i["verified"], i["zone"]), "updated_at": at(i["updated"]),
                  "status": i["status"]} for i in items],
          consent_rows=[{"valid_until": at(c["until"], c["zone"]), "revoked_at": at(c["revoked"], c["zone"])}
                        for c in consent_specs],
          feedback_times=[at(m) for m in feedback_at], change_times=[at(m) for m in changes_at])
    summary = purge(store, days, now=NOW)

    assert _ids(store, context_items.c.item_id) == {f"I{k}" for k, i in enumerate(items) if not _item_past(i)}
    consent_kept = {f"C{k}" for k, c in enumerate(consent_specs)
                    if not any(t is not None and t < 0 for t in (c["until"], c["revoked"]))}
    assert _ids(store, consents.c.consent_id) == consent_kept
    with store.engine.connect() as connection:
        assert sorted(connection.execute(select(feedback.c.created_at)).scalars()) == sorted(
            at(m) for m in feedback_at if m >= 0)
        kept_changes = connection.execute(select(changes.c.at).order_by(changes.c.seq)).scalars().all()
    expected_changes = [at(m) for k, m in enumerate(changes_at) if m >= 0 or k == len(changes_at) - 1]
    assert kept_changes == expected_changes                 # the newest row always stays
    assert summary.counts() == {"context_items": len(items) - len(_ids(store, context_items.c.item_id)),
                                "consents": len(consent_specs) - len(consent_kept),
                                "feedback": sum(m < 0 for m in feedback_at), "referrals": 0, "briefed_persons": 0,
                                "changes": len(changes_at) - len(expected_changes), "audit_events": 0}
    assert verify(store).ok


def test_unparseable_times_never_cause_a_deletion():
    store = _memory_store()
    old = _iso(NOW - timedelta(days=400))
    _seed(store, items=[{"observed_at": "sometime in spring", "updated_at": old, "status": "active"},
                        {"expires_at": "not a date", "updated_at": _iso(NOW), "status": "active"}],
          consent_rows=[{"valid_until": "??"}])
    summary = purge(store, 30, now=NOW)
    assert summary.context_items == 0 and summary.consents == 0
    assert _ids(store, context_items.c.item_id) == {"I0", "I1"}


def test_review_decisions_are_kept_because_they_are_labels():
    store = _memory_store()
    with store.begin() as connection:
        connection.execute(insert(review_decisions).values(record_id_l="A", record_id_r="B", decision="match",
                                                           reviewer="st-1", created_at=_iso(NOW - timedelta(days=5000))))
    purge(store, 30, now=NOW)
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(review_decisions)).scalar() == 1


def test_dry_run_counts_what_a_purge_would_remove_and_writes_nothing(tmp_path):
    store = open_store(str(tmp_path / "d.db")).create()
    old, new = _iso(NOW - timedelta(days=800)), _iso(NOW - timedelta(days=3))
    _seed(store, items=[{"observed_at": old, "updated_at": old, "status": "active"},
                        {"observed_at": new, "updated_at": new, "status": "active"}],
          consent_rows=[{"valid_until": old}, {"revoked_at": new}], feedback_times=[old, new], change_times=[old, old, new])
    with store.begin() as connection:
        for k in range(4):
            append(connection, "briefing", {"k": k}, at=NOW - timedelta(days=3000 - k))
        append(connection, "briefing", {"k": 4}, at=NOW)
    before = _dump(store)
    dry = purge(store, 365, now=NOW, dry_run=True)
    assert _dump(store) == before
    assert dry.dry_run and dry.audit_seq is None
    assert dry.counts() == {"context_items": 1, "consents": 1, "feedback": 1, "referrals": 0, "briefed_persons": 0,
                            "changes": 2, "audit_events": 4}
    real = purge(store, 365, now=NOW)
    assert real.counts() == dry.counts() and real.audit_anchor == dry.audit_anchor == 4


def test_a_purge_is_one_audit_event_with_its_counts_and_cutoffs():
    store = _memory_store()
    old = _iso(NOW - timedelta(days=800))
    _seed(store, items=[{"observed_at": old, "updated_at": old, "status": "active"}])
    summary = purge(store, 365, now=NOW, principal="ops")
    with store.engine.connect() as connection:
        rows = connection.execute(select(audit_events)).mappings().all()
    assert len(rows) == 1 and rows[0]["action"] == PURGE_ACTION and rows[0]["seq"] == summary.audit_seq
    payload = json.loads(rows[0]["payload"])
    assert payload["deleted"]["context_items"] == 1 and payload["older_than_days"] == 365
    assert payload["audit_older_than_days"] == AUDIT_RETENTION_DAYS and payload["principal"] == "ops"
    assert payload["cutoff"] == (NOW - timedelta(days=365)).isoformat() and payload["warnings"] == []


def test_periods_that_are_negative_or_absurd_are_refused_before_anything_is_touched():
    store = _memory_store()
    for days, audit_days in ((-1, AUDIT_RETENTION_DAYS), (30, -5), (10 ** 7, AUDIT_RETENTION_DAYS), (1.5, 3000)):
        with pytest.raises(RetentionError):
            purge(store, days, audit_days, now=NOW)
    with pytest.raises(RetentionError):
        purge(store, 30, now=datetime(2026, 1, 1))
    assert verify(store).events == 0


def test_a_short_audit_retention_is_allowed_with_a_warning_that_is_itself_audited():
    store = _memory_store()
    with store.begin() as connection:
        for k in range(3):
            append(connection, "briefing", {"k": k}, at=NOW - timedelta(days=100 - k))
    summary = purge(store, 30, audit_older_than_days=30, now=NOW)
    assert summary.audit_events == 2 and summary.warnings and "6 years" in summary.warnings[0]
    with store.engine.connect() as connection:
        payload = json.loads(connection.execute(select(audit_events.c.payload)
                                                .where(audit_events.c.action == PURGE_ACTION)).scalar())
    assert payload["warnings"] == summary.warnings
    assert verify(store).ok


# -------------------------------------------------------------------------------------- audit chain

@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=25),
       st.sampled_from(["none", "change_kept", "remove_first_kept", "rewrite_anchor", "restore_purged", "drop_purge_event"]),
       st.integers(min_value=0, max_value=1000))
def test_after_purging_audit_events_verify_still_holds_and_still_catches_tampering(ages, tamper, pick):
    """Events `ages` days old (in any order); those in the oldest-first prefix past 6 years go, except the newest."""
    store = _memory_store()
    with store.begin() as connection:
        for k, age in enumerate(ages):
            append(connection, "briefing", {"k": k}, principal="cad", at=NOW - timedelta(days=age))
    summary = purge(store, 30, now=NOW)
    expected = 0
    while expected < len(ages) - 1 and ages[expected] > AUDIT_RETENTION_DAYS:
        expected += 1
    assert summary.audit_events == expected
    assert summary.audit_anchor == (expected or None)
    result = verify(store)
    assert result.ok and result.events == len(ages) - expected + 1 and result.anchor == (expected or None)

    with store.engine.connect() as connection:
        kept = connection.execute(select(audit_events).order_by(audit_events.c.seq)).mappings().all()
    purge_seq = kept[-1]["seq"]
    with store.begin() as connection:
        if tamper == "none":
            broken = None
        elif tamper == "change_kept":
            victim = kept[pick % len(kept)]["seq"]
            connection.execute(update(audit_events).where(audit_events.c.seq == victim).values(principal=None, payload='{"k":-1}'))
            # a changed purge event no longer vouches for its anchor: the witnessed purged events are then missing
            broken = 1 if victim == purge_seq and expected else victim
        elif tamper == "remove_first_kept":
            connection.execute(audit_events.delete().where(audit_events.c.seq == kept[0]["seq"]))
            broken = kept[0]["seq"]                             # the witness saw it
        elif tamper == "rewrite_anchor":        # hide one more event by moving the anchor past it
            payload = json.loads(kept[-1]["payload"])
            payload["audit_anchor"] = {"seq": kept[0]["seq"], "hash": kept[0]["hash"]}
            connection.execute(audit_events.delete().where(audit_events.c.seq == kept[0]["seq"]))
            connection.execute(update(audit_events).where(audit_events.c.seq == purge_seq)
                               .values(payload=json.dumps(payload, sort_keys=True, separators=(",", ":"))))
            broken = purge_seq
        elif tamper == "restore_purged":
            connection.execute(insert(audit_events).values(seq=0, at=_iso(NOW), action="briefing", payload="{}",
                                                           prev_hash="0" * 64, hash="f" * 64))
            broken = 0
        else:                                   # remove the purge event: nothing vouches for the purged events,
            connection.execute(audit_events.delete().where(audit_events.c.seq == purge_seq))
            broken = 1 if expected else purge_seq   # and the witness saw the purge event itself (the newest) committed
    result = verify(store)
    if broken is None:
        assert result.ok
    else:
        assert not result.ok and result.first_broken == broken, (tamper, result)


def test_the_anchor_is_carried_forward_and_moves_with_later_purges():
    now = datetime.now(timezone.utc)                       # purge events are stamped with the real time
    with_ages = [3000, 2750, 2500, 2250, 2000, 1750]       # days; the first four are past six years
    store = _memory_store()
    with store.begin() as connection:
        for k, age in enumerate(with_ages):
            append(connection, "briefing", {"k": k}, at=now - timedelta(days=age))
    first = purge(store, 30, now=now)
    assert first.audit_events == 4 and first.audit_anchor == 4
    second = purge(store, 30, now=now)                      # nothing more is old enough: the same anchor
    assert second.audit_events == 0 and second.audit_anchor == 4 and verify(store).ok
    later = now + timedelta(days=AUDIT_RETENTION_DAYS + 1)  # years later every earlier event has aged out
    with store.begin() as connection:
        append(connection, "briefing", {"k": "late"}, at=later)
    third = purge(store, 30, now=later)
    assert third.audit_events == 4 and third.audit_anchor == 8   # events 5, 6 and both purge events 7, 8 went
    result = verify(store)
    assert result.ok and result.anchor == 8 and result.events == 2


def test_an_upgraded_log_verifies_after_retention_removes_its_unkeyed_events_and_the_upgrade_event():
    from api.service.audit import GENESIS, KEYED_ACTION, chain_hash

    store = _memory_store()
    with store.engine.begin() as connection:            # written the old way: plain SHA-256, no witness
        prev = GENESIS
        for k in range(3):
            at, body = _iso(NOW - timedelta(days=3000 - k)), f'{{"k":{k}}}'
            digest = chain_hash(prev, k + 1, at, "briefing", body)
            connection.execute(insert(audit_events).values(seq=k + 1, at=at, action="briefing", payload=body,
                                                           prev_hash=prev, hash=digest))
            prev = digest
    with store.begin() as connection:
        append(connection, "briefing", {"k": "first keyed"}, at=NOW - timedelta(days=2500))   # upgrades first
        append(connection, "briefing", {"k": "recent"}, at=NOW)
    assert verify(store).ok and verify(store).upgraded_at == 4
    summary = purge(store, 30, now=NOW)
    assert summary.audit_events == 5 and summary.audit_anchor == 5     # three unkeyed, the upgrade, the first keyed
    with store.engine.connect() as connection:
        assert KEYED_ACTION not in connection.execute(select(audit_events.c.action)).scalars().all()
    result = verify(store)
    assert result.ok and result.keyed and result.anchor == 5 and result.events == 2


# -------------------------------------------------------------------------------- command and stores

def test_purge_command_prints_counts_per_table_and_refuses_bad_input(tmp_path, capsys):
    db = str(tmp_path / "c.db")
    store = open_store(db).create()
    old = _iso(datetime.now(timezone.utc) - timedelta(days=800))
    _seed(store, items=[{"observed_at": old, "updated_at": old, "status": "active"}], feedback_times=[old])
    with store.begin() as connection:
        append(connection, "briefing", {"k": 0}, at=datetime.now(timezone.utc) - timedelta(days=3000))
        append(connection, "briefing", {"k": 1})
    capsys.readouterr()

    assert run_briefing(["purge", "--db", db, "--older-than", "365", "--dry-run"]) == (0, "")
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["would_delete"] == {"context_items": 1, "consents": 0, "feedback": 1,
                                                              "referrals": 0, "briefed_persons": 0,
                                                              "changes": 0, "audit_events": 1}
    assert run_briefing(["purge", "--db", db, "--older-than", "365"]) == (0, "")
    done = json.loads(capsys.readouterr().out)
    assert done["deleted"] == dry["would_delete"] and done["audit_anchor"] == 1 and done["audit_event"] == 3
    assert run_briefing(["audit", "verify", "--db", db]) == (0, "")
    assert "after event 1" in capsys.readouterr().out

    assert run_briefing(["purge", "--db", db, "--older-than", "365", "--audit-older-than", "30"]) == (0, "")
    assert "warning:" in capsys.readouterr().err
    status, message = run_briefing(["purge", "--db", db, "--older-than", "-3"])
    assert status == 2 and "older_than_days" in message and "\n" not in message
    status, message = run_briefing(["purge", "--db", str(tmp_path / "missing.db"), "--older-than", "30"])
    assert status == 2 and "no such store" in message and not (tmp_path / "missing.db").exists()


def test_purging_a_loaded_county_keeps_the_current_data_and_the_chain(tmp_path):
    db, store = loaded_county(tmp_path, 300, 5)
    with store.engine.connect() as connection:
        items_before = connection.execute(select(func.count()).select_from(context_items)).scalar()
        newest = max(datetime.fromisoformat(t) for t in connection.execute(select(context_items.c.observed_at)).scalars() if t)
    now = newest + timedelta(days=1)                       # a year after the county's newest observation, less a day
    summary = purge(store, 365, now=now)
    assert 0 < summary.context_items < items_before
    cutoff = now - timedelta(days=365)
    with store.engine.connect() as connection:
        for row in connection.execute(select(context_items)).mappings():
            times = [datetime.fromisoformat(t) for t in (row["observed_at"], row["last_verified_at"]) if t]
            assert not times or max(times) >= cutoff
            assert row["expires_at"] is None or datetime.fromisoformat(row["expires_at"]) >= cutoff
    assert verify(store).ok


def test_purge_on_postgresql(postgres_url):
    store = open_store(postgres_url).create()
    old, new = _iso(NOW - timedelta(days=800), ZONES[1]), _iso(NOW - timedelta(days=3))
    _seed(store, items=[{"observed_at": old, "updated_at": old, "status": "active"},
                        {"observed_at": new, "updated_at": new, "status": "retracted"}],
          consent_rows=[{"revoked_at": old}], feedback_times=[old, new], change_times=[old, new])
    with store.begin() as connection:
        for k in range(3):
            append(connection, "briefing", {"k": k}, at=NOW - timedelta(days=3000 - k))
    dry = purge(store, 365, now=NOW, dry_run=True)
    summary = purge(store, 365, now=NOW)
    assert summary.counts() == dry.counts() == {"context_items": 1, "consents": 1, "feedback": 1, "referrals": 0,
                                                "briefed_persons": 0, "changes": 1, "audit_events": 2}
    assert _ids(store, context_items.c.item_id) == {"I1"}
    result = verify(store)
    assert result.ok and result.anchor == 2
