"""The read side: what the CLI, the dashboard and users ask of a ledger.

Every function takes a connection and returns plain rows (``dict``), so results print as
JSON as they are. Nothing here writes, and nothing here knows about the dashboard.
Listing functions page by key (``after_seq``) rather than by OFFSET, so page N of a
million-row run costs the same as page 1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from .events import EVENT_COLUMNS, StoredEvent, parse_instant
from .store import Head, read_head

Row = dict[str, Any]


def rows(cursor: sqlite3.Cursor) -> list[Row]:
    """A query's rows as mappings of column name to value."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _one(cursor: sqlite3.Cursor) -> Row | None:
    found = rows(cursor)
    return found[0] if found else None


def status_breakdown(conn: sqlite3.Connection, study_id: str | None = None) -> dict[str, int]:
    """``{status: run count}``; statuses with no run are omitted."""
    if study_id is None:
        cursor = conn.execute("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status")
    else:
        cursor = conn.execute(
            "SELECT status, count(*) FROM runs WHERE study_id = ? GROUP BY status ORDER BY status",
            (study_id,),
        )
    return {status: count for status, count in cursor.fetchall()}


def studies(conn: sqlite3.Connection) -> list[Row]:
    """Every study with its run count, status breakdown and last activity."""
    found = rows(conn.execute("SELECT * FROM studies ORDER BY study_id"))
    counts: dict[str, dict[str, int]] = {}
    for study_id, status, count in conn.execute(
        "SELECT study_id, status, count(*) FROM runs GROUP BY study_id, status"
    ):
        counts.setdefault(study_id, {})[status] = count
    for row in found:
        row["runs_by_status"] = counts.get(row["study_id"], {})
        row["run_count"] = sum(row["runs_by_status"].values())
    return found


def study(conn: sqlite3.Connection, study_id: str) -> Row | None:
    """One study, or None."""
    row = _one(conn.execute("SELECT * FROM studies WHERE study_id = ?", (study_id,)))
    if row is not None:
        row["runs_by_status"] = status_breakdown(conn, study_id)
        row["run_count"] = sum(row["runs_by_status"].values())
    return row


def runs(
    conn: sqlite3.Connection,
    *,
    study_id: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    """Runs, optionally of one study and one status, in registration order."""
    clauses, params = [], []
    if study_id is not None:
        clauses.append("study_id = ?")
        params.append(study_id)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    tail = f" LIMIT {int(limit)}" if limit is not None else ""
    return rows(conn.execute(f"SELECT * FROM runs {where} ORDER BY first_seq{tail}", params))


def run(conn: sqlite3.Connection, run_id: str) -> Row | None:
    """One run, or None."""
    return _one(conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)))


def observations(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    after_seq: int = 0,
    before_seq: int | None = None,
    limit: int = 500,
    level: str | None = None,
    event_type: str | None = None,
    search: str | None = None,
    descending: bool = False,
) -> list[Row]:
    """A page of a run's observations in sequence order.

    Args:
        run_id: The run.
        after_seq: Only rows with a larger sequence number (the previous page's last).
        before_seq: Only rows with a smaller sequence number (for paging backwards).
        limit: Page size.
        level: Only this ObservationLevel value.
        event_type: Only this event type.
        search: Only rows whose text, event type or tool name contains this (case-insensitive).
        descending: Newest first (for the bottom of a followed run).
    """
    clauses = ["run_id = ?", "seq > ?"]
    params: list[Any] = [run_id, after_seq]
    if before_seq is not None:
        clauses.append("seq < ?")
        params.append(before_seq)
    if level is not None:
        clauses.append("level = ?")
        params.append(level)
    if event_type is not None:
        clauses.append("event_type = ?")
        params.append(event_type)
    if search:
        clauses.append("(instr(lower(text), ?) OR instr(lower(event_type), ?) "
                       "OR instr(lower(coalesce(tool_name, '')), ?))")
        needle = search.lower()
        params.extend([needle, needle, needle])
    order = "DESC" if descending else "ASC"
    sql = (f"SELECT * FROM observation_rows WHERE {' AND '.join(clauses)} "
           f"ORDER BY seq {order} LIMIT {int(limit)}")
    return rows(conn.execute(sql, params))


def _observation_filter(level: str | None, event_type: str | None) -> tuple[str, list[Any]]:
    """SQL conditions (each starting with AND) on the lean ``observations`` table."""
    sql, params = "", []
    if level:
        sql += " AND level = ?"
        params.append(level)
    if event_type:
        sql += " AND event_type = ?"
        params.append(event_type)
    return sql, params


def observation_count(conn: sqlite3.Connection, run_id: str, *, level: str | None = None,
                      event_type: str | None = None) -> int:
    """How many observations a run has (of one level and event type, when given)."""
    sql, params = _observation_filter(level, event_type)
    return int(conn.execute(f"SELECT count(*) FROM observations WHERE run_id = ?{sql}",
                            [run_id, *params]).fetchone()[0])


