"""The persistent store: SQLAlchemy Core tables, SQLite (WAL) by default, PostgreSQL by URL.

One `Store` per process. `open_store("out/briefing.db")` or `open_store("sqlite:///…")` gives a
SQLite file in write-ahead-log mode with foreign keys enforced, each transaction made durable after SQLite's
commit (below); any other SQLAlchemy URL
(`postgresql+psycopg://…`) is used as is. `create()` makes the tables if they are missing. The
transaction primitives every writer shares live here too: `Store.begin` (with its `after_commit`
callbacks), `begin_writing` (the write lock, now) and `dialect_insert` (the dialect's upserting insert); the
bulk path (`executemany`, `COPY`) is api/service/bulk.py.

**Durable commits on SQLite, outside the write lock.** SQLite's default (`synchronous=FULL`) flushes the
write-ahead log to disk inside every commit, while the commit holds the database's one write lock: every other
writer (each briefing appends its audit event) waits for that flush, and sleeps on in SQLite's busy handler
after it. While a bulk load linked beside a 1M store, flushes slowed and 200 briefings/s fell tens of seconds
behind (BENCHMARKS.md). So connections run `synchronous=NORMAL` (no flush inside the commit; WAL mode stays
consistent), and `Store.begin` and `Store.begin_unchecked` flush the log themselves once SQLite's commit has
returned and the lock is free (`Store.make_durable`, api.service.durability), before the caller goes on: a
transaction is on disk before its caller answers or reports it, as before, and the flushes of writers committed
together overlap.

Times are stored as ISO 8601 text with their offset (SQLite has no time zone type; text
keeps both databases identical); multi-valued fields as `|`-joined text, as in the CSVs.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from sqlalchemy import (Column, Connection, Engine, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text,
                        TextClause, create_engine, delete, event, exc, false, insert, inspect, select, text)
from sqlalchemy.dialects import postgresql, sqlite

from api.service.audit_trail import AuditTrail, trail_for
from api.service.durability import LogFlusher

metadata = MetaData()
MAX_ID = 2 ** 31 - 1        # the largest id an Integer column holds (PostgreSQL INTEGER): routes refuse more with 404

RECORD_FIELDS = ("agency", "source_system", "given_name", "middle_name", "family_name", "name_suffix", "aliases", "dob",
                 "birth_year", "sex", "phone", "email", "street", "city", "state", "postcode", "ssn_last4", "recorded_at")

records = Table(
    "records", metadata,
    Column("record_id", String(200), primary_key=True),
    *[Column(name, Text) for name in RECORD_FIELDS],
    Column("ingested_at", Text, nullable=False),
)

clusters = Table(
    "clusters", metadata,
    Column("record_id", String(200), ForeignKey("records.record_id", ondelete="CASCADE"), primary_key=True),
    Column("person_id", String(64), nullable=False, index=True),
)

context_items = Table(
    "context_items", metadata,
    Column("item_id", String(200), primary_key=True),
    Column("record_id", String(200), ForeignKey("records.record_id", ondelete="CASCADE"), nullable=False, index=True),
    *[Column(name, Text) for name in ("category", "code", "text", "legal_category", "security_labels", "consent_id",
                                      "disclosure_basis", "source_type", "observed_at", "last_verified_at",
                                      "review_due", "expires_at", "status")],
    Column("updated_at", Text, nullable=False),
)

consents = Table(
    "consents", metadata,
    Column("consent_id", String(200), primary_key=True),
    Column("record_id", String(200), ForeignKey("records.record_id", ondelete="CASCADE"), nullable=False, index=True),
    *[Column(name, Text) for name in ("recipients", "purposes", "categories", "valid_from", "valid_until", "revoked_at",
                                      "discloser", "description", "signed_at")],
    Column("updated_at", Text, nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("name", String(200), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("agency", String(200), nullable=False),
    Column("purposes", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("expires_at", Text),
    Column("revoked_at", Text),
)

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", String(200), nullable=False, index=True),
    Column("item_id", String(200), nullable=False),
    Column("principal", String(200), nullable=False),
    Column("helped", Integer),
    Column("outcome", Text),
    Column("created_at", Text, nullable=False),
)

shown_items = Table(
    "shown_items", metadata,                               # which briefing showed which item to whom (feedback's proof)
    Column("principal", String(200), primary_key=True),
    Column("incident_id", String(200), primary_key=True),
    Column("item_id", String(200), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("shown_at", Text, nullable=False),
    Column("feedback_id", Integer),                        # the one feedback row accepted for it, once given
)

review_decisions = Table(
    "review_decisions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("record_id_l", String(200), nullable=False),
    Column("record_id_r", String(200), nullable=False),
    Column("decision", String(16), nullable=False),        # match | not_a_match | unsure
    Column("note", Text),
    Column("reviewer", String(200), nullable=False),
    Column("created_at", Text, nullable=False),
    Column("undone_at", Text),
    Column("pair_id", Integer, index=True),                # api.review.decisions: the review_pairs row decided
    Column("effect", Text),                                # JSON: what the decision changed (api.review.decisions)
    Column("moves", Text),                                 # JSON: [[record_id, person before, person after], ...]
    Column("event_id", Integer),                           # the person_events row of its merge / split
    Column("undone_by", String(200)),
    Index("ix_review_pair", "record_id_l", "record_id_r"),
)

review_pairs = Table(
    "review_pairs", metadata,                              # the steward queue (api.review.queue; api.service.stewardship)
    Column("pair_id", Integer, primary_key=True, autoincrement=True),
    Column("pair_key", String(420), nullable=False, unique=True),   # the two record ids sorted, "\x1f"-joined
    Column("record_id_l", String(200), nullable=False, index=True),
    Column("record_id_r", String(200), nullable=False, index=True),
    Column("match_probability", Float, nullable=False),
    Column("reason", String(16), nullable=False),          # new_record | batch_band | held_apart
    Column("detail", Text),                                # held_apart: why (matching.cluster.Clustering.held_apart)
    Column("status", String(16), nullable=False, index=True),       # open | decided
    Column("decision_id", Integer),                        # the live decision, when decided
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
)

person_events = Table(
    "person_events", metadata,                             # merges and splits by stewards (api.review.decisions)
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),            # merge | split
    Column("person_id", String(64), nullable=False, index=True),    # merge: kept; split: split from
    Column("related_person_id", String(64), nullable=False, index=True),   # merge: merged away; split: new
    Column("records", Text, nullable=False),               # JSON: [[record_id, person before, person after], ...]
    Column("decision_id", Integer),                        # the pair decision that caused it, if any
    Column("reviewer", String(200), nullable=False),
    Column("note", Text),
    Column("created_at", Text, nullable=False),
    Column("undone_at", Text),
    Column("undone_by", String(200)),
)

review_constraints = Table(
    "review_constraints", metadata,                        # must-link / cannot-link from stewards' work
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),            # must_link | cannot_link
    Column("record_id_l", String(200), nullable=False, index=True),
    Column("record_id_r", String(200), nullable=False, index=True),
    Column("decision_id", Integer, index=True),
    Column("event_id", Integer, index=True),
    Column("created_at", Text, nullable=False),
    Column("undone_at", Text),
)

briefed_persons = Table(
    "briefed_persons", metadata,                           # whom a briefing resolved (the person a referral is about)
    Column("principal", String(200), primary_key=True),
    Column("incident_id", String(200), primary_key=True),
    Column("agency", String(200), nullable=False, index=True),
    Column("person_id", String(64), nullable=False, index=True),
    Column("grade", String(16), nullable=False),
    Column("call_type", String(32), nullable=False),
    Column("received_at", Text, nullable=False),           # the incident's time (the 911 contact), UTC text
    Column("request_id", String(64), nullable=False),
    Column("briefed_at", Text, nullable=False),
)

programs = Table(
    "programs", metadata,                                  # receiving programs (api.service.referrals)
    Column("name", String(200), primary_key=True),         # the agency its provider keys carry
    Column("kind", String(32), nullable=False),
    Column("part2", Integer, nullable=False),
    Column("public_line", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    *[Column(name, Text) for name in ("webhook_url", "webhook_secret", "previous_secret", "previous_until")],
)

referrals = Table(
    "referrals", metadata,                                 # a ServiceRequest and its Task (scoring.referral)
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("person_id", String(64), nullable=False, index=True),
    Column("grade", String(16), nullable=False),           # the match grade the referral was made at
    Column("identity_review", Integer, nullable=False),    # 1 once a split moved records away from its person
    Column("incident_id", String(200), nullable=False),
    Column("call_type", String(32), nullable=False),
    Column("program", String(200), ForeignKey("programs.name"), nullable=False, index=True),
    Column("opened_by", String(200), nullable=False),      # "responder", or "rule:<id>" for a follow-up task
    Column("referrer", String(200), nullable=False),
    Column("referrer_role", String(32)),                   # the referring key's role (a rule's task: none)
    Column("referrer_agency", String(200), nullable=False, index=True),
    *[Column(name, Text) for name in ("reason", "urgency", "due_by", "basis", "consent_id", "agreement_note",
                                      "contact", "note", "business_status", "outcome")],
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False, index=True),
)

referral_events = Table(
    "referral_events", metadata,                           # every step of a referral's lifecycle
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("referral_id", Integer, ForeignKey("referrals.id", ondelete="CASCADE"), nullable=False, index=True),
    *[Column(name, Text) for name in ("event", "side", "principal", "status", "business_status", "outcome", "note")],
    Column("at", Text, nullable=False),
)

referral_items = Table(
    "referral_items", metadata,                            # the items chosen to travel with it (re-judged per read)
    Column("referral_id", Integer, ForeignKey("referrals.id", ondelete="CASCADE"), primary_key=True),
    Column("item_id", String(200), primary_key=True),
)

outbox = Table(
    "outbox", metadata,                                    # referral events to deliver (api.service.outbox)
    Column("id", Integer, primary_key=True, autoincrement=True),   # the delivery id every send carries
    Column("referral_id", Integer, nullable=False),
    Column("program", String(200), nullable=False, index=True),
    Column("event", String(64), nullable=False),
    Column("occurred_at", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Text, nullable=False, index=True),
    *[Column(name, Text) for name in ("lease_until", "delivered_at", "parked_at", "last_error")],
)

audit_events = Table(
    "audit_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", Text, nullable=False),
    Column("request_id", String(64)),
    Column("principal", String(200)),
    Column("action", String(64), nullable=False),
    Column("payload", Text, nullable=False),               # canonical JSON of every other field
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)


changes = Table(
    "changes", metadata,                                   # what other workers must apply to their index
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("record_id", String(200)),
    Column("op", String(16), nullable=False),              # upsert | delete | rebuild
    Column("at", Text, nullable=False),
)

settings = Table(
    "settings", metadata,                                  # shared by every worker and replica (api.web.review.session)
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

review_sessions = Table(
    "review_sessions", metadata,                           # live steward-page sessions (api.web.review.session)
    Column("session_hash", String(64), primary_key=True),  # sha256 of the session id the signed cookie carries
    Column("principal", String(200), nullable=False),
    Column("started_at", Float, nullable=False),           # seconds since the epoch
    Column("seen_at", Float, nullable=False, index=True),  # last request (kept to within a minute)
)


#: `connection.info` key of the callbacks `Store.begin` runs once its transaction has committed.
AFTER_COMMIT = "briefing.after_commit"


def after_commit(connection: Connection, callback: Callable[[], None]) -> None:
    """Run `callback` once the transaction of `connection` (opened by `Store.begin`) has committed.

    For work outside the database that must follow only what is durable (the audit witness):
    it is never run for a transaction that rolls back or whose process dies before the commit.
    """
    callbacks = connection.info.get(AFTER_COMMIT)
    if callbacks is None:
        raise RuntimeError("this transaction was not opened by Store.begin(): nothing would run after its commit")
    callbacks.append(callback)


#: `connection.info` key of the store's `AuditTrail` (api.service.audit_trail) while a `Store.begin` transaction is open.
AUDIT_TRAIL = "briefing.audit_trail"


class Store:
    """An engine over Briefing's tables, and `audit`: where its audit key and witness live (api/service/audit_trail.py)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.audit: AuditTrail = trail_for(engine.url)
        self.log = LogFlusher(engine)

    def make_durable(self) -> None:
        """Flush a SQLite file store's write-ahead log to disk (module docstring; api.service.durability): what
        every commit before this call wrote survives a power loss. Nothing to do for PostgreSQL (its commit is
        durable) or an in-memory store."""
        self.log.flush()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """`engine.begin()` (one transaction, committed on success), then the `after_commit` callbacks it collected."""
        callbacks: list[Callable[[], None]] = []
        self.log.refuse_if_failed()
        with self.engine.begin() as connection:
            connection.info[AFTER_COMMIT] = callbacks
            connection.info[AUDIT_TRAIL] = self.audit
            try:
                yield connection
            finally:
                connection.info.pop(AFTER_COMMIT, None)
                connection.info.pop(AUDIT_TRAIL, None)
        self.make_durable()
        for callback in callbacks:
            callback()

    @contextmanager
    def begin_unchecked(self) -> Iterator[Connection]:
        """A SQLite transaction for moving tables (api.service.staging), otherwise like `begin`: begun at once
        with the write lock (`BEGIN IMMEDIATE`, so its DDL is transactional too), with foreign keys not
        enforced and a renamed table's name left alone in other tables' references (`legacy_alter_table`)."""
        callbacks: list[Callable[[], None]] = []
        self.log.refuse_if_failed()
        with self.engine.connect() as connection:
            raw = connection.connection.driver_connection
            level = raw.isolation_level
            raw.isolation_level = None                     # the driver begins nothing itself: BEGIN is ours
            raw.execute("PRAGMA foreign_keys=OFF")         # only outside a transaction
            raw.execute("PRAGMA legacy_alter_table=ON")
            connection.info[AFTER_COMMIT] = callbacks
            connection.info[AUDIT_TRAIL] = self.audit
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                yield connection
                connection.commit()
            finally:
                connection.info.pop(AFTER_COMMIT, None)
                connection.info.pop(AUDIT_TRAIL, None)
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raw.execute("PRAGMA legacy_alter_table=OFF")
                raw.execute("PRAGMA foreign_keys=ON")
                raw.isolation_level = level
        self.make_durable()
        for callback in callbacks:
            callback()

    def create(self) -> "Store":
        metadata.create_all(self.engine)
        _add_review_columns(self.engine)
        self.make_durable()
        return self


