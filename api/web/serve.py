"""`briefing serve`: the service under gunicorn.

The application (store, matcher, ranker and the resolver's index) is built once in the gunicorn
master (`preload_app`) and the workers are forked from it, so they share the index copy-on-write
instead of each building it (at 1M records that is 30 s and 1.5 GB per worker). Python's cyclic GC
is frozen after the build (`matching.resolve.settle_memory`), which keeps those pages shared.

After a bulk load the master builds the next index too, in the background, and re-forks the workers
once it is swapped in (SIGHUP: gunicorn starts new workers, then lets the old ones finish their
requests); the workers never build, and answer from the current index meanwhile (api.service.rebuild).

Beside the workers the master keeps `DELIVERERS` webhook deliverers running (`briefing deliver`,
api/service/deliverer.py), each a process of its own, started again whenever it exits (killed or crashed), and
stopped with the server. Two, so that while one is being restarted the other keeps delivering: they never send
one row at once (the outbox leases each row to one of them).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gunicorn.app.base import BaseApplication

import models as default_models
from api.service.rebuild import watch
from api.web.app import create_app
from api.web.context import EXTENSION


DELIVERERS = 2


class _Gunicorn(BaseApplication):
    def __init__(self, application, options: dict):
        self.application, self.options = application, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.application


def serve(db: str, host: str = "127.0.0.1", port: int = 8080, workers: int = 2,
          models: str | Path = default_models.DIRECTORY, timeout: int = 30, threads: int = 1,
          deliver: bool = True) -> None:
    """Build the application once, then serve it with `workers` forked gunicorn workers (blocks).

    `threads` > 1 runs each worker as gunicorn's threaded worker (`gthread`). `deliver`: keep a webhook
    deliverer running beside them.
    """
    _log_beside_gunicorn(logging.getLogger("briefing"))
    application = create_app(db, models)
    service = application.extensions[EXTENSION]
    master = os.getpid()
    service.rebuilder.on_swap = lambda: os.kill(master, signal.SIGHUP)     # re-fork the workers on the new index
    watch(service)
    if deliver:
        _keep_deliverers(db, DELIVERERS)

    def in_worker(server, worker) -> None:
        service.rebuilder.builds_here = False                            # the master builds

    _Gunicorn(application, {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "preload_app": True,
                            "timeout": timeout, "post_fork": in_worker,
                            "control_socket_disable": True,   # gunicorn 27 would share one socket path per user
                            "accesslog": "-", "errorlog": "-", "loglevel": "info"}).run()


def _keep_deliverers(db: str, count: int, pause: float = 0.5) -> None:
    """Run `count` processes `briefing deliver --db db`, start each again whenever it exits, stop them at exit.

    Threads of the master watch them (threads are not copied into the forked workers). The stop at exit acts
    only in the master: the workers inherit the atexit registration with the fork, and a worker leaving must
    not stop (or wait for) the master's deliverers.
    """
    command = [sys.executable, "-m", "api.cli", "deliver", "--db", db, "--parent", str(os.getpid())]
    master = os.getpid()
    children: dict[int, subprocess.Popen] = {}
    stopping = threading.Event()

    def watch_child(slot: int) -> None:
        while not stopping.is_set():
            children[slot] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            code = children[slot].wait()
            if not stopping.is_set():
                logging.getLogger("briefing").warning("webhook deliverer exited (%s); starting it again", code)
                time.sleep(pause)

    def stop() -> None:
        if os.getpid() != master:
            return
        stopping.set()
        running = [child for child in children.values() if child.poll() is None]
        for child in running:
            child.terminate()
        deadline = time.monotonic() + 5
        for child in running:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()

    atexit.register(stop)
    for slot in range(count):
        threading.Thread(target=watch_child, args=(slot,), name=f"deliverer-watch-{slot}", daemon=True).start()


def _log_beside_gunicorn(log: logging.Logger) -> None:
    """The service's own messages (a rebuild swapped in, one that failed) in gunicorn's log, in its format."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
                                               "%Y-%m-%d %H:%M:%S %z"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
