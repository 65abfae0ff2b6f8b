"""The Spark session Briefing runs Splink's SQL on (`--engine spark`), and Splink's Spark backend over it.

`spark_session` / `spark_conf`: master `local[2]` by default (or `--spark-master URL`); Splink's jar
and the Jaro UDF's (`matching.spark.jaro_udf`); non-ANSI SQL, UTC, Arrow transfers, no console
progress bar; the JVM logs errors only (`log4j2.properties`, package data beside this module). In
local mode it is sized for a laptop: driver memory a third of RAM between 1 and 8 GB
(`BRIEFING_SPARK_DRIVER_MEMORY` overrides), 2 shuffle partitions per core (Spark's 200 cost seconds
per query on small data), no web UI, bound to 127.0.0.1, and Python workers started with this
process's own interpreter (`PYSPARK_PYTHON`, which PySpark reads when the context starts, set to
`sys.executable` unless it is set already: the project's `.venv` and its packages, not the machine's
system `python3`, which lacks them). On a cluster, executors, partitions and the workers' Python
(`PYSPARK_PYTHON`) come from the cluster's own configuration (`spark-defaults.conf` under `SPARK_CONF_DIR`). Splink's
intermediate tables are cached in executor memory (spilling to disk), or written as parquet under
`BRIEFING_SPARK_CHECKPOINT_DIR` when it is set (on a cluster: storage every executor reaches, e.g.
`hdfs://` or `s3a://`), where the records are handed to the executors and iterative steps write their
rounds (`scratch_path`, removed by `remove_scratch` once read; in local mode, a scratch directory of the session).

pyspark is an optional dependency (`pip install -e '.[spark]'`): it is imported only when a session starts.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from matching.spark.jaro_udf import jaro_udf_jar, register_jaro_udfs

DEFAULT_SPARK_MASTER = "local[2]"
LOG4J_PATH = Path(__file__).with_name("log4j2.properties")

_session = None  # the SparkSession this process created (one per process; Spark allows one active context)
_checkpoint_dir: str | None = None
_local_work: str | None = None  # the scratch directory of a local-mode session


class EngineUnavailable(RuntimeError):
    """The chosen engine cannot run here (pyspark or Java missing, Spark failed to start)."""


def spark_available() -> str | None:
    """None when `--engine spark` can run here, else the reason it cannot."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))) and shutil.which("java") is None:
        return "Java is not installed (Spark needs Java 17 or 21, e.g. Debian's openjdk-17-jre-headless)"
    return None


