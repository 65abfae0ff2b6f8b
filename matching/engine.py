"""Where Splink's SQL runs: DuckDB in process (the default) or Apache Spark (local mode or a cluster).

Everything Briefing does around Splink is the same on both engines: standardisation in pandas,
the blocking budget, the prior floor, neutralising unobserved levels, term-frequency tables
(Splink computes them from the records it is given), clustering in `matching.cluster`. Only the
SQL that Splink generates for training and prediction runs on the chosen engine.

One model format. A model is always stored with DuckDB SQL in its comparison levels and blocking
rules (`"sql_dialect": "duckdb"`), whichever engine trained it: the real-time resolver compiles
those conditions (`matching.level_sql`), and a model trained on either engine runs on the other.
To run a model on Spark, `spark_settings` translates each condition with sqlglot and replaces
the functions whose Spark counterparts differ from DuckDB's:

- `jaro_winkler_similarity` / `jaro_similarity`: the Jaro-Winkler of Splink's Spark jar (Apache
  commons-text) is not DuckDB's (DuckDB embeds RapidFuzz's: ACOSTA ~ COATS is 0.811 there, 0.778 in
  the jar; 467 of 715,765 name and street pairs of a synthetic county fall on different sides of
  0.8). On Spark they are `briefing_jaro_winkler` / `briefing_jaro`, a Java UDF (`_JARO_JAVA`) with
  DuckDB's algorithm and arithmetic, compiled when the session starts by the Java compiler Spark
  ships (Janino) and sent to the executors as a jar; if it cannot be built, the same algorithm
  written in Spark SQL (`_jaro_sql`, higher-order functions: exact too, but 1.4 million pairs
  took 74 s against 17 s with the UDF, reading the results included).
  Both equal DuckDB's to the last bit on 1.4 million pairs, including DuckDB's fused multiply-add
  in the Winkler boost on CPUs that have one (`_duckdb_fuses_winkler`).
- `damerau_levenshtein` (from Splink's jar: the same distances as DuckDB's on those pairs) and the
  similarity functions return NULL when either side is NULL, as DuckDB's do (the jar gives 100 and
  0.0).
- `list_intersect` becomes `array_intersect`; `array_length` becomes `size` (sqlglot), with
  `size(NULL)` NULL (`spark.sql.legacy.sizeOfNull=false`) as in DuckDB.

A Spark-trained model gets its DuckDB conditions back from the DuckDB form of the same settings
(`model_json`): only the estimated parameters come from Spark.

Spark session (`spark_session`, `spark_conf`): master `local[2]` by default (or `--spark-master
URL`); the jars; non-ANSI SQL, UTC, Arrow transfers, no console progress bar. In local mode it is
sized for a laptop: driver memory a third of RAM between 1 and 8 GB (`BRIEFING_SPARK_DRIVER_MEMORY`
overrides), 2 shuffle partitions per core (Spark's 200 cost seconds per query on small data), no
web UI, bound to 127.0.0.1. On a cluster, executors and partitions come from the cluster's own
configuration (`spark-defaults.conf` under `SPARK_CONF_DIR`). Splink's intermediate tables are
cached in executor memory (spilling to disk), or written as parquet under
`BRIEFING_SPARK_CHECKPOINT_DIR` when it is set (on a cluster: storage every executor reaches, e.g.
`hdfs://` or `s3a://`). The standardised records go to Spark from the driver as Arrow and are
checkpointed on the executors (`build_linker`).
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import re
import shutil
import tempfile
import uuid
from typing import Any

import sqlglot
from sqlglot import exp

ENGINES = ("duckdb", "spark")
DEFAULT_ENGINE = "duckdb"
DEFAULT_SPARK_MASTER = "local[2]"
CANONICAL_DIALECT = "duckdb"


class EngineUnavailable(RuntimeError):
    """The chosen engine cannot run here (pyspark or Java missing, Spark failed to start)."""


def check_engine(engine: str | None) -> str:
    name = (engine or DEFAULT_ENGINE).lower()
    if name not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return name


# --------------------------------------------------------------------------- DuckDB


def duckdb_api(threads: int | None = None):
    import duckdb
    from splink import DuckDBAPI

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")
    return DuckDBAPI(con)


# --------------------------------------------------------------------------- Spark session

_session = None  # the SparkSession this process created (one per process; Spark allows one active context)
_checkpoint_dir: str | None = None

_LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
# Splink's prediction SQL can exceed the JVM's 64 KB method limit in whole-stage code generation; Spark then
# logs the generated source at ERROR and runs the same plan without it (spark.sql.codegen.fallback): expected.
logger.codegen.name = org.apache.spark.sql.catalyst.expressions.codegen.CodeGenerator
logger.codegen.level = off
"""


