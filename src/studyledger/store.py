"""The append-only event store: the contract every backend keeps, and the SQLite backend.

:class:`Store` is the contract (docs/store.md), checked by the conformance tests in
``tests/store_contract.py`` on every backend. :class:`SQLiteStore` is the embedded default;
``store_postgres.PostgresStore`` keeps a lab's ledger on a server. Guarantees:

1. A stored event is never changed or removed: triggers refuse UPDATE and DELETE on
   ``events``, even from a raw ``sqlite3`` session, and an INSERT that is not the next
   seq with a new id (so ``INSERT OR REPLACE`` cannot delete a row, and no row lands
   below seq 1, outside the chain).
2. Sequence numbers are contiguous from 1 and give a total order.
3. Appending an event whose id is stored is a no-op; the same id with a different body
   raises :class:`~studyledger.errors.EventConflictError`.
4. Every row carries ``chain = sha256(previous chain, then the row's values)``, so an
   edited, removed, inserted or reordered row breaks the chain from that row on.
5. Writers serialise (SQLite: ``BEGIN IMMEDIATE`` with a busy timeout and bounded retries);
   readers are never blocked, and no "database is locked" reaches a user.

Everything that must be atomic with an append (projection updates, ingestion offsets)
runs inside the same :meth:`Store.transaction`.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .errors import (
    EventConflictError,
    LedgerBusyError,
    LedgerConnectionLost,
    LedgerError,
    LedgerFullError,
    LedgerMissingError,
    LedgerReadOnlyError,
    NewerLedgerError,
    NotALedgerError,
    ValidationError,
)
from .codec import (
    CODEC_TRIGGER_DDL,
    COMPACT_EVENTS_DDL,
    DICTIONARIES_DDL,
    EVENTS_JSON_DDL,
    EVENTS_PLAIN_DDL,
    LEGACY_VIEWS,
    NAMES_DDL,
    PHYSICAL_COLUMNS,
    Codec,
    canonical_chain,
    canonical_id,
    id_bytes,
    physical_select,
)
from .events import EVENT_COLUMNS, NewEvent, StoredEvent, has_lone_surrogate

APPLICATION = "studyledger"
STORE_SCHEMA_VERSION = 3
GENESIS_CHAIN = "0" * 64
BUSY_TIMEOUT_MS = 5_000
BEGIN_ATTEMPTS = 12
_ID_LOOKUP_CHUNK = 500
ATOMIC_ATTEMPTS = 5

META_DDL = "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
EVENTS_DDL = """CREATE TABLE events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    event_id TEXT NOT NULL UNIQUE,
                    kind TEXT NOT NULL,
                    study_id TEXT,
                    run_id TEXT,
                    occurred_at TEXT,
                    recorded_at TEXT NOT NULL,
                    source TEXT NOT NULL,
                    body TEXT NOT NULL,
                    chain TEXT NOT NULL CHECK (length(chain) = 64)
                )"""
"""The events table whose columns hold the canonical values themselves: PostgreSQL's, and a
SQLite ledger's before schema version 3 (since then SQLite keeps ``codec.COMPACT_EVENTS_DDL``)."""

TRIGGER_DDL = {
    "events_refuse_update": (
        "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events BEGIN "
        "SELECT RAISE(ABORT, 'studyledger events are append-only: UPDATE refused'); END"
    ),
    "events_refuse_delete": (
        "CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events BEGIN "
        "SELECT RAISE(ABORT, 'studyledger events are append-only: DELETE refused'); END"
    ),
    # REPLACE deletes a conflicting row without firing delete triggers, and a row below
    # seq 1 is outside every range verify and replay read: an insert must be the next seq
    # with an id not stored yet, whatever its conflict clause.
    "events_append_only": (
        "CREATE TRIGGER events_append_only BEFORE INSERT ON events "
        "WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM events) "
        "OR EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id) BEGIN "
        "SELECT RAISE(ABORT, 'studyledger events are append-only: an INSERT must add the next seq "
        "with a new event id'); END"
    ),
}


class Head(NamedTuple):
    """The last event of a ledger: its sequence number and chain value.

    ``(0, GENESIS_CHAIN)`` for an empty ledger. Unpacks as a pair; ``to_dict`` is its JSON form.
    """

    seq: int
    chain: str

    def to_dict(self) -> dict[str, Any]:
        """``{"seq": ..., "chain": ...}``."""
        return {"seq": self.seq, "chain": self.chain}


