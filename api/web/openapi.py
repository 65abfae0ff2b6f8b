"""`GET /openapi.json`: the API described from the same pydantic models that validate requests.

Request bodies are the request models' JSON Schemas, answers the models of `api.web.schemas`; every
error is the one `Error` shape (plus `fields` for 422). `/v1` only grows: a field or an endpoint
may be added, never removed or changed in meaning (docs/integration.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, jsonify

from api.service.audit_search import EventQuery
from api.service.ingest import ConsentIn, ItemIn
from api.web import schemas as s
from api.web.briefings import BriefingRequest, MatchRequest
from api.service.referrals import NewReferral, Step
from api.web.feeds import RecordIn
from api.web.fhir import FHIR_JSON, MatchParameters
from api.web.oversight import Feedback
from api.web.referrals import ListQuery
from api.web.review_api import DecisionIn, MergeIn, QueueQuery, SplitIn
from api.web.withdraw import ErasureIn, RetractIn, RevokeIn

blueprint = Blueprint("openapi", __name__)

_ERROR = {"type": "object", "required": ["error", "message"],
          "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                         "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}
AUTH_ERRORS = (401, 403, 429)
BODY_ERRORS = (400, 413, 422)


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    summary: str
    ok: int
    answer: type | None                     # an api.web.schemas model; None for an empty answer
    body: type | None = None                # the request model
    errors: tuple[int, ...] = AUTH_ERRORS
    path_parameter: str | None = None
    query: type | None = None               # a model whose fields are query parameters
    public: bool = False
    media_type: str = "application/json"
    also_ok: tuple[int, ...] = ()            # other success codes with the same answer
    error: str = "Error"                     # the schema of its error answers
    optional_body: bool = False              # an empty body means the model's defaults
    header: tuple[str, list[str]] | None = None   # an optional request header and its values


def operations() -> list[Operation]:
    """Every endpoint of the service, in the order the document lists them."""
    return [
        Operation("/v1/briefings", "post", "resolve an incident's subject and rank the permitted items", 200,
                  s.BriefingAnswer, BriefingRequest, AUTH_ERRORS + BODY_ERRORS),
        Operation("/v1/match", "post", "resolve a subject (no items)", 200, s.MatchAnswer, MatchRequest,
                  AUTH_ERRORS + BODY_ERRORS),
        Operation("/v1/records", "post", "upsert a record (feed: own agency); 201 when new, 200 when replaced; 409 "
                  "when its agency would change under items or consents", 201,
                  s.RecordWritten, RecordIn, AUTH_ERRORS + BODY_ERRORS + (409,), also_ok=(200,)),
        Operation("/v1/records/{record_id}", "delete", "delete a record (feed: own agency)", 204, None,
                  errors=AUTH_ERRORS + (404,), path_parameter="record_id"),
        Operation("/v1/context-items", "post", "upsert a context item on a record of the feed's agency (403 if the "
                  "item belongs to another agency; 409 if it would move to another agency's record)", 200,
                  s.ItemWritten, ItemIn, AUTH_ERRORS + BODY_ERRORS + (409,)),
        Operation("/v1/consents", "post", "upsert a consent on a record of the feed's agency (403 if the consent "
                  "belongs to another agency; 409 if it would move to another agency's record)", 200,
                  s.ConsentWritten, ConsentIn, AUTH_ERRORS + BODY_ERRORS + (409,)),
        Operation("/v1/context-items/{item_id}/retract", "post", "retract an item, or mark it entered in error", 200,
                  s.ItemRetracted, RetractIn, AUTH_ERRORS + BODY_ERRORS + (404,), path_parameter="item_id",
                  optional_body=True),
        Operation("/v1/consents/{consent_id}/revoke", "post", "revoke a consent (binds every later disclosure)", 200,
                  s.ConsentRevoked, RevokeIn, AUTH_ERRORS + BODY_ERRORS + (404,), path_parameter="consent_id",
                  optional_body=True),
        Operation("/v1/persons/{person_id}/erase-registry", "post", "erase a person's voluntary-registry data (admin)",
                  200, s.RegistryErased, ErasureIn, AUTH_ERRORS + BODY_ERRORS + (404,), path_parameter="person_id"),
        Operation("/fhir/Patient/$match", "post", "FHIR R4 patient matching (purpose in the X-Purpose-Of-Use header)",
                  200, s.FhirBundle, MatchParameters, AUTH_ERRORS + BODY_ERRORS + (415,), media_type=FHIR_JSON,
                  error="OperationOutcome", header=("X-Purpose-Of-Use", ["EMERGENCY", "LAW", "TREATMENT", "THREAT"])),
        Operation("/v1/feedback", "post", "responder feedback on an item a briefing showed you at that incident, "
                  "once (403 if none did, 409 the second time)", 201, s.FeedbackWritten, Feedback,
                  AUTH_ERRORS + BODY_ERRORS + (409,)),
        Operation("/v1/referrals", "post", "refer the person your agency's briefing resolved at an incident to a "
                  "receiving program (responders; 422 naming the field for an unknown program, an incident not "
                  "briefed or a basis the caller may not use)", 201, s.ReferralAnswer, NewReferral,
                  AUTH_ERRORS + BODY_ERRORS),
        Operation("/v1/referrals", "get", "the referrals your side may see: a program's (provider) or a referring "
                  "agency's (responders)", 200, s.ReferralList, errors=AUTH_ERRORS + (422,), query=ListQuery),
        Operation("/v1/referrals/{referral_id}", "get", "one referral as your side may see it (404 when it is not "
                  "yours)", 200, s.ReferralAnswer, errors=AUTH_ERRORS + (404,), path_parameter="referral_id"),
        Operation("/v1/referrals/{referral_id}/events", "post", "one lifecycle step by the side that owns it (409 "
                  "when the lifecycle does not allow it)", 200, s.ReferralAnswer, Step,
                  AUTH_ERRORS + BODY_ERRORS + (404, 409), path_parameter="referral_id"),
        Operation("/fhir/ServiceRequest/{referral_id}", "get", "a referral as a FHIR R4 ServiceRequest (its program, "
                  "or the referring agency's clinicians)", 200, s.FhirResource, errors=AUTH_ERRORS + (404,),
                  path_parameter="referral_id", media_type=FHIR_JSON, error="OperationOutcome"),
        Operation("/fhir/Task/{referral_id}", "get", "a referral's SDOHCC TaskForReferralManagement Task (FHIR R4)",
                  200, s.FhirResource, errors=AUTH_ERRORS + (404,), path_parameter="referral_id",
                  media_type=FHIR_JSON, error="OperationOutcome"),
        Operation("/v1/persons/{person_id}", "get", "a person's identity records (steward)", 200, s.Person,
                  errors=AUTH_ERRORS + (404,), path_parameter="person_id"),
        Operation("/v1/audit/events", "get", "audit events, newest first (auditor)", 200, s.AuditEvents,
                  errors=AUTH_ERRORS + (422,), query=EventQuery),
        Operation("/v1/review/queue", "get", "the steward review queue, in priority order (steward)", 200,
                  s.ReviewQueue, errors=AUTH_ERRORS + (422,), query=QueueQuery),
        Operation("/v1/review/pairs/{pair_id}", "get", "a review pair: both records, the evidence, its decisions "
                  "(steward)", 200, s.ReviewPairDetail, errors=AUTH_ERRORS + (404,), path_parameter="pair_id"),
        Operation("/v1/review/pairs/{pair_id}/decision", "post", "decide a pair: match, not a match, unsure "
                  "(steward); takes effect at once", 201, s.DecisionResult, DecisionIn,
                  AUTH_ERRORS + BODY_ERRORS + (404, 409), path_parameter="pair_id"),
        Operation("/v1/review/decisions/{decision_id}/undo", "post", "undo a decision; later ones touching the "
                  "same records first (steward)", 200, s.DecisionResult, errors=AUTH_ERRORS + (404, 409),
                  path_parameter="decision_id"),
        Operation("/v1/persons/{person_id}/split", "post", "split a record out of a person (steward)", 200,
                  s.PersonSplit, SplitIn, AUTH_ERRORS + BODY_ERRORS + (404, 409), path_parameter="person_id"),
        Operation("/v1/persons/merge", "post", "merge two persons (steward)", 200, s.PersonsMerged, MergeIn,
                  AUTH_ERRORS + BODY_ERRORS + (404, 409)),
        Operation("/v1/persons/events/{event_id}/undo", "post", "undo a split or merge made on a person (steward)",
                  200, s.PersonEventUndone, errors=AUTH_ERRORS + (404, 409), path_parameter="event_id"),
        Operation("/healthz", "get", "liveness", 200, s.Health, errors=(), public=True),
        Operation("/readyz", "get", "readiness: answers only once the index is loaded; the index generation and any rebuild in progress", 200, s.Ready, errors=(),
                  public=True),
    ]


def document() -> dict:
    """The OpenAPI 3.1 document of every endpoint."""
    schemas: dict = {"Error": _ERROR}

    def ref(model) -> dict:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict = {}
    for op in operations():
        entry: dict = {"summary": op.summary, "responses": {}}
        if not op.public:
            entry["security"] = [{"bearer": []}]
        ok = {"description": "success"}
        if op.answer is not None:
            ok["content"] = {op.media_type: {"schema": ref(op.answer)}}
        for code in (op.ok,) + op.also_ok:
            entry["responses"][str(code)] = ok
        error = {"$ref": "#/components/schemas/Error"} if op.error == "Error" else ref(getattr(s, op.error))
        for code in op.errors:
            entry["responses"][str(code)] = {"description": "error", "content": {op.media_type: {"schema": error}}}
        if op.body is not None:
            entry["requestBody"] = {"required": not op.optional_body, "content": {op.media_type: {"schema": ref(op.body)}}}
        parameters = []
        if op.path_parameter:
            parameters.append({"name": op.path_parameter, "in": "path", "required": True, "schema": {"type": "string"}})
        if op.query is not None:
            query = op.query.model_json_schema()
            for name, schema in query["properties"].items():
                parameters.append({"name": name, "in": "query", "required": name in query.get("required", []),
                                   "schema": schema})
        if op.header:
            parameters.append({"name": op.header[0], "in": "header", "required": False,
                               "schema": {"type": "string", "enum": op.header[1]}})
        if parameters:
            entry["parameters"] = parameters
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "Briefing", "version": "1",
                 "description": "Who responders are about to meet. See docs/integration.md."},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


@blueprint.get("/openapi.json")
def openapi():
    return jsonify(document())
