"""The referral outcomes report (issue 19, item 5): its counts equal a seeded synthetic history's exactly
(evaluation/synth/referrals.py), its shares and quartiles have the generator's true values within their
intervals, a hand-written store matches to the unit, and `briefing report outcomes` writes a self-contained
page and a JSON, and refuses a missing store with exit status 2."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import numpy as np
import pytest
from sqlalchemy import insert, select, update

from api.cli.main import main
from api.service.store import briefed_persons, clusters, open_store, programs, referral_events, referrals
from api.service.times import utc_text
from evaluation.outcomes.render import write_report
from evaluation.outcomes.report import KINDS, NOT_COMPLETED, outcomes_report
from evaluation.synth.referrals import ACCEPT_SIGMA, NOT_COMPLETED as TRUTH_NOT_COMPLETED, generate_referral_history
from scoring.referral import Outcome
from tests.cli_run import run_briefing
from tests.loaded_county import loaded_county

START, END = datetime(2025, 1, 1, tzinfo=timezone.utc), datetime(2026, 7, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A county of 400 persons with 18 months of seeded referral history; (county dir, db, truth, report)."""
    directory = tmp_path_factory.mktemp("county")
    db, store = loaded_county(directory, 400, 5)
    with store.engine.connect() as connection:
        persons = sorted(set(connection.execute(select(clusters.c.person_id)).scalars()))
    truth = generate_referral_history(store, persons, 7, START, END)
    return directory, db, truth, outcomes_report(store, county=directory, replicates=400)


def test_counts_equal_the_synthetic_truth(synthetic):
    _, _, truth, report = synthetic
    assert report.counts == truth.counts
    assert sum(report.counts["all"]["reason"].values()) > 500 and set(report.counts["rule"]["reason"]) == {
        "post_overdose_outreach", "mental_health_follow_up"}
    for kind in KINDS:
        closure = report.closure[kind]
        assert closure.statuses == truth.statuses[kind]
        assert {o: s.count for o, s in closure.by_outcome.items() if s.count and o != NOT_COMPLETED} == truth.outcomes[kind]
        for name, hours in (("acceptance", truth.accept_hours[kind]), ("first_contact", truth.contact_hours[kind])):
            delay = report.delays[name][kind]
            assert delay.reached == len(hours) and delay.reached + delay.not_reached == closure.referrals
            assert delay.quantiles["median"] == pytest.approx(float(np.median(hours)), rel=1e-9)
    contacts = report.contacts
    assert (contacts.engaged_persons, contacts.included, contacts.excluded) == (
        len(truth.engagement), len(truth.included), len(truth.excluded))
    assert 0 < contacts.excluded < contacts.included
    assert (contacts.before_total, contacts.after_total) == (truth.before_total, truth.after_total)
    assert contacts.before.value == pytest.approx(truth.before_total / len(truth.included))
    assert contacts.change.value == pytest.approx((truth.after_total - truth.before_total) / len(truth.included))
    assert report.data_start == truth.data_start and report.as_of == truth.data_end
    assert (report.facts["incidents"], report.facts["briefings"]) == (truth.incidents, truth.briefings)
    assert report.facts["briefings"] > report.facts["incidents"]            # EMS briefed some incidents too


