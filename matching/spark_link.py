"""Batch linking with a model on Spark, where the driver's memory does not grow with the pairs or the persons.

`link_on_spark` is `matching.link.link_records` with a model, on Spark end to end: the canonical records
go to the executors once; standardisation (`matching.spark.standardise`), prediction (Splink's Spark
backend) and clustering (`matching.spark.cluster`) run there; the driver keeps figures (and, to reuse a
previous run's person ids, one row per record). `write_spark_outputs`
writes the same run directory as `matching.link.write_link_outputs` (the same files and columns, atomically),
its CSV files written by the same Arrow writer from the executors' sorted rows, a partition at a time.

Training on Spark (`Matcher(engine="spark")`) still goes through `link_records`; this path needs a model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from warnings import catch_warnings, simplefilter

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from matching.cluster import RecordPairs, check_constraints, record_pairs
from matching.engine import spark_linker
from matching.link import (BY_STRENGTH, CSV_OPTIONS, ClusteringFigures, Progress, clustering_summary,
                           missing_fields_note, publish_run, write_run_files)
from matching.model import MatcherModel
from matching.record_pieces import RecordsInPieces
from matching.spark.cluster import SparkClustering, cluster_on_spark
from matching.spark.session import remove_scratch, scratch_path, spark_session
from matching.spark.standardise import POSITION, records_frame, standardise_frame
from matching.standardise import STANDARD_COLUMNS


CLUSTERS_SCHEMA = pa.schema([("record_id", pa.string()), ("person_id", pa.string())])
PAIRS_SCHEMA = pa.schema([("record_id_l", pa.string()), ("record_id_r", pa.string()), ("match_weight", pa.float64()),
                          ("match_probability", pa.float64())])
HELD_APART_SCHEMA = pa.schema([("record_id_l", pa.string()), ("record_id_r", pa.string()),
                               ("match_probability", pa.float64()), ("reason", pa.string())])


@dataclass
class SparkLink:
    """One batch link on Spark: `pairs` (record_id_l, record_id_r, match_weight, match_probability) and the
    clustering's frames stay on the executors; `summary` is `summary.json`."""

    pairs: object
    clustering: SparkClustering
    model: MatcherModel
    summary: dict = field(default_factory=dict)


def available_fields_on_spark(standardised) -> set[str]:
    """`matching.standardise.available_fields`, counted by the executors: the columns with some value, and
    `birth_year_only` when some record has a birth year but no date."""
    from pyspark.sql import functions as F

    counts = standardised.agg(*[F.count(F.col(c)).alias(c) for c in STANDARD_COLUMNS],
                              F.count(F.when(F.col("dob").isNull(), F.col("birth_year"))).alias("birth_year_only")).first()
    return {name for name, count in counts.asDict().items() if count}


