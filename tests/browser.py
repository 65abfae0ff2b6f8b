"""Headless Chromium for the browser tests: the driver, waiting, keyboard, focus and accessibility checks.

Debian's Chromium and its chromedriver (`/usr/bin/chromium`, `/usr/bin/chromedriver`, installed by `.ci/run`)
driven through Selenium; nothing is downloaded at run time. Without them a browser test skips with the reason,
except under CI=true, where it fails. The `chromium` fixture (tests/conftest.py) opens one browser per module.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.postgres import in_ci

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 20.0
#: Roles the browser's accessibility tree must give a name to, on every page.
NAMED_ROLES = {"button", "textbox", "combobox", "spinbutton", "link", "checkbox", "radio", "searchbox", "listbox"}


def unavailable(reason: str):
    """Skip the test for `reason`, or fail it under CI=true, where the browser tests must run."""
    if in_ci():
        pytest.fail(f"CI=true: the browser tests must run, but {reason}", pytrace=False)
    pytest.skip(reason)


def open_chromium(profile: Path):
    """A headless Chromium driver with its profile in `profile`; skips (or fails under CI) without one."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not (shutil.which(program) and os.access(program, os.X_OK)):
            unavailable(f"{program} is not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[dev]')")
    os.environ.setdefault("SE_OFFLINE", "true")          # Selenium Manager must never fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1800", "--lang=en-US", "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def wait_for(condition, what: str, timeout: float = WAIT):
    """`condition()` once it is truthy; a page that is being replaced meanwhile (stale or missing elements) is retried."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        except WebDriverException as exc:     # Chromium's word for a stale node read mid-navigation
            if "does not belong to the document" not in str(exc):
                raise
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def press(driver, *keys) -> None:
    """Type `keys` into whatever has the focus, as a person at the keyboard would."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def active(driver) -> dict:
    """The focused element: tag, id, accessible label, text and how its focus outline is drawn."""
    return driver.execute_script(
        "const e = document.activeElement; return {tag: e.tagName.toLowerCase(), id: e.id, "
        "label: e.getAttribute('aria-label') || '', text: (e.innerText || e.value || '').trim(), "
        "outline: getComputedStyle(e).outlineStyle, outlineWidth: getComputedStyle(e).outlineWidth};")


def unnamed_controls(driver) -> list[dict]:
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


def assert_accessible(driver, page: str) -> None:
    """Every control has an accessible name and a label; the page's language; one h1 and no skipped heading
    level; a skip link to the main content."""
    assert unnamed_controls(driver) == [], f"{page}: controls without an accessible name"
    found = _structure(driver)
    assert found["lang"] == "en" and found["skip"], (page, found)
    assert found["unlabelled"] == [], (page, found)
    levels = found["levels"]
    assert levels and levels[0] == 1 and levels.count(1) == 1, (page, levels)
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:])), f"{page}: heading levels skip: {levels}"