def test_rates_fall_within_their_intervals_of_the_truth(synthetic):
    """Each share and acceptance quartile against the generator's true value: 26 intervals at 95 %, so about 1.3
    are expected to miss by chance (at most 4 do with probability 0.99). A biased figure would miss often or far:
    a miss must still lie within the 99.9 % interval (the 95 % one's side towards it widened by 3.29 / 1.96)."""
    _, _, truth, report = synthetic
    assert TRUTH_NOT_COMPLETED == NOT_COMPLETED
    checks = []                       # (what, truth, estimate, (low, high))
    for kind in ("responder", "rule"):
        closure = report.closure[kind]
        checks += [((kind, s), p, closure.by_status[s].value, closure.by_status[s].ci95)
                   for s, p in truth.status_share[kind].items()]
        checks += [((kind, o), p, closure.by_outcome[o].value, closure.by_outcome[o].ci95)
                   for o, p in truth.outcome_share[kind].items()]
        # the acceptance delay is log-normal: its true quartiles are median * exp(z sigma), z = ±0.6745 for Q1, Q3
        median, delay = truth.accept_median_hours[kind], report.delays["acceptance"][kind]
        checks += [((kind, q), median * math.exp(z * ACCEPT_SIGMA), delay.quantiles[q], delay.ci95[q])
                   for q, z in (("q1", -0.6745), ("median", 0.0), ("q3", 0.6745))]
    assert len(checks) == 26
    missed = [c for c in checks if not c[3][0] <= c[1] <= c[3][1]]
    assert len(missed) <= 4, missed
    for what, true, estimate, (low, high) in missed:
        side = high - estimate if true > estimate else estimate - low
        assert abs(true - estimate) <= side * 3.29 / 1.96, (what, true, estimate, low, high)
    before, after = report.contacts.before, report.contacts.after
    assert before.ci95[0] <= before.value <= before.ci95[1] and after.ci95[1] < before.ci95[0]


def test_groups_come_from_the_county_fixtures_and_small_ones_show_no_rate(synthetic):
    _, _, truth, report = synthetic
    assert report.groups is not None
    for attribute in ("race_ethnicity", "sex", "age_band"):
        rows = [g for g in report.groups if g.attribute == attribute]
        assert sum(g.persons_referred for g in rows) == report.facts["persons_referred"]
        assert sum(g.referrals for g in rows) == report.closure["all"].referrals
        assert sum(g.contacts.included for g in rows) == len(truth.included)
        assert sum(g.contacts.before_total for g in rows) == truth.before_total
        for g in rows:
            assert (g.engaged_share is None) == (g.persons_referred < 30)
            assert (g.contacts.before.value is None) == (g.contacts.included < 30)
    assert [g.group for g in report.groups if g.attribute == "age_band"][0] == "<25"
    assert any(g.engaged_share is None for g in report.groups) and any(g.engaged_share for g in report.groups)


# --------------------------------------------------------------------------- a store written by hand

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _at(day: float, hours: float = 0.0) -> str:
    return utc_text(T0 + timedelta(days=day, hours=hours))


