"""Black-box attacks on the referral endpoints with bad input (issue 19, invariant 5 of
tests/adversarial/test_referral_http_attacks.py): bad ids, bodies and query strings answer 400/404/405/422,
never 500, no error carries a stack trace, and the server logs no unhandled error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from hypothesis import event as tally
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.adversarial.referral_world import (CRISIS, EVENTS, FAST, GENERIC, KEYS, OUTCOMES, PROGRAMS, REASONS,
                                              STATUSES, SUD, TRACEBACK, _person, check_referrer_view, fhir, raw,
                                              read, refer, served_world, step, whole)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    yield from served_world(tmp_path_factory, "referral-inputs")


# ----------------------------------------------------------------------------------------------------------------
# Invariant 5: bad ids, bodies and query strings (run last: they may create referrals of their own)
# ----------------------------------------------------------------------------------------------------------------

FULL_WIDTH = {ord("0") + d: 0xFF10 + d for d in range(10)}
ARABIC_INDIC = {ord("0") + d: 0x0660 + d for d in range(10)}


def test_an_id_in_non_ascii_digits_is_no_such_referral(world):
    _, created = refer(world, "officer", world.persons["none"], CRISIS)
    referral_id = str(created["referral"]["id"])
    for digits in (FULL_WIDTH, ARABIC_INDIC):
        alias = urllib.parse.quote(referral_id.translate(digits))
        assert fhir(world, "crisis", "Task", alias) == world.missing["crisis", "Task"]
        assert read(world, "crisis", alias) == world.missing["crisis", "get"], alias
        assert step(world, "crisis", alias, "confirm_identity") == world.missing["crisis", "step"], alias


JUNK_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | JUNK_TEXT | st.text(max_size=3000).map(lambda s: s * 2),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JUNK_TEXT, inner, max_size=4), max_leaves=12)
FIELDS = ("incident_id", "program", "reason", "urgency", "due_within_hours", "basis", "consent_id", "agreement_note",
          "contact", "note")


def check_error_answer(status: int, content_type: str, text: str, allowed: set[int], where) -> None:
    assert status in allowed, (status, where, text[:300])
    assert not TRACEBACK.search(text), (where, text[:1000])
    if status >= 400:
        body = json.loads(text)
        assert body.get("error") or body.get("resourceType") == "OperationOutcome", (where, body)


@st.composite
def referral_bodies(draw, incident: str):
    """A valid referral body, then up to three mutations: a field replaced by junk, dropped, or one added."""
    basis = draw(st.sampled_from(("agreement", "consent", "treatment")))
    urgency = draw(st.sampled_from(("warm_handoff", "follow_up")))
    body = {"incident_id": incident, "program": draw(st.sampled_from(tuple(PROGRAMS))),
            "reason": draw(st.sampled_from(REASONS)), "urgency": urgency, "basis": basis,
            **({"due_within_hours": draw(st.integers(1, 720))} if urgency == "follow_up" else {}),
            **({"agreement_note": "the person agreed"} if basis == "agreement" else {}),
            **({"consent_id": draw(st.sampled_from(("fuzz-provider-consent", "CNS-nope")))}
               if basis == "consent" else {}),
            **({"contact": {"name": draw(JUNK_TEXT.filter(bool)), "phone": "614"}} if draw(st.booleans()) else {}),
            **({"note": draw(JUNK_TEXT)} if draw(st.booleans()) else {})}
    junk = {"incident_id": st.sampled_from(("nope", "", "x" * 300)) | JUNK_TEXT | JSON_VALUES,
            "program": st.sampled_from(("NOPE", "harbor_sud", " HARBOR_SUD", "")) | JSON_VALUES,
            "reason": JUNK_TEXT | JSON_VALUES, "urgency": JUNK_TEXT | JSON_VALUES,
            "due_within_hours": st.sampled_from((0, -1, 721, 10 ** 20, 1.5, "24", True)) | JSON_VALUES,
            "basis": st.sampled_from(("follow_up_rule", "TREATMENT", "")) | JSON_VALUES,
            "consent_id": st.sampled_from(("", "x" * 300)) | JSON_VALUES,
            "agreement_note": st.sampled_from(("", "n" * 501)) | JSON_VALUES,
            "contact": st.fixed_dictionaries({}, optional={
                "name": JSON_VALUES, "phone": st.text(min_size=41, max_size=60), "where": JSON_VALUES,
                "email": JSON_VALUES}) | JSON_VALUES,
            "note": st.sampled_from(("n" * 1001, "\x00", "\ud800")) | JSON_VALUES}
    for _ in range(draw(st.integers(0, 3))):
        name, how = draw(st.sampled_from(FIELDS)), draw(st.sampled_from(("junk", "junk", "drop", "add")))
        if how == "junk":
            body[name] = draw(junk[name])
        elif how == "drop":
            body.pop(name, None)
        else:
            body[draw(JUNK_TEXT)] = draw(JSON_VALUES)
    shape = draw(st.sampled_from(("object",) * 8 + ("list", "value")))
    return body if shape == "object" else [body] if shape == "list" else draw(JSON_VALUES)


@settings(max_examples=150, **FAST)
@given(data=st.data())
def test_fuzzed_referral_bodies_answer_201_400_or_422_without_a_stack_trace(world, data):
    person = world.persons.get("fuzz") or _person(world, "fuzz", agencies=("METRO_PD", "COUNTY_BH"))
    key = data.draw(st.sampled_from(("officer", "dispatcher", "co")))
    body = data.draw(referral_bodies(person.incidents[KEYS[key][1]]))
    encoded = data.draw(st.sampled_from(("json",) * 9 + ("bytes",)))
    payload = json.dumps(body).encode() if encoded == "json" else data.draw(st.binary(max_size=200))
    status, content_type, text = raw(world.base, "POST", "/v1/referrals", world.keys[key], payload)
    tally(f"answered {status}")
    check_error_answer(status, content_type, text, {201, 400, 422}, body)
    if status == 201:                         # what the referrer gets back is its own view (invariants 1 and 2)
        answer = json.loads(text)["referral"]
        truth = whole(world, answer["id"], answer["program"]["name"] if answer["program"]["name"] != GENERIC else SUD)
        check_referrer_view(world, key, answer, truth, False, ["ITEMCANARY-fuzz"])


PATH_IDS = (st.integers(min_value=10 ** 9, max_value=10 ** 30).map(str) | st.integers(max_value=-1).map(str)
            | JUNK_TEXT.filter(lambda s: not s.strip().isdigit()).map(lambda s: urllib.parse.quote(s, safe=""))
            | st.sampled_from(("0", "00", "1e3", "0x10", "１２", "٣", "%00", "%2F", "..", "1;2", "1%20", " 1", "1 ",
                               "+1"))
            .map(lambda s: urllib.parse.quote(s, safe="%;+")))


@settings(max_examples=200, **FAST)
@given(data=st.data())
def test_fuzzed_ids_steps_and_queries_answer_4xx_without_a_stack_trace(world, data):
    if world.fuzz_referral is None:
        person = world.persons.get("fuzz") or _person(world, "fuzz", agencies=("METRO_PD", "COUNTY_BH"))
        world.fuzz_referral = refer(world, "officer", person, CRISIS)[1]["referral"]["id"]
    fuzz = world.fuzz_referral
    key = data.draw(st.sampled_from(("officer", "dispatcher", "co", "crisis", "sud", "ems")))
    target = data.draw(st.sampled_from(("get", "step", "list", "Task", "ServiceRequest")))
    referral = str(fuzz) if data.draw(st.booleans()) else data.draw(PATH_IDS)
    if target == "list":
        query = data.draw(st.dictionaries(st.sampled_from(("status", "since", "limit", "junk")) | JUNK_TEXT,
                                          JUNK_TEXT | st.integers(-10, 10 ** 6).map(str)
                                          | st.sampled_from(STATUSES + ("closed", "2026-01-01", "2026-01-01T00:00:00",
                                                                         "2026-01-01T00:00:00+00:00")), max_size=3))
        path, method, payload, allowed = "/v1/referrals?" + urllib.parse.urlencode(query), "GET", None, {200, 422}
    elif target == "step":
        valid = st.fixed_dictionaries({"event": st.sampled_from(EVENTS)},
                                      optional={"outcome": st.sampled_from(OUTCOMES), "note": JUNK_TEXT})
        junk = st.fixed_dictionaries({"event": st.sampled_from(EVENTS) | JSON_VALUES},
                                     optional={"outcome": st.sampled_from(OUTCOMES) | JSON_VALUES,
                                                "note": JSON_VALUES | st.text(min_size=1001, max_size=1100),
                                                "extra": JSON_VALUES}) | JSON_VALUES
        body = data.draw(valid | valid | junk)
        path, method, payload = f"/v1/referrals/{referral}/events", "POST", json.dumps(body).encode()
        allowed = {200, 400, 404, 405, 409, 422}
    elif target == "get":
        method = data.draw(st.sampled_from(("GET", "GET", "GET", "PUT", "DELETE", "PATCH")))
        path, payload = f"/v1/referrals/{referral}", None
        allowed = {200, 404} if method == "GET" else {404, 405}
    else:
        path, method, payload, allowed = f"/fhir/{target}/{referral}", "GET", None, {200, 403, 404}
    status, content_type, text = raw(world.base, method, path, world.keys[key], payload)
    tally(f"{target} answered {status}")
    check_error_answer(status, content_type, text, allowed, (key, method, path, payload))
    if referral == str(fuzz) and method == "GET" and target != "list" and key in ("sud", "co", "ems"):
        assert (status, json.loads(text)) == world.missing[key, "get" if target == "get" else target]


def test_the_server_logged_no_unhandled_error(world):
    logged = world.log.read_text(errors="replace")
    assert "unhandled error" not in logged and "Traceback" not in logged, logged[-3000:]
