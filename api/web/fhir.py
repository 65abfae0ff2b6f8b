"""`POST /fhir/Patient/$match`: FHIR R4 patient matching over the resolver of `/v1/match`.

In: a `Parameters` resource (`application/fhir+json` or `application/json`): `resource` (the Patient,
required), `onlyCertainMatches` (valueBoolean), `count` (valuePositiveInt). The Patient becomes a
`Subject`: the official (else usual, else first unmarked) name gives given/middle/family/suffix (a
name with only `text` is split: first word given, last family), every other name is an alias;
`birthDate` a date, or a birth year when partial (YYYY, YYYY-MM); gender male/female/other/unknown
is M/F/X/U; the first phone (or sms), email and address not marked `old`; an identifier of system
us-ssn its last four digits. Elements that are not FHIR R4 elements of their type are refused, so a
typo such as `birthdate` is not a silent miss. A NUL character in any string or key is refused (422).

Out: a `searchset` Bundle, best first, at most `count` entries: a Patient per candidate (never
context items), `search.score` = match probability, and the `match-grade` extension. For every role
but steward the Patient is `resourceType`, `id` (the opaque person reference `psn-…`) and
`identifier` (the opaque record reference of api/service/reference.py: system `urn:briefing:record-ref`,
value `ref-…`, no `assigner`) and nothing else: no name, telecom, address, gender or birth date of
any stored record, and no agency. The best-matching record may be a substance-use program's or an
EHR's, and its phone and address, like a record id (`EHR-…`, `SUD-…`) or an agency, would tell a
responder without consent what that program holds about the person, which 42 CFR Part 2 and HIPAA
protect; the responder already knows what it sent. Stewards, who review records, get the
person id, the identity fields of the best-matching record, the real record id (system
`urn:briefing:record-id`) and its agency as `assigner`. The audit event keeps the real ids. With `onlyCertainMatches` only a single certain
match is returned; several certain ones, or an ambiguous resolution, return none (as the
operation's definition asks). An ambiguous resolution also gets an OperationOutcome entry
(`search.mode = outcome`, code `multiple-matches`).

Bounded work: the body is parsed by orjson, whose depth limit (1,024) makes deeply nested JSON a
400, never a RecursionError; every check is linear in the number of parameters (repetition is
counted once), and an OperationOutcome lists at most `MAX_ISSUES` issues.

Who: the roles of `/v1/match`. $match has no purpose-of-use parameter, so the purpose is the HTTP
header `X-Purpose-Of-Use` (EMERGENCY, LAW, TREATMENT or THREAT; default: the key's first purpose),
which must be one the key grants (stewards need none). Each call appends one audit event
(`fhir_match`), as `/v1/match` does. Every error is an OperationOutcome (401/403/429 included).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections import Counter
from functools import wraps
from typing import Literal

import orjson
from flask import Blueprint, current_app, request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from werkzeug.exceptions import HTTPException

from api.service.audit import audit_fields
from api.service.disclosure import audited_candidates, query_hash, records_for_answer
from api.service.reference import person_reference, record_reference
from api.web.auth import requires
from api.web.context import service
from api.web.errors import NUL_MESSAGE, nul_locations
from matching.query import Subject
from scoring.item import RESPONDERS, Purpose, Role

FHIR_JSON = "application/fhir+json"
PURPOSE_HEADER = "X-Purpose-Of-Use"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
RECORD_SYSTEM = "urn:briefing:record-id"            # stewards: the real record id
REFERENCE_SYSTEM = "urn:briefing:record-ref"        # everyone else: the opaque reference (api.service.reference)
MAX_ISSUES = 100                                    # issues listed in one OperationOutcome (then a count of the rest)
FHIR_DATE = r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$"
GENDER_TO_SEX = {"male": "M", "female": "F", "other": "X", "unknown": "U"}
SEX_TO_GENDER = {v: k for k, v in GENDER_TO_SEX.items()}
ALIAS_USES = {"nickname", "old", "maiden"}
PARAMETERS = ("resource", "onlyCertainMatches", "count")
_FHIR_BASE = {"id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension"}

blueprint = Blueprint("fhir", __name__)
log = logging.getLogger("briefing")


class _Element(BaseModel):
    """A FHIR element: the fields used are typed; other elements of the type pass unread (see `_unknown`)."""
    model_config = ConfigDict(extra="allow")


class HumanName(_Element):
    use: Literal["usual", "official", "temp", "nickname", "anonymous", "old", "maiden"] | None = None
    text: StrictStr | None = None
    family: StrictStr | None = None
    given: list[StrictStr] = []
    suffix: list[StrictStr] = []


class ContactPoint(_Element):
    system: Literal["phone", "fax", "email", "pager", "url", "sms", "other"] | None = None
    value: StrictStr | None = None
    use: Literal["home", "work", "temp", "old", "mobile"] | None = None


class Address(_Element):
    use: Literal["home", "work", "temp", "old", "billing"] | None = None
    line: list[StrictStr] = []
    city: StrictStr | None = None
    state: StrictStr | None = None
    postalCode: StrictStr | None = None


class Identifier(_Element):
    system: StrictStr | None = None
    value: StrictStr | None = None


class PatientQuery(_Element):
    """The Patient to match (FHIR R4 Patient; the elements read are typed)."""
    resourceType: Literal["Patient"]
    name: list[HumanName] = []
    telecom: list[ContactPoint] = []
    gender: Literal["male", "female", "other", "unknown"] | None = None
    birthDate: str | None = Field(default=None, pattern=FHIR_DATE, description="YYYY, YYYY-MM or YYYY-MM-DD")
    address: list[Address] = []
    identifier: list[Identifier] = []


class MatchParameter(_Element):
    name: StrictStr
    resource: PatientQuery | None = None
    valueBoolean: StrictBool | None = None
    valuePositiveInt: StrictInt | None = None
    valueInteger: StrictInt | None = None


class MatchParameters(_Element):
    """The body of `POST /fhir/Patient/$match`: a FHIR R4 Parameters resource."""
    resourceType: Literal["Parameters"]
    parameter: list[MatchParameter] = []


_OTHERS = {  # the FHIR R4 elements of each type that are accepted but not read
    HumanName: {"id", "extension", "prefix", "period"},
    ContactPoint: {"id", "extension", "rank", "period"},
    Address: {"id", "extension", "type", "text", "district", "country", "period"},
    Identifier: {"id", "extension", "use", "type", "period", "assigner"},
    PatientQuery: _FHIR_BASE | {"active", "deceasedBoolean", "deceasedDateTime", "maritalStatus", "multipleBirthBoolean",
                                "multipleBirthInteger", "photo", "contact", "communication", "generalPractitioner",
                                "managingOrganization", "link"},
    MatchParameter: {"id", "extension", "modifierExtension", "part"},
    MatchParameters: _FHIR_BASE,
}


class Refused(Exception):
    """A request this endpoint answers with an OperationOutcome."""

    def __init__(self, status: int, issues: list[dict], headers: dict | None = None):
        super().__init__(issues[0]["diagnostics"])
        if len(issues) > MAX_ISSUES:
            issues = issues[:MAX_ISSUES] + [issue("too-costly", f"... and {len(issues) - MAX_ISSUES} more issues")]
        self.status, self.issues, self.headers = status, issues, headers or {}


def issue(code: str, diagnostics: str, expression: str | None = None, severity: str = "error") -> dict:
    return {"severity": severity, "code": code, "diagnostics": diagnostics, **({"expression": [expression]} if expression else {})}


def _fhirpath(loc, root: str = "Parameters") -> str:
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def fhir_response(body: dict, status: int = 200, headers: dict | None = None):
    response = current_app.response_class(json.dumps(body, ensure_ascii=False), status=status, mimetype=FHIR_JSON)
    response.headers.update(headers or {})
    return response


def _outcome(issues: list[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues}


def as_operation_outcome(view):
    """Every refusal and error of `view` (authentication's 401 / 403 / 429 included) as an OperationOutcome."""
    @wraps(view)
    def answered(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except Refused as refused:
            issues, status, headers = refused.issues, refused.status, refused.headers
        except HTTPException as exc:
            issues, status, headers = _http_refusal(exc)
        except Exception:
            log.exception("unhandled error in $match")
            issues, status, headers = [issue("exception", "the request failed; it has been logged")], 500, {}
        return fhir_response(_outcome(issues), status, headers)
    return answered


def _http_refusal(exc: HTTPException) -> tuple[list[dict], int, dict]:
    """Authentication's refusals (api/web/auth.py: 401, 403, and 429 with Retry-After) and a body over the size limit."""
    if exc.response is not None:                        # 429, with Retry-After
        message = (exc.response.get_json(silent=True) or {}).get("message", "refused")
        headers = {k: v for k, v in exc.response.headers.items() if k == "Retry-After"}
        return [issue("throttled", message)], exc.response.status_code, headers
    if exc.code in (401, 403):
        return [issue({401: "login", 403: "forbidden"}[exc.code], exc.description)], exc.code, {}
    return [issue("too-costly" if exc.code == 413 else "processing", exc.description)], exc.code, {}


@blueprint.post("/fhir/Patient/$match")
@as_operation_outcome
@requires(*RESPONDERS, Role.steward)
def patient_match(principal):
    purpose = _purpose(principal)
    body = _parameters()
    subject, (only_certain, count) = _subject(body), _options(body)
    current = service()
    resolution = current.resolver.resolve(subject).to_dict()
    candidates, notes = resolution["candidates"], []
    if resolution["status"] == "ambiguous":
        notes.append(issue("multiple-matches", "two or more persons match about equally well: confirm identity before "
                            "treating any of them as the subject", severity="warning"))
    if only_certain:
        certain = [c for c in candidates if c["grade"] == "certain"]
        candidates = certain if len(certain) == 1 and resolution["status"] != "ambiguous" else []
        if len(certain) > 1 or (certain and not candidates):
            notes.append(issue("multiple-matches", "onlyCertainMatches: more than one person may be the subject, "
                                "so no match is returned", severity="information"))
    candidates = candidates[:count] if count else candidates
    request_id = uuid.uuid4().hex
    rows = records_for_answer(current.store, [c["record_id"] for c in candidates], "fhir_match", {
        **audit_fields(principal, "agency", "role"),
        "purpose": purpose.value if purpose else None, "query_hash": query_hash(subject),
        "status": resolution["status"], "only_certain_matches": only_certain, "count": count,
        "candidates": audited_candidates(candidates), "versions": current.versions,
    }, principal.name, request_id)
    return _bundle(principal, candidates, notes, rows, request_id)


def _bundle(principal, candidates: list[dict], notes: list[dict], rows, request_id: str):
    """The searchset Bundle: a Patient per candidate whose record is stored, then the notes' OperationOutcome."""
    by_id = {r["record_id"]: r for r in rows}
    secret = service().reference_key
    steward = principal.role == Role.steward
    reference = None if steward else (lambda record_id: record_reference(record_id, secret))
    shown_person = (lambda p: p) if steward else (lambda p: person_reference(p, secret))
    entries = [{"fullUrl": _urn(shown_person(c["person_id"])),
                "resource": _patient(shown_person(c["person_id"]), by_id[c["record_id"]], reference),
                "search": {"mode": "match", "score": c["match_probability"],
                           "extension": [{"url": MATCH_GRADE, "valueCode": c["grade"]}]}}
               for c in candidates if c["record_id"] in by_id]
    if notes:
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _outcome(notes), "search": {"mode": "outcome"}})
    return fhir_response({"resourceType": "Bundle", "id": request_id, "type": "searchset",
                           "total": sum(e["search"]["mode"] == "match" for e in entries), "entry": entries})


