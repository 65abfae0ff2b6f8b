"""Referrals and warm hand-offs: a responder refers the person a briefing resolved to a receiving program.

The lifecycle is scoring/referral.py's, the access rules scoring/referral_policy.py's; this module keeps them
in the store, each write and read in one transaction with its audit event:

- `register_program` (an admin, `briefing admin program add`): a receiving program is an agency whose
  `provider` keys work its referrals; whether it is a 42 CFR Part 2 program, and the public line responders
  are given for it.
- `create_referral`: the person is the one the referrer's agency resolved at that incident (`briefed_persons`,
  written with each briefing: a referral names an incident, never a person id, so no one can refer a person
  they were not briefed about). The basis is checked (`basis_refusal`), the items that may travel are chosen
  (`travels`) and their ids kept; audited `referral_created`; the program's webhook is told through the
  outbox, in the same transaction (api.service.outbox).
- `take_step`: one lifecycle event by a side that owns it, under the row's write lock; audited
  `referral_<event>`; a step by the referring side is queued for the program's webhook. Refusals are 409 (the lifecycle) or 404 (not yours: the same answer as no such referral).
- `referral_for` and `referrals_for` (api/service/referral_reads.py) answer reads.

Person moves (`follow_moves`, called wherever a steward's decision moves records): a merged-away person's
referrals move to the kept person; a split person's are flagged for identity review until the program confirms it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, bindparam, insert, select, update

from api.service.audit import append, audit_fields, record_event
from api.service.person_data import person_consents, person_items
from api.service.refusals import Conflict, FieldRefusal, NotFound
from api.service.store import (Store, briefed_persons, clusters, dialect_insert, locked_row, programs, referral_events,
                               referral_items, referrals, upsert)
from api.service.outbox import enqueue
from api.service.times import utc_text
from api.service.webhooks import hook_of
from scoring.item import ID_LENGTH, RESPONDERS, Principal, Role
from scoring.referral import (WORKING, Basis, BusinessStatus, Event, Outcome, ProgramKind, Reason, Refused, Side, State, TaskStatus, Urgency,
                              apply)
from scoring.referral_policy import GENERIC_PROGRAM, Program, basis_refusal, travels

NOT_YOURS = "no referral with this id is open to you"
MAX_FOLLOW_UP_HOURS = 24 * 30


class Contact(BaseModel):
    """How the program may reach the person, as the referrer knows it (never read from another agency's records)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    where: str | None = Field(default=None, max_length=300)


class NewReferral(BaseModel):
    """`POST /v1/referrals`: refer the person a briefing of your agency resolved at `incident_id` to `program`."""

    model_config = ConfigDict(extra="forbid")
    incident_id: str = Field(min_length=1, max_length=ID_LENGTH)
    program: str = Field(min_length=1, max_length=ID_LENGTH)
    reason: Reason
    urgency: Urgency
    due_within_hours: int | None = Field(default=None, ge=1, le=MAX_FOLLOW_UP_HOURS,
                                         description="follow_up only: the window the program has to make contact")
    basis: Basis
    consent_id: str | None = Field(default=None, min_length=1, max_length=ID_LENGTH,
                                   description="basis consent: the consent on file that names the program")
    agreement_note: str | None = Field(default=None, min_length=1, max_length=500,
                                       description="basis agreement: who witnessed the person's agreement, to what")
    contact: Contact | None = None
    note: str | None = Field(default=None, max_length=1000)

    def conditional_errors(self) -> dict[str, str]:
        """{field: message} for each field the urgency or basis needs and lacks, or is given but does not take
        (a schema cannot say it, so `create_referral` checks it and names the field)."""
        needs = {"due_within_hours": self.urgency == Urgency.follow_up, "consent_id": self.basis == Basis.consent,
                 "agreement_note": self.basis == Basis.agreement}
        errors = {}
        for name, needed in needs.items():
            given, of = getattr(self, name) is not None, "urgency" if name == "due_within_hours" else "basis"
            if needed and not given:
                errors[name] = f"required with {of} {getattr(self, of).value!r}"
            elif given and not needed:
                errors[name] = f"{of} {getattr(self, of).value!r} does not take it"
        return errors


class Step(BaseModel):
    """`POST /v1/referrals/<id>/events`: one lifecycle step."""

    model_config = ConfigDict(extra="forbid")
    event: Event
    outcome: Outcome | None = None
    note: str | None = Field(default=None, max_length=1000)


def register_program(store: Store, program: Program, by: str) -> None:
    """Add or update a receiving program (audited `program_registered`). Its name may be neither blank nor the
    generic team a hidden Part 2 program is shown as (GENERIC_PROGRAM), which would tell them apart."""
    if " ".join(program.name.split()).casefold() in ("", GENERIC_PROGRAM.casefold()):
        raise FieldRefusal({"name": f"a program needs a name of its own (not blank, not {GENERIC_PROGRAM!r})"})
    if not program.public_line.strip():
        raise FieldRefusal({"public_line": "a program needs the line responders are given to reach it"})
    row = {"name": program.name, "kind": program.kind.value, "part2": int(program.part2),
           "public_line": program.public_line, "created_at": utc_text(datetime.now().astimezone())}
    with store.begin() as connection:
        insert_ = dialect_insert(connection)
        connection.execute(insert_(programs).values(**row).on_conflict_do_update(
            index_elements=["name"], set_={k: row[k] for k in ("kind", "part2", "public_line")}))
        append(connection, "program_registered", {"by": by, **{k: row[k] for k in ("name", "kind", "part2")}},
               principal=by)


def program_of(row) -> Program:
    return Program(name=row.name, kind=ProgramKind(row.kind), part2=bool(row.part2), public_line=row.public_line)


def program_exists(store: Store, name: str) -> bool:
    """Whether a receiving program `name` is registered."""
    with store.engine.connect() as connection:
        return load_program(connection, name) is not None


def load_program(connection, name: str) -> Program | None:
    row = connection.execute(select(programs).where(programs.c.name == name)).first()
    return program_of(row) if row is not None else None


@dataclass(frozen=True)
class BriefedPerson:
    """Whom a responder's briefing at an incident resolved: the person a referral from that incident is about."""

    principal: Principal
    incident_id: str
    call_type: str
    received_at: datetime
    person_id: str
    grade: str
    request_id: str
    at: datetime


_BRIEFED = upsert(briefed_persons, ("principal", "incident_id"), [c.name for c in briefed_persons.columns])


def record_briefed_person(connection, briefed: BriefedPerson) -> None:
    """Keep `briefed` (a later briefing by the same principal at the same incident replaces it), in the
    briefing's audit transaction."""
    row = {"principal": briefed.principal.name, "incident_id": briefed.incident_id, "agency": briefed.principal.agency,
           "person_id": briefed.person_id, "grade": briefed.grade, "call_type": briefed.call_type,
           "received_at": utc_text(briefed.received_at), "request_id": briefed.request_id, "briefed_at": utc_text(briefed.at)}
    connection.execute(_BRIEFED, row)


def create_referral(store: Store, principal: Principal, request: NewReferral, now: datetime) -> int:
    """Store a referral (see the module docstring) and the items that travel with it; its id."""
    if errors := request.conditional_errors():
        raise FieldRefusal(errors)
    with store.begin() as connection:
        program = load_program(connection, request.program)
        if program is None:
            raise FieldRefusal({"program": f"no receiving program {request.program!r} is registered"})
        briefed = connection.execute(select(briefed_persons).where(
            briefed_persons.c.incident_id == request.incident_id, briefed_persons.c.agency == principal.agency)
            .order_by(briefed_persons.c.briefed_at.desc()).limit(1)).first()
        if briefed is None:
            raise FieldRefusal({"incident_id": "no briefing of your agency resolved a person at this incident"})
        items, consents = person_items(connection, briefed.person_id), person_consents(connection, briefed.person_id)
        consent = next((c for c in consents if c.consent_id == request.consent_id), None)
        refusal = basis_refusal(principal, request.basis, program, consent, now)
        if refusal is not None:
            raise FieldRefusal({"consent_id" if request.basis == Basis.consent else "basis": refusal})
        due = now if request.urgency == Urgency.warm_handoff else now + timedelta(hours=request.due_within_hours)
        stamp = utc_text(now)
        referral_id = connection.execute(insert(referrals).values(
            person_id=briefed.person_id, grade=briefed.grade, identity_review=0, incident_id=request.incident_id,
            call_type=briefed.call_type, program=program.name, opened_by="responder", referrer=principal.name, referrer_role=principal.role.value, referrer_agency=principal.agency,
            reason=request.reason.value, urgency=request.urgency.value, due_by=utc_text(due), basis=request.basis.value,
            consent_id=request.consent_id, agreement_note=request.agreement_note,
            contact=json.dumps(request.contact.model_dump(exclude_none=True)) if request.contact else None,
            note=request.note, status=TaskStatus.requested.value, created_at=stamp, updated_at=stamp)
        ).inserted_primary_key[0]
        chosen = sorted({i.item_id for i in items if travels(i, program, request.basis, consents, now)})
        if chosen:
            connection.execute(insert(referral_items), [{"referral_id": referral_id, "item_id": i} for i in chosen])
        _log_event(connection, referral_id, "requested", Side.referrer, principal, State(TaskStatus.requested),
                   request.note, stamp)
        _tell_program(connection, referral_id, program.name, "referral.requested", now)
        append(connection, "referral_created", {
            **audit_fields(principal, "agency", "role"), "referral_id": referral_id, "program": program.name,
            "incident_id": request.incident_id, "person_id": briefed.person_id, "grade": briefed.grade,
            "reason": request.reason.value, "urgency": request.urgency.value, "basis": request.basis.value,
            "consent_id": request.consent_id, "items_travelling": chosen}, principal=principal.name)
    return referral_id


_ENGAGED = select(programs).join(referrals, referrals.c.program == programs.c.name).where(
    referrals.c.person_id == bindparam("person_id"), referrals.c.status.in_([s.value for s in WORKING])).distinct()


def engaged_programs(connection, person_id: str) -> list[Program]:
    """The programs whose referral or task about the person is accepted or in progress (a statement built once:
    it is read by every briefing)."""
    return [program_of(r) for r in connection.execute(_ENGAGED, {"person_id": person_id}).all()]


def side_of(principal: Principal, row) -> Side | None:
    """Which side of referral `row` the principal is on, if any: the program's providers, the referrer's
    responders (a task a follow-up rule opened has no referring side: only its program sees it)."""
    if principal.role == Role.provider and principal.agency == row.program:
        return Side.program
    if principal.role in RESPONDERS and principal.agency == row.referrer_agency and row.opened_by == "responder":
        return Side.referrer
    return None


def take_step(store: Store, principal: Principal, referral_id: int, step: Step, now: datetime) -> State:
    """Apply one lifecycle event to a referral, under its row lock; the new state. Audited `referral_<event>`;
    a step on a referral that is not the principal's side's (NotFound) is audited `referral_refused`, one the
    lifecycle refuses (Conflict) `referral_step_refused`, each after the refused transaction rolled back."""
    who = {**audit_fields(principal, "agency", "role"), "referral_id": referral_id, "event": step.event.value}
    try:
        return _take_step(store, principal, referral_id, step, now)
    except NotFound:
        record_event(store, "referral_refused", who, principal=principal.name)
        raise
    except Conflict as refusal:
        record_event(store, "referral_step_refused", {**who, "reason": refusal.message}, principal=principal.name)
        raise


def _take_step(store: Store, principal: Principal, referral_id: int, step: Step, now: datetime) -> State:
    with store.begin() as connection:
        row = locked_row(connection, select(referrals).where(referrals.c.id == referral_id))
        side = side_of(principal, row) if row is not None else None
        if side is None:
            raise NotFound(NOT_YOURS)
        before = State(TaskStatus(row.status), BusinessStatus(row.business_status) if row.business_status else None)
        try:
            after = apply(before, step.event, side, step.outcome)
        except Refused as refusal:
            raise Conflict(str(refusal)) from None
        stamp = utc_text(now)
        confirmed = step.event == Event.confirm_identity        # clears a split's flag raised before it
        connection.execute(update(referrals).where(referrals.c.id == referral_id).values(
            status=after.status.value, business_status=after.business_status and after.business_status.value,
            outcome=after.outcome.value if after.outcome else row.outcome, updated_at=stamp,
            identity_review=0 if confirmed else row.identity_review))
        _log_event(connection, referral_id, step.event.value, side, principal, after, step.note, stamp)
        if side == Side.referrer:                   # the program knows its own steps
            _tell_program(connection, referral_id, row.program, f"referral.{step.event.value}", now)
        append(connection, f"referral_{step.event.value}", {
            **audit_fields(principal, "agency", "role"), "referral_id": referral_id, "side": side.value,
            "status_before": before.status.value, "status": after.status.value,
            "business_status": after.business_status and after.business_status.value,
            "outcome": after.outcome and after.outcome.value}, principal=principal.name)
    return after


def _tell_program(connection, referral_id: int, program: str, event: str, now: datetime) -> None:
    """Queue the event for the program's webhook, in this transaction (none for a program that polls)."""
    if hook_of(connection, program, now) is not None:
        enqueue(connection, referral_id, program, event, now)


def _log_event(connection, referral_id: int, event: str, side: Side, principal: Principal, state: State,
               note: str | None, stamp: str) -> None:
    connection.execute(insert(referral_events).values(
        referral_id=referral_id, event=event, side=side.value, principal=principal.name, status=state.status.value,
        business_status=state.business_status and state.business_status.value,
        outcome=state.outcome and state.outcome.value, note=note, at=stamp))


def follow_moves(connection, moves: list) -> None:
    """After records moved between persons (`(record_id, before, after)`, a steward's merge, split or undo): a
    person whose every record left, and to one person, was merged into it, and its referrals follow (and whom
    briefings resolved, so a later referral from those incidents names the kept person); a person
    that lost only some records was split, and its referrals are flagged for identity review, since the records
    that justified them may now be someone else's."""
    for before in dict.fromkeys(m[1] for m in moves):
        targets = {after for _, was, after in moves if was == before}
        still_there = connection.execute(select(clusters.c.record_id).where(clusters.c.person_id == before).limit(1)).first()
        if still_there is None and len(targets) == 1:
            after = targets.pop()
            connection.execute(update(referrals).where(referrals.c.person_id == before).values(person_id=after))
            connection.execute(update(briefed_persons).where(briefed_persons.c.person_id == before).values(person_id=after))
        else:
            connection.execute(update(referrals).where(and_(referrals.c.person_id == before,
                                                            referrals.c.identity_review == 0)).values(identity_review=1))