# DuckDB's jaro_similarity / jaro_winkler_similarity for Spark, as a Java UDF. DuckDB embeds RapidFuzz's
# algorithm; this is the same algorithm over code points with the same arithmetic in the same order, so a
# threshold such as `>= 0.8` falls on the same side (Splink's jar computes commons-text's Jaro-Winkler, which
# differs). Compiled when a session starts by Janino, the Java compiler Spark itself ships and uses for code
# generation, into a jar that goes to the executors with Splink's. Janino ignores generics, hence raw UDF2.
_JARO_JAVA = """\
package briefing.udf;

public class Jaro implements org.apache.spark.sql.api.java.UDF2 {
    private final boolean winkler;
    private final boolean fused;

    public Jaro(boolean winkler, boolean fused) {
        this.winkler = winkler;
        this.fused = fused;
    }

    public Object call(Object a, Object b) throws Exception {
        if (a == null || b == null) return null;
        int[] p = ((String) a).codePoints().toArray();
        int[] t = ((String) b).codePoints().toArray();
        return Double.valueOf(winkler ? jaroWinkler(p, t, fused) : jaro(p, t));
    }

    public static double jaro(int[] p, int[] t) {
        int pl = p.length, tl = t.length;
        if (pl == 0 || tl == 0) return 0.0;
        if (pl == 1 && tl == 1) return p[0] == t[0] ? 1.0 : 0.0;
        int bound = Math.max(pl, tl) / 2 - 1;
        boolean[] pFlag = new boolean[pl];
        boolean[] tFlag = new boolean[tl];
        int common = 0;
        for (int i = 0; i < pl; i++) {
            int hi = Math.min(i + bound, tl - 1);
            for (int j = Math.max(0, i - bound); j <= hi; j++) {
                if (!tFlag[j] && t[j] == p[i]) {
                    pFlag[i] = true;
                    tFlag[j] = true;
                    common++;
                    break;
                }
            }
        }
        if (common == 0) return 0.0;
        int k = 0, transpositions = 0;
        for (int i = 0; i < pl; i++) {
            if (pFlag[i]) {
                int j = k;
                while (!tFlag[j]) j++;
                k = j + 1;
                if (p[i] != t[j]) transpositions++;
            }
        }
        transpositions /= 2;
        double sim = 0.0;
        sim += (double) common / (double) pl;
        sim += (double) common / (double) tl;
        sim += (double) (common - transpositions) / (double) common;
        return sim / 3.0;
    }

    public static double jaroWinkler(int[] p, int[] t, boolean fused) {
        int prefix = 0;
        int maxPrefix = Math.min(4, Math.min(p.length, t.length));
        while (prefix < maxPrefix && p[prefix] == t[prefix]) prefix++;
        double sim = jaro(p, t);
        if (sim > 0.7) {
            double w = (double) prefix * 0.1;
            sim = fused ? Math.fma(w, 1.0 - sim, sim) : sim + w * (1.0 - sim);
            sim = Math.min(sim, 1.0);
        }
        return sim;
    }
}
"""

