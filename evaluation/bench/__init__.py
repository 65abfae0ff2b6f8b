"""Benchmarks behind BENCHMARKS.md: `python -m evaluation.bench NAME` (see `__main__`) prints one figure as JSON.

`child` runs the heavy steps as child processes measured alone and generates their counties; `link` (FEBRL4, the
100k county, 1M records, 1M generated), `resolve`, `rank`, `service` (with `loadgen`; `plot_load` draws a run),
`spark` (with `spark_projection`) and `external` each hold the benchmarks of one part of the system.
"""
