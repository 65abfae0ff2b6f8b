"""Signed webhooks from the outbox: the signature scheme, secret rotation, HTTPS, delivery, retries and parking."""

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from api.cli.main import main
from api.service.deliverer import Deliverer
from api.service.keys import create_key
from api.service.outbox import LEASE, MAX_ATTEMPTS, claim, deliveries_of, enqueue, requeue
from api.service.referrals import register_program
from api.service.refusals import FieldRefusal
from api.service.store import open_store, outbox, programs
from api.service.webhooks import hook_of, rotate_secret, set_webhook, sign, signature_header, verify
from api.web.app import create_app
from evaluation.bench.webhooks import Receiver
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from scoring.referral import ProgramKind
from scoring.referral_policy import Program
from tests.loaded_county import county_clock, loaded_county
from tests.test_referrals import _auth, _brief, _refer

T0 = datetime(2026, 7, 1, 12, tzinfo=timezone.utc)


@given(body=st.binary(max_size=300), secret=st.text(min_size=1, max_size=40), other=st.text(min_size=1, max_size=40),
       stamp=st.integers(min_value=1_000_000_000, max_value=4_000_000_000), skew=st.integers(-1000, 1000))
@settings(max_examples=300, deadline=None)
def test_a_signature_verifies_only_with_its_secret_its_body_and_a_fresh_timestamp(body, secret, other, stamp, skew):
    header = signature_header((secret,), stamp, body)
    fresh = abs(skew) <= 300
    assert verify(header, body, secret, stamp + skew) == fresh
    assert not verify(header, body + b"x", secret, stamp)
    assert verify(header, body, other, stamp) == (other == secret)
    assert not verify(f"t={stamp},t={stamp},v1={sign(secret, stamp, body)}", body, secret, stamp)   # one t only
    assert verify(f"junk,{header},v0=zz", body, secret, stamp)


@pytest.fixture()
def store(tmp_path):
    store = open_store(str(tmp_path / "b.db")).create()
    register_program(store, Program("MOBILE_CRISIS", ProgramKind.mobile_crisis, False, "555-0101"), by="test")
    return store


@pytest.mark.parametrize("name", ["", "  ", "a county co-responder team", "A County  Co-Responder Team "])
def test_a_program_may_not_be_named_blank_or_as_the_generic_team_hidden_programs_are_shown_as(store, name):
    with pytest.raises(FieldRefusal) as refused:
        register_program(store, Program(name, ProgramKind.mobile_crisis, False, "555-0109"), by="t")
    assert "name" in refused.value.fields
    with store.engine.connect() as connection:
        assert connection.execute(select(programs.c.name)).scalars().all() == ["MOBILE_CRISIS"]


def test_webhooks_must_be_https_unless_the_deployment_allows_http_for_tests(store, monkeypatch):
    monkeypatch.delenv("BRIEFING_ALLOW_HTTP_WEBHOOKS", raising=False)
    with pytest.raises(FieldRefusal) as refused:
        set_webhook(store, "MOBILE_CRISIS", "http://127.0.0.1:9/hook", by="t")
    assert "https" in refused.value.fields["url"]
    for bad in ("ftp://x/y", "https://", "javascript:alert(1)"):
        with pytest.raises(FieldRefusal):
            set_webhook(store, "MOBILE_CRISIS", bad, by="t")
    assert set_webhook(store, "MOBILE_CRISIS", "https://crisis.example/hook", by="t").startswith("whsec_")
    monkeypatch.setenv("BRIEFING_ALLOW_HTTP_WEBHOOKS", "1")
    set_webhook(store, "MOBILE_CRISIS", "http://127.0.0.1:9/hook", by="t")


def test_a_rotated_secret_signs_beside_the_new_one_only_through_its_grace(store):
    first = set_webhook(store, "MOBILE_CRISIS", "https://crisis.example/hook", by="t")
    second = rotate_secret(store, "MOBILE_CRISIS", "t", T0)
    with store.engine.connect() as connection:
        assert hook_of(connection, "MOBILE_CRISIS", T0 + timedelta(hours=23)).secrets == (second, first)
        assert hook_of(connection, "MOBILE_CRISIS", T0 + timedelta(hours=25)).secrets == (second,)


