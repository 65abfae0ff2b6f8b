"""`briefing serve`: a real gunicorn on loopback answers readiness and a briefing."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from api.keys import create_key
from evaluation.synth.incidents import incident_queries
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import pandas as pd

    county = tmp_path_factory.mktemp("county")
    db, store = loaded_county(county, 400, 23)
    key = create_key(store, "ems-1", Role.ems, "COUNTY_EMS", [Purpose.EMERGENCY])
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--db", db, "--port", str(port), "--workers", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("the server never became ready")
    incidents = pd.read_csv(county / "incidents.csv", dtype=str, keep_default_na=False)
    yield base, key, incidents
    process.terminate()
    process.wait(timeout=10)


def test_gunicorn_serves_a_briefing_on_loopback(server):
    base, key, incidents = server
    row = incidents.iloc[0]
    subject = {k: v for k, v in incident_queries(incidents.head(1))[0].items() if k != "received_at"}
    body = {"incident": {"id": row["incident_id"], "call_type": row["call_type"], "received_at": row["received_at"]},
            "subject": subject, "purpose": "EMERGENCY"}
    request = urllib.request.Request(base + "/v1/briefings", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["incident_id"] == row["incident_id"] and "resolution" in answer and "versions" in answer


def test_gunicorn_refuses_a_request_without_a_key_with_json(server):
    base, _, _ = server
    request = urllib.request.Request(base + "/v1/briefings", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401 and json.loads(caught.value.read())["error"] == "unauthorized"
