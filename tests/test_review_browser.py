"""The stewards' pages in a real headless Chromium, against a real gunicorn (two workers) on loopback.

Debian's Chromium and its chromedriver (`/usr/bin/chromium`, `/usr/bin/chromedriver`, installed by
`.ci/run`) driven through Selenium; nothing is downloaded at run time. Without them the tests skip
with the reason, except under CI=true, where they fail. The pair page's screenshot is saved to
`$BRIEFING_TEST_ARTIFACTS/review-pair.png` (default `out/test-artifacts/`).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from api.service.keys import create_key
from api.service.store import audit_events
from scoring.item import Role
from tests.loaded_county import loaded_county
from tests.postgres import in_ci

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 20.0
# Roles the browser's accessibility tree must give a name to, on every page.
NAMED_ROLES = {"button", "textbox", "combobox", "spinbutton", "link", "checkbox", "radio", "searchbox", "listbox"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(reason: str):
    if in_ci():
        pytest.fail(f"CI=true: the browser tests must run, but {reason}", pytrace=False)
    pytest.skip(reason)


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
    port = _free_port()
    log = county / "gunicorn.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--db", db, "--port", str(port),
                                    "--workers", "2"], stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    else:
        process.kill()
        process.wait(timeout=10)
        pytest.fail(f"the server never became ready:\n{log.read_text(errors='replace')[-3000:]}")
    yield base, store, keys
    process.terminate()
    process.wait(timeout=10)
    store.engine.dispose()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    for program in (CHROMIUM, CHROMEDRIVER):
        if not (shutil.which(program) and os.access(program, os.X_OK)):
            _unavailable(f"{program} is not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    os.environ.setdefault("SE_OFFLINE", "true")          # Selenium Manager must never fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1800", "--lang=en-US", "--no-first-run",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# ---- helpers ----------------------------------------------------------------------------------------------------------

def _wait(condition, what: str, timeout: float = WAIT):
    """`condition()` once it is truthy; a page that is being replaced meanwhile (stale or missing elements) is retried."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _keys(driver, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def _active(driver) -> dict:
    return driver.execute_script(
        "const e = document.activeElement; return {tag: e.tagName.toLowerCase(), id: e.id, "
        "label: e.getAttribute('aria-label') || '', text: (e.innerText || e.value || '').trim(), "
        "outline: getComputedStyle(e).outlineStyle, outlineWidth: getComputedStyle(e).outlineWidth};")


def _queue_count(driver, base: str) -> int:
    driver.get(base + "/review")
    element = _wait(lambda: driver.find_elements("id", "queue-count"), "the queue page")[0]
    return int(element.get_attribute("data-count"))


def _sign_in(driver, base: str, key: str) -> None:
    driver.delete_all_cookies()
    driver.get(base + "/review")
    _wait(lambda: "/review/login" in driver.current_url, "the sign-in page")
    field = driver.find_element("id", "key")
    field.send_keys(key)
    field.submit()
    _wait(lambda: driver.find_elements("id", "queue-count"), "the queue after signing in")


def _unnamed_controls(driver) -> list[dict]:
    """Controls in the browser's accessibility tree (what a screen reader gets) that have no accessible name."""
    tree = driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
    missing = []
    for node in tree:
        role = (node.get("role") or {}).get("value")
        if node.get("ignored") or role not in NAMED_ROLES:
            continue
        if not str((node.get("name") or {}).get("value") or "").strip():
            missing.append({"role": role, "node": node.get("backendDOMNodeId")})
    return missing


def _structure(driver) -> dict:
    return driver.execute_script(
        "const levels = [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => +h.tagName[1]);"
        "const unlabelled = [...document.querySelectorAll('input:not([type=hidden]),select,textarea')]"
        "  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name);"
        "return {lang: document.documentElement.lang, levels, unlabelled,"
        "        skip: !!document.querySelector('a.skip-link[href=\"#main\"]') && !!document.getElementById('main')};")


