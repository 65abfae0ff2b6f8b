"""Warm hand-off delivery: `POST /v1/referrals` at a fixed rate, time until the program's webhook receives it.

    python -m evaluation.bench webhooks          # 50 referrals/s for 60 s, a worker and the deliverer killed -9

A small county is generated and ingested; a program is registered with a webhook on a receiver in this
process (a threaded HTTP server on loopback that checks every signature with the program's secret and keeps
every message); `briefing serve` (two workers and its deliverer) starts with `BRIEFING_ALLOW_HTTP_WEBHOOKS=1`.
An officer briefs incidents until some resolve, then refers their persons at `rate` per second. With `kill`,
a gunicorn worker is sent SIGKILL at 30 % of the run and the deliverer at 60 % (the server starts a new one).

Measured: for every referral the store holds at the end (a POST cut off by a killed worker may or may not
have committed: the store says), the time from sending its POST to the first receipt of its webhook
(p50/p95/p99), and the referrals never received (`lost`, must be 0), the messages received more than once
(`duplicates`) and whether each duplicate carried the delivery id and body of its first copy (`harmless`),
and the messages whose signature did not verify (must be 0).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import psutil
from sqlalchemy import select

from api.service.ingest import ingest
from api.service.keys import create_key
from api.service.referrals import register_program
from api.service.store import open_store, referrals
from api.service.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, set_webhook, verify
from evaluation.bench.child import BRIEFING, REPO, machine
from evaluation.synth.county import generate_county
from evaluation.synth.incidents import incident_queries
from matching.model import MatcherModel
from scoring.item import Purpose, Role
from scoring.referral import ProgramKind
from scoring.referral_policy import Program

PROGRAM = "MOBILE_CRISIS"


class Receiver:
    """A program's webhook endpoint on loopback: verifies each message and keeps (delivery id, body, when)."""

    def __init__(self):
        self.secret = ""
        self.messages: list[tuple[str, bytes, float]] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = verify(self.headers.get(SIGNATURE_HEADER, ""), body, receiver.secret, time.time())
                with receiver.lock:
                    if ok:
                        receiver.messages.append((self.headers.get(DELIVERY_HEADER, ""), body, time.monotonic()))
                    else:
                        receiver.bad_signatures += 1
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first_receipts(self) -> dict[int, float]:
        with self.lock:
            firsts: dict[int, float] = {}
            for _, body, at in self.messages:
                referral = json.loads(body)["referral_id"]
                firsts[referral] = min(at, firsts.get(referral, at))
        return firsts

    def duplicates(self) -> tuple[int, bool]:
        """How many messages repeated an earlier delivery id, and whether each repeated its body exactly."""
        with self.lock:
            seen: dict[str, bytes] = {}
            repeats, harmless = 0, True
            for delivery, body, _ in self.messages:
                if delivery in seen:
                    repeats += 1
                    harmless &= seen[delivery] == body
                seen.setdefault(delivery, body)
        return repeats, harmless


def _prepare(work: Path, persons: int, seed: int, receiver: Receiver) -> tuple[str, dict, list[dict]]:
    county = work / "county"
    generate_county(persons, seed, county, progress=False)
    db = str(work / "briefing.db")
    store = open_store(db).create()
    ingest(store, [county / "records.csv", county / "context_items.csv", county / "consents.csv"],
           MatcherModel.load(REPO / "models" / "matcher.json"))
    register_program(store, Program(PROGRAM, ProgramKind.mobile_crisis, False, "555-0101"), by="bench")
    receiver.secret = set_webhook(store, PROGRAM, receiver.url, by="bench")
    keys = {"officer": create_key(store, "pd-bench", Role.officer, "METRO_PD", [Purpose.LAW, Purpose.EMERGENCY])}
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    bodies = [{"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"]},
               "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": "LAW"}
              for row, subject in zip(incidents.to_dict("records"), incident_queries(incidents))]
    return db, keys, bodies


def _post(base: str, path: str, key: str, body: dict, timeout: float = 10) -> tuple[int, dict]:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:
        return 0, {}                                  # cut off (a killed worker): the store decides whether it landed


