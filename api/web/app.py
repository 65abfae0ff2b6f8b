"""The Briefing web application: `create_app` builds the service and serves it over HTTP (Flask).

`create_app(db, models_dir)` builds the service (api.service.runtime: the store, the matcher, the ranker,
the rules and the resolver's index; `/readyz` answers 200 once that is done), registers every blueprint
and the error handling (api/web/errors.py: every error is JSON, never a stack trace), and configures the
app-wide settings: requests over 1 MiB get 413, JSON goes through orjson, and the stewards' pages get their
session secret and cookie (api/web/review/session.py). No module of the application imports this one back:
only its runners do (api/web/serve.py, the tests).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Callable

import orjson
from flask import Flask, jsonify
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

import models
from api.service.refusals import Refusal
from api.service.runtime import build_service
from api.service.store import Store
from api.web.briefings import blueprint as briefings
from api.web.context import EXTENSION
from api.web.errors import http_error, refuse_nul_in_url, refused, unexpected
from api.web.ids import AsciiInteger
from api.web.feeds import blueprint as feeds
from api.web.fhir import blueprint as fhir
from api.web.fhir_referrals import blueprint as fhir_referrals
from api.web.openapi import blueprint as openapi
from api.web.oversight import blueprint as oversight
from api.web.review.inbox import blueprint as review_inbox
from api.web.review.pages import blueprint as review_web
from api.web.review.session import COOKIE_NAME, ReviewSessions, session_secret
from api.web.referrals import blueprint as referrals
from api.web.review_api import blueprint as review_api
from api.web.withdraw import blueprint as withdraw

MAX_BODY = 1 << 20


class FastJSON(DefaultJSONProvider):
    """Flask's JSON through orjson: answers are the hot path's largest cost after matching itself.

    Keys keep their insertion order (the audit log's canonical JSON is separate, in api.service.audit).
    """

    def dumps(self, obj, **kwargs) -> str:
        # OPT_NON_STR_KEYS: SQLAlchemy row keys are str subclasses, which orjson otherwise refuses as keys.
        return orjson.dumps(obj, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)


def create_app(db: str, models_dir: str | Path = models.DIRECTORY, budget_ms: float = 250,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """The WSGI application over the store at `db` with the models in `models_dir`.

    `budget_ms`: how long a briefing may take before it answers `unavailable`. `clock`: the time at
    which the access policy judges consents and expiries (default: the server's UTC clock). It is
    fixed here, when the app is made, so no request can choose it; tests pass a frozen one.
    """
    service = build_service(db, models_dir, budget_ms, clock)
    app = Flask("briefing")
    app.json = FastJSON(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions[EXTENSION] = service
    app.url_map.converters["int"] = AsciiInteger
    _review_sessions(app, service.store)
    for blueprint in (briefings, referrals, feeds, fhir, fhir_referrals, oversight, withdraw, openapi, review_api,
                      review_web, review_inbox):
        app.register_blueprint(blueprint)
    app.add_url_rule("/healthz", "healthz", lambda: jsonify(status="ok"))
    app.add_url_rule("/readyz", "readyz", lambda: jsonify(status="ready", records=service.resolver.index_.n_records,
                                                          index=service.rebuilder.status().to_dict()))
    app.before_request(refuse_nul_in_url)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Refusal, refused)
    app.register_error_handler(Exception, unexpected)
    return app


def _review_sessions(app: Flask, store: Store) -> None:
    """The stewards' pages' session secret, cookie settings and session interface (api/web/review/session.py)."""
    app.secret_key = session_secret(store)
    app.config.update(SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_PATH="/review", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict")
    flag = os.environ.get("BRIEFING_SECURE_COOKIES", "").strip()
    app.config.setdefault("REVIEW_COOKIE_SECURE", None if flag == "" else flag not in ("0", "false", "no"))
    app.session_interface = ReviewSessions()
