"""A receiving program's inbox in a real headless Chromium, against a real gunicorn on loopback (issue 19, item 4).

The browser is tests/browser.py's headless Chromium (skipped without one, except under CI=true). The server is `python -m
api.cli serve` (tests/served.py). An officer's briefing over HTTP resolves a person and the officer refers
them to MOBILE_CRISIS; then, by keyboard (Tab, Enter, typing, one access key), the program's provider signs
in, opens the referral, accepts it, logs a contact attempt and closes it with the outcome
`engaged_in_services`, which the API then reports.

The end-to-end test of issue 19's acceptance: an overdose incident is briefed over HTTP; the follow-up task the
rules open appears in the post-overdose team's inbox; the team confirms identity when the match was below
`certain`, accepts, logs a contact and closes with an outcome in the browser; `briefing report outcomes` counts
it; the audit log holds every step and `briefing audit verify` passes.
"""

import json

import pandas as pd
import pytest
from sqlalchemy import select

from api.service.keys import create_key
from api.service.store import audit_events, referrals
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from tests.browser import active, assert_accessible, press, wait_for
from tests.cli_run import run_briefing
from tests.loaded_county import loaded_county
from tests.served import call, serving
from tests.programs import register_programs


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    county = tmp_path_factory.mktemp("inbox-browser")
    db, store = loaded_county(county, 300, 23)
    register_programs(store, "MOBILE_CRISIS", "HARBOR_SUD")
    keys = {"officer": create_key(store, "pd-browser", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
            "provider": create_key(store, "mc-browser", Role.provider, "MOBILE_CRISIS", []),
            "post_overdose": create_key(store, "sud-browser", Role.provider, "HARBOR_SUD", [])}
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    with serving(db, county / "gunicorn.log") as base:
        yield base, keys, iter(list(zip(incidents.to_dict("records"), incident_queries(incidents)))), db, store
    store.engine.dispose()


# ---- helpers ----------------------------------------------------------------------------------------------------------

def _tab_to(driver, element_id: str, limit: int = 40) -> dict:
    """Press Tab until the element `element_id` has the focus; the focused element (visibly outlined)."""
    from selenium.webdriver.common.keys import Keys

    for _ in range(limit):
        press(driver, Keys.TAB)
        if active(driver)["id"] == element_id:
            break
    focused = active(driver)
    assert focused["id"] == element_id and focused["outline"] != "none", focused
    return focused


def _message(driver, text: str) -> None:
    wait_for(lambda: text in driver.find_element("css selector", ".messages").text, f"the message {text!r}")


def _briefed(base: str, keys: dict, cases, call_type: str | None = None) -> tuple[dict, dict]:
    """(incident row, answer) of the next officer's briefing over HTTP that resolves at `probable` or better; the
    incident's own call type unless `call_type` is given."""
    for row, subject in cases:
        body = {"incident": {"id": row["incident_id"], "call_type": call_type or row["call_type"],
                             "received_at": row["received_at"]},
                "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": "LAW"}
        status, answer = call(base, "POST", "/v1/briefings", keys["officer"], body)
        assert status == 200, answer
        top = answer["resolution"]["candidates"][:1]
        if answer["resolution"]["status"] == "resolved" and top[0]["grade"] in ("certain", "probable"):
            return row, answer
    raise AssertionError("no incident resolved")


def _referral(base: str, keys: dict, cases) -> int:
    """An officer's briefing over HTTP that resolves a person, then a warm hand-off of them to MOBILE_CRISIS; its id."""
    row, _ = _briefed(base, keys, cases)
    status, answer = call(base, "POST", "/v1/referrals", keys["officer"], {
        "incident_id": row["incident_id"], "program": "MOBILE_CRISIS", "reason": "crisis_stabilisation",
        "urgency": "warm_handoff", "basis": "agreement", "agreement_note": "Ofc. Ruiz heard the person agree",
        "contact": {"name": "Sam", "where": "at the library"}})
    assert status == 201, answer
    return answer["referral"]["id"]


# ---- the test ---------------------------------------------------------------------------------------------------------

def test_a_provider_accepts_logs_a_contact_and_closes_a_referral_by_keyboard(chromium, served):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    base, keys, cases, _, _ = served
    referral_id = _referral(base, keys, cases)
    driver = chromium
    driver.delete_all_cookies()
    driver.get(base + "/review/login")
    wait_for(lambda: active(driver)["id"] == "key", "the focus on the key field")
    press(driver, keys["provider"], Keys.ENTER)
    wait_for(lambda: driver.find_elements("id", "inbox-count"), "the inbox after signing in by keyboard")
    assert driver.current_url == base + "/review/inbox"
    assert_accessible(driver, "inbox")

    _tab_to(driver, f"referral-link-{referral_id}")
    press(driver, Keys.ENTER)
    wait_for(lambda: driver.find_elements("id", "step-accept"), "the referral page by keyboard")
    assert "at the library" in driver.find_element("tag name", "main").text
    assert_accessible(driver, "referral")

    ActionChains(driver).key_down(Keys.ALT).send_keys("a").key_up(Keys.ALT).perform()   # Accept's access key
    _message(driver, "Done: Accept.")
    assert driver.find_element("id", "referral-status").get_attribute("data-status") == "accepted"

    _tab_to(driver, "note-contact_attempted")
    press(driver, "no answer at the door")
    press(driver, Keys.TAB)
    assert active(driver)["id"] == "button-contact_attempted"
    press(driver, Keys.ENTER)
    _message(driver, "Done: Log a contact attempt.")

    _tab_to(driver, "outcome")
    press(driver, "Engaged")                                # type-ahead picks the option in the closed select
    assert driver.execute_script("return document.getElementById('outcome').value") == "engaged_in_services"
    press(driver, Keys.TAB, "enrolled the same day", Keys.TAB)
    assert active(driver)["id"] == "button-complete"
    press(driver, Keys.ENTER)
    _message(driver, "Done: Close with this outcome (engaged in services).")
    assert driver.find_element("id", "referral-status").get_attribute("data-status") == "completed"

    status, answer = call(base, "GET", f"/v1/referrals/{referral_id}", keys["provider"])
    assert status == 200 and answer["referral"]["status"] == "completed", answer
    assert answer["referral"]["outcome"] == "engaged_in_services"
    assert [e["event"] for e in answer["referral"]["events"]] == ["requested", "accept", "contact_attempted", "complete"]


def _sign_in(driver, base: str, key: str) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.delete_all_cookies()
    driver.get(base + "/review/login")
    wait_for(lambda: active(driver)["id"] == "key", "the focus on the key field")
    press(driver, key, Keys.ENTER)
    wait_for(lambda: driver.find_elements("id", "inbox-count"), "the inbox after signing in by keyboard")


def _step_by_button(driver, event: str, done: str, note: str = "") -> None:
    """Tab to the step's note (if any), type it, Tab to its button, press Enter, wait for the page's message."""
    from selenium.webdriver.common.keys import Keys

    if note:
        _tab_to(driver, f"note-{event}")
        press(driver, note)
    _tab_to(driver, f"button-{event}")
    press(driver, Keys.ENTER)
    _message(driver, done)


def test_an_overdose_briefing_ends_as_a_closed_task_in_the_outcomes_report_and_the_verified_audit_log(
        chromium, served, tmp_path):
    from selenium.webdriver.common.keys import Keys

    base, keys, cases, db, store = served
    row, answer = _briefed(base, keys, cases, call_type="overdose")
    with store.engine.connect() as connection:
        [task] = connection.execute(select(referrals).where(referrals.c.opened_by == "rule:post_overdose_next_day")
                                    .where(referrals.c.incident_id == row["incident_id"])).all()
    assert task.program == "HARBOR_SUD" and task.grade == answer["resolution"]["candidates"][0]["grade"]

    driver = chromium
    _sign_in(driver, base, keys["post_overdose"])
    listed = driver.find_element("id", f"referral-link-{task.id}")         # the task is in the team's inbox
    assert listed.is_displayed()
    _tab_to(driver, f"referral-link-{task.id}")
    press(driver, Keys.ENTER)
    wait_for(lambda: driver.find_elements("id", "step-accept"), "the task's page by keyboard")
    assert task.grade in driver.find_element("tag name", "main").text      # the grade it was opened at is shown

    _step_by_button(driver, "accept", "Done: Accept.")
    steps = ["requested", "accept"]
    if task.grade != "certain":                                           # below certain: identity before contact
        assert driver.find_elements("id", "identity-notice")
        _step_by_button(driver, "confirm_identity", "Done: Identity confirmed.", "date of birth and photo ID")
        assert driver.find_elements("id", "identity-confirmed")
        steps.append("confirm_identity")
    _step_by_button(driver, "contact_attempted", "Done: Log a contact attempt.", "left naloxone and a card")
    _tab_to(driver, "outcome")
    press(driver, "Engaged")
    assert driver.execute_script("return document.getElementById('outcome').value") == "engaged_in_services"
    _step_by_button(driver, "complete", "Done: Close with this outcome (engaged in services).")
    steps += ["contact_attempted", "complete"]
    assert driver.find_element("id", "referral-status").get_attribute("data-status") == "completed"

    status, shown = call(base, "GET", f"/v1/referrals/{task.id}", keys["post_overdose"])
    assert status == 200 and [e["event"] for e in shown["referral"]["events"]] == steps, shown

    out = tmp_path / "report"
    assert run_briefing(["report", "outcomes", "--db", db, "--out", str(out), "--replicates", "50"]) == (0, "")
    report = json.loads((out / "report.json").read_text())
    with store.engine.connect() as connection:                            # other incidents may have opened tasks too
        tasks = connection.execute(select(referrals.c.program, referrals.c.status)
                                   .where(referrals.c.opened_by.like("rule:%"))).all()
    assert report["counts"]["rule"]["program"]["HARBOR_SUD"] == sum(t.program == "HARBOR_SUD" for t in tasks)
    assert report["closure"]["rule"]["statuses"]["completed"] == 1 == sum(t.status == "completed" for t in tasks)
    assert report["closure"]["rule"]["by_outcome"]["engaged_in_services"]["count"] == 1
    assert (out / "report.html").stat().st_size > 0

    with store.engine.connect() as connection:
        logged = [(action, json.loads(payload)) for action, payload in connection.execute(
            select(audit_events.c.action, audit_events.c.payload).order_by(audit_events.c.seq))]
    about_task = [action for action, payload in logged
                  if payload.get("referral_id") == task.id or payload.get("task_id") == task.id]
    expected = ["follow_up_opened", "referral_read"] + [f"referral_{event}" for event in steps[1:]]
    assert [a for a in about_task if a != "referral_read"] == [e for e in expected if e != "referral_read"]
    assert "referral_read" in about_task                                  # the team's reads are audited too
    assert any(action == "briefing" and payload.get("incident_id") == row["incident_id"] for action, payload in logged)
    assert run_briefing(["audit", "verify", "--db", db]) == (0, "")
