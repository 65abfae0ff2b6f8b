"""The `briefing` entry point (api/cli/main.py): the default models are found from any working directory,
and output cut short by its reader ends quietly instead of in a BrokenPipe traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import models
from api.cli.common import subparsers_of
from api.cli.main import COMMANDS, build_parser, main
from api.web.app import create_app

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ("record_id,agency,given_name,family_name,dob,phone\n"
           "r1,PD,Ann,Lee,1980-01-02,5550100\n"
           "r2,EMS,Anne,Lee,1980-01-02,5550100\n"
           "r3,PD,Bo,Park,1971-06-30,\n")


def _env() -> dict:
    """Nothing of the repository on the path: Briefing as installed (`make` installs it), `models` among its packages."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_defaults_name_the_committed_models_not_the_working_directory():
    parser = build_parser()
    assert parser.parse_args(["ingest", "--db", "x.db", "r.csv"]).model == models.MATCHER
    assert parser.parse_args(["serve", "--db", "x.db"]).models == models.DIRECTORY
    fairness = parser.parse_args(["eval", "fairness", "DIR", "--out", "OUT"])
    assert (fairness.matcher_model, fairness.ranker_model) == (models.MATCHER, models.RANKER)
    assert models.MATCHER.is_file() and models.RANKER.is_file()


def test_ingest_runs_from_a_directory_outside_the_repository(tmp_path):
    (tmp_path / "records.csv").write_text(RECORDS, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "api.cli", "ingest", "--db", "briefing.db", "records.csv", "--quiet"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("briefing.db")) == ["records.csv"]


def test_link_runs_from_a_directory_outside_the_repository_with_the_committed_model(tmp_path):
    (tmp_path / "records.csv").write_text(RECORDS, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "api.cli", "link", "records.csv", "--model", str(models.MATCHER),
                           "--out", "linked", "--quiet"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == 3 and (tmp_path / "linked" / "clusters.csv").is_file()


def test_the_served_app_loads_the_default_models_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = create_app(str(tmp_path / "briefing.db"))
    service = app.extensions["briefing"]
    try:
        assert service.versions["matcher"] and service.ranker is not None
    finally:
        service.store.engine.dispose()


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    read, write = os.pipe()
    os.close(read)                                      # the reader has gone (`briefing … | head` after head exits)
    try:
        done = subprocess.run([sys.executable, "-m", "api.cli", "keys", "list", "--db", str(tmp_path / "k.db")],
                              cwd=ROOT, env=_env(), stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_help_into_a_closed_pipe_ends_quietly():
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "api.cli", "eval", "fairness", "--help"], cwd=ROOT, env=_env(),
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode in (0, 1) and done.stderr == ""       # argparse itself ignores a failed write of help


def test_each_command_is_found_in_the_modules_the_dispatcher_loads_for_it():
    for command in COMMANDS:
        sub = subparsers_of(build_parser([command]))
        assert command in sub.choices, command
    everything = subparsers_of(build_parser())
    assert set(everything.choices) == set(COMMANDS)


@pytest.mark.parametrize("argv", [[], ["nonsense"], ["--bogus"], ["eval"]])
def test_a_command_line_without_a_known_command_is_refused_as_argparse_refuses_it(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2 and "usage: briefing" in capsys.readouterr().err


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0 and all(command in out for command in COMMANDS)