def _hand_store(path):
    """Five persons, six referrals (times in days from 2026-01-01 and hours from each referral's creation):

    A: incidents on days 0, 100, 150 (R1's), 200 (briefed by the officer and by EMS: one incident), 230, 300.
       R1 responder, crisis_stabilisation, MOBILE_CRISIS, mental_health_crisis, created day 150 +1 h:
       accept +2 h, contact +10 h, engaged +30 h, complete engaged_in_services +100 h.
       First engagement E = day 150 +31 h; before [day 60 +31 h, E): days 100, 150 = 2; after [E, day 240 +31 h):
       days 200, 230 = 2. Both windows lie in [day 0, day 300]: compared.
    B: incidents on days 20, 40 (R2's and R3's).
       R2 rule:post_overdose_next_day, post_overdose_outreach, HARBOR_SUD, overdose, created day 40 +0.5 h:
       accept +6 h, confirm_identity +7 h (not a contact), contact +20 h, complete unable_to_contact +50 h.
       R3 responder, substance_use_treatment, HARBOR_SUD, overdose, created day 40 +1 h: reject +4 h.
    C: incident on day 250. R4 responder, housing_assistance, HOUSING_TEAM, welfare_check, created day 250 +1 h:
       accept +1 h, engaged +5 h (the first contact), still in progress. E + 90 d > day 300: cut at the end.
    D: incident on day 10. R5 rule:mental_health_crisis_24h, mental_health_follow_up, MOBILE_CRISIS, suicidal_person,
       created day 10 +0.25 h: accept +3 h, contact +12 h, complete engaged_in_services +48 h (no engaged event:
       the completion is the engagement). E - 90 d < day 0: cut at the start.
    E: incident on day 280. R6 responder, crisis_stabilisation, MOBILE_CRISIS, disturbance, created day 280: requested.
    The latest time in the data is A's incident on day 300.
    """
    store = open_store(str(path)).create()
    incidents = [("A", "I1", 0, "mental_health_crisis"), ("A", "I2", 100, "disturbance"), ("A", "I3", 150, "mental_health_crisis"),
                 ("A", "I4", 200, "medical"), ("A", "I5", 230, "disturbance"), ("A", "I6", 300, "welfare_check"),
                 ("B", "J1", 20, "medical"), ("B", "J2", 40, "overdose"), ("C", "K1", 250, "welfare_check"),
                 ("D", "L1", 10, "suicidal_person"), ("E", "M1", 280, "disturbance")]
    rows = [{"principal": "pd-1", "incident_id": i, "agency": "METRO_PD", "person_id": p, "grade": "certain",
             "call_type": c, "received_at": _at(d), "request_id": f"r-{i}", "briefed_at": _at(d, 0.1)}
            for p, i, d, c in incidents]
    rows.append({**rows[3], "principal": "ems-1", "agency": "COUNTY_EMS", "request_id": "r-I4-ems"})
    made = [  # id, person, incident, call type, program, opened by, reason, status, outcome, created, events
        (1, "A", "I3", "mental_health_crisis", "MOBILE_CRISIS", "responder", "crisis_stabilisation", "completed",
         "engaged_in_services", (150, 1), [("accept", "accepted", 2), ("contact_attempted", "in-progress", 10),
                                           ("engaged", "in-progress", 30), ("complete", "completed", 100)]),
        (2, "B", "J2", "overdose", "HARBOR_SUD", "rule:post_overdose_next_day", "post_overdose_outreach", "completed",
         "unable_to_contact", (40, 0.5), [("accept", "accepted", 6), ("confirm_identity", "accepted", 7),
                                          ("contact_attempted", "in-progress", 20), ("complete", "completed", 50)]),
        (3, "B", "J2", "overdose", "HARBOR_SUD", "responder", "substance_use_treatment", "rejected", None, (40, 1),
         [("reject", "rejected", 4)]),
        (4, "C", "K1", "welfare_check", "HOUSING_TEAM", "responder", "housing_assistance", "in-progress", None, (250, 1),
         [("accept", "accepted", 1), ("engaged", "in-progress", 5)]),
        (5, "D", "L1", "suicidal_person", "MOBILE_CRISIS", "rule:mental_health_crisis_24h", "mental_health_follow_up",
         "completed", "engaged_in_services", (10, 0.25), [("accept", "accepted", 3), ("contact_attempted", "in-progress", 12),
                                                          ("complete", "completed", 48)]),
        (6, "E", "M1", "disturbance", "MOBILE_CRISIS", "responder", "crisis_stabilisation", "requested", None, (280, 0), []),
    ]
    with store.engine.begin() as connection:
        connection.execute(insert(programs), [{"name": n, "kind": k, "part2": int(n == "HARBOR_SUD"), "public_line": "555",
                                               "created_at": _at(0)} for n, k in (("MOBILE_CRISIS", "mobile_crisis"),
                                               ("HARBOR_SUD", "post_overdose"), ("HOUSING_TEAM", "housing_outreach"))])
        connection.execute(insert(briefed_persons), rows)
        for rid, person, incident, call, program, opened_by, reason, status, outcome, (day, hour), steps in made:
            last = hour + (steps[-1][2] if steps else 0)
            connection.execute(insert(referrals).values(
                id=rid, person_id=person, grade="certain", identity_review=0, incident_id=incident, call_type=call,
                program=program, opened_by=opened_by, referrer="pd-1", referrer_agency="METRO_PD", reason=reason,
                urgency="follow_up", status=status, outcome=outcome, created_at=_at(day, hour), updated_at=_at(day, last)))
            connection.execute(insert(referral_events), [
                {"referral_id": rid, "event": "requested", "status": "requested", "at": _at(day, hour), "outcome": None},
                *({"referral_id": rid, "event": e, "status": s, "at": _at(day, hour + h),
                   "outcome": outcome if e == "complete" else None} for e, s, h in steps)])
    return store


