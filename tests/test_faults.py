"""Fault tests (issue 5): SIGKILL a `briefing ingest` mid-file and a gunicorn worker mid-`POST /v1/records`.

After each kill the store holds every write whole or not at all, and `briefing audit verify` exits 0.
The kills are timed by what the processes show from outside, with no hook in the code: the ingest's
stage lines on stderr (`… validating`, `… linking`, `… writing`, then `done in` once committed), the
size of the store's write-ahead log, which grows while the write transaction is still open (SQLite
spills uncommitted pages to it) and jumps at the commit, and /proc/locks, where a process inside a
write transaction holds SQLite's WAL write lock. Worker kills go to the worker seen holding that
lock while several clients keep both workers writing.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import psutil
import pytest
from sqlalchemy import select

from api.service.audit import append
from api.service.keys import create_key
from api.service.reference import person_reference, reference_secret
from api.service.store import audit_events, changes, clusters, consents, context_items, open_store, records
from evaluation.synth.county import generate_county
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- shared checks


def _briefing(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`briefing ARGV` in its own process, from the repository root (where models/ is)."""
    return subprocess.run([sys.executable, "-m", "api.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _audit_verify_passes(db: Path | str) -> bool:
    done = _briefing("audit", "verify", "--db", str(db))
    assert done.returncode == 0, done.stderr
    return "audit chain holds" in done.stdout


def _sqlite_is_sound(db: Path | str) -> None:
    """The file as SQLite sees it after the crash: pages intact, no dangling foreign keys."""
    connection = sqlite3.connect(str(db))
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()


def _proc_locks_usable() -> bool:
    """Whether /proc/locks exists and names this process's locks by the pids this process sees."""
    import fcntl
    import tempfile

    if not Path("/proc/locks").exists():
        return False
    with tempfile.TemporaryFile() as probe:
        fcntl.lockf(probe, fcntl.LOCK_EX)
        ino = os.fstat(probe.fileno()).st_ino
        rows = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
        return any(len(f) == 8 and f[4] == str(os.getpid()) and f[5].endswith(f":{ino}") for f in rows)


PROC_LOCKS = _proc_locks_usable()


def _write_lock_holders(db: Path | str, pids: set[int]) -> set[int]:
    """Those of `pids` holding SQLite's WAL write lock on `db` (a POSIX lock on byte 120 of its -shm file), as
    /proc/locks shows: each is inside a write transaction. Empty where there is no /proc/locks."""
    locks, shm = Path("/proc/locks"), Path(f"{db}-shm")
    if not PROC_LOCKS or not shm.exists():
        return set()
    st = shm.stat()
    file = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    held = set()
    for line in locks.read_text().splitlines():
        fields = line.split()               # n: POSIX ADVISORY WRITE pid maj:min:inode start end (waiters have "->")
        if (len(fields) == 8 and fields[1] == "POSIX" and fields[3] == "WRITE" and fields[5] == file
                and fields[6] == "120" and int(fields[4]) in pids):
            held.add(int(fields[4]))
    return held


@dataclass(frozen=True)
class Snapshot:
    """What the store holds, as far as a load or a feed can change it."""

    records: frozenset
    clusters: dict
    items: frozenset
    consents: frozenset
    changes: tuple          # (seq, op, record_id)
    audit: tuple            # (seq, action, payload)


def _snapshot(db: Path | str) -> Snapshot:
    store = open_store(str(db))
    try:
        with store.engine.connect() as c:
            return Snapshot(
                frozenset(c.execute(select(records.c.record_id)).scalars()),
                dict(c.execute(select(clusters.c.record_id, clusters.c.person_id)).all()),
                frozenset(c.execute(select(context_items.c.item_id)).scalars()),
                frozenset(c.execute(select(consents.c.consent_id)).scalars()),
                tuple(tuple(r) for r in c.execute(select(changes.c.seq, changes.c.op, changes.c.record_id)
                                                  .order_by(changes.c.seq))),
                tuple(tuple(r) for r in c.execute(select(audit_events.c.seq, audit_events.c.action,
                                                         audit_events.c.payload).order_by(audit_events.c.seq))))
    finally:
        store.engine.dispose()


def _copy_store(source: Path, target: Path) -> Path:
    for suffix in ("", "-wal", "-shm", ".audit-key", ".audit-witness"):    # the audit key and witness move with it
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", f"{target}{suffix}")
    return target


# --------------------------------------------------------------------------- ingest killed mid-file


@dataclass(frozen=True)
class Load:
    """A store holding a small county, and a second, larger county's files (ids prefixed, so all new) to load."""

    base_db: Path
    base: Snapshot
    files: list[Path]
    record_ids: frozenset
    item_ids: frozenset
    consent_ids: frozenset


@pytest.fixture(scope="module")
def second_load(tmp_path_factory) -> Load:
    base_dir = tmp_path_factory.mktemp("base")
    db, store = loaded_county(base_dir, 300, 31)
    with store.begin() as connection:               # a chain to keep whole: the ingest writes no events
        for n in range(3):
            append(connection, "fault_test_seed", {"n": n}, principal="fault-test")
    store.engine.dispose()
    county = tmp_path_factory.mktemp("second")
    generate_county(3000, 32, county, progress=False)
    out = tmp_path_factory.mktemp("load")
    ids = {}
    files = []
    for name, columns, key in (("records", ["record_id"], "record_id"),
                               ("context_items", ["item_id", "record_id", "consent_id"], "item_id"),
                               ("consents", ["consent_id", "record_id"], "consent_id")):
        frame = pd.read_csv(county / f"{name}.csv", dtype=str, keep_default_na=False)
        for column in columns:
            frame[column] = frame[column].where(frame[column] == "", "B-" + frame[column])
        frame.to_csv(out / f"{name}.csv", index=False)
        files.append(out / f"{name}.csv")
        ids[name] = frozenset(frame[key])
    base = _snapshot(db)
    assert not ids["records"] & base.records
    return Load(Path(db), base, files, ids["records"], ids["context_items"], ids["consents"])


@dataclass
class Kill:
    moment: str
    stage: str = "starting"         # the last stage line the ingest had printed
    wal_at_writing: int = -1        # the log's size when `… writing` appeared
    wal_at_kill: int = -1
    in_transaction: bool = False    # it held the store's write lock when killed
    alive: bool = False             # still running when killed (not already finished)
    outcome: str = ""               # "none" or "all" of the load in the store afterwards


def _wal_size(db: Path) -> int:
    try:
        return os.path.getsize(f"{db}-wal")
    except FileNotFoundError:
        return 0


def _ingest_killed(db: Path, files: list[Path], moment: str, stage: str, delay: float, wal_grown: int | None) -> Kill:
    """Run the ingest; SIGKILL it `delay` s after it prints `stage` (given `wal_grown`: once the log grew by more)."""
    kill = Kill(moment)
    process = subprocess.Popen([sys.executable, "-m", "api.cli", "ingest", "--db", str(db), *map(str, files)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stages: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in process.stderr:
            text = line.strip()
            if text.startswith("…"):
                label = text.removeprefix("…").split()[0]
                if label == "writing":
                    kill.wal_at_writing = _wal_size(db)
            elif text.startswith("done in") and stages and stages[-1] == "writing":
                label = "committed"            # printed once ingest() has returned: after the commit
            else:
                continue
            stages.append(label)
            if label == stage:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not seen.wait(0.002) and process.poll() is None:
            assert time.monotonic() < deadline, f"the ingest never reached {stage}"
        due = time.monotonic() + delay
        while process.poll() is None and (time.monotonic() < due or (wal_grown is not None and (
                _wal_size(db) <= kill.wal_at_writing + wal_grown
                # inside a transaction: a bulk load on SQLite pauses between its turns (api.service.staging)
                or PROC_LOCKS and not _write_lock_holders(db, {process.pid})))):
            assert time.monotonic() < deadline, f"the ingest never got to {moment}"
            time.sleep(0.002)
        kill.in_transaction = bool(_write_lock_holders(db, {process.pid}))
        kill.alive = process.poll() is None
        kill.wal_at_kill = _wal_size(db)
        kill.stage = stages[-1] if stages else "starting"
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        reader.join(timeout=10)
    assert process.returncode in (-signal.SIGKILL, 0), process.returncode
    return kill


def _whole_or_absent(load: Load, db: Path) -> str:
    """Assert the load is in the store entirely or not at all; which one."""
    _sqlite_is_sound(db)
    now = _snapshot(db)
    assert set(now.clusters) == set(now.records), "every record has a person"
    if now == load.base:
        return "none"
    assert now.audit[: len(load.base.audit)] == load.base.audit
    assert [action for _, action, _ in now.audit[len(load.base.audit):]] == ["ingest"], "the load is audited once"
    assert now.records == load.base.records | load.record_ids
    assert now.items == load.base.items | load.item_ids
    assert now.consents == load.base.consents | load.consent_ids
    assert now.changes[: len(load.base.changes)] == load.base.changes
    assert [op for _, op, _ in now.changes[len(load.base.changes):]] == ["rebuild"]   # a bulk load: one rebuild
    return "all"


# (name, stage to wait for, seconds after it, and how much the log must have grown first)
MOMENTS = [
    ("validating", "validating", 0.1, None),
    ("linking", "linking", 0.25, None),
    ("write transaction open, nothing in the log yet", "writing", 0.3, None),
    ("the first uncommitted pages in the log", "writing", 0.0, 4096),
    ("deep in the uncommitted spill", "writing", 0.0, 1_000_000),
    ("the commit being written", "writing", 0.0, 3_000_000),
    ("committed, not yet reported", "committed", 0.0, None),
]


def test_ingest_killed_at_any_moment_leaves_the_load_whole_or_absent_and_a_rerun_completes_it(second_load, tmp_path):
    load = second_load
    kills = []
    for n, (moment, stage, delay, grown) in enumerate(MOMENTS):
        db = _copy_store(load.base_db, tmp_path / f"killed-{n}.db")
        kill = _ingest_killed(db, load.files, moment, stage, delay, grown)
        kill.outcome = _whole_or_absent(load, db)
        assert _audit_verify_passes(db)
        kills.append((db, kill))
    print("\n".join(f"{k.moment}: killed in {k.stage!r} alive={k.alive} write lock held={k.in_transaction} "
                    f"log {k.wal_at_writing}->{k.wal_at_kill} bytes: {k.outcome}" for _, k in kills))
    before_writing = [k for _, k in kills if k.alive and k.stage in ("validating", "linking")]
    assert before_writing and all(k.outcome == "none" for k in before_writing)
    mid_write = [k for _, k in kills if k.alive and k.stage == "writing" and k.outcome == "none"
                 and k.wal_at_kill > k.wal_at_writing]
    assert mid_write, "no kill landed inside the write transaction after it had written to the log"
    if PROC_LOCKS:
        assert any(k.in_transaction for k in mid_write)
    assert all(k.outcome == "all" for _, k in kills if k.stage == "committed")

    db = next(db for db, k in kills if k in mid_write)      # a store with torn, uncommitted pages in its log
    done = _briefing("ingest", "--db", str(db), *map(str, load.files), "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["new_records"] == len(load.record_ids)
    assert _whole_or_absent(load, db) == "all"
    assert _audit_verify_passes(db)


# --------------------------------------------------------------------------- a gunicorn worker killed mid-POST


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`briefing serve` (gunicorn, 2 workers) on a loopback port."""

    def __init__(self, db: str):
        self.port = _free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--db", db, "--port", str(self.port),
                                         "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        pytest.fail("the server never became ready")

    def wait_for_workers(self, gone: int | None = None) -> set[int]:
        """Wait until 2 workers run (and `gone` is not one of them); their pids."""
        deadline = time.monotonic() + 30
        while True:
            pids = {p.pid for p in self.workers()}
            if len(pids) == 2 and gone not in pids:
                return pids
            assert time.monotonic() < deadline, "gunicorn did not (re)start its 2 workers"
            time.sleep(0.02)

    def workers(self) -> list[psutil.Process]:
        """The live worker processes (children of the gunicorn master, its webhook deliverers left out)."""
        alive = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "deliver" not in child.cmdline():
                    alive.append(child)
            except psutil.NoSuchProcess:
                pass
        return alive

    def post(self, path: str, key: str, body: dict, timeout: float = 30) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("POST", path, json.dumps(body), {"Authorization": f"Bearer {key}",
                                                                "Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


GIVEN = ["Adelaide", "Barnaby", "Cordelia", "Desmond", "Evangeline", "Fitzgerald", "Georgiana", "Horatio"]
FAMILY = ["Quenneville", "Throckmorton", "Vandermeer", "Oyelaran", "Castellanos", "Wojciechowski", "Abernathy"]


def _record(client: int, n: int) -> dict:
    """A new record, unlike every other sent and every county record (its own dob and phone)."""
    serial = client * 10_000 + n
    return {"record_id": f"FAULT-{client}-{n}", "agency": "METRO_PD", "given_name": GIVEN[serial % len(GIVEN)],
            "family_name": FAMILY[(serial // len(GIVEN)) % len(FAMILY)],
            "dob": (date(1930, 1, 1) + timedelta(days=11 * serial + client)).isoformat(),
            "phone": f"(555) {serial // 10_000:03d}-{serial % 10_000:04d}", "sex": "F" if serial % 2 else "M"}


def _match(server: Server, key: str, record: dict) -> dict:
    subject = {k: record[k] for k in ("given_name", "family_name", "dob")}
    status, body = server.post("/v1/match", key, {"subject": subject, "purpose": "EMERGENCY"})
    assert status == 200, body
    return body["resolution"]


def test_a_worker_killed_mid_post_leaves_each_record_whole_or_absent_and_acknowledged_ones_resolve(tmp_path):
    db, store = loaded_county(tmp_path, 300, 41)
    feed = create_key(store, "feed-pd", Role.feed, "METRO_PD", [])
    officer = create_key(store, "pd-1", Role.officer, "METRO_PD", [Purpose.EMERGENCY])
    store.engine.dispose()
    server = Server(db)
    sent: dict[str, dict] = {}
    outcomes: dict[str, object] = {}       # record_id -> HTTP status, or the client-side error's name
    stop = threading.Event()

    def client(number: int) -> None:
        n = 0
        while not stop.is_set():
            record = _record(number, n)
            n += 1
            sent[record["record_id"]] = record
            try:
                outcomes[record["record_id"]] = server.post("/v1/records", feed, record)[0]
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                outcomes[record["record_id"]] = type(exc).__name__

    def acknowledged() -> int:
        return sum(1 for v in outcomes.copy().values() if v in (200, 201))

    killed, in_transaction = [], []
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    try:
        originals = server.wait_for_workers()
        for thread in threads:
            thread.start()
        for _ in range(6):
            floor, deadline = acknowledged() + 10, time.monotonic() + 60
            while acknowledged() < floor:                      # both workers busy writing again
                assert time.monotonic() < deadline, "the service stopped acknowledging writes"
                time.sleep(0.01)
            workers = {p.pid: p for p in server.workers()}
            holder, deadline = None, time.monotonic() + 3
            while holder is None and time.monotonic() < deadline and PROC_LOCKS:
                holder = next(iter(_write_lock_holders(db, set(workers))), None)
            victim = workers[holder] if holder else min(workers.values(), key=lambda p: p.create_time())
            victim.send_signal(signal.SIGKILL)
            killed.append(victim.pid)
            if holder:
                in_transaction.append(holder)
            server.wait_for_workers(gone=victim.pid)          # gunicorn forks a replacement
        floor = acknowledged() + 10
        while acknowledged() < floor:
            time.sleep(0.01)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        for survivor in [p for p in server.workers() if p.pid in originals]:
            survivor.send_signal(signal.SIGKILL)                # so every answer below comes from a replacement
            server.wait_for_workers(gone=survivor.pid)

        assert set(outcomes) == set(sent)
        errors = {i: v for i, v in outcomes.items() if isinstance(v, str)}
        acked = {i for i, v in outcomes.items() if v in (200, 201)}
        assert not {i: v for i, v in outcomes.items() if isinstance(v, int) and v != 201}, "every answer is 201"
        assert errors, f"no request was in flight at any of the {len(killed)} kills"
        if PROC_LOCKS:
            assert in_transaction, "no kill caught a worker inside its write transaction"

        _sqlite_is_sound(db)
        now = _snapshot(db)
        stored = {r for r in now.records if r.startswith("FAULT-")}
        shown = reference_secret(open_store(db))              # responders are told person references
        person = {r: person_reference(p, shown) for r, p in now.clusters.items() if r.startswith("FAULT-")}
        changed = [r for _, op, r in now.changes if op == "upsert" and r and r.startswith("FAULT-")]
        audited = [json.loads(payload)["record_id"] for _, action, payload in now.audit if action == "record_upsert"]
        assert len(changed) == len(set(changed)) and len(audited) == len(set(audited)), "each write once"
        for record_id in sent:                                # whole or absent
            parts = (record_id in stored, record_id in person, record_id in changed, record_id in audited)
            assert parts in ((True,) * 4, (False,) * 4), (record_id, outcomes[record_id], parts)
        assert acked <= stored
        assert stored <= set(sent)
        assert _audit_verify_passes(db)

        for record_id in sorted(acked):                       # replacements catch up from the change feed
            resolution = _match(server, officer, sent[record_id])
            assert resolution["status"] == "resolved" and resolution["candidates"][0]["person_id"] == person[record_id]
    finally:
        stop.set()
        server.stop()

    server = Server(db)                                       # a fresh start: rebuilt from the store alone
    try:
        for record_id in sorted(stored):
            resolution = _match(server, officer, sent[record_id])
            assert resolution["status"] == "resolved" and resolution["candidates"][0]["person_id"] == person[record_id]
    finally:
        server.stop()
    assert _audit_verify_passes(db)
    print(f"\n{len(sent)} sent, {len(acked)} acknowledged, {len(errors)} cut off ({sorted(set(errors.values()))}), "
          f"{len(stored - acked)} of those committed; {len(killed)} workers killed, {len(in_transaction)} "
          f"seen inside a write transaction")