_java_jaro = False  # whether this session has briefing_jaro / briefing_jaro_winkler (else `_jaro_sql` is used)


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.path.exists(os.path.join(java_home, "bin", "java")):
        return os.path.join(java_home, "bin", "java")
    return shutil.which("java") or "java"


def _jaro_udf_jar() -> str | None:
    """The jar of `_JARO_JAVA`, compiled with Spark's Janino (cached in the temp directory by content); None if it cannot be built."""
    import glob
    import hashlib
    import subprocess
    import zipfile

    import pyspark

    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
    janino = sorted(glob.glob(os.path.join(jars, "janino-*.jar"))) + sorted(glob.glob(os.path.join(jars, "commons-compiler-*.jar")))
    api = sorted(glob.glob(os.path.join(jars, "spark-sql-api_*.jar"))) or sorted(glob.glob(os.path.join(jars, "spark-sql_*.jar")))
    if len(janino) < 2 or not api:
        return None
    key = hashlib.sha256((_JARO_JAVA + pyspark.__version__).encode()).hexdigest()[:16]
    jar = os.path.join(tempfile.gettempdir(), f"briefing-jaro-udf-{key}.jar")
    if os.path.exists(jar):
        return jar
    with tempfile.TemporaryDirectory(prefix="briefing-jaro-") as build:
        source = os.path.join(build, "Jaro.java")
        with open(source, "w", encoding="utf-8") as fh:
            fh.write(_JARO_JAVA)
        out = os.path.join(build, "classes")
        command = [_java(), "-cp", os.pathsep.join(janino), "org.codehaus.commons.compiler.samples.CompilerDemo",
                   "-classpath", os.pathsep.join(api), "-d", out, source]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return None
        staging = os.path.join(build, "udf.jar")
        with zipfile.ZipFile(staging, "w") as zf:
            for root, _, files in os.walk(out):
                for name in files:
                    path = os.path.join(root, name)
                    zf.write(path, os.path.relpath(path, out))
        partial = f"{jar}.{os.getpid()}.tmp"
        shutil.copy(staging, partial)
        os.replace(partial, jar)
    return jar


def _register_jaro_udfs(session) -> bool:
    """Register briefing_jaro / briefing_jaro_winkler, declared non-deterministic (though they are not) as an optimiser barrier.

    Splink filters predictions on a sum of CASE expressions over the comparison levels; Spark pushes that
    filter below the projection that computes the levels, substituting every level's expression into it, so
    each similarity ran dozens of times per pair (100k records: 110 s to score 1.1 million pairs). Spark
    does not push a filter through a projection holding a non-deterministic expression.
    """
    jvm = session._jvm
    try:
        double = jvm.org.apache.spark.sql.types.DataTypes.DoubleType
        registry = session._jsparkSession.udf()
        fused = _duckdb_fuses_winkler()
        for name, winkler in (("briefing_jaro", False), ("briefing_jaro_winkler", True)):
            udf = jvm.org.apache.spark.sql.functions.udf(jvm.briefing.udf.Jaro(winkler, fused), double)
            registry.register(name, udf.asNondeterministic())
        return session.sql("SELECT briefing_jaro_winkler('MARTHA', 'MARHTA') AS v").collect()[0]["v"] is not None
    except Exception:  # the class did not load: fall back to `_jaro_sql`
        return False


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
    from splink.backends.spark import similarity_jar_location

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


