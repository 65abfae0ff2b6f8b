"""The shapes of the service's answers, as pydantic models: the OpenAPI document's response schemas.

The endpoints build their JSON directly (the hot path does not pay for a second validation);
these models describe it, and the schemathesis test (tests/test_openapi.py) checks every answer
the running service gives against them, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.service.stewardship import Reason

GRADES = Literal["certain", "probable", "possible"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Explanation(_Closed):
    field: str = Field(description="the comparison (a field or a group of fields)")
    level: str = Field(description="the comparison level this pair fell into")
    weight: float = Field(description="its match weight in bits; the weights sum to the total")


class Candidate(_Closed):
    person_id: str
    record_id: str = Field(description="the person's best-matching record: for responders an opaque reference "
                                       "(`ref-` and 20 hex digits, stable for one record); stewards get the record id")
    match_probability: float = Field(ge=0, le=1)
    match_weight: float
    grade: GRADES
    explanation: list[Explanation]


class Resolution(_Closed):
    status: Literal["resolved", "ambiguous", "no_match", "unavailable"]
    candidates: list[Candidate] = Field(description="best first; empty for no_match and unavailable")


class Source(_Closed):
    item_id: str
    agency: str | None = Field(description="the agency holding this copy; every copy listed was itself released to "
                                           "the requester")
    source_type: str | None


class Why(_Closed):
    term: str
    contribution: float


class Item(_Closed):
    item_id: str
    person_id: str
    rank: int = Field(ge=1)
    score: float = Field(description="the sum of the `why` contributions")
    category: str
    code: str | None
    text: str | None
    sources: list[Source] = Field(description="every agency's copy merged into this line")
    corroboration: int = Field(ge=1, description="how many agencies hold it")
    observed_at: str | None
    last_verified_at: str | None
    status: str
    why: list[Why]
    notices: list[str] = Field(description="e.g. 'possible match', 'unverified since …'")


class Withheld(_Closed):
    reason: str
    count: int = Field(ge=1)
    route_to: str | None = Field(description="where a responder can ask for what was withheld")


class Versions(_Closed):
    matcher: str
    ranker: str | None
    policy: str


class Engagement(_Closed):
    """A program working with the person (scoring.referral_policy.engagement_notice): never a reason or outcome."""
    message: str
    public_line: str
    program: str | None = None


class BriefingAnswer(_Closed):
    incident_id: str
    request_id: str
    resolution: Resolution
    items: list[Item]
    withheld: list[Withheld]
    engagement: list[Engagement]
    versions: Versions


class Referral(BaseModel):
    """A referral as the caller's side may see it: which fields it holds depends on the side and role
    (scoring/referral_policy.py), so only these three are always there."""
    model_config = ConfigDict(extra="allow")
    id: int
    status: str
    program: dict


class ReferralAnswer(_Closed):
    referral: Referral


class ReferralList(_Closed):
    referrals: list[Referral]
    count: int


class MatchAnswer(_Closed):
    request_id: str
    resolution: Resolution
    versions: Versions


class RecordWritten(_Closed):
    """A feed gets `record_id` and `created` only; an admin also the linkage (api.web.feeds)."""
    record_id: str
    created: bool = Field(description="true when the record was new (201), false when it replaced one (200)")
    person_id: str | None = Field(default=None, description="admin keys only: the person the record belongs to")
    joined: bool | None = Field(default=None, description="admin keys only: true when the record joined an existing "
                                "person at `certain` grade")
    review_pair: dict | None = Field(default=None, description="admin keys only: the pair opened for a steward when "
                                     "it joined no person, or when a rule held it apart from its best match's person "
                                     "(the rule in `detail`)")


class ItemWritten(_Closed):
    item_id: str
    record_id: str


class ConsentWritten(_Closed):
    consent_id: str
    record_id: str


class FeedbackWritten(_Closed):
    id: int


class IdentityRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    record_id: str


class Person(_Closed):
    person_id: str
    records: list[IdentityRecord]


class AuditEvent(BaseModel):
    model_config = ConfigDict(extra="allow")           # the event's own fields follow these
    seq: int
    at: str
    request_id: str | None
    principal: str | None
    action: str


class AuditEvents(_Closed):
    events: list[AuditEvent]


class Health(_Closed):
    status: str


class IndexState(_Closed):
    generation: int = Field(description="the index this worker answers from; 1 is the one built at start-up")
    newest_generation: int = Field(description="the newest index the replica has swapped in")
    state: Literal["serving", "building", "failed"] = Field(
        description="building: a fresh index is being built after a bulk load, while this one answers; "
                    "failed: the last build failed and this index still answers")
    progress: float | None = Field(description="of the build in progress, 0 to 1")
    started_at: float | None = Field(description="Unix time the build in progress, or the failed one, started")


class Ready(_Closed):
    status: Literal["ready"]
    records: int
    index: IndexState


class ItemRetracted(_Closed):
    item_id: str
    record_id: str
    status: Literal["retracted", "entered_in_error"]
    previous_status: str
    changed: bool = Field(description="false when the item already had that status (still audited)")


class ConsentRevoked(_Closed):
    consent_id: str
    record_id: str
    revoked_at: str = Field(description="the revocation in force (the earliest ever recorded)")
    previous_revoked_at: str | None
    changed: bool


class RegistryErased(_Closed):
    person_id: str
    records: int
    context_items: int
    consents: int
    feedback: int
    record_ids: list[str]
    item_ids: list[str]
    consent_ids: list[str]


class FhirBundle(BaseModel):
    """A FHIR R4 `searchset` Bundle (validated against the R4 model in tests/test_fhir.py)."""
    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Bundle"]
    type: Literal["searchset"]
    total: int
    entry: list[dict] = []


class FhirResource(BaseModel):
    """A FHIR R4 resource (ServiceRequest, Task), validated against the R4B models by the tests."""
    model_config = ConfigDict(extra="allow")
    resourceType: str
    id: str


class OperationOutcome(BaseModel):
    """A FHIR R4 OperationOutcome: every error of the FHIR endpoint."""
    model_config = ConfigDict(extra="allow")
    resourceType: Literal["OperationOutcome"]
    issue: list[dict]


REVIEW_DECISIONS = Literal["match", "not_a_match", "unsure"]


class ReviewPair(_Closed):
    """A pair of records in the steward queue (api.review.queue)."""
    pair_id: int
    record_id_l: str
    record_id_r: str = Field(description="for a new-record pair, the new record: the one a not-a-match splits out")
    person_id_l: str | None
    person_id_r: str | None
    agencies: list[str] = Field(description="the agencies of the two records")
    match_probability: float = Field(ge=0, le=1, description="as scored when the pair was opened (or last seen open)")
    reason: Reason
    detail: str | None = Field(description="held_apart: the rule that kept the two persons apart "
                                           "(few links, date of birth, given name, suffix, generation)")
    reason_text: str
    recent_incident: bool = Field(description="either record's person was a candidate in an incident of the last 7 days")
    created_at: str
    age_days: float
    status: Literal["open", "decided"]
    decision: REVIEW_DECISIONS | None = Field(description="the live decision of a decided pair")
    decision_id: int | None


class ReviewQueue(_Closed):
    total: int = Field(ge=0, description="how many pairs match the filters")
    pairs: list[ReviewPair] = Field(description="in priority order: recent incident, closest to 0.5 (held_apart pairs "
                                                "count as 0.5), oldest")


class ReviewDecision(_Closed):
    decision_id: int
    pair_id: int | None
    record_id_l: str
    record_id_r: str
    decision: REVIEW_DECISIONS
    note: str | None
    reviewer: str
    created_at: str
    effect: dict = Field(description='{"merged": {…}} / {"split": {…}} / {}')
    undone_at: str | None
    undone_by: str | None


class ReviewPairDetail(_Closed):
    entry: ReviewPair
    left: IdentityRecord
    right: IdentityRecord
    explanation: list[Explanation] = Field(description="the prior first, then each comparison; the weights sum to "
                                                       "match_weight")
    match_weight: float = Field(description="under the live matcher, now")
    match_probability: float = Field(ge=0, le=1)
    decisions: list[ReviewDecision] = Field(description="this pair's decisions, oldest first, undone ones included")


class DecisionResult(_Closed):
    decision_id: int
    pair_id: int
    decision: REVIEW_DECISIONS
    note: str | None
    reviewer: str = Field(description="who decided")
    created_at: str = Field(description="when it was decided")
    effect: dict = Field(description='{"merged": {…}} / {"split": {…}} / {"restored": {…}} / {}')
    next_pair_id: int | None = Field(description="the next open pair in priority order")
    undone_at: str | None
    undone_by: str | None = Field(default=None, description="who undid it")


class PersonSplit(_Closed):
    event_id: int
    record_id: str
    from_person_id: str
    to_person_id: str
    records_moved: int = Field(ge=1, description="the record and any record a live match decision holds to it")
    record_ids: list[str]


class PersonsMerged(_Closed):
    event_id: int
    kept_person_id: str
    merged_person_id: str
    records_moved: int = Field(ge=1)
    record_ids: list[str]


class PersonEventUndone(_Closed):
    event_id: int
    kind: Literal["merge", "split"]
    undone_at: str
    restored: dict[str, str] = Field(description="record id → the person it is back in")