def observation_tail(conn: sqlite3.Connection, run_id: str, *, after_seq: int, level: str | None = None,
                     event_type: str | None = None) -> tuple[int, int]:
    """``(count, last seq)`` of a run's observations after ``after_seq``.

    A live list asks only about rows newer than the last it counted, so a change in a
    million-row run costs an index range scan of the new rows, not a count of all.
    """
    sql, params = _observation_filter(level, event_type)
    count, last = conn.execute(
        f"SELECT count(*), coalesce(max(seq), ?) FROM observations WHERE run_id = ? AND seq > ?{sql}",
        [after_seq, run_id, after_seq, *params]).fetchone()
    return int(count), int(last)


def observation_seq_at(conn: sqlite3.Connection, run_id: str, index: int, *, level: str | None = None,
                       event_type: str | None = None) -> int | None:
    """The seq of row ``index`` (0-based) of a run's observations, or None past the end.

    Found by OFFSET on the narrow ``(run_id, ..., seq)`` index, which reads only index
    pages, so a jump to the middle of a million-row run stays in milliseconds.
    """
    sql, params = _observation_filter(level, event_type)
    found = conn.execute(f"SELECT seq FROM observations WHERE run_id = ?{sql} ORDER BY seq LIMIT 1 OFFSET ?",
                         [run_id, *params, index]).fetchone()
    return None if found is None else int(found[0])


def observation_index(conn: sqlite3.Connection, run_id: str, seq: int, *, level: str | None = None,
                      event_type: str | None = None) -> int:
    """The row index of an observation among a run's (filtered) observations."""
    sql, params = _observation_filter(level, event_type)
    return int(conn.execute(f"SELECT count(*) FROM observations WHERE run_id = ? AND seq < ?{sql}",
                            [run_id, seq, *params]).fetchone()[0])


def observation_meta(conn: sqlite3.Connection, run_id: str) -> Iterator[str | None]:
    """Each observation's meta_json (as JSON text) of a run, in sequence order."""
    for (meta,) in conn.execute("SELECT meta_json FROM observation_rows WHERE run_id = ? ORDER BY seq", (run_id,)):
        yield meta


def event_types(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """The distinct event types of a run's observations, sorted."""
    return [row[0] for row in conn.execute(
        "SELECT DISTINCT event_type FROM observations WHERE run_id = ? AND event_type IS NOT NULL "
        "ORDER BY event_type", (run_id,))]


def observation(conn: sqlite3.Connection, seq: int) -> Row | None:
    """One observation by the sequence number of its event."""
    return _one(conn.execute("SELECT * FROM observation_rows WHERE seq = ?", (seq,)))


def transitions(conn: sqlite3.Connection, run_id: str) -> list[Row]:
    """A run's status history in the order it happened (the reports' times), not as ingested."""
    return rows(conn.execute("SELECT * FROM transitions WHERE run_id = ? ORDER BY ordinal, seq", (run_id,)))


def provenance(conn: sqlite3.Connection, run_id: str) -> list[Row]:
    """A run's provenance snapshots in sequence order."""
    return rows(conn.execute("SELECT * FROM provenance WHERE run_id = ? ORDER BY seq", (run_id,)))


def latest_provenance(conn: sqlite3.Connection, run_id: str | None = None) -> dict[str, Row]:
    """``{run_id: its latest provenance snapshot}``, for one run or all, in one query."""
    where, params = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
    found = rows(conn.execute(
        f"SELECT * FROM provenance WHERE seq IN (SELECT max(seq) FROM provenance {where} GROUP BY run_id)",
        params,
    ))
    return {row["run_id"]: row for row in found}


def evaluations(conn: sqlite3.Connection, run_id: str | None = None) -> list[Row]:
    """Evaluator outputs, of one run or all."""
    if run_id is None:
        return rows(conn.execute("SELECT * FROM evaluations ORDER BY seq"))
    return rows(conn.execute("SELECT * FROM evaluations WHERE run_id = ? ORDER BY seq", (run_id,)))


def conditions(conn: sqlite3.Connection, study_id: str) -> list[Row]:
    """A study's conditions (factors, blocks and admissibility as JSON text)."""
    return rows(conn.execute(
        "SELECT * FROM conditions WHERE study_id = ? ORDER BY condition_id", (study_id,)))


def anomalies(conn: sqlite3.Connection, run_id: str | None = None) -> list[Row]:
    """Anomalies the projections flagged, of one run or all."""
    if run_id is None:
        return rows(conn.execute("SELECT * FROM anomalies ORDER BY seq, id"))
    return rows(conn.execute("SELECT * FROM anomalies WHERE run_id = ? ORDER BY seq, id", (run_id,)))


def rejections(conn: sqlite3.Connection, *, after_seq: int = 0, limit: int | None = None,
               latest: int | None = None) -> list[Row]:
    """Lines the ingester could not use, with where they were and why, in sequence order.

    Args:
        after_seq: Only rejections recorded after this sequence number.
        limit: At most this many (the oldest first).
        latest: Only the newest this many.
    """
    if latest is not None:
        newest = conn.execute("SELECT seq FROM rejections ORDER BY seq DESC LIMIT 1 OFFSET ?",
                              (latest,)).fetchone()
        after_seq = max(after_seq, newest[0] if newest else 0)
    tail = f" LIMIT {int(limit)}" if limit is not None else ""
    return rows(conn.execute(f"SELECT * FROM rejections WHERE seq > ? ORDER BY seq{tail}", (after_seq,)))


INGEST_FILES_TABLE = "ingest_files"
"""The tailer's committed offsets: ingest state beside the events, not a projection."""


def ingest_files(conn: sqlite3.Connection) -> list[Row]:
    """Every file the ingester knows, with its committed offset (empty before any ingest)."""
    known = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (INGEST_FILES_TABLE,))
    if known.fetchone() is None:
        return []
    return rows(conn.execute(
        f"SELECT path, device, inode, offset, line, lines_accepted, lines_rejected, resets, "
        f"updated_at FROM {INGEST_FILES_TABLE} ORDER BY path"))


