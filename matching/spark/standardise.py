"""Standardisation on the executors: `matching.standardise.standardise` applied to each Arrow batch of a Spark DataFrame.

The driver hands Spark the canonical records once, a piece at a time (`records_frame`: Arrow, written
where the executors read it) and never holds the standardised table: each executor task runs the same pandas function
the DuckDB path and the real-time resolver run, on its own batches (`mapInArrow`), so the
standardised values are identical whatever the engine. Every record keeps its input `position`, which
clustering orders ties by (as `matching.cluster` orders them by input order).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import pandas as pd
import pyarrow as pa

from matching.spark.session import scratch_path
from matching.standardise import LIST_COLUMNS, NUMERIC_COLUMNS, STANDARD_COLUMNS, standardise, to_arrow

#: The column every standardised record carries besides the matcher's: its row in the input, from 0.
POSITION = "position"


def standardised_schema() -> str:
    """The Spark DDL schema of `standardise`'s output plus `position` (lists as array<string>, birth_year bigint)."""
    def kind(name: str) -> str:
        if name in LIST_COLUMNS:
            return "array<string>"
        return "bigint" if name in NUMERIC_COLUMNS else "string"

    names = ["unique_id", "agency", "source_system", *STANDARD_COLUMNS]
    return ", ".join(f"`{name}` {kind(name)}" for name in names) + f", `{POSITION}` bigint"


def _standardise_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """One executor task: standardise each batch of canonical records, keeping every record's position."""
    for batch in batches:
        records = batch.to_pandas()
        out = to_arrow(standardise(records.drop(columns=[POSITION])))
        out = out.append_column(POSITION, pa.array(records[POSITION].to_numpy(), type=pa.int64()))
        yield from out.to_batches()


def records_frame(spark, pieces: Iterable[pd.DataFrame], path: str | None = None):
    """The canonical records of `pieces` (frames as `matching.record.read_records` gives them, in file
    order) as one Spark DataFrame with a `position` column. Each piece is handed to Spark and written
    to storage every executor reads (`path`, by default a new `session.scratch_path`) before the next is
    read, so the driver holds one piece at a time; the executors read the records back from there."""
    path = path or scratch_path("records")
    position = 0
    for frame in pieces:
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        for i, column in enumerate(table.schema):
            if pa.types.is_null(column.type):  # an all-empty column: Spark has no NULL-typed column
                table = table.set_column(i, column.name, pa.nulls(len(table), pa.string()))
        table = table.append_column(POSITION, pa.array(range(position, position + len(frame)), type=pa.int64()))
        spark.createDataFrame(table).write.mode("append").parquet(path)
        position += len(frame)
    partitions = max(spark.sparkContext.defaultParallelism, 1)
    return spark.read.parquet(path).repartition(partitions)


def standardise_frame(records):
    """The standardised records of `records` (a Spark DataFrame from `records_frame`), computed on the executors."""
    return records.mapInArrow(_standardise_batches, standardised_schema())
