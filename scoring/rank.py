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

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Protocol

from scoring.item import Category, ContextItem, Status
from scoring.rules import Rules

CATEGORY_ORDER = {c.value: i for i, c in enumerate(Category)}
FACT = "fact"
POSSIBLE_MATCH = "possible match - verify"


class ItemModel(Protocol):
    def terms(self, item: ContextItem, call_type: str, now: datetime, agencies: int) -> list[tuple[str, float]]: ...


@dataclass
class RankedItem:
    item_id: str                       # the line's representative (most recently verified) item
    category: str
    code: str
    text: str
    score: float
    terms: list[dict]                  # {"term", "source": "rule" | "model", "contribution"}
    sources: list[dict]                # every merged item: item_id, record_id, agency, source_type
    corroboration: int                 # distinct agencies holding this line
    presented_as: str = FACT
    flags: list[str] = field(default_factory=list)


def merge(items: Iterable[ContextItem]) -> list[list[ContextItem]]:
    """Group items by (category, code); each group's first item is the most recently verified or observed."""
    groups: dict[tuple[str, str], list[ContextItem]] = {}
    for item in items:
        groups.setdefault((item.category.value, item.code), []).append(item)
    return [sorted(g, key=lambda i: (-_seen(i), i.item_id)) for g in groups.values()]


def rank(items: Iterable[ContextItem], call_type: str, grade: str | None, now: datetime, rules: Rules,
         model: ItemModel | None = None, use_rules: bool = True) -> list[RankedItem]:
    """The person's items for this incident, best first (see module docstring).

    `use_rules=False` scores by the model's terms alone (for evaluation); the ordering rules
    (doubtful danger labels, safety pin, expiry) apply either way.
    """
    live = [i for i in items if i.status == Status.active and (i.expires_at is None or i.expires_at > now)]
    lines: list[tuple[bool, RankedItem, ContextItem]] = []
    for group in merge(live):
        head = group[0]
        agencies = len({i.record_agency or i.record_id for i in group})
        terms = [{"term": name, "source": "rule", "contribution": round(value, 6)}
                 for name, value in rules.terms(head, call_type, now, agencies)] if use_rules else []
        if model is not None:
            terms += [{"term": name, "source": "model", "contribution": round(value, 6)}
                      for name, value in model.terms(head, call_type, now, agencies)]
        line = RankedItem(
            item_id=head.item_id, category=head.category.value, code=head.code, text=head.text,
            score=round(sum(t["contribution"] for t in terms), 6), terms=terms,
            sources=[{"item_id": i.item_id, "record_id": i.record_id, "agency": i.record_agency,
                      "source_type": i.source_type} for i in group],
            corroboration=agencies,
            presented_as=FACT if rules.grade_at_least(grade, rules.match["facts_from_grade"]) else POSSIBLE_MATCH)
        if head.review_due is not None and head.review_due <= now:
            line.flags.append(f"unverified since {head.review_due.date().isoformat()}")
        doubtful = rules.is_doubtful_danger(head, now)
        if doubtful:
            line.flags.append("doubtful danger label: ranked below every other category")
        lines.append((doubtful, line, head))
    lines.sort(key=lambda x: (x[0], -x[1].score, CATEGORY_ORDER[x[1].category], x[1].item_id))
    ranked = [line for _, line, _ in lines]
    if rules.grade_at_least(grade, rules.safety_pin["min_grade"]):
        _pin(ranked, [head for _, _, head in lines], rules, now)
    return ranked


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
