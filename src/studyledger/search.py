"""Full-text search over every run: observations, rejected lines and run errors.

The index is a contentless SQLite FTS5 table keyed by event ``seq``: it holds the tokens
only, never a second copy of the text (the text stays in the event bodies, where snippets
are cut from). It is derived state like the projections but optional: a ledger nobody
searches never pays for it. It is built on first use (:func:`build`, one ``INSERT ...
SELECT`` over the events, run by SQLite's JSON functions without a Python loop) and from
then on every append folds its new events into it in the same transaction
(:func:`catch_up`, called by :meth:`Ledger.append`), so a search never misses an event a
reader can see. ``search_state`` remembers the last sequence indexed.

What is indexed, by event kind:

* ``observation_recorded``: its text, event type and tool name (kind ``observation``);
* ``line_rejected``: the reason and the raw line (kind ``rejection``);
* ``run_status_changed`` with an error, or to ``failed``: the error and reason (kind ``run_error``).

Both backends find the same words. SQLite's tokenizer splits text at anything that is not a
letter or digit and folds case and diacritics (``café`` is found by ``cafe``); PostgreSQL's
own parser splits by the server's locale (in the C locale ``“quoted”`` is one word) and
keeps diacritics, so on PostgreSQL the text is split and folded by :func:`words`, the same
tokenizer in Python, before the server indexes or queries it.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from .query import sql_limit
from .search_tokens import FOLD_FROM, FOLD_TO, REMOVED, SEPARATORS
from .store import is_sqlite

INDEX_TABLE = "search_index"
STATE_TABLE = "search_state"

KINDS = {"observation": "observation_recorded", "rejection": "line_rejected", "run_error": "run_status_changed"}
"""Search result kinds and the event kind each comes from."""

SNIPPET_WIDTH = 120
COUNT_CAP = 10_000
"""Hits are counted up to this many (a common word in a million rows is "10,000+")."""

_DDL = (
    # unicode61 folds case and diacritics; '-' '_' '.' '/' ':' separate tokens, so run ids,
    # paths and dotted names are found by their parts. words() is this tokenizer in Python.
    f"CREATE VIRTUAL TABLE {INDEX_TABLE} USING fts5("
    "body, event_type, tool, kind, content='', tokenize='unicode61 remove_diacritics 2')",
    f"CREATE TABLE {STATE_TABLE} (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)",
    f"INSERT INTO {STATE_TABLE} VALUES ('index', 0)",
)

_ROWS = """
SELECT seq,
       CASE kind
         WHEN 'observation_recorded' THEN coalesce(json_extract(body, '$.text'), '')
         WHEN 'line_rejected' THEN coalesce(json_extract(body, '$.reason'), '') || ' '
                                   || coalesce(json_extract(body, '$.raw'), '')
         ELSE coalesce(json_extract(body, '$.error'), '') || ' ' || coalesce(json_extract(body, '$.reason'), '')
       END,
       CASE kind WHEN 'observation_recorded' THEN json_extract(body, '$.event_type') END,
       CASE kind WHEN 'observation_recorded' THEN json_extract(body, '$.tool_name') END,
       CASE kind WHEN 'observation_recorded' THEN 'observation'
                 WHEN 'line_rejected' THEN 'rejection' ELSE 'run_error' END
FROM {events}
WHERE json_valid(body) -- a body only a raw writer stored may not be JSON
  AND (kind IN ('observation_recorded', 'line_rejected')
                   OR (kind = 'run_status_changed'
                       AND (json_extract(body, '$.error') IS NOT NULL OR json_extract(body, '$.status') = 'failed')))
