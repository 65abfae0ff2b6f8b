"""`GET /openapi.json`: the API described from the same pydantic models that validate requests.

Request bodies are the models' JSON Schemas; every error is the one `Error` shape (plus `fields`
for 422). Response bodies are described by their top-level fields.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

blueprint = Blueprint("openapi", __name__)

_ERROR = {"type": "object", "required": ["error", "message"],
          "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                         "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}
_SECURITY = [{"bearer": []}]


def _errors(*codes: int) -> dict:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for c in codes}


def _object(*required: str) -> dict:
    return {"type": "object", "required": list(required)}


def document() -> dict:
    """The OpenAPI 3.1 document of the endpoints that exist today."""
    from api.briefings import BriefingRequest, MatchRequest
    from api.feeds import RecordIn
    from api.oversight import Feedback
    from scoring.item import Consent, ContextItem

    schemas: dict = {"Error": _ERROR}
    bodies = {}
    for model in (BriefingRequest, MatchRequest, RecordIn, Feedback, ContextItem, Consent):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        bodies[model.__name__] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}

    def op(summary, body=None, ok="200", response=None, codes=(400, 401, 403, 413, 422, 429)):
        out = {"summary": summary, "security": _SECURITY, "responses": {
            ok: {"description": "success", "content": {"application/json": {"schema": response or {"type": "object"}}}},
            **_errors(*codes)}}
        if body:
            out["requestBody"] = bodies[body]
        return out

    return {
        "openapi": "3.1.0",
        "info": {"title": "Briefing", "version": "1"},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/briefings": {"post": op("resolve an incident's subject and rank the permitted items", "BriefingRequest",
                                         response=_object("incident_id", "request_id", "resolution", "items", "withheld", "versions"))},
            "/v1/match": {"post": op("resolve a subject (no items)", "MatchRequest", response=_object("request_id", "resolution"))},
            "/v1/records": {"post": op("upsert a record (feed: own agency)", "RecordIn", ok="201",
                                       response=_object("record_id", "person_id", "joined"))},
            "/v1/records/{record_id}": {"delete": {**op("delete a record", ok="204", codes=(401, 403, 404)),
                                                   "parameters": [{"name": "record_id", "in": "path", "required": True,
                                                                   "schema": {"type": "string"}}]}},
            "/v1/context-items": {"post": op("upsert a context item", "ContextItem")},
            "/v1/consents": {"post": op("upsert a consent", "Consent")},
            "/v1/feedback": {"post": op("responder feedback on an item", "Feedback", ok="201", response=_object("id"))},
            "/v1/persons/{person_id}": {"get": {**op("a person's identity records (steward)", codes=(401, 403, 404)),
                                                "parameters": [{"name": "person_id", "in": "path", "required": True,
                                                                "schema": {"type": "string"}}]}},
            "/v1/audit/events": {"get": op("audit events (auditor)", response=_object("events"), codes=(401, 403, 422, 429))},
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "readiness: 200 once the index is loaded", "responses": {"200": {"description": "ready"}}}},
        },
    }


@blueprint.get("/openapi.json")
def openapi():
    return jsonify(document())
