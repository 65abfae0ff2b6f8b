"""The stewards' web pages through Flask's test client: sign-in, cookie, CSRF, idle timeout, pages, forms.

The pure helpers the pair page is drawn with (the character diff and the weight chart) are
property-tested; the pages run over a small loaded county whose bulk link left pairs to review.
"""

import html
import re
import time

import pytest
from flask import request
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.service.keys import create_key, revoke_key
from api.service.store import MAX_ID, audit_events, clusters, settings as settings_table
from api.service.throttle import FailureThrottle
from api.web.app import create_app
from api.web.review import session as review_session
from api.web.review.pages import DIFF_LIMIT, Segment, diff_segments, highlight, weight_chart
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
COUNT = re.compile(r'id="queue-count" class="count" data-count="(\d+)"')


# ---- pure helpers ---------------------------------------------------------------------------------------------------

@given(st.text(max_size=40), st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_diff_segments_rejoin_to_both_values_and_share_the_unchanged_runs(a, b):
    ours, theirs = diff_segments(a, b)
    assert "".join(s.text for s in ours) == a and "".join(s.text for s in theirs) == b
    def folded(segments):
        return [c.casefold() for s in segments if not s.changed for c in s.text]

    assert folded(ours) == folded(theirs)
    assert all(s.text for s in ours + theirs)
    if [c.casefold() for c in a] == [c.casefold() for c in b]:
        assert not any(s.changed for s in ours + theirs)
    exact_ours, exact_theirs = diff_segments(a, b, ignore_case=False)
    assert "".join(s.text for s in exact_ours if not s.changed) == "".join(s.text for s in exact_theirs if not s.changed)
    assert "".join(s.text for s in exact_ours) == a and "".join(s.text for s in exact_theirs) == b


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30), st.text(max_size=30))
@settings(max_examples=200, deadline=None)
def test_highlighted_html_reads_back_as_the_value_and_escapes_markup(a, b):
    ours, _ = diff_segments(a, b)
    rendered = str(highlight(ours))
    without_hints = re.sub(r'<span class="visually-hidden">[^<]*</span>', "", rendered)
    assert html.unescape(re.sub(r"</?mark>", "", without_hints)) == a
    assert "<script" not in rendered.replace("&lt;script", "")
    assert rendered.count("<mark>") == sum(s.changed for s in ours)


def test_a_long_value_is_shown_whole_not_diffed_so_a_pair_page_costs_linear_time():
    # Second attack review: two 80,000-character streets made the pair page's character diff (quadratic) outlast
    # the worker timeout. Past the limit a value is one segment, changed unless equal: the page still rejoins.
    long_a, long_b = "A" * (DIFF_LIMIT + 1), "B" * 80_000
    ours, theirs = diff_segments(long_a, long_b)
    assert ours == [Segment(long_a, True)] and theirs == [Segment(long_b, True)]
    assert diff_segments(long_a, long_a.lower()) == ([Segment(long_a, False)], [Segment(long_a.lower(), False)])
    assert diff_segments(long_a, "", ignore_case=False) == ([Segment(long_a, True)], [])


def test_diff_marks_the_transposed_letters_and_an_empty_side():
    ours, theirs = diff_segments("JONATHAN", "JONAHTAN")
    assert [s.text for s in ours if s.changed] and "".join(s.text for s in ours if not s.changed).startswith("JONA")
    ours, theirs = diff_segments("Ibonne", "IVONNE")
    assert [(s.text, s.changed) for s in ours] == [("I", False), ("b", True), ("onne", False)]
    assert [(s.text, s.changed) for s in theirs] == [("I", False), ("V", True), ("ONNE", False)]
    left, right = diff_segments(None, "SMITH")
    assert left == [] and [(s.text, s.changed) for s in right] == [("SMITH", True)]
    assert '<span class="visually-hidden">[differs: </span>SMITH' in str(highlight(right))


weights = st.lists(st.floats(min_value=-30, max_value=30, allow_nan=False), max_size=12)