def _serve(db: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "BRIEFING_ALLOW_HTTP_WEBHOOKS": "1"}
    with open(log, "wb") as sink:
        server = subprocess.Popen(BRIEFING + ["serve", "--db", db, "--port", str(port), "--workers", "2"], cwd=REPO,
                                  stdout=sink, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return server, base
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("the server never became ready")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kill(server: subprocess.Popen, deliverer: bool) -> int | None:
    """SIGKILL one gunicorn worker, or the deliverer; the pid killed."""
    children = psutil.Process(server.pid).children()
    chosen = [c for c in children if ("deliver" in " ".join(c.cmdline())) == deliverer]
    if not chosen:
        return None
    os.kill(chosen[0].pid, signal.SIGKILL)
    return chosen[0].pid


def _brief(base: str, key: str, bodies: list[dict], wanted: int) -> list[str]:
    """Incidents whose briefing resolved a person (what a referral names), at most `wanted`."""
    resolved = []
    for body in bodies:
        status, answer = _post(base, "/v1/briefings", key, body)
        if status == 200 and answer["resolution"]["status"] == "resolved":
            resolved.append(body["incident"]["id"])
            if len(resolved) == wanted:
                break
    return resolved


def _load(base: str, key: str, incidents: list[str], rate: float, seconds: float,
          kills: list[tuple[float, Callable[[], object]]]) -> dict[int, float]:
    """Referrals at `rate`/s for `seconds`, each sent by a pool thread at its scheduled time, the kills made at
    their fractions of the run; {referral id: when its POST was sent} for every POST answered 201."""
    sent_at: dict[int, float] = {}
    started, total = time.monotonic(), int(rate * seconds)
    pending = sorted(kills, key=lambda k: k[0])

    def refer(k: int) -> None:
        body = {"incident_id": incidents[k % len(incidents)], "program": PROGRAM, "reason": "crisis_stabilisation",
                "urgency": "warm_handoff", "basis": "agreement", "agreement_note": f"bench {k}"}
        at = time.monotonic()
        status, answer = _post(base, "/v1/referrals", key, body)
        if status == 201:
            sent_at[answer["referral"]["id"]] = at

    with ThreadPoolExecutor(max_workers=32) as pool:
        for k in range(total):
            while pending and time.monotonic() - started >= pending[0][0] * seconds:
                pending.pop(0)[1]()
            time.sleep(max(0.0, started + k / rate - time.monotonic()))
            pool.submit(refer, k)
    return sent_at


def bench_webhooks(work: Path, persons: int = 300, seed: int = 11, rate: float = 50.0, seconds: float = 60.0,
                   kill: bool = True, settle: float = 45.0) -> dict:
    """Run the benchmark (see the module docstring); its figures. Needs BRIEFING_ALLOW_HTTP_WEBHOOKS=1 (set here
    for this process and the server: the receiver is plain HTTP on loopback)."""
    os.environ["BRIEFING_ALLOW_HTTP_WEBHOOKS"] = "1"
    work.mkdir(parents=True, exist_ok=True)
    receiver = Receiver()
    db, keys, bodies = _prepare(work, persons, seed, receiver)
    server, base = _serve(db, work / "serve.log")
    killed: dict[str, int | None] = {}
    try:
        incidents = _brief(base, keys["officer"], bodies, 40)
        kills = [(0.3, lambda: killed.setdefault("worker", _kill(server, deliverer=False))),
                 (0.6, lambda: killed.setdefault("deliverer", _kill(server, deliverer=True)))] if kill else []
        with open_store(db).engine.connect() as connection:
            before = connection.execute(select(referrals.c.id).order_by(referrals.c.id.desc()).limit(1)).scalar() or 0
        sent_at = _load(base, keys["officer"], incidents, rate, seconds, kills)
        with open_store(db).engine.connect() as connection:
            stored = [r for r in connection.execute(select(referrals.c.id).where(referrals.c.id > before)
                                                   .order_by(referrals.c.id)).scalars()]
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and set(stored) - set(receiver.first_receipts()):
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return _figures(receiver, stored, sent_at, rate, seconds, killed)


def _figures(receiver: Receiver, stored: list[int], sent_at: dict[int, float], rate: float, seconds: float,
             killed: dict) -> dict:
    """The benchmark's figures: latency over the referrals whose POST was answered (one cut off by a killed
    worker has no send time, but counts as lost if it landed and was never delivered)."""
    firsts = receiver.first_receipts()
    lost = [r for r in stored if r not in firsts]
    latencies = np.array([firsts[r] - at for r, at in sent_at.items() if r in firsts])
    repeats, harmless = receiver.duplicates()

    def quantile(q: float) -> float | None:
        return round(float(np.quantile(latencies, q)) * 1000, 1) if len(latencies) else None

    return {"bench": "webhooks", "rate_per_s": rate, "seconds": seconds, "referrals_answered_201": len(sent_at),
            "referrals_stored": len(stored), "delivered": len(stored) - len(lost), "lost": len(lost),
            "latency_ms": {"p50": quantile(0.5), "p95": quantile(0.95), "p99": quantile(0.99), "max": quantile(1.0)},
            "duplicates": repeats, "duplicates_harmless": harmless, "bad_signatures": receiver.bad_signatures,
            "killed": killed, "machine": machine()}
