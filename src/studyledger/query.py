"""The read side: what the CLI, the dashboard and users ask of a ledger.

Every function takes a connection and returns plain rows (``dict``), so results print as
JSON as they are. Nothing here writes, and nothing here knows about the dashboard.
Listing functions page by key (``after_seq``) rather than by OFFSET, so page N of a
million-row run costs the same as page 1.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .events import EVENT_COLUMNS, StoredEvent
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


def observation_count(conn: sqlite3.Connection, run_id: str) -> int:
    """How many observations a run has."""
    return int(conn.execute("SELECT count(*) FROM observations WHERE run_id = ?", (run_id,)).fetchone()[0])


def observation(conn: sqlite3.Connection, seq: int) -> Row | None:
    """One observation by the sequence number of its event."""
    return _one(conn.execute("SELECT * FROM observation_rows WHERE seq = ?", (seq,)))


def transitions(conn: sqlite3.Connection, run_id: str) -> list[Row]:
    """A run's status history in sequence order."""
    return rows(conn.execute("SELECT * FROM transitions WHERE run_id = ? ORDER BY seq", (run_id,)))


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


def rejections(conn: sqlite3.Connection, *, after_seq: int = 0, limit: int | None = None) -> list[Row]:
    """Lines the ingester could not use, with where they were and why."""
    tail = f" LIMIT {int(limit)}" if limit is not None else ""
    return rows(conn.execute(f"SELECT * FROM rejections WHERE seq > ? ORDER BY seq{tail}", (after_seq,)))


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
    }


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's ``PRAGMA data_version``: changes when another connection commits.

    The cheapest possible "did anything change?" for a live view.
    """
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
