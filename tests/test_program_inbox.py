"""A receiving program's inbox under /review/inbox through Flask's test client (issue 19, item 4): a provider
signs in on the stewards' sign-in page, sees its open referrals by urgency, accepts, logs a contact and closes
with an outcome; CSRF, 404 for another program's referral, each role kept to its own pages, every read and
step audited."""

import json
import re

import pandas as pd
import pytest
from sqlalchemy import select, update

from api.service.keys import create_key
from api.service.outbox import claim, enqueue, failed, requeue
from api.service.store import audit_events, referrals
from api.service.throttle import FailureThrottle
from api.web.app import create_app
from api.web.review import session as review_session
from api.web.review.inbox import allowed_steps
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from scoring.referral import Event
from tests.loaded_county import county_clock, loaded_county
from tests.programs import register_programs

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    directory = tmp_path_factory.mktemp("inbox")
    db, store = loaded_county(directory, 300, 23)
    register_programs(store, "MOBILE_CRISIS", "HOUSING_TEAM")
    keys = {"officer": create_key(store, "pd-1", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
            "crisis": create_key(store, "mc-1", Role.provider, "MOBILE_CRISIS", []),
            "housing": create_key(store, "ho-1", Role.provider, "HOUSING_TEAM", []),
            "steward": create_key(store, "st-1", Role.steward, "COUNTY", [])}
    app = create_app(db, clock=county_clock)
    app.config["TESTING"] = False              # errors are handled as in production: pages, never tracebacks
    incidents = pd.read_csv(directory / "incidents.csv", dtype=str, keep_default_na=False)
    incident = _brief(app.test_client(), keys["officer"], zip(incidents.to_dict("records"), incident_queries(incidents)))
    return app, store, keys, incident


@pytest.fixture
def client(county):
    county[0].extensions["briefing"].throttle = FailureThrottle()
    return county[0].test_client()


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def _brief(client, key, cases):
    """Brief incidents with `key` until one resolves; its incident id (as tests/test_referrals.py does)."""
    for row, subject in cases:
        body = {"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"]},
                "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": "LAW"}
        if client.post("/v1/briefings", json=body, headers=_auth(key)).get_json()["resolution"]["status"] == "resolved":
            return row["incident_id"]
    raise AssertionError("no incident resolved")


def _refer(county, program="MOBILE_CRISIS", urgency="warm_handoff", **extra) -> int:
    app, _, keys, incident = county
    body = {"incident_id": incident, "program": program, "reason": "crisis_stabilisation", "urgency": urgency,
            "basis": "agreement", "agreement_note": "Ofc. Ruiz heard the person agree",
            "contact": {"name": "Sam", "where": "at the library"}, **extra}
    answer = app.test_client().post("/v1/referrals", json=body, headers=_auth(keys["officer"]))
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["referral"]["id"]


def _token(page: bytes) -> str:
    return TOKEN.search(page.decode()).group(1)


def _sign_in(client, key: str, next_path: str | None = None):
    page = client.get("/review/login")
    data = {"csrf_token": _token(page.data), "key": key} | ({"next": next_path} if next_path else {})
    return client.post("/review/login", data=data)


def _events(store, since: int = 0) -> list[dict]:
    with store.engine.connect() as connection:
        rows = connection.execute(select(audit_events.c.seq, audit_events.c.action, audit_events.c.payload)
                                  .where(audit_events.c.seq > since).order_by(audit_events.c.seq)).all()
    return [{"seq": r.seq, "action": r.action, **json.loads(r.payload)} for r in rows]


def _last_seq(store) -> int:
    events = _events(store)
    return events[-1]["seq"] if events else 0


def _step(client, referral_id: int, event: str, **fields):
    page = client.get(f"/review/inbox/{referral_id}")
    return client.post(f"/review/inbox/{referral_id}/step",
                       data={"csrf_token": _token(page.data), "event": event, **fields})


def _form_events(page: bytes) -> list[str]:
    return re.findall(r'<form id="step-(\w+)"', page.decode())


# ---- tests ------------------------------------------------------------------------------------------------------------