def _purpose(principal) -> Purpose | None:
    claimed = request.headers.get(PURPOSE_HEADER, "").strip()
    if not claimed:
        if principal.role == Role.steward or principal.purposes:
            return principal.purposes[0] if principal.purposes else None
        raise Refused(403, [issue("forbidden", "this key may claim no purpose of use")])
    try:
        purpose = Purpose(claimed.upper())
    except ValueError:
        raise Refused(400, [issue("invalid", f"header {PURPOSE_HEADER}: {claimed!r} is not one of "
                                   f"{', '.join(p.value for p in Purpose)}")]) from None
    if principal.role != Role.steward and purpose not in principal.purposes:
        raise Refused(403, [issue("forbidden", f"this key may not claim purpose {purpose.value} ({PURPOSE_HEADER})")])
    return purpose


def _parameters() -> MatchParameters:
    mimetype = request.mimetype
    if mimetype and mimetype not in (FHIR_JSON, "application/json"):
        raise Refused(415, [issue("not-supported", f"Content-Type {mimetype} is not supported: send {FHIR_JSON}")])
    try:
        data = orjson.loads(request.get_data(cache=False))       # depth-limited: deep nesting is a 400
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("resourceType") != "Parameters":
        raise Refused(400, [issue("structure", "the body must be a FHIR Parameters resource (JSON) with a parameter "
                                   "'resource' holding the Patient to match", "Parameters")])
    holding = nul_locations(data, MAX_ISSUES)
    if holding:
        raise Refused(422, [issue("invalid", f"{_fhirpath(loc)}: {NUL_MESSAGE}", _fhirpath(loc)) for loc in holding])
    try:
        body = MatchParameters.model_validate(data)
    except ValidationError as exc:
        raise Refused(422, [_pydantic_issue(e) for e in exc.errors()]) from None
    issues = [issue("structure", f"{path}: unknown element", path) for path in _unknown(body, "Parameters")]
    uses, reported = Counter(p.name for p in body.parameter), set()
    for i, parameter in enumerate(body.parameter):
        if parameter.name not in PARAMETERS:
            issues.append(issue("not-supported", f"unknown parameter {parameter.name!r} (allowed: {', '.join(PARAMETERS)})",
                                 f"Parameters.parameter[{i}].name"))
        elif uses[parameter.name] > 1 and parameter.name not in reported:       # once per name, at its first use
            reported.add(parameter.name)
            issues.append(issue("structure", f"parameter {parameter.name!r} is repeated ({uses[parameter.name]} times)",
                                 f"Parameters.parameter[{i}]"))
    if not any(p.name == "resource" and p.resource is not None for p in body.parameter):
        issues.append(issue("required", "parameter 'resource' (the Patient to match) is required", "Parameters.parameter"))
    if issues:
        raise Refused(422, issues)
    return body


