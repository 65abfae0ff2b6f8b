"""The declarative ranking rules (`rules.toml`): terms per item, and the two ordering rules' tests.

`Rules.load()` reads the TOML file; `Rules.version` is its content hash, so every briefing can
name the exact rules that ordered it, and the access-policy settings of its `[policy]` section (the
call types on which the 42 CFR 2.51 medical-emergency exception may apply). Every call type the file
names (a `[category_weight.<call type>]` section, `policy.medical_emergency_call_types`) must be a
`scoring.item.CallType`, or loading fails naming it. `Rules.terms` turns
one (merged) item into named additive terms, the transparent half of an item's score. The ordering rules live in `scoring.rank`; the
predicates they need (`is_doubtful_danger`, `is_pinnable`) live here, next to their numbers.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from scoring.item import CallType, ContextItem

RULES_PATH = Path(__file__).with_name("rules.toml")
GRADES = ("possible", "probable", "certain")
_KNOWN_CALL_TYPES = frozenset(t.value for t in CallType)


class RulesError(ValueError):
    """The rules file is malformed: the message names the key."""


def read_rules_file(path: str | Path) -> tuple[dict, str]:
    """A versioned rules file (TOML): its contents and its version, the first 12 hex digits of the SHA-256 of
    its bytes; `RulesError` naming the file when it is not UTF-8 TOML."""
    raw = Path(path).read_bytes()
    try:
        return tomllib.loads(raw.decode("utf-8")), hashlib.sha256(raw).hexdigest()[:12]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Rules:
    category_weight: dict[str, dict[str, float]]
    half_life_days: dict[str, float]
    source_reliability: dict[str, float]
    corroboration: dict[str, float]
    verification: dict[str, float]
    danger: dict
    safety_pin: dict
    match: dict
    policy: dict = field(default_factory=dict)
    version: str = field(default="")

    @classmethod
    def load(cls, path: str | Path = RULES_PATH) -> "Rules":
        data, version = read_rules_file(path)
        required = ("category_weight", "half_life_days", "source_reliability", "corroboration", "verification",
                    "danger", "safety_pin", "match")
        missing = [k for k in required if k not in data]
        if missing or "default" not in data.get("category_weight", {}):
            raise RulesError(f"{path}: missing section(s) {', '.join(missing) or 'category_weight.default'}")
        for grade_key in (("safety_pin", "min_grade"), ("match", "facts_from_grade")):
            if data[grade_key[0]].get(grade_key[1]) not in GRADES:
                raise RulesError(f"{path}: {'.'.join(grade_key)} must be one of {', '.join(GRADES)}")
        policy = data.get("policy", {})
        calls = policy.get("medical_emergency_call_types", []) if isinstance(policy, dict) else None
        if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
            raise RulesError(f"{path}: policy.medical_emergency_call_types must be a list of call types")
        _check_call_types(path, [(f"category_weight.{t}", t) for t in data["category_weight"] if t != "default"]
                          + [("policy.medical_emergency_call_types", c) for c in calls])
        return cls(**{k: data[k] for k in required}, policy=policy, version=version)

    @property
    def medical_emergency_call_types(self) -> frozenset[str]:
        """Call types on which EMS may use the 42 CFR 2.51 exception (`[policy]`; none when absent: fail closed)."""
        return frozenset(self.policy.get("medical_emergency_call_types", ()))

    # ------------------------------------------------------------------ terms
    def weight(self, call_type: str, category: str) -> float:
        return self.category_weight.get(call_type, {}).get(category, self.category_weight["default"].get(category, 0.0))

    def terms(self, item: ContextItem, call_type: str, now: datetime, agencies: int = 1) -> list[tuple[str, float]]:
        """Named additive terms of one item for an incident of `call_type` at `now`.

        `agencies`: how many agencies hold the same (category, code) for this person.
        """
        category = item.category.value
        weight = self.weight(call_type, category)
        out = [(f"category {category} at {call_type}", weight)]
        age = _age_days(item, now)
        half_life = self.half_life_days.get(category, 365.0)
        kept = 0.5 if age is None else 2.0 ** (-max(age, 0.0) / half_life)
        label = "age unknown" if age is None else f"{age:.0f} days old"
        out.append((f"recency ({label}, half-life {half_life:.0f} d)", weight * (kept - 1.0)))
        if item.source_type in self.source_reliability:
            out.append((f"source {item.source_type}", float(self.source_reliability[item.source_type])))
        if agencies > 1:
            extra = min(self.corroboration["per_extra_agency"] * (agencies - 1), self.corroboration["max"])
            out.append((f"corroborated by {agencies} agencies", extra))
        verified = item.last_verified_at is not None
        out.append(("verified" if verified else "never verified",
                    self.verification["verified"] if verified else self.verification["unverified"]))
        if item.review_due is not None and item.review_due <= now:
            out.append((f"unverified since {item.review_due.date().isoformat()}", self.verification["overdue_review"]))
        return out

    def score(self, item: ContextItem, call_type: str, now: datetime, agencies: int = 1) -> float:
        """The sum of `terms`, computed without naming them (the ranking's fast path)."""
        weight = self.weight(call_type, item.category)
        seen = item.last_verified_at or item.observed_at
        if seen is None:
            total = weight * 0.5
        else:
            age = max((now - seen).total_seconds() / 86400.0, 0.0)
            total = weight * 2.0 ** (-age / self.half_life_days.get(item.category, 365.0))
        total += self.source_reliability.get(item.source_type, 0.0) if item.source_type else 0.0
        if agencies > 1:
            total += min(self.corroboration["per_extra_agency"] * (agencies - 1), self.corroboration["max"])
        total += self.verification["verified"] if item.last_verified_at is not None else self.verification["unverified"]
        if item.review_due is not None and item.review_due <= now:
            total += self.verification["overdue_review"]
        return total

    # ------------------------------------------------------------------ predicates
    def is_doubtful_danger(self, item: ContextItem, now: datetime) -> bool:
        """A danger label that is unverified, stale or vague: it must never outrank another category."""
        if item.category not in self.danger["categories"]:
            return False
        if item.last_verified_at is None or item.code in self.danger["vague_codes"]:
            return True
        return (now - item.last_verified_at).days > self.danger["stale_after_days"]

    def is_pinnable(self, item: ContextItem, now: datetime) -> bool:
        """A verified, specific safety event of the last `window_days`."""
        if item.category not in self.safety_pin["categories"] or item.last_verified_at is None:
            return False
        if item.code in self.danger["vague_codes"]:
            return False
        happened = item.observed_at or item.last_verified_at
        return 0 <= (now - happened).days <= self.safety_pin["window_days"]

    def grade_at_least(self, grade: str | None, minimum: str) -> bool:
        return grade in GRADES and GRADES.index(grade) >= GRADES.index(minimum)


def _check_call_types(path: str | Path, named: list[tuple[str, str]]) -> None:
    """Every call type the file names (as (key, call type)) must be a `CallType`: a typo would silently never apply."""
    for key, call_type in named:
        if call_type not in _KNOWN_CALL_TYPES:
            raise RulesError(f"{path}: {key}: unknown call type {call_type!r} "
                             f"(known: {', '.join(t.value for t in CallType)})")


def _age_days(item: ContextItem, now: datetime) -> float | None:
    seen = item.last_verified_at or item.observed_at
    return None if seen is None else (now - seen).total_seconds() / 86400.0