def test_a_provider_signs_in_on_the_shared_page_lands_on_its_inbox_and_the_list_is_audited(county, client):
    _, store, keys, _ = county
    referral_id = _refer(county)
    before = _last_seq(store)
    answer = _sign_in(client, keys["crisis"])
    assert answer.status_code == 302 and answer.headers["Location"] == "/review/inbox"
    assert "Path=/review" in answer.headers["Set-Cookie"] and "HttpOnly" in answer.headers["Set-Cookie"]
    assert client.get("/review/inbox/").headers["Location"] == "/review/inbox"
    page = client.get("/review/inbox")
    text = page.data.decode()
    assert page.status_code == 200 and "Inbox · MOBILE_CRISIS" in text
    assert f'href="/review/inbox/{referral_id}"' in text and "Crisis stabilisation" in text
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"] and page.headers["X-Frame-Options"] == "DENY"
    assert "style=" not in text and "<script>" not in text
    events = _events(store, before)
    sign_in = next(e for e in events if e["action"] == "review_sign_in")
    assert sign_in["principal"] == "mc-1" and sign_in["role"] == "provider" and sign_in["agency"] == "MOBILE_CRISIS"
    lists = [e for e in events if e["action"] == "referral_list"]
    assert {e["status"] for e in lists} == {"requested", "accepted", "in-progress"}
    assert any(referral_id in e["referrals"] for e in lists) and all(e["principal"] == "mc-1" for e in lists)


def test_warm_handoffs_come_first_then_follow_ups_by_due_time_with_the_identity_notice(county, client):
    app, store, keys, _ = county
    late = _refer(county, urgency="follow_up", due_within_hours=72)
    soon = _refer(county, urgency="follow_up", due_within_hours=2)
    warm = _refer(county)
    with store.begin() as connection:
        connection.execute(update(referrals).where(referrals.c.id == late).values(grade="certain", identity_review=0))
        connection.execute(update(referrals).where(referrals.c.id == soon).values(grade="probable", identity_review=0))
        connection.execute(update(referrals).where(referrals.c.id == warm).values(grade="certain", identity_review=1))
    _sign_in(client, keys["crisis"])
    text = client.get("/review/inbox").data.decode()
    warm_part, follow_part = text.split('id="follow-up-heading"')
    assert f"/review/inbox/{warm}\"" in warm_part and f"/review/inbox/{soon}\"" not in warm_part
    assert follow_part.index(f"/review/inbox/{soon}\"") < follow_part.index(f"/review/inbox/{late}\"")

    def row(referral_id):
        return re.search(rf'referral-link-{referral_id}".*?</tr>', text, re.S).group(0)

    assert "Confirm identity before contact" in row(soon) and "probable" in row(soon)
    assert "Confirm identity before contact" in row(warm)            # flagged by a split, whatever the grade
    assert "Confirm identity before contact" not in row(late)
    page = client.get(f"/review/inbox/{soon}").data.decode()
    assert 'id="identity-notice"' in page and "matched at the grade <em>probable</em>" in page


