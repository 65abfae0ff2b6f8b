"""Cost grows at most linearly with input size, repetition and nesting, on every endpoint that reads input.

For every POST endpoint (JSON bodies, the FHIR operation and the steward sign-in form) and every GET
that reads a query string, each input shape — long strings, many distinct keys, one key repeated,
long arrays, many repeated FHIR parameters, deep nesting — is sent at about 64 KiB and at just under
the 1 MiB body limit. The median of three runs at each size is compared: the time ratio must be at
most twice the size ratio. That is a ratio, never a wall-clock limit, so a slow machine does not
fail it, while a quadratic step (16x the input, 256x the time: finding 5's repeated `count`
parameters) does. One warm-up request per case goes first, so first-call costs do not count.

The app runs in process (Flask's test client, `create_app` over the adversarial world in SQLite),
which keeps the timings free of network noise, and the time measured is the process's CPU time,
so other work on a shared machine does not count. The cyclic garbage collector is collected before
and paused during each timed request: its pauses depend on everything else the process holds, not
on the endpoint's own work. A case that is already far past linear at 256 KiB, or on its first
1 MiB run, fails at once instead of being repeated (a quadratic case would otherwise take minutes:
finding 5's took over three).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import quote

import pytest

from api.web.app import MAX_BODY, create_app
from tests.adversarial.conftest import load_world

SMALL = 64 * 1024
PROBE = 256 * 1024                            # a single early look, so a quadratic case fails in seconds
LARGE = MAX_BODY - 8 * 1024                  # just under the 1 MiB limit
RUNS = 3
SLACK = 2.0                                   # time ratio <= SLACK x size ratio


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    key: str | None
    make: Callable[[int], bytes]              # n -> the body (or, for GET, the query string)
    content_type: str = "application/json"
    query: bool = False


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _set(body: dict, path: tuple, value) -> dict:
    out = json.loads(json.dumps(body))
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def long_string(base: dict, *path) -> Callable[[int], bytes]:
    return lambda n: _json(_set(base, path, "x" * n))


def many_keys(base: dict, *path) -> Callable[[int], bytes]:
    def make(n: int) -> bytes:
        out = json.loads(json.dumps(base))
        target = out
        for step in path:
            target = target[step]
        target.update({f"key_{k:07d}_of_many_distinct_ones": 0 for k in range(n)})
        return _json(out)
    return make


def repeated_key(base: dict, key: str) -> Callable[[int], bytes]:
    """One key sent n times in the same object (JSON allows it; the last one wins)."""
    pair = _json({key: base[key]})[1:-1] + b","
    return lambda n: b"{" + pair * n + _json(base)[1:]


def long_array(base: dict, *path) -> Callable[[int], bytes]:
    return lambda n: _json(_set(base, path, ["x"] * n))


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


NOW = datetime.now(timezone.utc).isoformat()
SUBJECT = {"given_name": "Alma", "family_name": "Quintrell"}
PATIENT = {"resourceType": "Patient", "name": [{"family": "Quintrell", "given": ["Alma"]}]}
FHIR = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": PATIENT}]}


def fhir_repeated_parameters(n: int) -> bytes:
    return _json({"resourceType": "Parameters",
                  "parameter": [{"name": "count", "valuePositiveInt": 1}] * n + [{"name": "resource", "resource": PATIENT}]})


def many_aliases(n: int) -> bytes:
    """A record whose aliases are ~n bytes of distinct words: each word new to the index (second attack review:
    the resolver compared every new word with every other, quadratic, until a worker timed out)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    words = "|".join("".join(letters[k // 26 ** d % 26] for d in range(5)) + "Q" for k in range(n // 7))
    return _json({"record_id": "RMS-CPLX-ALIASES", "given_name": "Zed", "aliases": words})


#: (path, key, base body, the string field, the list field): every POST endpoint that reads a JSON body.
JSON_POSTS = (
    ("/v1/briefings", "officer-metro",
     {"incident": {"id": "INC-CPLX", "call_type": "welfare_check", "received_at": NOW}, "subject": SUBJECT,
      "purpose": "EMERGENCY"}, ("subject", "given_name"), ("subject", "aliases"), ("subject",)),
    ("/v1/match", "officer-metro", {"subject": SUBJECT, "purpose": "EMERGENCY"}, ("subject", "given_name"),
     ("subject", "aliases"), ("subject",)),
    ("/v1/records", "feed-metro", {"record_id": "RMS-CPLX", "given_name": "Zed"}, ("record_id",), ("aliases",), ()),
    ("/v1/context-items", "feed-metro", {"item_id": "CI-CPLX", "record_id": "RMS-NOPE", "category": "medical",
                                         "code": "MED_X", "legal_category": "CJI"}, ("text",), ("security_labels",), ()),
    ("/v1/consents", "feed-metro", {"consent_id": "CNS-CPLX", "record_id": "RMS-NOPE", "recipients": "officer",
                                    "purposes": "EMERGENCY", "categories": "PHI", "valid_from": "2020-01-01"},
     ("description",), ("recipients",), ()),
    ("/v1/feedback", "officer-metro", {"incident_id": "INC-CPLX", "item_id": "CI-NOPE", "helped": True}, ("outcome",),
     ("item_id",), ()),
    ("/v1/context-items/CI-NOPE/retract", "feed-metro", {"reason": "probe"}, ("reason",), ("reason",), ()),
    ("/v1/consents/CNS-NOPE/revoke", "feed-metro", {"reason": "probe"}, ("reason",), ("reason",), ()),
    ("/v1/persons/P-NOPE/erase-registry", "admin-1", {"requested_by": "probe", "reference": "r"}, ("requested_by",),
     ("reference",), ()),
    ("/v1/review/pairs/999999/decision", "steward-1", {"decision": "unsure", "note": "probe"}, ("note",), ("note",), ()),
    ("/v1/persons/P-NOPE/split", "steward-1", {"record_id": "R-NOPE"}, ("record_id",), ("record_id",), ()),
    ("/v1/persons/merge", "steward-1", {"person_ids": ["P-NOPE-1", "P-NOPE-2"]}, ("person_ids", 0), ("person_ids",), ()),
    ("/fhir/Patient/$match", "officer-metro", FHIR, ("parameter", 0, "resource", "name", 0, "family"),
     ("parameter", 0, "resource", "name", 0, "given"), ("parameter", 0, "resource")),
)


def _cases() -> list[Case]:
    cases = []
    for path, key, base, string_at, list_at, object_at in JSON_POSTS:
        repeat = next(iter(base))
        for shape, make in (("long-string", long_string(base, *string_at)), ("many-keys", many_keys(base, *object_at)),
                            ("repeated-key", repeated_key(base, repeat)), ("long-array", long_array(base, *list_at)),
                            ("deep-nesting", deep)):
            cases.append(Case(f"POST {path} {shape}", "POST", path, key, make))
    cases.append(Case("POST /v1/records many-distinct-aliases", "POST", "/v1/records", "feed-metro", many_aliases))
    cases.append(Case("POST /fhir/Patient/$match repeated-parameters", "POST", "/fhir/Patient/$match", "officer-metro",
                      fhir_repeated_parameters))
    form = "application/x-www-form-urlencoded"
    cases += [
        Case("POST /review/login long-field", "POST", "/review/login", None, lambda n: b"key=" + b"x" * n, form),
        Case("POST /review/login repeated-fields", "POST", "/review/login", None, lambda n: b"next=%2Freview&" * n, form),
    ]
    for path, key, name in (("/v1/audit/events", "auditor-1", "person_id"), ("/v1/review/queue", "steward-1", "agency"),
                            ("/review/login", None, "next")):
        cases += [Case(f"GET {path} long-value", "GET", path, key, lambda n, name=name: f"{name}={'x' * n}".encode(),
                       query=True),
                  Case(f"GET {path} repeated-parameter", "GET", path, key,
                       lambda n, name=name: f"{name}={quote('x')}&".encode() * n, query=True)]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def client(world, tmp_path_factory):
    """The app in process over the adversarial world (SQLite), with its keys."""
    db = str(tmp_path_factory.mktemp("complexity") / "briefing.db")
    keys = load_world(world, db)
    app = create_app(db)
    gc.collect()
    gc.freeze()                    # what the app holds is not the requests' garbage: keep collections cheap
    yield app.test_client(), keys
    gc.unfreeze()


def _sized(make: Callable[[int], bytes], target: int) -> bytes:
    """The body `make` builds closest to `target` bytes without going over (sizes are linear in n)."""
    a, b = len(make(100)), len(make(1100))
    n = max(1, int((target - a) * 1000 / max(1, b - a)) + 100)
    body = make(n)
    while len(body) > target:
        n = int(n * target / len(body)) - 1
        body = make(n)
    return body


def _timed(client, case: Case, payload: bytes, key: str | None) -> float:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if case.path == "/fhir/Patient/$match":
        headers["X-Purpose-Of-Use"] = "EMERGENCY"
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        if case.query:
            response = client.open(f"{case.path}?{payload.decode()}", method=case.method, headers=headers)
        else:
            response = client.open(case.path, method=case.method, data=payload, headers=headers,
                                   content_type=case.content_type)
        elapsed = time.process_time() - started
    finally:
        gc.enable()
    assert response.status_code < 500, f"{case.id}: {response.status_code} {response.get_data(as_text=True)[:300]}"
    assert b"Traceback" not in response.get_data(), case.id
    return elapsed


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cost_grows_at_most_linearly_with_input_size(client, case):
    app_client, keys = client
    key = keys[case.key] if case.key else None
    small, probe, large = (_sized(case.make, size) for size in (SMALL, PROBE, LARGE))
    assert len(large) < MAX_BODY and len(large) > 0.9 * LARGE and len(small) > 0.9 * SMALL, (len(small), len(large))
    size_ratio = len(large) / len(small)
    _timed(app_client, case, small, key)                               # warm-up
    small_median = statistics.median(_timed(app_client, case, small, key) for _ in range(RUNS))

    def far_past_linear(body: bytes, seconds: float, factor: float) -> None:
        if seconds > factor * SLACK * len(body) / len(small) * small_median:
            pytest.fail(f"{case.id}: {len(body):,} bytes took {seconds:.3f}s, {seconds / small_median:.0f}x the "
                        f"{small_median * 1000:.1f} ms of {len(small):,} bytes (size ratio {len(body) / len(small):.1f})")

    far_past_linear(probe, _timed(app_client, case, probe, key), 1.5)   # quadratic: 16x at 4x the size
    first = _timed(app_client, case, large, key)
    far_past_linear(large, first, 3.0)
    large_median = statistics.median([first] + [_timed(app_client, case, large, key) for _ in range(RUNS - 1)])
    ratio = large_median / small_median
    assert ratio <= SLACK * size_ratio, (f"{case.id}: time ratio {ratio:.1f} > {SLACK} x size ratio {size_ratio:.1f} "
                                         f"({small_median * 1000:.1f} ms -> {large_median * 1000:.1f} ms)")
