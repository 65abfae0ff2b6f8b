"""Rank one person's permitted items for one incident, every position explained.

`rank` merges duplicates across agencies (same category and code: one line, every source kept,
a corroboration count), scores each line as rules terms plus model terms (each named, with its
contribution), then applies the two ordering rules that are not scores:

1. A doubtful danger label (unverified, stale or vague; `Rules.is_doubtful_danger`) never
   outranks an item of another category: such lines sink below every other line.
2. The safety pin: when the person is resolved at `probable` or better, the most recent
   verified, specific safety event of the last 12 months is within the top three.

Items of a match weaker than the rules' `facts_from_grade` are labelled "possible match -
verify", never presented as facts. Expired or inactive items are dropped here too (the access
policy already withholds them; ranking never relies on that). Ties break by category order,
then item id, so the same input always gives the same order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Protocol

from scoring.item import Category, ContextItem, Status
from scoring.rules import Rules

CATEGORY_ORDER = {c.value: i for i, c in enumerate(Category)}
FACT = "fact"
POSSIBLE_MATCH = "possible match - verify"


class ItemModel(Protocol):
    """What `rank` needs of a model: named terms per item (and, optionally, `score_many` for speed:
    the sums of those terms for many items in one call)."""

    def terms(self, item: ContextItem, call_type: str, now: datetime, agencies: int) -> list[tuple[str, float]]: ...


class RankedItem:
    """One line of a briefing: its representative item, score, and (computed when read) terms and sources.

    `terms`: {"term", "source": "rule" | "model", "contribution"}, summing to `score`.
    `sources`: every merged item (item_id, record_id, agency, source_type).
    """

    __slots__ = ("item_id", "category", "code", "text", "score", "corroboration", "presented_as", "flags",
                 "_group", "_context", "_terms")

    def __init__(self, group: list[ContextItem], score: float, corroboration: int, presented_as: str, context: tuple):
        head = group[0]
        self.item_id, self.category, self.code, self.text = head.item_id, head.category.value, head.code, head.text
        self.score, self.corroboration, self.presented_as = score, corroboration, presented_as
        self.flags: list[str] = []
        self._group, self._context, self._terms = group, context, None

    @property
    def terms(self) -> list[dict]:
        if self._terms is None:
            call_type, now, rules, model, use_rules = self._context
            head, agencies = self._group[0], self.corroboration
            named = [(n, v, "rule") for n, v in rules.terms(head, call_type, now, agencies)] if use_rules else []
            if model is not None:
                named += [(n, v, "model") for n, v in model.terms(head, call_type, now, agencies)]
            self._terms = [{"term": n, "source": src, "contribution": round(v, 6)} for n, v, src in named]
        return self._terms

    @property
    def sources(self) -> list[dict]:
        return [{"item_id": i.item_id, "record_id": i.record_id, "agency": i.record_agency, "source_type": i.source_type}
                for i in self._group]

    def to_dict(self) -> dict:
        return {"item_id": self.item_id, "category": self.category, "code": self.code, "text": self.text,
                "score": self.score, "presented_as": self.presented_as, "flags": self.flags,
                "corroboration": self.corroboration, "sources": self.sources, "terms": self.terms}


def merge(items: Iterable[ContextItem]) -> list[list[ContextItem]]:
    """Group items by (category, code); each group's first item is the most recently verified or observed."""
    groups: dict[tuple[str, str], list[ContextItem]] = {}
    for item in items:
        groups.setdefault((item.category, item.code), []).append(item)
    return [g if len(g) == 1 else sorted(g, key=lambda i: (-_seen(i), i.item_id)) for g in groups.values()]


def rank(items: Iterable[ContextItem], call_type: str, grade: str | None, now: datetime, rules: Rules,
         model: ItemModel | None = None, use_rules: bool = True) -> list[RankedItem]:
    """The person's items for this incident, best first (see module docstring).

    `use_rules=False` scores by the model's terms alone (for evaluation); the ordering rules
    (doubtful danger labels, safety pin, expiry) apply either way. Scores are computed without
    naming terms; a line's terms are built only when read (a briefing shows two or three).
    """
    live = [i for i in items if i.status == Status.active and (i.expires_at is None or i.expires_at > now)]
    presented_as = FACT if rules.grade_at_least(grade, rules.match["facts_from_grade"]) else POSSIBLE_MATCH
    context = (call_type, now, rules, model, use_rules)
    groups = merge(live)
    heads = [g[0] for g in groups]
    agencies = [len({i.record_agency or i.record_id for i in g}) if len(g) > 1 else 1 for g in groups]
    scores = [rules.score(h, call_type, now, a) for h, a in zip(heads, agencies)] if use_rules else [0.0] * len(heads)
    if model is not None and heads:
        scores = [s + m for s, m in zip(scores, _model_scores(model, heads, call_type, now, agencies))]
    keyed = []
    for group, head, agency_count, score in zip(groups, heads, agencies, scores):
        line = RankedItem(group, round(score, 6), agency_count, presented_as, context)
        doubtful = rules.is_doubtful_danger(head, now)
        keyed.append(((doubtful, -line.score, CATEGORY_ORDER[line.category], line.item_id), line, head, doubtful))
    keyed.sort(key=lambda k: k[0])
    ranked = [line for _, line, _, _ in keyed]
    for _, line, head, doubtful in keyed:
        if head.review_due is not None and head.review_due <= now:
            line.flags.append(f"unverified since {head.review_due.date().isoformat()}")
        if doubtful:
            line.flags.append("doubtful danger label: ranked below every other category")
    if rules.grade_at_least(grade, rules.safety_pin["min_grade"]):
        _pin(ranked, [head for _, _, head, _ in keyed], rules, now)
    return ranked


def _model_scores(model: ItemModel, heads: list[ContextItem], call_type: str, now: datetime,
                  agencies: list[int]) -> list[float]:
    """The model's part of each line's score: one batch call when the model offers `score_many`."""
    batch = getattr(model, "score_many", None)
    if batch is not None:
        return list(batch(heads, call_type, now, agencies))
    return [sum(v for _, v in model.terms(h, call_type, now, a)) for h, a in zip(heads, agencies)]


def _pin(ranked: list[RankedItem], heads: list[ContextItem], rules: Rules, now: datetime) -> None:
    """Move the most recent pinnable line into the top `rules.safety_pin["top"]` if it is below."""
    pinnable = [k for k, head in enumerate(heads) if rules.is_pinnable(head, now)]
    if not pinnable:
        return
    best = max(pinnable, key=lambda k: (_seen(heads[k]), -k))
    top = int(rules.safety_pin["top"])
    line = ranked[best]
    line.flags.append("safety pin: recent verified safety event")
    if best >= top:
        ranked.insert(top - 1, ranked.pop(best))


def _seen(item: ContextItem) -> float:
    when = item.last_verified_at or item.observed_at
    return when.timestamp() if when is not None else float("-inf")
