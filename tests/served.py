"""A real `briefing serve` (gunicorn) on loopback for integration tests: start, wait for /readyz, stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(db: str, log: Path, workers: int = 2, ready_within: float = 90.0):
    """Run `briefing serve --db db` until the block ends; yields its base URL. Fails with the log's tail."""
    port = free_port()
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--db", db, "--port", str(port),
                                    "--workers", str(workers)], stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server never became ready:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def call(base: str, method: str, path: str, key: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of one request; HTTP errors are answers too."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                     method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else {}
