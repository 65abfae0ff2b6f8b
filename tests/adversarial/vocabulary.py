"""The access rules' vocabulary as issue 15 states it, shared by the adversarial tests' own oracles.

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