EMPTY_HEAD = Head(0, GENESIS_CHAIN)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one append did."""

    appended: list[StoredEvent]
    duplicates: int


def utc_now_precise() -> str:
    """Recording time with microseconds: events recorded in one second stay ordered."""
    return datetime.now(UTC).isoformat()


def chain_hash(previous: str, row: Sequence[Any]) -> str:
    """Chain value of one row given the previous row's chain.

    ``row`` is ``(seq, event_id, kind, study_id, run_id, occurred_at, recorded_at, source,
    body)``: everything stored except the chain itself, so a change to any column shows.
    The hashed text is the previous chain, then one line per value: its length in UTF-8
    bytes, a colon and the value (``-`` for null). Length prefixes make it unambiguous
    without escaping the body again.
    """
    *values, body = row
    return chain_digest(previous, values, body.encode("utf-8") if isinstance(body, str) else str(body).encode())


def chain_part(value: Any) -> str:
    """One value's line of the text :func:`chain_hash` hashes (verify builds the line of a
    repeated value once)."""
    if value is None:
        return "-"
    text = str(value)
    return f"{len(text) if text.isascii() else len(text.encode())}:{text}"


def chain_digest(previous: str, values: Sequence[Any], body: bytes) -> str:
    """:func:`chain_hash` of a row given as its values before the body, and the body's UTF-8
    bytes (verify hashes the bytes it reads, without making text of them)."""
    digest = hashlib.sha256(chain_text(previous, values, len(body)).encode("utf-8"))
    digest.update(body)
    return digest.hexdigest()


def chain_text(previous: str, values: Sequence[Any], body_length: int) -> str:
    """The text :func:`chain_hash` hashes before the body's bytes."""
    return "\n".join([previous, *map(chain_part, values), f"{body_length}:"])


