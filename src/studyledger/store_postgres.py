"""The PostgreSQL backend: one ledger on a server that every machine of a lab writes to.

It keeps the contract of :class:`~studyledger.store.Store` (docs/store.md) with the same
tables, the same rows and the same chain as a SQLite ledger, so everything above the store
runs unchanged. Two pieces make that work:

* :class:`PgConnection`, ``ledger.conn`` on this backend: a ``sqlite3.Connection`` subclass
  that speaks SQLite's SQL dialect and raises sqlite3's DB-API errors, translating to and
  from PostgreSQL through psycopg 3 (placeholders, the reserved ``offset``, DDL types, rowid
  defaults, ``PRAGMA data_version`` as LISTEN/NOTIFY, NUL in text). Its SQLite half is a
  closed in-memory database, so a method it does not implement fails loudly instead of
  quietly talking to SQLite.
* :class:`PostgresStore`: the schema (plus SQLite-named functions ``json_extract`` and
  ``instr`` and a ``sqlite_master`` view), append-only triggers including TRUNCATE, roles,
  and appends that take a transaction-scoped advisory lock, read the head under it and COPY
  the chained rows in.

Measured on this project's machine (scratch report, PostgreSQL 15): COPY inserts about twice
as fast as SQLite's executemany; an advisory lock at READ COMMITTED gives gapless sequence
numbers with 4 writers (REPEATABLE READ reads a stale head; a SEQUENCE leaves gaps);
``LOCK TABLE`` would need UPDATE or DELETE rights that the writer role must not have.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import count, islice
from typing import Any, NamedTuple, overload

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.types.json import Json

from .errors import (
    LedgerBusyError,
    LedgerConnectionLost,
    LedgerMissingError,
    LedgerPermissionError,
    LedgerReadOnlyError,
    NotALedgerError,
)
from .events import EVENT_COLUMNS, StoredEvent
from .store import EVENTS_DDL, META_DDL, DatabaseURL, Store

CHANNEL = "studyledger"
"""The LISTEN/NOTIFY channel every write transaction signals on commit."""
LOCK_KEY = 0x53_54_4C_44  # "STLD": one advisory lock per database serialises its writers
LOCK_TIMEOUT = "30s"
IDLE_IN_TRANSACTION_TIMEOUT = "60s"
"""A writer that hangs inside a transaction (a stopped process, a lost host) is cut off by
the server after this, which frees the lock for everyone else."""
FIRST_CONNECT_SECONDS = 5.0
RECONNECT_SECONDS = 60.0
"""How long a lost connection is retried (jittered backoff from 50 ms to 2 s) before the
command gives up; a watcher keeps trying after that, batch after batch."""
INT64 = (-(2**63), 2**63 - 1)
STREAM_ROWS = 2_000
HOLD_ROWS = 100
"""An executemany of fewer rows, in a write transaction, waits for the next round trip;
more go at once (as a COPY when they can)."""

_MARK = "\uffff"
"""Escape for text PostgreSQL cannot hold: NUL is stored as MARK + "0" and MARK itself as
MARK + MARK (a noncharacter, so real text almost never pays for it)."""
_ESCAPES = {"0": "\x00", _MARK: _MARK}
_UNESCAPE = re.compile(_MARK + "(.)", re.DOTALL)

# Functions with SQLite's names and meaning, so the projections' view and the queries run
# as written (json_type answers in SQLite's words: text, integer, real, true, false, null,
# object, array). A function returns one type, so json_extract and json_each return text, and
# mark a number (SQLite returns it as a number, true and false as 1 and 0) by the escape mark
# and 'i' or 'r': the connection reads it back as an int or a float. json_extract parses with PostgreSQL's json type; text it cannot hold or parse
# (\u0000, lone surrogates, the escape mark) takes the slow path, which escapes it as the
# connection does, or gives NULL for a body PostgreSQL cannot read.
SCHEMA_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION sl_json_path(path text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN path = '$' THEN '{}'::text[]
         ELSE string_to_array(regexp_replace(substr(path, 3), '\[(\d+)\]', '.\1', 'g'), '.') END
$$;
CREATE OR REPLACE FUNCTION sl_json_type(v json) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v)
    WHEN 'string' THEN 'text'
    WHEN 'boolean' THEN v::text
    WHEN 'number' THEN CASE WHEN v::text ~ '^-?[0-9]+$' THEN 'integer' ELSE 'real' END
    ELSE json_typeof(v) END
$$;
CREATE OR REPLACE FUNCTION sl_json_value(v json, original json) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v)
    WHEN 'string' THEN v #>> '{}'
    WHEN 'number' THEN U&'\FFFF' || CASE WHEN v::text ~ '^-?[0-9]+$' THEN 'i' ELSE 'r' END || v::text
    WHEN 'boolean' THEN U&'\FFFF' || CASE WHEN v::text = 'true' THEN 'i1' ELSE 'i0' END
    WHEN 'null' THEN NULL
    ELSE original::text END
$$;
CREATE OR REPLACE FUNCTION sl_json_extract_slow(doc text, path text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE escaped text;
BEGIN
  escaped := replace(doc, U&'\FFFF', U&'\FFFF\FFFF');
  escaped := regexp_replace(escaped, '(?<!\\)((?:\\\\)*)\\u[fF]{4}', '\1\\uffff\\uffff', 'g');
  escaped := regexp_replace(escaped, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\uffff0', 'g');
  RETURN sl_json_value((escaped::json) #> sl_json_path(path), (doc::json) #> sl_json_path(path));
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN strpos(doc, '\u') = 0 AND strpos(doc, U&'\FFFF') = 0
      THEN sl_json_value((doc::json) #> sl_json_path(path), (doc::json) #> sl_json_path(path))
    WHEN strpos(doc, U&'\FFFF') > 0 OR doc ~ '\\u(0000|[dD][89a-fA-F]|[fF]{4})'
      THEN sl_json_extract_slow(doc, path)
    ELSE sl_json_value((doc::json) #> sl_json_path(path), (doc::json) #> sl_json_path(path)) END
$$;
CREATE OR REPLACE FUNCTION json_type(doc text, path text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT sl_json_type((doc::json) #> sl_json_path(path)) $$;
CREATE OR REPLACE FUNCTION json_each(doc text, path text)
RETURNS TABLE (key text, value text, type text, id bigint)
LANGUAGE sql IMMUTABLE AS $$
  SELECT e.key, sl_json_value(e.value, e.value), sl_json_type(e.value), e.n
  FROM (SELECT (doc::json) #> sl_json_path(path) AS v) AS found,
       json_each(CASE WHEN json_typeof(found.v) = 'object' THEN found.v END) WITH ORDINALITY AS e(key, value, n)
  UNION ALL
  SELECT (e.n - 1)::text, sl_json_value(e.value, e.value), sl_json_type(e.value), e.n
  FROM (SELECT (doc::json) #> sl_json_path(path) AS v) AS found,
       json_array_elements(CASE WHEN json_typeof(found.v) = 'array' THEN found.v END) WITH ORDINALITY AS e(value, n)
$$;
CREATE OR REPLACE FUNCTION json_valid(doc text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  PERFORM doc::json;
  RETURN true;
EXCEPTION WHEN others THEN
  RETURN false;
END $$;
CREATE OR REPLACE FUNCTION instr(haystack text, needle text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT strpos(haystack, needle) $$;
CREATE OR REPLACE FUNCTION sl_rowid(tbl text, col text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE found bigint;
BEGIN
  EXECUTE format('SELECT coalesce(max(%I), 0) + 1 FROM %I', col, tbl) INTO found;
  RETURN found;
END $$;
CREATE OR REPLACE VIEW sqlite_master AS
  SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'i' THEN 'index' ELSE 'table' END::text AS type,
         c.relname::text AS name, coalesce(t.relname, c.relname)::text AS tbl_name,
         CASE c.relkind WHEN 'v' THEN pg_get_viewdef(c.oid) END AS sql
  FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid
  WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'i')
    AND c.relname <> 'sqlite_master'
  UNION ALL
  SELECT 'trigger', g.tgname::text, c.relname::text, pg_get_triggerdef(g.oid)
  FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
  WHERE c.relnamespace = current_schema()::regnamespace AND NOT g.tgisinternal AND g.tgenabled <> 'D';
"""

