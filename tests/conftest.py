"""Shared fixtures: a PostgreSQL server for the session and a fresh database per test module (tests/postgres.py);
a headless Chromium per browser test module (tests/browser.py)."""

import atexit
import os
import shutil
import tempfile

import pytest

from tests.browser import open_chromium
from tests.postgres import Unavailable, in_ci, start_server

# A PostgreSQL store keeps its audit key and witness under $XDG_STATE_HOME/briefing/<url hash>/ (api/service/audit_trail.py):
# the tests' throwaway databases keep theirs in a temporary directory, not in the home directory.
if "XDG_STATE_HOME" not in os.environ:
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="briefing-test-state-")
    atexit.register(shutil.rmtree, os.environ["XDG_STATE_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The PostgreSQL server of this session; skips without one (fails under CI, which must run these tests)."""
    try:
        server = start_server()
    except Unavailable as exc:
        if in_ci():
            pytest.fail(f"CI=true: the PostgreSQL tests must run, but {exc}", pytrace=False)
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_url(postgres_server, request):
    """A new empty PostgreSQL database for this test module (dropped afterwards); its SQLAlchemy URL."""
    url = postgres_server.create_database(request.module.__name__.rsplit(".", 1)[-1])
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless Chromium for this test module; skips without one (fails under CI)."""
    driver = open_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()
