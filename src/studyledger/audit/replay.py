"""Replay: rebuild every projection from the events and compare it with the stored tables.

The projections are a cache of the events; an auditor should not have to trust them. Replay
folds the events again, with the same code the ledger uses, into a scratch database that
attaches the ledger file read-only in spirit (nothing here writes to it), then compares the
two table by table and row by row. It also re-validates the stored status history against
the state machine independently of the fold, so a hand-edited ``legal`` flag or a
``from_status`` that does not follow the previous transition shows up even if the
projection code had a bug.

``--as-of`` state: :func:`state_as_of` folds only a prefix of the events, either up to a
sequence number or every event whose ``recorded_at`` is at or before a timestamp (see
:func:`parse_as_of`), and returns a :class:`Snapshot` whose connection answers the
:mod:`studyledger.query` functions as the ledger would have answered them then.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ..codec import Codec
from ..errors import ValidationError
from ..events import EVENT_COLUMNS, parse_instant
from .. import projections, query
from ..ledger import Ledger
from ..schema import STATUS_PRECEDENCE, TERMINAL_STATUSES, RunStatus, is_legal_transition, shown_status
from ..store import SQLiteStore, Store
from .snapshot_read import read_snapshot, store_of

MAX_DIFFERENCES = 100
MAX_ANOMALIES = 200
COMPARED_TABLES = (*projections.PROJECTION_TABLES, "projection_state")
_COPY_BATCH = 5_000
LEDGER_EVENTS = "sl_ledger_events"
"""The scratch connection's view of the ledger's events, decoded (see :func:`_scratch`)."""
_event_row = attrgetter(*EVENT_COLUMNS)


def parse_timestamp(text: str) -> datetime:
    """An ISO-8601 timestamp as an aware datetime; a timestamp without offset is UTC.

    Raises:
        ValidationError: ``text`` is not ISO-8601.
    """
    value = parse_instant(text)
    if value is None:
        raise ValidationError(f"{text!r} is not an ISO-8601 timestamp")
    return value


def parse_as_of(text: str) -> tuple[int | None, datetime | None]:
    """``--as-of`` as ``(seq, None)`` for an integer, else ``(None, timestamp)``.

    Raises:
        ValidationError: neither a non-negative integer nor an ISO-8601 timestamp.
    """
    digits = text.strip()
    # isdigit() alone accepts '²' and other digits int() refuses.
    if digits.isascii() and digits.isdigit():
        if int(digits) > 2**63 - 1:
            raise ValidationError(f"--as-of {text!r}: no ledger has that many events")
        return int(digits), None
    try:
        return None, parse_timestamp(text.strip())
    except ValidationError:
        raise ValidationError(
            f"--as-of {text!r}: give a sequence number (e.g. 120) or an ISO-8601 timestamp "
            "(e.g. 2026-03-01T12:00:00+00:00)"
        ) from None


def _recorded_by(limit: datetime) -> Callable[[str | None], int]:
    """SQL predicate: recorded at or before ``limit``; an unparseable time is excluded."""

    def predicate(text: str | None) -> int:
        moment = parse_instant(text)
        return int(moment is not None and moment <= limit)

    return predicate


class Snapshot:
    """Projections rebuilt in a scratch database, for a prefix of a ledger's events.

    ``conn`` has every projection table plus a temporary ``events`` view over the ledger's
    events that were folded, so the :mod:`studyledger.query` functions work on it as they
    do on a ledger. Close it (or use it as a context manager) to drop the scratch file.

    Attributes:
        conn: The scratch connection.
        seq: The last sequence number folded (0 when none).
        at: The timestamp limit, when the prefix was chosen by time.
        events: How many events were folded.
    """

    def __init__(self, conn: sqlite3.Connection, seq: int, at: datetime | None, events: int,
                 scratch_dir: Path | None) -> None:
        self.conn = conn
        self.seq = seq
        self.at = at
        self.events = events
        self._scratch_dir = scratch_dir

    def close(self) -> None:
        """Close the connection and remove the scratch file."""
        self.conn.close()
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _scratch(store: Store, in_memory: bool) -> tuple[sqlite3.Connection, Path | None]:
    """A scratch connection with the ledger attached as ``ledger``.

    A temporary file keeps a million-event rebuild out of memory; in-memory is quicker for
    small ledgers and tests. A ledger SQLite cannot attach (one on a server) is first copied
    into a scratch file, always on disk, so the same code replays both.
    """
    copied = not isinstance(store, SQLiteStore)
    directory = None if in_memory and not copied else Path(tempfile.mkdtemp(prefix="studyledger-replay-"))
    target = ":memory:" if in_memory or directory is None else str(directory / "scratch.db")
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=True)
    try:
        conn.execute("PRAGMA journal_mode = OFF")  # a scratch copy: nothing to recover
        conn.execute("PRAGMA synchronous = OFF")
        if copied:
            assert directory is not None
            conn.execute("ATTACH DATABASE ? AS ledger", (str(directory / "ledger.db"),))
            _copy_ledger(store, conn)
        else:
            # Read-only, as the store reads it: replay never writes to what it audits.
            conn.execute("ATTACH DATABASE ? AS ledger", (store.read_uri,))
            conn.execute("PRAGMA ledger.busy_timeout = 5000")
        Codec(conn, "ledger").register()
        # The ledger's events decoded: its events_json view; a ledger in the layout before
        # schema version 3 (or copied from a server) holds them decoded in its table.
        decoded = conn.execute("SELECT count(*) FROM ledger.sqlite_master WHERE type = 'view' "
                               "AND name = 'events_json'").fetchone()[0]
        conn.execute(f"CREATE TEMP VIEW {LEDGER_EVENTS} AS SELECT * FROM ledger.{'events_json' if decoded else 'events'}")
    except BaseException:
        conn.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return conn, directory


def _copy_ledger(store: Store, conn: sqlite3.Connection) -> None:
    """Copy the events and the stored derived tables, as of one snapshot, into ``ledger``.

    Stored tables are copied with their own column names and no types, so a table whose
    columns were changed still shows as a schema difference, and values compare as stored.
    """
    conn.execute("PRAGMA ledger.journal_mode = OFF")
    conn.execute("BEGIN")
    with read_snapshot(store.conn):
        conn.execute(f"CREATE TABLE ledger.events ({', '.join(EVENT_COLUMNS)}, PRIMARY KEY (seq))")
        batch: list[tuple[Any, ...]] = []
        insert = f"INSERT INTO ledger.events VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        for event in store.iter_events(batch=_COPY_BATCH):
            batch.append(_event_row(event))
            if len(batch) >= _COPY_BATCH:
                conn.executemany(insert, batch)
                batch = []
        conn.executemany(insert, batch)
        stored = store.tables()
        for table in COMPARED_TABLES:
            if table not in stored:
                continue
            cursor = store.conn.execute(f"SELECT * FROM {table}")
            names = [d[0] for d in cursor.description]
            conn.execute(f"CREATE TABLE ledger.{table} ({', '.join(names)})")
            conn.executemany(f"INSERT INTO ledger.{table} VALUES ({', '.join('?' * len(names))})", cursor)
    conn.execute("COMMIT")


def _fold(conn: sqlite3.Connection, seq: int | None, at: datetime | None) -> tuple[int, int]:
    """Fold the chosen prefix into fresh tables; returns ``(upper seq, events folded)``.

    Runs inside the caller's transaction, whose first read fixes the ledger snapshot.
    """
    head = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {LEDGER_EVENTS}").fetchone()[0]
    upper = head if seq is None else min(seq, head)
    if at is not None:
        conn.create_function("sl_recorded_by", 1, _recorded_by(at), deterministic=True)
    timed = " AND sl_recorded_by(e.recorded_at)" if at is not None else ""
    return upper, projections.build(conn, table=LEDGER_EVENTS, until=upper, condition=timed)


def _events_view(conn: sqlite3.Connection, upper: int, timed: bool) -> None:
    """Give the scratch database ``events`` and ``events_json`` views over the folded prefix of
    the ledger, both decoded.

    Only a TEMP view may reference the attached ledger, and a view stored in ``main``
    resolves its names inside ``main`` only; so the projection views (which join
    ``events_json``) are moved to TEMP as well, where they see the ``events_json`` view.
    """
    filter_sql = " AND sl_recorded_by(recorded_at)" if timed else ""
    conn.execute(f"CREATE TEMP VIEW events_json AS SELECT * FROM {LEDGER_EVENTS} WHERE seq <= {int(upper)}"
                 f"{filter_sql}")
    conn.execute("CREATE TEMP VIEW events AS SELECT * FROM events_json")
    views = conn.execute("SELECT name, sql FROM main.sqlite_master WHERE type = 'view'").fetchall()
    for name, sql in views:
        conn.execute(f"DROP VIEW main.{name}")
        conn.execute(re.sub(r"^\s*CREATE\s+VIEW", "CREATE TEMP VIEW", sql, count=1, flags=re.IGNORECASE))


def state_as_of(ledger: Ledger | Store, *, seq: int | None = None, at: datetime | str | None = None,
                in_memory: bool = True) -> Snapshot:
    """The projections as they were after event ``seq``, or at time ``at``.

    Args:
        ledger: The ledger (or its store).
        seq: Fold events up to and including this sequence number.
        at: Fold the events whose ``recorded_at`` is at or before this moment (an aware
            datetime or ISO-8601 text; without an offset it is UTC). ``recorded_at`` is when
            an event was first recorded, kept by JSONL import and merge, so on a merged
            ledger this is "what had been recorded anywhere by then".
        in_memory: Build in memory (default) or in a temporary file removed on close.

    Returns:
        A :class:`Snapshot`; with neither ``seq`` nor ``at`` it is the current state.
    """
    if seq is not None and at is not None:
        raise ValidationError("give --as-of a sequence number or a timestamp, not both")
    limit = parse_timestamp(at) if isinstance(at, str) else at
    if limit is not None and limit.tzinfo is None:
        limit = limit.replace(tzinfo=UTC)
    conn, directory = _scratch(store_of(ledger), in_memory)
    try:
        conn.execute("BEGIN")
        upper, counted = _fold(conn, seq, limit)
        conn.execute("COMMIT")
        _events_view(conn, upper, limit is not None)
        last = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    except BaseException:
        conn.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return Snapshot(conn, int(last), limit, counted, directory)


@dataclass(slots=True)
class ReplayReport:
    """What replay found.

    ``identical`` is None for an as-of replay: the stored tables hold the current state,
    so there is nothing at that point to compare with.
    """

    identical: bool | None
    events: int
    head: dict[str, Any]
    as_of: dict[str, Any] | None
    tables: dict[str, dict[str, int]]
    differences: list[dict[str, Any]]
    difference_count: int
    transitions: dict[str, int]
    runs_by_status: dict[str, int]
    anomaly_count: int
    anomalies_by_kind: dict[str, int]
    anomalies: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


def replay(ledger: Ledger | Store, *, seq: int | None = None, at: datetime | str | None = None,
           in_memory: bool = False) -> ReplayReport:
    """Rebuild every projection from the events and compare it with the stored tables.

    With ``seq`` or ``at`` it reports the state at that point instead (no comparison).
    """
    store = store_of(ledger)
    if seq is not None or at is not None:
        with state_as_of(store, seq=seq, at=at, in_memory=in_memory) as snapshot:
            transitions, _ = _transition_check(snapshot.conn, "main")
            as_of = {"seq": snapshot.seq, "at": None if snapshot.at is None else snapshot.at.isoformat()}
            return _report(snapshot.conn, None, [], 0, snapshot.events, as_of, transitions,
                           _table_counts(snapshot.conn))
    conn, directory = _scratch(store, in_memory)
    try:
        conn.execute("BEGIN")
        _, counted = _fold(conn, None, None)
        differences, per_table, total = _compare(conn)
        transitions, invalid = _transition_check(conn, "ledger")
        differences = (differences + invalid)[:MAX_DIFFERENCES]
        total += transitions["invalid"]
        upper = conn.execute("SELECT max(last_seq) FROM main.projection_state").fetchone()[0]
        conn.execute("COMMIT")
        _events_view(conn, int(upper or 0), False)
        return _report(conn, total == 0, differences, total, counted, None, transitions, per_table)
    finally:
        conn.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _report(conn: sqlite3.Connection, identical: bool | None, differences: list[dict[str, Any]],
            difference_count: int, events: int, as_of: dict[str, Any] | None, transitions: dict[str, int],
            tables: dict[str, dict[str, int]]) -> ReplayReport:
    anomalies = query.anomalies(conn)
    return ReplayReport(
        identical=identical,
        events=events,
        head=query.head(conn).to_dict(),
        as_of=as_of,
        tables=tables,
        differences=differences,
        difference_count=difference_count,
        transitions=transitions,
        runs_by_status=query.status_breakdown(conn),
        anomaly_count=len(anomalies),
        anomalies_by_kind=dict(sorted(Counter(row["kind"] for row in anomalies).items())),
        anomalies=anomalies[:MAX_ANOMALIES],
        stats=query.stats(conn),
    )


def _table_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    return {table: {"rebuilt": int(conn.execute(f"SELECT count(*) FROM main.{table}").fetchone()[0])}
            for table in projections.PROJECTION_TABLES}


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[tuple[str, int]]:
    """``(name, primary-key position)`` of each column; empty when the table is missing."""
    return [(row[1], int(row[5])) for row in conn.execute(f"PRAGMA {schema}.table_info({table})")]


def _compare(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]], int]:
    """Row-by-row differences between ``main`` (rebuilt) and ``ledger`` (stored) tables."""
    differences: list[dict[str, Any]] = []
    per_table: dict[str, dict[str, int]] = {}
    total = 0

    def note(entry: dict[str, Any]) -> None:
        if len(differences) < MAX_DIFFERENCES:
            differences.append(entry)

    for table in COMPARED_TABLES:
        rebuilt_columns = _columns(conn, "main", table)
        stored_columns = _columns(conn, "ledger", table)
        rebuilt_count = int(conn.execute(f"SELECT count(*) FROM main.{table}").fetchone()[0])
        counts = {"rebuilt": rebuilt_count, "stored": 0, "differences": 0}
        per_table[table] = counts
        if not stored_columns:
            counts["differences"] = 1
            total += 1
            note({"table": table, "problem": "missing_table", "key": None, "stored": None, "rebuilt": None,
                  "message": f"the stored ledger has no {table} table"})
            continue
        counts["stored"] = int(conn.execute(f"SELECT count(*) FROM ledger.{table}").fetchone()[0])
        if [c for c, _ in stored_columns] != [c for c, _ in rebuilt_columns]:
            counts["differences"] = 1
            total += 1
            note({"table": table, "problem": "schema", "key": None, "stored": [c for c, _ in stored_columns],
                  "rebuilt": [c for c, _ in rebuilt_columns],
                  "message": f"stored {table} has different columns than the projection defines"})
            continue
        found = _row_differences(conn, table, rebuilt_columns)
        counts["differences"] = found[1]
        total += found[1]
        for entry in found[0]:
            note(entry)
    return differences, per_table, total


def _row_differences(conn: sqlite3.Connection, table: str,
                     columns: list[tuple[str, int]]) -> tuple[list[dict[str, Any]], int]:
    """Bounded list of differing rows of one table, and how many rows differ in all.

    A row whose key is on both sides but whose values are not is one ``changed``
    difference; otherwise a row only in the rebuilt table is ``missing`` from the stored
    one and a row only in the stored table is ``extra``.
    """
    names = [name for name, _ in columns]
    key = [name for name, pk in sorted(columns, key=lambda c: c[1]) if pk] or names
    only_rebuilt = f"SELECT * FROM main.{table} EXCEPT SELECT * FROM ledger.{table}"
    only_stored = f"SELECT * FROM ledger.{table} EXCEPT SELECT * FROM main.{table}"
    keys = ", ".join(key)
    # Count distinct keys across both sides, so a changed row counts once, not twice.
    total = int(conn.execute(
        f"SELECT count(*) FROM (SELECT {keys} FROM ({only_rebuilt}) UNION SELECT {keys} FROM ({only_stored}))"
    ).fetchone()[0])
    if total == 0:
        return [], 0
    fetch = MAX_DIFFERENCES + 1
    rebuilt = {_key(row, names, key): dict(zip(names, row, strict=True))
               for row in conn.execute(f"{only_rebuilt} LIMIT {fetch}")}
    stored = {_key(row, names, key): dict(zip(names, row, strict=True))
              for row in conn.execute(f"{only_stored} LIMIT {fetch}")}
    entries: list[dict[str, Any]] = []
    for k in sorted(set(rebuilt) | set(stored), key=repr)[:MAX_DIFFERENCES]:
        new, old = rebuilt.get(k), stored.get(k)
        if new is not None and old is not None:
            changed = [name for name in names if new[name] != old[name]]
            entries.append({"table": table, "problem": "changed", "key": dict(zip(key, k, strict=True)),
                            "columns": changed, "stored": {c: old[c] for c in changed},
                            "rebuilt": {c: new[c] for c in changed}})
        else:
            entries.append({"table": table, "problem": "missing" if old is None else "extra",
                            "key": dict(zip(key, k, strict=True)), "stored": old, "rebuilt": new})
    return entries, total


def _key(row: tuple[Any, ...], names: list[str], key: list[str]) -> tuple[Any, ...]:
    return tuple(row[names.index(name)] for name in key)


_STATUS_ANOMALIES = projections.STATUS_ANOMALIES


def _state_after(from_status: str, to_status: str, legal: int) -> str:
    """Where a report leaves the run's attempt, by the state machine alone: a legal move or
    a flagged report moves it to the reported status, two outcomes keep the conservative
    one, and an ordinary report of an earlier status leaves it where it was."""
    if to_status == from_status or is_legal_transition(from_status, to_status):
        return to_status
    if from_status in TERMINAL_STATUSES and to_status in TERMINAL_STATUSES:
        return shown_status(from_status, to_status)
    return from_status if legal else to_status


def _transition_problem(from_status: str, to_status: str, state_before: str, shown_before: str,
                        shown_after: str, legal: int) -> str | None:
    """What is wrong with one stored transition row, judged by the state machine alone.

    Rows are read in the order the run's reports happened (``ordinal``). Only rules that
    hold whatever the ingestion order are checked: the row starts from where the previous
    one left the run, shows what the precedence rule picks, never flags a legal
    transition, always flags two different outcomes, and passes as ordinary only a report
    of an earlier status. Whether such a report is ordinary depends on times and is left
    to the fold (compared row by row elsewhere).
    """
    try:
        expected_shown = shown_status(shown_before, to_status)
        allowed = to_status == from_status or is_legal_transition(from_status, to_status)
        earlier = STATUS_PRECEDENCE[RunStatus(to_status)] < STATUS_PRECEDENCE[RunStatus(from_status)]
    except (ValueError, KeyError):
        return f"unknown status in {from_status!r} -> {to_status!r}"
    terminal = TERMINAL_STATUSES
    if from_status != state_before:
        return f"starts from {from_status} but the run was {state_before}"
    if shown_after != expected_shown:
        return f"shows {shown_after} after {shown_before} and a report of {to_status}, expected {expected_shown}"
    if allowed and not legal:
        return f"{from_status} -> {to_status} is legal but flagged as an anomaly"
    if from_status in terminal and to_status in terminal and from_status != to_status:
        return f"outcomes {from_status} and {to_status} disagree but are not flagged" if legal else None
    if not allowed and legal and not earlier:
        return f"{from_status} -> {to_status} is not legal but not flagged"
    return None


def _transition_check(conn: sqlite3.Connection, schema: str) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Re-validate a transitions table against the state machine and the anomalies table.

    Streams in (run, ordinal) order, the order each run's reports happened, keeping one
    run's state; then checks that a transition is flagged (``legal = 0``) exactly when the
    anomalies table holds a status anomaly for it.

    Returns:
        Counts (``checked``; ``flagged``, the reports the ledger recorded as anomalies,
        which are facts and not errors; ``invalid``, rows that contradict the rules) and a
        bounded list of the invalid rows as differences.
    """
    counts = {"checked": 0, "flagged": 0, "invalid": 0}
    found: list[dict[str, Any]] = []
    if not _columns(conn, schema, "transitions"):
        return counts, found

    def invalid(seq: int, run_id: str, message: str) -> None:
        counts["invalid"] += 1
        if len(found) < MAX_DIFFERENCES:
            found.append({"table": "transitions", "problem": "invalid_transition", "key": {"seq": seq},
                          "run_id": run_id, "message": message})

    run, state, shown = None, RunStatus.PENDING.value, RunStatus.PENDING.value
    cursor = conn.execute(f"SELECT seq, run_id, from_status, to_status, shown_status, legal "
                          f"FROM {schema}.transitions ORDER BY run_id, ordinal, seq")
    for seq, run_id, from_status, to_status, shown_after, legal in cursor:
        if run_id != run:
            run, state, shown = run_id, RunStatus.PENDING.value, RunStatus.PENDING.value
        counts["checked"] += 1
        counts["flagged"] += not legal
        problem = _transition_problem(from_status, to_status, state, shown, shown_after, legal)
        if problem is not None:
            invalid(seq, run_id, problem)
        try:
            state = _state_after(from_status, to_status, legal)
        except ValueError:
            state = to_status
        shown = shown_after
    if _columns(conn, schema, "anomalies"):
        kinds = ", ".join(f"'{kind}'" for kind in _STATUS_ANOMALIES)
        mismatched = conn.execute(
            f"SELECT t.seq, t.run_id, t.legal FROM {schema}.transitions t WHERE (t.legal = 0) != EXISTS "
            f"(SELECT 1 FROM {schema}.anomalies a WHERE a.seq = t.seq AND a.run_id = t.run_id "
            f"AND a.kind IN ({kinds})) ORDER BY t.seq")
        for seq, run_id, legal in mismatched:
            invalid(seq, run_id, "flagged as an anomaly but the anomalies table has none" if not legal
                    else "the anomalies table flags it but the transition is marked ordinary")
    return counts, found


__all__ = ["ReplayReport", "Snapshot", "parse_as_of", "parse_timestamp", "replay", "state_as_of"]