def _pydantic_issue(error: dict) -> dict:
    kind, path = error["type"], _fhirpath(error["loc"])
    code = "required" if kind == "missing" else "structure" if kind.endswith(("_type", "_parsing")) else "invalid"
    message = "must be a FHIR date: YYYY, YYYY-MM or YYYY-MM-DD" if kind == "string_pattern_mismatch" else error["msg"]
    return issue(code, f"{path}: {message}", path)


def _unknown(element, path: str) -> list[str]:
    """FHIRPaths of elements that are not elements of their FHIR type (primitive extensions `_x` are let through)."""
    if isinstance(element, list):
        return [p for k, item in enumerate(element) for p in _unknown(item, f"{path}[{k}]")]
    if not isinstance(element, _Element):
        return []
    out = [f"{path}.{key}" for key in element.model_extra or {} if key not in _OTHERS[type(element)]
           and not key.startswith("_") and not (isinstance(element, MatchParameter) and key.startswith("value"))]
    return out + [p for name in type(element).model_fields for p in _unknown(getattr(element, name), f"{path}.{name}")]


def _find(body: MatchParameters, name: str) -> tuple[int, MatchParameter | None]:
    return next(((i, p) for i, p in enumerate(body.parameter) if p.name == name), (-1, None))


def _options(body: MatchParameters) -> tuple[bool, int | None]:
    """(onlyCertainMatches, count), each checked."""
    i, flag = _find(body, "onlyCertainMatches")
    if flag is not None and flag.valueBoolean is None:
        raise Refused(422, [issue("invalid", "onlyCertainMatches must be a valueBoolean", f"Parameters.parameter[{i}]")])
    i, count = _find(body, "count")
    value = None if count is None else count.valueInteger if count.valuePositiveInt is None else count.valuePositiveInt
    if count is not None and (value is None or value < 1):
        raise Refused(422, [issue("invalid", "count must be a valuePositiveInt (1 or more)", f"Parameters.parameter[{i}]")])
    return bool(flag and flag.valueBoolean), value


