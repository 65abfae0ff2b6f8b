"""A receiving program's inbox under `/review/inbox`: its open referrals and follow-up tasks, and its steps on them.

Issue 19, item 4. A program's staff sign in on the shared sign-in page with a `provider` key (the key's
agency is the program's name) and land here; sign-in, sessions, CSRF, idle timeout and headers are
api/web/review/session.py's, installed on this blueprint for the `provider` role, so a steward never reaches
these pages and a provider never reaches the stewards' (the cookie's path is /review, hence the prefix).

- `GET /review/inbox`: the program's open referrals and tasks (requested, accepted, in progress), warm
  hand-offs first, then follow-ups, each group by due time; each row shows the reason, urgency, due time,
  the grade the person was matched at and, when that grade is not `certain` or a steward's split flagged the
  referral for identity review, a notice to confirm identity before contact. Below them, the program's
  webhook deliveries: how many were delivered and are waiting, and each parked one with its last error.
- `GET /review/inbox/<id>`: one referral as its program sees it (contact, note, the items that travel with
  it, its lifecycle) with a form for each step the program may take from its current status
  (scoring/referral.py `STEPS`): accept, decline (with the reason), confirm identity, log a contact
  attempt, engaged, close with an outcome, close as failed, the person declined.
- `POST /review/inbox/<id>/step`: one step through `take_step`; back to the referral with a message (a step
  the lifecycle refuses shows why).

Reads go through `referrals_for` / `referral_for` and steps through `take_step`
(api/service/referral_reads.py, api/service/referrals.py), which audit them (`referral_list`,
`referral_read`, `referral_<event>`); another program's referral is 404, as one that does not exist. No
inline script or style (the Content-Security-Policy allows none): the forms are plain buttons and labels,
usable by keyboard alone, the main steps with access keys.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from pydantic import ValidationError

from api.service.outbox import deliveries_of
from api.service.referral_reads import MAX_LIST, referral_for, referrals_for
from api.service.referrals import Step, take_step
from api.service.refusals import Conflict, NotFound
from api.service.store import MAX_ID
from api.web.context import service
from api.web.review import session as review_session
from scoring.item import Role
from scoring.referral import STEPS, Event, Outcome, Side, TaskStatus, Urgency

blueprint = Blueprint("review_inbox", __name__, url_prefix="/review/inbox", template_folder="templates")
review_session.install(blueprint, Role.provider, sign_in=False)

OPEN_STATUSES = (TaskStatus.requested, TaskStatus.accepted, TaskStatus.in_progress)


def _human(code: str | None) -> str:
    return "" if not code else code.replace("_", " ").replace("-", " ")


#: The program's steps, in the order the referral page offers them: (label, access key or "", what the note is for).
#: No access key on the steps that end a referral without an outcome, nor d, e or f (browsers keep Alt+D/E/F).
STEP_FORMS = {
    Event.accept: ("Accept", "a", None),
    Event.reject: ("Decline", "", "Why the program declines (required)"),
    Event.confirm_identity: ("Identity confirmed", "i", "How identity was confirmed (optional)"),
    Event.contact_attempted: ("Log a contact attempt", "c", "What happened (optional)"),
    Event.engaged: ("Engaged", "g", "Note (optional)"),
    Event.complete: ("Close with this outcome", "o", "Closing note (optional)"),
    Event.fail: ("Close as failed", "", "Why it failed (optional)"),
    Event.person_declined: ("The person declined", "", "Note (optional)"),
}
OUTCOMES = {o.value: _human(o.value).capitalize() for o in Outcome}
NOTE_REQUIRED = frozenset({Event.reject})
MAX_NOTE = 1000


def allowed_steps(status: str) -> list[Event]:
    """The steps the receiving program may take on a referral in `status`, in `STEP_FORMS`' order."""
    return [event for event in STEP_FORMS
            if Side.program in STEPS[event].sides and TaskStatus(status) in STEPS[event].from_statuses]


def identity_confirmed(referral: dict) -> bool:
    return any(e["event"] == Event.confirm_identity.value for e in referral.get("events", ()))


def needs_identity_check(referral: dict) -> bool:
    """Whether the program must confirm who the person is before contact: flagged for identity review by a
    steward's split since its last confirmation (a confirmation clears the flag), or matched below `certain`
    and never confirmed."""
    if referral["identity_review"]:
        return True
    return referral["grade"] != "certain" and not identity_confirmed(referral)


