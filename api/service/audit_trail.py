"""Where the audit log's key and witness live, outside the store: one `AuditTrail` per `Store` (`store.audit`).

The audit chain (api/service/audit.py) is keyed with HMAC-SHA256 under a secret the store does not hold, and every
committed event is also written as one `seq hash` line to a witness file outside the store. Someone who can
write the store but cannot read the key cannot recompute a hash; someone who deletes events, even the newest,
leaves witness lines that the log no longer holds.

**Where** (resolved from the store's URL when the `Store` is made, so every process over one store — gunicorn
workers, the CLI, replicas on one machine — finds the same two files):

- `BRIEFING_AUDIT_KEY_FILE` and `BRIEFING_AUDIT_WITNESS`: the paths themselves, when set (each on its own);
- a SQLite file `…/briefing.db`: `…/briefing.db.audit-key` and `…/briefing.db.audit-witness`, beside it;
- any other URL (PostgreSQL): `audit-key` and `audit-witness` in `$BRIEFING_AUDIT_DIR`, else in
  `${XDG_STATE_HOME:-~/.local/state}/briefing/<the first 16 hex of sha256 of the URL without its password>/`;
- an in-memory SQLite store: a key and a witness in memory, living as long as the store.

Moving a store means moving its key and witness with it (or pointing the variables at them): a store opened
without its key cannot be appended to once its log is keyed (`AuditKeyMissing`), and `verify` reports a log
whose witness is missing.

**Key file**: raw bytes, at least 16 (made as 32 random bytes, mode 0600, in a directory made 0700). It is made
only when the log is empty or still unkeyed (api/service/audit.py decides, under the log's write lock), never by
`verify`; two processes making it at once both end up with the one that was linked into place first.

**Witness**: opened with O_APPEND for each line and written with one `write`, so lines from concurrent
processes never interleave (they may arrive out of seq order). It is made mode 0600. A line that cannot be
written is logged and the request goes on: the event is committed and keyed, and `verify` names it as
unwitnessed. The file is not fsynced per line: after a power loss it may hold a line for an event the
database lost (reported as a truncation) or lack one (unwitnessed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL

KEY_ENV = "BRIEFING_AUDIT_KEY_FILE"
WITNESS_ENV = "BRIEFING_AUDIT_WITNESS"
DIR_ENV = "BRIEFING_AUDIT_DIR"
KEY_BYTES = 32
MIN_KEY_BYTES = 16
log = logging.getLogger("briefing.audit")


class AuditKeyMissing(RuntimeError):
    """The log is keyed but its key file is not where this store looks for it (moved without it?)."""


@dataclass
class WitnessRead:
    """What a witness holds: (seq, hash) lines in file order, unparseable line numbers, and where reading stopped."""

    lines: list[tuple[int, str]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)
    end: int = 0
    exists: bool = False


def _parse(data: bytes, first_line: int, read: WitnessRead) -> None:
    for number, raw in enumerate(data.split(b"\n"), start=first_line):
        if not raw.strip():
            continue
        parts = raw.split()
        try:
            seq, digest = int(parts[0]), parts[1].decode("ascii")
            if len(parts) != 2 or len(digest) != 64:
                raise ValueError
            int(digest, 16)
        except (ValueError, IndexError, UnicodeDecodeError):
            read.bad_lines.append(number)
            continue
        read.lines.append((seq, digest))


def read_witness_file(path: Path, offset: int = 0) -> WitnessRead:
    """The complete lines of a witness file from byte `offset` (a torn last line is left for a later read)."""
    read = WitnessRead(end=offset)
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return read
    read.exists = True
    complete = data[: data.rfind(b"\n") + 1]
    _parse(complete, 1, read)
    read.end = offset + len(complete)
    return read


class AuditTrail:
    """The key and the witness of one store's audit log (files; see the module docstring)."""

    def __init__(self, key_path: Path, witness_path: Path):
        self.key_path, self.witness_path = key_path, witness_path
        self._key: bytes | None = None
        self._lock = threading.Lock()
        self.confirmed: bytes | None = None    # api.service.audit: the key once this process saw the log keyed under it

    def describe(self) -> str:
        return f"key {self.key_path}, witness {self.witness_path}"

    def key(self, create: bool = False) -> bytes | None:
        """The key (read once, then kept); None if there is none and `create` is false."""
        with self._lock:
            if self._key is None:
                try:
                    data = self.key_path.read_bytes()
                except FileNotFoundError:
                    if not create:
                        return None
                    data = self._make_key()
                if len(data) < MIN_KEY_BYTES:
                    raise AuditKeyMissing(f"{self.key_path}: an audit key holds at least {MIN_KEY_BYTES} bytes; "
                                          f"this file holds {len(data)}")
                self._key = data
            return self._key

    def _make_key(self) -> bytes:
        self.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = self.key_path.with_name(f".{self.key_path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        handle = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(handle, secrets.token_bytes(KEY_BYTES))
            os.fsync(handle)
        finally:
            os.close(handle)
        try:
            os.link(draft, self.key_path)           # atomic, and refuses to replace a key another process made
            log.info("made a new audit key at %s: keep it with the store, and out of the store's backups", self.key_path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
        return self.key_path.read_bytes()

    def confirm(self, key: bytes) -> None:
        self.confirmed = key

    def witness(self, seq: int, digest: str) -> None:
        """Append `seq hash` (called once the event's transaction has committed)."""
        try:
            self.witness_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = os.open(self.witness_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(handle, f"{seq} {digest}\n".encode("ascii"))
            finally:
                os.close(handle)
        except OSError:
            log.exception("audit event %s is committed but could not be witnessed in %s", seq, self.witness_path)

    def read_witness(self, offset: int = 0) -> WitnessRead:
        return read_witness_file(self.witness_path, offset)


class MemoryTrail(AuditTrail):
    """An in-memory store's key and witness: as volatile as the store itself."""

    def __init__(self):
        super().__init__(Path(":memory:.audit-key"), Path(":memory:.audit-witness"))
        self._key = secrets.token_bytes(KEY_BYTES)
        self._lines: list[bytes] = []

    def describe(self) -> str:
        return "key and witness in memory"

    def key(self, create: bool = False) -> bytes | None:
        return self._key

    def witness(self, seq: int, digest: str) -> None:
        with self._lock:
            self._lines.append(f"{seq} {digest}\n".encode("ascii"))

    def read_witness(self, offset: int = 0) -> WitnessRead:
        with self._lock:
            data = b"".join(self._lines)
        read = WitnessRead(end=len(data), exists=bool(data))
        _parse(data[offset:], 1, read)
        return read


def state_directory(url: URL) -> Path:
    """The directory of a server store's key and witness: `$BRIEFING_AUDIT_DIR`, else one per URL under
    `${XDG_STATE_HOME:-~/.local/state}/briefing/` (named by the URL without its password)."""
    configured = os.environ.get(DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_STATE_HOME", "").strip() or "~/.local/state"
    query = {k: v for k, v in url.query.items() if k != "password"}
    name = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, query)
    name = name.render_as_string(hide_password=False)
    return Path(base).expanduser() / "briefing" / hashlib.sha256(name.encode()).hexdigest()[:16]


def trail_for(url: URL) -> AuditTrail:
    """The audit trail of the store at `url` (paths only: nothing is read or made here)."""
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or url.query.get("mode") == "memory":
            return MemoryTrail()
        base = Path(database).expanduser().resolve()
        key, witness = base.with_name(base.name + ".audit-key"), base.with_name(base.name + ".audit-witness")
    else:
        directory = state_directory(url)
        key, witness = directory / "audit-key", directory / "audit-witness"
    configured_key, configured_witness = (os.environ.get(name, "").strip() for name in (KEY_ENV, WITNESS_ENV))
    return AuditTrail(Path(configured_key).expanduser() if configured_key else key,
                      Path(configured_witness).expanduser() if configured_witness else witness)