def test_a_hand_written_store_matches_to_the_unit(tmp_path):
    report = outcomes_report(_hand_store(tmp_path / "hand.db"), replicates=200)
    assert report.counts["all"] == {
        "reason": {"crisis_stabilisation": 2, "housing_assistance": 1, "mental_health_follow_up": 1,
                   "post_overdose_outreach": 1, "substance_use_treatment": 1},
        "program": {"HARBOR_SUD": 2, "HOUSING_TEAM": 1, "MOBILE_CRISIS": 3},
        "call_type": {"disturbance": 1, "mental_health_crisis": 1, "overdose": 2, "suicidal_person": 1, "welfare_check": 1}}
    assert report.counts["rule"]["program"] == {"HARBOR_SUD": 1, "MOBILE_CRISIS": 1}           # R2, R5
    assert sum(report.counts["responder"]["reason"].values()) == 4                             # R1, R3, R4, R6
    # acceptance: R1 2 h, R2 6 h, R4 1 h, R5 3 h; R3 (rejected) and R6 (requested) not reached.
    # sorted 1, 2, 3, 6: median (2 + 3) / 2 = 2.5; Q1 at position 0.75: 1 + 0.75 = 1.75; Q3 at 2.25: 3 + 0.25 * 3 = 3.75
    accept = report.delays["acceptance"]["all"]
    assert (accept.reached, accept.not_reached) == (4, 2)
    assert accept.quantiles == pytest.approx({"q1": 1.75, "median": 2.5, "q3": 3.75})
    assert report.delays["acceptance"]["responder"].quantiles["median"] == pytest.approx(1.5)   # 1, 2
    assert report.delays["acceptance"]["rule"].quantiles["median"] == pytest.approx(4.5)        # 3, 6
    # first contact: R1 10 h, R2 20 h (identity confirmation is no contact), R4 5 h (engaged), R5 12 h:
    # sorted 5, 10, 12, 20: median 11; Q1 5 + 0.75 * 5 = 8.75; Q3 12 + 0.25 * 8 = 14
    assert report.delays["first_contact"]["all"].quantiles == pytest.approx({"q1": 8.75, "median": 11.0, "q3": 14.0})
    # closed: R1, R2, R5 completed, R3 rejected; open: R4 (in-progress), R6 (requested)
    closure = report.closure["all"]
    assert (closure.referrals, closure.open, closure.closed) == (6, 2, 4)
    assert {k: s.count for k, s in closure.by_status.items()} == {"rejected": 1, "completed": 3, "cancelled": 0, "failed": 0}
    assert closure.by_outcome["engaged_in_services"].count == 2 and closure.by_outcome["unable_to_contact"].count == 1
    assert closure.by_outcome[NOT_COMPLETED].count == 1 and closure.by_outcome[Outcome.transported.value].count == 0
    # Wilson 95 % for 3 of 4: centre (0.75 + 1.96²/8) / (1 + 1.96²/4) = 0.6275,
    # half-width 1.96 * sqrt(0.75 * 0.25 / 4 + 1.96² / 64) / 1.9604 = 0.3269: [0.3006, 0.9544]
    assert closure.by_status["completed"].value == 0.75
    assert closure.by_status["completed"].ci95 == pytest.approx((0.3006, 0.9544), abs=1e-4)
    assert (closure.engaged.count, closure.engaged.total) == (3, 6)                            # R1, R4, R5
    # engaged persons A, C, D; only A compared (C cut at the end, D at the start): 2 incidents before, 2 after
    c = report.contacts
    assert (c.engaged_persons, c.included, c.excluded, c.cut_at_start, c.cut_at_end) == (3, 1, 2, 1, 1)
    assert (c.before_total, c.after_total, c.before.value, c.after.value, c.change.value) == (2, 2, 2.0, 2.0, 0.0)
    assert report.as_of == T0 + timedelta(days=300) and report.data_start == T0
    assert (report.facts["incidents"], report.facts["briefings"]) == (11, 12)
    assert report.groups is None