def _parse(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


@blueprint.app_template_filter("utc_minute")
def _utc_minute(text: str | None) -> str:
    """A stored UTC time as `2026-01-05 15:00 UTC`."""
    moment = _parse(text)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else (text or "—")


def _row(referral: dict, now: datetime) -> dict:
    """What a row of the inbox shows of a referral."""
    due = _parse(referral["due_by"])
    warm = referral["urgency"] == Urgency.warm_handoff.value
    return {**referral, "warm": warm, "overdue": not warm and due is not None and due < now,
            "identity_check": needs_identity_check(referral),
            "from": referral["referrer_agency"] if referral["opened_by"] == "responder" else "Follow-up rule"}


@blueprint.get("/")
def inbox_slash():
    return redirect(url_for("review_inbox.inbox"))


@blueprint.get("")
def inbox():
    """The program's open referrals and tasks: warm hand-offs first, then follow-ups, each by due time."""
    current, principal = service(), g.principal
    now = current.clock()
    found, truncated = [], False
    for status in OPEN_STATUSES:              # by status, so closed referrals never crowd open ones out of the limit
        shown = referrals_for(current.store, principal, current.reference_key, now, status=status.value)
        truncated = truncated or len(shown) >= MAX_LIST
        found.extend(shown)
    rows = sorted((_row(r, now) for r in found), key=lambda r: (not r["warm"], r["due_by"] or "", r["id"]))
    return render_template("review/inbox.html", program=principal.agency, total=len(rows), truncated=truncated,
                           warm=[r for r in rows if r["warm"]], follow_ups=[r for r in rows if not r["warm"]],
                           limit=MAX_LIST, human=_human, deliveries=deliveries_of(current.store, principal.agency))


@blueprint.get(f"/<int(max={MAX_ID}):referral_id>")
def referral_page(referral_id: int):
    """One referral as its program sees it, with a form for each step its status allows."""
    current = service()
    try:
        referral = referral_for(current.store, g.principal, referral_id, current.reference_key, current.clock())
    except NotFound:
        abort(404, description=f"There is no referral {referral_id} in your program's inbox.")
    steps = [(event, *STEP_FORMS[event]) for event in allowed_steps(referral["status"])]
    return render_template("review/inbox_referral.html", referral=referral, steps=steps, outcomes=OUTCOMES,
                           identity_check=needs_identity_check(referral), confirmed=identity_confirmed(referral),
                           required=NOTE_REQUIRED, max_note=MAX_NOTE, human=_human)


def _step_from_form(form) -> Step | str:
    """The step the form asks for, or why it cannot be taken as asked."""
    event = form.get("event", "")
    if event not in {e.value for e in STEP_FORMS}:
        return "that is not a step this inbox offers."
    note = (form.get("note") or "").strip() or None
    if Event(event) in NOTE_REQUIRED and note is None:
        return f"“{STEP_FORMS[Event(event)][0]}” needs a note saying why."
    outcome = form.get("outcome") or None
    if Event(event) == Event.complete and outcome not in OUTCOMES:
        return "choose the outcome to close with."
    try:
        return Step(event=event, outcome=outcome if Event(event) == Event.complete else None, note=note)
    except ValidationError:
        return f"the note may be at most {MAX_NOTE} characters."


@blueprint.post(f"/<int(max={MAX_ID}):referral_id>/step")
def step(referral_id: int):
    """Take one step (`take_step`, audited); back to the referral with what was done, or why it was not."""
    back = redirect(url_for("review_inbox.referral_page", referral_id=referral_id))
    asked = _step_from_form(request.form)
    if isinstance(asked, str):
        flash(f"Not done: {asked}", "error")
        return back
    current = service()
    try:
        after = take_step(current.store, g.principal, referral_id, asked, current.clock())
    except NotFound:
        abort(404, description=f"There is no referral {referral_id} in your program's inbox.")
    except Conflict as refusal:
        flash(f"Not done: {refusal.message}.", "error")
        return back
    done = STEP_FORMS[asked.event][0]
    if asked.outcome is not None:
        done += f" ({OUTCOMES[asked.outcome.value].lower()})"
    flash(f"Done: {done}. Referral {referral_id} is now {_human(after.status.value)}"
          f"{', ' + _human(after.business_status.value) if after.business_status else ''}.", "info")
    return back