def begin_writing(connection: Connection) -> None:
    """Take the database's write lock now (SQLite), so what is read next is what gets changed.

    SQLite's driver starts the transaction at the first write, so reads before it see no
    snapshot; a no-op DELETE starts it and takes the lock. PostgreSQL needs nothing here (callers
    lock the rows they choose with `FOR UPDATE`).
    """
    if connection.dialect.name == "sqlite":
        connection.execute(delete(changes).where(false()))


def locked_row(connection: Connection, statement):
    """The first row of the select `statement`, read under the write lock (`begin_writing`; `FOR UPDATE` on
    PostgreSQL), so that the change made next is to what was read; None when there is none."""
    begin_writing(connection)
    return connection.execute(statement.with_for_update()).first()


def dialect_insert(connection: Connection):
    """The `insert` of the connection's dialect (PostgreSQL or SQLite): the one place that chooses it. Its
    statements can upsert (`on_conflict_do_update`) or skip rows already there (`on_conflict_do_nothing`)."""
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


def upsert(table: Table, key: Sequence[str], columns: Sequence[str], update: bool = True) -> TextClause:
    """`INSERT INTO table (columns) … ON CONFLICT (key)` `DO UPDATE SET` the other columns to the new row's
    (`update`) or `DO NOTHING`, one named parameter per column, for the request path. SQLite and PostgreSQL
    spell it alike, and as text it is compiled once: SQLAlchemy cannot cache its dialects' upsert constructs
    (`dialect_insert`), so those are compiled again at every execution (about a millisecond per briefing)."""
    unknown = [c for c in [*key, *columns] if c not in table.columns]
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(unknown)}")
    action = "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key) if update else "DO NOTHING"
    return text(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)}) "
                f"ON CONFLICT ({', '.join(key)}) {action}")


