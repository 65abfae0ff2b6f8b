"""The Spark backend (`--engine spark`): Splink's SQL on Apache Spark, with DuckDB's semantics.

- `matching.spark.session`: the SparkSession (local mode or a cluster) and Splink's Spark API over it;
- `matching.spark.sql`: DuckDB SQL (the model's) translated to Spark SQL with DuckDB's results;
- `matching.spark.jaro_udf`: DuckDB's Jaro-Winkler as a Java UDF (`Jaro.java`), built when a session starts;
- `matching.spark.standardise` (standardisation per partition), `matching.spark.components` (connected
  components in DataFrame operations) and `matching.spark.cluster` (the clustering of each component): the
  steps of `matching.spark_link`, linking with a model on the executors (`briefing link --engine spark --model M`).

`log4j2.properties` and `Jaro.java` are package data. pyspark is an optional dependency: nothing here
imports it until a session starts.
"""
