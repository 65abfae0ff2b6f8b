"""The 50M projection fits each step linearly in records and scales only the executor steps."""

import pytest

from evaluation.bench.spark_projection import project


def _run(records: int, standardise: float, train: float, predict: float, cluster: float, wall: float, gb: float) -> dict:
    return {"records": records, "spark": {"seconds": wall, "peak_rss_gb_python": gb,
                                          "steps": {"standardise": standardise, "train": train,
                                                    "predict": predict, "cluster": cluster}}}


def test_executor_steps_scale_with_cores_and_driver_steps_do_not():
    # train = 100 s + 200 s per million records, predict = 10 + 300/M, standardise = 9/M, cluster = 30/M
    runs = [_run(1_000_000, 9, 300, 310, 30, 700, 4.0), _run(3_000_000, 27, 700, 910, 90, 1800, 10.0)]
    result = project(runs, records=10_000_000, executor_cores=20)
    seconds = result["projected_seconds"]
    assert seconds["train"] == round((100 + 2000) / 10)
    assert seconds["predict"] == round((10 + 3000) / 10)
    assert seconds["standardise"] == 90 and seconds["cluster"] == 300
    assert seconds["other"] == 40 + 11 * 10             # wall minus steps: 51 s at 1M, 73 s at 3M
    assert result["projected_driver_python_gb"] == pytest.approx(1.0 + 3.0 * 10)


def test_one_size_scales_every_second_with_the_records():
    result = project([_run(1_000_000, 9, 300, 310, 30, 700, 4.0)], records=50_000_000, executor_cores=64)
    seconds = result["projected_seconds"]
    assert seconds["train"] == round(300 * 50 / 32) and seconds["standardise"] == 9 * 50
    assert seconds["other"] == 51 * 50
    assert result["projected_driver_python_gb"] == pytest.approx(200.0)


def test_linking_with_a_model_scales_standardisation_and_clustering_with_the_executors_too():
    run = _run(1_000_000, 9, 0, 310, 30, 400, 1.5)
    run["spark_with_duckdb_model"] = run.pop("spark")
    result = project([run], records=50_000_000, executor_cores=64, kind="spark_with_duckdb_model")
    seconds = result["projected_seconds"]
    assert seconds["standardise"] == round(9 * 50 / 32) and seconds["cluster"] == round(30 * 50 / 32)
    assert seconds["predict"] == round(310 * 50 / 32) and seconds["other"] == 51 * 50
    with pytest.raises(ValueError, match="'spark'"):
        project([run], records=50_000_000, executor_cores=64)


def test_no_run_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        project([], records=50_000_000, executor_cores=64)
