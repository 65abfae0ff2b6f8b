"""The sessions of the pages under `/review`: sign-in with a steward's or a program's key, a signed cookie,
CSRF, idle timeout, headers.

- **Who signs in, and where they land**: two roles share the sign-in page, each with its own pages
  (`HOMES`): a steward lands on the review queue (api/web/review/pages.py), a receiving program's
  `provider` lands on its inbox (api/web/review/inbox.py). Each blueprint is installed for one role
  (`install(blueprint, role)`); a signed-in principal of the other role never reaches its pages: a GET
  is sent to the principal's own home with a message, any other method is refused 403. Sign-out works
  for both. After sign-in, the `next` page asked for is honoured only when it belongs to the
  principal's role (`role_of_path`); otherwise the principal lands on its home.
- **Secret**: the cookie is signed with `BRIEFING_SESSION_SECRET` if set, else with a random secret
  stored in the `settings` table on first use, so every gunicorn worker and every replica over the
  same store signs and accepts the same cookies. `create_app` (api/web/app.py) sets the secret, the
  cookie settings and `ReviewSessions` on the application.
- **Cookie**: Flask's signed cookie session, named `briefing_review`, path `/review` (never sent to
  the API), HttpOnly, SameSite=Strict, and Secure when the request came over HTTPS (or always /
  never: `REVIEW_COOKIE_SECURE` in the app's config, or `BRIEFING_SECURE_COOKIES=1|0`). It holds the
  SHA-256 of the signed-in key (what `api_keys` stores, so never the key itself), the principal's
  name, the session id, the CSRF token and the time of the last request.
- **Server-side sessions**: a signed cookie alone would stay valid after sign-out (a copy of it
  could be replayed), so sign-in also records the session in the store's `review_sessions` table
  (the SHA-256 of a random session id, the principal, when it started and was last seen) and the
  cookie works only while that row exists. Sign-out, the end of a session for any reason and a
  new sign-in in the same browser delete the row, so a copied cookie is refused from then on by
  every worker and replica over the store. Rows idle for longer than `IDLE_SECONDS` (plus the
  minute `seen_at` may lag) are refused too and purged at each sign-in, so the table stays small.
- **Each request** needs that row and looks the key up by its hash: a revoked or expired key, or
  one whose role may no longer sign in, ends the session; so does 30 minutes without a request
  (`IDLE_SECONDS`, measured with `now()`, which tests replace). Either way the principal is sent to
  the sign-in page with a message.
- **CSRF**: every POST under `/review` (sign-in included) must carry the session's token in the
  `csrf_token` field, else 400 with a page saying so.
- **Sign-in** accepts only steward and provider keys; a refused sign-in is counted by the service's failure
  throttle and audited (`review_sign_in_refused`, reason `unknown_key` or `role_may_not_sign_in`; once
  over the throttle's limit it is answered 429 and not audited, so a flood cannot grow the log without
  bound); sign-in and sign-out are audited too, with the principal's role and agency.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from functools import partial
from urllib.parse import urlsplit

from flask import (Flask, abort, current_app, flash, g, has_request_context, redirect, render_template, request, session,
                   url_for)
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import delete, insert, select, update
from werkzeug.exceptions import HTTPException

from api.service.audit import audit_fields, record_event
from api.service.changes import apply_changes
from api.service.keys import key_digest, principal_by_digest
from api.service.store import Store, review_sessions, stored_secret
from api.web.context import service
from scoring.item import Principal, Role

IDLE_SECONDS = 30 * 60
TOUCH_SECONDS = 60          # a live session's `seen_at` is rewritten at most once a minute
SECRET_SETTING = "review_session_secret"
COOKIE_NAME = "briefing_review"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
log = logging.getLogger("briefing")

#: The roles that may sign in, each with the endpoint it lands on.
HOMES = {Role.steward: "review_web.queue_page", Role.provider: "review_inbox.inbox"}
#: What the sign-in page says to someone who reached a role's pages without a session.
PROMPTS = {Role.steward: "Sign in with your steward key to review matches.",
           Role.provider: "Sign in with your program's provider key to see its referrals."}
PAGES_OF = {Role.steward: "the stewards' match review", Role.provider: "a receiving program's inbox"}
#: Endpoints of the review blueprint that need no session (sign-out needs one, of either role).
OPEN_ENDPOINTS = ("review_web.login", "review_web.static", "review_web.unknown")


def now() -> float:
    """Seconds since the epoch: the sessions' clock (tests replace it to move time on)."""
    return time.time()