def test_accept_log_a_contact_and_close_with_an_outcome_each_step_audited(county, client):
    app, store, keys, _ = county
    referral_id = _refer(county)
    _sign_in(client, keys["crisis"])
    before = _last_seq(store)
    page = client.get(f"/review/inbox/{referral_id}")
    assert page.status_code == 200 and _form_events(page.data) == ["accept", "reject", "person_declined"]
    assert "at the library" in page.data.decode() and 'accesskey="a"' in page.data.decode()
    read = [e for e in _events(store, before) if e["action"] == "referral_read"]
    assert read and read[-1]["referral_id"] == referral_id and read[-1]["side"] == "program"

    declined = _step(client, referral_id, "reject")                  # declining needs a reason
    assert declined.status_code == 302 and "needs a note" in client.get(declined.headers["Location"]).data.decode()
    accepted = _step(client, referral_id, "accept")
    assert accepted.status_code == 302 and accepted.headers["Location"] == f"/review/inbox/{referral_id}"
    page = client.get(accepted.headers["Location"]).data.decode()
    assert "Done: Accept. Referral" in page and "is now accepted" in page
    assert _form_events(page.encode()) == ["confirm_identity", "contact_attempted", "engaged", "complete", "fail",
                                           "person_declined"]
    again = _step(client, referral_id, "accept")                      # the lifecycle refuses: its reason is shown
    assert "Not done: a referral that is accepted cannot take &#39;accept&#39;" in client.get(again.headers["Location"]).data.decode()
    _step(client, referral_id, "contact_attempted", note="no answer at the door")
    unclosed = _step(client, referral_id, "complete")
    assert "choose the outcome" in client.get(unclosed.headers["Location"]).data.decode()
    closed = _step(client, referral_id, "complete", outcome="engaged_in_services", note="enrolled")
    page = client.get(closed.headers["Location"]).data.decode()
    assert "Done: Close with this outcome (engaged in services)" in page and 'data-status="completed"' in page
    assert "no step left to take" in page and "no answer at the door" in page

    seen = app.test_client().get(f"/v1/referrals/{referral_id}", headers=_auth(keys["crisis"])).get_json()["referral"]
    assert seen["status"] == "completed" and seen["outcome"] == "engaged_in_services"
    assert [e["event"] for e in seen["events"]] == ["requested", "accept", "contact_attempted", "complete"]
    steps = [e for e in _events(store, before) if e["action"].startswith("referral_") and e["action"] not in
             ("referral_read", "referral_list")]
    assert [e["action"] for e in steps] == ["referral_accept", "referral_step_refused",     # the second accept
                                            "referral_contact_attempted", "referral_complete"]
    assert all(e["principal"] == "mc-1" and e["referral_id"] == referral_id for e in steps)
    assert steps[-1]["outcome"] == "engaged_in_services"
    inbox = client.get("/review/inbox").data.decode()
    assert f'href="/review/inbox/{referral_id}"' not in inbox      # closed: no longer in the inbox


def test_a_step_without_the_session_csrf_token_is_400_and_changes_nothing(county, client):
    _, store, keys, _ = county
    referral_id = _refer(county)
    _sign_in(client, keys["crisis"])
    before = _last_seq(store)
    for token in (None, "", "wrong"):
        data = {"event": "accept"} | ({"csrf_token": token} if token is not None else {})
        answer = client.post(f"/review/inbox/{referral_id}/step", data=data)
        assert answer.status_code == 400 and b"security token" in answer.data and b"Traceback" not in answer.data
    assert _events(store, before) == []
    assert _form_events(client.get(f"/review/inbox/{referral_id}").data)[0] == "accept"     # still requested


def test_another_programs_provider_gets_404_and_the_probe_is_audited(county, client):
    _, store, keys, _ = county
    referral_id = _refer(county)
    _sign_in(client, keys["housing"])
    assert f"/review/inbox/{referral_id}\"" not in client.get("/review/inbox").data.decode()
    before = _last_seq(store)
    page = client.get(f"/review/inbox/{referral_id}")
    assert page.status_code == 404 and b"There is no referral" in page.data and b"Sam" not in page.data
    token = _token(client.get("/review/inbox").data)
    answer = client.post(f"/review/inbox/{referral_id}/step", data={"csrf_token": token, "event": "accept"})
    assert answer.status_code == 404
    assert client.get("/review/inbox/999999").status_code == 404
    refused = [e for e in _events(store, before) if e["action"] == "referral_refused"]
    assert [(e["referral_id"], e.get("event")) for e in refused] == [(referral_id, None), (referral_id, "accept"),
                                                                     (999999, None)]
    assert {e["principal"] for e in refused} == {"ho-1"}
    assert not [e for e in _events(store, before) if e["action"] == "referral_accept"]


