"""Rank one person's permitted items for one incident, every position explained.

`rank` merges duplicates across agencies (same category and code: one line, every source kept,
a corroboration count), scores each line as rules terms plus model terms (each named, with its
contribution), then applies the two ordering rules that are not scores:

1. A doubtful danger label (unverified, stale or vague; `Rules.is_doubtful_danger`) never
   outranks an item of another category: such lines sink below every other line.
2. The safety pin: when the person is resolved at `probable` or better, the most recent
   verified, specific safety event of the last 12 months (any merged copy) is within the top three.

Items of a match weaker than the rules' `facts_from_grade` are labelled "possible match -
verify", never presented as facts. Expired or inactive items are dropped here too (the access
policy already withholds them; ranking never relies on that). Ties break by category order,
then item id, so the same input always gives the same order.
"""

from __future__ import annotations

from datetime import datetime, timezone
from operator import attrgetter
from typing import Iterable, Protocol

from scoring.item import Category, ContextItem, Status
from scoring.rules import Rules

CATEGORY_ORDER = {c.value: i for i, c in enumerate(Category)}
_ITEM_ID = attrgetter("item_id")
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
    def head(self) -> ContextItem:
        """The line's representative item."""
        return self._group[0]

    @property
    def sources(self) -> list[dict]:
        return [{"item_id": i.item_id, "record_id": i.record_id, "agency": i.record_agency, "source_type": i.source_type}
                for i in self._group]

    def to_dict(self) -> dict:
        return {"item_id": self.item_id, "category": self.category, "code": self.code, "text": self.text,
                "score": self.score, "presented_as": self.presented_as, "flags": self.flags,
                "corroboration": self.corroboration, "sources": self.sources, "terms": self.terms}


def merge(items: Iterable[ContextItem]) -> list[list[ContextItem]]:
    """Group items by (category, code); each group's first item (the line's representative) is the
    most recently verified copy, or, if none is verified, the most recently observed."""
    groups: dict[tuple[str, str], list[ContextItem]] = {}
    for item in items:
        groups.setdefault((item.category, item.code), []).append(item)
    out = []
    for group in groups.values():
        if len(group) > 1:
            group.sort(key=_ITEM_ID)
            group.sort(key=_freshness, reverse=True)  # stable: equal keys keep item-id order
        out.append(group)
    return out


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
        _pin(ranked, rules, now)
    return ranked


def _model_scores(model: ItemModel, heads: list[ContextItem], call_type: str, now: datetime,
                  agencies: list[int]) -> list[float]:
    """The model's part of each line's score: one batch call when the model offers `score_many`."""
    batch = getattr(model, "score_many", None)
    if batch is not None:
        return list(batch(heads, call_type, now, agencies))
    return [sum(v for _, v in model.terms(h, call_type, now, a)) for h, a in zip(heads, agencies)]


def _pin(ranked: list[RankedItem], rules: Rules, now: datetime) -> None:
    """Move the line holding the most recent pinnable event into the top `rules.safety_pin["top"]`.

    Every merged copy counts: a recent event recorded by one agency stays pinnable when another
    agency's older record of the same thing was re-verified later and heads the line.
    """
    best, best_when = None, None
    categories = rules.safety_pin["categories"]
    for k, line in enumerate(ranked):
        if line.category not in categories or rules.is_doubtful_danger(line._group[0], now):
            continue                                 # a doubtful label never rises above another category
        for item in line._group:
            if rules.is_pinnable(item, now):
                when = item.observed_at or item.last_verified_at
                if best_when is None or when > best_when:
                    best, best_when = k, when
    if best is None:
        return
    top = int(rules.safety_pin["top"])
    ranked[best].flags.append("safety pin: recent verified safety event")
    if best >= top:
        ranked.insert(top - 1, ranked.pop(best))


_NEVER = datetime.min.replace(tzinfo=timezone.utc)


def _freshness(item: ContextItem) -> tuple[bool, datetime]:
    """Verified copies first, then by date: a line is as trustworthy as its best copy."""
    return item.last_verified_at is not None, item.last_verified_at or item.observed_at or _NEVER
