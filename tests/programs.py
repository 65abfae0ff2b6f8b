"""The receiving programs the referral tests register: one of each kind they need, Part 2 or not."""

from api.service.referrals import register_program
from api.service.store import Store
from scoring.referral import ProgramKind
from scoring.referral_policy import Program

PROGRAMS = {program.name: program for program in (
    Program("MOBILE_CRISIS", ProgramKind.mobile_crisis, False, "555-0101"),
    Program("HOUSING_TEAM", ProgramKind.housing_outreach, False, "555-0102"),
    Program("HARBOR_SUD", ProgramKind.post_overdose, True, "555-0199"),       # a 42 CFR Part 2 program
)}


def register_programs(store: Store, *names: str) -> None:
    """Register the programs `names` of `PROGRAMS` in `store`."""
    for name in names:
        register_program(store, PROGRAMS[name], by="test")
