"""`make demo`'s last step: demo keys for every role, two receiving programs, and a working `curl` for one briefing.

    python -m api.cli.demo --db out/demo/briefing.db --county out/demo/county [--port 8080]

Keys are generated now (never stored in the repo) and printed once; the curl uses the
dispatcher's key and the first incident of the county whose subject holds an item a dispatcher
may see today (active, unexpired; `make demo` dates its county relative to today with
`briefing synth --as-of today`, because the service judges the policy at its own clock). Two programs
receive referrals (`DEMO_PROGRAMS`: a mobile crisis team, and a post-overdose team that the follow-up rules
send overdose calls to), each with a provider key for its inbox at `/review/inbox`.
"""

from __future__ import annotations

import argparse
import json
import shlex
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from api.service.keys import create_key
from api.service.referrals import register_program
from api.service.store import open_store
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from scoring.referral import ProgramKind
from scoring.referral_policy import Program

DEMO_KEYS = (
    ("demo-dispatcher", Role.dispatcher, "COUNTY_911", (Purpose.EMERGENCY, Purpose.LAW)),
    ("demo-officer", Role.officer, "METRO_PD", (Purpose.EMERGENCY, Purpose.LAW, Purpose.THREAT)),
    ("demo-co-responder", Role.co_responder, "COUNTY_BH", (Purpose.EMERGENCY, Purpose.TREATMENT)),
    ("demo-ems", Role.ems, "COUNTY_EMS", (Purpose.EMERGENCY, Purpose.TREATMENT)),
    ("demo-feed", Role.feed, "METRO_PD", ()),
    ("demo-steward", Role.steward, "COUNTY", ()),
    ("demo-auditor", Role.auditor, "COUNTY", ()),
    ("demo-mobile-crisis", Role.provider, "MOBILE_CRISIS", ()),
    ("demo-post-overdose", Role.provider, "POST_OVERDOSE_TEAM", ()),
)
#: The programs that receive the demo's referrals and follow-up tasks (fictional public lines).
DEMO_PROGRAMS = (Program("MOBILE_CRISIS", ProgramKind.mobile_crisis, False, "555-0101"),
                 Program("POST_OVERDOSE_TEAM", ProgramKind.post_overdose, False, "555-0199"))


#: Legal categories a dispatcher sees without any consent (scoring/policy.py).
DISPATCHER_SEES = ("VOLUNTARY_REGISTRY", "AGENCY_OPERATIONAL", "CJI")


def demo_briefing(county: Path, now: datetime | None = None) -> dict:
    """The body of the demo's briefing: the first incident (in the past, at `now`) whose subject has an item a dispatcher sees."""
    now = now or datetime.now(timezone.utc)
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(county / "truth.csv", dtype=str, keep_default_na=False)
    items = pd.read_csv(county / "context_items.csv", dtype=str, keep_default_na=False)
    live = items[items["legal_category"].isin(DISPATCHER_SEES) & (items["status"] == "active")
                 & ((items["expires_at"] == "") | (pd.to_datetime(items["expires_at"], utc=True) > now))]
    holders = set(truth.loc[truth["record_id"].isin(set(live["record_id"])), "person_key"])
    past = pd.to_datetime(incidents["received_at"], utc=True) <= now
    known = incidents[past & incidents["person_key"].isin(holders) & (incidents["subject_dob"] != "")].head(1)
    if known.empty:
        known = incidents[past & (incidents["person_key"] != "")].head(1)
    row = known.iloc[0]
    subject = {k: v for k, v in incident_queries(known)[0].items() if k != "received_at"}
    return {"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"],
                         "callback_phone": row["callback_phone"]}, "subject": subject, "purpose": "EMERGENCY"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.cli.demo")
    parser.add_argument("--db", required=True)
    parser.add_argument("--county", required=True, type=Path)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    store = open_store(args.db).create()
    for program in DEMO_PROGRAMS:
        register_program(store, program, by="demo")
    keys = {name: create_key(store, name, role, agency, list(purposes)) for name, role, agency, purposes in DEMO_KEYS}
    print("Demo API keys (generated just now, shown once):")
    for name, role, agency, purposes in DEMO_KEYS:
        print(f"  {role.value:13} {agency:18} {'|'.join(p.value for p in purposes) or '-':24} {keys[name]}")
    body = demo_briefing(args.county)
    print("\nA briefing for one incident of the county (run it in another terminal once the server is up):")
    print(f"  curl -s -X POST http://127.0.0.1:{args.port}/v1/briefings \\\n"
          f"    -H 'Authorization: Bearer {keys['demo-dispatcher']}' -H 'Content-Type: application/json' \\\n"
          f"    -d {shlex.quote(json.dumps(body))}")
    print(f"\nStewards review matches at http://127.0.0.1:{args.port}/review and programs work their referrals at "
          f"http://127.0.0.1:{args.port}/review/inbox (sign in with the steward's or a provider's key above).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
