"""Context items, consents and requesting principals: the typed inputs of the access policy.

The vocabularies (item categories, call types, legal categories, roles, purposes) are those of the data model
in docs/architecture.md. Items and consents are pydantic models so a feed's bad row is
refused field by field; `record_agency` on both is filled in by whoever resolved the record (the
policy never looks a record up itself).
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Category(str, Enum):
    communication_need = "communication_need"
    sensory_need = "sensory_need"
    trauma_trigger = "trauma_trigger"
    effective_approach = "effective_approach"
    ineffective_approach = "ineffective_approach"
    medical = "medical"
    cognitive_developmental = "cognitive_developmental"
    safety_flag = "safety_flag"
    service_connection = "service_connection"
    legal_status = "legal_status"
    housing_context = "housing_context"
    recent_event = "recent_event"


class CallType(str, Enum):
    """The incident's call type, as the CAD sends it: the rules weigh categories per call type
    (`rules.toml`), the scorecard has a feature per call type and category (`scoring.ranker_features`),
    and the Part 2 medical-emergency exception names call types (`[policy]`). Order matters: it is
    the scorecard's feature order."""

    disturbance = "disturbance"
    welfare_check = "welfare_check"
    overdose = "overdose"
    suicidal_person = "suicidal_person"
    mental_health_crisis = "mental_health_crisis"
    trespass = "trespass"
    domestic = "domestic"
    medical = "medical"
    missing_person = "missing_person"
    other = "other"


class LegalCategory(str, Enum):
    CJI = "CJI"                                  # criminal-justice information
    PHI = "PHI"                                  # HIPAA protected health information
    PART2 = "PART2"                              # 42 CFR Part 2 substance-use treatment
    VOLUNTARY_REGISTRY = "VOLUNTARY_REGISTRY"    # the person or a caregiver asked for it to be shared
    AGENCY_OPERATIONAL = "AGENCY_OPERATIONAL"


class Role(str, Enum):
    dispatcher = "dispatcher"
    officer = "officer"
    co_responder = "co_responder"
    ems = "ems"
    feed = "feed"
    steward = "steward"
    auditor = "auditor"
    admin = "admin"
    provider = "provider"            # a receiving program's staff: its referrals and follow-up tasks (scoring.referral)


class Purpose(str, Enum):
    EMERGENCY = "EMERGENCY"
    LAW = "LAW"
    TREATMENT = "TREATMENT"
    THREAT = "THREAT"


LEGAL_CATEGORIES = frozenset(c.value for c in LegalCategory)
CONSENT_CATEGORIES = LEGAL_CATEGORIES | frozenset(c.value for c in Category)   # what a consent's categories may name
ID_LENGTH = 200                                  # the store's id columns (String(200))

LAW_ENFORCEMENT = frozenset({Role.dispatcher, Role.officer})
CLINICAL = frozenset({Role.co_responder, Role.ems})
RESPONDERS = LAW_ENFORCEMENT | CLINICAL


class Status(str, Enum):
    active = "active"
    retracted = "retracted"
    entered_in_error = "entered_in_error"


def _utc(value):
    """Naive times (a CSV's plain dates) are UTC, so every comparison is between aware datetimes."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return _naive_as_utc(value)
    return value


@lru_cache(maxsize=1 << 16)
def _naive_as_utc(value: datetime) -> datetime:
    """A load's items share a few thousand plain dates among hundreds of thousands of rows: each is made aware once."""
    return value.replace(tzinfo=timezone.utc)


def _split(value):
    if isinstance(value, str):
        return [v for v in value.split("|") if v]
    return value


class ContextItem(BaseModel):
    """One thing an agency knows that may help responders, with its legal envelope."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    item_id: str = Field(min_length=1, max_length=ID_LENGTH)
    record_id: str = Field(min_length=1, max_length=ID_LENGTH)
    record_agency: str | None = None
    category: Category
    code: str = Field(min_length=1)
    text: str = ""
    legal_category: LegalCategory
    security_labels: tuple[str, ...] = ()
    consent_id: str | None = None
    disclosure_basis: str | None = None
    source_type: str | None = None
    observed_at: datetime | None = None
    last_verified_at: datetime | None = None
    review_due: datetime | None = None
    expires_at: datetime | None = None
    status: Status = Status.active

    _labels = field_validator("security_labels", mode="before")(_split)
    _times = field_validator("observed_at", "last_verified_at", "review_due", "expires_at", mode="after")(_utc)

    @field_validator("consent_id", "disclosure_basis", "source_type", "observed_at", "last_verified_at",
                     "review_due", "expires_at", mode="before")
    @classmethod
    def _empty_is_null(cls, value):
        return None if value == "" else value

    @field_validator("disclosure_basis", mode="after")
    @classmethod
    def _basis_upper(cls, value):
        """One spelling of a basis (`serious_threat`, `SERIOUS_THREAT`): the policy compares upper-case codes."""
        return value.strip().upper() if isinstance(value, str) else value


class Consent(BaseModel):
    """A 42 CFR 2.31 consent: who may receive which categories, for what, until when."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    consent_id: str = Field(min_length=1, max_length=ID_LENGTH)
    record_id: str = Field(min_length=1, max_length=ID_LENGTH)
    record_agency: str | None = None
    recipients: tuple[str, ...]                     # agency names and/or role names
    purposes: tuple[Purpose, ...]
    categories: tuple[str, ...]                     # legal categories and/or item categories
    valid_from: datetime
    valid_until: datetime | None = None
    revoked_at: datetime | None = None
    discloser: str | None = None
    description: str | None = None
    signed_at: datetime | None = None

    _lists = field_validator("recipients", "purposes", "categories", mode="before")(_split)
    _times = field_validator("valid_from", "valid_until", "revoked_at", "signed_at", mode="after")(_utc)

    @field_validator("valid_until", "revoked_at", "discloser", "description", "signed_at", mode="before")
    @classmethod
    def _empty_is_null(cls, value):
        return None if value == "" else value


class Principal(BaseModel):
    """Who is asking: an API key's role and agency, and the purposes it may claim."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role
    agency: str
    purposes: tuple[Purpose, ...] = ()