REFUSE_CHANGE = """
BEGIN
  RAISE EXCEPTION 'studyledger events are append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
END """
CHECK_APPEND = """
DECLARE low bigint; high bigint; added bigint; before bigint;
BEGIN
  SELECT min(seq), max(seq), count(*) INTO low, high, added FROM new_rows;
  IF added > 0 THEN
    SELECT coalesce(max(seq), 0) INTO before FROM events WHERE seq < low;
    IF low <> before + 1 OR high - low + 1 <> added OR EXISTS (SELECT 1 FROM events WHERE seq > high) THEN
      RAISE EXCEPTION 'studyledger events are append-only: an INSERT must add the next seq with a new event id'
        USING ERRCODE = 'restrict_violation';
    END IF;
  END IF;
  RETURN NULL;
END """
"""The check behind SQLite's events_append_only trigger, once per statement (a COPY of
5,000 rows costs three index lookups): the new rows must be the next seqs, contiguous.
Ids are kept unique by the UNIQUE constraint, and PostgreSQL has no INSERT OR REPLACE."""
TRIGGER_FUNCTIONS = {"sl_refuse_change": REFUSE_CHANGE, "sl_check_append": CHECK_APPEND}

TRIGGER_DDL = {
    "events_refuse_update": "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events "
                            "FOR EACH ROW EXECUTE FUNCTION sl_refuse_change()",
    "events_refuse_delete": "CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events "
                            "FOR EACH ROW EXECUTE FUNCTION sl_refuse_change()",
    "events_refuse_truncate": "CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events "
                              "FOR EACH STATEMENT EXECUTE FUNCTION sl_refuse_change()",
    "events_append_only": "CREATE TRIGGER events_append_only AFTER INSERT ON events "
                          "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sl_check_append()",
}
"""Written as PostgreSQL prints them back (``pg_get_triggerdef``), so verify can compare."""


_EVENTS_DEFINITION = """SELECT
  (SELECT string_agg(format('%I %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                            CASE WHEN a.attcollation <> t.typcollation THEN ' COLLATE ' || quote_ident(c.collname) END,
                            CASE WHEN a.attnotnull THEN ' NOT NULL' END), ', ' ORDER BY a.attnum)
   FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_collation c ON c.oid = a.attcollation
   WHERE a.attrelid = to_regclass('events') AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT string_agg(pg_get_constraintdef(oid), ', ' ORDER BY pg_get_constraintdef(oid))
   FROM pg_constraint WHERE conrelid = to_regclass('events'))"""