def study_titles(conn: sqlite3.Connection) -> list[Row]:
    """Every study's id and title, by id (for pickers)."""
    return rows(conn.execute("SELECT study_id, title FROM studies ORDER BY study_id"))


def run_labels(conn: sqlite3.Connection) -> list[Row]:
    """Every run's id, study, condition and status, in registration order (for pickers)."""
    return rows(conn.execute("SELECT run_id, study_id, condition_id, status FROM runs ORDER BY first_seq"))


def events(
    conn: sqlite3.Connection,
    *,
    after: int = 0,
    run_id: str | None = None,
    limit: int | None = None,
) -> list[StoredEvent]:
    """Stored events after a sequence number, optionally of one run."""
    clauses: list[str] = ["seq > ?"]
    params: list[Any] = [after]
    if run_id is not None:
        clauses.append("run_id = ?")
        params.append(run_id)
    tail = f" LIMIT {int(limit)}" if limit is not None else ""
    cursor = conn.execute(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {' AND '.join(clauses)} ORDER BY seq{tail}",
        params,
    )
    return [StoredEvent(*row) for row in cursor.fetchall()]


def head(conn: sqlite3.Connection) -> Head:
    """The last sequence number and its chain (0 and the genesis chain when empty)."""
    return read_head(conn)


def stats(conn: sqlite3.Connection) -> Row:
    """Counts for ``studyledger stats``."""

    def count(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    return {
        "events": count("SELECT count(*) FROM events"),
        "studies": count("SELECT count(*) FROM studies"),
        "runs": count("SELECT count(*) FROM runs"),
        "runs_by_status": status_breakdown(conn),
        "observations": count("SELECT count(*) FROM observations"),
        "evaluations": count("SELECT count(*) FROM evaluations"),
        "rejected": count("SELECT count(*) FROM rejections"),
        "anomalies": count("SELECT count(*) FROM anomalies"),
        "head": head(conn).to_dict(),
        # Events the derived tables do not reflect yet: written around the API, or by
        # another version; a writer's open folds them, a read-only open never does.
        "unfolded_events": head(conn).seq - count("SELECT coalesce(max(last_seq), 0) FROM projection_state"),
    }


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's ``PRAGMA data_version``: changes when another connection commits.

    The cheapest possible "did anything change?" for a live view.
    """
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


# -- rules derived from a run row at read time (nothing here is stored) -------------------


def last_event_time(run: Row) -> datetime | None:
    """When the run last gave a sign of life: its latest event, by source or ledger clock.

    Both clocks count: a trace with old source times that is still arriving now is alive,
    and a run whose source clock runs ahead must not look alive forever.
    """
    times = [t for t in (parse_instant(run.get("last_activity")), parse_instant(run.get("last_recorded"))) if t]
    return max(times) if times else None


def is_stale(run: Row, now: datetime, stale_after: float) -> bool:
    """A run still ``running`` with no event for ``stale_after`` seconds.

    Runs stuck in ``running`` after their process died are what users of run trackers
    complain about first; the ledger cannot know a process died, but it can say nothing
    has been heard from it for a while.
    """
    if run.get("status") != "running":
        return False
    last = last_event_time(run)
    return last is not None and (now - last).total_seconds() > stale_after


def run_duration(run: Row, now: datetime | None = None, stale_after: float | None = None) -> float | None:
    """Seconds from a run's start to its end, or None when either is unknown.

    Without an end, a running run counts to ``now`` when one is given, and a stale one
    (see :func:`is_stale`) to its last event, on the same (source) clock as its start.
    """
    start = parse_instant(run.get("started_at"))
    if start is None:
        return None
    end = parse_instant(run.get("ended_at"))
    if end is None and run.get("status") == "running" and now is not None:
        stale = stale_after is not None and is_stale(run, now, stale_after)
        end = (parse_instant(run.get("last_activity")) or last_event_time(run)) if stale else now
    return None if end is None else max(0.0, (end - start).total_seconds())