def _assert_accessible(driver, page: str) -> None:
    assert _unnamed_controls(driver) == [], f"{page}: controls without an accessible name"
    found = _structure(driver)
    assert found["lang"] == "en" and found["skip"], (page, found)
    assert found["unlabelled"] == [], (page, found)
    levels = found["levels"]
    assert levels and levels[0] == 1 and levels.count(1) == 1, (page, levels)
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:])), f"{page}: heading levels skip: {levels}"


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
    _assert_accessible(driver, "queue")
    before = _queue_count(driver, base)
    assert before >= 2, "the county left too few pairs to review"
    first = driver.find_element("id", "first-pair")
    pair_id = int(re.search(r"/review/pairs/(\d+)", first.get_attribute("href")).group(1))
    first.click()
    _wait(lambda: driver.current_url.endswith(f"/review/pairs/{pair_id}"), "the first pair")
    _wait(lambda: driver.find_elements("id", "decide-not_a_match"), "the decision buttons")
    assert driver.find_elements("css selector", "svg.chart rect") and driver.find_elements("css selector", "#total-weight")
    _assert_accessible(driver, "pair")
    shot = _artifacts() / "review-pair.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    _keys(driver, "n")
    _wait(lambda: not driver.current_url.endswith(f"/review/pairs/{pair_id}"), "the page after pressing n")
    _wait(lambda: "Not a match" in driver.find_element("css selector", ".messages").text, "the decision's message")
    assert _queue_count(driver, base) == before - 1

    undo = driver.find_element("css selector", f"ul.recent button[aria-label='Undo Not a match on pair {pair_id}']")
    undo.click()
    _wait(lambda: "Undone" in driver.find_element("css selector", "main").text, "the undo")
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
    assert _active(driver)["id"] == "key"                   # the key field has the focus
    _assert_accessible(driver, "sign-in")
    _keys(driver, keys["steward"], "\n")
    _wait(lambda: driver.find_elements("id", "queue-count"), "the queue after signing in by keyboard")
    before = int(driver.find_element("id", "queue-count").get_attribute("data-count"))

    from selenium.webdriver.common.keys import Keys

    _keys(driver, Keys.TAB)
    skip = _active(driver)
    assert skip["text"] == "Skip to main content" and skip["outline"] != "none", skip
    _keys(driver, Keys.ENTER)
    for _ in range(40):                                     # Tab through the filters to the first pair's link
        _keys(driver, Keys.TAB)
        if _active(driver)["id"] == "first-pair":
            break
    focused = _active(driver)
    assert focused["id"] == "first-pair" and focused["outline"] != "none", focused
    _keys(driver, Keys.ENTER)
    _wait(lambda: driver.find_elements("id", "decide-unsure"), "the pair page by keyboard")
    pair_url = driver.current_url

    _keys(driver, "u")                                      # u with no note: the note takes the focus
    assert _active(driver)["id"] == "note"
    _keys(driver, "second opinion: same DOB, different surname")
    _keys(driver, Keys.TAB)
    assert _active(driver)["text"] == "Unsure (u)"
    _keys(driver, "u")                                      # with the note written, u submits Unsure
    _wait(lambda: driver.current_url != pair_url, "the next page after Unsure")
    _wait(lambda: "Unsure" in driver.find_element("css selector", ".messages").text, "the decision's message")

    for _ in range(30):                                     # the last decision's Undo, reached by Tab
        _keys(driver, Keys.TAB)
        if _active(driver)["label"].startswith("Undo Unsure"):
            break
    assert _active(driver)["label"].startswith("Undo Unsure"), _active(driver)
    _keys(driver, Keys.ENTER)
    _wait(lambda: "Undone" in driver.find_element("css selector", "main").text, "the undo by keyboard")
    assert _queue_count(driver, base) == before


def test_the_person_page_is_accessible(chromium, served):
    base, _, keys = served
    driver = chromium
    _sign_in(driver, base, keys["steward"])
    driver.find_element("id", "first-pair").click()
    person = _wait(lambda: driver.find_elements("css selector", "a[href*='/review/persons/']"), "a person link")[0]
    person.click()
    _wait(lambda: driver.find_elements("id", "other_person_id"), "the person page")
    _assert_accessible(driver, "person")
