"""DuckDB's Jaro and Jaro-Winkler on Spark as a Java UDF: built from `Jaro.java`, registered per session.

The Java source (`Jaro.java`, package data beside this module) is compiled when a session starts by
Janino, the Java compiler Spark ships, into a jar cached in the temporary directory by content
(`jaro_udf_jar`); `register_jaro_udfs` registers `briefing_jaro` / `briefing_jaro_winkler` on the
session and remembers whether it worked (`jaro_udf_registered`): when it did not, the SQL translation
(`matching.spark.sql`) writes the same algorithm in Spark SQL instead.

pyspark is an optional dependency: it is imported only when a jar is built.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from matching.duckdb_backend import duckdb_fuses_winkler

JAVA_SOURCE = Path(__file__).with_name("Jaro.java")

_registered = False  # whether the running session has briefing_jaro / briefing_jaro_winkler
_failure: str | None = None  # why the last registration failed


def jaro_udf_registered() -> bool:
    """Whether the session last started has the UDFs (else Spark SQL computes Jaro: `matching.spark.sql.jaro_sql`)."""
    return _registered


def jaro_udf_failure() -> str | None:
    """Why the last registration failed (the exception, as text), or None."""
    return _failure


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.path.exists(os.path.join(java_home, "bin", "java")):
        return os.path.join(java_home, "bin", "java")
    return shutil.which("java") or "java"


def _compile(source_text: str, classpath: list[str], janino: list[str], build: str) -> str | None:
    """Compile the source with Janino into a jar under `build`; None when the compiler fails."""
    source = os.path.join(build, "Jaro.java")
    with open(source, "w", encoding="utf-8") as fh:
        fh.write(source_text)
    out = os.path.join(build, "classes")
    command = [_java(), "-cp", os.pathsep.join(janino), "org.codehaus.commons.compiler.samples.CompilerDemo",
               "-classpath", os.pathsep.join(classpath), "-d", out, source]
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
    return staging


def jaro_udf_jar() -> str | None:
    """The jar of `Jaro.java`, compiled with Spark's Janino (cached in the temp directory by content); None if it cannot be built."""
    import pyspark

    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
    janino = sorted(glob.glob(os.path.join(jars, "janino-*.jar"))) + sorted(glob.glob(os.path.join(jars, "commons-compiler-*.jar")))
    api = sorted(glob.glob(os.path.join(jars, "spark-sql-api_*.jar"))) or sorted(glob.glob(os.path.join(jars, "spark-sql_*.jar")))
    if len(janino) < 2 or not api:
        return None
    source_text = JAVA_SOURCE.read_text(encoding="utf-8")
    key = hashlib.sha256((source_text + pyspark.__version__).encode()).hexdigest()[:16]
    jar = os.path.join(tempfile.gettempdir(), f"briefing-jaro-udf-{key}.jar")
    if os.path.exists(jar):
        return jar
    with tempfile.TemporaryDirectory(prefix="briefing-jaro-") as build:
        staging = _compile(source_text, api, janino, build)
        if staging is None:
            return None
        partial = f"{jar}.{os.getpid()}.tmp"
        shutil.copy(staging, partial)
        os.replace(partial, jar)
    return jar


def register_jaro_udfs(session, jar: str | None) -> bool:
    """Register briefing_jaro / briefing_jaro_winkler on `session` (whose jars include `jar`); returns and
    remembers whether they work. Declared non-deterministic (though they are not) as an optimiser barrier.

    Splink filters predictions on a sum of CASE expressions over the comparison levels; Spark pushes that
    filter below the projection that computes the levels, substituting every level's expression into it, so
    each similarity ran dozens of times per pair (100k records: 110 s to score 1.1 million pairs). Spark
    does not push a filter through a projection holding a non-deterministic expression.
    """
    global _registered, _failure
    _failure = None if jar else "the UDF jar could not be built with Janino"
    _registered = bool(jar) and _register(session)
    if _registered:
        _failure = None
    return _registered


def _typed_udf(session, function):
    """`functions.udf(UDF2, DataType)` (returning a double), chosen by reflection. Called through Py4J by name,
    `udf(function, DoubleType)` matches this overload and the untyped `udf(Object, DataType)` alike, and Py4J
    takes whichever the JVM lists first -- an order that changes from one JVM start to the next; Spark refuses
    the untyped one (UNTYPED_SCALA_UDF), which is why registration failed in some runs and not others."""
    jvm, gateway = session._jvm, session.sparkContext._gateway
    class_of = jvm.java.lang.Class.forName
    parameters = gateway.new_array(jvm.java.lang.Class, 2)
    parameters[0] = class_of("org.apache.spark.sql.api.java.UDF2")
    parameters[1] = class_of("org.apache.spark.sql.types.DataType")
    arguments = gateway.new_array(jvm.java.lang.Object, 2)
    arguments[0] = function
    arguments[1] = jvm.org.apache.spark.sql.types.DataTypes.DoubleType
    return class_of("org.apache.spark.sql.functions").getMethod("udf", parameters).invoke(None, arguments)


def _register(session) -> bool:
    global _failure
    jvm = session._jvm
    try:
        registry = session._jsparkSession.udf()
        fused = duckdb_fuses_winkler()
        for name, winkler in (("briefing_jaro", False), ("briefing_jaro_winkler", True)):
            udf = _typed_udf(session, jvm.briefing.udf.Jaro(winkler, fused))
            registry.register(name, udf.asNondeterministic())
        return session.sql("SELECT briefing_jaro_winkler('MARTHA', 'MARHTA') AS v").collect()[0]["v"] is not None
    except Exception as exc:  # the class did not load: fall back to `matching.spark.sql.jaro_sql`
        _failure = f"{type(exc).__name__}: {exc}"[:2000]
        return False
