"""The DuckDB backend: Splink's SQL in process (the default engine), and DuckDB as the reference dialect.

A Briefing model always holds DuckDB SQL (`CANONICAL_DIALECT`), whichever engine trained it: the
real-time resolver compiles those conditions (`matching.level_sql`) and the Spark backend translates
them (`matching.spark.sql`) so that they keep DuckDB's semantics, down to the last bit of DuckDB's
Jaro-Winkler (`duckdb_fuses_winkler`).
"""

from __future__ import annotations

import functools

import duckdb
from splink import DuckDBAPI

CANONICAL_DIALECT = "duckdb"


def duckdb_api(threads: int | None = None) -> DuckDBAPI:
    """Splink's DuckDB backend on a fresh in-memory connection (`threads`: DuckDB's, default all cores)."""
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")
    return DuckDBAPI(con)


@functools.lru_cache(maxsize=1)
def duckdb_fuses_winkler() -> bool:
    """Whether this DuckDB computes the Winkler boost s + w * (1 - s) with one rounding (a fused multiply-add).

    Builds for CPUs with FMA do (x86-64 here: 0.92 for the pair below, 0.9199999999999999 unfused);
    the Spark expression follows whichever this machine's DuckDB does.
    """
    value = duckdb.connect().execute("SELECT jaro_winkler_similarity('1484 JOHNSON DR', '1863 JOHNSON DR')").fetchone()[0]
    return value == 0.92
