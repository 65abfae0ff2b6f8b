"""Follow-up tasks: a briefing whose incident sets off a follow-up rule (scoring/followup.toml) opens a task.

A task is a referral (api.service.referrals) opened by a rule rather than a responder: `opened_by` is
`rule:<id>`, its basis `follow_up_rule`, its receiving program the registered program of the rule's kind (the
first by name if there are several; none registered, no task). Only the
program sees it (no responder is its referrer); it is due `due_within_hours` after the briefing. A task
carries the grade its person was resolved at, so the team confirms identity before contact, and only the
items that travel on no basis but the person's own registration (scoring/referral_policy.py `travels`).

Duplicates merge: a second incident about the same person within `merge_window_hours` of an open task from
the same rule is added to that task (an `incident_merged` event naming the incident) instead of opening
another. Everything is written in the briefing's own audit transaction (`record_briefing`), audited as
`follow_up_opened` or `follow_up_merged`, and the program's webhook is told through the outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from api.service.audit import append
from api.service.outbox import enqueue
from api.service.person_data import person_consents, person_items
from api.service.referrals import BriefedPerson, program_of
from api.service.store import programs, referral_events, referral_items, referrals
from api.service.times import utc_text
from api.service.webhooks import hook_of
from scoring.followup import FollowUpRule, FollowUpRules
from scoring.referral import OPEN, Basis, TaskStatus, Urgency
from scoring.referral_policy import travels

SYSTEM = "briefing:follow-up-rules"


def open_follow_ups(connection, rules: FollowUpRules, briefed: BriefedPerson, now: datetime) -> list[int]:
    """Open or merge the tasks the briefing `briefed` sets off (see the module docstring); their ids."""
    touched = []
    for rule in rules.firing(briefed.call_type, briefed.grade):
        row = connection.execute(select(programs).where(programs.c.kind == rule.program_kind.value)
                                 .order_by(programs.c.name).limit(1)).first()
        if row is None:                             # the county runs no such team: nothing to open
            continue
        merged = _open_task(connection, rule, row.name, briefed.person_id, now)
        if merged is not None:
            _merge(connection, merged, rule, rules.version, briefed, now)
            touched.append(merged)
        else:
            touched.append(_open(connection, rule, rules.version, program_of(row), briefed, now))
    return touched


def _open_task(connection, rule: FollowUpRule, program: str, person_id: str, now: datetime) -> int | None:
    since = utc_text(now - timedelta(hours=rule.merge_window_hours))
    return connection.execute(select(referrals.c.id).where(
        referrals.c.person_id == person_id, referrals.c.program == program, referrals.c.opened_by == f"rule:{rule.id}",
        referrals.c.status.in_([s.value for s in OPEN]), referrals.c.created_at >= since)
        .order_by(referrals.c.id.desc()).limit(1)).scalar()


def _merge(connection, task_id: int, rule: FollowUpRule, version: str, briefed: BriefedPerson, now: datetime) -> None:
    stamp = utc_text(now)
    status = connection.execute(select(referrals.c.status).where(referrals.c.id == task_id)).scalar()
    connection.execute(update(referrals).where(referrals.c.id == task_id).values(updated_at=stamp))
    connection.execute(insert(referral_events).values(
        referral_id=task_id, event="incident_merged", side="rule", principal=SYSTEM, status=status,
        note=f"incident {briefed.incident_id} ({briefed.call_type}, resolved {briefed.grade})", at=stamp))
    append(connection, "follow_up_merged", {"rule": rule.id, "rules_version": version, "task_id": task_id,
                                            "incident_id": briefed.incident_id, "person_id": briefed.person_id,
                                            "grade": briefed.grade}, principal=SYSTEM)


def _open(connection, rule: FollowUpRule, version: str, program, briefed: BriefedPerson, now: datetime) -> int:
    stamp = utc_text(now)
    task_id = connection.execute(insert(referrals).values(
        person_id=briefed.person_id, grade=briefed.grade, identity_review=0, incident_id=briefed.incident_id,
        call_type=briefed.call_type, program=program.name, opened_by=f"rule:{rule.id}", referrer=SYSTEM,
        referrer_agency=briefed.principal.agency, reason=rule.reason.value, urgency=Urgency.follow_up.value,
        due_by=utc_text(now + timedelta(hours=rule.due_within_hours)), basis=Basis.follow_up_rule.value,
        status=TaskStatus.requested.value, created_at=stamp, updated_at=stamp)).inserted_primary_key[0]
    items, consents = person_items(connection, briefed.person_id), person_consents(connection, briefed.person_id)
    chosen = sorted({i.item_id for i in items if travels(i, program, Basis.follow_up_rule, consents, now)})
    if chosen:
        connection.execute(insert(referral_items), [{"referral_id": task_id, "item_id": i} for i in chosen])
    connection.execute(insert(referral_events).values(
        referral_id=task_id, event="requested", side="rule", principal=SYSTEM, status=TaskStatus.requested.value,
        note=f"incident {briefed.incident_id} ({briefed.call_type}, resolved {briefed.grade})", at=stamp))
    if hook_of(connection, program.name, now) is not None:
        enqueue(connection, task_id, program.name, "task.requested", now)
    append(connection, "follow_up_opened", {
        "rule": rule.id, "rules_version": version, "task_id": task_id, "program": program.name,
        "incident_id": briefed.incident_id, "person_id": briefed.person_id, "grade": briefed.grade,
        "briefed_by": briefed.principal.name, "items_travelling": chosen}, principal=SYSTEM)
    return task_id
