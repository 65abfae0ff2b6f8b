"""The API's errors: every one is JSON (`{"error", "message"}`, plus `fields` for 422), never a stack trace.

`validated` parses a JSON body into a request model: 413 over the size limit, 400 if it is not JSON, 422 with
field messages if it does not fit (`invalid`, `unprocessable` for a rule the schema cannot state);
`validated_query` does the same for query parameters. A NUL character, which no store column can hold, is
refused before any handler runs: 404 in the URL path, 422 naming the field in a query parameter
(`refuse_nul_in_url`) or a JSON body (`nul_locations`). A service refusal (api.service.refusals) is answered
as the JSON error of its status (`refused`).
"""

from __future__ import annotations

import logging

from flask import abort, current_app, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, default_exceptions

from api.service.refusals import FieldRefusal, Refusal
from matching.query import field_messages

NUL = "\x00"
NUL_MESSAGE = "must not contain a NUL character"
log = logging.getLogger("briefing")


class Invalid(HTTPException):
    """A 422 carrying field messages, as {field: message}."""

    code = 422

    def __init__(self, fields: dict[str, str], description: str = "the request body does not match the schema"):
        super().__init__(description=description)
        self.fields = fields


def validated(model):
    """The JSON body parsed as `model`; 400 if it is not JSON, 422 with field messages if it does not fit.

    The body is parsed by `FastJSON` (orjson, api/web/app.py), whose depth limit (1,024) turns deeply nested
    JSON into a 400 rather than a RecursionError (tests/adversarial/test_input_attacks.py): keep a depth-limited
    parser. A NUL character in any string or key is a 422 naming each field path that holds one
    (`nul_locations`): PostgreSQL text cannot store U+0000, so it would otherwise fail in the store as a 500.
    """
    if (request.content_length or 0) > current_app.config["MAX_CONTENT_LENGTH"]:
        abort(413, description=f"the body is over {current_app.config['MAX_CONTENT_LENGTH']:,} bytes")
    data = request.get_json(silent=True, force=True)
    if data is None:
        abort(400, description="the body must be a JSON object (Content-Type: application/json)")
    holding = [".".join(str(p) for p in loc) or "body" for loc in nul_locations(data)]
    if holding:
        raise Invalid(dict.fromkeys(holding, NUL_MESSAGE))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def validated_query(model):
    """The query parameters parsed as `model`; 422 with field messages if they do not fit."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise Invalid(field_messages(exc), "the query parameters do not match the schema") from None


def nul_locations(data, limit: int = 100) -> list[tuple]:
    """The locations (tuples of keys and list indexes) of the strings and keys in parsed JSON `data` that
    hold a NUL character, at most `limit`. One iterative walk: linear in the size of `data`, whatever its
    depth. A key holding a NUL is named with the NUL written `\\u0000`."""
    found, stack = [], [((), data)]
    while stack and len(found) < limit:
        loc, value = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                found.append(loc)
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if NUL in key:
                    found.append((*loc, key.replace(NUL, "\\u0000")))
                else:
                    stack.append(((*loc, key), item))
        elif isinstance(value, list):
            stack.extend(((*loc, k), item) for k, item in reversed(list(enumerate(value))))
    return found[:limit]


def refuse_nul_in_url() -> None:
    """`before_request`: a NUL (%00) in the URL path names nothing (404); in a query parameter, 422 naming it.

    Stores cannot hold U+0000 (PostgreSQL raises DataError), so such a value never reaches a query."""
    if NUL in request.path:
        abort(404, description="nothing has a name holding a NUL character")
    holding = {name.replace(NUL, "\\u0000"): NUL_MESSAGE for name, value in request.args.items(multi=True)
               if NUL in name or NUL in value}
    if holding:
        raise Invalid(holding, "the query parameters do not match the schema")


def invalid(exc: ValidationError) -> HTTPException:
    """A 422 carrying pydantic's errors as {field: message}."""
    return Invalid(field_messages(exc))


def unprocessable(fields: dict[str, str]) -> HTTPException:
    """A 422 for a rule the schema cannot state (e.g. a time out of range), as {field: message}."""
    return Invalid(fields)


def http_error(exc: HTTPException):
    """The JSON answer of an HTTP error."""
    body = {"error": exc.name.lower().replace(" ", "_"), "message": exc.description}
    if isinstance(exc, Invalid):
        body["fields"] = exc.fields
    return jsonify(body), exc.code


def refused(refusal: Refusal):
    """A service refusal, answered as the HTTP error of its status (403 `forbidden`, 404 `not_found`, 409 `conflict`,
    422 with field messages)."""
    if isinstance(refusal, FieldRefusal):
        return http_error(Invalid(refusal.fields, refusal.message))
    return http_error(default_exceptions[refusal.status](description=refusal.message))


def unexpected(exc: Exception):
    log.exception("unhandled error")
    return jsonify(error="internal_error", message="the request failed; it has been logged"), 500