@given(weights)
@settings(max_examples=300, deadline=None)
def test_chart_bars_chain_and_add_up_to_the_total_bar(values):
    chart = weight_chart([{"field": f"f{k}", "level": "lvl", "weight": w} for k, w in enumerate(values)])
    total = chart.total
    assert total.weight == pytest.approx(sum(values), abs=1e-9)
    signed = sum(bar.width if bar.weight >= 0 else -bar.width for bar in chart.bars)
    assert signed == pytest.approx(total.width if total.weight >= 0 else -total.width, abs=1e-6)
    for bar in chart.bars + [total]:
        assert -1e-9 <= bar.x and bar.x + bar.width <= chart.width + 1e-6 and bar.width >= 0
    previous_end = chart.zero_x
    for bar in chart.bars:                      # each bar starts where the one before it ended
        start = bar.x if bar.weight >= 0 else bar.x + bar.width
        assert start == pytest.approx(previous_end, abs=1e-6)
        previous_end = bar.x + bar.width if bar.weight >= 0 else bar.x
    assert chart.height == pytest.approx((len(values) + 1) * chart.row)


def test_session_secret_is_made_once_and_shared_and_the_environment_wins(tmp_path, monkeypatch):
    from api.service.store import open_store

    monkeypatch.delenv("BRIEFING_SESSION_SECRET", raising=False)
    store = open_store(str(tmp_path / "s.db")).create()
    first = review_session.session_secret(store)
    assert len(first) == 64 and review_session.session_secret(open_store(str(tmp_path / "s.db"))) == first
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(settings_table)).scalar() == 1
    monkeypatch.setenv("BRIEFING_SESSION_SECRET", "from-the-environment")
    assert review_session.session_secret(store) == "from-the-environment"


def test_next_targets_stay_on_the_review_pages():
    assert review_session.safe_next("/review/pairs/3", "/review") == "/review/pairs/3"
    for bad in ("https://evil.example/review", "//evil.example/review", "/v1/audit/events", "/review\\@evil", None, ""):
        assert review_session.safe_next(bad, "/review") == "/review"


# ---- the pages --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def county(tmp_path_factory):
    directory = tmp_path_factory.mktemp("review-web")
    db, store = loaded_county(directory, 300, 7)
    keys = {"steward": create_key(store, "steward-1", Role.steward, "COUNTY", []),
            "steward2": create_key(store, "steward-2", Role.steward, "COUNTY", []),
            "officer": create_key(store, "officer-1", Role.officer, "METRO_PD", [Purpose.EMERGENCY])}
    app = create_app(db)
    app.config["TESTING"] = False              # errors are handled as in production: pages, never tracebacks
    return app, store, keys


@pytest.fixture
def app(county):
    app, _, _ = county
    app.extensions["briefing"].throttle = FailureThrottle()
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def _token(page: bytes) -> str:
    return TOKEN.search(page.decode()).group(1)


def _sign_in(client, key: str, next_path: str | None = None):
    page = client.get("/review/login")
    data = {"csrf_token": _token(page.data), "key": key} | ({"next": next_path} if next_path else {})
    return client.post("/review/login", data=data)


def _actions(store) -> list[str]:
    with store.engine.connect() as connection:
        return connection.execute(select(audit_events.c.action).order_by(audit_events.c.seq)).scalars().all()


def _count(page: bytes) -> int:
    return int(COUNT.search(page.decode()).group(1))


def test_pages_need_a_session_and_send_you_to_sign_in(client):
    answer = client.get("/review/pairs/1")
    assert answer.status_code == 302 and "/review/login?next=/review/pairs/1" in answer.headers["Location"]
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200 and b"Sign in with your steward key" in page.data
    assert b'<html lang="en">' in page.data and b'class="skip-link" href="#main"' in page.data


