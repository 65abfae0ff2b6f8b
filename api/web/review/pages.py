"""The stewards' web pages under `/review`: the queue, a pair, a person; server-rendered by Flask.

Sign-in, sessions, CSRF and headers are in api/web/review/session.py; the domain work (the queue in
api/review/queue.py; decisions, undo, split, merge and their audit events in api/review/decisions.py) is
the review domain's. This module turns requests into those calls and renders the answers, with two pure helpers the pair page is drawn with:
`diff_segments` (which characters of two values differ) and `weight_chart` (the comparison
weights as a waterfall of bars that ends at the total).

Opening a pair or a person page appends an audit event (`review_pair_read`, `review_person_read`,
with the persons shown as `candidates`, so "who saw this person" finds them); decisions, undo,
split and merge are audited by api.review.decisions. Every form posts with the session's CSRF token; the
pair page's keyboard shortcuts (y / n / u) are in static/review.js (no inline script:
the Content-Security-Policy allows none).
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, session, url_for
from markupsafe import Markup, escape

from api.review import decisions
from api.review import queue as review_queue
from api.service.store import MAX_ID, RECORD_FIELDS
from api.web.context import service
from api.web.review import session as review_session

blueprint = Blueprint("review_web", __name__, url_prefix="/review", template_folder="templates",
                      static_folder="static", static_url_path="/static")
review_session.install(blueprint)

PAGE_SIZE = 50
RECENT = 10
DECISIONS = {"match": "Match", "not_a_match": "Not a match", "unsure": "Unsure"}
REASONS = {reason: text[0].upper() + text[1:] for reason, text in review_queue.REASON_TEXT.items()}
STATUSES = {"open": "Open (waiting for a decision)", "unsure": "Marked unsure (second opinion wanted)",
            "decided": "Decided", "all": "All pairs"}


# ---- pure helpers -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    text: str
    changed: bool


DIFF_LIMIT = 500                 # characters per value that the pair page diffs character by character


def diff_segments(left: str | None, right: str | None, ignore_case: bool = True) -> tuple[list[Segment], list[Segment]]:
    """Each side cut into runs of characters the two values share and runs that differ.

    The segments of a side joined give that side back exactly; shared runs appear on both sides
    (the same characters, up to case when `ignore_case`: "Ibonne" and "IVONNE" differ only in b/V).
    """
    a, b = left or "", right or ""
    if len(a) > DIFF_LIMIT or len(b) > DIFF_LIMIT:      # SequenceMatcher is quadratic: long values are shown whole
        changed = a.casefold() != b.casefold() if ignore_case else a != b
        return [Segment(a, changed)] if a else [], [Segment(b, changed)] if b else []
    ours: list[Segment] = []
    theirs: list[Segment] = []
    fold = (lambda text: [c.casefold() for c in text]) if ignore_case else list
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, fold(a), fold(b), autojunk=False).get_opcodes():
        if i2 > i1:
            ours.append(Segment(a[i1:i2], tag != "equal"))
        if j2 > j1:
            theirs.append(Segment(b[j1:j2], tag != "equal"))
    return ours, theirs


def highlight(segments: list[Segment]) -> Markup:
    """HTML of one side: differing runs in <mark>, announced to screen readers as differences."""
    out = []
    for segment in segments:
        if segment.changed:
            out.append(Markup('<mark><span class="visually-hidden">[differs: </span>{}'
                              '<span class="visually-hidden">]</span></mark>').format(segment.text))
        else:
            out.append(escape(segment.text))
    return Markup("").join(out)


@dataclass(frozen=True)
class Bar:
    label: str
    level: str
    weight: float
    start: float          # cumulative weight before this bar
    end: float            # and after it
    x: float              # left edge in chart units
    width: float          # always >= 0; `weight`'s sign says which way it goes
    y: float


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    total: Bar
    zero_x: float
    width: float
    height: float
    row: float


def weight_chart(explanation: list[dict], width: float = 360.0, row: float = 28.0) -> Chart:
    """A waterfall: each comparison's weight as a bar starting where the previous one ended, then the total.

    Bars are placed on one linear scale over [min(0, every running sum), max(0, every running sum)] mapped
    to [0, width], so the signed widths of the bars add up to the total bar's width.
    """
    weights = [float(part.get("weight") or 0.0) for part in explanation]
    running = [0.0]
    for weight in weights:
        running.append(running[-1] + weight)
    low, high = min(running), max(running)
    span = (high - low) or 1.0

    def at(value: float) -> float:
        return (value - low) / span * width

    bars = []
    for k, (part, weight) in enumerate(zip(explanation, weights)):
        start, end = running[k], running[k + 1]
        bars.append(Bar(str(part.get("field", "")), str(part.get("level", "")), weight, start, end,
                        at(min(start, end)), abs(at(end) - at(start)), k * row))
    total = running[-1]
    total_bar = Bar("total", "", total, 0.0, total, at(min(0.0, total)), abs(at(total) - at(0.0)), len(bars) * row)
    return Chart(bars, total_bar, at(0.0), width, (len(bars) + 1) * row, row)


def record_rows(left: dict, right: dict) -> list[dict]:
    """The fields either record has, in the canonical order, each with both sides' highlighted values."""
    rows = []
    for name in RECORD_FIELDS:
        a, b = left.get(name), right.get(name)
        if a in (None, "") and b in (None, ""):
            continue
        ours, theirs = diff_segments(None if a is None else str(a), None if b is None else str(b))
        rows.append({"field": name, "label": name.replace("_", " "), "left": highlight(ours), "right": highlight(theirs),
                     "left_empty": a in (None, ""), "right_empty": b in (None, ""), "same": str(a) == str(b)})
    return rows


