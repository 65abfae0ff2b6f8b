"""Benchmarks' child processes: the `briefing` command line, and a run measured alone (wall time, peak RSS)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BRIEFING = [sys.executable, "-m", "api.cli"]
REPO = Path(__file__).resolve().parent.parent


def machine() -> dict:
    """What the figure was measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_gb": round(mem_gb, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def run_child(args: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in GB of that child alone, via wait4)."""
    started = time.perf_counter()
    child = subprocess.Popen(args, cwd=REPO, stdout=sys.stderr)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, args)
    return time.perf_counter() - started, usage.ru_maxrss / 2**20
