"""Clustering on the executors: connected components on Spark, then `matching.cluster.cluster` inside each component.

Greedy agglomeration never merges across a connected component of the edges at or above the threshold
(steward must-links included), so the components are found on Spark (`matching.spark.components`) and
each one of several records is clustered by the same function the DuckDB path runs
(`matching.cluster.cluster`, with the same attested identities, density rule and steward decisions), as
a pandas function over buckets of whole components (`cogroup(...).applyInPandas`). Records and edges keep the input's
order inside a component (by `position`), so ties break as they do on one machine and the persons are
the same. A record on no edge is a person of its own, named on the executors too.

Person ids are derived from a person's smallest record id (`matching.cluster.fresh_person_id`). On one
machine a clash of two such ids (a 10-digit hash shared by two persons: likely once among a million)
gives the later person, in record-id order, a longer id; here the clashes are found with one
aggregate and renamed on the driver the same way. With a previous clustering (`previous`), ids are
taken from it by overlap on the driver (`matching.cluster.assign_person_ids`), which then holds one
row per record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd

from matching.attested import Identities
from matching.cluster import DEFAULT_MIN_DENSITY, EVENT_COLUMNS, assign_person_ids, cluster, fresh_person_id, resolve_constraints
from matching.spark.components import connected_components
from matching.spark.session import remove_scratch
from matching.spark.standardise import POSITION

#: The standardised columns a component's clustering reads (`matching.attested.Identities.of`).
IDENTITY_COLUMNS = ["dob", "given_name", "given_variants", "given_phonetic", "family_name", "birth_year", "name_suffix"]
#: Records of several components per pandas call (clustering several components at once is clustering each:
#: no edge joins two): one call per component would pay pandas' fixed cost some hundred thousand times.
BUCKET_RECORDS = 200_000
#: One row per record (kind "record"), held-apart edge ("held"), identity conflict ("conflict") or
#: count of edges a cannot-link refused ("refused"), from each component.
#: A record's `root` is the input position of its cluster's root (as `matching.cluster.Clustering.labels`).
REPORT_SCHEMA = ("kind string, record_id string, other string, person_id string, seed string, root bigint, "
                 "match_probability double, reason string, count bigint")
REPORT_COLUMNS = [column.split()[0] for column in REPORT_SCHEMA.split(", ")]


@dataclass
class SparkClustering:
    """`clusters`: a Spark DataFrame of record_id, person_id, position for every record; `held_apart`: a Spark
    DataFrame with the columns of `matching.cluster.Clustering.held_apart`. `events`, `constraints`, `identity_conflicts` and
    `rounds` (of connected components) are small and held by the driver."""

    clusters: object
    held_apart: object
    events: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EVENT_COLUMNS))
    constraints: dict = field(default_factory=dict)
    identity_conflicts: dict = field(default_factory=dict)
    rounds: int = 0


def _bucket_clusterer(threshold: float, min_density: float, must: list[tuple[str, str]], cannot: list[tuple[str, str]]):
    """The pandas function that clusters one bucket of components: their records and edges in, report rows out."""
    def decisions_of(pairs: list[tuple[str, str]], ids: set[str]) -> list[tuple[str, str]]:
        return [(a, b) for a, b in pairs if a in ids and b in ids]

    def run(records: pd.DataFrame, edges: pd.DataFrame) -> pd.DataFrame:
        records = records.sort_values(POSITION, kind="stable").reset_index(drop=True)
        ids = records["unique_id"].astype(str)
        present = set(ids)
        done = cluster(ids, edges, threshold, min_density=min_density, must_link=decisions_of(must, present),
                       cannot_link=decisions_of(cannot, present), identities=Identities.of(records))
        people = done.clusters.assign(seed=done.clusters.groupby("person_id")["record_id"].transform("min"))
        rows = [pd.DataFrame({"kind": "record", "record_id": people["record_id"], "person_id": people["person_id"],
                              "seed": people["seed"], "root": records[POSITION].to_numpy()[done.labels]}),
                pd.DataFrame({"kind": "held", "record_id": done.held_apart["record_id_l"], "other": done.held_apart["record_id_r"],
                              "match_probability": done.held_apart["match_probability"], "reason": done.held_apart["reason"]}),
                pd.DataFrame({"kind": "conflict", "reason": list(done.identity_conflicts),
                              "count": list(done.identity_conflicts.values())}),
                pd.DataFrame({"kind": ["refused"], "count": [done.constraints["cannot_link"]["edges_refused"]]})]
        return pd.concat(rows, ignore_index=True).reindex(columns=REPORT_COLUMNS)
    return run


def _person_ids(seeds: pd.Series) -> pd.Series:
    """The person id of each single-record person (seeded by its record id)."""
    return seeds.map(lambda seed: fresh_person_id(seed, ()))


def _decision_positions(spark, standardised, pairs: list[tuple[str, str]]):
    """Steward decisions as (l, r) positions of records present (a small DataFrame)."""
    from pyspark.sql import functions as F

    frame = spark.createDataFrame(pd.DataFrame(pairs, columns=["a", "b"], dtype=object), "a string, b string")
    return frame.join(_positions(standardised, "a", "l"), "a").join(_positions(standardised, "b", "r"), "b").select("l", "r")


def _positions(standardised, record: str, position: str):
    """Record id and position of every record, named `record` and `position`."""
    from pyspark.sql import functions as F

    return standardised.select(F.col("unique_id").alias(record), F.col(POSITION).alias(position))


def _renamed_clashes(report) -> dict[str, str]:
    """{seed: person id} for persons whose derived id another person's derives too: the smallest seed keeps it,
    the others are named as `assign_person_ids` names them (in record-id order, the clashing ids excluded)."""
    from pyspark.sql import functions as F

    persons = report.where(F.col("kind") == "record").select("person_id", "seed").distinct()
    clashing = persons.join(persons.groupBy("person_id").count().where(F.col("count") > 1), "person_id")
    rows = sorted((row["seed"], row["person_id"]) for row in clashing.collect())
    taken = {person_id for _, person_id in rows}
    renamed: dict[str, str] = {}
    kept: set[str] = set()
    for seed, person_id in rows:
        if person_id not in kept:
            kept.add(person_id)
            continue
        renamed[seed] = fresh_person_id(seed, taken)
        taken.add(renamed[seed])
    return renamed


def cluster_on_spark(spark, standardised, pairs, threshold: float, min_density: float = DEFAULT_MIN_DENSITY,
                     must_link: Iterable[tuple[str, str]] = (), cannot_link: Iterable[tuple[str, str]] = (),
                     previous: pd.DataFrame | None = None) -> SparkClustering:
    """Cluster `pairs` (record_id_l, record_id_r, match_probability) of `standardised` (a Spark DataFrame from
    `matching.spark.standardise`) at `threshold`, as `matching.cluster.cluster` does on one machine.

    Steward decisions must have been checked (`matching.cluster.check_constraints`) before.
    """
    from pyspark.sql import functions as F

    must, cannot = list(must_link), list(cannot_link)
    edges = (pairs.where(F.col("match_probability") >= threshold)
             .join(_positions(standardised, "record_id_l", "l"), "record_id_l")
             .join(_positions(standardised, "record_id_r", "r"), "record_id_r")
             .where(F.col("l") != F.col("r")).localCheckpoint(eager=True))
    graph = edges.select("l", "r").unionByName(_decision_positions(spark, standardised, must))
    run = connected_components(graph)

    def labelled(node: str):  # new column identities for each use: the two groupings are joined again by cogroup
        return run.labels.select(F.col("node").alias(node), F.col("component").alias("component"))

    buckets = max(4 * spark.sparkContext.defaultParallelism, -(-run.labels.count() // BUCKET_RECORDS))
    members = standardised.join(labelled(POSITION), POSITION).withColumn("bucket", F.col("component") % buckets)
    member_edges = (edges.join(labelled("l"), "l").withColumn("bucket", F.col("component") % buckets)
                    .select("bucket", "record_id_l", "record_id_r", "match_probability"))
    report = (members.select("bucket", "unique_id", POSITION, *IDENTITY_COLUMNS).groupBy("bucket")
              .cogroup(member_edges.groupBy("bucket"))
              .applyInPandas(_bucket_clusterer(threshold, min_density, must, cannot), REPORT_SCHEMA)
              .localCheckpoint(eager=True))
    alone = standardised.join(labelled(POSITION), POSITION, "left_anti")
    name = F.pandas_udf(_person_ids, "string")
    report = report.unionByName(alone.select(F.lit("record").alias("kind"), F.col("unique_id").alias("record_id"),
                                             name("unique_id").alias("person_id"), F.col("unique_id").alias("seed"),
                                             F.col(POSITION).alias("root")),
                                allowMissingColumns=True).localCheckpoint(eager=True)
    remove_scratch(run.path)  # every use of the labels is in the checkpointed report
    records = report.where(F.col("kind") == "record").join(_positions(standardised, "record_id", POSITION), "record_id")
    clustering = _named(spark, records, report, previous, standardised, must, cannot)
    clustering.rounds = run.rounds
    clustering.held_apart = (report.where(F.col("kind") == "held")
                             .select(F.col("record_id").alias("record_id_l"), F.col("other").alias("record_id_r"),
                                     "match_probability", "reason"))
    counts = report.where(F.col("kind").isin("conflict", "refused")).groupBy("kind", "reason").agg(F.sum("count")).collect()
    clustering.identity_conflicts = {row[1]: int(row[2]) for row in counts if row[0] == "conflict"}
    clustering.constraints["cannot_link"]["edges_refused"] = sum(int(row[2]) for row in counts if row[0] == "refused")
    return clustering


def _named(spark, records, report, previous: pd.DataFrame | None, standardised, must, cannot) -> SparkClustering:
    """The clusters with their final person ids (clashes renamed, or a previous clustering's ids reused)."""
    from pyspark.sql import functions as F

    decided = sorted({r for pair in must + cannot for r in pair})
    present = standardised.where(F.col("unique_id").isin(decided)).select("unique_id").toPandas()["unique_id"] if decided else []
    summary = resolve_constraints(pd.Series(sorted(present), dtype=object), must, cannot).summary
    if previous is not None and len(previous):
        local = records.select("record_id", "root", POSITION).toPandas().sort_values(POSITION)
        ordered = local["record_id"].reset_index(drop=True)
        named = assign_person_ids(ordered, local["root"].to_numpy(), previous, resolve_constraints(ordered, must, cannot))
        frame = named.clusters.assign(**{POSITION: local[POSITION].to_numpy()})
        return SparkClustering(clusters=spark.createDataFrame(frame), held_apart=None, events=named.events,
                               constraints=summary)
    renamed = _renamed_clashes(report)
    clusters = records.select("record_id", "person_id", "seed", POSITION)
    if renamed:
        fixes = spark.createDataFrame(pd.DataFrame(list(renamed.items()), columns=["seed", "renamed"]))
        clusters = (clusters.join(F.broadcast(fixes), "seed", "left")
                    .withColumn("person_id", F.coalesce("renamed", "person_id")))
    return SparkClustering(clusters=clusters.select("record_id", "person_id", POSITION), held_apart=None,
                           constraints=summary)
