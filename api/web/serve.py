"""`briefing serve`: the service under gunicorn.

The application (store, matcher, ranker and the resolver's index) is built once in the gunicorn
master (`preload_app`) and the workers are forked from it, so they share the index copy-on-write
instead of each building it (at 1M records that is 30 s and 1.5 GB per worker). Python's cyclic GC
is frozen after the build (`matching.resolve.settle_memory`), which keeps those pages shared.

After a bulk load the master builds the next index too, in the background, and re-forks the workers
once it is swapped in (SIGHUP: gunicorn starts new workers, then lets the old ones finish their
requests); the workers never build, and answer from the current index meanwhile (api.service.rebuild).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from gunicorn.app.base import BaseApplication

import models as default_models
from api.service.rebuild import watch
from api.web.app import create_app
from api.web.context import EXTENSION


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
          models: str | Path = default_models.DIRECTORY, timeout: int = 30, threads: int = 1) -> None:
    """Build the application once, then serve it with `workers` forked gunicorn workers (blocks).

    `threads` > 1 runs each worker as gunicorn's threaded worker (`gthread`).
    """
    _log_beside_gunicorn(logging.getLogger("briefing"))
    application = create_app(db, models)
    service = application.extensions[EXTENSION]
    master = os.getpid()
    service.rebuilder.on_swap = lambda: os.kill(master, signal.SIGHUP)     # re-fork the workers on the new index
    watch(service)

    def in_worker(server, worker) -> None:
        service.rebuilder.builds_here = False                            # the master builds

    _Gunicorn(application, {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "preload_app": True,
                            "timeout": timeout, "post_fork": in_worker,
                            "control_socket_disable": True,   # gunicorn 27 would share one socket path per user
                            "accesslog": "-", "errorlog": "-", "loglevel": "info"}).run()


def _log_beside_gunicorn(log: logging.Logger) -> None:
    """The service's own messages (a rebuild swapped in, one that failed) in gunicorn's log, in its format."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
                                               "%Y-%m-%d %H:%M:%S %z"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
