"""`briefing serve`: a real gunicorn (two forked workers) on loopback, over SQLite and over PostgreSQL.

The module's server fixture runs once per store; the PostgreSQL run gets a fresh database on the
session's server (tests/postgres.py: `BRIEFING_TEST_POSTGRES` or a throwaway cluster). A write
through one worker must be seen by the next request to every worker, and the audit chain must hold
when several clients call at once (on PostgreSQL that is the advisory lock's work).
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from api.service.audit import verify
from api.service.ingest import BULK_MIN
from api.service.keys import create_key
from api.service.store import Store, audit_events, changes, clusters, consents, context_items, records
from evaluation.synth.county import generate_county
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county, shown_person, shown_record


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    base: str
    db: str                  # what `--db` takes: a SQLite path or a PostgreSQL URL
    store: Store
    keys: dict
    incidents: pd.DataFrame
    county: Path
    kind: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    county = tmp_path_factory.mktemp(f"county-{request.param}")
    location = str(county / "briefing.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db, store = loaded_county(county, 400, 23, location)
    keys = {"ems": create_key(store, "ems-1", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY]),
            "feed": create_key(store, "feed-pd", Role.feed, "METRO_PD", [])}
    port = _free_port()
    log = county / "gunicorn.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--db", db, "--port", str(port),
                                    "--workers", "2"], stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    else:
        process.kill()
        process.wait(timeout=10)
        pytest.fail(f"the server never became ready on {request.param}:\n{log.read_text(errors='replace')[-3000:]}")
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    yield Served(base, db, store, keys, incidents, county, request.param)
    process.terminate()
    process.wait(timeout=10)
    store.engine.dispose()


def _call(base: str, path: str, key: str | None = None, body: dict | None = None, method: str = "POST") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method if data is not None else "GET", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _briefing(served: Served, subject: dict, k: int = 0) -> dict:
    row = served.incidents.iloc[k % len(served.incidents)]
    return {"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"]},
            "subject": subject, "purpose": "EMERGENCY"}


def _subjects(served: Served, n: int) -> list[dict]:
    return [{k: v for k, v in q.items() if k != "received_at"} for q in incident_queries(served.incidents.head(n))]


def _counts(store: Store) -> dict:
    with store.engine.connect() as connection:
        return {t.name: connection.execute(select(func.count()).select_from(t)).scalar()
                for t in (records, clusters, context_items, consents, changes, audit_events)}


def test_gunicorn_serves_a_briefing_on_loopback(server):
    row = server.incidents.iloc[0]
    status, answer = _call(server.base, "/v1/briefings", server.keys["ems"], _briefing(server, _subjects(server, 1)[0]))
    assert status == 200, answer
    assert answer["incident_id"] == row["incident_id"] and "resolution" in answer and "versions" in answer


def test_gunicorn_refuses_a_request_without_a_key_with_json(server):
    status, answer = _call(server.base, "/v1/briefings", None, {})
    assert status == 401 and answer["error"] == "unauthorized"


def test_a_record_written_through_one_worker_is_resolved_through_every_worker(server):
    record = {"record_id": f"RMS-SERVE-{server.kind}", "agency": "METRO_PD", "given_name": "Wilhelmina",
              "family_name": "Throckbottom", "dob": "1961-04-05", "phone": "(614) 555-0142"}
    status, created = _call(server.base, "/v1/records", server.keys["feed"], record)
    assert status == 201, created
    with server.store.engine.connect() as connection:            # a feed is not told the person: read it
        person = connection.execute(select(clusters.c.person_id).where(clusters.c.record_id == record["record_id"])).scalar()
    subject = {"given_name": "Wilhelmina", "family_name": "Throckbottom", "dob": "1961-04-05"}
    match = {"subject": subject, "purpose": "EMERGENCY"}
    # Several clients at once, so both workers serve (a sync worker takes one request at a time).
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda k: _call(server.base, "/v1/match", server.keys["ems"], match), range(12)))
        answers += list(pool.map(lambda k: _call(server.base, "/v1/briefings", server.keys["ems"],
                                                  _briefing(server, subject, k)), range(8)))
    for status, answer in answers:
        assert status == 200, answer
        assert answer["resolution"]["candidates"][0]["person_id"] == shown_person(server.store, person)
        assert answer["resolution"]["candidates"][0]["record_id"] == shown_record(server.store, record["record_id"])
    # Every worker that answered has applied the change: their indexes hold the same number of records.
    with ThreadPoolExecutor(4) as pool:
        sizes = {answer["records"] for _, answer in pool.map(lambda k: _call(server.base, "/readyz"), range(12))}
    assert len(sizes) == 1, sizes
    assert person is not None                 # the record was stored with its person (read above)


def test_the_audit_chain_holds_after_concurrent_requests_from_several_clients(server):
    before = verify(server.store)
    assert before.ok, before
    subjects = _subjects(server, 10)

    def client(c: int) -> list[int]:
        codes = []
        for k in range(6):
            subject = subjects[(c + k) % len(subjects)]
            if k == 2:
                codes.append(_call(server.base, "/v1/records", server.keys["feed"],
                                   {"record_id": f"RMS-CONC-{c}", "agency": "METRO_PD", "given_name": f"Conc{c}",
                                    "family_name": "Urrent", "dob": f"19{50 + c}-02-03"})[0])
            elif k % 2:
                codes.append(_call(server.base, "/v1/match", server.keys["ems"], {"subject": subject, "purpose": "EMERGENCY"})[0])
            else:
                codes.append(_call(server.base, "/v1/briefings", server.keys["ems"], _briefing(server, subject, c + k))[0])
        return codes

    with ThreadPoolExecutor(6) as pool:
        codes = [code for codes in pool.map(client, range(6)) for code in codes]
    assert sorted(set(codes)) == [200, 201], codes
    after = verify(server.store)
    assert after.ok, after
    assert after.events == before.events + len(codes)
    with server.store.engine.connect() as connection:
        seqs = connection.execute(select(audit_events.c.seq).order_by(audit_events.c.seq)).scalars().all()
    assert len(seqs) == len(set(seqs)) == after.events


def _briefing_cli(*args: str) -> subprocess.CompletedProcess:
    """`briefing ARGS` in a new process, as the console script runs it (`api.cli.main:main`)."""
    entry = "import sys; from api.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", entry, *args], capture_output=True, text=True, timeout=300)


def test_audit_verify_cli_exits_0_on_the_served_store(server):
    done = _briefing_cli("audit", "verify", "--db", server.db)
    assert done.returncode == 0, done.stderr
    assert "audit chain holds" in done.stdout


def test_ingest_cli_rejects_a_bad_file_whole_then_a_good_load_is_served(server, tmp_path):
    frame = pd.read_csv(server.county / "records.csv", dtype=str, keep_default_na=False)
    fresh = frame[(frame.given_name != "") & (frame.family_name != "") & (frame.dob != "")].head(3).copy()
    fresh["record_id"] = [f"NEW-{server.kind}-{k}" for k in range(3)]
    fresh["family_name"] = ["Zyxwvutsrq", "Qwertyuiop", "Asdfghjklz"]
    fresh_path = tmp_path / "records.csv"
    fresh.to_csv(fresh_path, index=False)
    items = pd.read_csv(server.county / "context_items.csv", dtype=str, keep_default_na=False).head(3).copy()
    items["item_id"] = [f"CI-NEW-{k}" for k in range(3)]
    items["record_id"] = list(fresh["record_id"])
    items.loc[items.index[1], "category"] = "danger"           # not a category: the whole load is refused
    bad_path = tmp_path / "items.csv"
    items.to_csv(bad_path, index=False)
    before = _counts(server.store)
    done = _briefing_cli("ingest", "--db", server.db, "--quiet", str(fresh_path), str(bad_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nothing was written" in done.stderr and f"{bad_path}:3:" in done.stderr
    assert _counts(server.store) == before

    done = _briefing_cli("ingest", "--db", server.db, "--quiet", str(fresh_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["new_records"] == 3 and json.loads(done.stdout)["linking"] == "resolver"
    row = fresh.iloc[0]
    subject = {"given_name": row["given_name"], "family_name": row["family_name"], "dob": row["dob"]}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda k: _call(server.base, "/v1/match", server.keys["ems"],
                                                {"subject": subject, "purpose": "EMERGENCY"}), range(8)))
    for status, answer in answers:
        assert status == 200 and answer["resolution"]["candidates"][0]["record_id"] == shown_record(server.store, row["record_id"]), answer


def _generations(base: str, n: int) -> list[int]:
    return [_call(base, "/readyz", method="GET")[1]["index"]["generation"] for _ in range(n)]


def test_a_bulk_load_is_built_by_the_master_and_every_worker_moves_to_it(server, tmp_path):
    """Placed last: it adds a second county to the module's store."""
    from_generation = max(_generations(server.base, 6))
    generate_county(500, 97, tmp_path, progress=False)
    bulk = pd.read_csv(tmp_path / "records.csv", dtype=str, keep_default_na=False)
    bulk["record_id"] = "BULK-" + bulk["record_id"]
    assert len(bulk) >= BULK_MIN
    bulk.to_csv(tmp_path / "bulk.csv", index=False)
    done = _briefing_cli("ingest", "--db", server.db, "--quiet", str(tmp_path / "bulk.csv"))
    assert done.returncode == 0 and json.loads(done.stdout)["linking"] == "batch", done.stderr
    deadline = time.monotonic() + 120
    while min(_generations(server.base, 6)) <= from_generation:       # every worker answering is re-forked
        assert time.monotonic() < deadline, (server.county / "gunicorn.log").read_text()[-3000:]
        time.sleep(0.3)
    row = bulk[(bulk.given_name != "") & (bulk.family_name != "") & (bulk.dob != "")].iloc[0]
    subject = {"given_name": row["given_name"], "family_name": row["family_name"], "dob": row["dob"]}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda k: _call(server.base, "/v1/match", server.keys["ems"],
                                                {"subject": subject, "purpose": "EMERGENCY"}), range(8)))
    wanted = shown_record(server.store, row["record_id"])
    for status, answer in answers:
        assert status == 200 and wanted in [c["record_id"] for c in answer["resolution"]["candidates"]], answer
    assert "swapped in" in (server.county / "gunicorn.log").read_text()
