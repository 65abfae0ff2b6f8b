"""The optional `evaluation` extra: without it, `briefing synth` and every `briefing eval …` exit 2 with one line
naming the extra and what is missing, before they run; every other command works as before."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import api.cli.common
from api.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
EVALUATION = ("faker", "surgeo", "matplotlib", "fairlearn", "tqdm")


@pytest.fixture()
def without_extra(monkeypatch):
    """The check reports every module of the extra missing (as if `pip install briefing` only)."""
    monkeypatch.setattr(api.cli.common, "missing_modules",
                        lambda names: [n for n in names if n in EVALUATION])


@pytest.mark.parametrize("argv, command", [
    (["synth", "--persons", "5", "--out", "OUT"], "synth"),
    (["eval", "linkage", "--clusters", "c.csv", "--truth", "t.csv"], "eval linkage"),
    (["eval", "ranking", "DIR"], "eval ranking"),
    (["eval", "fairness", "DIR", "--out", "OUT"], "eval fairness"),
])
def test_evaluation_commands_exit_2_naming_the_extra(without_extra, tmp_path, capsys, monkeypatch, argv, command):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"briefing: {command} needs the evaluation extra: pip install 'briefing[evaluation]' "
                   "(missing: faker, surgeo, matplotlib, fairlearn, tqdm)\n")
    assert list(tmp_path.iterdir()) == []                  # refused before it ran: nothing written


def test_other_commands_are_not_affected(without_extra, tmp_path, capsys):
    db = str(tmp_path / "k.db")
    assert main(["keys", "create", "--db", db, "--name", "feed-1", "--role", "feed", "--agency", "METRO_PD"]) == 0
    assert main(["keys", "list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "feed-1" in out and "evaluation" not in out


def test_the_cli_imports_and_runs_with_the_extra_uninstalled(tmp_path):
    """A process in which the extra's modules cannot be imported at all: `keys list` and `ingest` work, `synth` is
    refused."""
    script = tmp_path / "run.py"
    script.write_text(
        "import importlib.util, sys, importlib.abc\n"
        "real = importlib.util.find_spec\n"
        f"BLOCKED = {EVALUATION!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "importlib.util.find_spec = lambda name, package=None: None if name in BLOCKED else real(name, package)\n"
        "from api.cli.main import main\n"
        "assert not any(m.split('.')[0] in BLOCKED for m in sys.modules), sorted(sys.modules)\n"
        "sys.exit(main(sys.argv[1:]))\n")
    db = str(tmp_path / "k.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}           # the repository's packages, `models` among them
    listed = subprocess.run([sys.executable, str(script), "keys", "list", "--db", db], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.startswith("name"), listed.stderr
    records = tmp_path / "records.csv"          # ingest standardises and links: the matcher's own data must be core
    records.write_text("record_id,agency,given_name,family_name,dob\nr1,PD,Ann,Lee,1980-01-02\nr2,EMS,Anne,Lee,1980-01-02\n")
    ingested = subprocess.run([sys.executable, str(script), "ingest", "--db", str(tmp_path / "i.db"), str(records),
                               "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ingested.returncode == 0, ingested.stderr
    refused = subprocess.run([sys.executable, str(script), "synth", "--persons", "5", "--out", str(tmp_path / "c")],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("briefing: synth needs the evaluation extra")
