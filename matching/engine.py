"""Where Splink's SQL runs: DuckDB in process (the default) or Apache Spark (local mode or a cluster).

Everything Briefing does around Splink is the same on both engines: standardisation in pandas,
the blocking budget, the prior floor, neutralising unobserved levels, term-frequency tables
(Splink computes them from the records it is given), clustering in `matching.cluster`. Only the
SQL that Splink generates for training and prediction runs on the chosen engine:
`matching.duckdb_backend` or the Spark backend (`matching.spark.session`, `matching.spark.sql`).

One model format. A model is always stored with DuckDB SQL in its comparison levels and blocking
rules (`"sql_dialect": "duckdb"`), whichever engine trained it: the real-time resolver compiles
those conditions (`matching.level_sql`), and a model trained on either engine runs on the other.
To run a model on Spark, `build_linker` gives Splink the settings translated by
`matching.spark.sql.spark_settings`, which keeps DuckDB's semantics. A Spark-trained model gets its
DuckDB conditions back from the DuckDB form of the same settings (`model_json`): only the estimated
parameters come from Spark.

The standardised records go to Spark from the driver as Arrow and are checkpointed on the
executors (`build_linker`).
"""

from __future__ import annotations

import copy
import uuid
import weakref
from typing import Any

from splink import Linker, SettingsCreator

from matching.duckdb_backend import CANONICAL_DIALECT, duckdb_api
from matching.spark.session import spark_api
from matching.spark.sql import spark_settings

ENGINES = ("duckdb", "spark")
DEFAULT_ENGINE = "duckdb"

#: The DuckDB form of the settings of each linker built on Spark, for `model_json`.
_canonical_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_engine(engine: str | None) -> str:
    name = (engine or DEFAULT_ENGINE).lower()
    if name not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return name


def canonical_settings(settings: Any) -> dict:
    """A settings dict in DuckDB SQL from a SettingsCreator, a settings / model dict or a JSON path."""
    if isinstance(settings, SettingsCreator):
        return settings.create_settings_dict(CANONICAL_DIALECT)
    if isinstance(settings, dict):
        dialect = settings.get("sql_dialect", CANONICAL_DIALECT)
        if dialect != CANONICAL_DIALECT:
            raise ValueError(f"a Briefing model holds DuckDB SQL; this one says sql_dialect={dialect!r}")
        return copy.deepcopy(settings)
    return canonical_settings(SettingsCreator.from_path_or_dict(settings))


def build_linker(table, settings: Any, engine: str = DEFAULT_ENGINE, spark_master: str | None = None) -> Linker:
    """A Splink Linker over `table` (a pyarrow Table of standardised records) on `engine`.

    `settings`: a SettingsCreator, a settings / model dict (DuckDB SQL) or a path. On Spark the
    DuckDB form is remembered for the linker so that `model_json` can return the model in it.
    """
    engine = check_engine(engine)
    if engine == "duckdb":
        db = duckdb_api()
        sdf = db.register(table, table_name="records_std")
        return Linker(sdf, settings, log_level=None)
    # createDataFrame(Arrow) is a LocalRelation: rows inside the query plan, which Spark's optimizer then folds
    # again for every one of Splink's queries on the driver (ConvertToLocalRelation: 100k records took over
    # 10 minutes of planning). A local checkpoint turns it into partitions held by the executors.
    frame = spark_api(spark_master).spark.createDataFrame(table).localCheckpoint(eager=True)
    return spark_linker(frame, settings, spark_master)


def spark_linker(frame, settings: Any, spark_master: str | None = None) -> Linker:
    """A Splink Linker over `frame`, a Spark DataFrame of standardised records held by the executors
    (`settings` as for `build_linker`, translated to Spark SQL; the DuckDB form kept for `model_json`)."""
    canonical = canonical_settings(settings)
    db = spark_api(spark_master)
    # A table name of its own per linker: several linkers share this process's one Spark session.
    sdf = db.register(frame, table_name=f"records_std_{uuid.uuid4().hex[:8]}")
    linker = Linker(sdf, spark_settings(canonical), log_level=None)
    _canonical_of[linker] = canonical
    return linker


def model_json(linker: Linker) -> dict:
    """The trained model as Briefing stores it (DuckDB SQL), whichever engine `linker` runs on."""
    trained = linker.misc.save_model_to_json()
    canonical = _canonical_of.get(linker)
    if canonical is None:
        return trained
    return _with_canonical_sql(trained, canonical)


def _with_canonical_sql(trained: dict, canonical: dict) -> dict:
    """`trained` (Spark SQL) with the SQL of `canonical` (DuckDB SQL), checked to be the same model level by level."""
    out = copy.deepcopy(trained)
    if len(out["comparisons"]) != len(canonical["comparisons"]):
        raise ValueError("trained model and its settings have different comparisons")
    for comparison, source in zip(out["comparisons"], canonical["comparisons"]):
        levels, source_levels = comparison["comparison_levels"], source["comparison_levels"]
        if comparison["output_column_name"] != source["output_column_name"] or len(levels) != len(source_levels):
            raise ValueError(f"trained model and its settings differ at comparison {comparison['output_column_name']}")
        for level, source_level in zip(levels, source_levels):
            level["sql_condition"] = source_level["sql_condition"]
            if "label_for_charts" in source_level:
                level["label_for_charts"] = source_level["label_for_charts"]
    out["blocking_rules_to_generate_predictions"] = [
        {"blocking_rule": r["blocking_rule"] if isinstance(r, dict) else r, "sql_dialect": CANONICAL_DIALECT}
        for r in canonical.get("blocking_rules_to_generate_predictions", [])
    ]
    out["sql_dialect"] = CANONICAL_DIALECT
    return out