def test_a_steward_key_signs_in_with_a_safe_cookie_and_the_sign_in_is_audited(county, client):
    app, store, keys = county
    answer = _sign_in(client, keys["steward"])
    assert answer.status_code == 302 and answer.headers["Location"] == "/review"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/review" in cookie and "Secure" not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    contents = app.session_interface.get_signing_serializer(app).loads(value)
    assert keys["steward"] not in value and keys["steward"] not in repr(contents)
    assert contents["name"] == "steward-1" and len(contents["key"]) == 64
    assert _actions(store)[-1] == "review_sign_in"
    assert client.get("/review").status_code == 200


def test_the_cookie_is_secure_over_https_or_when_configured(county):
    app, _, keys = county
    secure = app.test_client()
    page = secure.get("/review/login", base_url="https://localhost")
    assert "Secure" in page.headers["Set-Cookie"]
    app.config["REVIEW_COOKIE_SECURE"] = True
    try:
        assert "Secure" in app.test_client().get("/review/login").headers["Set-Cookie"]
    finally:
        app.config["REVIEW_COOKIE_SECURE"] = None


@pytest.mark.parametrize("path, opened", [("/review", True), ("/review/pairs/1", True), ("/v1/briefings", False),
                                           ("/healthz", False), ("/reviewer", False), ("/v1/review/queue", False)])
def test_a_session_is_opened_only_under_the_review_pages_path(county, client, path, opened):
    """Only the pages under the cookie's path use a session: no other request reads the cookie or derives its signing
    key (a tenth of a request's work in the HTTP stack), even when it carries a valid one."""
    app, _, keys = county
    _sign_in(client, keys["steward"])
    cookie = client.get_cookie("briefing_review", path="/review")
    with app.test_request_context(path, headers={"Cookie": f"briefing_review={cookie.value}"}):
        session = app.session_interface.open_session(app, request)
    assert (session is not None and session.get("name") == "steward-1") is opened
    assert session is None or opened


@pytest.mark.parametrize("who", ["officer", "bad", "revoked"])
def test_only_valid_steward_keys_sign_in_and_refusals_are_audited_then_throttled(county, client, who):
    app, store, keys = county
    key = {"officer": keys["officer"], "bad": "brf_not-a-key"}.get(who)
    if who == "revoked":
        key = create_key(store, "steward-revoked", Role.steward, "COUNTY", [])
        revoke_key(store, "steward-revoked")
    refused_before = _actions(store).count("review_sign_in_refused")
    answer = _sign_in(client, key)
    assert answer.status_code == 401 and b"Key" in answer.data and b"Sign in" in answer.data
    assert (b"may not review matches" in answer.data) == (who == "officer")
    assert _actions(store)[-1] == "review_sign_in_refused"
    assert client.get("/review").status_code == 302
    codes = [_sign_in(client, key).status_code for _ in range(5)]
    assert codes[-1] == 429 and b"Too many refused sign-ins" in _sign_in(client, key).data
    assert _actions(store).count("review_sign_in_refused") - refused_before == FailureThrottle().per_credential
    assert _sign_in(client, keys["steward"]).status_code == 302      # a valid key is never throttled


def _post_rules(app):
    values = {"pair_id": 1, "decision_id": 1, "event_id": 1, "person_id": "P-1", "unknown": "nowhere"}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/review") and "POST" in rule.methods:
            yield rule.rule, re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), rule.rule)


def test_every_post_needs_the_session_csrf_token(county, client):
    app, store, keys = county
    _sign_in(client, keys["steward"])
    before = _actions(store)
    posts = list(_post_rules(app))
    assert {"/review/login", "/review/logout", f"/review/pairs/<int(max={MAX_ID}):pair_id>/decision",
            f"/review/decisions/<int(max={MAX_ID}):decision_id>/undo",
            f"/review/person-events/<int(max={MAX_ID}):event_id>/undo",
            "/review/persons/<person_id>/split",
            "/review/persons/<person_id>/merge"} <= {rule for rule, _ in posts}
    for rule, path in posts:
        for token in (None, "wrong", ""):
            data = {"decision": "not_a_match", "key": keys["steward"]} | ({"csrf_token": token} if token is not None else {})
            answer = client.post(path, data=data)
            assert answer.status_code == 400, (rule, token, answer.status_code)
            assert b"security token" in answer.data and b"Traceback" not in answer.data
            assert answer.headers["Content-Type"].startswith("text/html")
    assert _actions(store) == before
    assert client.get("/review").status_code == 200                 # still signed in


