"""Referrals: the vocabularies and the lifecycle of a referral from a responder to a receiving program.

The lifecycle is FHIR's closed-loop referral (HL7 SDOH Clinical Care IG, `SDOHCC-TaskForReferralManagement`):
a `ServiceRequest` says what is asked, and a `Task` whose `status` follows FHIR TaskStatus tracks it:

    requested → accepted | rejected;  accepted → in-progress;  accepted | in-progress → completed | failed;
    requested | accepted | in-progress → cancelled

with a business status for the steps in between (`contact_attempted`, `engaged`, `identity_confirmed`) and an
outcome on completion. Each step is an `Event` that one side may take: the receiving program (its `provider`
keys) accepts, rejects, logs contacts and closes; the referring agency's responders cancel what they sent;
either side records that the person declined or withdrew agreement, which cancels the referral.

`apply` is the one place the table below is read: it answers the next state or raises `Refused` naming why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ProgramKind(str, Enum):
    mobile_crisis = "mobile_crisis"
    case_management = "case_management"
    peer_recovery = "peer_recovery"
    post_overdose = "post_overdose"
    housing_outreach = "housing_outreach"


class Reason(str, Enum):
    """Why a person is referred (the `ServiceRequest.code`)."""

    crisis_stabilisation = "crisis_stabilisation"
    mental_health_follow_up = "mental_health_follow_up"
    post_overdose_outreach = "post_overdose_outreach"
    substance_use_treatment = "substance_use_treatment"
    case_management = "case_management"
    peer_support = "peer_support"
    housing_assistance = "housing_assistance"


class Urgency(str, Enum):
    warm_handoff = "warm_handoff"      # now, while the unit is on scene
    follow_up = "follow_up"            # within a window (`due_within_hours`)


class Basis(str, Enum):
    """Why the person's information may be shared with the program at all."""

    agreement = "agreement"            # the person agreed at the scene (recorded: who witnessed it, and what)
    consent = "consent"                # a consent on file naming the program (42 CFR 2.31 for Part 2 content)
    treatment = "treatment"            # HIPAA 45 CFR 164.506(c): a clinician referring for treatment
    follow_up_rule = "follow_up_rule"  # a task a follow-up rule opened (scoring/followup.toml); never a responder's


class TaskStatus(str, Enum):
    """FHIR TaskStatus codes a referral's Task takes (the FHIR spelling, `in-progress` with its hyphen)."""

    requested = "requested"
    accepted = "accepted"
    rejected = "rejected"
    in_progress = "in-progress"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


class BusinessStatus(str, Enum):
    identity_confirmed = "identity_confirmed"
    contact_attempted = "contact_attempted"
    engaged = "engaged"


#: The business statuses from the least to the furthest progress.
PROGRESS = (BusinessStatus.identity_confirmed, BusinessStatus.contact_attempted, BusinessStatus.engaged)


class Outcome(str, Enum):
    engaged_in_services = "engaged_in_services"
    declined_services = "declined_services"
    unable_to_contact = "unable_to_contact"
    transported = "transported"
    other = "other"


class Side(str, Enum):
    program = "program"                # the receiving program's provider keys
    referrer = "referrer"              # the referring agency's responder keys


class Event(str, Enum):
    accept = "accept"
    reject = "reject"
    confirm_identity = "confirm_identity"
    contact_attempted = "contact_attempted"
    engaged = "engaged"
    complete = "complete"
    fail = "fail"
    cancel = "cancel"
    person_declined = "person_declined"          # the person declines, or withdraws the agreement they gave


OPEN = frozenset({TaskStatus.requested, TaskStatus.accepted, TaskStatus.in_progress})
CLOSED = frozenset(TaskStatus) - OPEN
WORKING = frozenset({TaskStatus.accepted, TaskStatus.in_progress})
BOTH = frozenset(Side)


@dataclass(frozen=True)
class Step:
    sides: frozenset[Side]
    from_statuses: frozenset[TaskStatus]
    to_status: TaskStatus | None               # None: the status stays (or becomes in-progress, see `apply`)
    business_status: BusinessStatus | None = None


STEPS: dict[Event, Step] = {
    Event.accept: Step(frozenset({Side.program}), frozenset({TaskStatus.requested}), TaskStatus.accepted),
    Event.reject: Step(frozenset({Side.program}), frozenset({TaskStatus.requested}), TaskStatus.rejected),
    Event.confirm_identity: Step(frozenset({Side.program}), WORKING, None, BusinessStatus.identity_confirmed),
    Event.contact_attempted: Step(frozenset({Side.program}), WORKING, TaskStatus.in_progress,
                                  BusinessStatus.contact_attempted),
    Event.engaged: Step(frozenset({Side.program}), WORKING, TaskStatus.in_progress, BusinessStatus.engaged),
    Event.complete: Step(frozenset({Side.program}), WORKING, TaskStatus.completed),
    Event.fail: Step(frozenset({Side.program}), WORKING, TaskStatus.failed),
    Event.cancel: Step(frozenset({Side.referrer}), OPEN, TaskStatus.cancelled),
    Event.person_declined: Step(BOTH, OPEN, TaskStatus.cancelled),
}


class Refused(ValueError):
    """A step the lifecycle does not allow: the message says which rule."""


@dataclass(frozen=True)
class State:
    status: TaskStatus
    business_status: BusinessStatus | None = None
    outcome: Outcome | None = None


def apply(state: State, event: Event, side: Side, outcome: Outcome | None = None) -> State:
    """The state after `side` takes `event`, or `Refused`.

    `complete` needs an `outcome` and only `complete` takes one. A refusal tells the referring side the status
    only as `coarse_status` does (law enforcement, and the referrers of a Part 2 program, see no more). The business status is the furthest step
    reached (`PROGRESS`): a contact logged after the engagement, or identity confirmed after a contact, keeps it.
    """
    step = STEPS[event]
    if side not in step.sides:
        raise Refused(f"only the {' or '.join(sorted(s.value for s in step.sides))} may {event.value.replace('_', ' ')}")
    if state.status not in step.from_statuses:
        if side != Side.program:          # the referring side is told the status only as coarsely as it sees it
            raise Refused(f"a referral that is {coarse_status(state.status)} cannot take '{event.value}'")
        allowed = ", ".join(sorted(s.value for s in step.from_statuses))
        raise Refused(f"a referral that is {state.status.value} cannot take '{event.value}' (only from: {allowed})")
    if (event == Event.complete) != (outcome is not None):
        raise Refused("'complete' needs an outcome" if event == Event.complete else f"'{event.value}' takes no outcome")
    business = max((b for b in (state.business_status, step.business_status) if b is not None),
                   key=PROGRESS.index, default=None)
    return State(step.to_status or state.status, business, outcome)


def coarse_status(status: TaskStatus) -> str:
    """What a law-enforcement role learns of a referral's progress: requested, accepted or closed."""
    if status == TaskStatus.requested:
        return "requested"
    return "accepted" if status in WORKING else "closed"