PG_EVENTS_TABLE = (
    'events (seq bigint NOT NULL, event_id text COLLATE "C" NOT NULL, kind text COLLATE "C" NOT NULL, '
    'study_id text COLLATE "C", run_id text COLLATE "C", occurred_at text COLLATE "C", '
    'recorded_at text COLLATE "C" NOT NULL, source text COLLATE "C" NOT NULL, body text COLLATE "C" NOT NULL, '
    'chain text COLLATE "C" NOT NULL) CHECK ((length(chain) = 64)), PRIMARY KEY (seq), UNIQUE (event_id)'
)
"""What :meth:`PostgresStore.events_definition` gives for the table :data:`EVENTS_DDL` creates."""


def _trigger_definition(ddl: str, body: str) -> str:
    """What verify compares for one trigger: its DDL and its function's code, spaces folded."""
    return " ".join(f"{ddl} AS {body}".split())


def _function_ddl(name: str, body: str) -> str:
    return f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$"


TRIGGER_DEFINITIONS = {name: _trigger_definition(ddl, TRIGGER_FUNCTIONS[ddl.rsplit(" ", 1)[1].removesuffix("()")])
                       for name, ddl in TRIGGER_DDL.items()}


def escape_text(value: str) -> str:
    """Text PostgreSQL can store: NUL and the escape mark escaped (see :data:`_MARK`)."""
    if "\x00" in value or _MARK in value:
        return value.replace(_MARK, _MARK + _MARK).replace("\x00", _MARK + "0")
    return value


def unescape_text(value: str) -> str:
    """The text :func:`escape_text` was given."""
    return _UNESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), value) if _MARK in value else value


def _value(value: str) -> str | int | float:
    """A text the server returned, as SQLite would return it: unescaped, or the number
    json_extract marked as one."""
    if value[:1] == _MARK and value[1:2] in _NUMBERS:
        return _NUMBERS[value[1]](value[2:])
    return unescape_text(value)


_NUMBERS: dict[str, type[int] | type[float]] = {"i": int, "r": float}


# -- SQLite's dialect -> PostgreSQL's ------------------------------------------------------

_TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|\?|%|\w+|\s+|.""", re.DOTALL)
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+(TEMP\s+|TEMPORARY\s+)?TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\((.*)\)\s*$",
                           re.IGNORECASE | re.DOTALL)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)\s*(?:\(([^)]*)\))?\s*VALUES\s*\(([\s?,]*)\)",
                     re.IGNORECASE)
_CONSTRAINT_WORDS = {"PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "CONSTRAINT"}
_COLUMN_WORDS = {"PRIMARY", "NOT", "NULL", "DEFAULT", "UNIQUE", "CHECK", "REFERENCES", "COLLATE"}
_TYPES = {"INTEGER": "BIGINT", "INT": "BIGINT", "TEXT": 'TEXT COLLATE "C"', "REAL": "DOUBLE PRECISION",
          "BLOB": "BYTEA"}


class Statement(NamedTuple):
    """One SQLite statement as the connection runs it on PostgreSQL."""

    kind: str  # "sql", "begin", "commit", "rollback", "data_version", "create_table", "table_info"
    text: str
    table: str | None = None  # the table an INSERT writes or a CREATE TABLE creates
    columns: tuple[str, ...] | None = None  # an INSERT's named columns (None: all, in order)
    deferrable: bool = False  # a write that answers nothing: may wait for the next round trip
    copy: str | None = None  # the table of a plain INSERT of placeholders, which COPY can do
    if_not_exists: bool = False


_CONDITION_BEFORE = {"WHERE", "AND", "OR", "NOT", "ON", "HAVING"}
_CONDITION_AFTER = {"", "AND", "OR", "ORDER", "GROUP", "LIMIT", "HAVING", ")", ";"}


def _placeholders(text: str) -> str:
    """``?`` -> ``%s``, ``%`` -> ``%%`` (literals too), the column name ``offset`` quoted,
    and a bare ``1`` or ``0`` standing for a condition (``WHERE 1``) as TRUE or FALSE.

    ``offset`` is a keyword only right after ``LIMIT <value>``; anywhere else in the
    statements studyledger writes it names the column (reserved in PostgreSQL).
    """
    tokens = _TOKENS.findall(text)
    significant = [i for i, token in enumerate(tokens) if not token.isspace()]
    out = list(tokens)
    for place, i in enumerate(significant):
        token = tokens[i]
        before = [tokens[j].upper() for j in significant[max(0, place - 2):place]]
        after = tokens[significant[place + 1]].upper() if place + 1 < len(significant) else ""
        if token == "?":
            out[i] = "%s"
        elif token in ("events_json", "events_plain"):  # the events table holds the canonical values here
            out[i] = "events"
        elif "%" in token:  # psycopg reads % everywhere, in string literals too
            out[i] = token.replace("%", "%%")
        elif token.lower() == "offset" and not (len(before) == 2 and before[0] == "LIMIT"):
            out[i] = '"offset"'
        elif token in ("0", "1") and before[-1:] and before[-1] in _CONDITION_BEFORE and after in _CONDITION_AFTER:
            out[i] = "TRUE" if token == "1" else "FALSE"
    return "".join(out)


def _quoted(column: str) -> str:
    return f'"{column}"'


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for token in _TOKENS.findall(text):
        depth += token == "("
        depth -= token == ")"
        if token == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(token)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _create_table(match: re.Match[str]) -> Statement:
    """SQLite column types in PostgreSQL's words; a rowid column gets its trigger."""
    temporary, if_not_exists, table, body = match.group(1), match.group(2), match.group(3), match.group(4)
    columns = []
    for definition in _split_top_level(body):
        words = definition.split()
        if words[0].upper() in _CONSTRAINT_WORDS:
            columns.append(definition)
            continue
        name, rest = words[0], words[1:]
        upper = [w.upper() for w in rest]
        if not rest or upper[0] in _COLUMN_WORDS:
            columns.append(" ".join([name, "JSON", *rest]))  # untyped: keeps int, float or text as given
            continue
        if upper[:3] == ["INTEGER", "PRIMARY", "KEY"]:
            if "AUTOINCREMENT" not in upper:
                # A rowid: when omitted SQLite gives max + 1 (never a sequence's gaps), so
                # ids in rebuilt and stored tables agree even after rollbacks.
                rest.append(f"DEFAULT sl_rowid('{table}', '{name}')")
            rest = [w for w in rest if w.upper() != "AUTOINCREMENT"]
        rest[0] = _TYPES.get(rest[0].upper(), rest[0])
        columns.append(" ".join([name, *rest]))
    text = f"CREATE {'TEMPORARY ' if temporary else ''}TABLE {table} ({', '.join(columns)})"
    return Statement("create_table", _placeholders(text), table, if_not_exists=bool(if_not_exists))


