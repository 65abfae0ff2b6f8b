"""The stewards' session cookie, attacked over HTTP against a running `briefing serve` (gunicorn, two workers).

A session is opened only for paths under `/review` (api/web/review/session.py). Every combination of path spelling,
cookie and bearer key is tried: the review pages open the session however their path is spelled (`//review`,
`/%72eview`), open for nobody without it (a bearer key, even a steward's, opens no page), and on the API the
cookie changes nothing: the same status with it as without, and no answer sets a cookie.
"""

import http.client
import itertools
import json
import re
from urllib.parse import urlsplit

import pytest

from api.service.keys import create_key
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county
from tests.served import serving

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
PAGES = ("/review", "//review", "/%72eview", "/review/inbox")
API = (("GET", "/v1/review/queue?limit=5", None),
       ("POST", "/v1/match", '{"subject": {"given_name": "Ann", "family_name": "Lee"}, "purpose": "EMERGENCY"}'))
KEYS = (None, "officer", "steward")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    county = tmp_path_factory.mktemp("review-session-http")
    db, store = loaded_county(county, 300, 7)
    keys = {"steward": create_key(store, "steward-http", Role.steward, "COUNTY", []),
            "officer": create_key(store, "officer-http", Role.officer, "METRO_PD", [Purpose.EMERGENCY])}
    with serving(db, county / "gunicorn.log") as base:
        yield urlsplit(base), keys, _signed_in(urlsplit(base), keys["steward"])
    store.engine.dispose()


def _send(base, method: str, path: str, headers: dict | None = None, body: str | None = None):
    """One request with `path` sent exactly as written (no client normalises it); (status, headers, body)."""
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _signed_in(base, steward_key: str) -> str:
    """The `briefing_review=…` cookie of a steward signed in through the login form."""
    _, headers, page = _send(base, "GET", "/review/login")
    form_cookie = headers["Set-Cookie"].split(";")[0]
    body = f"csrf_token={TOKEN.search(page.decode()).group(1)}&key={steward_key}"
    status, headers, _ = _send(base, "POST", "/review/login",
                               {"Cookie": form_cookie, "Content-Type": "application/x-www-form-urlencoded"}, body)
    assert status == 302, headers
    return headers["Set-Cookie"].split(";")[0]


def _headers(keys: dict, who: str | None, cookie: str | None) -> dict:
    return ({"Authorization": f"Bearer {keys[who]}"} if who else {}) | ({"Cookie": cookie} if cookie else {})


@pytest.mark.parametrize("path, who", list(itertools.product(PAGES, KEYS)))
def test_review_pages_open_with_the_session_however_spelt_and_never_with_a_bearer_key(served, path, who):
    base, keys, cookie = served
    signed_in, signed_in_headers, _ = _send(base, "GET", path, _headers(keys, who, cookie))
    stranger, stranger_headers, _ = _send(base, "GET", path, _headers(keys, who, None))
    if path == "/review/inbox":                       # a provider's page: a steward's session is sent to its own home
        assert signed_in == 302 and "/review/login" not in signed_in_headers["Location"]
    else:
        assert signed_in == 200
    assert stranger == 302 and "/review/login" in stranger_headers["Location"]


@pytest.mark.parametrize("call, who", list(itertools.product(API, KEYS)))
def test_the_review_cookie_changes_nothing_on_the_api(served, call, who):
    base, keys, cookie = served
    method, path, body = call
    with_cookie, headers, _ = _send(base, method, path, _headers(keys, who, cookie), body)
    without, _, _ = _send(base, method, path, _headers(keys, who, None), body)
    assert with_cookie == without
    assert with_cookie == {None: 401, "officer": 403 if "review" in path else 200, "steward": 200}[who]
    assert "Set-Cookie" not in headers


FILTERS = {"status": (None, "open", "unsure", "decided", "all", "closed"),
           "reason": (None, "batch_band", "held_apart", "new_record", "other"),
           "agency": (None, "METRO_PD", "NO_SUCH_AGENCY"),
           "min_probability": (None, "0.5", "2")}


def test_the_queue_under_every_filter_answers_stewards_only_and_only_with_pairs_the_filter_keeps(served):
    """Every combination of the queue's filters (bad values included) with an officer's and a steward's key, over
    HTTP: the officer 403, the steward 200 with only pairs the filters keep (or 422 naming the bad field, never a
    trace). Without a key it is 401 (once: repeated failures are throttled, 429, which refuses as well)."""
    base, keys, _ = served
    assert _send(base, "GET", "/v1/review/queue?status=all&agency=METRO_PD")[0] == 401
    for values in itertools.product(*FILTERS.values()):
        chosen = {name: value for name, value in zip(FILTERS, values) if value is not None}
        query = "&".join(f"{name}={value}" for name, value in chosen.items())
        bad = [name for name, value in chosen.items() if value in ("closed", "other", "2")]
        for who in ("officer", "steward"):
            status, _, body = _send(base, "GET", f"/v1/review/queue?limit=50&{query}", _headers(keys, who, None))
            assert status == {"officer": 403, "steward": 422 if bad else 200}[who], (who, query, body)
            assert b"Traceback" not in body
            if who != "steward":
                continue
            answer = json.loads(body)
            if bad:
                assert all(name in body.decode() for name in bad), body
                continue
            assert answer["total"] >= len(answer["pairs"])
            for pair in answer["pairs"]:
                assert pair["reason"] == chosen.get("reason", pair["reason"])
                assert "agency" not in chosen or chosen["agency"] in pair["agencies"]
                assert pair["match_probability"] >= float(chosen.get("min_probability", 0))
                wanted = chosen.get("status", "open")
                assert wanted == "all" or pair["status"] == ("open" if wanted == "open" else "decided")
                assert wanted != "unsure" or pair["decision"] == "unsure"