def _probability_arg(text: str | None, name: str, errors: list[str]) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        errors.append(f"{name} must be a number from 0 to 1; that filter was not applied.")
        return None
    return value


# ---- pages ----------------------------------------------------------------------------------------------------------

def _reviewer() -> str:
    return g.principal.name


@blueprint.app_template_filter("percent")
def _percent(value) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"


@blueprint.app_template_filter("signed")
def _signed(value) -> str:
    return f"{float(value):+.2f}"


@blueprint.get("/")
def queue_slash():
    return redirect(url_for("review_web.queue_page"))


@blueprint.get("")
def queue_page():
    errors: list[str] = []
    args = request.args
    reason = args.get("reason") or None
    if reason is not None and reason not in REASONS:
        errors.append("Unknown reason; that filter was not applied.")
        reason = None
    status = args.get("status") or "open"
    if status not in STATUSES:
        errors.append("Unknown status; showing open pairs.")
        status = "open"
    filters = review_queue.QueueFilters(
        reason=reason, agency=(args.get("agency") or "").strip() or None, status=status,
        min_probability=_probability_arg(args.get("min_probability"), "Lowest probability", errors),
        max_probability=_probability_arg(args.get("max_probability"), "Highest probability", errors))
    try:
        offset = max(0, int(args.get("offset", 0)))
    except ValueError:
        offset = 0
    current = service()
    entries, total = review_queue.queue(current.store, filters, limit=PAGE_SIZE, offset=offset)
    recent = decisions.recent_decisions(current.store, reviewer=_reviewer(), limit=RECENT)
    paging = {k: v for k, v in args.items() if k != "offset"}
    return render_template("review/queue.html", entries=entries, total=total, filters=filters, errors=errors,
                           recent=recent, offset=offset, page_size=PAGE_SIZE, reasons=REASONS, decisions=DECISIONS,
                           statuses=STATUSES, paging=paging)


@blueprint.get(f"/pairs/<int(max={MAX_ID}):pair_id>")
def pair_page(pair_id: int):
    try:
        detail = decisions.pair_detail(service(), pair_id)
    except KeyError:
        abort(404, description=f"There is no pair {pair_id} to review.")
    shown = ((detail.entry.person_id_l, detail.entry.record_id_l), (detail.entry.person_id_r, detail.entry.record_id_r))
    decisions.audit_read(service().store, "review_pair_read", {
        "pair_id": pair_id, "record_ids": [r for _, r in shown],
        "candidates": [{"person_id": p, "record_id": r} for p, r in shown if p]}, _reviewer())
    return render_template("review/pair.html", detail=detail, entry=detail.entry,
                           rows=record_rows(detail.left or {}, detail.right or {}),
                           chart=weight_chart(detail.explanation), decisions=DECISIONS, reasons=REASONS)