def stored_secret(store: Store, setting: str, environment: str) -> str:
    """A secret every worker and replica over this store shares: `$environment` if set, else the
    `settings` row `setting`, made (32 random bytes, hex) by whichever process needs it first."""
    configured = os.environ.get(environment, "").strip()
    if configured:
        return configured
    query = select(settings.c.value).where(settings.c.key == setting)
    with store.engine.connect() as connection:
        found = connection.execute(query).scalar()
    if found:
        return found
    try:
        with store.begin() as connection:
            connection.execute(insert(settings).values(key=setting, value=secrets.token_hex(32)))
    except exc.IntegrityError:
        pass                                  # another worker or replica stored one first: use theirs
    with store.engine.connect() as connection:
        return connection.execute(query).scalar()


#: Columns added to a table that older stores already have: added (nullable) when missing.
_ADDED_COLUMNS = {"review_decisions": ("pair_id", "effect", "moves", "event_id", "undone_by"),
                  "review_pairs": ("detail",)}


def _add_review_columns(engine: Engine) -> None:
    """`ALTER TABLE … ADD COLUMN` for the nullable columns a store made before them lacks (create_all adds none)."""
    inspector = inspect(engine)
    for table_name, names in _ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table_name)}
        missing = [n for n in names if n not in present]
        if not missing:
            continue
        with engine.begin() as connection:
            for name in missing:
                column = metadata.tables[table_name].c[name]
                kind = column.type.compile(dialect=engine.dialect)
                connection.execute(text(f'ALTER TABLE {table_name} ADD COLUMN {name} {kind}'))
                if column.index:
                    connection.execute(text(f'CREATE INDEX IF NOT EXISTS ix_{table_name}_{name} ON {table_name} ({name})'))


