"""42 CFR 2.51(c) records of medical-emergency disclosures, read from the audit log.

`briefing audit part2-emergencies --db DB --since ISO [--until ISO] [--program P] [--format jsonl|table]`.

When a Part 2 program's information is disclosed without consent in a bona fide medical emergency, the
program must record in the patient's records (42 CFR 2.51(c)): the name of the medical personnel to whom
it was disclosed and their affiliation with any health care facility, the name of the individual making
the disclosure, its date and time, and the nature of the emergency. Briefing makes those disclosures on the
programs' behalf (`PERMIT_PART2_MEDICAL_EMERGENCY`, scoring/policy.py) and writes their fields into the
`disclosures[].log` of the request's `briefing` audit event; this report gives each disclosing program
(`disclosing_agency`) its disclosures since a time, oldest first, grouped by program:

- `medical_personnel` — `disclosed_to` (the EMS key's principal); `affiliation` — `recipient_agency`;
- `disclosed_by` — Briefing, disclosing automatically on the program's behalf, at the request of that
  principal; `attestation` — who attested to the emergency and why, as the request gave it (None for a
  disclosure logged before attestations were required);
- `disclosed_at` — the server's time when the policy permitted it (else the audit event's time);
- `nature_of_emergency` — the incident's call type, with the attestation;
- to trace each one: `incident_id`, `item_id` (the program's item), the event's `audit_seq` and `request_id`.

Times are compared as datetimes (naive input means UTC). Reading is one pass over the `briefing` events
that mention the exception, so cost is linear in the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select

from api.service.store import Store, audit_events
from api.service.times import parse_time

REASON = "PERMIT_PART2_MEDICAL_EMERGENCY"
ATTESTATION_FIELDS = ("attestation", "emergency_attestation")


@dataclass(frozen=True)
class EmergencyDisclosure:
    program: str
    disclosed_at: str
    medical_personnel: str | None
    affiliation: str | None
    disclosed_by: str
    nature_of_emergency: str | None
    attestation: str | None
    incident_id: str | None
    item_id: str | None
    audit_seq: int
    request_id: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def emergency_disclosures(store: Store, since: datetime, until: datetime | None = None,
                          program: str | None = None) -> list[EmergencyDisclosure]:
    """The 2.51 disclosures made at or after `since` (and before `until`), by program, then time, then seq."""
    found = [d for d in _read(store) if (when := parse_time(d.disclosed_at)) is not None and when >= since
             and (until is None or when < until) and (program is None or d.program == program)]
    return sorted(found, key=lambda d: (d.program, parse_time(d.disclosed_at), d.audit_seq))


def _read(store: Store) -> Iterator[EmergencyDisclosure]:
    query = (select(audit_events.c.seq, audit_events.c.at, audit_events.c.request_id, audit_events.c.principal,
                    audit_events.c.payload)
             .where(audit_events.c.action == "briefing", audit_events.c.payload.contains(REASON, autoescape=True))
             .order_by(audit_events.c.seq).execution_options(yield_per=1_000))
    with store.engine.connect() as connection:
        for row in connection.execute(query):
            try:
                event = json.loads(row.payload)
            except ValueError:
                continue
            for disclosure in event.get("disclosures") or ():
                if not isinstance(disclosure, dict) or disclosure.get("reason") != REASON:
                    continue
                fields = disclosure.get("log") if isinstance(disclosure.get("log"), dict) else {}
                yield _record(row, event, disclosure, fields)


def _record(row, event: dict, disclosure: dict, fields: dict) -> EmergencyDisclosure:
    program = fields.get("disclosing_agency") or "(program not recorded)"
    personnel = fields.get("disclosed_to") or event.get("principal") or row.principal
    attestation = next((fields[k] for k in ATTESTATION_FIELDS if fields.get(k)), None)
    return EmergencyDisclosure(
        program=program, disclosed_at=fields.get("disclosed_at") or row.at, medical_personnel=personnel,
        affiliation=fields.get("recipient_agency") or event.get("agency"),
        disclosed_by=f"Briefing, automatically on behalf of {program}, at the request of {personnel}",
        nature_of_emergency=fields.get("nature_of_emergency") or event.get("call_type"), attestation=attestation,
        incident_id=fields.get("incident_id") or event.get("incident_id"),
        item_id=fields.get("item_id") or disclosure.get("item_id"), audit_seq=row.seq, request_id=row.request_id)


TABLE_COLUMNS = ("disclosed_at", "medical_personnel", "affiliation", "nature_of_emergency", "attestation",
                 "incident_id", "item_id", "audit_seq")


def table(disclosures: list[EmergencyDisclosure]) -> str:
    """A plain-text table per program (its 2.51(c) fields), for printing."""
    lines: list[str] = []
    for program in dict.fromkeys(d.program for d in disclosures):
        mine = [d for d in disclosures if d.program == program]
        lines += [f"{program}: {len(mine)} medical-emergency disclosure(s) (42 CFR 2.51(c)); disclosed by Briefing "
                  f"on its behalf", "  " + " | ".join(TABLE_COLUMNS)]
        lines += ["  " + " | ".join(" ".join(str(getattr(d, c)).split()) if getattr(d, c) is not None else "-"
                                    for c in TABLE_COLUMNS) for d in mine]
        lines.append("")
    return "\n".join(lines)
