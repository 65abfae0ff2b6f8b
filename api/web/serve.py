"""`briefing serve`: the service under gunicorn.

The application (store, matcher, ranker and the resolver's index) is built once in the gunicorn
master (`preload_app`) and the workers are forked from it, so they share the index copy-on-write
instead of each building it (at 1M records that is 30 s and 1.5 GB per worker). Python's cyclic GC
is frozen after the build (`matching.resolve.settle_memory`), which keeps those pages shared.
"""

from __future__ import annotations

from pathlib import Path

from gunicorn.app.base import BaseApplication

import models as default_models
from api.web.app import create_app


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
    application = create_app(db, models)
    _Gunicorn(application, {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "preload_app": True,
                            "timeout": timeout,
                            "control_socket_disable": True,   # gunicorn 27 would share one socket path per user
                            "accesslog": "-", "errorlog": "-", "loglevel": "info"}).run()
