"""A PostgreSQL server for the tests: `BRIEFING_TEST_POSTGRES`, else a throwaway cluster.

`BRIEFING_TEST_POSTGRES` is a SQLAlchemy URL (`postgresql+psycopg://user:pw@host:5432/postgres`)
of a server on which the tests may create and drop databases. Without it, `initdb` and `pg_ctl`
are looked for on PATH and in Debian's /usr/lib/postgresql/<version>/bin (`apt-get install
postgresql`, which `.ci/run` does when they are missing), and a cluster is created in a
temporary directory: trust authentication, listening only on a unix socket in that directory
(no TCP port to collide with), fsync off. PostgreSQL refuses to run as root, so under root the
cluster's directory is handed to an unprivileged user (`postgres` if the package made one, else
`nobody`) and `initdb` / `pg_ctl` run as that user; the tests connect as the cluster's superuser
`briefing` over the socket either way. The cluster is stopped and removed at the end of the session.

Without any PostgreSQL the tests that need it skip with the reason, except under CI (`CI=true`)
where they fail: CI must run them.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ENV = "BRIEFING_TEST_POSTGRES"
SUPERUSER = "briefing"
PORT = 5432                              # only names the socket file: the cluster listens on no TCP port
SETTINGS = {"listen_addresses": "''", "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "100", "shared_buffers": "32MB"}


class Unavailable(RuntimeError):
    """No PostgreSQL to test on: the message says what was looked for."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def binaries() -> Path | None:
    """The directory holding `initdb`, `pg_ctl` and `postgres`: PATH first, then Debian's versioned directories."""
    places = []
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            places.append(Path(found).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    places += [Path(p) for p in sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p)], reverse=True)]
    for place in places:
        if all((place / name).is_file() and os.access(place / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return place
    return None


def _runner() -> dict:
    """Popen arguments that run PostgreSQL's programs as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise Unavailable("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary directory, reached over a unix socket there."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.as_user = _runner()
        # Under root the unprivileged user must reach the directory: /tmp, not a root-only TMPDIR.
        self.base = Path(tempfile.mkdtemp(prefix="briefing-pg-", dir="/tmp" if self.as_user else None))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.running = False

    def _run(self, *args: str) -> None:
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "HOME": str(self.base)}
        done = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], cwd=self.base, env=env, capture_output=True,
                              text=True, timeout=120, **self.as_user)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{log}")

    def start(self) -> "Cluster":
        os.chmod(self.base, 0o755)
        if self.as_user:
            os.chown(self.base, self.as_user["user"], self.as_user["group"])
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C",
                  "--no-sync", "--no-instructions")
        options = " ".join(f"-c {k}={v}" for k, v in SETTINGS.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"{options} -c unix_socket_directories={self.base} -p {PORT}", "start")
        self.running = True
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def url(self) -> str:
        """The URL of the cluster's `postgres` database."""
        return f"postgresql+psycopg://{SUPERUSER}@/postgres?host={self.base}&port={PORT}"


class Server:
    """Where the tests' databases live: a server URL, each test module a fresh database on it."""

    def __init__(self, url: str, cluster: Cluster | None = None):
        self.url, self.cluster = url, cluster

    def _admin(self, statement: str) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as connection:
            connection.execute(text(statement))
        engine.dispose()

    def create_database(self, label: str = "t") -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = f"{re.sub(r'[^a-z0-9_]', '_', label.lower())[:40]}_{uuid.uuid4().hex[:8]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def start_server() -> Server:
    """The server to test on; raises Unavailable when there is none."""
    given = os.environ.get(ENV, "").strip()
    if given:
        url = make_url(given)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return Server(url.render_as_string(hide_password=False))
    bin_dir = binaries()
    if bin_dir is None:
        raise Unavailable(f"there is no PostgreSQL: set {ENV} to a server URL, or install PostgreSQL (initdb and pg_ctl on "
                          "PATH or in /usr/lib/postgresql/*/bin; on Debian `apt-get install postgresql`)")
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return Server(cluster.url, cluster)
