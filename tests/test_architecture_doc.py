"""docs/architecture.md stays true: its endpoint table lists exactly what /openapi.json describes,
with the roles each view really requires, and every repository file it or the README links exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from api.web.app import create_app

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "architecture.md"
ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) ([^`]+)` \| ([^|]+) \|$")


def documented() -> dict[tuple[str, str], set[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        if m := ROW.match(line.strip()):
            roles = {r.strip() for r in m.group(3).split(",")}
            rows[(m.group(1), m.group(2))] = set() if roles == {"anyone"} else roles
    return rows


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(str(tmp_path_factory.mktemp("arch") / "briefing.db"))


def served(app) -> dict[tuple[str, str], set[str]]:
    """Every JSON endpoint of the app (the steward's HTML pages and static files aside), with its roles."""
    out = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/review", "/static", "/openapi.json")):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        roles = getattr(app.view_functions[rule.endpoint], "roles", frozenset())
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            out[(method, path)] = {r.value for r in roles}
    return out


def test_endpoint_table_matches_openapi(app):
    spec = app.test_client().get("/openapi.json").get_json()
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert set(documented()) == described


def test_endpoint_table_names_the_roles_each_view_requires(app):
    assert documented() == served(app)


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md", "docs/integration.md", "docs/security.md"])
def test_docs_link_only_files_in_the_repository(doc):
    path = REPO / doc
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        assert not target.startswith(("http://", "https://", "/")), f"{doc} links outside the repository: {target}"
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(REPO) and resolved.exists(), f"{doc} links a missing file: {target}"


DOCS = ["README.md", "BENCHMARKS.md", "docs/architecture.md", "docs/integration.md", "docs/security.md",
        "evaluation/DATA.md", "evaluation/SYNTH.md", "models/MATCHER.md", "models/RANKER.md"]
TOP = {p.name for p in REPO.iterdir()}


@pytest.mark.parametrize("doc", DOCS + ["Makefile"])
def test_every_python_module_a_command_runs_exists(doc):
    text = (REPO / doc).read_text()
    for module in set(re.findall(r"python -m ([A-Za-z_][\w.]*)", text)):
        assert importlib.util.find_spec(module) is not None, f"{doc}: `python -m {module}` names no module"


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_a_doc_names_exists(doc):
    """A `path/like/this.py` in backticks whose first part is a folder of the repository must exist."""
    path = REPO / doc
    for named in set(re.findall(r"`([\w.-]+/[\w./-]*)`", path.read_text())):
        parts = Path(named).parts
        if parts[0] in ("..", "."):
            target = (path.parent / named).resolve()
        elif parts[0] in TOP and parts[0] not in ("out",):
            target = REPO / named
        else:
            continue
        assert target.exists(), f"{doc} names {named}, which does not exist"
