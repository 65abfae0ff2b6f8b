"""Service load benchmark: `POST /v1/briefings` at a fixed rate against a real gunicorn on loopback.

    python -m evaluation.bench service100k                  # 100,000-record county, 200 req/s for 60 s
    python -m evaluation.bench service1m                    # 1,000,000 records, the same load
    python -m evaluation.bench service1m-300                # 1,000,000 records at 300 req/s
    python -m evaluation.bench service100k-gthread          # one worker with 4 threads instead of 2 processes

The county is generated and ingested with `briefing ingest` (a bulk link); a co-responder key
is created; `briefing serve` starts on a free port; the load generator (`evaluation.bench.loadgen`)
runs in its own process and replays the county's incidents as briefing requests, TREATMENT
purpose, 5 s of warm-up then the measured minute. The server runs no webhook deliverer (`--no-deliver`):
these benchmarks measure briefings, as before deliverers existed (`evaluation.bench.webhooks` measures them). While it runs the server's processes are
measured for memory once the minute is over: RSS counts shared pages in every process, PSS divides
them among the processes sharing them, USS is what each process holds alone — so USS shows what
copy-on-write sharing saves. Every request's latency is kept (`trace-*.csv`) for the plot. Afterwards the audit chain is verified (every briefing appended an event).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import psutil

from api.service.keys import create_key
from api.service.store import open_store
from evaluation.bench.child import BRIEFING, REPO, run_child, synth_county
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role

#: How an operator runs a bulk load at lower CPU priority on Linux: `nice` alone orders processes only within
#: their session's scheduling group (autogroup, on by default), so the load gets a session of its own whose
#: group is niced too.
LOW_PRIORITY = ["setsid", "sh", "-c", 'echo 10 > /proc/self/autogroup 2>/dev/null; exec nice -n 10 "$@"', "low-priority"]
SERVINGS = {"processes": {"workers": 2, "threads": 1}, "gthread": {"workers": 1, "threads": 4}}
WARM_UP_SECONDS = 5


def bench_service(work: Path, records: int, seed: int, serving: str = "processes", rate: float = 200.0,
                  duration: float = 60.0) -> dict:
    county = synth_county(work, records, seed)
    db, ingest = ingested_store(work, records, seed)
    result: dict = {"figure": f"service_{records}", "serving": serving, **SERVINGS[serving],
                    **({"ingest": ingest} if ingest else {})}
    key = _key(db)
    bodies = work / f"bodies-{records}-{seed}.jsonl"
    _write_bodies(county / "incidents.csv", bodies)
    port = _free_port()
    server = subprocess.Popen(BRIEFING + ["serve", "--db", str(db), "--port", str(port),
                                          "--workers", str(SERVINGS[serving]["workers"]),
                                          "--threads", str(SERVINGS[serving]["threads"]), "--no-deliver"],
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


def ingested_store(work: Path, records: int, seed: int) -> tuple[Path, dict | None]:
    """The synthetic county of `records` (`seed`) ingested into a SQLite store in `work` (kept there and reused), and
    what the ingest cost when it ran now (None when the store was there already)."""
    county = synth_county(work, records, seed)
    db = work / f"service-{records}-{seed}.db"
    if db.exists():
        return db, None
    wall, peak = run_child(BRIEFING + ["ingest", "--db", str(db), "--quiet", str(county / "records.csv"),
                                       str(county / "context_items.csv"), str(county / "consents.csv")])
    return db, {"seconds": round(wall, 1), "peak_rss_gb": round(peak, 2)}


def bench_service_rebuild(work: Path, records: int, seed: int, rate: float = 200.0) -> dict:
    """Briefings at `rate` while `briefing ingest` bulk-loads a tenth more records (at lower CPU priority, as an
    operator would schedule it) and the server builds and swaps in the new index: errors and latency throughout,
    and how long after the ingest finished the answers came from the new index. Beside them, how long the workers
    ran and waited, runnable, for a CPU while the ingest ran (`workers_cpu_during_ingest`): a server that falls behind
    while its workers wait as long as they run is short of CPU, not of the store."""
    county = synth_county(work, records, seed)
    base, _ = ingested_store(work, records, seed)
    db = work / f"rebuild-{records}-{seed}.db"
    for stale in db.parent.glob(db.name + "*"):               # a last run's write-ahead log would corrupt the copy
        stale.unlink()
    for stored in base.parent.glob(base.name + "*"):          # the store and its audit key and witness
        shutil.copy(stored, db.parent / stored.name.replace(base.name, db.name))
    bulk = _bulk_records(synth_county(work, records // 10, seed + 1), work / f"bulk-{records // 10}.csv")
    key = _key(db)
    bodies = work / f"bodies-{records}-{seed}.jsonl"
    _write_bodies(county / "incidents.csv", bodies)
    port = _free_port()
    server = subprocess.Popen(BRIEFING + ["serve", "--db", str(db), "--port", str(port), "--workers", "2", "--no-deliver"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    longest = 120 + records / 250        # the load's bound; it is stopped a minute after the new index answers
    result: dict = {"figure": f"service_rebuild_{records}", "rate": rate, "bulk_records": _count_rows(bulk)}
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", server, timeout=900)
        url = f"http://127.0.0.1:{port}/v1/briefings"
        _load(url, key, bodies, rate, WARM_UP_SECONDS, work / "warmup.json")
        load_out, trace = work / f"load-rebuild-{records}.json", work / f"trace-rebuild-{records}.csv"
        load = subprocess.Popen([sys.executable, "-m", "evaluation.bench.loadgen", "--url", url, "--key", key,
                                 "--bodies", str(bodies), "--rate", str(rate), "--duration", str(longest),
                                 "--out", str(load_out), "--trace", str(trace)], stdout=subprocess.DEVNULL)
        time.sleep(10)
        readyz, events = f"http://127.0.0.1:{port}/readyz", {"ingest_started": time.time()}
        first = _generation(readyz)
        before = _scheduled(server.pid)
        run_child(LOW_PRIORITY + BRIEFING + ["ingest", "--db", str(db), "--quiet", str(bulk)])
        events["ingest_finished"] = time.time()
        result["workers_cpu_during_ingest"] = _shares(before, _scheduled(server.pid),
                                                      events["ingest_finished"] - events["ingest_started"])
        events["answers_from_new_index"] = _new_generation_at(readyz, first, deadline=300)
        time.sleep(max(0.0, (events["answers_from_new_index"] or time.time()) + 60 - time.time()))
        load.terminate()                                          # the load generator stops sending and reports
        if load.wait() != 0:
            raise RuntimeError("the load generator failed")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    summary = json.loads(load_out.read_text())
    result["load"] = summary
    result["during"] = _window(trace, summary["started_at"], events)
    result["seconds_from_ingest_end_to_new_index"] = (
        None if events["answers_from_new_index"] is None
        else round(events["answers_from_new_index"] - events["ingest_finished"], 1))
    result["ingest_seconds"] = round(events["ingest_finished"] - events["ingest_started"], 1)
    result["targets"] = {"errors": 0, "p99_ms": "<= 100 throughout", "max_ms": "<= 1000",
                         "seconds_from_ingest_end_to_new_index": "<= 120"}
    return result


def _bulk_records(county: Path, out: Path) -> Path:
    """Another county's records under new ids: a bulk load of new people into the store."""
    frame = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    frame["record_id"] = "BULK-" + frame["record_id"]
    frame.to_csv(out, index=False)
    return out


