"""`make demo`'s last step (api/cli/demo.py): keys for every role, the receiving programs, a working briefing."""

import re

from sqlalchemy import select

from api.cli import demo
from api.service.store import api_keys, programs
from tests.loaded_county import loaded_county


def test_the_demo_prints_a_key_per_role_registers_its_programs_and_names_the_pages(tmp_path, capsys):
    db, store = loaded_county(tmp_path, 150, 11)
    assert demo.main(["--db", db, "--county", str(tmp_path), "--port", "8123"]) == 0
    out = capsys.readouterr().out
    printed = re.findall(r"^  (\w+)\s+(\S+)\s+\S+\s+(brf_\S+)$", out, re.M)
    assert [(role, agency) for role, agency, _ in printed] == [(r.value, a) for _, r, a, _ in demo.DEMO_KEYS]
    with store.engine.connect() as connection:
        assert sorted(connection.execute(select(programs.c.name)).scalars()) == sorted(p.name for p in demo.DEMO_PROGRAMS)
        assert connection.execute(select(api_keys.c.name).where(api_keys.c.name.like("demo-%"))).scalars().all()
    assert "http://127.0.0.1:8123/review/inbox" in out and "curl -s -X POST http://127.0.0.1:8123/v1/briefings" in out