def database_url(location: str) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (a path means a SQLite file)."""
    if "://" in location:
        scheme, rest = location.split("://", 1)
        # The driver installed with Briefing is psycopg 3; SQLAlchemy's default for postgresql:// is psycopg2.
        return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else location
    return f"sqlite:///{Path(location).expanduser().resolve()}"


def open_store(location: str) -> Store:
    """Open (not create) the store at `location`: a SQLAlchemy URL or a SQLite file path."""
    url = database_url(location)
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        if url != "sqlite://" and not url.endswith(":memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_settings(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA synchronous=NORMAL")     # the log is flushed after the commit: Store.make_durable
            cursor.close()
    _connections_stay_in_their_process(engine)
    return Store(engine)


def _connections_stay_in_their_process(engine: Engine) -> None:
    """A pooled connection is never used by a forked child (SQLAlchemy's recipe for pools and os.fork).

    `briefing serve` opens the store in the gunicorn master and forks the workers from it: without
    this, every worker would check out the master's pooled connections, and two processes writing
    one PostgreSQL socket mix their queries and results. A child gets a connection of its own; the
    inherited one is dropped without being closed (closing it would end it for its owner too).
    """
    @event.listens_for(engine, "connect")
    def _owner(_connection, record):
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _same_process(_connection, record, proxy):
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError(f"connection opened by process {record.info.get('pid')}, not {os.getpid()}")
