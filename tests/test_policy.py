"""The access policy: default deny, Part 2 only under consent or the EMS emergency exception, CJI to law enforcement."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scoring.item import Category, Consent, ContextItem, LegalCategory, Principal, Purpose, Role, Status
from scoring.policy import SERIOUS_THREAT, decide

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
AGENCIES = ["METRO_PD", "COUNTY_EMS", "COUNTY_BH", "REGISTRY"]
EXAMPLES = settings(max_examples=1000, deadline=None)

offsets = st.integers(-400, 400).map(lambda d: NOW + timedelta(days=d))
principals = st.builds(Principal, name=st.just("key-1"), role=st.sampled_from(list(Role)), agency=st.sampled_from(AGENCIES),
                       purposes=st.lists(st.sampled_from(list(Purpose)), unique=True).map(tuple))
items = st.builds(
    ContextItem, item_id=st.just("I-1"), record_id=st.just("EHR-1"), record_agency=st.sampled_from(AGENCIES + [None]),
    category=st.sampled_from(list(Category)), code=st.just("CODE"), legal_category=st.sampled_from(list(LegalCategory)),
    status=st.sampled_from(list(Status)), expires_at=st.none() | offsets, observed_at=st.none() | offsets,
    last_verified_at=st.none() | offsets, disclosure_basis=st.sampled_from([None, SERIOUS_THREAT, "TREATMENT"]),
    source_type=st.sampled_from(["clinician", "officer", "caregiver"]))
consents = st.lists(st.builds(
    Consent, consent_id=st.sampled_from(["C-1", "C-2", "C-3"]), record_id=st.just("EHR-9"),
    record_agency=st.sampled_from(AGENCIES + [None]),
    recipients=st.lists(st.sampled_from(AGENCIES + [r.value for r in Role]), max_size=3).map(tuple),
    purposes=st.lists(st.sampled_from(list(Purpose)), max_size=3).map(tuple),
    categories=st.lists(st.sampled_from([c.value for c in LegalCategory] + [c.value for c in Category]), max_size=3).map(tuple),
    valid_from=offsets, valid_until=st.none() | offsets, revoked_at=st.none() | offsets), max_size=3)
purposes = st.sampled_from(list(Purpose))


def _consent_allows(c: Consent, item: ContextItem, who: Principal, purpose: Purpose) -> bool:
    """Written out independently of scoring.consent, to check the policy against the law, not against itself."""
    in_force = c.valid_from <= NOW and (c.valid_until is None or NOW < c.valid_until) and (c.revoked_at is None or NOW < c.revoked_at)
    names_requester = who.agency in c.recipients or who.role.value in c.recipients
    category = item.legal_category.value in c.categories or item.category.value in c.categories
    return in_force and names_requester and purpose in c.purposes and category and c.record_agency == item.record_agency is not None


@EXAMPLES
@given(principals, purposes, items, consents)
def test_part2_item_never_reaches_anyone_without_consent_or_the_ems_emergency_exception(who, purpose, item, cs):
    decision = decide(who, purpose, item, cs, NOW)
    if decision.permitted and item.legal_category == LegalCategory.PART2:
        by_consent = any(_consent_allows(c, item, who, purpose) for c in cs)
        emergency = who.role == Role.ems and purpose == Purpose.EMERGENCY
        assert by_consent or emergency
        if not by_consent:
            assert decision.reason == "PERMIT_PART2_MEDICAL_EMERGENCY"
            assert {"disclosed_to", "disclosing_agency", "disclosed_at", "nature_of_emergency"} <= decision.log.keys()


@EXAMPLES
@given(principals, purposes, items, consents)
def test_cji_item_never_reaches_a_role_outside_law_enforcement(who, purpose, item, cs):
    decision = decide(who, purpose, item, cs, NOW)
    if item.legal_category == LegalCategory.CJI and who.role not in (Role.dispatcher, Role.officer):
        assert not decision.permitted


@EXAMPLES
@given(principals, purposes, items, consents)
def test_expired_or_inactive_item_never_passes(who, purpose, item, cs):
    decision = decide(who, purpose, item, cs, NOW)
    if (item.expires_at is not None and item.expires_at <= NOW) or item.status != Status.active:
        assert not decision.permitted and not decision.disclose_existence


@EXAMPLES
@given(principals, purposes, items, consents)
def test_withheld_part2_or_cji_item_is_never_revealed_to_exist(who, purpose, item, cs):
    decision = decide(who, purpose, item, cs, NOW)
    if not decision.permitted and item.legal_category in (LegalCategory.PART2, LegalCategory.CJI):
        assert not decision.disclose_existence


@EXAMPLES
@given(principals, purposes, items, consents)
def test_default_deny_only_responders_with_a_granted_purpose_see_items(who, purpose, item, cs):
    decision = decide(who, purpose, item, cs, NOW)
    assert decision.reason.startswith("PERMIT_" if decision.permitted else "DENY_")
    if who.role not in (Role.dispatcher, Role.officer, Role.co_responder, Role.ems) or purpose not in who.purposes:
        assert not decision.permitted


def _item(legal: LegalCategory, **kw) -> ContextItem:
    return ContextItem(item_id="I-1", record_id="EHR-1", record_agency="COUNTY_BH", category=kw.pop("category", "medical"),
                       code="CODE", legal_category=legal, **kw)


def _who(role: str, *purposes: str, agency: str = "METRO_PD") -> Principal:
    return Principal(name="k", role=role, agency=agency, purposes=purposes)


def _consent(**kw) -> Consent:
    base = dict(consent_id="C-1", record_id="EHR-9", record_agency="COUNTY_BH", recipients="co_responder|COUNTY_EMS",
                purposes="TREATMENT|EMERGENCY", categories="PART2", valid_from=NOW - timedelta(days=30))
    return Consent(**{**base, **kw})


def test_part2_with_a_consent_naming_the_role_is_permitted_and_logs_the_consent():
    decision = decide(_who("co_responder", "TREATMENT"), Purpose.TREATMENT, _item(LegalCategory.PART2), [_consent()], NOW)
    assert (decision.permitted, decision.reason, decision.consent_id) == (True, "PERMIT_PART2_CONSENT", "C-1")


@pytest.mark.parametrize("change", [dict(revoked_at=NOW - timedelta(days=1)), dict(valid_until=NOW),
                                   dict(valid_from=NOW + timedelta(days=1)), dict(record_agency="METRO_PD"),
                                   dict(purposes="LAW"), dict(categories="PHI"), dict(recipients="officer")])
def test_part2_consent_that_is_revoked_lapsed_elsewhere_or_for_something_else_does_not_cover(change):
    decision = decide(_who("co_responder", "TREATMENT"), Purpose.TREATMENT, _item(LegalCategory.PART2), [_consent(**change)], NOW)
    assert (decision.permitted, decision.reason, decision.disclose_existence) == (False, "DENY_PART2_NO_CONSENT", False)


def test_ems_medical_emergency_exception_reaches_part2_and_logs_the_required_fields():
    incident = {"incident_id": "INC-1", "call_type": "overdose"}
    decision = decide(_who("ems", "EMERGENCY", agency="COUNTY_EMS"), Purpose.EMERGENCY, _item(LegalCategory.PART2), [], NOW, incident)
    assert decision.permitted and decision.reason == "PERMIT_PART2_MEDICAL_EMERGENCY"
    assert decision.log["nature_of_emergency"] == "overdose" and decision.log["disclosing_agency"] == "COUNTY_BH"
    assert not decide(_who("ems", "TREATMENT"), Purpose.TREATMENT, _item(LegalCategory.PART2), [], NOW).permitted


def test_phi_goes_to_clinicians_for_care_and_to_police_only_with_consent_or_a_serious_threat():
    phi = _item(LegalCategory.PHI)
    assert decide(_who("co_responder", "TREATMENT"), Purpose.TREATMENT, phi, [], NOW).reason == "PERMIT_PHI_CARE"
    police = decide(_who("officer", "LAW"), Purpose.LAW, phi, [], NOW)
    assert (police.permitted, police.disclose_existence) == (False, True)
    consented = _consent(recipients="METRO_PD", purposes="LAW", categories="PHI")
    assert decide(_who("officer", "LAW"), Purpose.LAW, phi, [consented], NOW).reason == "PERMIT_PHI_CONSENT"
    threat = _item(LegalCategory.PHI, disclosure_basis=SERIOUS_THREAT, source_type="clinician",
                   observed_at=NOW - timedelta(days=1), expires_at=NOW + timedelta(days=5))
    assert decide(_who("officer", "THREAT"), Purpose.THREAT, threat, [], NOW).reason == "PERMIT_PHI_SERIOUS_THREAT"
    long_lived = threat.model_copy(update={"expires_at": NOW + timedelta(days=90)})
    assert not decide(_who("officer", "THREAT"), Purpose.THREAT, long_lived, [], NOW).permitted


def test_stewards_auditors_feeds_and_admins_see_no_items_even_registry_ones():
    for role in ("steward", "auditor", "feed", "admin"):
        decision = decide(_who(role, *Purpose), Purpose.EMERGENCY, _item(LegalCategory.VOLUNTARY_REGISTRY), [], NOW)
        assert (decision.permitted, decision.disclose_existence) == (False, False)


def test_bad_item_row_is_refused_field_by_field():
    with pytest.raises(ValidationError) as caught:
        ContextItem(item_id="I-1", record_id="R-1", category="danger", code="X", legal_category="SECRET")
    assert {e["loc"][0] for e in caught.value.errors()} == {"category", "legal_category"}


def test_synthetic_county_context_files_parse_as_items_and_consents(tmp_path):
    import pandas as pd

    from evaluation.synth.county import generate_county

    generate_county(600, 5, tmp_path, progress=False)
    rows = pd.read_csv(tmp_path / "context_items.csv", dtype=str, keep_default_na=False).to_dict("records")
    items = [ContextItem(**row) for row in rows]
    consents = [Consent(**row) for row in pd.read_csv(tmp_path / "consents.csv", dtype=str, keep_default_na=False).to_dict("records")]
    assert items and consents and all(i.observed_at.tzinfo is not None for i in items if i.observed_at)
    who = Principal(name="k", role="co_responder", agency="COUNTY_BH", purposes=("TREATMENT",))
    decisions = [decide(who, Purpose.TREATMENT, i, consents, NOW) for i in items]
    assert any(d.permitted for d in decisions) and any(not d.permitted for d in decisions)