@lru_cache(maxsize=1024)
def translate(text: str) -> Statement:
    """How the connection runs one statement of SQLite's dialect (cached per text)."""
    words = text.split()
    upper = [w.upper() for w in words[:3]]
    if upper and upper[0] == "BEGIN" and upper[1:] in ([], ["DEFERRED"], ["TRANSACTION"]):
        return Statement("begin", "BEGIN ISOLATION LEVEL REPEATABLE READ")
    if upper in (["COMMIT"], ["END"], ["COMMIT", "TRANSACTION"]):
        return Statement("commit", "COMMIT")
    if upper in (["ROLLBACK"], ["ROLLBACK", "TRANSACTION"]):
        return Statement("rollback", "ROLLBACK")
    if upper[:1] == ["PRAGMA"]:
        pragma = " ".join(words[1:]).lower()
        if pragma == "data_version":
            return Statement("data_version", "")
        info = re.fullmatch(r"table_info\s*\(\s*(\w+)\s*\)", pragma)
        if info is not None:
            return Statement("table_info", _TABLE_INFO, info.group(1))
        raise sqlite3.OperationalError(f"{text.strip()}: a SQLite PRAGMA, not available on PostgreSQL")
    created = _CREATE_TABLE.match(text)
    if created is not None:
        return _create_table(created)
    inserted = _INSERT.match(text)
    if inserted is not None:
        names = tuple(n.strip().strip('"') for n in inserted.group(2).split(",")) if inserted.group(2) else None
        plain = _answers_nothing(words) and inserted.end() == len(text.rstrip().rstrip(";"))
        return Statement("sql", _placeholders(text), inserted.group(1), names, _answers_nothing(words),
                         inserted.group(1) if plain else None)
    return Statement("sql", _placeholders(text), deferrable=_answers_nothing(words))


_TABLE_INFO = """SELECT row_number() OVER (ORDER BY a.attnum) - 1 AS cid, a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull::int AS notnull,
       pg_get_expr(d.adbin, d.adrelid) AS dflt_value,
       coalesce(array_position(i.indkey::int2[], a.attnum), 0) AS pk
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"""
"""``PRAGMA table_info(t)``'s rows: cid, name, type, notnull, dflt_value, pk (position in the key)."""


def _answers_nothing(words: list[str]) -> bool:
    upper = [w.upper() for w in words]
    return bool(upper) and upper[0] in ("INSERT", "UPDATE", "DELETE") and "RETURNING" not in upper


def _bind(value: Any) -> Any:
    """A parameter as SQLite would take it: 64-bit integers, booleans as 0/1, escaped text."""
    kind = value.__class__
    if kind is str:
        return escape_text(value)
    if kind is int:
        if not INT64[0] <= value <= INT64[1]:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return value
    if kind is bool:
        return int(value)
    if value is None or kind is float or kind is bytes:
        return value
    if isinstance(value, str):
        return escape_text(str(value))
    if isinstance(value, int):
        return _bind(int(value))
    if isinstance(value, float):
        return float(value)
    raise sqlite3.ProgrammingError(f"Error binding parameter: type '{kind.__name__}' is not supported")


