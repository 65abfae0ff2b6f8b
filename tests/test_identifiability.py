"""What a subject shares with its person's records decides what any resolver could find."""

import pandas as pd

from evaluation.linkage.identifiability import GIVEN_ONLY, MORE, NOTHING, identifiability
from matching.query import Subject
from matching.standardise import standardise

RECORDS = pd.DataFrame([
    {"record_id": "RMS-1", "given_name": "James", "family_name": "Emery", "dob": "2000-02-12", "sex": "M",
     "phone": "614-317-4692", "street": "931 Bonilla Ln", "postcode": "43060"},
    {"record_id": "988-1", "given_name": "Lisa", "phone": "380-910-0514"},
])
TRUTH = pd.Series({"RMS-1": "P1", "988-1": "P2"})


def classes(*subjects: dict, keys: list[str]) -> list:
    return identifiability([Subject.model_validate(s) for s in subjects], keys, standardise(RECORDS), TRUTH)


def test_a_misheard_surname_still_counts_as_shared():
    assert classes({"given_name": "JAMES", "family_name": "EMEDY", "approx_age": 29}, keys=["P1"]) == [MORE]


def test_sex_and_age_alone_identify_nobody():
    assert classes({"sex": "M", "approx_age": 26}, keys=["P1"]) == [NOTHING]


def test_a_first_name_and_someone_elses_phone_is_a_given_name_only():
    assert classes({"given_name": "Melissa", "family_name": "Shaw", "phone": "614-555-0100"}, keys=["P2"]) == [GIVEN_ONLY]
    assert classes({"given_name": "Lisa", "phone": "380.910.0514"}, keys=["P2"]) == [MORE]


def test_subjects_without_a_record_get_no_class():
    assert classes({"given_name": "Ann"}, {"given_name": "JAMES", "dob": "2000-02-12"}, keys=["", "P1"]) == [None, MORE]
