"""The running service: everything one worker serves from (`Service`), and how it is built (`build_service`).

`build_service(db, models_dir)` opens the store, loads the matcher, the ranker and the rules, and builds the
resolver's index from the store's records and clusters (api/web/app.py's `create_app` serves it over HTTP;
`/readyz` answers once it is built, and reports later rebuilds: api.service.rebuild). The ranker is loaded only from `ranker.json` (JSON, digest-checked: a
tampered file stops the start), never unpickled.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import models as default_models
from api.service.budget import BudgetPool
from api.service.changes import latest
from api.service.keys import KeyCache
from api.service.rebuild import IndexRebuilder, build_resolver
from api.service.reference import reference_secret
from api.service.store import Store, open_store
from api.service.throttle import FailureThrottle
from matching.model import MatcherModel
from matching.resolve import Resolver
from scoring.ranker import ItemScorecard
from scoring.followup import FollowUpRules
from scoring.rules import Rules

log = logging.getLogger("briefing")


@dataclass
class Service:
    store: Store
    resolver: Resolver
    rules: Rules
    ranker: ItemScorecard | None
    versions: dict = field(default_factory=dict)
    budget_seconds: float = 0.25
    applied: int = 0                      # the last change (api.service.changes) this worker's index holds
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    keys: KeyCache | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))   # policy's "now" (tests freeze it)
    reference_key: bytes = b""            # keys the opaque record references responders see (api.service.reference)
    pool: BudgetPool = field(default_factory=BudgetPool)   # briefings' threads: bounded, never queued (api.service.budget)
    generation: int = 1                   # of the index answering; each rebuild swapped in adds one
    changes_lock: threading.RLock = field(default_factory=threading.RLock)   # orders change application and swaps
    rebuilder: IndexRebuilder | None = None
    follow_ups: FollowUpRules = field(default_factory=FollowUpRules.load)   # scoring/followup.toml

    def __post_init__(self):
        self.keys = self.keys or KeyCache(self.store)
        self.rebuilder = self.rebuilder or IndexRebuilder(self)


def build_service(db: str, models_dir: str | Path = default_models.DIRECTORY, budget_ms: float = 250,
                  clock: Callable[[], datetime] | None = None) -> Service:
    """The service over the store at `db` with the models in `models_dir` (see the module docstring).

    `budget_ms`: how long a briefing may take before it answers `unavailable`. `clock`: the time at
    which the access policy judges consents and expiries (default: the server's UTC clock).
    """
    models = Path(models_dir)
    store = open_store(db).create()
    matcher = MatcherModel.load(models / "matcher.json")
    with store.engine.connect() as connection:
        applied = latest(connection)          # read first: later changes are re-applied, which is harmless
    resolver = build_resolver(store, matcher)
    ranker = None
    if (models / "ranker.json").exists():     # JSON, digest-checked; a tampered file stops the start (ValueError)
        ranker = ItemScorecard.load(models / "ranker.json")
    elif (models / "ranker.joblib").exists():
        log.warning("%s is ignored: a ranker is loaded only from ranker.json, never unpickled; retrain it with "
                    "`briefing train-ranker`", models / "ranker.joblib")
    rules = Rules.load()
    versions = {"matcher": matcher.version, "policy": rules.version,
                "ranker": ranker.file_sha256_[:12] if ranker else None}
    return Service(store, resolver, rules, ranker, versions, budget_ms / 1000.0, applied,
                   reference_key=reference_secret(store), **({"clock": clock} if clock else {}))