def spark_session(master: str | None = None):
    """This process's SparkSession on `master` (default local[2]), created on first use with `spark_conf`.

    Asking for a different master than the running session's stops it and starts a new one.
    Raises EngineUnavailable when pyspark or Java is missing or the JVM does not start.
    """
    global _session, _checkpoint_dir, _java_jaro
    master = master or DEFAULT_SPARK_MASTER
    if _session is not None:
        if _session.sparkContext._jsc is not None and _session.sparkContext.master == master:
            return _session
        stop_spark()
    reason = spark_available()
    if reason:
        raise EngineUnavailable(f"--engine spark: {reason}")
    from pyspark.sql import SparkSession

    work = tempfile.mkdtemp(prefix="briefing-spark-")
    atexit.register(shutil.rmtree, work, True)
    log4j = os.path.join(work, "log4j2.properties")
    with open(log4j, "w", encoding="utf-8") as fh:
        fh.write(_LOG4J)
    conf = spark_conf(master)
    udf_jar = _jaro_udf_jar()
    if udf_jar:
        conf["spark.jars"] = f"{conf['spark.jars']},{udf_jar}"
    builder = SparkSession.builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    java_opts = f"-Dlog4j.configurationFile=file:{log4j}"
    builder = builder.config("spark.driver.extraJavaOptions", java_opts)
    if _local_cores(master) is not None:
        builder = builder.config("spark.local.dir", os.path.join(work, "local"))
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start (Java version, memory, master unreachable)
        raise EngineUnavailable(f"--engine spark: Spark did not start on {master}: {exc}") from exc
    session.sparkContext.setLogLevel("ERROR")
    _java_jaro = bool(udf_jar) and _register_jaro_udfs(session)
    checkpoints = os.environ.get("BRIEFING_SPARK_CHECKPOINT_DIR")
    _checkpoint_dir = checkpoints.rstrip("/") + f"/briefing-{uuid.uuid4().hex[:8]}" if checkpoints else None
    if _checkpoint_dir:
        session.sparkContext.setCheckpointDir(_checkpoint_dir)
    _session = session
    return session


def stop_spark() -> None:
    """Stop the session this process started (if any)."""
    global _session
    if _session is not None:
        try:
            _session.stop()
        finally:
            _session = None


def spark_api(master: str | None = None):
    from splink.backends.spark import SparkAPI

    session = spark_session(master)
    # Intermediate tables (blocked pairs, comparison vectors, predictions) are cached in executor memory
    # (spilling to disk), or written as parquet under BRIEFING_SPARK_CHECKPOINT_DIR when it is set.
    return SparkAPI(spark_session=session, break_lineage_method="parquet" if _checkpoint_dir else "persist")


def database_api(engine: str = DEFAULT_ENGINE, spark_master: str | None = None):
    return spark_api(spark_master) if check_engine(engine) == "spark" else duckdb_api()


# --------------------------------------------------------------------------- DuckDB SQL -> Spark SQL