def session_secret(store: Store) -> str:
    """The secret that signs session cookies: the environment's, else the store's (created once, by whoever is first)."""
    return stored_secret(store, SECRET_SETTING, "BRIEFING_SESSION_SECRET")


class ReviewSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure when the request is HTTPS unless configured either way, opened only
    for the pages under the cookie's path (the only ones that use a session): any other request gets Flask's null
    session without reading a cookie or deriving the signing key, a tenth of an API request's work in the HTTP stack.
    A null session reads as empty and raises `RuntimeError` when written: a `flash()` outside /review fails loudly."""

    def open_session(self, app: Flask, request):
        path, cookie_path = request.root_path + request.path, self.get_cookie_path(app).rstrip("/")
        if path != cookie_path and not path.startswith(cookie_path + "/"):     # the browser's rule for the cookie
            return None                       # Flask makes it a null session
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        configured = app.config.get("REVIEW_COOKIE_SECURE")
        if configured is not None:
            return bool(configured)
        return has_request_context() and request.is_secure


def member_by_digest(store: Store, digest: str) -> Principal | None:
    """The steward or provider whose key hashes to `digest`, if that key is still valid (not revoked, not expired)."""
    principal = principal_by_digest(store, digest)
    return principal if principal is not None and principal.role in HOMES else None


def role_of_path(path: str) -> Role:
    """Whose pages a path under /review is: the inbox's are the providers', every other one the stewards'."""
    inbox = url_for(HOMES[Role.provider])
    return Role.provider if path == inbox or path.startswith(inbox + "/") else Role.steward


def landing(principal: Principal, requested: str) -> str:
    """Where `principal` goes after sign-in: the page it asked for when that page is its role's, else its home."""
    if requested and role_of_path(urlsplit(requested).path) == principal.role:
        return requested
    return url_for(HOMES[principal.role])


def _session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start_session(store: Store, principal: str) -> str:
    """Record a new live session of `principal` (purging long-idle ones); its id, for the cookie."""
    session_id = secrets.token_urlsafe(32)
    at = now()
    with store.begin() as connection:
        connection.execute(delete(review_sessions).where(review_sessions.c.seen_at < at - IDLE_SECONDS - TOUCH_SECONDS))
        connection.execute(insert(review_sessions).values(session_hash=_session_hash(session_id), principal=principal,
                                                          started_at=at, seen_at=at))
    return session_id


def end_session(store: Store, session_id: str | None) -> None:
    """Forget a session: its cookie, and every copy of it, is refused from now on."""
    if session_id:
        with store.begin() as connection:
            connection.execute(delete(review_sessions).where(review_sessions.c.session_hash == _session_hash(session_id)))


def live_session(store: Store, session_id: str | None, principal: str | None) -> bool:
    """Whether `session_id` is a live session of `principal` (not ended, not idle); keeps its `seen_at` current."""
    if not session_id:
        return False
    key = _session_hash(session_id)
    with store.engine.connect() as connection:
        row = connection.execute(select(review_sessions).where(review_sessions.c.session_hash == key)).mappings().first()
    at = now()
    if row is None or row["principal"] != principal or at - row["seen_at"] > IDLE_SECONDS + TOUCH_SECONDS:
        return False
    if at - row["seen_at"] > TOUCH_SECONDS:
        with store.begin() as connection:
            connection.execute(update(review_sessions).where(review_sessions.c.session_hash == key).values(seen_at=at))
    return True


def csrf_token() -> str:
    """This session's CSRF token (made on first use); every POST form carries it as `csrf_token`."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    sent, expected = request.form.get("csrf_token", ""), session.get("csrf", "")
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, description="This form's security token is missing or does not belong to your session, so nothing "
                               "was done. Go back, reload the page and try again (or sign in again).")


def safe_next(target: str | None, default: str) -> str:
    """`target` if it is a path on this site under /review, else `default` (no open redirects)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/review") or "\\" in target:
        return default
    return target


def _end(message: str):
    """End this browser's session and send it to sign in (back to this page afterwards, for a GET)."""
    end_session(service().store, session.get("sid"))
    session.clear()
    flash(message, "error")
    return redirect(url_for("review_web.login", next=request.full_path.rstrip("?") if request.method == "GET" else None))


