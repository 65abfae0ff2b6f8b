"""docs/integration.md stays true: every sample request on it is sent, in order, and its answer
must have the status and the shape the page shows.

Shape means: every field the page shows is in the answer (recursively; for a list, its first
element), and a list the page shows with entries is not empty. Values may differ (request ids,
times, a re-trained model's scores), so ids the page shows are mapped to the ids the service
actually returned and substituted into the later requests that quote them.
"""

import json
import re
from pathlib import Path

import pytest

from api.service.keys import create_key
from api.service.referrals import register_program
from api.web.app import create_app
from scoring.item import Purpose, Role
from scoring.referral import ProgramKind
from scoring.referral_policy import Program
from tests.loaded_county import county_clock, loaded_county

DOC = Path(__file__).resolve().parent.parent / "docs" / "integration.md"
KEYS = {"DISPATCHER": (Role.dispatcher, "COUNTY_911", [Purpose.EMERGENCY, Purpose.LAW]),
        "OFFICER": (Role.officer, "METRO_PD", [Purpose.EMERGENCY, Purpose.LAW]),
        "EMS": (Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY]),
        "FEED": (Role.feed, "METRO_PD", []), "STEWARD": (Role.steward, "COUNTY", []),
        "AUDITOR": (Role.auditor, "COUNTY", []), "ADMIN": (Role.admin, "COUNTY", []),
        "PROVIDER": (Role.provider, "MOBILE_CRISIS", [])}
ID_FIELDS = {"person_id", "record_id", "item_id", "consent_id", "request_id", "person_id_l", "person_id_r",
             "record_id_l", "record_id_r", "from_person_id", "to_person_id", "kept_person_id", "merged_person_id"}
#: Numeric ids, substituted in request paths only, after the collection that names them.
NUMBER_FIELDS = {"pair_id": "/review/pairs/", "decision_id": "/review/decisions/", "event_id": "/persons/events/",
                 "id": "/referrals/"}


def _http_blocks(text: str) -> list[str]:
    return re.findall(r"```http\n(.*?)```", text, flags=re.S)


def _parse(block: str) -> tuple[str, dict, str]:
    """(first line, headers, body) of an HTTP message as the page writes it."""
    head, _, body = block.partition("\n\n")
    first, *lines = head.strip().split("\n")
    return first, dict(line.split(": ", 1) for line in lines), body.strip()


def _exchanges() -> list[tuple[str, dict, str, int, str]]:
    blocks = [_parse(b) for b in _http_blocks(DOC.read_text())]
    out = []
    for (request, headers, body), (status_line, _, answer) in zip(blocks[::2], blocks[1::2]):
        assert not request.startswith("HTTP/") and status_line.startswith("HTTP/1.1 "), (request, status_line)
        out.append((request, headers, body, int(status_line.split()[1]), answer))
    return out


def _fits(shown, actual, where: str, ids: dict) -> None:
    """Assert `actual` has every field `shown` has; learn the ids the page shows -> the real ones."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for shown_key, value in shown.items():
            key = ids.get(shown_key, shown_key)            # an object keyed by ids (records moved -> person)
            assert key in actual, f"{where}: the page shows {shown_key!r}, the answer has no such field"
            if key in ID_FIELDS and isinstance(value, str) and isinstance(actual[key], str):
                ids.setdefault(value, actual[key])
            if key in NUMBER_FIELDS and isinstance(value, int) and isinstance(actual[key], int):
                ids.setdefault(f"{NUMBER_FIELDS[key]}{value}", f"{NUMBER_FIELDS[key]}{actual[key]}")
            _fits(value, actual[key], f"{where}.{key}", ids)
    elif isinstance(shown, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        if shown:
            assert actual, f"{where}: the page shows entries, the answer has none"
            for position, value in enumerate(shown[: len(actual)]):
                _fits(value, actual[position], f"{where}[{position}]", ids)


def test_the_document_has_a_sample_for_every_endpoint():
    from api.web.openapi import operations

    sent = {(request.split()[0].lower(), request.split()[1].split("?")[0]) for request, *_ in _exchanges()}
    for op in operations():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", re.escape(op.path).replace(r"\{", "{").replace(r"\}", "}"))
        assert any(method == op.method and re.fullmatch(pattern, path) for method, path in sent), \
            f"docs/integration.md has no sample for {op.method.upper()} {op.path}"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    db, store = loaded_county(tmp_path_factory.mktemp("county"), 400, 41)
    register_program(store, Program("MOBILE_CRISIS", ProgramKind.mobile_crisis, False, "555-0101"), by="test")
    keys = {f"${name}_KEY": create_key(store, name.lower(), role, agency, purposes)
            for name, (role, agency, purposes) in KEYS.items()}
    return create_app(db, clock=county_clock).test_client(), keys      # the page's incident is the county's


def test_every_sample_request_gets_the_answer_the_document_shows(service):
    client, keys = service
    ids: dict[str, str] = {}
    for request, headers, body, status, answer in _exchanges():
        method, target, _ = request.split()

        def substitute(text: str) -> str:
            for shown, real in {**keys, **ids}.items():
                if not shown.startswith("/"):
                    text = text.replace(shown, real)
            return text

        path = substitute(target)
        for shown, real in ids.items():                # numeric ids: whole path segments only
            if shown.startswith("/"):
                path = re.sub(re.escape(shown) + r"(?=/|\?|$)", real, path)
        response = client.open(path, method=method, data=substitute(body).encode() or None,
                               headers={k: substitute(v) for k, v in headers.items()})
        label = f"{method} {target}"
        assert response.status_code == status, f"{label}: {response.status_code} {response.get_data(as_text=True)[:300]}"
        if answer:
            _fits(json.loads(answer), json.loads(response.get_data()), label, ids)