def link_on_spark(records: pd.DataFrame | RecordsInPieces, model: MatcherModel, threshold: float | None = None, floor: float = 0.01,
                  previous: pd.DataFrame | None = None, progress: Progress | None = None, warnings: list[str] | None = None,
                  must_link: RecordPairs | None = None, cannot_link: RecordPairs | None = None,
                  spark_master: str | None = None) -> SparkLink:
    """Deduplicate `records` (canonical columns; a file read in pieces is handed to Spark a piece at a time)
    with `model` on Spark (`spark_master`, default local[2]).

    The arguments mean what they mean to `matching.link.link_records`; the persons and pairs are the ones it
    gives for the same model (`tests/test_spark_parity.py`).
    """
    from pyspark.sql import functions as F

    step = progress or (lambda label: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes = list(warnings or [])
    must, cannot = record_pairs(must_link), record_pairs(cannot_link)
    link_at = model.thresholds.link if threshold is None else threshold
    if not 0.0 < link_at < 1.0:
        raise ValueError(f"threshold must be strictly between 0 and 1, got {link_at}")
    spark = spark_session(spark_master)
    step("handing the records to Spark")
    written = scratch_path("records")
    try:
        canonical = records_frame(spark, records.frames() if isinstance(records, RecordsInPieces) else [records], written)
        if must or cannot:  # contradictions fail before scoring, among the decided records present (as link_records)
            decided = sorted({r for pair in must + cannot for r in pair})
            present = canonical.filter(F.col("record_id").isin(decided)).select("record_id").toPandas()["record_id"]
            check_constraints(must, cannot, present)
        step("standardising (on the executors)")
        standardised = standardise_frame(canonical).localCheckpoint(eager=True)
    finally:
        remove_scratch(written)
    n_records = standardised.count()
    notes += missing_fields_note(model, available_fields_on_spark(standardised))
    model = model.for_population(n_records)
    timings["standardise"] = time.perf_counter() - started

    t0 = time.perf_counter()
    step("scoring candidate pairs")
    pairs = _predicted(standardised, model, min(floor, model.thresholds.review_low, link_at), spark_master)
    timings["predict"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    step("clustering (connected components, then each component on the executors)")
    clustering = cluster_on_spark(spark, standardised, pairs, link_at, must_link=must, cannot_link=cannot, previous=previous)
    agencies = standardised.agg(F.countDistinct("agency")).first()[0]
    summary = {"records": int(n_records), "agencies": int(agencies),
               "model_trained_here": False, "warnings": notes, "engine": "spark",
               **clustering_summary(_figures(clustering, pairs, model, link_at, n_records), model, link_at,
                                    clustering.events, clustering.constraints, clustering.identity_conflicts),
               "component_rounds": clustering.rounds}
    timings["cluster"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return SparkLink(pairs=pairs, clustering=clustering, model=model, summary=summary)


def _predicted(standardised, model: MatcherModel, floor: float, spark_master: str | None):
    """Splink's predictions at `floor` on the executors, in Briefing's column names."""
    from pyspark.sql import functions as F

    linker = spark_linker(standardised, model.splink, spark_master)
    with catch_warnings():
        simplefilter("ignore")
        table = linker.inference.predict(threshold_match_probability=floor)
    pairs = table.as_spark_dataframe().select(F.col("unique_id_l").alias("record_id_l"), F.col("unique_id_r").alias("record_id_r"),
                                              "match_weight", "match_probability").localCheckpoint(eager=True)
    table.drop_table_from_database_and_remove_from_cache()
    return pairs


def _figures(clustering: SparkClustering, pairs, model: MatcherModel, link_at: float, n_records: int) -> ClusteringFigures:
    from pyspark.sql import functions as F

    sizes = clustering.clusters.groupBy("person_id").count()
    persons = sizes.agg(F.count("*"), F.sum((F.col("count") == 1).cast("long")), F.max("count")).first()
    p = F.col("match_probability")
    scored = pairs.agg(F.count("*"), F.sum((p >= link_at).cast("long")), F.sum(F.when(p >= link_at, p)),
                       F.sum(((p >= model.thresholds.review_low) & (p < link_at)).cast("long")), F.min(p)).first()
    held = clustering.held_apart.groupBy("reason").count().collect()
    return ClusteringFigures(persons=int(persons[0]), singleton_persons=int(persons[1] or 0), largest_person=int(persons[2] or 0),
                             pairs=int(scored[0]), pairs_linked=int(scored[1] or 0), linked_probability_sum=float(scored[2] or 0.0),
                             pairs_in_review_band=int(scored[3] or 0),
                             lowest_probability=float(scored[4]) if scored[4] is not None else None, records=n_records,
                             held_apart={row["reason"]: int(row["count"]) for row in sorted(held, key=lambda r: r["reason"])})


#: Rows per Arrow batch when the driver writes a run file from the executors' sorted rows.
WRITE_BATCH = 100_000


def _write_sorted_csv(frame, order: list, schema: pa.Schema, path: Path) -> None:
    """The `schema` columns of `frame` as one CSV file at `path`, rows in `order`, written as
    `matching.link.write_link_outputs` writes them (same writer and options). The sorted partitions reach the
    driver one at a time (`toLocalIterator`), so its memory holds one partition and one batch, on any cluster."""
    rows = frame.orderBy(*order).select(*schema.names).toLocalIterator(prefetchPartitions=False)
    with pacsv.CSVWriter(str(path), schema, write_options=CSV_OPTIONS) as writer:
        while batch := list(islice(rows, WRITE_BATCH)):
            writer.write_table(pa.Table.from_pylist([row.asDict() for row in batch], schema=schema))


def write_spark_outputs(result: SparkLink, out_dir: str | Path) -> Path:
    """The run directory of `matching.link.write_link_outputs` (same files and columns, atomically), written from Spark."""
    from pyspark.sql import functions as F

    def fill(staging: Path) -> None:
        _write_sorted_csv(result.clustering.clusters, [POSITION], CLUSTERS_SCHEMA, staging / "clusters.csv")
        columns, ascending = BY_STRENGTH
        by_strength = [F.col(c).asc() if up else F.col(c).desc() for c, up in zip(columns, ascending)]
        _write_sorted_csv(result.pairs, by_strength, PAIRS_SCHEMA, staging / "pairs.csv")
        _write_sorted_csv(result.clustering.held_apart, by_strength, HELD_APART_SCHEMA, staging / "held_apart.csv")
        write_run_files(staging, result.model, result.summary, result.clustering.events)

    return publish_run(out_dir, fill)