def _row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A result row as SQLite would give it: text unescaped, booleans as 0/1."""
    for value in row:
        kind = value.__class__
        if kind is bool or (kind is str and _MARK in value):
            return tuple(_value(v) if v.__class__ is str else int(v) if v.__class__ is bool else v
                         for v in row)
    return row


class _Held:
    """A write held back until the next round trip; its row count once it was sent."""

    __slots__ = ("rowcount",)

    def __init__(self) -> None:
        self.rowcount: int | None = None


class PgCursor(sqlite3.Cursor):
    """The rows of one statement, read the way a ``sqlite3.Cursor`` is read.

    ``rows`` is a list, or a generator fetching from a server-side cursor as it is read.
    """

    def __init__(self, connection: PgConnection, rows: Iterable[tuple[Any, ...]],
                 description: tuple[tuple[Any, ...], ...] | None, rowcount: int | _Held) -> None:
        super().__init__(connection)
        self._connection = connection
        self._rows = iter(rows)
        self._description = description
        self._rowcount = rowcount

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        if isinstance(self._rowcount, _Held):  # held back: send it to learn its count
            if self._rowcount.rowcount is None:
                self._connection.flush()
            return -1 if self._rowcount.rowcount is None else self._rowcount.rowcount
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        return None  # write INSERT ... RETURNING id: PostgreSQL has no rowid to report

    def fetchone(self) -> Any:
        return next(self._rows, None)

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        return list(islice(self._rows, self.arraysize if size is None else size))

    def __iter__(self) -> PgCursor:
        return self

    def __next__(self) -> Any:
        return next(self._rows)

    def close(self) -> None:
        self._rows = iter(())


class PgConnection(sqlite3.Connection):
    """A connection to a ledger's PostgreSQL database that reads like a SQLite one.

    Args:
        url: The full URL (with its password, if any).
        readonly: Every transaction is read-only (``default_transaction_read_only``).
        display: How the URL is shown in messages (without the password).
    """

    def __init__(self, url: str, *, readonly: bool, display: str) -> None:
        super().__init__(":memory:", check_same_thread=False)
        super().close()  # only the type is SQLite's; what is not implemented here fails loudly
        self.url = url
        self.readonly = readonly
        self.display = display
        self._pg: psycopg.Connection[tuple[Any, ...]] | None = None
        self._lost_in_transaction = False
        self._wrote = False
        self._listening = False
        self._version = 0
        self._json_columns: dict[str, tuple[list[str], set[int]]] = {}
        self._snapshot = False  # in a read snapshot begun by "BEGIN" (REPEATABLE READ)
        self._writing = False  # in a write transaction begun by begin_write
        self._queued: list[tuple[str, list[tuple[Any, ...]], _Held]] = []
        self._cursor_names = count(1)
        self._connect(FIRST_CONNECT_SECONDS)

    # -- connecting -------------------------------------------------------------------

    def _connect(self, patience: float) -> psycopg.Connection[tuple[Any, ...]]:
        """Connect, retrying with jittered exponential backoff for up to ``patience`` seconds.

        A server that is down, restarting or recovering refuses connections for a moment;
        a missing database or a refused password does not get better and fails at once.
        """
        params = conninfo_to_dict(self.url)
        params.setdefault("application_name", "studyledger")
        params.setdefault("connect_timeout", 10)
        conninfo = make_conninfo("", **params)
        deadline = time.monotonic() + patience
        delay = 0.05
        while True:
            try:
                pg = psycopg.connect(conninfo, autocommit=True)
                break
            except psycopg.OperationalError as exc:
                # psycopg's first line says what failed, the next ones hint why: one line, both.
                message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                message = message or type(exc).__name__
                if "does not exist" in message and "database" in message:
                    raise LedgerMissingError(f"{self.display}: no such database ({message}); "
                                             "create it with `createdb` first") from None
                if "password" in message or "authentication" in message or "role" in message:
                    raise LedgerPermissionError(f"{self.display}: the server refused the login ({message})") from None
                if time.monotonic() + delay > deadline:
                    raise LedgerConnectionLost(f"{self.display}: cannot reach the server ({message})") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
        settings = [f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'"]
        if self.readonly:
            settings.append("SET default_transaction_read_only = on")
        if self._listening:
            settings.append(f"LISTEN {CHANNEL}")
            self._version += 1  # notifications sent while disconnected are lost: assume a change
        pg.execute("; ".join(settings))
        self._pg = pg
        self._snapshot = self._writing = False
        self._queued.clear()
        return pg

    def _live(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The psycopg connection, reconnected when it broke between transactions.

        Raises:
            LedgerConnectionLost: it broke inside a transaction that has not ended yet:
                carrying on would run the rest outside it.
        """
        if self._lost_in_transaction:
            raise LedgerConnectionLost(f"{self.display}: the connection was lost in this transaction")
        pg = self._pg
        if pg is None or pg.closed or pg.broken:
            return self._connect(RECONNECT_SECONDS)
        return pg

    @property
    def pg(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The live psycopg connection (for the store's COPY and array queries), with every
        queued write sent."""
        pg = self._live()
        self._flush(pg)
        return pg

    @property
    def in_transaction(self) -> bool:
        if self._lost_in_transaction:
            return True
        pg = self._pg
        return pg is not None and not pg.closed and pg.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None

    # -- errors -----------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Raise psycopg's errors as sqlite3's, and the ledger's own where a user can act."""
        in_transaction = self.in_transaction  # afterwards a broken connection cannot say
        try:
            yield
        except psycopg.Error as exc:
            raise self._translated(exc, in_transaction) from exc

    def _translated(self, exc: psycopg.Error, in_transaction: bool) -> Exception:
        pg = self._pg
        message = (exc.diag.message_primary or str(exc)).strip() if hasattr(exc, "diag") else str(exc)
        if pg is None or pg.closed or pg.broken:
            if pg is not None:
                pg.close()
            self._pg = None
            self._lost_in_transaction = in_transaction
            return LedgerConnectionLost(
                f"{self.display}: lost the connection to the server ({message}); what was committed is "
                "kept and what was in flight is not: run the command again")
        if isinstance(exc, pgerrors.LockNotAvailable):
            return LedgerBusyError(f"{self.display}: another writer held the ledger for {LOCK_TIMEOUT}; try again")
        if isinstance(exc, pgerrors.InsufficientPrivilege):
            return LedgerPermissionError(f"{self.display}: {message} (the server role "
                                         f"{pg.info.user!r} lacks a privilege this needs)")
        if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
            return LedgerReadOnlyError(f"{self.display}: opened read-only; this needs a writable ledger")
        for theirs, ours in ((psycopg.IntegrityError, sqlite3.IntegrityError), (psycopg.DataError, sqlite3.DataError),
                             (psycopg.NotSupportedError, sqlite3.NotSupportedError),
                             (psycopg.InternalError, sqlite3.InternalError),
                             (psycopg.InterfaceError, sqlite3.InterfaceError)):
            if isinstance(exc, theirs):
                return ours(message)
        return sqlite3.OperationalError(message)  # SQLite's class for bad SQL and missing tables too

    # -- statements -------------------------------------------------------------------

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        statement = translate(sql)
        if statement.kind == "data_version":
            return PgCursor(self, [(self.data_version(),)], (("data_version",) + (None,) * 6,), -1)
        if statement.kind in ("commit", "rollback") and self._lost_in_transaction:
            self._lost_in_transaction = False
            if statement.kind == "commit":
                raise LedgerConnectionLost(f"{self.display}: the connection was lost in this transaction")
            return PgCursor(self, [], None, -1)
        pg = self._live()
        if statement.kind == "table_info":
            parameters = (statement.table,)
        if statement.kind == "create_table" and statement.if_not_exists and self._exists(pg, statement.table):
            return PgCursor(self, [], None, -1)  # SQLite needs no CREATE privilege to find it there
        params = self._params(pg, statement, parameters)
        reading = statement.kind == "table_info" or (
            statement.kind == "sql" and statement.text.lstrip()[:6].upper() == "SELECT")
        if statement.deferrable and self._writing:
            held = _Held()
            self._queued.append((statement.text, [params], held))
            self._wrote = True
            return PgCursor(self, [], None, held)
        if reading and self._snapshot and pg.info.transaction_status == TransactionStatus.INTRANS:
            return self._stream(pg, statement.text, params)
        with self.errors():
            cursor = self._flush(pg, (statement.text, params))
            description = _description(cursor)
            rows = [_row(r) for r in cursor.fetchall()] if description else []
        if statement.kind == "create_table":
            self._json_columns.clear()
        elif statement.kind in ("begin", "commit", "rollback"):
            self._snapshot = statement.kind == "begin"
        if not reading:
            self._wrote = True
        return PgCursor(self, rows, description, cursor.rowcount)

    def _stream(self, pg: psycopg.Connection[tuple[Any, ...]], text: str, params: tuple[Any, ...]) -> PgCursor:
        """A SELECT in a read snapshot (an audit, an export) through a server-side cursor, so
        a million rows are fetched a few thousand at a time, as SQLite steps through them,
        while other statements may run between fetches."""
        with self.errors():
            cursor = pg.cursor(name=f"sl_{next(self._cursor_names)}")
            cursor.itersize = STREAM_ROWS
            cursor.execute(text, params)

        def rows() -> Iterator[tuple[Any, ...]]:
            with self.errors():
                while batch := cursor.fetchmany(STREAM_ROWS):
                    yield from (_row(row) for row in batch)
                cursor.close()

        return PgCursor(self, rows(), _description(cursor), -1)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        statement = translate(sql)
        pg = self._live()
        rows = [self._params(pg, statement, item) for item in parameters]
        if not rows:
            return PgCursor(self, [], None, 0)
        self._wrote = True
        if statement.deferrable and self._writing and len(rows) < HOLD_ROWS:
            # A few rows (the fold's per-run rewrites) wait for the next round trip too.
            held = _Held()
            self._queued.append((statement.text, rows, held))
            return PgCursor(self, [], None, held)
        self._flush(pg)
        if statement.copy is not None:
            # A plain INSERT of many rows: COPY stores them two to three times faster.
            columns = statement.columns or tuple(self._columns(pg, statement.copy)[0])
            with self.errors(), pg.cursor().copy(
                    f"COPY {statement.copy} ({', '.join(_quoted(c) for c in columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return PgCursor(self, [], None, len(rows))
        with self.errors():
            cursor = pg.cursor()
            cursor.executemany(statement.text, rows)
        return PgCursor(self, [], None, cursor.rowcount)

    def _params(self, pg: psycopg.Connection[tuple[Any, ...]], statement: Statement,
                parameters: Any) -> tuple[Any, ...]:
        values = tuple(_bind(value) for value in parameters)
        if statement.table is None or statement.kind != "sql":
            return values
        names, positions = self._columns(pg, statement.table)
        if not positions:
            return values
        order = range(len(names)) if statement.columns is None else [names.index(c) for c in statement.columns]
        return tuple(Json(value) if value is not None and column in positions else value
                     for value, column in zip(values, order, strict=False))

    def _columns(self, pg: psycopg.Connection[tuple[Any, ...]], table: str) -> tuple[list[str], set[int]]:
        """A table's column names and which of them are untyped (JSON) ones, cached."""
        known = self._json_columns.get(table)
        if known is None:
            with self.errors():
                rows = pg.execute(
                    "SELECT attname, atttypid = 'json'::regtype FROM pg_attribute WHERE attrelid = "
                    "to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,)).fetchall()
            known = ([name for name, _ in rows], {i for i, (_, is_json) in enumerate(rows) if is_json})
            self._json_columns[table] = known
        return known

    @staticmethod
    def _exists(pg: psycopg.Connection[tuple[Any, ...]], table: str | None) -> bool:
        row = pg.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])

    def run(self, text: str) -> None:
        """Run trusted statements of PostgreSQL's own dialect (several, separated by ``;``)."""
        pg = self.pg
        with self.errors():
            pg.execute(text)

    def flush(self) -> None:
        """Send the queued writes now, so their errors, if any, are raised here."""
        self._flush(self._live())

    @overload
    def _flush(self, pg: psycopg.Connection[tuple[Any, ...]]) -> None: ...

    @overload
    def _flush(self, pg: psycopg.Connection[tuple[Any, ...]],
               then: tuple[str, tuple[Any, ...]]) -> psycopg.Cursor[tuple[Any, ...]]: ...

    def _flush(self, pg: psycopg.Connection[tuple[Any, ...]],
               then: tuple[str, tuple[Any, ...]] | None = None) -> psycopg.Cursor[tuple[Any, ...]] | None:
        """Send queued writes, and ``then`` a statement, in one round trip; return its cursor.

        In a write transaction, an INSERT, UPDATE or DELETE without RETURNING answers nothing
        the caller reads, so it waits in :attr:`_queued` and goes out with the next statement
        that does (a SELECT, a COPY, the commit, or :meth:`flush`, which the store calls at
        the end of every append so a failing write is raised by the append that caused it).
        The projection fold issues hundreds of such writes per batch, all under the lock,
        each followed by the next run's lookup: one round trip instead of two.
        """
        queued, self._queued = self._queued, []
        if not queued:
            return None if then is None else pg.execute(*then)
        with self.errors(), pg.pipeline():
            sent = [(self._send(pg, text, rows), held) for text, rows, held in queued]
            last = None if then is None else pg.execute(*then)
        for cursor, held in sent:
            held.rowcount = cursor.rowcount
        return last

    @staticmethod
    def _send(pg: psycopg.Connection[tuple[Any, ...]], text: str,
              rows: list[tuple[Any, ...]]) -> psycopg.Cursor[tuple[Any, ...]]:
        if len(rows) == 1:
            return pg.execute(text, rows[0])
        cursor = pg.cursor()
        cursor.executemany(text, rows)
        return cursor

    # -- transactions -----------------------------------------------------------------

    def begin_write(self) -> None:
        """Start a write transaction holding the ledger's write lock (READ COMMITTED, so
        the head read after the lock is the latest committed one)."""
        self._wrote = False
        self.run(f"BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; "
                 f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
        self._writing = True

    def commit_write(self) -> None:
        """Commit, telling listeners (the dashboard) when anything was written."""
        notify = f"SELECT pg_notify('{CHANNEL}', ''); " if self._wrote else ""
        try:
            self.run(notify + "COMMIT")
            self._writing = False
        except LedgerConnectionLost:
            self._writing = False
            self._lost_in_transaction = False
            raise LedgerConnectionLost(
                f"{self.display}: lost the connection while committing; the transaction may or may not "
                "have been kept (running the same appends again stores them once)") from None

    def rollback_write(self) -> None:
        """Roll back; after a lost connection there is nothing left to roll back."""
        self._queued.clear()
        self._writing = False
        if self._lost_in_transaction or self._pg is None or self._pg.broken:
            self._lost_in_transaction = False
            return
        if self.in_transaction:
            self.run("ROLLBACK")

    # -- change signal ----------------------------------------------------------------

    def data_version(self) -> int:
        """A number that moves after another connection commits a write (``PRAGMA data_version``).

        The first call LISTENs; later calls only look at what the socket has received, so
        an idle dashboard costs the server nothing.
        """
        pg = self._live()
        if not self._listening:
            self._listening = True
            self.run(f"LISTEN {CHANNEL}")
            return self._version
        if self.in_transaction:
            return self._version
        try:
            with self.errors():
                if any(True for _ in pg.notifies(timeout=0)):
                    self._version += 1
        except LedgerConnectionLost:
            self._live()  # reconnects, LISTENs again and counts the gap as a change
        return self._version


def _description(cursor: psycopg.Cursor[Any] | psycopg.ServerCursor[Any]) -> tuple[tuple[Any, ...], ...] | None:
    """The DB-API description (names only, as SQLite gives), read from the result itself:
    psycopg's Column objects cost more than the query for a one-row lookup."""
    result = cursor.pgresult
    if result is None or not result.nfields:
        return None
    return tuple((_name(result.fname(i)), None, None, None, None, None, None) for i in range(result.nfields))


@lru_cache(maxsize=512)
def _name(raw: bytes | None) -> str:
    return (raw or b"").decode()


class PostgresStore(Store):
    """A ledger in a PostgreSQL database (tables in the connection's current schema).

    Args:
        target: The database's URL.
        create: Create the schema in an empty database. When false, an empty database
            raises :class:`NotALedgerError`.
        readonly: Never write: every transaction is read-only.
    """

    backend = "postgresql"
    events_ddl = PG_EVENTS_TABLE
    trigger_ddl = TRIGGER_DEFINITIONS

    def __init__(self, target: DatabaseURL, *, create: bool = True, readonly: bool = False) -> None:
        self.path: DatabaseURL = target
        self.readonly = readonly
        self.create = create and not readonly
        self.read_uri = target.url
        self.conn: PgConnection = PgConnection(target.url, readonly=readonly, display=str(target))
        try:
            self._check_or_create()
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def flush(self) -> None:
        self.conn.flush()

    # -- schema -----------------------------------------------------------------------

    def tables(self) -> set[str]:
        rows = self.conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {row[0] for row in rows}

    def _check_or_create(self) -> None:
        tables = self.tables()
        if "ledger_meta" not in tables:
            if tables:
                raise NotALedgerError(f"{self.path}: not a studyledger ledger (it has tables "
                                      f"{', '.join(sorted(tables)[:5])} but no ledger_meta)")
            if not self.create:
                raise NotALedgerError(f"{self.path}: not a studyledger ledger (an empty database, not a "
                                      "ledger yet); create one with `studyledger init`")
            self._create()
            return
        version = self._check_meta()
        if version < 2:  # every PostgreSQL ledger was created at version 2 or later
            raise NotALedgerError(f"{self.path}: unknown ledger schema version {version}")

    def _create(self) -> None:
        """Create the schema, once even when several processes open an empty database at once."""
        with self.transaction():
            if "ledger_meta" in self.tables():  # another process created it while we waited
                return
            self.conn.run(SCHEMA_FUNCTIONS)
            self.conn.run("; ".join(_function_ddl(name, body) for name, body in TRIGGER_FUNCTIONS.items()))
            self.conn.execute(META_DDL)
            self.conn.execute(EVENTS_DDL)
            self.conn.run("; ".join(TRIGGER_DDL.values()))
            self.conn.executemany("INSERT INTO ledger_meta(key, value) VALUES (?, ?)", self._initial_meta())
            self.created = True

    def events_definition(self) -> str | None:
        """The events table as the catalogue describes it: columns (type, collation, NOT
        NULL) and constraints, in a fixed order."""
        row = self.conn.execute(_EVENTS_DEFINITION).fetchone()
        return None if row is None or row[0] is None else f"events ({row[0]}) {row[1] or ''}".strip()

    def events_triggers(self) -> dict[str, str]:
        """Every enabled trigger on ``events`` (a disabled one protects nothing), by name, with
        its definition and its function's code (a function replaced by a no-op would leave
        the trigger in place but do nothing)."""
        rows = self.conn.execute(
            "SELECT t.tgname, pg_get_triggerdef(t.oid), f.prosrc, current_schema() FROM pg_trigger t "
            "JOIN pg_proc f ON f.oid = t.tgfoid WHERE t.tgrelid = to_regclass('events') AND NOT t.tgisinternal "
            "AND t.tgenabled <> 'D'")
        return {name: _trigger_definition(ddl.replace(f" {schema}.", " "), body) for name, ddl, body, schema in rows}

    def create_roles(self, writer: str, reader: str) -> None:
        """Create (when missing) and grant the writer and reader roles; run as the owner.

        The writer may append events (INSERT and SELECT on ``events``, nothing more) and
        maintain the derived tables and ingest offsets; the reader may only SELECT. Both are
        NOLOGIN group roles: a lab grants them to login roles (``GRANT writer TO alice``).
        Tables created later by the owner (a projection rebuild) get the same grants.
        """
        ident = pgsql.Identifier
        with self.transaction():
            pg = self.conn.pg
            with self.conn.errors():
                for role in (writer, reader):
                    exists = pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                    if exists is None:
                        pg.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(ident(role)))
                schema = pg.execute("SELECT current_schema()").fetchone()
                database = pg.execute("SELECT current_database()").fetchone()
                assert schema is not None and database is not None
                both = pgsql.SQL(", ").join([ident(writer), ident(reader)])
                statements = [
                    "GRANT CONNECT ON DATABASE {db} TO {both}",
                    "GRANT USAGE ON SCHEMA {schema} TO {both}",
                    "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM PUBLIC",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {both}",
                    # The fold rewrites derived rows (a run's status anomalies are judged
                    # again as reports arrive), so a writer may change the derived tables;
                    # the events only grow, and the ledger's own settings are the owner's.
                    "GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {writer}",
                    "REVOKE INSERT, UPDATE, DELETE ON ledger_meta FROM {writer}",
                    "REVOKE UPDATE, DELETE ON events FROM {writer}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {both}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT INSERT, UPDATE, DELETE ON TABLES TO {writer}",
                ]
                for text in statements:
                    pg.execute(pgsql.SQL(text).format(
                        db=ident(database[0]), schema=ident(schema[0]), both=both, writer=ident(writer)))
            self.set_meta("postgres_roles", f"{writer} {reader}")

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the ledger's advisory lock; nested use joins it.

        Raises:
            LedgerReadOnlyError: the store was opened read-only.
            LedgerBusyError: another writer held the lock past ``lock_timeout``.
            LedgerConnectionLost: the connection dropped (see :meth:`Store.atomically`).
        """
        if self.readonly:
            raise LedgerReadOnlyError(f"{self.path}: opened read-only; this needs a writable ledger")
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.begin_write()
        try:
            yield self.conn
        except BaseException:
            self.conn.rollback_write()
            raise
        else:
            self.conn.commit_write()

    # -- writing ----------------------------------------------------------------------

    def existing_bodies(self, event_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        if not event_ids:
            return {}
        pg = self.conn.pg
        with self.conn.errors():
            rows = pg.execute("SELECT event_id, kind, body FROM events WHERE event_id = ANY(%s)",
                              (list(event_ids),)).fetchall()
        return {event_id: (kind, unescape_text(body)) for event_id, kind, body in rows}

    def _insert(self, rows: list[StoredEvent]) -> None:
        """Insert the rows: the connection sends a batch's plain INSERT as one COPY (about
        twice as fast as row inserts), its payload built before the COPY starts."""
        self.conn.executemany(
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})",
            [(r.seq, r.event_id, r.kind, r.study_id, r.run_id, r.occurred_at, r.recorded_at, r.source, r.body,
              r.chain) for r in rows])


__all__ = ["PgConnection", "PostgresStore", "escape_text", "translate", "unescape_text"]