def _count_rows(path: Path) -> int:
    return len(pd.read_csv(path, usecols=["record_id"], dtype=str))


def _new_generation_at(url: str, first: int, deadline: float) -> float | None:
    """When every worker answered from a newer index than `first` (six /readyz in a row); None if not by `deadline` s."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if min(_generation(url) for _ in range(6)) > first:
            return time.time()
        time.sleep(0.5)
    return None


def _generation(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["index"]["generation"]


def _window(trace: Path, started_at: float, events: dict) -> dict:
    """Latency and errors of the requests scheduled from the ingest's start to 10 s after the new index answered."""
    rows = pd.read_csv(trace)
    begin = events["ingest_started"] - started_at
    end = (events["answers_from_new_index"] or time.time()) - started_at + 10
    inside = rows[(rows["scheduled_s"] >= begin) & (rows["scheduled_s"] <= end)]
    ok = inside[inside["status"] == 200]
    return {"requests": int(len(inside)), "errors": int(len(inside) - len(ok)),
            "p50_ms": round(float(ok["latency_ms"].quantile(0.5)), 2) if len(ok) else None,
            "p99_ms": round(float(ok["latency_ms"].quantile(0.99)), 2) if len(ok) else None,
            "max_ms": round(float(ok["latency_ms"].max()), 2) if len(ok) else None}


def bench_service_rebuild100k(work: Path) -> dict:
    return bench_service_rebuild(work, 100_000, 303)


def bench_service_rebuild1m(work: Path) -> dict:
    return bench_service_rebuild(work, 1_000_000, 202)


def bench_service100k(work: Path) -> dict:
    return bench_service(work, 100_000, 303)


def bench_service100k_gthread(work: Path) -> dict:
    return bench_service(work, 100_000, 303, serving="gthread")


def bench_service1m(work: Path) -> dict:
    return bench_service(work, 1_000_000, 202)


def bench_service1m_300(work: Path) -> dict:
    result = bench_service(work, 1_000_000, 202, rate=300.0)
    result["targets"] = {"errors": 0, "p99_ms_from_schedule": "<= 15"}
    return result


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
    master = psutil.Process(pid)
    info = [p.memory_full_info() for p in [master] + master.children(recursive=True)]
    gb = 2 ** 30
    return {"processes": len(info), "rss_each": [round(i.rss / gb, 3) for i in info],
            "uss_each": [round(i.uss / gb, 3) for i in info], "pss_total": round(sum(i.pss for i in info) / gb, 3),
            "rss_total": round(sum(i.rss for i in info) / gb, 3)}


def _scheduled(pid: int) -> dict[int, tuple[float, float]]:
    """Seconds each worker of the gunicorn master `pid` has run on a CPU and waited, runnable, for one (Linux
    schedstat, summed over the worker's threads), by worker pid."""
    seconds = {}
    for worker in psutil.Process(pid).children():
        run = wait = 0.0
        for task in Path(f"/proc/{worker.pid}/task").glob("*"):
            try:
                ran, waited, _ = (int(field) for field in (task / "schedstat").read_text().split())
            except (OSError, ValueError):
                continue                                  # a thread that ended meanwhile
            run, wait = run + ran / 1e9, wait + waited / 1e9
        seconds[worker.pid] = (run, wait)
    return seconds


def _shares(before: dict, after: dict, wall: float) -> dict:
    """Of the workers alive at both readings: the mean share of the wall time each ran, and each waited for a CPU
    while runnable. Waiting as long as running means every answer took about twice its CPU time."""
    both = [pid for pid in before if pid in after]
    if not both or wall <= 0:
        return {}
    run, wait = (sum(after[pid][i] - before[pid][i] for pid in both) / len(both) / wall for i in (0, 1))
    return {"workers": len(both), "run_share": round(run, 3), "wait_share": round(wait, 3)}


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
