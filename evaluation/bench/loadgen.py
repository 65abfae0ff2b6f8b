"""An open-loop HTTP load generator: a fixed request rate for a fixed time, latency from the schedule.

    python -m evaluation.bench.loadgen --url http://127.0.0.1:8080/v1/briefings --key KEY \\
        --bodies bodies.jsonl --rate 200 --duration 60 --out result.json

Requests are sent on a fixed schedule (request i at start + i / rate) by a pool of threads, each
with its own keep-alive connection, whatever the server's speed: a slow answer does not delay
the next request (no coordinated omission). Latency is measured from the scheduled time, so
time spent queued behind a slow request counts; the time from the actual send is reported too.
Run it in its own process so its work is not counted in the server's. Bounded in time: it stops
sending at `duration`, or at SIGTERM (a caller that ends the load when what it measures is over), and waits at
most `timeout` seconds for the last answers; the summary's `duration_s` is the schedule actually sent.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import queue
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


_RESOLUTION = re.compile(rb'"resolution":\{"status":"([a-z_]+)"')


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    resolution: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    from_schedule_ms: list[float] = field(default_factory=list)
    from_send_ms: list[float] = field(default_factory=list)
    late_starts: int = 0                      # requests sent more than 10 ms after their scheduled time
    started_at: float = 0.0                   # Unix time of the schedule's start (trace times count from it)
    trace: list[tuple[float, float, int]] = field(default_factory=list)   # (scheduled s from start, ms, status)

    def summary(self, rate: float, duration: float, wall: float) -> dict:
        def pct(values: list[float]) -> dict:
            if not values:
                return {}
            array = np.asarray(values)
            return {f"p{q}": round(float(np.percentile(array, q)), 2) for q in (50, 90, 99, 99.9)} | {
                "max": round(float(array.max()), 2), "mean": round(float(array.mean()), 2)}

        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        return {"target_rate": rate, "duration_s": duration, "started_at": self.started_at, "wall_s": round(wall, 2),
                "sent": self.sent,
                "achieved_rate": round(self.sent / duration, 1) if duration else 0.0, "ok": ok,
                "errors": self.sent - ok, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "error_kinds": dict(self.errors), "resolution_status": dict(self.resolution),
                "late_starts": self.late_starts, "latency_ms_from_schedule": pct(self.from_schedule_ms),
                "latency_ms_from_send": pct(self.from_send_ms)}


def run_load(url: str, key: str, bodies: list[bytes], rate: float, duration: float, threads: int = 32,
             timeout: float = 10.0, stop: threading.Event | None = None) -> tuple[LoadResult, float, float]:
    """Send `rate` requests/s for `duration` s (or until `stop` is set) cycling through `bodies`; (result, wall
    seconds, seconds of schedule sent)."""
    parts = urlsplit(url)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    total = int(rate * duration)
    work: queue.Queue = queue.Queue()
    result, guard = LoadResult(), threading.Lock()
    start = time.perf_counter() + 0.5
    result.started_at = time.time() + (start - time.perf_counter())

    def worker() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        while (job := work.get()) is not None:
            scheduled, body = job
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            status, resolution, error = None, None, None
            try:
                connection.request("POST", parts.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                status = response.status
                if status == 200:
                    found = _RESOLUTION.search(payload)      # cheaper than parsing: the generator shares the CPUs
                    resolution = found.group(1).decode() if found else None
            except (OSError, http.client.HTTPException) as exc:
                error = type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
            done = time.perf_counter()
            with guard:
                result.sent += 1
                result.late_starts += sent - scheduled > 0.010
                if error:
                    result.errors[error] += 1
                else:
                    result.statuses[status] += 1
                    result.from_schedule_ms.append((done - scheduled) * 1000)
                    result.from_send_ms.append((done - sent) * 1000)
                result.trace.append((scheduled - start, (done - scheduled) * 1000, status or 0))
                if resolution:
                    result.resolution[resolution] += 1
        connection.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    # Feed the queue just ahead of the schedule, so a thread picks up the next due request.
    scheduled = 0
    for i, body in zip(range(total), itertools.cycle(bodies)):
        due = start + i / rate
        while due - time.perf_counter() > 0.05 and not (stop and stop.is_set()):
            time.sleep(0.01)
        if stop and stop.is_set():
            break
        work.put((due, body))
        scheduled = i + 1
    for _ in pool:
        work.put(None)
    deadline = start + scheduled / rate + timeout
    for thread in pool:
        thread.join(max(0.0, deadline - time.perf_counter()))
    return result, time.perf_counter() - start, scheduled / rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--bodies", required=True, type=Path, help="JSON lines, one request body each (cycled)")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--out", type=Path, help="write the summary here as well as to stdout")
    parser.add_argument("--trace", type=Path, help="write every request as CSV: scheduled_s, latency_ms, status")
    args = parser.parse_args(argv)
    bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line.strip()]
    if not bodies:
        parser.error(f"{args.bodies}: no request bodies")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    result, wall, sent_for = run_load(args.url, args.key, bodies, args.rate, args.duration, args.threads, stop=stop)
    summary = result.summary(args.rate, sent_for, wall)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.trace:
        rows = sorted(result.trace)
        args.trace.write_text("scheduled_s,latency_ms,status\n" + "".join(f"{t:.4f},{ms:.2f},{st}\n" for t, ms, st in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