def test_a_steward_never_reaches_the_inbox_and_a_provider_never_reaches_the_queue(county, client):
    _, store, keys, _ = county
    referral_id = _refer(county)
    _sign_in(client, keys["steward"])
    answer = client.get("/review/inbox")
    assert answer.status_code == 302 and answer.headers["Location"] == "/review"
    assert "receiving program" in client.get("/review").data.decode()
    assert client.get(f"/review/inbox/{referral_id}").status_code == 302
    token = _token(client.get("/review").data)
    before = _last_seq(store)
    answer = client.post(f"/review/inbox/{referral_id}/step", data={"csrf_token": token, "event": "accept"})
    assert answer.status_code == 403 and not [e for e in _events(store, before) if e["action"].startswith("referral")]

    provider = county[0].test_client()
    _sign_in(provider, keys["crisis"])
    for path in ("/review", "/review/", "/review/pairs/1", "/review/persons/P-1"):
        answer = provider.get(path, follow_redirects=False)
        assert answer.status_code in (302, 308) and "/review/inbox" in provider.get(path, follow_redirects=True) \
            .request.path, path
    token = _token(provider.get("/review/inbox").data)
    for path in ("/review/pairs/1/decision", "/review/decisions/1/undo", "/review/persons/P-1/merge"):
        assert provider.post(path, data={"csrf_token": token, "decision": "match"}).status_code == 403, path
    assert not [e for e in _events(store, before) if e["action"].startswith("review_") and e["action"] != "review_sign_in"]
    out = provider.post("/review/logout", data={"csrf_token": token})     # sign-out works for a provider too
    assert out.status_code == 302 and _events(store)[-1]["action"] == "review_sign_out"
    assert provider.get("/review/inbox").status_code == 302


def test_sign_in_lands_on_the_page_asked_for_only_when_it_is_the_roles(county, client):
    _, _, keys, _ = county
    referral_id = _refer(county)
    assert _sign_in(client, keys["crisis"], f"/review/inbox/{referral_id}").headers["Location"] == \
        f"/review/inbox/{referral_id}"
    assert _sign_in(county[0].test_client(), keys["crisis"], "/review/pairs/1").headers["Location"] == "/review/inbox"
    assert _sign_in(county[0].test_client(), keys["steward"], "/review/inbox").headers["Location"] == "/review"
    officer = _sign_in(county[0].test_client(), keys["officer"])
    assert officer.status_code == 401 and b"provider key" in officer.data


def test_an_idle_provider_session_ends_and_asks_for_the_provider_key(county, client, monkeypatch):
    _sign_in(client, county[2]["crisis"])
    assert client.get("/review/inbox").status_code == 200
    start = review_session.now()
    monkeypatch.setattr(review_session, "now", lambda: start + 31 * 60)
    answer = client.get("/review/inbox/5")
    assert answer.status_code == 302 and "/review/login?next=/review/inbox/5" in answer.headers["Location"]
    assert b"30 minutes without activity" in client.get(answer.headers["Location"]).data
    fresh = county[0].test_client()
    answer = fresh.get("/review/inbox")
    assert answer.status_code == 302 and b"provider key" in fresh.get(answer.headers["Location"]).data


def test_the_offered_steps_are_the_lifecycles_for_the_program_side():
    assert allowed_steps("requested") == [Event.accept, Event.reject, Event.person_declined]
    assert Event.cancel not in allowed_steps("accepted") and Event.complete in allowed_steps("in-progress")
    assert allowed_steps("completed") == [] and allowed_steps("rejected") == []


def test_the_inbox_shows_the_programs_parked_webhook_deliveries_and_not_another_programs(county, client):
    _, store, keys, _ = county
    referral_id = _refer(county)
    now = county_clock()
    with store.begin() as connection:
        enqueue(connection, referral_id, "MOBILE_CRISIS", "referral.requested", now)
        enqueue(connection, referral_id, "HOUSING_TEAM", "referral.requested", now)
    for row in claim(store, now, limit=10):
        failed(store, row, f"HTTP 503 from the {row.program} receiver", now, park=True)
    _sign_in(client, keys["crisis"])
    text = client.get("/review/inbox").data.decode()
    assert 'id="deliveries-parked"' in text and "HTTP 503 from the MOBILE_CRISIS receiver" in text
    assert "HOUSING_TEAM receiver" not in text and "briefing programs requeue" in text
    requeue(store, "MOBILE_CRISIS", now)
    assert 'id="deliveries-parked"' not in client.get("/review/inbox").data.decode()