"""
# The events after the last indexed one, each decoded once: on SQLite a subquery that is not
# flattened into the query above (OFFSET) runs as a co-routine, so a compressed body and its
# kind are decoded once per row rather than once per field read.
_SQLITE_ROWS = _ROWS.format(events="(SELECT seq, kind, body FROM events_json WHERE seq > ? LIMIT -1 OFFSET 0)")


def exists(conn: sqlite3.Connection) -> bool:
    """Whether this connection has a search index: the ledger's (built by a first search)
    or a temporary one (:func:`build_temporary`)."""
    if not is_sqlite(conn):  # PostgreSQL finds a temporary table first by name
        return bool(conn.execute("SELECT to_regclass(?) IS NOT NULL", (STATE_TABLE,)).fetchone()[0])
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ? UNION ALL "
                         "SELECT 1 FROM temp.sqlite_master WHERE name = ?", (STATE_TABLE, STATE_TABLE)).fetchone()
    return found is not None


def indexed_seq(conn: sqlite3.Connection) -> int:
    """The last event sequence in the index (0 when there is no index)."""
    if not exists(conn):
        return 0
    return int(conn.execute(f"SELECT last_seq FROM {STATE_TABLE} WHERE name = 'index'").fetchone()[0])


def is_current(conn: sqlite3.Connection) -> bool:
    """Whether the index exists, holds every event, and holds them as :func:`words` reads them."""
    head = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    return exists(conn) and indexed_seq(conn) == head and _folded(conn)


def _folded(conn: sqlite3.Connection) -> bool:
    """Whether a PostgreSQL index holds :func:`words` (one built before them holds the
    server's own words, and is built again by the next :func:`build`)."""
    if is_sqlite(conn):
        return True
    return conn.execute(f"SELECT 1 FROM {STATE_TABLE} WHERE name = 'words'").fetchone() is not None


def catch_up(conn: sqlite3.Connection) -> int:
    """Index the events after the last indexed one, if the ledger has an index.

    Call inside the transaction that appended them. Returns the number of events indexed.
    """
    if not exists(conn):
        return 0
    # One statement for both figures: each is a round trip on a server, after every append.
    last, head = conn.execute(f"SELECT last_seq, (SELECT coalesce(max(seq), 0) FROM events) FROM {STATE_TABLE} "
                              "WHERE name = 'index'").fetchone()
    if head <= last:
        return 0
    if is_sqlite(conn):
        added = conn.execute(f"INSERT INTO {INDEX_TABLE}(rowid, body, event_type, tool, kind) {_SQLITE_ROWS}",
                             (last,)).rowcount
    else:
        added = _catch_up_postgres(conn, last, head)
    conn.execute(f"UPDATE {STATE_TABLE} SET last_seq = ? WHERE name = 'index'", (head,))
    return added


def build(conn: sqlite3.Connection) -> int:
    """Create the index if missing (or built the old way) and bring it up to date (inside
    a write transaction)."""
    if exists(conn) and not _folded(conn):
        conn.execute(f"DROP TABLE {INDEX_TABLE}")
        conn.execute(f"DROP TABLE {STATE_TABLE}")
    if not exists(conn):
        for ddl in _DDL if is_sqlite(conn) else _PG_DDL:
            conn.execute(ddl)
    return catch_up(conn)


def build_temporary(conn: sqlite3.Connection) -> int:
    """Build (or catch up) an index in the connection's temporary database, for a ledger
    that cannot be written: a read-only file or folder, another user's ledger.

    The ledger stays untouched (its connection is still ``mode=ro``); the index lives in
    SQLite's temporary storage and goes with the connection, so every search through this
    connection finds every event, and the next process builds it again. Costs what a first
    search costs (one pass over the events).

    Returns:
        The number of events indexed.
    """
    if not is_sqlite(conn):
        return _build_temporary_postgres(conn)
    query_only = conn.execute("PRAGMA query_only").fetchone()[0]
    # query_only forbids writing the temporary database too; the ledger itself is still
    # protected by its read-only open.
    conn.execute("PRAGMA query_only = OFF")
    try:
        conn.execute("BEGIN")
        try:
            if not exists(conn):
                for ddl in _DDL:
                    conn.execute(ddl.replace("CREATE VIRTUAL TABLE ", "CREATE VIRTUAL TABLE temp.")
                                 .replace("CREATE TABLE ", "CREATE TABLE temp.")
                                 .replace("INSERT INTO ", "INSERT INTO temp."))
            added = catch_up(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute(f"PRAGMA query_only = {int(query_only)}")
    return added


@dataclass(frozen=True)
class Filters:
    """What a search is narrowed to (None: anything)."""

    study_id: str | None = None
    status: str | None = None
    kind: str | None = None
    event_type: str | None = None
    tool: str | None = None


_ASCII_WORD = re.compile(r"[a-z0-9]+")


@functools.cache
def _folding() -> dict[int, int | None]:
    """The ``str.translate`` table of SQLite's tokenizer: separators to a space, folds, removals."""
    table: dict[int, int | None] = {point: 32 for low, high in SEPARATORS for point in range(low, high + 1)}
    table.update(str.maketrans(FOLD_FROM, FOLD_TO, REMOVED))
    return table


def words(text: str) -> list[str]:
    """The words of ``text`` as the SQLite index holds them: split and folded exactly as
    FTS5's ``unicode61 remove_diacritics 2`` tokenizer does (its tables, read off SQLite by
    scripts/make_search_tokens.py, are in search_tokens.py). In ASCII that is the runs of
    letters and digits, lower-cased."""
    if text.isascii():
        return _ASCII_WORD.findall(text.lower())
    return [word for word in text.translate(_folding()).split(" ") if word]


def match_expression(text: str) -> str | None:
    """The FTS5 query for a user's text: its words as one phrase, the last one as a prefix.

    The words are :func:`words`' (they hold only letters and digits), so nothing the user
    types is read as FTS5 syntax (AND, NEAR, column filters, quotes). None when the text
    has no word to search for.
    """
    found = words(text)
    if not found:
        return None
    return '{body event_type tool} : "' + " ".join(found) + '" *'


def _phrase(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def search(conn: sqlite3.Connection, text: str, *, filters: Filters = Filters(), limit: int = 100,
           before_seq: int | None = None) -> list[dict[str, Any]]:
    """The newest hits for ``text`` (newest first), each with where it is and a snippet.

    Args:
        text: Words to find, in this order, the last one as a prefix (``unknown mater``).
        filters: Only hits of this study, run status, result kind, event type, tool.
        limit: At most this many hits.
        before_seq: Only hits older than this sequence number (the next page).

    Returns:
        ``{"seq", "kind", "run_id", "study_id", "status", "event_type", "tool_name",
        "snippet", "marks"}`` per hit; ``marks`` are the ``[start, end)`` character offsets
        of the searched words in the snippet (:func:`marks`).
    """
    expression = _expression(text, filters)
    if expression is None or not exists(conn):
        return []
    clauses, params = _clauses(filters)
    key, match, argument = _matching(conn, text, expression)
    if before_seq is not None:
        clauses.append(f"i.{key} < ?")
        params.append(before_seq)
    where = "".join(f" AND {clause}" for clause in clauses)
    cursor = conn.execute(
        f"SELECT i.{key}, e.kind, e.run_id, coalesce(r.study_id, e.study_id), r.status, e.body "
        f"FROM {INDEX_TABLE} i JOIN events_json e ON e.seq = i.{key} LEFT JOIN runs r ON r.run_id = e.run_id "
        f"WHERE {match}{where} ORDER BY i.{key} DESC LIMIT {sql_limit(limit)}",
        [argument, *params],
    )
    terms = re.findall(r"\w+", text)
    hits = []
    for seq, kind, run_id, study_id, status, body_text in cursor:
        body = json.loads(body_text)
        hit_kind = next(name for name, event_kind in KINDS.items() if event_kind == kind)
        hits.append({
            "seq": seq, "kind": hit_kind, "run_id": run_id, "study_id": study_id, "status": status,
            "event_type": body.get("event_type") if hit_kind == "observation" else None,
            "tool_name": body.get("tool_name") if hit_kind == "observation" else None,
            "snippet": snippet(_searchable_text(hit_kind, body), terms),
        })
        hits[-1]["marks"] = marks(hits[-1]["snippet"], terms)
    return hits


def count(conn: sqlite3.Connection, text: str, *, filters: Filters = Filters(), cap: int = COUNT_CAP) -> int:
    """How many hits ``text`` has, counted up to ``cap`` (more reads as ``cap``)."""
    expression = _expression(text, filters)
    if expression is None or not exists(conn):
        return 0
    clauses, params = _clauses(filters)
    key, match, argument = _matching(conn, text, expression)
    where = "".join(f" AND {clause}" for clause in clauses)
    return int(conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {INDEX_TABLE} i JOIN events_json e ON e.seq = i.{key} "
        f"LEFT JOIN runs r ON r.run_id = e.run_id WHERE {match}{where} LIMIT {int(cap)}) AS hits",
        [argument, *params]).fetchone()[0])


# -- on PostgreSQL (docs/store.md): the same index as a tsvector with a GIN index --------------

_PG_DDL = (
    f"CREATE TABLE {INDEX_TABLE} (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, words TSVECTOR NOT NULL)",
    f"CREATE INDEX {INDEX_TABLE}_words ON {INDEX_TABLE} USING gin (words)",
    *_DDL[1:],
    f"INSERT INTO {STATE_TABLE} VALUES ('words', 0)",  # its words are words()': see _folded
)
# The server gets the words of SQLite's tokenizer (words()), one space between two: its
# 'simple' configuration then keeps each as one lexeme, whatever the server's locale splits
# or folds (in the C locale every character beyond ASCII is a letter and only ASCII is
# lower-cased), with the positions a phrase search needs.
# A batch goes as one JSON array in one statement, a quarter quicker than a statement a row.
_PG_INSERT = (f"INSERT INTO {INDEX_TABLE} (seq, kind, words) SELECT (r->>0)::bigint, r->>1, "
              "to_tsvector('simple', r->>2) FROM json_array_elements(?::json) AS r")
# Batches are ranges of seq: with LIMIT instead, the server sorted every later row each time.
_PG_ROWS = _ROWS.format(events="(SELECT seq, kind, body FROM events WHERE seq > ? AND seq <= ?) AS e")
_PG_BATCH = 5_000


def _catch_up_postgres(conn: sqlite3.Connection, last: int, head: int) -> int:
    """Index the events after ``last`` up to ``head`` on PostgreSQL, :data:`_PG_BATCH`
    sequence numbers at a time; returns how many were indexed."""
    added = 0
    for start in range(last, head, _PG_BATCH):
        rows = conn.execute(_PG_ROWS, (start, start + _PG_BATCH)).fetchall()
        if rows:
            batch = [(seq, kind, " ".join(words(" ".join(part for part in (body, event_type, tool) if part))))
                     for seq, body, event_type, tool, kind in rows]
            conn.execute(_PG_INSERT, (json.dumps(batch, ensure_ascii=False),))
        added += len(rows)
    return added


def _build_temporary_postgres(conn: sqlite3.Connection) -> int:
    """:func:`build_temporary` on PostgreSQL: temporary tables of this session, made in a
    transaction that may write them (the session reads only; the reader role still cannot
    write the ledger)."""
    conn.execute("BEGIN READ WRITE")
    try:
        if not exists(conn):
            for ddl in _PG_DDL:
                conn.execute(ddl.replace("CREATE TABLE ", "CREATE TEMPORARY TABLE "))
        added = catch_up(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return added


def _matching(conn: sqlite3.Connection, text: str, expression: str) -> tuple[str, str, str]:
    """``(key column, match condition, its argument)`` for this ledger's database.

    On PostgreSQL the words (:func:`words`, at least one: :func:`_expression` said so) are
    one phrase (``<->``), the last a prefix (``:*``); the column filters of the FTS5
    expression are left to :func:`_clauses`' exact checks.
    """
    if is_sqlite(conn):
        return "rowid", f"{INDEX_TABLE} MATCH ?", expression
    return "seq", "i.words @@ to_tsquery('simple', ?)", " <-> ".join(f"'{word}'" for word in words(text)) + ":*"


def _expression(text: str, filters: Filters) -> str | None:
    """The MATCH expression: the text, narrowed by the filters the index has columns for.

    Column filters let FTS5 intersect posting lists instead of checking every hit; the
    exact checks in :func:`_clauses` then drop any looser token match (``tool-call`` is
    the phrase ``tool call``).
    """
    expression = match_expression(text)
    if expression is None:
        return None
    narrowed = [expression]
    for column, value in (("kind", filters.kind), ("event_type", filters.event_type), ("tool", filters.tool)):
        found = re.findall(r"\w+", value or "")
        if found:
            narrowed.append(f"{column} : {_phrase(' '.join(found))}")
    return " AND ".join(narrowed)


def _clauses(filters: Filters) -> tuple[list[str], list[Any]]:
    """Exact SQL conditions for the filters (``e`` the event, ``r`` its run)."""
    checks = (
        # Trace observations name their run, not its study: the run row knows it.
        ("coalesce(r.study_id, e.study_id) = ?", filters.study_id),
        ("r.status = ?", filters.status),
        ("e.kind = ?", KINDS.get(filters.kind, filters.kind) if filters.kind is not None else None),
        ("json_extract(e.body, '$.event_type') = ?", filters.event_type),
        ("json_extract(e.body, '$.tool_name') = ?", filters.tool),
    )
    found = [(sql, value) for sql, value in checks if value is not None]
    return [sql for sql, _ in found], [value for _, value in found]


def _searchable_text(kind: str, body: dict[str, Any]) -> str:
    """The text a hit was found in, as the index read it (see ``_ROWS``)."""
    if kind == "observation":
        # Trace texts start with their event type and tool: add them only when the text is empty.
        parts = [body.get("text") or " ".join(str(p) for p in (body.get("event_type"), body.get("tool_name")) if p)]
    elif kind == "rejection":
        parts = [body.get("reason"), body.get("raw")]
    else:
        parts = [body.get("error"), body.get("reason")]
    return " ".join(str(part) for part in parts if part)


def snippet(text: str, words: list[str], width: int = SNIPPET_WIDTH) -> str:
    """A window of ``text`` around the first of ``words`` found in it, on one line."""
    flat = " ".join(text.split())
    lowered = flat.casefold()
    positions = [lowered.find(word.casefold()) for word in words]
    found = [p for p in positions if p >= 0]
    start = 0
    if found and len(flat) > width:
        start = min(max(0, min(found) - width // 4), len(flat) - width)
    window = flat[start:start + width]
    prefix = "…" if start > 0 else ""
    suffix = "…" if start + width < len(flat) else ""
    return f"{prefix}{window}{suffix}"


def marks(text: str, words: list[str]) -> list[tuple[int, int]]:
    """``[(start, end)]`` of each place in ``text`` where one of ``words`` begins a word,
    case-folded as the index folds it, in order and not overlapping: where to highlight
    the words in a snippet. (Diacritics the index ignores are not matched here.)"""
    folded = text.casefold()
    spans = sorted(
        (found.start(), found.start() + len(word))
        for word in {w.casefold() for w in words if w}
        # Words are found as the index finds tokens: at the start of a word (and the last
        # query word as a prefix, so no end boundary).
        for found in re.finditer(rf"(?<!\w){re.escape(word)}", folded)
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