def test_headers_forbid_framing_inline_script_and_referrers(client, county):
    _sign_in(client, county[2]["steward"])
    for path in ("/review/login", "/review", "/review/static/review.css", "/review/nowhere"):
        answer = client.get(path)
        csp = answer.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["Referrer-Policy"] == "no-referrer"
    assert client.get("/review/nowhere").status_code == 404
    assert b"style=" not in client.get("/review").data and b"<script>" not in client.get("/review").data


def test_thirty_idle_minutes_end_the_session(county, client, monkeypatch):
    _sign_in(client, county[2]["steward"])
    assert client.get("/review").status_code == 200
    start = time.time()
    monkeypatch.setattr(review_session, "now", lambda: start + 29 * 60)
    assert client.get("/review").status_code == 200                 # activity moves the idle clock on
    monkeypatch.setattr(review_session, "now", lambda: start + 29 * 60 + 30 * 60 + 1)
    answer = client.get("/review")
    assert answer.status_code == 302 and "/review/login" in answer.headers["Location"]
    assert b"30 minutes without activity" in client.get(answer.headers["Location"]).data
    assert client.get("/review").status_code == 302


def test_sign_out_ends_the_session_and_is_audited(county, client):
    _, store, keys = county
    page = _sign_in(client, keys["steward"]) and client.get("/review")
    answer = client.post("/review/logout", data={"csrf_token": _token(page.data)})
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/review/login")
    assert _actions(store)[-1] == "review_sign_out"
    assert b"You have signed out" in client.get("/review/login").data
    assert client.get("/review").status_code == 302


def test_a_revoked_key_ends_its_session_at_the_next_request(county, client):
    _, store, _ = county
    key = create_key(store, "steward-to-revoke", Role.steward, "COUNTY", [])
    _sign_in(client, key)
    assert client.get("/review").status_code == 200
    revoke_key(store, "steward-to-revoke")
    answer = client.get("/review")
    assert answer.status_code == 302
    assert b"no longer valid" in client.get(answer.headers["Location"]).data


def test_sign_in_goes_back_to_the_page_asked_for_but_never_off_site(county, client):
    assert _sign_in(client, county[2]["steward"], "/review/persons/P-1").headers["Location"] == "/review/persons/P-1"
    other = county[0].test_client()
    assert _sign_in(other, county[2]["steward"], "https://evil.example/").headers["Location"] == "/review"


def test_an_unexpected_error_is_a_page_without_a_stack_trace(county, client, monkeypatch):
    import api.review.queue

    _sign_in(client, county[2]["steward"])

    def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(api.review.queue, "queue", broken)
    answer = client.get("/review")
    assert answer.status_code == 500 and b"Something went wrong" in answer.data
    assert b"Traceback" not in answer.data and b"on fire" not in answer.data
    assert client.get("/review/pairs/987654").status_code == 404


# ---- queue, pair and person pages ------------------------------------------------------------------------------------

PAIR_LINK = re.compile(r'href="/review/pairs/(\d+)"')


