"""Service load benchmark: `POST /v1/briefings` at a fixed rate against a real gunicorn on loopback.

    python -m evaluation.bench service100k                  # 100,000-record county, 200 req/s for 60 s
    python -m evaluation.bench service1m                    # 1,000,000 records, the same load
    python -m evaluation.bench service100k-gthread          # one worker with 4 threads instead of 2 processes

The county is generated and ingested with `briefing ingest` (a bulk link); a co-responder key
is created; `briefing serve` starts on a free port; the load generator (`evaluation.bench.loadgen`)
runs in its own process and replays the county's incidents as briefing requests, TREATMENT
purpose, 5 s of warm-up then the measured minute. While it runs the server's processes are
measured for memory once the minute is over: RSS counts shared pages in every process, PSS divides
them among the processes sharing them, USS is what each process holds alone — so USS shows what
copy-on-write sharing saves. Every request's latency is kept (`trace-*.csv`) for the plot. Afterwards the audit chain is verified (every briefing appended an event).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd

from api.service.keys import create_key
from api.service.store import open_store
from evaluation.bench.child import BRIEFING, REPO, run_child, synth_county
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role

SERVINGS = {"processes": {"workers": 2, "threads": 1}, "gthread": {"workers": 1, "threads": 4}}
WARM_UP_SECONDS = 5


def bench_service(work: Path, records: int, seed: int, serving: str = "processes", rate: float = 200.0,
                  duration: float = 60.0) -> dict:
    county = synth_county(work, records, seed)
    db = work / f"service-{records}-{seed}.db"
    result: dict = {"figure": f"service_{records}", "serving": serving, **SERVINGS[serving]}
    if not db.exists():
        wall, peak = run_child(BRIEFING + ["ingest", "--db", str(db), "--quiet", str(county / "records.csv"),
                                           str(county / "context_items.csv"), str(county / "consents.csv")])
        result["ingest"] = {"seconds": round(wall, 1), "peak_rss_gb": round(peak, 2)}
    key = _key(db)
    bodies = work / f"bodies-{records}-{seed}.jsonl"
    _write_bodies(county / "incidents.csv", bodies)
    port = _free_port()
    server = subprocess.Popen(BRIEFING + ["serve", "--db", str(db), "--port", str(port),
                                          "--workers", str(SERVINGS[serving]["workers"]),
                                          "--threads", str(SERVINGS[serving]["threads"])],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        started = time.perf_counter()
        _wait_ready(f"http://127.0.0.1:{port}/readyz", server, timeout=600)
        result["seconds_to_ready"] = round(time.perf_counter() - started, 1)
        url = f"http://127.0.0.1:{port}/v1/briefings"
        _load(url, key, bodies, rate, WARM_UP_SECONDS, work / "warmup.json")
        result["load"] = _load(url, key, bodies, rate, duration, work / f"load-{records}-{serving}.json",
                               work / f"trace-{records}-{serving}.csv")
        result["memory_gb"] = _memory(server.pid)          # after the load: read during it, it would stall the workers
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    verify = subprocess.run(BRIEFING + ["audit", "verify", "--db", str(db)], cwd=REPO, capture_output=True, text=True)
    result["audit_verify_exit"] = verify.returncode
    result["targets"] = {"errors": 0, "p99_ms_from_schedule": "<= 25 (at 100,000 records)"}
    return result


def bench_service100k(work: Path) -> dict:
    return bench_service(work, 100_000, 303)


def bench_service100k_gthread(work: Path) -> dict:
    return bench_service(work, 100_000, 303, serving="gthread")


def bench_service1m(work: Path) -> dict:
    return bench_service(work, 1_000_000, 202)


def _key(db: Path) -> str:
    store = open_store(str(db)).create()
    return create_key(store, f"bench-{time.time_ns()}", Role.co_responder, "COUNTY_BH",
                      [Purpose.TREATMENT, Purpose.EMERGENCY])


def _write_bodies(incidents_csv: Path, out: Path) -> None:
    """One briefing request per incident, as a CAD would send it."""
    incidents = pd.read_csv(incidents_csv, dtype=str, keep_default_na=False)
    with out.open("w") as handle:
        for row, subject in zip(incidents.to_dict("records"), incident_queries(incidents)):
            location = {k: row[f"location_{k}"] or None for k in ("street", "city", "postcode")}
            handle.write(json.dumps({
                "incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"],
                             "location": location, "callback_phone": row["callback_phone"] or None},
                "subject": {k: v for k, v in subject.items() if k != "received_at"}, "purpose": "TREATMENT"}) + "\n")


def _load(url: str, key: str, bodies: Path, rate: float, duration: float, out: Path, trace: Path | None = None) -> dict:
    """The load generator in a second process, bounded in time; with the CPU it used itself."""
    child = subprocess.Popen([sys.executable, "-m", "evaluation.bench.loadgen", "--url", url, "--key", key,
                              "--bodies", str(bodies), "--rate", str(rate), "--duration", str(duration),
                              "--out", str(out)] + (["--trace", str(trace)] if trace else []), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the load generator failed (status {status})")
    return json.loads(out.read_text()) | {"generator_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1)}


def _memory(pid: int) -> dict:
    """RSS, PSS and USS of the gunicorn master and each worker, in GB.

    Reading PSS walks every page table of a process under its memory lock, so it is done once,
    after the measured minute, never while requests are timed.
    """
    import psutil

    master = psutil.Process(pid)
    info = [p.memory_full_info() for p in [master] + master.children(recursive=True)]
    gb = 2 ** 30
    return {"processes": len(info), "rss_each": [round(i.rss / gb, 3) for i in info],
            "uss_each": [round(i.uss / gb, 3) for i in info], "pss_total": round(sum(i.pss for i in info) / gb, 3),
            "rss_total": round(sum(i.rss for i in info) / gb, 3)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")
