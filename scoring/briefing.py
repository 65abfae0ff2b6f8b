"""One briefing's items: access policy first, then ranking, with what was withheld and why.

`brief` is the domain half of `POST /v1/briefings`: given who asks, why, the incident and the
resolved person's items and consents, it returns the ranked permitted items, a count of withheld
items per reason for the reasons that may be disclosed (never Part 2 or CJI, never to a role
that sees no items), and the policy log entries the audit event must carry (consents used, the
EMS emergency exception with its attestation).

`now` is the moment the policy and the ranking judge at: the server's clock for the service;
offline evaluation (ranking, fairness) passes each incident's own time, since its data is
historical. `incident_at`, when given, must also see an item and its consent live (it narrows
only). The EMS exception's call types come from the rules file (`[policy]`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from scoring.item import Consent, ContextItem, Principal, Purpose
from scoring.policy import decide
from scoring.rank import ItemModel, RankedItem, rank
from scoring.rules import Rules

#: Where a responder can ask for what was withheld, per disclosable reason.
ROUTE_TO = {"DENY_PHI_NO_BASIS": "co-responder or EMS on scene (clinical information)"}


@dataclass
class Briefing:
    items: list[RankedItem]
    withheld: list[dict] = field(default_factory=list)      # {"reason", "count", "route_to"}
    disclosures: list[dict] = field(default_factory=list)   # per permitted item: reason, consent, exception log
    denied: list[dict] = field(default_factory=list)        # every denial with its reason (audit only, never the client)


def brief(principal: Principal, purpose: Purpose, incident: dict, grade: str | None, items: Iterable[ContextItem],
          consents: list[Consent], now: datetime, rules: Rules, model: ItemModel | None = None,
          incident_at: datetime | None = None) -> Briefing:
    """Permitted items ranked for this incident, and the withheld summary a client may see."""
    permitted, disclosures, denied = [], [], []
    withheld: Counter[str] = Counter()
    emergencies = rules.medical_emergency_call_types
    for item in items:
        decision = decide(principal, purpose, item, consents, now, incident, incident_at=incident_at,
                          medical_emergencies=emergencies)
        if decision.permitted:
            permitted.append(item)
            disclosures.append({"item_id": item.item_id, "reason": decision.reason, "consent_id": decision.consent_id,
                                **({"log": decision.log} if decision.log else {})})
        else:
            denied.append({"item_id": item.item_id, "reason": decision.reason})
            if decision.disclose_existence:
                withheld[decision.reason] += 1
    ranked = rank(permitted, incident.get("call_type", "other"), grade, now, rules, model)
    return Briefing(ranked, [{"reason": r, "count": n, "route_to": ROUTE_TO.get(r)} for r, n in sorted(withheld.items())],
                    disclosures, denied)
