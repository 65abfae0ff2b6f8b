"""The stewards' pages in a real headless Chromium, against a real gunicorn (two workers) on loopback.

Debian's Chromium and its chromedriver (`/usr/bin/chromium`, `/usr/bin/chromedriver`, installed by
`.ci/run`) driven through Selenium; nothing is downloaded at run time. Without them the tests skip
with the reason, except under CI=true, where they fail. The pair page's screenshot is saved to
`$BRIEFING_TEST_ARTIFACTS/review-pair.png` (default `out/test-artifacts/`).
"""

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from api.service.keys import create_key
from api.service.store import audit_events
from scoring.item import Role
from tests.browser import active, assert_accessible, press, wait_for
from tests.loaded_county import loaded_county
from tests.served import serving


def _artifacts() -> Path:
    directory = Path(os.environ.get("BRIEFING_TEST_ARTIFACTS") or "out/test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    county = tmp_path_factory.mktemp("review-browser")
    db, store = loaded_county(county, 300, 7)
    keys = {"steward": create_key(store, "steward-browser", Role.steward, "COUNTY", []),
            "auditor": create_key(store, "auditor-browser", Role.auditor, "COUNTY", [])}
    with serving(db, county / "gunicorn.log") as base:
        yield base, store, keys
    store.engine.dispose()


# ---- helpers ----------------------------------------------------------------------------------------------------------

def _queue_count(driver, base: str) -> int:
    driver.get(base + "/review")
    element = wait_for(lambda: driver.find_elements("id", "queue-count"), "the queue page")[0]
    return int(element.get_attribute("data-count"))


def _sign_in(driver, base: str, key: str) -> None:
    driver.delete_all_cookies()
    driver.get(base + "/review")
    wait_for(lambda: "/review/login" in driver.current_url, "the sign-in page")
    field = driver.find_element("id", "key")
    field.send_keys(key)
    field.submit()
    wait_for(lambda: driver.find_elements("id", "queue-count"), "the queue after signing in")


def _audit(base: str, key: str, principal: str) -> list[dict]:
    request = urllib.request.Request(f"{base}/v1/audit/events?principal={principal}&limit=50",
                                     headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["events"]


# ---- tests ------------------------------------------------------------------------------------------------------------

def test_sign_in_decide_with_n_undo_and_find_both_in_the_audit_log(chromium, served):
    base, store, keys = served
    driver = chromium
    _sign_in(driver, base, keys["steward"])
    assert_accessible(driver, "queue")
    before = _queue_count(driver, base)
    assert before >= 2, "the county left too few pairs to review"
    first = driver.find_element("id", "first-pair")
    pair_id = int(re.search(r"/review/pairs/(\d+)", first.get_attribute("href")).group(1))
    first.click()
    wait_for(lambda: driver.current_url.endswith(f"/review/pairs/{pair_id}"), "the first pair")
    wait_for(lambda: driver.find_elements("id", "decide-not_a_match"), "the decision buttons")
    assert driver.find_elements("css selector", "svg.chart rect") and driver.find_elements("css selector", "#total-weight")
    assert_accessible(driver, "pair")
    shot = _artifacts() / "review-pair.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    press(driver, "n")
    wait_for(lambda: not driver.current_url.endswith(f"/review/pairs/{pair_id}"), "the page after pressing n")
    wait_for(lambda: "Not a match" in driver.find_element("css selector", ".messages").text, "the decision's message")
    assert _queue_count(driver, base) == before - 1

    undo = driver.find_element("css selector", f"ul.recent button[aria-label='Undo Not a match on pair {pair_id}']")
    undo.click()
    wait_for(lambda: "Undone" in driver.find_element("css selector", "main").text, "the undo")
    assert _queue_count(driver, base) == before

    events = _audit(base, keys["auditor"], "steward-browser")
    mine = [e for e in events if str(e.get("pair_id")) == str(pair_id)]
    actions = [e["action"] for e in reversed(mine)]
    assert actions[-2:] == ["review_decision", "review_undo"] and "review_pair_read" in actions, actions
    decided, undone = mine[1], mine[0]
    assert decided["decision"] == undone["decision"] == "not_a_match" and undone["decision_id"] == decided["decision_id"]
    assert "review_sign_in" in {e["action"] for e in events}
    with store.engine.connect() as connection:
        stored = connection.execute(select(audit_events.c.action).where(
            audit_events.c.principal == "steward-browser")).scalars().all()
    assert set(actions) <= set(stored)


def test_the_whole_flow_works_by_keyboard_alone(chromium, served):
    base, _, keys = served
    driver = chromium
    driver.delete_all_cookies()
    driver.get(base + "/review/login")
    # The key field has the focus: Chromium applies `autofocus` at a rendering update after the load, so it is
    # awaited (a busy machine renders late), not read at once.
    WebDriverWait(driver, 5).until(lambda d: active(d)["id"] == "key")
    assert_accessible(driver, "sign-in")
    press(driver, keys["steward"], "\n")
    wait_for(lambda: driver.find_elements("id", "queue-count"), "the queue after signing in by keyboard")
    before = int(driver.find_element("id", "queue-count").get_attribute("data-count"))

    from selenium.webdriver.common.keys import Keys

    press(driver, Keys.TAB)
    skip = active(driver)
    assert skip["text"] == "Skip to main content" and skip["outline"] != "none", skip
    press(driver, Keys.ENTER)
    for _ in range(40):                                     # Tab through the filters to the first pair's link
        press(driver, Keys.TAB)
        if active(driver)["id"] == "first-pair":
            break
    focused = active(driver)
    assert focused["id"] == "first-pair" and focused["outline"] != "none", focused
    press(driver, Keys.ENTER)
    wait_for(lambda: driver.find_elements("id", "decide-unsure"), "the pair page by keyboard")
    pair_url = driver.current_url

    press(driver, "u")                                      # u with no note: the note takes the focus
    assert active(driver)["id"] == "note"
    press(driver, "second opinion: same DOB, different surname")
    press(driver, Keys.TAB)
    assert active(driver)["text"] == "Unsure (u)"
    press(driver, "u")                                      # with the note written, u submits Unsure
    wait_for(lambda: driver.current_url != pair_url, "the next page after Unsure")
    wait_for(lambda: "Unsure" in driver.find_element("css selector", ".messages").text, "the decision's message")

    for _ in range(30):                                     # the last decision's Undo, reached by Tab
        press(driver, Keys.TAB)
        if active(driver)["label"].startswith("Undo Unsure"):
            break
    assert active(driver)["label"].startswith("Undo Unsure"), active(driver)
    press(driver, Keys.ENTER)
    wait_for(lambda: "Undone" in driver.find_element("css selector", "main").text, "the undo by keyboard")
    assert _queue_count(driver, base) == before


def test_the_person_page_is_accessible(chromium, served):
    base, _, keys = served
    driver = chromium
    _sign_in(driver, base, keys["steward"])
    driver.find_element("id", "first-pair").click()
    person = wait_for(lambda: driver.find_elements("css selector", "a[href*='/review/persons/']"), "a person link")[0]
    person.click()
    wait_for(lambda: driver.find_elements("id", "other_person_id"), "the person page")
    assert_accessible(driver, "person")