def test_as_of_cuts_the_data_and_takes_each_referral_as_it_stood(tmp_path):
    # day 150 + 20 h: R4 and R6 do not exist yet; R1 has been contacted (in progress) but not engaged
    report = outcomes_report(_hand_store(tmp_path / "hand.db"), as_of=T0 + timedelta(days=150, hours=20), replicates=50)
    closure = report.closure["all"]
    assert (closure.referrals, closure.open, closure.closed) == (4, 1, 3) and closure.statuses["in-progress"] == 1
    assert report.delays["acceptance"]["all"].reached == 3                                       # R1, R2, R5
    assert (report.contacts.engaged_persons, report.contacts.included, report.contacts.cut_at_start) == (1, 0, 1)   # D


# --------------------------------------------------------------------------- the files and the command


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v or "") for k, v in attrs] + [(tag, "", "")]


def _assert_self_contained(text: str) -> None:
    parsed = _Tags()
    parsed.feed(text)
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not {"script", "link", "img", "iframe", "object", "embed", "base"} & {t for t, _, _ in parsed.attrs}
    for tag, key, value in parsed.attrs:
        if key in ("src", "href", "xlink:href", "action", "srcset"):
            assert value.startswith("#"), (tag, key, value)


def test_the_command_writes_a_self_contained_page_and_its_json(synthetic, tmp_path):
    directory, db, truth, _ = synthetic
    out = tmp_path / "out"
    assert main(["report", "outcomes", "--db", db, "--out", str(out), "--county", str(directory),
                 "--replicates", "200"]) == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert text.count("<svg") == 6 and "Descriptive, not an effect" in text and "By race ethnicity" in text
    document = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert document["counts"] == truth.counts and document["descriptive_not_an_effect"] is True
    assert document["contacts"]["included"] == len(truth.included)
    assert document["as_of"] == truth.data_end.isoformat()


def test_without_demographics_the_page_says_so(tmp_path):
    paths = write_report(outcomes_report(_hand_store(tmp_path / "hand.db"), replicates=50), tmp_path / "out")
    text = paths["html"].read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert "No demographics were given" in text and json.loads(paths["json"].read_text())["groups"] is None


def test_the_command_refuses_a_missing_store_or_county_file_with_status_2(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    assert main(["report", "outcomes", "--db", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert str(missing) in capsys.readouterr().err and not missing.exists() and not (tmp_path / "out").exists()
    _hand_store(tmp_path / "hand.db")
    status, message = run_briefing(["report", "outcomes", "--db", str(tmp_path / "hand.db"), "--out", str(tmp_path / "o"),
                                    "--county", str(tmp_path)])
    assert status == 2 and str(tmp_path / "truth.csv") in message
    status, message = run_briefing(["report", "outcomes", "--db", str(tmp_path / "hand.db"),
                                    "--out", str(tmp_path / "hand.db")])
    assert status == 2 and "not a directory" in message


def test_steps_taken_within_seconds_still_draw_their_delays(tmp_path):
    store = _hand_store(tmp_path / "quick.db")
    with store.engine.begin() as connection:             # every step a few seconds after its referral was made
        made = dict(connection.execute(select(referrals.c.id, referrals.c.created_at)).all())
        steps = connection.execute(select(referral_events.c.id, referral_events.c.referral_id)
                                   .where(referral_events.c.event != "requested")).all()
        for n, (event_id, referral_id) in enumerate(steps):
            at = datetime.fromisoformat(made[referral_id]) + timedelta(seconds=2 + n % 5)
            connection.execute(update(referral_events).where(referral_events.c.id == event_id).values(at=utc_text(at)))
    report = outcomes_report(store, replicates=50)
    assert max(report.delays["first_contact"]["all"].hours) < 10 / 3600
    text = write_report(report, tmp_path / "out")["html"].read_text(encoding="utf-8")
    assert "Hours from referral to acceptance and to first contact" in text
