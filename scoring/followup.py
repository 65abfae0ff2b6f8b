"""Follow-up rules (`followup.toml`): which incidents open a follow-up task for which kind of county team.

`FollowUpRules.load()` reads and checks the file (every key of every rule, naming the rule and the key that
is wrong); `version` is its content hash, kept with every task a rule opens. `firing` answers the rules an
incident sets off: its call type is one of the rule's and the briefing resolved the person at the rule's
`min_grade` or better. What a task then is, and how duplicates merge, is api/service/followups.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scoring.item import CallType
from scoring.referral import ProgramKind, Reason
from scoring.rules import GRADES, RulesError, read_rules_file

FOLLOW_UP_PATH = Path(__file__).with_name("followup.toml")


class FollowUpRule(BaseModel):
    """One rule of the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9_]{1,60}$")
    call_types: tuple[CallType, ...] = Field(min_length=1)
    min_grade: Literal["certain", "probable", "possible"]
    program_kind: ProgramKind
    reason: Reason
    due_within_hours: int = Field(ge=1, le=24 * 30)
    merge_window_hours: int = Field(ge=1, le=24 * 90)


@dataclass(frozen=True)
class FollowUpRules:
    rules: tuple[FollowUpRule, ...]
    version: str

    @classmethod
    def load(cls, path: str | Path = FOLLOW_UP_PATH) -> "FollowUpRules":
        """The rules of `path`; `RulesError` naming the file, the rule and the key when one does not fit."""
        data, version = read_rules_file(path)
        unknown = set(data) - {"rule"}
        if unknown:
            raise RulesError(f"{path}: unknown section(s) {', '.join(sorted(unknown))} (only [[rule]])")
        rules = []
        for k, entry in enumerate(data.get("rule", [])):
            try:
                rules.append(FollowUpRule.model_validate(entry))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "rule"
                raise RulesError(f"{path}: rule {k + 1} ({entry.get('id', '?')}): {where}: {first['msg']}") from None
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            raise RulesError(f"{path}: rule ids must be unique")
        return cls(tuple(rules), version)

    def firing(self, call_type: str, grade: str) -> list[FollowUpRule]:
        """The rules an incident of `call_type`, its person resolved at `grade`, sets off."""
        if grade not in GRADES:
            return []
        return [r for r in self.rules if call_type in {c.value for c in r.call_types}
                and GRADES.index(grade) >= GRADES.index(r.min_grade)]
