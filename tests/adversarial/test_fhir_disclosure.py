"""Black-box: FHIR `$match` must not hand a responder the demographics a protected program holds.

An officer with no consent knows a name and a date of birth. Person D of the adversarial world
(conftest.py) is known only to a substance-use program (`SUD-D0001`, HARBOR_SUD) and behavioural
health (`EHR-D0001`): whichever record matches best, its phone, street and postcode are what that
program holds about D, and returning them discloses Part 2 / PHI information. The answer to every
role but steward is the opaque references only; a steward, who reviews records, still gets them.
Runs against gunicorn over SQLite and over PostgreSQL (the `served` fixture).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

MATCH = "/fhir/Patient/$match"


def _match(served, key: str, patient: dict, purpose: str | None) -> tuple[int, str]:
    body = json.dumps({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]}).encode()
    headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {served.keys[key]}",
               **({"X-Purpose-Of-Use": purpose} if purpose else {})}
    request = urllib.request.Request(served.base + MATCH, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _name_and_birth(person) -> dict:
    """What an officer who stopped the person knows: a name and a date of birth, nothing the program holds."""
    return {"resourceType": "Patient", "name": [{"family": person.family_name, "given": [person.given_name]}],
            "birthDate": person.dob}


def test_officer_fhir_match_never_returns_a_part2_programs_phone_or_address(served):
    d = served.world.persons["D"]
    held = (d.phone, d.street, d.street.split()[1], d.postcode, d.city)
    for key, purpose in (("officer-metro", "EMERGENCY"), ("officer-metro", "LAW"), ("dispatcher-911", "EMERGENCY"),
                         ("ems-county", "EMERGENCY"), ("co-metro", "TREATMENT")):
        status, text = _match(served, key, _name_and_birth(d), purpose)
        assert status == 200, text[:300]
        patients = [e["resource"] for e in json.loads(text)["entry"] if e["resource"]["resourceType"] == "Patient"]
        assert patients, f"{key}: D should match on name and birth date"
        for patient in patients:
            assert set(patient) == {"resourceType", "id", "identifier"}, (key, patient)
        leaked = [value for value in held if value.lower() in text.lower()]
        assert not leaked, f"{key} ({purpose}) got what the program holds: {leaked}"


def test_a_steward_fhir_match_keeps_the_records_identity_fields(served):
    d = served.world.persons["D"]
    status, text = _match(served, "steward-1", _name_and_birth(d), None)
    assert status == 200, text[:300]
    [patient] = [e["resource"] for e in json.loads(text)["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert patient["identifier"][0]["value"] in {"SUD-D0001", "EHR-D0001"}
    assert [t["value"] for t in patient["telecom"]] == [d.phone] and patient["address"][0]["postalCode"] == d.postcode
