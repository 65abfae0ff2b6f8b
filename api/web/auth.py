"""Authentication of API requests: `@requires(*roles)` on a view admits only a bearer key of one of those roles.

The decorated view gets the request's principal as its first argument (and on `flask.g.principal`). Pending
changes (api.service.changes) are applied first, so a key revoked anywhere is refused here. A refused key is
audited (`auth_failed`) while the client is under the failure throttle's limits, then once as `auth_lockout`
when it goes over; past that it gets 429 unaudited (api/service/keys.py, api/service/throttle.py).
Authentication comes before anything else a view checks, so a stranger learns nothing.
"""

from __future__ import annotations

from functools import wraps

from flask import abort, g, jsonify, request

from api.service.changes import apply_changes
from api.service.keys import audit_failed_authentication
from api.web.context import service
from scoring.item import Principal, Role


def authorise(roles) -> Principal:
    """The principal of the request's bearer key, if its role is one of `roles`; else 401 / 403 (429 when throttled)."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    current = service()
    apply_changes(current)                # writes and key revocations through other workers and the CLI
    principal = current.keys.authenticate(key.strip()) if scheme == "Bearer" else None
    if principal is None:
        address = request.remote_addr or "-"
        verdict = current.throttle.record(header, address)
        if verdict.wait is None or verdict.lockout:
            audit_failed_authentication(current.store, header, address, request.path, verdict.lockout, verdict.wait)
        if verdict.wait is not None:
            response = jsonify(error="too_many_requests", message="too many failed authentications; retry later")
            response.status_code, response.headers["Retry-After"] = 429, str(int(verdict.wait))
            abort(response)
        abort(401, description="a valid API key is required: Authorization: Bearer <key>")
    if principal.role not in roles:
        abort(403, description=f"role {principal.role.value} may not call this endpoint")
    g.principal = principal
    return principal


def requires(*roles: Role):
    """A view decorator: `authorise(roles)` before the view runs, which is called with the principal first."""
    allowed = frozenset(roles)

    def decorate(view):
        @wraps(view)
        def authorised(*args, **kwargs):
            return view(authorise(allowed), *args, **kwargs)
        authorised.roles = allowed        # who may call it, for docs/architecture.md's table (tests/test_architecture_doc.py)
        return authorised
    return decorate
