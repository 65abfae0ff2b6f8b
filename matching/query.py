"""The subject of one query, as a CAD call-taker captured it, validated and standardised.

A subject is any subset of the record fields plus `approx_age` (years, relative to
`received_at`, or today when absent). Unknown fields and malformed values are refused with a
message per field (pydantic), so a typo such as `dob: "1980-13-01"` is an error, not a silent
miss. An empty subject ("unknown person") is valid and resolves to `no_match`.
`standardise_subject` gives the matcher's columns, with the birth year estimated from the
approximate age the way agencies record it (year of the call minus age).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from matching.standardise import standardise_row

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]

#: Record fields a subject may carry (the canonical record columns a query can hold).
SUBJECT_FIELDS = ("given_name", "middle_name", "family_name", "name_suffix", "aliases", "dob", "birth_year",
                  "sex", "phone", "email", "street", "city", "state", "postcode", "ssn_last4")


class Subject(BaseModel):
    """The partial description of the person an incident concerns."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    given_name: Text | None = None
    middle_name: Text | None = None
    family_name: Text | None = None
    name_suffix: Text | None = None
    aliases: Text | None = None
    dob: date | None = Field(default=None, description="date of birth, YYYY-MM-DD")
    birth_year: int | None = Field(default=None, ge=1850, le=2100)
    approx_age: int | None = Field(default=None, ge=0, le=120, description="estimated age in years")
    sex: Text | None = None
    phone: Text | None = None
    email: Text | None = None
    street: Text | None = None
    city: Text | None = None
    state: Text | None = None
    postcode: Text | None = None
    ssn_last4: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")] | None = None
    received_at: datetime | None = Field(default=None, description="when the call was received; approx_age is relative to it")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_absent(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("dob", mode="before")
    @classmethod
    def _iso_dob(cls, value):
        if isinstance(value, str) and len(value.strip()) != 10:
            raise ValueError("must be a date as YYYY-MM-DD")
        return value

    @property
    def reference_date(self) -> date:
        """The date `approx_age` is relative to: the call's date, or today."""
        if self.received_at is None:
            return datetime.now(timezone.utc).date()
        return self.received_at.date()


def standardise_subject(subject: Subject) -> tuple[dict[str, object], bool]:
    """The matcher's columns for `subject`, and whether its birth year is only an estimate."""
    fields = {f: getattr(subject, f) for f in SUBJECT_FIELDS}
    if fields["dob"] is not None:
        fields["dob"] = fields["dob"].isoformat()
    approximate = False
    if fields["dob"] is None and fields["birth_year"] is None and subject.approx_age is not None:
        # The agencies' own convention for approximate ages (year of contact minus age), so an
        # estimate compares like with like against CAD and EMS records' estimated birth years.
        fields["birth_year"] = subject.reference_date.year - subject.approx_age
        approximate = True
    return standardise_row(fields), approximate


def field_messages(error: ValidationError) -> dict[str, str]:
    """Pydantic's errors as {field: message}, for HTTP 422 bodies and CLI messages."""
    out: dict[str, str] = {}
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "subject"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            in_subject = len(item["loc"]) == 1 or item["loc"][0] == "subject"
            message = (f"unknown field (allowed: {', '.join(SUBJECT_FIELDS + ('approx_age', 'received_at'))})"
                       if in_subject else "unknown field")
        out.setdefault(field, message)
    return out
