"""`make demo`'s last step: demo keys for every role, and a working `curl` for one briefing.

    python -m api.demo --db out/demo/briefing.db --county out/demo/county [--port 8080]

Keys are generated now (never stored in the repo) and printed once; the curl uses the
dispatcher's key and the first incident of the county whose subject has records.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pandas as pd

from api.keys import create_key
from api.store import open_store
from scoring.item import Purpose, Role

DEMO_KEYS = (
    ("demo-dispatcher", Role.dispatcher, "COUNTY_911", (Purpose.EMERGENCY, Purpose.LAW)),
    ("demo-officer", Role.officer, "METRO_PD", (Purpose.EMERGENCY, Purpose.LAW, Purpose.THREAT)),
    ("demo-co-responder", Role.co_responder, "COUNTY_BH", (Purpose.EMERGENCY, Purpose.TREATMENT)),
    ("demo-ems", Role.ems, "COUNTY_EMS", (Purpose.EMERGENCY, Purpose.TREATMENT)),
    ("demo-feed", Role.feed, "METRO_PD", ()),
    ("demo-steward", Role.steward, "COUNTY", ()),
    ("demo-auditor", Role.auditor, "COUNTY", ()),
)


def main(argv: list[str] | None = None) -> int:
    from evaluation.synth.incidents import incident_queries

    parser = argparse.ArgumentParser(prog="python -m api.demo")
    parser.add_argument("--db", required=True)
    parser.add_argument("--county", required=True, type=Path)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    store = open_store(args.db).create()
    keys = {name: create_key(store, name, role, agency, list(purposes)) for name, role, agency, purposes in DEMO_KEYS}
    print("Demo API keys (generated just now, shown once):")
    for name, role, agency, purposes in DEMO_KEYS:
        print(f"  {role.value:13} {agency:11} {'|'.join(p.value for p in purposes) or '-':24} {keys[name]}")
    incidents = pd.read_csv(args.county / "incidents.csv", dtype=str, keep_default_na=False)
    known = incidents[incidents["person_key"] != ""].head(1)
    row = known.iloc[0]
    subject = {k: v for k, v in incident_queries(known)[0].items() if k != "received_at"}
    body = {"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"],
                         "callback_phone": row["callback_phone"]}, "subject": subject, "purpose": "EMERGENCY"}
    print("\nA briefing for one incident of the county (run it in another terminal once the server is up):")
    print(f"  curl -s -X POST http://127.0.0.1:{args.port}/v1/briefings \\\n"
          f"    -H 'Authorization: Bearer {keys['demo-dispatcher']}' -H 'Content-Type: application/json' \\\n"
          f"    -d {shlex.quote(json.dumps(body))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