def before_request(role: Role):
    """CSRF on every POST; then, except on the sign-in page and static files, a live session of a principal
    of `role`, the role the blueprint's pages are for (one of the other role is sent home, or refused 403)."""
    if request.method == "POST":
        check_csrf()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    digest = session.get("key")
    if not digest:
        return _end(PROMPTS[role]) if request.endpoint != "review_web.logout" \
            else redirect(url_for("review_web.login"))
    if now() - float(session.get("seen", 0)) > IDLE_SECONDS:
        return _end("Your session ended after 30 minutes without activity. Sign in again to continue.")
    current = service()
    if not live_session(current.store, session.get("sid"), session.get("name")):
        return _end("Your session has ended (signed out, or replaced by a newer sign-in). Sign in again to continue.")
    principal = member_by_digest(current.store, digest)
    if principal is None:
        return _end("Your key is no longer valid (revoked or expired), so your session has ended.")
    g.principal = principal
    session["seen"] = now()
    if principal.role != role and request.endpoint != "review_web.logout":
        if request.method not in ("GET", "HEAD"):
            abort(403, description=f"This is part of {PAGES_OF[role]}, which your key may not use.")
        flash(f"That page is part of {PAGES_OF[role]}, which your key may not use: here are your own pages.", "error")
        return redirect(url_for(HOMES[principal.role]))
    return None


def _audit(action: str, payload: dict, principal: str | None = None) -> None:
    record_event(service().store, action, {"address": request.remote_addr or "-", **payload}, principal=principal)


def login():
    """GET: the sign-in form. POST: sign in with a steward's or a provider's key (refusals throttled and audited);
    the principal lands on `next` when that page is its role's, else on its home (`landing`)."""
    requested = safe_next(request.values.get("next"), "")
    if request.method == "GET":
        store = service().store
        signed_in = (member_by_digest(store, session["key"]) if session.get("key")
                     and live_session(store, session.get("sid"), session.get("name")) else None)
        if signed_in is not None:
            return redirect(landing(signed_in, requested))
        csrf_token()
        return render_template("review/login.html", next=requested)
    key = request.form.get("key", "").strip()
    current = service()
    apply_changes(current)                    # revocations made through other workers or the CLI
    principal = current.keys.authenticate(key) if key else None
    if principal is None or principal.role not in HOMES:
        wait = current.throttle.failed(key, request.remote_addr or "-")
        if wait is not None:                  # not audited one by one: a flood must not grow the log without bound
            g.retry_after = int(wait)
            abort(429, description=f"Too many refused sign-ins from here. Try again in {int(wait)} seconds.")
        reason = "role_may_not_sign_in" if principal is not None else "unknown_key"
        _audit("review_sign_in_refused", {"reason": reason, "role": principal.role.value if principal else None},
               principal.name if principal else None)
        message = ("That key belongs to a role that may not review matches or work a program's inbox: sign in "
                   "with a steward's or a program's provider key." if principal is not None
                   else "That key was not accepted. Check it and try again.")
        return render_template("review/login.html", next=requested, error=message), 401
    end_session(current.store, session.get("sid"))   # a new session: this browser's previous one ends,
    session.clear()                                   # and nothing is carried over from before sign-in
    session.update(sid=start_session(current.store, principal.name), key=key_digest(key), name=principal.name,
                   started=now(), seen=now())
    csrf_token()
    _audit("review_sign_in", audit_fields(principal, "role", "agency"), principal.name)
    return redirect(landing(principal, requested))


def logout():
    principal = g.get("principal")
    if principal is not None:
        _audit("review_sign_out", audit_fields(principal), principal.name)
    end_session(service().store, session.get("sid"))
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("review_web.login"))


def security_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.endpoint != "review_web.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def http_error(exc: HTTPException):
    """An HTML page for an HTTP error under /review (never a stack trace)."""
    response = current_app.make_response((render_template("review/error.html", code=exc.code, title=exc.name,
                                                           message=exc.description), exc.code))
    if exc.code == 429:
        response.headers["Retry-After"] = str(g.get("retry_after", 60))
    return response


def unexpected(exc: Exception):
    log.exception("unhandled error in the review pages")
    return render_template("review/error.html", code=500, title="Something went wrong",
                           message="The page could not be shown. The error has been logged; try again."), 500


def install(blueprint, role: Role = Role.steward, sign_in: bool = True) -> None:
    """Wire the session rules into a blueprint whose pages are for `role`; `sign_in`: it also serves the shared
    sign-in and sign-out pages (the stewards' blueprint does; the inbox's, under /review/inbox, does not)."""
    blueprint.before_request(partial(before_request, role))
    blueprint.after_request(security_headers)
    blueprint.register_error_handler(HTTPException, http_error)
    blueprint.register_error_handler(Exception, unexpected)
    if sign_in:
        blueprint.add_url_rule("/login", "login", login, methods=["GET", "POST"])
        blueprint.add_url_rule("/logout", "logout", logout, methods=["POST"])
    blueprint.context_processor(lambda: {"csrf_token": csrf_token, "principal": g.get("principal")})
