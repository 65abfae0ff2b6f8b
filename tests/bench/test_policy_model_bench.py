"""The access-policy model checker at full size (`make bench`): >= 100,000 generated briefings, 0 violations.

The checker and its oracle are tests/adversarial/test_policy_model.py (`make test` runs a fast
sample of it). Here every case is checked and every violation collected rather than stopping at
the first, and the figures go to `out/bench/policy_model.json` (and stdout) for BENCHMARKS.md:
cases, item decisions, violations (with up to 20 examples), each decision reason's count, seconds.
"""

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from evaluation.bench.child import machine
from tests.adversarial.test_policy_model import cases, check

pytestmark = pytest.mark.slow

CASES = 100_000
OUT = Path(__file__).resolve().parents[2] / "out" / "bench" / "policy_model.json"


def test_policy_model_checker_finds_no_violation_in_100k_generated_briefings():
    reasons: Counter = Counter()
    violations: list[dict] = []
    count = {"cases": 0, "violations": 0}
    started = time.perf_counter()

    @settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate])
    @given(cases())
    def run(case):
        count["cases"] += 1
        found = check(case, reasons)
        count["violations"] += len(found)
        if found and len(violations) < 20:
            violations.append({"violations": found, "case": repr(case)})

    run()
    result = {"benchmark": "policy model checker", "cases": count["cases"], "item_decisions": sum(reasons.values()),
              "violations": count["violations"], "examples": violations, "reasons": dict(reasons.most_common()),
              "seconds": round(time.perf_counter() - started, 1), "machine": machine()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    assert result["cases"] >= CASES
    assert result["violations"] == 0, violations[:3]
