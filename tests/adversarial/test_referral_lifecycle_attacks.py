"""Black-box attacks on the referral lifecycle over HTTP (issue 19, invariant 4 of tests/adversarial/test_referral_http_attacks.py):
each step accepted only from the side that owns it and the statuses the table allows, every refused step leaving
the referral as it was and telling a coarse viewer no more than it sees, steps sent at once serialising.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.adversarial.referral_world import (CRISIS, EVENTS, FAST, KEYS, Lifecycle, OUTCOMES, STARTS, SUD, expect,
                                              listing, read, refer, served_world, step, text_of, whole)
from tests.adversarial.vocabulary import CLINICAL


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    yield from served_world(tmp_path_factory, "referral-lifecycle")


# ----------------------------------------------------------------------------------------------------------------
# Invariant 4: the lifecycle over HTTP, every side, every event, every status
# ----------------------------------------------------------------------------------------------------------------

LIFECYCLE_KEYS = ("officer", "co_metro", "crisis")


def test_exhaustive_lifecycle_product_each_step_only_from_its_side_and_status(world):
    """Every starting state x every event x a law-enforcement referrer, a clinical referrer and the program
    (`complete` with an outcome, the others without, and then each with the other choice)."""
    life = Lifecycle(world, CRISIS)
    combos = [(start, key, event, outcome)
              for start, key, event in itertools.product(STARTS, LIFECYCLE_KEYS, EVENTS)
              for outcome in (("transported" if event == "complete" else None),)]
    flipped = [(start, key, event, None if event == "complete" else "other")
               for start, key, event in itertools.product(("requested", "engaged", "completed"), LIFECYCLE_KEYS,
                                                           EVENTS)]
    assert life.run(combos + flipped) == len(STARTS) * len(LIFECYCLE_KEYS) * len(EVENTS) + 3 * 3 * len(EVENTS)


@settings(max_examples=25, **FAST)
@given(combos=st.lists(st.tuples(st.sampled_from(tuple(STARTS)), st.sampled_from(tuple(KEYS)),
                                 st.sampled_from(EVENTS), st.sampled_from((None, None) + OUTCOMES)),
                       min_size=12, max_size=12),
       program=st.sampled_from((SUD, CRISIS)))
def test_generated_steps_by_every_key_on_every_status_change_state_only_as_the_table_says(world, combos, program):
    life = world.lives.setdefault(program, Lifecycle(world, program))
    life.run(combos)


#: Steps that race one another on one referral: (key, event, outcome).
RACERS = (("crisis", "accept", None), ("crisis", "reject", None), ("crisis", "engaged", None),
          ("crisis", "complete", "other"), ("crisis", "fail", None), ("crisis", "person_declined", None),
          ("officer", "cancel", None), ("dispatcher", "person_declined", None), ("co_metro", "cancel", None))


@settings(max_examples=15, **FAST)
@given(racers=st.lists(st.sampled_from(RACERS), min_size=2, max_size=4),
       start=st.sampled_from(("requested", "accepted", "engaged")))
def test_concurrent_steps_on_one_referral_serialise_as_the_table_allows(world, racers, start):
    """Steps sent at once through both workers: those answered 200 are exactly the ones logged, their order replays
    through the lifecycle table from the starting state to the final state, and every other answer is a 409."""
    life = world.lives.setdefault(CRISIS, Lifecycle(world, CRISIS))
    referral_id = life.make(start)
    before = whole(world, referral_id, CRISIS)
    barrier = threading.Barrier(len(racers))

    def race(racer):
        key, event, outcome = racer
        barrier.wait(timeout=30)
        return step(world, key, referral_id, event, outcome)

    with ThreadPoolExecutor(len(racers)) as pool:
        answers = list(pool.map(race, racers))
    assert all(status in (200, 409) for status, _ in answers), answers
    after = whole(world, referral_id, CRISIS)
    logged = [(e["principal"], e["event"]) for e in after["events"][len(before["events"]):]]
    taken = sorted((f"atk-{key}", event) for (key, event, _), (status, _) in zip(racers, answers) if status == 200)
    assert sorted(logged) == taken, (logged, answers)
    state = {k: before[k] for k in ("status", "business_status", "outcome")}
    outcome_of = {(f"atk-{k}", e): o for k, e, o in racers}
    for principal, event in logged:
        code, state = expect(state, principal.removeprefix("atk-"), event, outcome_of[principal, event], CRISIS)
        assert code == 200, f"{event} by {principal} was taken out of turn: {logged}"
    assert {k: after[k] for k in state} == state, (logged, after["status"])


@pytest.mark.parametrize("program", [SUD, CRISIS])
@pytest.mark.parametrize("event", ["cancel", "person_declined"])
@pytest.mark.parametrize("viewer", ["officer", "dispatcher", "co_metro"])
@pytest.mark.parametrize("start", ["completed", "rejected", "cancelled", "failed"])
def test_a_refused_step_never_tells_a_coarse_viewer_the_exact_status(world, start, viewer, event, program):
    if KEYS[viewer][0] in CLINICAL and program != SUD:
        program = SUD                         # a clinical referrer sees the coarse status only of a hidden program
    life = world.lives.setdefault(program, Lifecycle(world, program))
    referral_id = life.shared_of(start)
    status, answer = step(world, viewer, referral_id, event)
    assert status == 409
    _, seen = read(world, viewer, referral_id)
    assert seen["referral"]["status"] == "closed"
    exact = whole(world, referral_id, program)["status"]
    assert exact not in answer["message"], (viewer, program, answer)


def test_a_clinicians_treatment_referral_shows_law_enforcement_of_its_agency_no_clinical_note_or_contact(world):
    person = world.persons["none"]
    note = f"CLINICAL-{uuid.uuid4().hex[:6]} on buprenorphine; relapsed last week"
    _, created = refer(world, "co_metro", person, CRISIS, reason="substance_use_treatment", basis="treatment",
                       note=note, contact={"name": "Sam", "phone": "614-555-7777"})
    referral_id = created["referral"]["id"]
    for viewer in ("officer", "dispatcher"):
        _, seen = read(world, viewer, referral_id)
        _, listed = listing(world, viewer, since=seen["referral"]["created_at"])
        for shown in (text_of(seen), text_of(listed)):
            assert note.split()[0] not in shown and "614-555-7777" not in shown, (viewer, shown)


