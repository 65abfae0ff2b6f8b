"""The house's rules, checked on every run: layers and independence (import-linter, contracts in
`.importlinter`), no import hidden inside a function to dodge a cycle, and rooms of a size a
newcomer can read (modules ≤ 500 lines; functions ≤ 80 lines outside the synthetic-data generator), private
names kept private."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("matching", "scoring", "api", "evaluation", "models")


def _sources():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--config", str(REPO / ".importlinter")], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_project_import_hides_inside_a_function():
    """Third-party heavies (pyspark, matplotlib, …) may load lazily; the project's own modules never do,
    since a module imported inside a function is how an import cycle hides from the linter's reader."""
    hidden = []
    for path, tree in _sources():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in PACKAGES:
                        hidden.append(f"{path.relative_to(REPO)}:{node.lineno} {fn.name} imports {name}")
    assert not hidden, "\n".join(hidden)


def test_no_module_over_500_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for p, _ in _sources()
            if (n := len(p.read_text().splitlines())) > 500]
    assert not long, long


def test_no_function_over_80_lines_outside_the_synthetic_generator():
    long = []
    for path, tree in _sources():
        if "synth" in path.relative_to(REPO).parts:
            continue
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = fn.end_lineno - fn.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(REPO)}:{fn.lineno} {fn.name} {n}")
    assert not long, long


def test_no_private_name_is_imported_from_another_module():
    """A name with a leading underscore is its module's own; another module that needs it gets a public name."""
    crossing = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in PACKAGES:
                crossing += [f"{path.relative_to(REPO)}:{node.lineno} {node.module}.{a.name}"
                             for a in node.names if a.name.startswith("_")]
    assert not crossing, crossing


def test_splink_internals_are_reached_only_from_one_module():
    """A Splink upgrade touches matching/splink_internals.py alone: nothing else imports `splink.internals` or
    reads a linker's private attributes."""
    private = re.compile(r"splink\.internals|\._settings_obj|\._db_api|\._input_tables_dict|\._input_columns_used")
    reached = [f"{path.relative_to(REPO)}:{n}" for path, _ in _sources() if path.name != "splink_internals.py"
               for n, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert not reached, reached