def _subject(body: MatchParameters) -> Subject:
    """The Patient as a Subject (see the module docstring); 422 naming the element when a value does not fit."""
    i, parameter = _find(body, "resource")
    root, patient = f"Parameters.parameter[{i}].resource", parameter.resource
    fields, where = {}, {}
    primary = next((n for use in ("official", "usual") for n in patient.name if n.use == use), None) or \
        next((n for n in patient.name if n.use not in ALIAS_USES), None)
    if primary is not None:
        at = f"{root}.name[{patient.name.index(primary)}]"
        given, family = [g for g in primary.given if g.strip()], primary.family
        if not (given or family) and primary.text and len(primary.text.split()) > 1:   # "Given [Middle] Family"
            *given, family = primary.text.split()
        fields.update(given_name=given[0] if given else None, middle_name=" ".join(given[1:]) or None,
                      family_name=family, name_suffix=" ".join(primary.suffix) or None)
        where.update(dict.fromkeys(("given_name", "middle_name", "family_name", "name_suffix"), at))
    aliases = [n.text or " ".join([*n.given, n.family or ""]).strip() for n in patient.name if n is not primary]
    fields["aliases"], where["aliases"] = "|".join(a for a in aliases if a) or None, f"{root}.name"
    if patient.birthDate:
        key = "dob" if len(patient.birthDate) == 10 else "birth_year"
        fields[key] = patient.birthDate if key == "dob" else int(patient.birthDate[:4])
        where[key] = f"{root}.birthDate"
    fields["sex"], where["sex"] = GENDER_TO_SEX.get(patient.gender), f"{root}.gender"
    for key, systems in (("phone", ("phone", "sms")), ("email", ("email",))):
        k = next((k for k, t in enumerate(patient.telecom) if t.system in systems and t.value and t.use != "old"), None)
        if k is not None:
            fields[key], where[key] = patient.telecom[k].value, f"{root}.telecom[{k}].value"
    k = next((k for k, a in enumerate(patient.address) if a.use != "old"), None)
    if k is not None:
        address = patient.address[k]
        fields.update(street=" ".join(address.line) or None, city=address.city, state=address.state,
                      postcode=address.postalCode)
        where.update({f: f"{root}.address[{k}].{e}" for f, e in (("street", "line"), ("city", "city"), ("state", "state"),
                                                                 ("postcode", "postalCode"))})
    k = next((k for k, n in enumerate(patient.identifier) if n.system == SSN_SYSTEM and n.value), None)
    if k is not None:
        digits, at = re.sub(r"\D", "", patient.identifier[k].value), f"{root}.identifier[{k}].value"
        if len(digits) not in (4, 9):
            raise Refused(422, [issue("invalid", f"{at}: an SSN has 9 digits (or send its last 4)", at)])
        fields["ssn_last4"] = digits[-4:]
    try:
        return Subject.model_validate({f: v for f, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise Refused(422, [issue("invalid", f"{where.get(e['loc'][0], root)}: {e['msg'].removeprefix('Value error, ')}",
                                   where.get(e["loc"][0], root)) for e in exc.errors()]) from None


def _urn(person_id: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'briefing:person:' + person_id)}"


def _patient(person_id: str, row, reference=None) -> dict:
    """The Patient of one candidate (never context items).

    `reference`: record id -> opaque reference, for everyone but stewards: the Patient is then only
    its id and that reference, with no identity field of the record (a responder learns who matched,
    never the phone or address a substance-use program or an EHR holds). Without it (stewards) the
    record's identity fields, its real id and its agency.
    """
    if reference is not None:
        return {"resourceType": "Patient", "id": person_id,
                "identifier": [{"system": REFERENCE_SYSTEM, "value": reference(row["record_id"])}]}
    text = {k: (str(row[k]).strip() or None) if row[k] is not None else None for k in row.keys()}
    name = {"use": "usual", "family": text["family_name"],
            "given": [g for g in (text["given_name"], text["middle_name"]) if g], "suffix": [text["name_suffix"]]}
    names = [{k: v for k, v in name.items() if v and v != [None]}]
    names += [{"use": "nickname", "text": a.strip()} for a in (text["aliases"] or "").split("|") if a.strip()]
    birth = text["dob"] if text["dob"] and re.match(FHIR_DATE, text["dob"]) else text["birth_year"]
    telecom = [{"system": s, "value": text[f]} for s, f in (("phone", "phone"), ("email", "email")) if text[f]]
    address = {"line": [text["street"]] if text["street"] else None, "city": text["city"], "state": text["state"],
               "postalCode": text["postcode"]}
    patient = {"resourceType": "Patient", "id": person_id,
               "identifier": [{"system": RECORD_SYSTEM, "value": row["record_id"],
                               **({"assigner": {"display": text["agency"]}} if text["agency"] else {})}],
               "name": [n for n in names if len(n) > 1], "telecom": telecom,
               "gender": SEX_TO_GENDER.get((text["sex"] or "").upper()[:1]),
               "birthDate": birth if birth and re.match(FHIR_DATE, birth) else None,
               "address": [{k: v for k, v in address.items() if v}] if any(address.values()) else []}
    return {k: v for k, v in patient.items() if v not in (None, [])}
