"""Ranking: rules terms that add up, merged duplicates, doubtful danger labels sunk, the safety pin."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.item import CallType, Category, ContextItem, LegalCategory, Status
from scoring.rank import FACT, POSSIBLE_MATCH, rank
from scoring.rules import RULES_PATH, Rules, RulesError

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
RULES = Rules.load()


def item(item_id, category, code="CODE", days=30, verified=True, agency="COUNTY_BH", **kw):
    seen = NOW - timedelta(days=days)
    return ContextItem(item_id=item_id, record_id=f"R-{item_id}", record_agency=agency, category=category, code=code,
                       legal_category=kw.pop("legal_category", LegalCategory.AGENCY_OPERATIONAL), observed_at=seen,
                       last_verified_at=seen if verified else None, source_type=kw.pop("source_type", "clinician"), **kw)


def test_rules_file_has_a_content_hash_version_and_a_bad_file_is_refused(tmp_path):
    assert len(RULES.version) == 12 and Rules.load().version == RULES.version
    broken = tmp_path / "rules.toml"
    broken.write_text("[category_weight.default]\nmedical = 1\n")
    with pytest.raises(RulesError, match="missing section"):
        Rules.load(broken)
    broken.write_text("not = [toml")
    with pytest.raises(RulesError, match="rules.toml"):
        Rules.load(broken)


def test_every_call_type_the_rules_file_names_is_a_known_call_type(tmp_path):
    """A misspelt call type in rules.toml would silently never apply: loading refuses it, naming it and its key."""
    named = set(RULES.category_weight) - {"default"} | RULES.medical_emergency_call_types
    assert named and named <= {t.value for t in CallType}
    text = RULES_PATH.read_text(encoding="utf-8")
    cases = (("[category_weight.overdose]", "[category_weight.over_dose]", "category_weight.over_dose", "over_dose"),
             ('"mental_health_crisis"]', '"mental_crisis"]', "policy.medical_emergency_call_types", "mental_crisis"))
    for good, bad, key, unknown in cases:
        edited = tmp_path / "rules.toml"
        edited.write_text(text.replace(good, bad), encoding="utf-8")
        with pytest.raises(RulesError, match=rf"{key}: unknown call type '{unknown}'"):
            Rules.load(edited)


def test_terms_add_up_to_the_score_and_name_each_rule():
    ranked = rank([item("A", "effective_approach", review_due=NOW - timedelta(days=3))], "mental_health_crisis", "certain", NOW, RULES)
    line = ranked[0]
    assert line.score == pytest.approx(sum(t["contribution"] for t in line.terms), abs=1e-5)
    names = " | ".join(t["term"] for t in line.terms)
    assert "category effective_approach at mental_health_crisis" in names and "unverified since" in names
    assert line.flags == [f"unverified since {(NOW - timedelta(days=3)).date().isoformat()}"]


def test_same_need_from_two_agencies_is_one_line_with_both_sources_and_ranks_higher():
    single = rank([item("A", "communication_need", "COMM_ASL")], "welfare_check", "certain", NOW, RULES)[0]
    both = rank([item("A", "communication_need", "COMM_ASL"), item("B", "communication_need", "COMM_ASL", agency="REGISTRY")],
                "welfare_check", "certain", NOW, RULES)
    assert len(both) == 1 and both[0].corroboration == 2
    assert {s["item_id"] for s in both[0].sources} == {"A", "B"} and both[0].score > single.score


def test_expired_and_retracted_items_are_never_ranked():
    ranked = rank([item("A", "medical", expires_at=NOW - timedelta(seconds=1)), item("B", "medical", "M2", status=Status.retracted),
                   item("C", "medical", "M3")], "medical", "certain", NOW, RULES)
    assert [r.item_id for r in ranked] == ["C"]


def test_items_of_a_possible_match_are_not_presented_as_facts_and_nothing_is_pinned():
    event = item("E", "recent_event", "EVT_KNIFE_THREAT", days=20)
    items = [item(str(i), "effective_approach", f"A{i}") for i in range(5)] + [event]
    possible = rank(items, "welfare_check", "possible", NOW, RULES)
    assert {r.presented_as for r in possible} == {POSSIBLE_MATCH}
    assert [r.item_id for r in possible].index("E") > 2
    probable = rank(items, "welfare_check", "probable", NOW, RULES)
    assert {r.presented_as for r in probable} == {FACT} and [r.item_id for r in probable].index("E") <= 2


categories = st.sampled_from(list(Category))
items_strategy = st.lists(st.builds(
    lambda i, cat, code, days, verified, source: item(f"I{i}", cat, code, days, verified, source_type=source),
    st.integers(0, 10_000), categories, st.sampled_from(["X1", "X2", "SAFE_CAUTION_GENERAL", "EVT_ASSAULT"]),
    st.integers(0, 2000), st.booleans(), st.sampled_from(["clinician", "officer", "dispatcher", "system"])),
    min_size=1, max_size=25, unique_by=lambda x: x.item_id)
call_types = st.sampled_from(["welfare_check", "domestic", "overdose", "disturbance", "other"])
grades = st.sampled_from(["certain", "probable", "possible", None])


@settings(max_examples=1000, deadline=None)
@given(items_strategy, call_types, grades)
def test_a_doubtful_danger_label_never_outranks_another_category(items, call_type, grade):
    ranked = rank(items, call_type, grade, NOW, RULES)
    by_id = {i.item_id: i for i in items}
    for k, line in enumerate(ranked):
        if RULES.is_doubtful_danger(by_id[line.item_id], NOW):
            assert all(other.category == line.category for other in ranked[k + 1:])


@settings(max_examples=1000, deadline=None)
@given(items_strategy, call_types, st.sampled_from(["certain", "probable"]))
def test_the_most_recent_verified_specific_safety_event_is_in_the_top_three(items, call_type, grade):
    ranked = rank(items, call_type, grade, NOW, RULES)
    by_id = {i.item_id: i for i in items}

    def events(lines):
        return [by_id[s["item_id"]] for line in lines for s in line.sources if RULES.is_pinnable(by_id[s["item_id"]], NOW)]
    pinnable = events(ranked)
    if pinnable:
        newest = max(i.observed_at for i in pinnable)
        assert newest in {i.observed_at for i in events(ranked[:3])}


@settings(max_examples=200, deadline=None)
@given(items_strategy, call_types, grades, st.randoms())
def test_the_order_does_not_depend_on_the_order_items_arrive_in(items, call_type, grade, rnd):
    shuffled = list(items)
    rnd.shuffle(shuffled)
    first = [(r.item_id, r.score) for r in rank(items, call_type, grade, NOW, RULES)]
    assert first == [(r.item_id, r.score) for r in rank(shuffled, call_type, grade, NOW, RULES)]


def test_the_scorecard_and_the_rules_agree_on_what_a_danger_label_is():
    """The model keeps its own copy (its features must not move with the rules file); the two must not drift."""
    from evaluation.synth.needs_catalogue import NEEDS_SPEC
    from scoring.ranker_features import DANGER_CATEGORIES, STALE_DANGER_DAYS, VAGUE_CODES

    assert VAGUE_CODES == set(RULES.danger["vague_codes"])
    assert DANGER_CATEGORIES == set(RULES.danger["categories"]) and STALE_DANGER_DAYS == RULES.danger["stale_after_days"]
    generated_vague = {n[0] for n in NEEDS_SPEC if "vague" in n[4].split()}
    assert generated_vague <= set(RULES.danger["vague_codes"])