def test_the_queue_lists_pairs_in_priority_order_with_filters(county, client):
    _, store, keys = county
    _sign_in(client, keys["steward"])
    page = client.get("/review")
    total = _count(page.data)
    assert total >= 3, "the county left too few pairs to review"
    text = page.data.decode()
    for label in ("Why it is here", "Match probability", "Agencies", "Waiting", "Your recent decisions",
                  'for="reason"', 'for="agency"', 'for="min_probability"', 'for="max_probability"'):
        assert label in text
    shown = [int(p) for p in PAIR_LINK.findall(text)]
    entries, _ = api_review().queue.queue(store, api_review().queue.QueueFilters(), limit=50)
    assert shown[1:len(entries) + 1] == [e.pair_id for e in entries]   # [0] is the "first pair" link
    narrow = client.get("/review", query_string={"min_probability": "0.5", "max_probability": "0.9"})
    assert _count(narrow.data) == api_review().queue.queue(store, api_review().queue.QueueFilters(min_probability=0.5,
                                                                                      max_probability=0.9))[1]
    bad = client.get("/review", query_string={"min_probability": "lots", "reason": "whim"})
    assert bad.status_code == 200 and _count(bad.data) == total and b"was not applied" in bad.data
    assert _count(client.get("/review", query_string={"agency": "NO_SUCH_AGENCY"}).data) == 0


def api_review():
    import api.review.decisions
    import api.review.queue

    return api.review


def test_the_pair_page_shows_both_records_the_differences_and_the_weights(county, client):
    _, store, keys = county
    _sign_in(client, keys["steward"])
    pair_id = int(PAIR_LINK.search(client.get("/review").data.decode()).group(1))
    page = client.get(f"/review/pairs/{pair_id}")
    assert page.status_code == 200
    text = page.data.decode()
    detail = api_review().decisions.pair_detail(county[0].extensions["briefing"], pair_id)
    assert f"Record {detail.left['record_id']}" in text and f"Record {detail.right['record_id']}" in text
    assert "<mark>" in text or all(str(detail.left.get(f)) == str(detail.right.get(f)) for f in ("given_name", "family_name"))
    assert text.count("<rect ") == len(detail.explanation) + 1 and 'role="img"' in text
    total = re.search(r'id="total-weight">([^<]+)<', text).group(1)
    assert float(total) == pytest.approx(sum(e["weight"] for e in detail.explanation), abs=0.01)
    assert float(total) == pytest.approx(detail.match_weight, abs=0.01)
    for shortcut in ('aria-keyshortcuts="y"', 'aria-keyshortcuts="n"', 'aria-keyshortcuts="u"', "<kbd>y</kbd>",
                     'for="note"'):
        assert shortcut in text
    assert _actions(store)[-1] == "review_pair_read"
    assert client.get("/review/pairs/987654").status_code == 404


