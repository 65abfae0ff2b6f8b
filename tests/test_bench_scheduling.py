"""The service benchmarks' reading of how long each worker ran and waited for a CPU (evaluation.bench.service):
the figure that tells a server short of CPU from one waiting on something else."""

import subprocess
import sys
import time

import psutil
import pytest

from evaluation.bench.service import _scheduled, _shares

SPIN = "x = 0\nwhile True:\n    x += 1"
PARENT = ("import subprocess, sys, time\n"
          f"children = [subprocess.Popen([sys.executable, '-c', {SPIN!r}]) for _ in range(2)]\n"
          "time.sleep(60)")


@pytest.fixture
def spinning_workers():
    """A parent process with two children that are always runnable, as workers with requests queued are."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        deadline = time.monotonic() + 20
        while len(psutil.Process(parent.pid).children()) < 2:
            assert time.monotonic() < deadline, "the children did not start"
            time.sleep(0.05)
        yield parent.pid
    finally:
        for child in psutil.Process(parent.pid).children():
            child.kill()
        parent.kill()
        parent.wait()


def test_an_always_runnable_worker_is_either_running_or_waiting_for_a_cpu_the_whole_time(spinning_workers):
    before, started = _scheduled(spinning_workers), time.monotonic()
    time.sleep(1.0)
    shares = _shares(before, _scheduled(spinning_workers), time.monotonic() - started)
    assert shares["workers"] == 2
    assert 0.85 <= shares["run_share"] + shares["wait_share"] <= 1.1
    assert shares["run_share"] > 0.1


def test_workers_gone_or_new_between_the_readings_are_left_out():
    assert _shares({1: (1.0, 0.0)}, {2: (3.0, 1.0)}, 2.0) == {}
    assert _shares({1: (1.0, 0.5), 3: (0.0, 0.0)}, {1: (2.0, 1.5), 2: (9.0, 9.0)}, 2.0) == {
        "workers": 1, "run_share": 0.5, "wait_share": 0.5}