@blueprint.post(f"/pairs/<int(max={MAX_ID}):pair_id>/decision")
def decide_pair(pair_id: int):
    decision = request.form.get("decision", "")
    note = (request.form.get("note") or "").strip() or None
    if decision not in DECISIONS:
        abort(400, description="The decision must be Match, Not a match or Unsure.")
    try:
        result = decisions.decide(service(), pair_id, decision, _reviewer(), note)
    except KeyError:
        abort(404, description=f"There is no pair {pair_id} to review.")
    except ValueError as exc:
        flash(f"Not recorded: {exc}", "error")
        return redirect(url_for("review_web.pair_page", pair_id=pair_id))
    session["last_decision"] = {"id": result.decision_id, "pair": pair_id, "decision": DECISIONS[decision]}
    flash(f"Recorded “{DECISIONS[decision]}” for pair {pair_id}.", "info")
    if result.next_pair_id is not None:
        return redirect(url_for("review_web.pair_page", pair_id=result.next_pair_id))
    flash("That was the last pair in the queue.", "info")
    return redirect(url_for("review_web.queue_page"))


def _undo(undo, missing: str, undone) -> Response:
    """Run `undo()`; 404 with `missing` when there is nothing to undo, a flash of why when it is refused, else a flash
    of `undone(result)`; then back to where the steward came from."""
    back = review_session.safe_next(request.form.get("back"), url_for("review_web.queue_page"))
    try:
        result = undo()
    except KeyError:
        abort(404, description=missing)
    except ValueError as exc:
        flash(f"Not undone: {exc}", "error")
        return redirect(back)
    flash(undone(result), "info")
    return redirect(back)


@blueprint.post(f"/decisions/<int(max={MAX_ID}):decision_id>/undo")
def undo_decision(decision_id: int):
    def undone(result) -> str:
        if (session.get("last_decision") or {}).get("id") == decision_id:
            session.pop("last_decision")
        return f"Undone: the decision on pair {result.pair_id} is withdrawn and the pair is back in the queue."
    return _undo(lambda: decisions.undo(service(), decision_id, _reviewer()),
                 f"There is no decision {decision_id}.", undone)


@blueprint.get("/persons/<person_id>")
def person_page(person_id: str):
    found = decisions.person_records(service().store, person_id)
    if not found:
        abort(404, description=f"There is no person {person_id}.")
    decisions.audit_read(service().store, "review_person_read", {
        "person_id": person_id, "records": [r["record_id"] for r in found],
        "candidates": [{"person_id": person_id, "record_id": r["record_id"]} for r in found]}, _reviewer())
    events = [e for e in decisions.recent_person_events(service().store, limit=RECENT)
              if person_id in (e["person_id"], e["related_person_id"])]
    return render_template("review/person.html", person_id=person_id, records=found, fields=RECORD_FIELDS, events=events)


@blueprint.post(f"/person-events/<int(max={MAX_ID}):event_id>/undo")
def undo_person_event(event_id: int):
    return _undo(lambda: decisions.undo_person_event(service(), event_id, _reviewer()),
                 f"There is no merge or split {event_id}.",
                 lambda done: f"Undone: the {done['kind']} is withdrawn and its records are back where they were.")


@blueprint.post("/persons/<person_id>/split")
def split_person(person_id: str):
    record_id = request.form.get("record_id", "")
    note = (request.form.get("note") or "").strip() or None
    try:
        done = decisions.split_record(service(), person_id, record_id, _reviewer(), note)
    except KeyError as exc:
        abort(404, description=f"Not found: {exc.args[0] if exc.args else record_id}")
    except ValueError as exc:
        flash(f"Not split: {exc}", "error")
        return redirect(url_for("review_web.person_page", person_id=person_id))
    flash(f"Record {done['record_id']} now belongs to a new person, {done['to_person_id']}.", "info")
    return redirect(url_for("review_web.person_page", person_id=person_id))


@blueprint.post("/persons/<person_id>/merge")
def merge_person(person_id: str):
    other = (request.form.get("other_person_id") or "").strip()
    note = (request.form.get("note") or "").strip() or None
    if not other:
        flash("Not merged: enter the id of the person to merge with.", "error")
        return redirect(url_for("review_web.person_page", person_id=person_id))
    try:
        done = decisions.merge_persons(service(), person_id, other, _reviewer(), note)
    except KeyError as exc:
        flash(f"Not merged: no such person ({exc.args[0] if exc.args else other}).", "error")
        return redirect(url_for("review_web.person_page", person_id=person_id))
    except ValueError as exc:
        flash(f"Not merged: {exc}", "error")
        return redirect(url_for("review_web.person_page", person_id=person_id))
    flash(f"Merged: person {done['merged_person_id']} is now part of {done['kept_person_id']} "
          f"({done['records_moved']} record(s) moved).", "info")
    return redirect(url_for("review_web.person_page", person_id=done["kept_person_id"]))


@blueprint.route("/<path:unknown>", methods=["GET", "POST"])
def unknown(unknown: str):
    abort(404, description="There is no such page.")