def test_a_failing_receiver_is_retried_with_backoff_then_parked_and_can_be_requeued(store):
    set_webhook(store, "MOBILE_CRISIS", "https://crisis.example/hook", by="t")
    with store.begin() as connection:
        enqueue(connection, 7, "MOBILE_CRISIS", "referral.requested", T0)
    clock = {"now": T0}
    calls = []

    def refuse(url, body, headers):
        calls.append(headers)
        raise ConnectionRefusedError("receiver down")

    deliverer = Deliverer(store, clock=lambda: clock["now"], send=refuse)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert deliverer.run_once() == 1
        assert deliverer.run_once() == 0                       # waiting out its backoff
        clock["now"] += timedelta(seconds=2 ** attempt)       # past the longest backoff (base 2^(attempt-1), +25 %)
    assert deliveries_of(store, "MOBILE_CRISIS")["parked"][0]["attempts"] == MAX_ATTEMPTS
    assert len({h["Briefing-Delivery"] for h in calls}) == 1  # one event, one delivery id on every send
    assert requeue(store, "MOBILE_CRISIS", clock["now"]) == 1
    sent = []
    Deliverer(store, clock=lambda: clock["now"], send=lambda url, body, headers: sent.append(body)).run_once()
    assert json.loads(sent[0]) == {"delivery_id": 1, "event": "referral.requested", "referral_id": 7,
                                   "occurred_at": json.loads(sent[0])["occurred_at"]}
    assert deliveries_of(store, "MOBILE_CRISIS") == {"delivered": 1, "waiting": 0, "parked": []}


def test_a_row_claimed_by_a_deliverer_that_died_is_sent_again_after_its_lease(store):
    set_webhook(store, "MOBILE_CRISIS", "https://crisis.example/hook", by="t")
    with store.begin() as connection:
        enqueue(connection, 9, "MOBILE_CRISIS", "referral.requested", T0)
    [first] = claim(store, T0)
    assert claim(store, T0 + LEASE / 2) == []                  # leased: no second deliverer takes it
    [again] = claim(store, T0 + LEASE + timedelta(seconds=1))
    assert again.id == first.id and again.attempts == 2


def test_a_referral_reaches_its_programs_webhook_signed_carrying_only_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIEFING_ALLOW_HTTP_WEBHOOKS", "1")
    db, store = loaded_county(tmp_path, 300, 29)
    register_program(store, Program("MOBILE_CRISIS", ProgramKind.mobile_crisis, False, "555-0101"), by="test")
    receiver = Receiver()
    receiver.secret = set_webhook(store, "MOBILE_CRISIS", receiver.url, by="test")
    officer = create_key(store, "pd-1", Role.officer, "METRO_PD", [Purpose.LAW])
    provider = create_key(store, "mc-1", Role.provider, "MOBILE_CRISIS", [])
    client = create_app(db, clock=county_clock).test_client()
    incident = _brief(client, officer, _county_cases(tmp_path), "LAW")
    referral = _refer(client, officer, incident).get_json()["referral"]
    assert Deliverer(store).run_once() == 1
    [(delivery, body, _)] = receiver.messages
    message = json.loads(body)
    assert set(message) == {"delivery_id", "event", "referral_id", "occurred_at"}
    assert message["referral_id"] == referral["id"] and message["event"] == "referral.requested"
    assert receiver.bad_signatures == 0 and delivery == str(message["delivery_id"])
    fetched = client.get(f"/v1/referrals/{message['referral_id']}", headers=_auth(provider))
    assert fetched.status_code == 200 and fetched.get_json()["referral"]["contact"]["name"] == "Sam"
    with store.engine.connect() as connection:
        assert connection.execute(select(outbox.c.delivered_at)).scalar() is not None


def _county_cases(directory):
    incidents = pd.read_csv(directory / "incidents.csv", dtype=str, keep_default_na=False)
    return list(zip(incidents.to_dict("records"), incident_queries(incidents)))


def test_the_programs_commands_register_list_and_hook_a_program_and_warn_of_a_key_for_none(tmp_path, capsys,
                                                                                           monkeypatch):
    monkeypatch.delenv("BRIEFING_ALLOW_HTTP_WEBHOOKS", raising=False)
    db = str(tmp_path / "b.db")
    open_store(db).create()
    assert main(["programs", "add", "--db", db, "--name", "MOBILE_CRISIS", "--kind", "mobile_crisis",
                 "--public-line", "555-0101"]) == 0
    assert main(["programs", "webhook", "--db", db, "--name", "MOBILE_CRISIS", "--url", "http://x.example/h"]) == 2
    assert "--url" in capsys.readouterr().err
    assert main(["programs", "webhook", "--db", db, "--name", "MOBILE_CRISIS", "--url", "https://x.example/h"]) == 0
    assert capsys.readouterr().out.startswith("whsec_")
    assert main(["programs", "list", "--db", db]) == 0
    [row] = capsys.readouterr().out.splitlines()[1:]
    assert row.split() == ["MOBILE_CRISIS", "mobile_crisis", "no", "555-0101", "https://x.example/h"]
    assert main(["keys", "create", "--db", db, "--name", "mc-1", "--role", "provider", "--agency", "MOBILE_CRISIS"]) == 0
    assert "no program" not in capsys.readouterr().err
    assert main(["keys", "create", "--db", db, "--name", "x-1", "--role", "provider", "--agency", "NOPE"]) == 0
    assert "no program 'NOPE' is registered yet" in capsys.readouterr().err