def test_decisions_and_undo_through_the_forms_change_the_queue(county, client):
    _, store, keys = county
    _sign_in(client, keys["steward2"])
    queue = client.get("/review")
    before, pair_id = _count(queue.data), int(PAIR_LINK.search(queue.data.decode()).group(1))
    token = _token(queue.data)
    refused = client.post(f"/review/pairs/{pair_id}/decision", data={"csrf_token": token, "decision": "unsure"})
    assert refused.status_code == 302
    assert b"Not recorded" in client.get(refused.headers["Location"]).data and _count(client.get("/review").data) == before

    answer = client.post(f"/review/pairs/{pair_id}/decision", data={"csrf_token": token, "decision": "not_a_match"})
    assert answer.status_code == 302 and re.search(r"/review/pairs/\d+$|/review$", answer.headers["Location"])
    assert not answer.headers["Location"].endswith(f"/pairs/{pair_id}")
    assert _actions(store)[-1] == "review_decision"
    queue = client.get("/review")
    assert _count(queue.data) == before - 1 and f"Undo Not a match on pair {pair_id}" in queue.data.decode()
    assert f"/review/pairs/{pair_id}\"" not in queue.data.decode().split("Your recent decisions")[0]
    again = client.post(f"/review/pairs/{pair_id}/decision", data={"csrf_token": token, "decision": "match"})
    assert b"already decided" in client.get(again.headers["Location"]).data

    decision_id = api_review().decisions.recent_decisions(store, reviewer="steward-2", limit=1)[0]["decision_id"]
    answer = client.post(f"/review/decisions/{decision_id}/undo", data={"csrf_token": token, "back": "/review"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/review"
    assert _actions(store)[-1] == "review_undo"
    queue = client.get("/review")
    assert _count(queue.data) == before and b"Undone" in queue.data
    twice = client.post(f"/review/decisions/{decision_id}/undo", data={"csrf_token": token})
    assert b"Not undone" in client.get(twice.headers["Location"]).data

    unsure = client.post(f"/review/pairs/{pair_id}/decision",
                         data={"csrf_token": token, "decision": "unsure", "note": "twins? same DOB"})
    assert unsure.status_code == 302 and _count(client.get("/review").data) == before - 1
    listed = client.get("/review", query_string={"status": "unsure"}).data.decode()
    assert f"/review/pairs/{pair_id}" in listed and "decided: Unsure" in listed
    decision_id = api_review().decisions.recent_decisions(store, reviewer="steward-2", limit=1)[0]["decision_id"]
    client.post(f"/review/decisions/{decision_id}/undo", data={"csrf_token": token})
    assert _count(client.get("/review").data) == before


def test_the_person_page_splits_a_record_out_and_merges_it_back(county, client):
    _, store, keys = county
    _sign_in(client, keys["steward"])
    with store.engine.connect() as connection:
        person_id = connection.execute(select(clusters.c.person_id).group_by(clusters.c.person_id)
                                       .having(func.count() >= 2).order_by(clusters.c.person_id).limit(1)).scalar()
    found = api_review().decisions.person_records(store, person_id)
    page = client.get(f"/review/persons/{person_id}")
    assert page.status_code == 200 and all(r["record_id"] in page.data.decode() for r in found)
    assert _actions(store)[-1] == "review_person_read"
    token = _token(page.data)
    moved = found[-1]["record_id"]
    answer = client.post(f"/review/persons/{person_id}/split", data={"csrf_token": token, "record_id": moved})
    assert answer.status_code == 302 and _actions(store)[-1] == "person_split"
    message = client.get(answer.headers["Location"]).data.decode()
    new_person = re.search(r"now belongs to a new person, ([^.<]+)\.", message).group(1)
    assert [r["record_id"] for r in api_review().decisions.person_records(store, new_person)] == [moved]
    assert moved not in {r["record_id"] for r in api_review().decisions.person_records(store, person_id)}

    refused = client.post(f"/review/persons/{person_id}/merge", data={"csrf_token": token, "other_person_id": new_person})
    assert b"Not merged" in client.get(refused.headers["Location"]).data      # the split's cannot-link holds them apart

    event_id = re.search(r'action="/review/person-events/(\d+)/undo"', client.get(f"/review/persons/{person_id}").data.decode())
    answer = client.post(f"/review/person-events/{event_id.group(1)}/undo",
                         data={"csrf_token": token, "back": f"/review/persons/{person_id}"})
    assert answer.headers["Location"] == f"/review/persons/{person_id}" and _actions(store)[-1] == "person_event_undo"
    assert {r["record_id"] for r in api_review().decisions.person_records(store, person_id)} == {r["record_id"] for r in found}

    with store.engine.connect() as connection:
        one, other = connection.execute(select(clusters.c.person_id).group_by(clusters.c.person_id)
                                        .having(func.count() == 1).order_by(clusters.c.person_id).limit(2)).scalars()
    answer = client.post(f"/review/persons/{one}/merge",
                         data={"csrf_token": token, "other_person_id": other, "note": "same person after all"})
    assert answer.status_code == 302 and _actions(store)[-1] == "person_merge"
    page = client.get(answer.headers["Location"]).data.decode()
    kept = answer.headers["Location"].rsplit("/", 1)[1]
    assert "Merged" in page and "Undo the merge" in page and len(api_review().decisions.person_records(store, kept)) == 2
    nowhere = client.post(f"/review/persons/{one}/merge", data={"csrf_token": token, "other_person_id": "NOPE"})
    assert b"Not merged" in client.get(nowhere.headers["Location"]).data
