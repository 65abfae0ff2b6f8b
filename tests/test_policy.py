"""The access policy: default deny, Part 2 only under consent or the EMS emergency exception, CJI to law enforcement."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scoring.item import Category, Consent, ContextItem, LegalCategory, Principal, Purpose, Role, Status
from scoring.policy import SERIOUS_THREAT, decide
from scoring.rules import Rules

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
AGENCIES = ["METRO_PD", "COUNTY_EMS", "COUNTY_BH", "REGISTRY"]
EXAMPLES = settings(max_examples=1000, deadline=None)
MEDICAL = Rules.load().medical_emergency_call_types
ATTESTED = {"incident_id": "INC-1", "call_type": "overdose",
            "emergency_attestation": "medic J. Ortiz: patient unresponsive, treatment history needed now"}

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
    listed_items = [x for x in c.categories if x in {k.value for k in Category}]
    category = item.legal_category.value in c.categories and (not listed_items or item.category.value in listed_items)
    return in_force and names_requester and purpose in c.purposes and category and c.record_agency == item.record_agency is not None


CALLS = st.sampled_from(["overdose", "medical", "trespass", "other", "mental_health_crisis", "domestic"])
ATTESTATIONS = st.sampled_from([None, "", "medic on scene: unresponsive patient"])


@EXAMPLES
@given(principals, purposes, items, consents, CALLS, ATTESTATIONS)
def test_part2_item_never_reaches_anyone_without_consent_or_the_ems_emergency_exception(who, purpose, item, cs, call,
                                                                                         attestation):
    incident = {"incident_id": "INC-1", "call_type": call, "emergency_attestation": attestation}
    decision = decide(who, purpose, item, cs, NOW, incident, medical_emergencies=MEDICAL)
    if decision.permitted and item.legal_category == LegalCategory.PART2:
        by_consent = any(_consent_allows(c, item, who, purpose) for c in cs)
        emergency = (who.role == Role.ems and purpose == Purpose.EMERGENCY and call in MEDICAL and bool(attestation))
        assert by_consent or emergency
        if not by_consent:
            assert decision.reason == "PERMIT_PART2_MEDICAL_EMERGENCY"
            assert {"disclosed_to", "disclosing_agency", "disclosed_at", "nature_of_emergency"} <= decision.log.keys()
            assert decision.log["attestation"] == attestation


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
    decision = decide(_who("ems", "EMERGENCY", agency="COUNTY_EMS"), Purpose.EMERGENCY, _item(LegalCategory.PART2), [], NOW,
                      ATTESTED, medical_emergencies=MEDICAL)
    assert decision.permitted and decision.reason == "PERMIT_PART2_MEDICAL_EMERGENCY"
    assert decision.log["nature_of_emergency"] == "overdose" and decision.log["disclosing_agency"] == "COUNTY_BH"
    assert decision.log["attestation"] == ATTESTED["emergency_attestation"]
    assert not decide(_who("ems", "TREATMENT"), Purpose.TREATMENT, _item(LegalCategory.PART2), [], NOW, ATTESTED,
                      medical_emergencies=MEDICAL).permitted


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


# ---------------------------------------------------------------- issue 15: the attacks, one test each


def test_phi_consent_listing_item_categories_never_releases_part2_items():
    # Finding 1: a crisis-plan consent (PHI plus item categories) released a PART2 effective_approach item.
    plan = _consent(recipients="officer|co_responder|ems", purposes="EMERGENCY",
                    categories="PHI|communication_need|effective_approach")
    part2 = _item(LegalCategory.PART2, category="effective_approach")
    decision = decide(_who("officer", "EMERGENCY"), Purpose.EMERGENCY, part2, [plan], NOW)
    assert (decision.permitted, decision.disclose_existence) == (False, False)


def test_item_categories_alone_never_unlock_phi_or_part2():
    only_items = _consent(recipients="officer", purposes="EMERGENCY", categories="effective_approach|medical")
    for legal in (LegalCategory.PHI, LegalCategory.PART2):
        item = _item(legal, category="effective_approach")
        assert not decide(_who("officer", "EMERGENCY"), Purpose.EMERGENCY, item, [only_items], NOW).permitted


def test_part2_consent_that_lists_item_categories_covers_only_those_categories():
    scoped = _consent(recipients="officer", purposes="EMERGENCY", categories="PART2|medical|service_connection")
    officer = _who("officer", "EMERGENCY")
    assert decide(officer, Purpose.EMERGENCY, _item(LegalCategory.PART2, category="medical"), [scoped], NOW).permitted
    assert not decide(officer, Purpose.EMERGENCY, _item(LegalCategory.PART2, category="effective_approach"),
                      [scoped], NOW).permitted


def test_phi_consent_releases_phi_only_in_its_listed_item_categories():
    plan = _consent(recipients="officer", purposes="EMERGENCY", categories="PHI|communication_need")
    officer = _who("officer", "EMERGENCY")
    assert decide(officer, Purpose.EMERGENCY, _item(LegalCategory.PHI, category="communication_need"), [plan],
                  NOW).reason == "PERMIT_PHI_CONSENT"
    assert not decide(officer, Purpose.EMERGENCY, _item(LegalCategory.PHI, category="medical"), [plan], NOW).permitted


def test_incident_time_inside_an_expired_consent_window_does_not_revive_it():
    # Finding 2: the caller chose received_at inside a lapsed consent's window.
    lapsed = _consent(recipients="officer", purposes="EMERGENCY", categories="PHI",
                      valid_from=NOW - timedelta(days=400), valid_until=NOW - timedelta(days=30))
    back_then = NOW - timedelta(days=100)
    phi = _item(LegalCategory.PHI)
    assert not decide(_who("officer", "EMERGENCY"), Purpose.EMERGENCY, phi, [lapsed], NOW, incident_at=back_then).permitted


def test_incident_time_can_only_narrow_a_consent_or_an_item():
    officer = _who("officer", "EMERGENCY")
    fresh = _consent(recipients="officer", purposes="EMERGENCY", categories="PHI", valid_from=NOW - timedelta(days=3))
    phi = _item(LegalCategory.PHI)
    assert decide(officer, Purpose.EMERGENCY, phi, [fresh], NOW).permitted
    assert not decide(officer, Purpose.EMERGENCY, phi, [fresh], NOW, incident_at=NOW - timedelta(days=10)).permitted
    expired_by_the_incident = _item(LegalCategory.AGENCY_OPERATIONAL, expires_at=NOW + timedelta(hours=6))
    assert decide(officer, Purpose.EMERGENCY, expired_by_the_incident, [], NOW).permitted
    late = decide(officer, Purpose.EMERGENCY, expired_by_the_incident, [], NOW, incident_at=NOW + timedelta(hours=12))
    assert (late.permitted, late.reason) == (False, "DENY_EXPIRED")


@given(st.sampled_from(["serious_threat", "SERIOUS_THREAT", "Serious_Threat"]))
def test_an_officer_with_threat_purpose_gets_a_clinicians_serious_threat_item_whatever_its_case(basis):
    threat = _item(LegalCategory.PHI, category="safety_flag", disclosure_basis=basis, source_type="clinician",
                   observed_at=NOW - timedelta(days=3), last_verified_at=NOW - timedelta(days=2),
                   expires_at=NOW - timedelta(days=2) + timedelta(days=14))
    assert threat.disclosure_basis == SERIOUS_THREAT
    assert decide(_who("officer", "THREAT"), Purpose.THREAT, threat, [], NOW).reason == "PERMIT_PHI_SERIOUS_THREAT"
    capped = threat.model_copy(update={"expires_at": NOW - timedelta(days=2) + timedelta(days=15)})
    refused = decide(_who("officer", "THREAT"), Purpose.THREAT, capped, [], NOW)
    assert (refused.permitted, refused.reason) == (False, "DENY_PHI_NO_BASIS")
    assert not decide(_who("officer", "LAW"), Purpose.LAW, threat, [], NOW).permitted


@pytest.mark.parametrize("call_type", ["trespass", "other", "disturbance", "domestic", "welfare_check"])
def test_ems_emergency_exception_never_releases_part2_on_a_call_that_is_not_a_medical_emergency(call_type):
    incident = {**ATTESTED, "call_type": call_type}
    decision = decide(_who("ems", "EMERGENCY", agency="COUNTY_EMS"), Purpose.EMERGENCY, _item(LegalCategory.PART2), [],
                      NOW, incident, medical_emergencies=MEDICAL)
    assert (decision.permitted, decision.disclose_existence) == (False, False)


@pytest.mark.parametrize("attestation", [None, "", "   "])
def test_ems_emergency_exception_needs_the_requesters_attestation(attestation):
    incident = {**ATTESTED, "emergency_attestation": attestation}
    decision = decide(_who("ems", "EMERGENCY", agency="COUNTY_EMS"), Purpose.EMERGENCY, _item(LegalCategory.PART2), [],
                      NOW, incident, medical_emergencies=MEDICAL)
    assert not decision.permitted


def test_the_medical_emergency_call_types_are_configured_in_the_rules_file():
    assert MEDICAL == frozenset({"overdose", "medical", "suicidal_person", "mental_health_crisis"})


def test_synthetic_threat_items_expire_within_the_cap_so_the_serious_threat_rule_fires_on_the_data(tmp_path):
    import pandas as pd

    from evaluation.synth.county import generate_county

    generate_county(3000, 5, tmp_path, progress=False, n_incidents=10)
    rows = pd.read_csv(tmp_path / "context_items.csv", dtype=str, keep_default_na=False)
    threats = [ContextItem(**row) for row in rows[rows["code"] == "SAFE_THREAT_DISCLOSURE"].to_dict("records")]
    assert threats
    for item in threats:
        assert item.disclosure_basis == SERIOUS_THREAT and item.source_type == "clinician"
        assert item.expires_at - (item.last_verified_at or item.observed_at) <= timedelta(days=14)
    officer = Principal(name="k", role="officer", agency="METRO_PD", purposes=("THREAT",))
    live = [i for i in threats if i.status == Status.active]
    assert any(decide(officer, Purpose.THREAT, i, [], i.last_verified_at + timedelta(days=1)).permitted for i in live)