def _local_cores(master: str) -> int | None:
    """Cores of a local master: local -> 1, local[4] -> 4, local[*] -> all; None for a cluster."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if not m:
        return None
    if m.group(1) in (None, ""):
        return 1
    return len(os.sched_getaffinity(0)) if m.group(1) == "*" else int(m.group(1))


def _default_driver_memory() -> str:
    env = os.environ.get("BRIEFING_SPARK_DRIVER_MEMORY")
    if env:
        return env
    try:
        total_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        total_gb = 8.0
    return f"{int(min(8, max(1, total_gb // 3)))}g"


def spark_conf(master: str) -> dict[str, str]:
    """The Spark settings Briefing starts a session with (see the module docstring)."""
    from splink.backends.spark import similarity_jar_location  # imports pyspark

    conf = {
        "spark.app.name": "briefing",
        "spark.jars": similarity_jar_location(),
        "spark.sql.ansi.enabled": "false",  # NULL, not an error, on bad arithmetic: DuckDB's and Splink's assumption
        "spark.sql.legacy.sizeOfNull": "false",  # size(NULL) is NULL, as DuckDB's array_length
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
    }
    cores = _local_cores(master)
    if cores is not None:  # local mode: one JVM on this machine, sized for a laptop
        memory = _default_driver_memory()
        # 2 per core: on local[2], an 800-record predict took 8-10 s with 4 partitions, 12-15 s with 8 (Spark's 200 is for clusters)
        partitions = str(2 * cores)
        conf.update({
            "spark.driver.memory": memory,
            "spark.driver.maxResultSize": "0",  # the driver is the whole job here; its heap is the limit
            "spark.sql.shuffle.partitions": partitions,
            "spark.default.parallelism": partitions,
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
        })
    return conf


def _builder(master: str, udf_jar: str | None):
    """A SparkSession builder on `master` with `spark_conf`, the UDF jar, the log configuration and a scratch directory."""
    from pyspark.sql import SparkSession

    global _local_work
    _local_work = None
    work = tempfile.mkdtemp(prefix="briefing-spark-")
    atexit.register(shutil.rmtree, work, True)
    log4j = os.path.join(work, "log4j2.properties")
    shutil.copyfile(LOG4J_PATH, log4j)
    conf = spark_conf(master)
    if udf_jar:
        conf["spark.jars"] = f"{conf['spark.jars']},{udf_jar}"
    builder = SparkSession.builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j.configurationFile=file:{log4j}")
    if _local_cores(master) is not None:
        builder = builder.config("spark.local.dir", os.path.join(work, "local"))
        _local_work = work
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return builder


def spark_session(master: str | None = None):
    """This process's SparkSession on `master` (default local[2]), created on first use with `spark_conf`.

    Asking for a different master than the running session's stops it and starts a new one.
    Raises EngineUnavailable when pyspark or Java is missing or the JVM does not start.
    """
    global _session, _checkpoint_dir
    master = master or DEFAULT_SPARK_MASTER
    if _session is not None:
        if _session.sparkContext._jsc is not None and _session.sparkContext.master == master:
            return _session
        stop_spark()
    reason = spark_available()
    if reason:
        raise EngineUnavailable(f"--engine spark: {reason}")
    udf_jar = jaro_udf_jar()
    try:
        session = _builder(master, udf_jar).getOrCreate()
    except Exception as exc:  # the JVM did not start (Java version, memory, master unreachable)
        raise EngineUnavailable(f"--engine spark: Spark did not start on {master}: {exc}") from exc
    session.sparkContext.setLogLevel("ERROR")
    register_jaro_udfs(session, udf_jar)
    checkpoints = os.environ.get("BRIEFING_SPARK_CHECKPOINT_DIR")
    _checkpoint_dir = checkpoints.rstrip("/") + f"/briefing-{uuid.uuid4().hex[:8]}" if checkpoints else None
    if _checkpoint_dir:
        session.sparkContext.setCheckpointDir(_checkpoint_dir)
    _session = session
    return session


def scratch_path(name: str) -> str:
    """A fresh path for intermediate files every executor can read back: under BRIEFING_SPARK_CHECKPOINT_DIR
    when set, else (local mode only) under this session's scratch directory. Raises EngineUnavailable on a
    cluster without BRIEFING_SPARK_CHECKPOINT_DIR."""
    base = _checkpoint_dir or _local_work
    if _session is None or base is None:
        raise EngineUnavailable("Spark on a cluster needs BRIEFING_SPARK_CHECKPOINT_DIR: storage every executor reaches")
    return f"{base.rstrip('/')}/{name}-{uuid.uuid4().hex[:8]}"


def remove_scratch(path: str) -> None:
    """Delete the files under `path` (from `scratch_path`), on any file system Spark's Hadoop reaches; nothing if absent.
    Intermediate files hold personal data: each is removed as soon as nothing reads it."""
    if _session is None:
        return
    target = _session._jvm.org.apache.hadoop.fs.Path(path)
    target.getFileSystem(_session._jsc.hadoopConfiguration()).delete(target, True)


def stop_spark() -> None:
    """Stop the session this process started (if any)."""
    global _session
    if _session is not None:
        try:
            _session.stop()
        finally:
            _session = None


def spark_api(master: str | None = None):
    """Splink's Spark backend over `spark_session(master)`."""
    from splink.backends.spark import SparkAPI  # imports pyspark

    session = spark_session(master)
    # Intermediate tables (blocked pairs, comparison vectors, predictions) are cached in executor memory
    # (spilling to disk), or written as parquet under BRIEFING_SPARK_CHECKPOINT_DIR when it is set.
    return SparkAPI(spark_session=session, break_lineage_method="parquet" if _checkpoint_dir else "persist")
