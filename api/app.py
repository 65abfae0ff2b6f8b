"""The Briefing service: Flask application factory, authentication, errors, health.

`create_app(db, models_dir)` opens the store, loads the matcher, the ranker and the rules, and
builds the resolver's index from the store's records and clusters; `/readyz` answers 200 once
that is done. Every error is JSON (`{"error", "message"}`, plus `fields` for 422) and never a
stack trace. Requests over 1 MiB get 413. A NUL character, which no store column can hold, is
refused before any handler runs: 404 in the URL path, 422 naming the field in a query parameter
or a JSON body (`validated`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import orjson
from flask import Flask, abort, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from api.budget import BudgetPool
from api.changes import apply_changes, latest
from api.keys import KeyCache, audit_failed_authentication
from api.throttle import FailureThrottle
from api.person_data import index_frames
from api.reference import reference_secret
from api.store import Store, open_store
from matching.model import MatcherModel
from matching.query import field_messages
from matching.resolve import Resolver
from scoring.rules import Rules

MAX_BODY = 1 << 20
NUL = "\x00"
NUL_MESSAGE = "must not contain a NUL character"
log = logging.getLogger("briefing")


class FastJSON(DefaultJSONProvider):
    """Flask's JSON through orjson: answers are the hot path's largest cost after matching itself.

    Keys keep their insertion order (the audit log's canonical JSON is separate, in api.audit).
    """

    def dumps(self, obj, **kwargs) -> str:
        # OPT_NON_STR_KEYS: SQLAlchemy row keys are str subclasses, which orjson otherwise refuses as keys.
        return orjson.dumps(obj, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)


@dataclass
class Service:
    store: Store
    resolver: Resolver
    rules: Rules
    ranker: object | None
    versions: dict = field(default_factory=dict)
    budget_seconds: float = 0.25
    applied: int = 0                      # the last change (api.changes) this worker's index holds
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    keys: KeyCache | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))   # policy's "now" (tests freeze it)
    reference_key: bytes = b""            # keys the opaque record references responders see (api.reference)
    pool: BudgetPool = field(default_factory=BudgetPool)   # briefings' threads: bounded, never queued (api.budget)

    def __post_init__(self):
        self.keys = self.keys or KeyCache(self.store)

    def rebuild(self) -> None:
        """A fresh index from the store (after a bulk load through another process)."""
        frame, people = index_frames(self.store)
        self.resolver = Resolver(self.resolver.base_model).fit(frame, people)


def create_app(db: str, models_dir: str | Path = "models", budget_ms: float = 250,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """The WSGI application over the store at `db` with the models in `models_dir`.

    `budget_ms`: how long a briefing may take before it answers `unavailable`. `clock`: the time at
    which the access policy judges consents and expiries (default: the server's UTC clock). It is
    fixed here, when the app is made, so no request can choose it; tests pass a frozen one.
    """
    models = Path(models_dir)
    store = open_store(db).create()
    matcher = MatcherModel.load(models / "matcher.json")
    with store.engine.connect() as connection:
        applied = latest(connection)          # read first: later changes are re-applied, which is harmless
    frame, people = index_frames(store)
    resolver = Resolver(matcher).fit(frame, people)
    resolver.resolve({"given_name": "Warm", "family_name": "Up", "approx_age": 40})   # first-call costs paid here
    ranker = None
    if (models / "ranker.json").exists():     # JSON, digest-checked; a tampered file stops the start (ValueError)
        from scoring.ranker import ItemScorecard

        ranker = ItemScorecard.load(models / "ranker.json")
    elif (models / "ranker.joblib").exists():
        log.warning("%s is ignored: a ranker is loaded only from ranker.json, never unpickled; retrain it with "
                    "`briefing train-ranker`", models / "ranker.joblib")
    rules = Rules.load()
    versions = {"matcher": matcher.version, "policy": rules.version,
                "ranker": ranker.file_sha256_[:12] if ranker else None}
    app = Flask("briefing")
    app.json = FastJSON(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["briefing"] = Service(store, resolver, rules, ranker, versions, budget_ms / 1000.0, applied,
                                       reference_key=reference_secret(store), **({"clock": clock} if clock else {}))

    from api.briefings import blueprint as briefings
    from api.feeds import blueprint as feeds
    from api.fhir import blueprint as fhir
    from api.openapi import blueprint as openapi
    from api.review_api import blueprint as review_api
    from api.review_web import blueprint as review_web
    from api.oversight import blueprint as oversight
    from api.withdraw import blueprint as withdraw

    for blueprint in (briefings, feeds, fhir, oversight, withdraw, openapi, review_api, review_web):
        app.register_blueprint(blueprint)
    app.add_url_rule("/healthz", "healthz", lambda: jsonify(status="ok"))
    service = app.extensions["briefing"]
    app.add_url_rule("/readyz", "readyz", lambda: jsonify(status="ready", records=service.resolver.index_.n_records))
    app.before_request(_refuse_nul_in_url)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app


def authorise(roles) -> object:
    """The principal of the request's bearer key, if its role is one of `roles`; else 401 / 403.

    Pending changes (api.changes) are applied first, so a key revoked anywhere is refused here. A refused
    key is audited (`auth_failed`) while the client is under the failure throttle's limits, then once as
    `auth_lockout` when it goes over; past that it gets 429 unaudited (api/keys.py, api/throttle.py).
    """
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    service = current_app.extensions["briefing"]
    apply_changes(service)                # writes and key revocations through other workers and the CLI
    principal = service.keys.authenticate(key.strip()) if scheme == "Bearer" else None
    if principal is None:
        address = request.remote_addr or "-"
        verdict = service.throttle.record(header, address)
        if verdict.wait is None or verdict.lockout:
            audit_failed_authentication(service.store, header, address, request.path, verdict.lockout, verdict.wait)
        if verdict.wait is not None:
            response = jsonify(error="too_many_requests", message="too many failed authentications; retry later")
            response.status_code, response.headers["Retry-After"] = 429, str(int(verdict.wait))
            abort(response)
        abort(401, description="a valid API key is required: Authorization: Bearer <key>")
    if principal.role not in roles:
        abort(403, description=f"role {principal.role.value} may not call this endpoint")
    g.principal = principal
    return principal


class _Invalid(HTTPException):
    code = 422

    def __init__(self, fields: dict[str, str], description: str = "the request body does not match the schema"):
        super().__init__(description=description)
        self.fields = fields


def validated(model):
    """The JSON body parsed as `model`; 400 if it is not JSON, 422 with field messages if it does not fit.

    The body is parsed by `FastJSON` (orjson), whose depth limit (1,024) turns deeply nested JSON into
    a 400 rather than a RecursionError (tests/adversarial/test_input_attacks.py): keep a depth-limited parser.
    A NUL character in any string or key is a 422 naming each field path that holds one (`nul_locations`):
    PostgreSQL text cannot store U+0000, so it would otherwise fail in the store as a 500.
    """
    if (request.content_length or 0) > current_app.config["MAX_CONTENT_LENGTH"]:
        abort(413, description=f"the body is over {current_app.config['MAX_CONTENT_LENGTH']:,} bytes")
    data = request.get_json(silent=True, force=True)
    if data is None:
        abort(400, description="the body must be a JSON object (Content-Type: application/json)")
    holding = [".".join(str(p) for p in loc) or "body" for loc in nul_locations(data)]
    if holding:
        raise _Invalid(dict.fromkeys(holding, NUL_MESSAGE))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


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


def _refuse_nul_in_url() -> None:
    """`before_request`: a NUL (%00) in the URL path names nothing (404); in a query parameter, 422 naming it.

    Stores cannot hold U+0000 (PostgreSQL raises DataError), so such a value never reaches a query."""
    if NUL in request.path:
        abort(404, description="nothing has a name holding a NUL character")
    holding = {name.replace(NUL, "\\u0000"): NUL_MESSAGE for name, value in request.args.items(multi=True)
               if NUL in name or NUL in value}
    if holding:
        raise _Invalid(holding, "the query parameters do not match the schema")


def invalid(exc: ValidationError) -> HTTPException:
    """A 422 carrying pydantic's errors as {field: message}."""
    return _Invalid(field_messages(exc))


def unprocessable(fields: dict[str, str]) -> HTTPException:
    """A 422 for a rule the schema cannot state (e.g. a time out of range), as {field: message}."""
    return _Invalid(fields)


def _http_error(exc: HTTPException):
    body = {"error": exc.name.lower().replace(" ", "_"), "message": exc.description}
    if isinstance(exc, _Invalid):
        body["fields"] = exc.fields
    return jsonify(body), exc.code


def _unexpected(exc: Exception):
    log.exception("unhandled error")
    return jsonify(error="internal_error", message="the request failed; it has been logged"), 500
