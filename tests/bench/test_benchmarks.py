"""The benchmarks behind BENCHMARKS.md, as assertions (`make bench`; skipped by `make test`).

Each prints its figure as JSON (run pytest with -s to see it) and fails if it misses its target.
"""

import json

import pytest

from evaluation import bench

pytestmark = pytest.mark.slow


def _report(result: dict) -> dict:
    result["machine"] = bench.machine()
    print(json.dumps(result, indent=2))
    return result


def test_febrl4_pairwise_f1_at_least_0_999(tmp_path):
    result = _report(bench.bench_febrl4(tmp_path))
    assert result["value"] >= 0.999


def test_county_100k_f1_precision_and_fnmr_parity(tmp_path):
    result = _report(bench.bench_county(tmp_path))
    assert result["precision"] >= 0.995
    assert result["f1"] >= 0.97
    assert result["fnmr_ratio_race_ethnicity"] <= 1.25


def test_one_million_records_link_in_six_minutes_under_8_gb(tmp_path):
    result = _report(bench.bench_link1m(tmp_path))
    assert result["briefing"]["seconds"] <= 360
    assert result["briefing"]["peak_rss_gb"] <= 8


def test_one_million_synthetic_records_in_five_minutes(tmp_path):
    result = _report(bench.bench_synth1m(tmp_path))
    assert result["records"] >= 950_000
    assert result["seconds"] <= 300
