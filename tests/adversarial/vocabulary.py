"""The access rules' vocabulary as issues 15 and 19 state them, shared by the adversarial tests' own oracles.

Written out here, not imported from `scoring/`, so that the checkers judge the code against the
rules rather than against itself.
"""

LAW_ENFORCEMENT = frozenset({"dispatcher", "officer"})
CLINICAL = frozenset({"co_responder", "ems"})
RESPONDER_ROLES = LAW_ENFORCEMENT | CLINICAL
#: Agreed behaviour 9: the only call types on which EMS may use the 42 CFR 2.51 medical-emergency exception.
MEDICAL_EMERGENCIES = frozenset({"overdose", "medical", "suicidal_person", "mental_health_crisis"})
CALL_TYPES = ("disturbance", "welfare_check", "overdose", "suicidal_person", "mental_health_crisis", "trespass",
              "domestic", "medical", "missing_person", "other")

# The referral lifecycle as issue 19 states it (the SDOHCC TaskForReferralManagement Task's statuses).
CLOSED = frozenset({"rejected", "completed", "cancelled", "failed"})
WORKING, OPEN = ("accepted", "in-progress"), ("requested", "accepted", "in-progress")
#: What a coarse viewer (law enforcement, a hidden program's referrer) is told of each status.
COARSE = {"requested": "requested", **dict.fromkeys(WORKING, "accepted"), **dict.fromkeys(CLOSED, "closed")}
#: event -> (sides, from statuses, to status (None: stays), business status).
TABLE = {
    "accept": ({"program"}, ("requested",), "accepted", None),
    "reject": ({"program"}, ("requested",), "rejected", None),
    "confirm_identity": ({"program"}, WORKING, None, "identity_confirmed"),
    "contact_attempted": ({"program"}, WORKING, "in-progress", "contact_attempted"),
    "engaged": ({"program"}, WORKING, "in-progress", "engaged"),
    "complete": ({"program"}, WORKING, "completed", None),
    "fail": ({"program"}, WORKING, "failed", None),
    "cancel": ({"referrer"}, OPEN, "cancelled", None),
    "person_declined": ({"program", "referrer"}, OPEN, "cancelled", None),
}
#: The business statuses from the least to the furthest progress: a referral's is the furthest reached.
PROGRESS = ("identity_confirmed", "contact_attempted", "engaged")