def read_head(conn: sqlite3.Connection) -> Head:
    """The :class:`Head` of the ledger a connection reads (the store's and the query layer's)."""
    row = conn.execute("SELECT seq, chain FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return Head(int(row[0]), str(canonical_chain(row[1]))) if row else EMPTY_HEAD


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


URL_SCHEMES = ("postgresql://", "postgres://")
"""How a ledger on a server is named; anything else is a file path."""

T = TypeVar("T")


class DatabaseURL:
    """The address of a ledger on a database server, safe to print.

    ``str()`` and ``repr()`` show the URL without its password (in the user part or a
    ``password=`` parameter), so a message, a log line or ``--json`` output never leaks it;
    :attr:`url` holds it whole, for connecting only.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parts = urlsplit(url)
            _ = parts.port  # a port that is not a number raises here, not at connection time
            for piece in (parts.netloc, parts.path, parts.query):
                unquote(piece, errors="strict")
        except ValueError as exc:  # UnicodeDecodeError too: a %-escape that is not UTF-8
            # The URL itself is not repeated: it may hold a password.
            raise ValidationError(f"not a usable database URL ({exc})") from None
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.split(':', 1)[0]}@{host}"
        params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
        self.display = urlunsplit((parts.scheme, netloc, parts.path, urlencode(params, safe="/"), ""))

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"DatabaseURL({self.display!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatabaseURL) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)


Target = Path | DatabaseURL
"""Where a ledger lives: a SQLite file, or a database on a server."""


def ledger_target(value: str | os.PathLike[str] | DatabaseURL) -> Target:
    """A ``--db`` value, ``STUDYLEDGER_DB`` or ``Ledger.open`` argument as a :data:`Target`."""
    if isinstance(value, DatabaseURL):
        return value
    text = os.fspath(value)
    if text.lower().startswith(URL_SCHEMES):
        return DatabaseURL(text)
    return Path(text)


def is_sqlite(conn: sqlite3.Connection) -> bool:
    """Whether SQLite itself answers ``conn``, rather than a server speaking its dialect
    (whose connection subclasses SQLite's, hence the exact type): what SQLite alone offers
    (FTS5, temporary tables, its JSON functions, set-based folds, a forked reader) is used
    only then."""
    return type(conn) is sqlite3.Connection


class Store(ABC):
    """An open ledger: the contract every backend keeps (docs/store.md).

    Open one with ``backends.open_store`` (or :meth:`Ledger.open`), which picks the backend
    from the target. The chaining, duplicate and conflict rules of :meth:`append` live here,
    once: a backend only finds stored ids and inserts rows.

    Attributes:
        path: Where the ledger lives (a ``DatabaseURL`` prints without its password).
        readonly: Opened for reading only: nothing is ever written.
        created: This open created the ledger's schema.
        conn: The connection; SQLite's SQL dialect and DB-API errors on every backend.
        read_uri: How another process opens this ledger read-only (verify's workers).
    """

    backend: ClassVar[str]
    path: Target
    readonly: bool
    created: bool = False
    conn: sqlite3.Connection
    read_uri: str
    _appended: list[str] | None = None  # ids appended in the running atomically() attempt

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    @abstractmethod
    def tables(self) -> set[str]:
        """Names of the ledger's tables."""

    events_ddl: ClassVar[str]
    """The events table as this backend describes it (see :meth:`events_definition`)."""
    trigger_ddl: ClassVar[dict[str, str]]
    """The immutability triggers, by name, as :meth:`events_triggers` describes them."""

    @abstractmethod
    def events_definition(self) -> str | None:
        """The events table's definition as stored, in this backend's words (None: no table)."""

    @abstractmethod
    def events_triggers(self) -> dict[str, str]:
        """Every trigger on ``events``, by name, with what defines it."""

    def layout_ddl(self) -> str:
        """The events table this ledger's schema version has (verify compares it with the stored one)."""
        return self.events_ddl

    def missing_triggers(self) -> list[str]:
        """Names of the immutability triggers that are not installed."""
        present = self.events_triggers()
        return [name for name in self.trigger_ddl if name not in present]

    @abstractmethod
    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction holding the ledger's write lock; nested use joins it.

        Raises:
            LedgerReadOnlyError: the store was opened read-only.
            LedgerBusyError: another writer held the lock past every retry.
        """

    @abstractmethod
    def existing_bodies(self, event_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{event_id: (kind, body)}`` for the ids already stored."""

    @abstractmethod
    def _insert(self, rows: list[StoredEvent]) -> None:
        """Insert chained rows into ``events`` (inside the append's transaction)."""

    def flush(self) -> None:
        """Send writes the backend holds back (PostgreSQL pipelines a transaction's writes),
        so that a failing write raises here, in the append that made it."""
        return None  # SQLite runs each statement when it is given: nothing is held back

    def _check_meta(self) -> int:
        """The schema version of an existing ledger, after checking it is one this code reads.

        Raises:
            NotALedgerError: ``ledger_meta`` names another application.
            NewerLedgerError: a newer studyledger wrote it.
        """
        meta = self.meta()
        if meta.get("application") != APPLICATION:
            raise NotALedgerError(f"{self.path}: not a studyledger ledger")
        version = int(meta.get("schema_version", "0"))
        if version > STORE_SCHEMA_VERSION:
            raise NewerLedgerError(
                f"{self.path}: written by a newer studyledger (ledger schema {version}); "
                f"this version reads up to {STORE_SCHEMA_VERSION}. Upgrade studyledger."
            )
        return version

    def _initial_meta(self) -> list[tuple[str, str]]:
        return [
            ("application", APPLICATION),
            ("schema_version", str(STORE_SCHEMA_VERSION)),
            ("created_at", utc_now_precise()),
        ]

    def atomically(self, action: Callable[[], T]) -> T:
        """Run ``action`` in one write transaction; after a lost connection, run it again.

        A dropped connection (:class:`LedgerConnectionLost`) means the transaction rolled
        back, or, when it dropped during COMMIT, committed without word: if the events the
        action appended are stored, it committed and its result stands. Otherwise it runs
        again (up to :data:`ATOMIC_ATTEMPTS` times), once the next transaction has
        reconnected. Running it again is safe because appends are idempotent. Nested use
        joins the outer transaction, which owns the retry.
        """
        if self.conn.in_transaction:
            return action()
        for attempt in range(ATOMIC_ATTEMPTS):
            appended: list[str] = []
            self._appended = appended
            finished = False
            try:
                with self.transaction():
                    result = action()
                    finished = True
                return result
            except LedgerConnectionLost:
                if finished and appended and self.existing_bodies(appended[:1]):
                    return result
                if attempt == ATOMIC_ATTEMPTS - 1:
                    raise
            finally:
                self._appended = None
        raise AssertionError("unreachable")

    def meta(self) -> dict[str, str]:
        """The ``ledger_meta`` key/value pairs."""
        return dict(self.conn.execute("SELECT key, value FROM ledger_meta").fetchall())

    def set_meta(self, key: str, value: str) -> None:
        """Set one ``ledger_meta`` value; call inside a transaction."""
        self.conn.execute(
            "INSERT INTO ledger_meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def head(self) -> Head:
        """The last event's seq and chain, or :data:`EMPTY_HEAD` for an empty ledger."""
        return read_head(self.conn)

    def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Append events in order, skipping those already stored.

        Must run inside :meth:`transaction`: the duplicate check, the chain and the insert
        see one consistent head only while the write lock is held. Stored ids are filtered
        out before the insert, so the INSERT itself is plain: a conflict there would be a
        bug and raises instead of leaving a hole in the chain.

        Raises:
            EventConflictError: an id is stored (or repeated in ``events``) with a
                different body.
            ValidationError: a body holds a lone UTF-16 surrogate (readers could not decode
                what SQLite makes of it).
        """
        if not self.conn.in_transaction:
            raise RuntimeError("Store.append must run inside Store.transaction()")
        fresh: dict[str, NewEvent] = {}
        for event in events:
            if has_lone_surrogate(event.body):
                raise ValidationError(f"event {event.event_id} ({event.kind}, source {event.source}): its body "
                                      "holds a lone UTF-16 surrogate, which is not valid Unicode")
            seen = fresh.get(event.event_id)
            if seen is None:
                fresh[event.event_id] = event
            elif (seen.kind, seen.body) != (event.kind, event.body):
                raise EventConflictError(f"event {event.event_id} appears twice with different bodies")
        stored = self.existing_bodies(list(fresh))
        for event_id, (kind, body) in stored.items():
            new = fresh.pop(event_id)
            if (kind, body) != (new.kind, new.body):
                raise EventConflictError(
                    f"event {event_id} is already stored with a different body "
                    f"(source {new.source}); the ledger may have been edited"
                )
        seq, chain = self.head()
        now = utc_now_precise()
        rows: list[StoredEvent] = []
        for event in fresh.values():
            seq += 1
            values = (
                seq,
                event.event_id,
                event.kind,
                event.study_id,
                event.run_id,
                event.occurred_at,
                event.recorded_at or now,
                event.source,
                event.body,
            )
            chain = chain_hash(chain, values)
            rows.append(StoredEvent(*values, chain, event.data, event.misfits))
        self._insert(rows)
        if self._appended is not None:
            self._appended.extend(row.event_id for row in rows)
        return AppendResult(appended=rows, duplicates=len(events) - len(rows))

    # -- reading --------------------------------------------------------------------

    def iter_events(
        self,
        *,
        after: int = 0,
        until: int | None = None,
        run_id: str | None = None,
        batch: int = 5_000,
    ) -> Iterator[StoredEvent]:
        """Events in sequence order, fetched in batches so memory stays flat.

        Rows are taken from the cursor one at a time, not a batch at once: with bodies of
        many megabytes, a batch held whole would cost their sum.
        """
        last = after
        while True:
            clauses = ["seq > ?"]
            params: list[Any] = [last]
            if until is not None:
                clauses.append("seq <= ?")
                params.append(until)
            if run_id is not None:
                clauses.append("run_id = ?")
                params.append(run_id)
            cursor = self.conn.execute(
                f"SELECT {self._event_select()} FROM events WHERE {' AND '.join(clauses)} "
                f"ORDER BY seq LIMIT {int(batch)}",
                params,
            )
            found = 0
            for row in cursor:
                found += 1
                last = row[0]
                yield StoredEvent(*self._canonical(row))
            if not found:
                return

    def _event_select(self) -> str:
        """The select list of ``events`` that :meth:`_canonical` reads a row from."""
        return ", ".join(EVENT_COLUMNS)

    def _canonical(self, row: Sequence[Any]) -> Sequence[Any]:
        """A row read by :meth:`_event_select` as its canonical values (``EVENT_COLUMNS``)."""
        return row

    def event_count(self) -> int:
        """Number of stored events."""
        return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])


class SQLiteStore(Store):
    """An open ledger file: the embedded backend.

    Args:
        path: The SQLite file.
        create: Create the file and its schema when missing. When false, a missing file
            raises :class:`LedgerMissingError`.
        readonly: Open with SQLite's ``mode=ro``: nothing is ever written, not even a
            migration, so audits see the file exactly as it is, and a read-only file or
            mount can be read. Implies ``create=False``.
    """

    backend = "sqlite"
    events_ddl = COMPACT_EVENTS_DDL
    trigger_ddl = TRIGGER_DDL
    codec: Codec
    legacy = False
    """A ledger in the layout of schema version 2 or older, opened read-only: its columns hold
    the canonical values, and ``events_json`` is a temporary view of them."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> None:
        self.path: Path = Path(path)
        self.readonly = readonly
        self.create = create and not readonly
        if not self.create and not self.path.exists():
            raise LedgerMissingError(
                f"{self.path}: no ledger here; create one with `studyledger init` "
                "or pass --db PATH"
            )
        if self.path.is_dir():
            raise NotALedgerError(f"{self.path}: is a directory, not a ledger file")
        if not self.path.parent.is_dir():
            raise LedgerMissingError(f"{self.path}: no folder {self.path.parent} to hold the ledger")
        self.conn = self._connect()
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._check_or_create()
            self.codec = Codec(self.conn)
            self.codec.register()
            for ddl in LEGACY_VIEWS if self.legacy else ():
                self.conn.execute(ddl)
            if readonly:
                self.conn.execute("PRAGMA query_only = ON")
            else:
                self.conn.execute("PRAGMA synchronous = NORMAL")
            # The unique event_id index takes scattered inserts (its keys are hashes); a page
            # cache larger than the 2 MiB default keeps more of it in memory at ingest rates.
            self.conn.execute("PRAGMA cache_size = -65536")
        except sqlite3.OperationalError as exc:
            self.conn.close()
            failure = None if readonly else self._write_failure(exc)
            if failure is None:
                raise NotALedgerError(f"{self.path}: not a studyledger ledger ({exc})") from None
            raise failure from None
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise NotALedgerError(f"{self.path}: not a studyledger ledger ({exc})") from None
        except BaseException:
            self.conn.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        """A connection in the mode asked for; sets :attr:`read_uri`, how readers open the file.

        A read-only connection to a WAL ledger needs its ``-shm`` file, which SQLite cannot
        create in a read-only folder; there nobody can be writing, so the file is opened
        as immutable instead. Immutable, SQLite reads no write-ahead log: a ledger whose
        ``-wal`` still holds transactions (its writer was killed) is refused rather than
        shown as it was before them.
        """
        def connect(target: str | Path, uri: bool = False) -> sqlite3.Connection:
            return sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)

        self.read_uri = f"file:{quote(os.path.abspath(self.path))}?mode=ro"
        try:
            if not self.readonly:
                return connect(self.path)
            conn = connect(self.read_uri, uri=True)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                conn.close()
                if os.access(self.path.parent, os.W_OK):
                    raise
                wal = Path(f"{self.path}-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    raise LedgerError(
                        f"{self.path}: its write-ahead log {wal.name} holds transactions SQLite cannot read "
                        f"in this read-only folder (it would need to create {self.path.name}-shm); open it once "
                        "where the folder can be written, or copy the ledger with its -wal") from None
                self.read_uri += "&immutable=1"
                conn = connect(self.read_uri, uri=True)
            return conn
        except LedgerError:
            raise
        except sqlite3.Error as exc:
            raise NotALedgerError(f"{self.path}: not a studyledger ledger ({exc})") from None

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    # -- schema ---------------------------------------------------------------------

    def _tables(self) -> set[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}

    def tables(self) -> set[str]:
        """Names of the ledger file's tables."""
        return self._tables()

    def _check_or_create(self) -> None:
        tables = self._tables()
        if "ledger_meta" not in tables:
            user_tables = {name for name in tables if not name.startswith("sqlite_")}
            if user_tables:
                raise NotALedgerError(
                    f"{self.path}: not a studyledger ledger (it has tables "
                    f"{', '.join(sorted(user_tables)[:5])} but no ledger_meta)"
                )
            if not self.create:
                # A command that only reads must not turn an empty file into a ledger.
                raise NotALedgerError(
                    f"{self.path}: not a studyledger ledger (empty file, not a ledger yet); "
                    "create one with `studyledger init`"
                )
            self._create()
            return
        version = self._check_meta()
        if version < 1:
            raise NotALedgerError(f"{self.path}: unknown ledger schema version {version}")
        # A reader leaves an older layout as it is (verify reports what it lacks) and reads
        # it through the same decoding, a writer upgrades it.
        if version < STORE_SCHEMA_VERSION and not self.readonly:
            self._migrate(version)
        self.legacy = not self._compact()

    def _create(self) -> None:
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise NotALedgerError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        with self.transaction():
            if "ledger_meta" in self._tables():  # another process created it first
                return
            self.conn.execute(META_DDL)
            self._create_compact_events()
            self.conn.executemany("INSERT INTO ledger_meta(key, value) VALUES (?, ?)", self._initial_meta())
            self.created = True

    def _create_compact_events(self) -> None:
        """The events table of schema version 3, its names and dictionaries, their
        triggers, and the ``events_plain`` and ``events_json`` views."""
        for ddl in (COMPACT_EVENTS_DDL, NAMES_DDL, DICTIONARIES_DDL, *TRIGGER_DDL.values(),
                    *CODEC_TRIGGER_DDL.values(), EVENTS_PLAIN_DDL, EVENTS_JSON_DDL):
            self.conn.execute(ddl)

    def _migrate(self, version: int) -> None:
        """Bring an older ledger up to :data:`STORE_SCHEMA_VERSION`, in one write transaction.

        Version 2 added the ``events_append_only`` trigger; version 3 stores rows compactly
        (codec.py), so every row is rewritten, with the same canonical values, ids and
        chain. Another process may have migrated meanwhile, so the version is read again
        under the write lock. The file keeps its size: SQLite reuses the pages the old
        table freed for new events (``VACUUM`` gives them back to the disk).
        """
        with self.transaction():
            current = int(self.meta().get("schema_version", "0"))
            if current < 2:
                self.conn.execute("DROP TRIGGER IF EXISTS events_append_only")
                self.conn.execute(TRIGGER_DDL["events_append_only"])
            if current < 3 and not self._compact():
                self._compact_rows()
            if current < STORE_SCHEMA_VERSION:
                self.set_meta("schema_version", str(STORE_SCHEMA_VERSION))

    def _compact(self) -> bool:
        """Whether the events table has the compact layout (schema version 3 and later)."""
        return "line" in {row[1] for row in self.conn.execute("PRAGMA table_info(events)")}

    def _compact_rows(self) -> None:
        """Rewrite the events of a version 2 ledger in the compact layout (inside the migration)."""
        for name in TRIGGER_DDL:
            self.conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        # The projection views name ``events``: renaming must not rewrite them to the old table.
        self.conn.execute("PRAGMA legacy_alter_table = ON")
        try:
            self.conn.execute("ALTER TABLE events RENAME TO events_before_v3")
        finally:
            self.conn.execute("PRAGMA legacy_alter_table = OFF")
        self._create_compact_events()
        codec = Codec(self.conn)
        head = self.conn.execute("SELECT coalesce(max(seq), 0) FROM events_before_v3").fetchone()[0]
        codec.train_if_due(int(head), "events_before_v3")
        insert = f"INSERT INTO events VALUES ({', '.join('?' * len(PHYSICAL_COLUMNS))})"
        last = -(1 << 63)
        while True:
            rows = self.conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events_before_v3 WHERE seq > ? "
                                     "ORDER BY seq LIMIT 5000", (last,)).fetchall()
            if not rows:
                break
            encoded = []
            for row in rows:
                try:
                    encoded.append(codec.encode(StoredEvent(*row)))
                except (ValueError, TypeError, AttributeError) as exc:
                    raise LedgerError(f"{self.path}: cannot upgrade the ledger: seq {row[0]} is not a row "
                                      f"studyledger wrote ({exc}); the ledger was edited. Check it with "
                                      "`studyledger verify` and restore a good copy") from None
            # The append-only trigger is created with the table and checks each row is the
            # next one: copied in order, every row is.
            self.conn.executemany(insert, encoded)
            last = rows[-1][0]
        self.conn.execute("DROP TABLE events_before_v3")

    def events_definition(self) -> str | None:
        row = self.conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
        return None if row is None else str(row[0])

    def events_triggers(self) -> dict[str, str]:
        """Every trigger on ``events``, by name, with the SQL that created it."""
        rows = self.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        )
        return {str(name): str(sql) for name, sql in rows}

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` with bounded retries.

        SQLite's busy timeout already waits for the lock; the retries (with jittered
        back-off) cover the cases where it gives up early, such as a WAL checkpoint race.
        Nested use joins the outer transaction.

        Raises:
            LedgerReadOnlyError: the store was opened read-only.
        """
        if self.readonly:
            raise LedgerReadOnlyError(f"{self.path}: opened read-only; this needs a writable ledger")
        if self.conn.in_transaction:
            yield self.conn
            return
        for attempt in range(BEGIN_ATTEMPTS):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    self._raise_write_failure(exc)
                time.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
        else:
            raise LedgerBusyError(
                f"{self.path}: another process kept the ledger busy; try again"
            )
        try:
            yield self.conn
            self.conn.execute("COMMIT")
            self._codec_done(committed=True)
        except BaseException as exc:
            # SQLite may have rolled back already (a full disk does that).
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._codec_done(committed=False)
            if isinstance(exc, sqlite3.OperationalError):
                self._raise_write_failure(exc)
            raise

    def _codec_done(self, *, committed: bool) -> None:
        codec = getattr(self, "codec", None)  # none yet while the schema is being created
        if codec is not None:
            codec.committed() if committed else codec.rolled_back()

    def _raise_write_failure(self, exc: sqlite3.OperationalError) -> NoReturn:
        """Raise a write SQLite refused as an error that says what and where (``exc`` as it
        is when it is none of those). Nothing of the refused transaction is kept: SQLite
        rolls it back whole."""
        described = self._write_failure(exc)
        if described is None:
            raise exc
        raise described from exc

    def _write_failure(self, exc: sqlite3.OperationalError) -> LedgerError | None:
        """What a refused write means for the user, or None when it is not a known case."""
        message = str(exc).lower()
        if "readonly" in message or "read-only" in message or "unable to open" in message:
            return LedgerReadOnlyError(f"{self.path}: cannot write the ledger ({exc}): the file or its folder "
                                       "is read-only to this user; nothing was written")
        if "full" in message:
            return LedgerFullError(f"{self.path}: the disk is full ({exc}); nothing of this write was kept: "
                                   "free space and run it again")
        if "disk i/o error" in message:
            return LedgerError(f"{self.path}: the disk refused a write ({exc}); nothing of this write was kept")
        return None

    # -- writing --------------------------------------------------------------------

    def existing_bodies(self, event_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{event_id: (kind, body)}`` for the ids already stored."""
        found: dict[str, tuple[str, str]] = {}
        keys: Sequence[Any] = event_ids
        if not self.legacy:
            prepared = self.codec.prepared  # id bytes an ingest worker made (Codec.prepare)
            keys = ([made[2] if (made := prepared.get(event_id)) else id_bytes(event_id) for event_id in event_ids]
                    if prepared else [id_bytes(event_id) for event_id in event_ids])
        for start in range(0, len(keys), _ID_LOOKUP_CHUNK):
            chunk = keys[start : start + _ID_LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, kind, body in self.conn.execute(
                f"SELECT event_id, kind, body FROM events WHERE event_id IN ({marks})", chunk
            ):
                name = self.codec.name(kind) if isinstance(kind, int) else kind
                found[canonical_id(key)] = (name, self.codec.body(body))
        return found

    def _insert(self, rows: list[StoredEvent]) -> None:
        if not rows:
            return
        self.conn.executemany(
            f"INSERT INTO events ({', '.join(PHYSICAL_COLUMNS)}) VALUES ({', '.join('?' * len(PHYSICAL_COLUMNS))})",
            [self.codec.encode(row) for row in rows],
        )
        self.codec.train_if_due(rows[-1].seq)

    def layout_ddl(self) -> str:
        return EVENTS_DDL if self.legacy else COMPACT_EVENTS_DDL

    def _event_select(self) -> str:
        if self.legacy:
            return physical_select(EVENT_COLUMNS)
        return ", ".join(PHYSICAL_COLUMNS)

    def _canonical(self, row: Sequence[Any]) -> Sequence[Any]:
        return self.codec.decode(row)