def _jaro_sql(a: str, b: str, winkler: bool) -> str:
    """DuckDB's Jaro (and Jaro-Winkler: prefix weight 0.1, up to 4 characters, boost above 0.7) in Spark SQL.

    DuckDB embeds RapidFuzz's algorithm; this is the same arithmetic in the same order, so a
    threshold such as `>= 0.8` falls on the same side. Matches are found greedily: each character
    of `a` takes the first unused equal character of `b` within max(len)/2 - 1 positions (used
    characters of `b` are masked with chr(1), so `locate` finds the next free one); transpositions
    are half the mismatches between the matched characters of `a` and of `b` in order, rounded
    down. The Winkler boost is fused (one rounding) where this machine's DuckDB fuses it
    (`_duckdb_fuses_winkler`). NULL when either side is NULL, as in DuckDB.
    """
    la, lb = f"length({a})", f"length({b})"
    bound = f"(CAST(greatest({la}, {lb}) / 2 AS INT) - 1)"
    ch = f"substr({a}, i + 1, 1)"
    # State: `f` is `b` with its matched characters masked by chr(1) (so `locate` finds the next free one),
    # `mb` holds `b`'s matched characters in place and chr(2) elsewhere, `ma` `a`'s matched characters in order.
    found = f"locate({ch}, acc.f, greatest(0, i - {bound}) + 1)"
    step = (f"IF({found} > 0 AND {found} <= i + {bound} + 1, named_struct("
            f"'f', overlay(acc.f PLACING chr(1) FROM {found} FOR 1), "
            f"'mb', overlay(acc.mb PLACING {ch} FROM {found} FOR 1), 'ma', concat(acc.ma, {ch})), acc)")
    start = f"named_struct('f', {b}, 'mb', repeat(chr(2), {lb}), 'ma', '')"
    common = "CAST(length(acc.ma) AS DOUBLE)"
    half_mismatches = ("size(filter(sequence(1, length(acc.ma)), "
                       "k -> substr(acc.ma, k, 1) <> substr(replace(acc.mb, chr(2), ''), k, 1)))")
    transpositions = f"CAST(FLOOR({half_mismatches} / 2) AS DOUBLE)"
    sim = (f"(({common} / CAST({la} AS DOUBLE) + {common} / CAST({lb} AS DOUBLE)) "
           f"+ ({common} - {transpositions}) / {common}) / CAST(3.0 AS DOUBLE)")
    finish = f"acc -> IF(length(acc.ma) = 0, CAST(0.0 AS DOUBLE), {sim})"
    jaro = f"aggregate(sequence(0, {la} - 1), {start}, (acc, i) -> {step}, {finish})"
    if winkler:
        prefix = (f"aggregate(sequence(1, least(4, {la}, {lb})), 0, "
                  f"(n, k) -> IF(n = k - 1 AND substr({a}, k, 1) = substr({b}, k, 1), n + 1, n))")
        weight = f"CAST({prefix} AS DOUBLE) * CAST(0.1 AS DOUBLE)"
        if _duckdb_fuses_winkler():
            boosted = f"CAST(reflect('java.lang.Math', 'fma', {weight}, CAST(1.0 AS DOUBLE) - s, s) AS DOUBLE)"
        else:
            boosted = f"s + ({weight}) * (CAST(1.0 AS DOUBLE) - s)"
        jaro = (f"element_at(transform(array({jaro}), s -> IF(s > CAST(0.7 AS DOUBLE), "
                f"least({boosted}, CAST(1.0 AS DOUBLE)), s)), 1)")
    return (f"CASE WHEN {a} IS NULL OR {b} IS NULL THEN NULL "
            f"WHEN {la} = 0 OR {lb} = 0 THEN CAST(0.0 AS DOUBLE) "
            f"WHEN {la} = 1 AND {lb} = 1 THEN IF({a} = {b}, CAST(1.0 AS DOUBLE), CAST(0.0 AS DOUBLE)) "
            f"ELSE {jaro} END")


@functools.lru_cache(maxsize=1)
def _duckdb_fuses_winkler() -> bool:
    """Whether this DuckDB computes the Winkler boost s + w * (1 - s) with one rounding (a fused multiply-add).

    Builds for CPUs with FMA do (x86-64 here: 0.92 for the pair below, 0.9199999999999999 unfused);
    the Spark expression follows whichever this machine's DuckDB does.
    """
    import duckdb

    value = duckdb.connect().execute("SELECT jaro_winkler_similarity('1484 JOHNSON DR', '1863 JOHNSON DR')").fetchone()[0]
    return value == 0.92


def _null_if_either_null(a: str, b: str, call: str) -> str:
    return f"CASE WHEN {a} IS NULL OR {b} IS NULL THEN NULL ELSE {call} END"


