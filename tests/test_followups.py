"""Follow-up rules (issue 19): incidents open tasks for county teams; duplicates merge; what responders learn."""

from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import insert, select

from api.service.keys import create_key
from api.service.store import audit_events, consents, referral_events, referrals
from api.web.app import create_app
from evaluation.synth.incidents import incident_queries
from scoring.followup import FollowUpRules
from scoring.item import Purpose, Role
from scoring.rules import RulesError
from tests.loaded_county import COUNTY_NOW, county_clock, loaded_county
from tests.test_referrals import _auth, _person, _plant, _read, _step
from tests.programs import register_programs

GOOD_RULE = """[[rule]]
id = "od"
call_types = ["overdose"]
min_grade = "probable"
program_kind = "post_overdose"
reason = "post_overdose_outreach"
due_within_hours = 24
merge_window_hours = 72
"""


@pytest.mark.parametrize("change, named", [
    (("\"overdose\"]", "\"overdoze\"]"), "call_types"),
    (("\"probable\"", "\"likely\""), "min_grade"),
    (("due_within_hours = 24", "due_within_hours = 0"), "due_within_hours"),
    (("merge_window_hours = 72", "merge_window_hours = 72\nteam = \"x\""), "team"),
    (("id = \"od\"", "id = \"Bad Id\""), "id"),
])
def test_a_rules_file_that_does_not_fit_is_refused_naming_the_rule_and_the_key(tmp_path, change, named):
    path = tmp_path / "followup.toml"
    path.write_text(GOOD_RULE.replace(*change))
    with pytest.raises(RulesError, match=rf"rule 1 .*{named}"):
        FollowUpRules.load(path)
    path.write_text(GOOD_RULE + GOOD_RULE)
    with pytest.raises(RulesError, match="unique"):
        FollowUpRules.load(path)


def test_the_shipped_rules_fire_on_their_call_types_only_at_probable_or_better():
    rules = FollowUpRules.load()
    assert [r.id for r in rules.firing("overdose", "probable")] == ["post_overdose_next_day"]
    assert [r.id for r in rules.firing("mental_health_crisis", "certain")] == ["mental_health_crisis_24h"]
    assert rules.firing("overdose", "possible") == [] and rules.firing("trespass", "certain") == []


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    directory = tmp_path_factory.mktemp("county")
    db, store = loaded_county(directory, 500, 31)
    register_programs(store, "HARBOR_SUD", "MOBILE_CRISIS")
    keys = {"officer": create_key(store, "pd-1", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY]),
            "sud": create_key(store, "sud-1", Role.provider, "HARBOR_SUD", []),
            "crisis": create_key(store, "mc-1", Role.provider, "MOBILE_CRISIS", [])}
    incidents = pd.read_csv(directory / "incidents.csv", dtype=str, keep_default_na=False)
    return create_app(db, clock=county_clock), keys, store, list(zip(incidents.to_dict("records"),
                                                                     incident_queries(incidents)))


def _brief_as(client, key, row, subject, call_type, incident_id=None):
    body = {"incident": {"id": incident_id or row["incident_id"], "call_type": call_type,
                         "received_at": row["received_at"]},
            "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": "LAW"}
    return client.post("/v1/briefings", json=body, headers=_auth(key)).get_json()


def _resolved(client, key, cases, call_type, skip=0):
    """(row, subject, answer) of the first incident (after `skip`) whose briefing resolves at probable or better."""
    for row, subject in cases:
        answer = _brief_as(client, key, row, subject, call_type)
        top = answer["resolution"]["candidates"][:1]
        if answer["resolution"]["status"] == "resolved" and top[0]["grade"] in ("certain", "probable"):
            if skip == 0:
                return row, subject, answer
            skip -= 1
    raise AssertionError("no incident resolved")


def _tasks(store, person):
    with store.engine.connect() as connection:
        return connection.execute(select(referrals).where(referrals.c.person_id == person)).all()


def test_an_overdose_opens_one_next_day_task_for_the_post_overdose_team_and_repeats_merge(county):
    app, keys, store, cases = county
    client = app.test_client()
    row, subject, _ = _resolved(client, keys["officer"], cases, "overdose")
    person = _person(store, row["incident_id"])
    [task] = _tasks(store, person)
    assert task.program == "HARBOR_SUD" and task.opened_by == "rule:post_overdose_next_day"
    assert task.grade in ("certain", "probable") and task.basis == "follow_up_rule"
    assert task.due_by[:10] == (COUNTY_NOW + timedelta(hours=24)).date().isoformat()
    _brief_as(client, keys["officer"], row, subject, "overdose", incident_id=row["incident_id"] + "-again")
    [same] = _tasks(store, person)
    assert same.id == task.id
    with store.engine.connect() as connection:
        events = [e.event for e in connection.execute(select(referral_events).where(referral_events.c.referral_id == task.id))]
        actions = [a for (a,) in connection.execute(select(audit_events.c.action))]
    assert events == ["requested", "incident_merged"] and {"follow_up_opened", "follow_up_merged"} <= set(actions)
    shown = _read(client, keys["sud"], task.id).get_json()["referral"]
    assert shown["grade"] == task.grade and shown["opened_by"] == "rule:post_overdose_next_day"
    assert _read(client, keys["officer"], task.id).status_code == 404      # only the team sees a task
    listed = client.get("/v1/referrals", headers=_auth(keys["officer"])).get_json()["referrals"]
    assert task.id not in [r["id"] for r in listed]


def test_a_possible_match_or_another_call_type_opens_no_task(county):
    app, keys, store, cases = county
    client = app.test_client()
    row, subject, _ = _resolved(client, keys["officer"], cases, "trespass", skip=1)
    assert _tasks(store, _person(store, row["incident_id"])) == []


def test_a_briefing_tells_an_officer_only_that_a_county_team_is_engaged_unless_a_consent_names_it(county):
    app, keys, store, cases = county
    client = app.test_client()
    row, subject, _ = _resolved(client, keys["officer"], cases, "overdose", skip=2)
    person = _person(store, row["incident_id"])
    [task] = _tasks(store, person)
    assert _brief_as(client, keys["officer"], row, subject, "welfare_check", "w-1")["engagement"] == []
    _step(client, keys["sud"], task.id, "accept")
    answer = _brief_as(client, keys["officer"], row, subject, "welfare_check", "w-2")
    assert answer["engagement"] == [{"message": "A county co-responder team is engaged with this person; "
                                                "reach it via 555-0199", "public_line": "555-0199"}]
    assert "HARBOR" not in str(answer) and "overdose" not in str(answer["engagement"])
    tag = "fu3"
    _plant(store, person, tag)
    with store.begin() as connection:
        connection.execute(insert(consents).values(
            consent_id=f"{tag}-c", record_id=f"{tag}-HARBOR_SUD", recipients="METRO_PD", purposes="LAW",
            categories="PART2", valid_from="2020-01-01", updated_at=COUNTY_NOW.isoformat()))
    named = _brief_as(client, keys["officer"], row, subject, "welfare_check", "w-3")["engagement"]
    assert named[0]["program"] == "HARBOR_SUD"
