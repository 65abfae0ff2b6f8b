"""`briefing resolve`: one subject, a file of subjects, a county's incidents; bad input named precisely."""

import json

import pytest

from api.cli.main import main
from evaluation.synth.county import generate_county


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    out = tmp_path_factory.mktemp("county")
    generate_county(800, 31, out, progress=False)
    clusters = out / "clusters.csv"
    clusters.write_text((out / "truth.csv").read_text().replace("record_id,person_key", "record_id,person_id", 1))
    return out


def _args(county, *rest):
    return ["resolve", "--model", "models/matcher.json", "--records", str(county / "records.csv"),
            "--clusters", str(county / "clusters.csv"), "--quiet", *rest]


def test_one_subject_prints_the_resolution_json(county, capsys):
    assert main(_args(county, "--query", '{"given_name": "Nobody", "family_name": "Atall", "dob": "1901-01-01"}')) == 0
    assert json.loads(capsys.readouterr().out) == {"status": "no_match", "candidates": []}


def test_file_of_subjects_gives_one_result_per_line_in_order_and_latency(county, tmp_path, capsys):
    import pandas as pd

    records = pd.read_csv(county / "records.csv", dtype=str, keep_default_na=False)
    full = records[(records.source_system == "RMS") & (records.dob != "")].head(3)
    lines = [json.dumps({"given_name": r.given_name, "family_name": r.family_name, "dob": r.dob}) for r in full.itertuples()]
    lines.insert(1, json.dumps({"given_name": "Nobody", "family_name": "Atall", "dob": "1901-01-01"}))
    queries = tmp_path / "q.jsonl"
    queries.write_text("\n".join(lines) + "\n")
    assert main(_args(county, "--queries", str(queries))) == 0
    captured = capsys.readouterr()
    results = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["status"] for r in results][1] == "no_match"
    truth = pd.read_csv(county / "truth.csv", dtype=str).set_index("record_id")["person_key"]
    for result, record in zip([results[0], results[2], results[3]], full.itertuples()):
        assert result["candidates"][0]["person_id"] == truth[record.record_id]
    assert "latency p50" in captured.err and "p99" in captured.err


def test_incidents_of_a_county_are_resolved_with_their_ids(county, capsys):
    assert main(_args(county, "--incidents", str(county / "incidents.csv"), "--limit", "4")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4 and all(line["incident_id"].startswith("INC-") for line in lines)


@pytest.mark.parametrize("line, message", [
    ('{"given_name": "A", "dob": "1980-02-30"}', "q.jsonl:2:21: dob:"),
    ('{"given_name": "A", "age": 40}', "q.jsonl:2:21: age: unknown field"),
    ('{"given_name": "A",', "q.jsonl:2:20: not JSON"),
    ('["A"]', "q.jsonl:2:1: a subject must be a JSON object"),
])
def test_bad_subject_line_is_named_by_file_line_and_column_and_nothing_is_printed(county, tmp_path, capsys, line, message):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"given_name": "A"}\n' + line + "\n")
    assert main(_args(county, "--queries", str(queries))) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_exactly_one_source_of_subjects_is_required(county, capsys):
    assert main(_args(county)) == 2
    assert "exactly one of" in capsys.readouterr().err