def _args(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    return [node.this, node.expression]


def _to_spark(node: exp.Expression) -> exp.Expression:
    name = node.name.lower() if isinstance(node, exp.Anonymous) else None
    if isinstance(node, exp.JarowinklerSimilarity) or name in ("jaro_winkler_similarity", "jaro_similarity"):
        a, b = (f"({arg.sql(dialect='spark')})" for arg in _args(node)[:2])
        winkler = name != "jaro_similarity"
        if _java_jaro:
            return sqlglot.parse_one(f"briefing_jaro{'_winkler' if winkler else ''}({a}, {b})", read="spark")
        return sqlglot.parse_one(_jaro_sql(a, b, winkler=winkler), read="spark")
    if name == "damerau_levenshtein":
        a, b = (f"({arg.sql(dialect='spark')})" for arg in _args(node)[:2])
        return sqlglot.parse_one(_null_if_either_null(a, b, f"damerau_levenshtein({a}, {b})"), read="spark")
    if name in ("list_intersect", "array_intersect"):
        return exp.Anonymous(this="array_intersect", expressions=list(node.expressions))
    return node


def spark_sql(condition: str) -> str:
    """One DuckDB SQL condition (a comparison level or blocking rule) in Spark SQL with DuckDB's semantics."""
    if condition.strip().upper() == "ELSE":
        return condition
    tree = sqlglot.parse_one(condition, read=CANONICAL_DIALECT)
    return tree.transform(_to_spark).sql(dialect="spark")


def canonical_settings(settings: Any) -> dict:
    """A settings dict in DuckDB SQL from a SettingsCreator, a settings / model dict or a JSON path."""
    from splink import SettingsCreator

    if isinstance(settings, SettingsCreator):
        return settings.create_settings_dict(CANONICAL_DIALECT)
    if isinstance(settings, dict):
        dialect = settings.get("sql_dialect", CANONICAL_DIALECT)
        if dialect != CANONICAL_DIALECT:
            raise ValueError(f"a Briefing model holds DuckDB SQL; this one says sql_dialect={dialect!r}")
        return copy.deepcopy(settings)
    return canonical_settings(SettingsCreator.from_path_or_dict(settings))


def spark_settings(settings: Any) -> dict:
    """The same settings with every SQL condition in Spark SQL (DuckDB semantics kept: see the module docstring)."""
    out = canonical_settings(settings)
    out["sql_dialect"] = "spark"
    for comparison in out.get("comparisons", []):
        for level in comparison["comparison_levels"]:
            level["sql_condition"] = spark_sql(level["sql_condition"])
    rules = []
    for rule in out.get("blocking_rules_to_generate_predictions", []):
        if isinstance(rule, str):
            rule = {"blocking_rule": rule}
        rules.append({**rule, "blocking_rule": spark_sql(rule["blocking_rule"]), "sql_dialect": "spark"})
    out["blocking_rules_to_generate_predictions"] = rules
    return out


# --------------------------------------------------------------------------- linkers and models


def build_linker(table, settings: Any, engine: str = DEFAULT_ENGINE, spark_master: str | None = None):
    """A Splink Linker over `table` (a pyarrow Table of standardised records) on `engine`.

    `settings`: a SettingsCreator, a settings / model dict (DuckDB SQL) or a path. On Spark the
    DuckDB form is kept on the linker so that `model_json` can return the model in it.
    """
    from splink import Linker

    engine = check_engine(engine)
    if engine == "duckdb":
        db = duckdb_api()
        sdf = db.register(table, table_name="records_std")
        return Linker(sdf, settings, log_level=None)
    canonical = canonical_settings(settings)
    db = spark_api(spark_master)
    # createDataFrame(Arrow) is a LocalRelation: rows inside the query plan, which Spark's optimizer then folds
    # again for every one of Splink's queries on the driver (ConvertToLocalRelation: 100k records took over
    # 10 minutes of planning). A local checkpoint turns it into partitions held by the executors.
    frame = db.spark.createDataFrame(table).localCheckpoint(eager=True)
    # A table name of its own per linker: several linkers share this process's one Spark session.
    sdf = db.register(frame, table_name=f"records_std_{uuid.uuid4().hex[:8]}")
    linker = Linker(sdf, spark_settings(canonical), log_level=None)
    linker._briefing_canonical_settings = canonical
    return linker


def model_json(linker) -> dict:
    """The trained model as Briefing stores it (DuckDB SQL), whichever engine `linker` runs on."""
    trained = linker.misc.save_model_to_json()
    canonical = getattr(linker, "_briefing_canonical_settings", None)
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
