"""A county dated relative to a day (`as_of`): incidents in the past, ages consistent, the demo shows items."""

from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest

from api.cli.demo import demo_briefing
from api.service.keys import create_key
from api.web.app import create_app
from evaluation.synth.county import generate_county
from evaluation.synth.dating import years_back_from
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

FILES = ("records", "incidents", "context_items", "consents", "demographics", "truth", "feedback", "relevance")


def _read(directory, name):
    return pd.read_csv(directory / f"{name}.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def counties(tmp_path_factory):
    fixed, moved = tmp_path_factory.mktemp("fixed"), tmp_path_factory.mktemp("moved")
    generate_county(400, 11, fixed, progress=False)
    generate_county(400, 11, moved, progress=False, as_of=date(2031, 3, 5))
    return fixed, moved


def test_the_default_calendar_is_unchanged_and_as_of_the_window_end_moves_nothing(counties, tmp_path):
    fixed, _ = counties
    generate_county(400, 11, tmp_path, progress=False, as_of=date(2026, 7, 1))
    for name in FILES:
        assert (tmp_path / f"{name}.csv").read_bytes() == (fixed / f"{name}.csv").read_bytes(), name


def test_as_of_moves_every_date_by_whole_years_so_every_incident_is_just_before_it(counties):
    fixed, moved = counties
    years = years_back_from(date(2031, 3, 5))
    assert years == 4
    received = pd.to_datetime(_read(moved, "incidents")["received_at"], utc=True)
    as_of = pd.Timestamp("2031-03-05", tz="UTC")
    assert (received < as_of).all() and (received > as_of - pd.Timedelta(days=2 * 366)).all()
    for name, columns in (("records", ("dob", "recorded_at", "birth_year")), ("incidents", ("received_at", "subject_dob")),
                          ("context_items", ("observed_at", "expires_at")), ("consents", ("valid_from", "revoked_at")),
                          ("demographics", ("birth_year",))):
        before, after = _read(fixed, name), _read(moved, name)
        for column in columns:
            was, now = before[column], after[column]
            assert ((was == "") == (now == "")).all()
            dated = was.str.match(r"^\d{4}")
            assert (now[dated].str[:4].astype(int) - was[dated].str[:4].astype(int) == years).all(), (name, column)
            assert (now[dated].str[4:10] == was[dated].str[4:10]).all() or column in ("dob", "subject_dob")
    unchanged = ("subject_approx_age", "subject_given_name", "person_key", "call_type")
    assert _read(fixed, "incidents")[list(unchanged)].equals(_read(moved, "incidents")[list(unchanged)])
    texts = _read(moved, "context_items")["text"].str.extract(r"; (\d{4})-\d\d\)$")[0].dropna().astype(int)
    assert texts.min() >= 2018 + years


def test_moved_eastern_times_carry_the_offset_of_their_new_date(counties):
    _, moved = counties
    stamps = _read(moved, "incidents")["received_at"]
    for stamp in stamps:
        local = datetime.fromisoformat(stamp)
        march = date(local.year, 3, 8 + (6 - date(local.year, 3, 8).weekday()) % 7)        # 2nd Sunday of March
        november = date(local.year, 11, 1 + (6 - date(local.year, 11, 1).weekday()) % 7)   # 1st Sunday of November
        summer = march < local.date() < november
        if local.date() not in (march, november):
            assert local.utcoffset() == timedelta(hours=-4 if summer else -5), stamp


def test_the_demo_briefing_shows_items_at_todays_clock(tmp_path):
    today = datetime.now(timezone.utc).date()
    db, store = loaded_county(tmp_path, 1500, 7, as_of=today)
    key = create_key(store, "demo-dispatcher", Role.dispatcher, "COUNTY_911", [Purpose.EMERGENCY, Purpose.LAW])
    body = demo_briefing(tmp_path)
    answer = create_app(db).test_client().post("/v1/briefings", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["resolution"]["status"] == "resolved" and answer.get_json()["items"]
