"""A seeded referral history for a store that holds a county: the fixture the outcomes report is checked against.

`generate_referral_history(store, persons, seed, start, end) -> Truth` writes, straight into the store's tables
with SQLAlchemy Core (a fixture generator, not the service path, so nothing is audited and no webhook is told):

- `programs`: one receiving program per `ProgramKind` (`PROGRAMS`; the post-overdose team is a Part 2 program),
  left as they are when already registered;
- `briefed_persons`: each person's 911 history between `start` and `end`: a Poisson number of incidents at a
  rate of their own (gamma across persons), each briefed by an officer and, a quarter of the time, by EMS too
  (two rows for one incident: the report must count incidents, not briefings);
- `referrals` and `referral_events`: an incident of a referring call type gets a responder's referral
  (`REFER_P`) and, when a follow-up rule of scoring/followup.toml fires, a rule's task (`TASK_P`); every
  referral's path to its end (`TERMINALS`, per kind) is drawn first and its steps replayed through
  `scoring.referral.apply`, so every stored status is one the lifecycle allows. Delays are log-normal with
  known medians (`ACCEPT_MEDIAN_HOURS`), capped at `MAX_DELAY`; referrals open only on incidents at least
  `LIFECYCLE_MARGIN` before `end`, so no lifecycle is cut by the data edge and the closure shares are those of
  `TERMINALS`;
- after a person's first engagement (an `engaged` event, or a `complete` with outcome engaged_in_services)
  each later incident that carries no referral is dropped with probability `AFTER_DROP`: a known fall in 911
  contacts that the report must describe (and must not call an effect).

Engagements early or late in the span have a 90-day window cut off by the data's edges: the report leaves
those persons out of its before/after comparison, and `Truth` says which. `Truth` is counted from the rows as
they were written, independently of the report's code; the store should hold no referral history before.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np
from sqlalchemy import insert

from api.service.store import Store, briefed_persons, dialect_insert, programs, referral_events, referrals
from api.service.times import utc_text
from scoring.followup import FollowUpRules
from scoring.item import CallType
from scoring.referral import CLOSED, Event, Outcome, ProgramKind, Reason, Side, State, TaskStatus, Urgency, apply

WINDOW = timedelta(days=90)
LIFECYCLE_MARGIN = timedelta(days=45)      # no referral opens later than this before `end`
MAX_DELAY_HOURS = 120.0                    # every delay is capped: 7 steps at most stay within the margin
PROGRAMS = {ProgramKind.mobile_crisis: "MOBILE_CRISIS", ProgramKind.case_management: "CASE_MGMT",
            ProgramKind.peer_recovery: "PEER_LINK", ProgramKind.post_overdose: "HARBOR_SUD",
            ProgramKind.housing_outreach: "HOUSING_TEAM"}
PART2 = {"HARBOR_SUD"}
REASON_KIND = {Reason.crisis_stabilisation: ProgramKind.mobile_crisis, Reason.mental_health_follow_up: ProgramKind.mobile_crisis,
               Reason.post_overdose_outreach: ProgramKind.post_overdose, Reason.substance_use_treatment: ProgramKind.post_overdose,
               Reason.case_management: ProgramKind.case_management, Reason.peer_support: ProgramKind.peer_recovery,
               Reason.housing_assistance: ProgramKind.housing_outreach}
CALL_TYPES = {CallType.disturbance: 0.16, CallType.welfare_check: 0.18, CallType.overdose: 0.10,
              CallType.suicidal_person: 0.07, CallType.mental_health_crisis: 0.14, CallType.trespass: 0.08,
              CallType.domestic: 0.08, CallType.medical: 0.12, CallType.missing_person: 0.03, CallType.other: 0.04}
REFER_P = {CallType.overdose: 0.3, CallType.suicidal_person: 0.3, CallType.mental_health_crisis: 0.3,
           CallType.welfare_check: 0.15, CallType.disturbance: 0.08, CallType.trespass: 0.08}
TASK_P = 0.6
CALL_REASONS = {CallType.overdose: (Reason.post_overdose_outreach, Reason.substance_use_treatment, Reason.peer_support),
                CallType.suicidal_person: (Reason.crisis_stabilisation, Reason.mental_health_follow_up),
                CallType.mental_health_crisis: (Reason.crisis_stabilisation, Reason.mental_health_follow_up),
                CallType.welfare_check: (Reason.case_management, Reason.housing_assistance, Reason.mental_health_follow_up),
                CallType.disturbance: (Reason.crisis_stabilisation, Reason.case_management),
                CallType.trespass: (Reason.housing_assistance, Reason.peer_support)}
#: How a referral ends, per kind: "rejected", "cancelled_early" (before acceptance), "declined_later" (the person
#: declines after acceptance), "failed", "open" (still accepted or in progress), or completed with an outcome.
TERMINALS = {
    "responder": {"rejected": 0.10, "cancelled_early": 0.06, "failed": 0.06, "open": 0.06, "declined_later": 0.05,
                  "engaged_in_services": 0.38, "declined_services": 0.12, "unable_to_contact": 0.10,
                  "transported": 0.04, "other": 0.03},
    "rule": {"rejected": 0.14, "cancelled_early": 0.04, "failed": 0.10, "open": 0.08, "declined_later": 0.06,
             "engaged_in_services": 0.24, "declined_services": 0.14, "unable_to_contact": 0.16,
             "transported": 0.01, "other": 0.03},
}
ACCEPT_MEDIAN_HOURS = {"responder": 2.0, "rule": 8.0}     # log-normal acceptance delay, sigma ACCEPT_SIGMA
ACCEPT_SIGMA = 1.0
AFTER_DROP = 0.4
OFFICERS, EMS_SHARE = 7, 0.25
NOT_COMPLETED = "(not completed)"           # the outcome of a closed referral that was not completed


@dataclass(frozen=True)
class Truth:
    """What was written, counted as written: the figures the outcomes report must reproduce.

    `counts[kind][dimension][value]`: referrals by kind ("all", "responder", "rule") and dimension ("reason",
    "program", "call_type"); `statuses[kind]`: referrals by final status; `outcomes[kind]`: completed referrals
    by outcome; `accept_hours[kind]` / `contact_hours[kind]`: the delay from each referral's creation to its first
    acceptance / first contact (attempted or engaged), in hours; `status_share` / `outcome_share`: the generator's
    probabilities of each status / outcome among closed referrals (what the report's shares estimate);
    `engagement`: each engaged person's first engagement; `included` / `excluded`: engaged persons whose two
    90-day windows lie within [`data_start`, `data_end`] and the others; `before_total` / `after_total`: the
    included persons' distinct incidents in the windows before ([E - 90 d, E)) and after ([E, E + 90 d)).
    """

    counts: dict[str, dict[str, dict[str, int]]]
    statuses: dict[str, dict[str, int]]
    outcomes: dict[str, dict[str, int]]
    accept_hours: dict[str, list[float]]
    contact_hours: dict[str, list[float]]
    status_share: dict[str, dict[str, float]]
    outcome_share: dict[str, dict[str, float]]
    accept_median_hours: dict[str, float]
    engagement: dict[str, datetime]
    included: frozenset[str]
    excluded: frozenset[str]
    before_total: int
    after_total: int
    data_start: datetime
    data_end: datetime
    incidents: int
    briefings: int


@dataclass
class _Incident:
    incident_id: str
    person_id: str
    call_type: CallType
    at: datetime
    officer: str                    # the officer whose briefing resolved the person (and who refers)
    ems: bool                       # EMS briefed the incident too
    referred: bool = False


@dataclass
class _Referral:
    person_id: str
    incident: _Incident
    kind: str                       # responder | rule
    opened_by: str
    reason: Reason
    program: str
    created: datetime
    steps: list[tuple[Event, Side, datetime, Outcome | None]]
    state: State


def _hours(rng: np.random.Generator, median: float, sigma: float) -> timedelta:
    return timedelta(hours=float(min(MAX_DELAY_HOURS, rng.lognormal(np.log(median), sigma))))


def _steps(rng: np.random.Generator, kind: str, terminal: str, created: datetime) -> list[tuple]:
    """The steps (event, side, at, outcome) of a referral that ends as `terminal` (module docstring)."""
    t = created + _hours(rng, ACCEPT_MEDIAN_HOURS[kind], ACCEPT_SIGMA)
    if terminal == "rejected":
        return [(Event.reject, Side.program, t, None)]
    if terminal == "cancelled_early":
        if kind == "responder" and rng.random() < 0.5:
            return [(Event.cancel, Side.referrer, t, None)]
        return [(Event.person_declined, Side.program, t, None)]
    steps = [(Event.accept, Side.program, t, None)]
    if kind == "rule" and rng.random() < 0.8:              # a task's team confirms identity before contact
        t += _hours(rng, 1.0, 0.5)
        steps.append((Event.confirm_identity, Side.program, t, None))
    if terminal == "open" and rng.random() < 0.3:
        return steps                                        # accepted, not yet contacted
    attempts = 1 if terminal == "transported" else 1 + min(int(rng.poisson(0.7)), 2)
    for k in range(attempts):
        t += _hours(rng, 12.0 if k == 0 else 24.0, 1.0 if k == 0 else 0.7)
        steps.append((Event.contact_attempted, Side.program, t, None))
    engaged_p = {"engaged_in_services": 0.8, "open": 0.5, "declined_later": 0.2}.get(terminal, 0.0)
    engaged = rng.random() < engaged_p
    if engaged:
        t += _hours(rng, 12.0, 1.0)
        steps.append((Event.engaged, Side.program, t, None))
    if terminal == "open":
        return steps
    t += _hours(rng, 72.0 if engaged else 24.0, 0.8)
    if terminal == "failed":
        steps.append((Event.fail, Side.program, t, None))
    elif terminal == "declined_later":
        steps.append((Event.person_declined, Side.program, t, None))
    else:
        steps.append((Event.complete, Side.program, t, Outcome(terminal)))
    return steps


def _replay(steps: list[tuple]) -> State:
    """The state after the steps, each checked by the lifecycle (`apply` raises on a step it does not allow)."""
    state = State(TaskStatus.requested)
    for event, side, _at, outcome in steps:
        state = apply(state, event, side, outcome)
    return state


def _referral(rng, incident: _Incident, kind: str, opened_by: str, reason: Reason, after: timedelta) -> _Referral:
    created = incident.at + after
    terminal = str(rng.choice(list(TERMINALS[kind]), p=list(TERMINALS[kind].values())))
    steps = _steps(rng, kind, terminal, created)
    return _Referral(incident.person_id, incident, kind, opened_by, reason, PROGRAMS[REASON_KIND[reason]], created,
                     steps, _replay(steps))


def _history(rng, person_id: str, seed: int, serial: int, start: datetime, end: datetime) -> list[_Incident]:
    span = (end - start).total_seconds()
    rate = rng.gamma(1.5, 0.8)                              # incidents per 90 days
    n = int(rng.poisson(rate * span / WINDOW.total_seconds()))
    seconds = np.sort(rng.uniform(0, span, n)).round()
    kinds = list(CALL_TYPES)
    calls = rng.choice(len(kinds), size=n, p=list(CALL_TYPES.values()))
    return [_Incident(f"SYN-{seed}-{serial:05d}-{k:03d}", person_id, kinds[c], start + timedelta(seconds=float(s)),
                      f"synth-officer-{(serial + k) % OFFICERS}", bool(rng.random() < EMS_SHARE))
            for k, (s, c) in enumerate(zip(seconds, calls))]


def _referrals_of(rng, history: list[_Incident], rules: FollowUpRules, end: datetime) -> list[_Referral]:
    out = []
    for incident in history:
        if incident.at > end - LIFECYCLE_MARGIN:
            continue
        if rng.random() < REFER_P.get(incident.call_type, 0.0):
            reasons = CALL_REASONS[incident.call_type]
            reason = reasons[int(rng.integers(len(reasons)))]
            out.append(_referral(rng, incident, "responder", "responder", reason,
                                 timedelta(minutes=float(rng.uniform(5, 60)))))
        for rule in rules.firing(incident.call_type.value, "certain"):
            if rng.random() < TASK_P:
                out.append(_referral(rng, incident, "rule", f"rule:{rule.id}", rule.reason,
                                     timedelta(minutes=float(rng.uniform(10, 40)))))
    for r in out:
        r.incident.referred = True
    return out


def first_engagement(referral: _Referral) -> datetime | None:
    """When the referral first engaged its person: its first `engaged` step, or a `complete` with outcome
    engaged_in_services, whichever came first; None if neither."""
    times = [at for event, _side, at, outcome in referral.steps
             if event == Event.engaged or (event == Event.complete and outcome == Outcome.engaged_in_services)]
    return min(times, default=None)


def generate_referral_history(store: Store, persons: Sequence[str], seed: int, start: datetime,
                              end: datetime) -> Truth:
    """Write the history described in the module docstring for `persons` (person ids of the store's clusters)
    between `start` and `end` (aware datetimes); the `Truth` of what was written."""
    rng = np.random.default_rng(seed)
    rules = FollowUpRules.load()
    incidents: list[_Incident] = []
    made: list[_Referral] = []
    engagement: dict[str, datetime] = {}
    for serial, person_id in enumerate(sorted(persons)):
        history = _history(rng, person_id, seed, serial, start, end)
        mine = _referrals_of(rng, history, rules, end)
        engaged = [t for t in map(first_engagement, mine) if t is not None]
        if engaged:
            engagement[person_id] = first = min(engaged)
            history = [i for i in history if i.referred or i.at < first or rng.random() >= AFTER_DROP]
        incidents += history
        made += mine
    _write(store, incidents, made, seed)
    return _truth(incidents, made, engagement)


def _write(store: Store, incidents: list[_Incident], made: list[_Referral], seed: int) -> None:
    rows = []
    for k, i in enumerate(incidents):
        briefers = [(i.officer, "METRO_PD")] + ([(f"synth-ems-{k % 3}", "COUNTY_EMS")] if i.ems else [])
        rows += [{"principal": name, "incident_id": i.incident_id, "agency": agency, "person_id": i.person_id,
                  "grade": "certain", "call_type": i.call_type.value, "received_at": utc_text(i.at),
                  "request_id": f"synth-{seed}-{k}-{agency}", "briefed_at": utc_text(i.at + timedelta(minutes=1))}
                 for name, agency in briefers]
    with store.engine.begin() as connection:
        insert_ = dialect_insert(connection)
        for kind, name in PROGRAMS.items():
            connection.execute(insert_(programs).values(
                name=name, kind=kind.value, part2=int(name in PART2), public_line="555-0100",
                created_at=utc_text(min((i.at for i in incidents), default=datetime.now().astimezone())),
            ).on_conflict_do_nothing(index_elements=["name"]))
        if rows:
            connection.execute(insert(briefed_persons), rows)
        for r in made:
            _write_referral(connection, r)


def _write_referral(connection, r: _Referral) -> None:
    principal = r.incident.officer if r.kind == "responder" else "briefing:follow-up-rules"
    urgency = Urgency.warm_handoff if r.kind == "responder" and r.incident.call_type != CallType.welfare_check else Urgency.follow_up
    last = r.steps[-1][2]
    referral_id = connection.execute(insert(referrals).values(
        person_id=r.person_id, grade="certain", identity_review=0, incident_id=r.incident.incident_id,
        call_type=r.incident.call_type.value, program=r.program, opened_by=r.opened_by, referrer=principal,
        referrer_agency="METRO_PD", reason=r.reason.value, urgency=urgency.value,
        due_by=utc_text(r.created + timedelta(hours=24)),
        basis="agreement" if r.kind == "responder" else "follow_up_rule",
        agreement_note="synthetic: the person agreed" if r.kind == "responder" else None,
        business_status=r.state.business_status and r.state.business_status.value,
        outcome=r.state.outcome and r.state.outcome.value, status=r.state.status.value,
        created_at=utc_text(r.created), updated_at=utc_text(last))).inserted_primary_key[0]
    events = [{"referral_id": referral_id, "event": "requested", "side": "referrer" if r.kind == "responder" else "rule",
               "principal": principal, "status": "requested", "business_status": None, "outcome": None, "note": None,
               "at": utc_text(r.created)}]
    state = State(TaskStatus.requested)
    for event, side, at, outcome in r.steps:
        state = apply(state, event, side, outcome)
        events.append({"referral_id": referral_id, "event": event.value, "side": side.value,
                       "principal": f"synth-{r.program.lower()}", "status": state.status.value,
                       "business_status": state.business_status and state.business_status.value,
                       "outcome": state.outcome and state.outcome.value, "note": None, "at": utc_text(at)})
    connection.execute(insert(referral_events), events)


def _shares(kind: str) -> tuple[dict[str, float], dict[str, float]]:
    """The probabilities of each closed status and each outcome (or none) among closed referrals of `kind`."""
    p = TERMINALS[kind]
    closed = 1.0 - p["open"]
    completed = {o.value: p[o.value] / closed for o in Outcome}
    status = {"rejected": p["rejected"] / closed, "cancelled": (p["cancelled_early"] + p["declined_later"]) / closed,
              "failed": p["failed"] / closed, "completed": sum(completed.values())}
    return status, {**completed, NOT_COMPLETED: 1.0 - sum(completed.values())}


def _truth(incidents: list[_Incident], made: list[_Referral], engagement: dict[str, datetime]) -> Truth:
    kinds = {"all": made, "responder": [r for r in made if r.kind == "responder"],
             "rule": [r for r in made if r.kind == "rule"]}
    dims = {"reason": lambda r: r.reason.value, "program": lambda r: r.program, "call_type": lambda r: r.incident.call_type.value}
    closed = {s.value for s in CLOSED}

    def first(r: _Referral, events) -> float | None:
        at = min((t for e, _s, t, _o in r.steps if e in events), default=None)
        return None if at is None else (at - r.created).total_seconds() / 3600

    times = [i.at for i in incidents] + [t for r in made for t in (r.created, *(s[2] for s in r.steps))]
    data_start, data_end = min(i.at for i in incidents), max(times)
    inside = {p for p, e in engagement.items() if e - WINDOW >= data_start and e + WINDOW <= data_end}
    before = sum(1 for i in incidents if i.person_id in inside and engagement[i.person_id] - WINDOW <= i.at < engagement[i.person_id])
    after = sum(1 for i in incidents if i.person_id in inside and engagement[i.person_id] <= i.at < engagement[i.person_id] + WINDOW)
    shares = {k: _shares(k) for k in ("responder", "rule")}
    return Truth(
        counts={k: {d: dict(Counter(f(r) for r in rs)) for d, f in dims.items()} for k, rs in kinds.items()},
        statuses={k: dict(Counter(r.state.status.value for r in rs)) for k, rs in kinds.items()},
        outcomes={k: dict(Counter(r.state.outcome.value for r in rs if r.state.status.value in closed and r.state.outcome))
                  for k, rs in kinds.items()},
        accept_hours={k: [h for r in rs if (h := first(r, {Event.accept})) is not None] for k, rs in kinds.items()},
        contact_hours={k: [h for r in rs if (h := first(r, {Event.contact_attempted, Event.engaged})) is not None]
                       for k, rs in kinds.items()},
        status_share={k: v[0] for k, v in shares.items()}, outcome_share={k: v[1] for k, v in shares.items()},
        accept_median_hours=dict(ACCEPT_MEDIAN_HOURS), engagement=dict(engagement), included=frozenset(inside),
        excluded=frozenset(engagement) - inside, before_total=before, after_total=after,
        data_start=data_start, data_end=data_end, incidents=len(incidents),
        briefings=sum(2 if i.ems else 1 for i in incidents))
