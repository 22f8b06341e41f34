"""The read side: what the CLI, the dashboard and users ask of a ledger.

Every function takes a connection and returns plain rows (``dict``), so results print as
JSON as they are. Nothing here writes, and nothing here knows about the dashboard.
Listing functions page by key (``after_seq``) rather than by OFFSET, so page N of a
million-row run costs the same as page 1.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from .events import EVENT_COLUMNS, StoredEvent, parse_instant
from .schema import from_canonical
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


def runs_without_study(conn: sqlite3.Connection) -> dict[str, int]:
    """``{status: count}`` of runs no source has tied to a study (trace-only runs)."""
    cursor = conn.execute("SELECT status, count(*) FROM runs WHERE study_id IS NULL GROUP BY status ORDER BY status")
    return {status: count for status, count in cursor.fetchall()}


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
    without_study: bool = False,
    condition_id: str | None = None,
) -> list[Row]:
    """Runs, optionally of one study, condition and status, in registration order.

    Args:
        without_study: Only runs no source has tied to a study (trace-only runs).
    """
    clauses, params = [], []
    if study_id is not None:
        clauses.append("study_id = ?")
        params.append(study_id)
    if without_study:
        clauses.append("study_id IS NULL")
    if condition_id is not None:
        clauses.append("condition_id = ?")
        params.append(condition_id)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    tail = f" LIMIT {sql_limit(limit)}" if limit is not None else ""
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
        clauses.append("(instr(lower(text), ?) > 0 OR instr(lower(event_type), ?) > 0 "
                       "OR instr(lower(coalesce(tool_name, '')), ?) > 0)")
        needle = search.lower()
        params.extend([needle, needle, needle])
    order = "DESC" if descending else "ASC"
    sql = (f"SELECT * FROM observation_rows WHERE {' AND '.join(clauses)} "
           f"ORDER BY seq {order} LIMIT {sql_limit(limit)}")
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


def sql_limit(limit: int) -> int:
    """A count to put in ``LIMIT`` as SQLite takes it: its integers are 64-bit (a larger
    literal is a float, refused), and no ledger holds more rows than that."""
    return min(int(limit), 2**63 - 1)


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
    tail = f" LIMIT {sql_limit(limit)}" if limit is not None else ""
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
    tail = f" LIMIT {sql_limit(limit)}" if limit is not None else ""
    cursor = conn.execute(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events_json WHERE {' AND '.join(clauses)} ORDER BY seq{tail}",
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

    The cheapest possible "did anything change?" for a live view (on PostgreSQL: the
    notifications the connection has received, see docs/store.md).
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
    (see :func:`is_stale`) to its last event. Both on the run's own (source) clock, as its
    start is: "now" on that clock is its last event plus the time since that event was
    recorded, so a trace of a run killed days ago and ingested a minute ago is timed by
    what it shows (its last event, then a minute), not by the days since it started, and
    a source clock running behind or ahead changes nothing.
    """
    start = parse_instant(run.get("started_at"))
    if start is None:
        return None
    end = parse_instant(run.get("ended_at"))
    if end is None and run.get("status") == "running" and now is not None:
        stale = stale_after is not None and is_stale(run, now, stale_after)
        last = parse_instant(run.get("last_activity"))
        recorded = parse_instant(run.get("last_recorded"))
        if stale:
            end = last or last_event_time(run)
        else:
            end = last + (now - recorded) if last is not None and recorded is not None else now
    return None if end is None else max(0.0, (end - start).total_seconds())


# -- metrics, conditions and their figures -----------------------------------------------

RUN_METRIC_PREFIX = "run:"
"""The prefix of a run metric whose name an evaluator of the same study also writes.

A run has two kinds of metrics: its evaluators' outputs (upstream's evaluations.csv) and
the runner's ``metrics`` (upstream's run.json ``observed.metrics``: ``latency_s``,
``cost_usd``, ``input_tokens``, ``output_tokens``, ``primary_outcome``, process counts and
whatever the agent itself reported). When both have a name (upstream's agents may report
an ``is_feasible`` that the problem's evaluator judges separately), neither hides the
other: the evaluator's output keeps the name (it is the study's measurement, and what
upstream's analyses read by metric name) and the runner's value is ``run:is_feasible``.
Decided per study, so a name means the same thing in every run of a study.
"""

_EVALUATOR_COLUMNS = ("seq", "run_id", "condition_id", "status", "evaluator_id", "metric_name", "metric_unit",
                      "aggregation_level")
# The runner's metrics, one row per key, of runs whose record has a metrics object.
_RUN_METRICS = ("FROM runs r, json_each(r.result, '$.metrics') j "
                "WHERE r.result IS NOT NULL AND json_type(r.result, '$.metrics') = 'object'")


def _run_scope(study_id: str | None, run_id: str | None) -> tuple[str, list[Any]]:
    """An SQL condition on runs ``r`` (``1`` for every run) and its parameters."""
    found = [(sql, value) for sql, value in (("r.study_id = ?", study_id), ("r.run_id = ?", run_id))
             if value is not None]
    return " AND ".join(sql for sql, _ in found) or "1", [value for _, value in found]


def _study_key(study_id: str | None, run_id: str) -> tuple[str | None, str | None]:
    """What metric names are decided per: the study, or the run itself when it has none."""
    return (study_id, None if study_id is not None else run_id)


def _evaluator_names(conn: sqlite3.Connection, study_id: str | None,
                     run_id: str | None) -> dict[tuple[str | None, str | None], set[str]]:
    """The metric names evaluators wrote, per :func:`_study_key`, for the runs in scope."""
    if study_id is None and run_id is not None:
        # A run's names are its study's: read every run of its study.
        scope, params = "(r.run_id = ? OR r.study_id = (SELECT study_id FROM runs WHERE run_id = ?))", [run_id, run_id]
    else:
        scope, params = _run_scope(study_id, None)
    names: dict[tuple[str | None, str | None], set[str]] = {}
    for study, run, name in conn.execute(
            f"SELECT DISTINCT r.study_id, r.run_id, v.metric_name FROM evaluations v "
            f"JOIN runs r ON r.run_id = v.run_id WHERE v.metric_name IS NOT NULL AND {scope}", params):
        names.setdefault(_study_key(study, run), set()).add(name)
    return names


def metric_values(conn: sqlite3.Connection, *, study_id: str | None = None,
                  run_id: str | None = None) -> list[Row]:
    """Every metric value of a study's (or one run's, or every) run: evaluator outputs in
    sequence order, then the runner's metrics in the order runs were registered.

    Evaluator outputs are read from the event bodies, so they are what the evaluator
    wrote: a boolean stays a boolean (the projection's column holds it as 0/1), and NaN and
    Infinity come back as floats, never as null. The runner's metrics are those of its
    record of the run's latest attempt (the run's ``result``), decoded the same way.

    Returns:
        ``{"seq" (the evaluation's event; None for a runner's metric), "run_id",
        "condition_id", "status", "source" (``evaluator`` or ``run``), "name" (what figures
        call it: the recorded name, or ``run:NAME``, see :data:`RUN_METRIC_PREFIX`),
        "evaluator_id", "metric_name" (as recorded), "metric_unit", "aggregation_level",
        "value"}`` per value.
    """
    scope, params = _run_scope(study_id, run_id)
    found = []
    for values in conn.execute(
        f"SELECT v.seq, v.run_id, r.condition_id, r.status, v.evaluator_id, v.metric_name, v.metric_unit, "
        f"v.aggregation_level, json_extract(e.body, '$.metric_value'), json_type(e.body, '$.metric_value') "
        f"FROM evaluations v JOIN runs r ON r.run_id = v.run_id JOIN events_json e ON e.seq = v.seq "
        f"WHERE {scope} ORDER BY v.seq", params):
        *head, raw, kind = values
        row = dict(zip(_EVALUATOR_COLUMNS, head, strict=True))
        row.update(source="evaluator", name=row["metric_name"], value=_metric_value(raw, kind))
        found.append(row)
    taken = _evaluator_names(conn, study_id, run_id)
    for run, study, condition, status, key, raw, kind in conn.execute(
            f"SELECT r.run_id, r.study_id, r.condition_id, r.status, j.key, j.value, j.type {_RUN_METRICS} "
            f"AND {scope} ORDER BY r.first_seq, j.id", params):
        name = RUN_METRIC_PREFIX + key if key in taken.get(_study_key(study, run), ()) else key
        found.append({"seq": None, "run_id": run, "condition_id": condition, "status": status, "source": "run",
                      "name": name, "evaluator_id": None, "metric_name": key, "metric_unit": None,
                      "aggregation_level": "run", "value": _metric_value(raw, kind)})
    return found


def _metric_value(raw: Any, kind: str | None) -> Any:
    """A value as json_extract/json_type (or json_each) read it, decoded as the body meant it."""
    if kind in ("true", "false"):
        return kind == "true"
    if kind in ("object", "array"):
        return from_canonical(json.loads(raw))
    return raw


def run_metrics(conn: sqlite3.Connection, *, study_id: str | None = None,
                run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """``{run_id: {metric name: value}}``: each run's latest value of each metric, by the
    names of :func:`metric_values` (evaluator outputs and the runner's metrics).

    Two evaluators writing one metric name: the later output counts.
    """
    return latest_metrics(metric_values(conn, study_id=study_id, run_id=run_id))


def latest_metrics(values: Iterable[Row]) -> dict[str, dict[str, Any]]:
    """:func:`run_metrics` of rows :func:`metric_values` gave (in their order, so the
    latest value of a name wins), for a caller that shows the rows too."""
    table: dict[str, dict[str, Any]] = {}
    for row in values:
        if row["name"] is not None:
            table.setdefault(row["run_id"], {})[row["name"]] = row["value"]
    return table


def _metric_catalogue(conn: sqlite3.Connection, study_id: str) -> list[tuple[str, str, str]]:
    """``(name, source, recorded name)`` of every metric a study's runs have values for:
    evaluator outputs in the order they first appeared, then the runner's metrics by name."""
    evaluated = [name for (name,) in conn.execute(
        "SELECT v.metric_name FROM evaluations v JOIN runs r ON r.run_id = v.run_id "
        "WHERE r.study_id = ? AND v.metric_name IS NOT NULL GROUP BY v.metric_name ORDER BY min(v.seq)",
        (study_id,))]
    recorded = [key for (key,) in conn.execute(
        f"SELECT DISTINCT j.key {_RUN_METRICS} AND r.study_id = ? ORDER BY j.key", (study_id,))]
    taken = set(evaluated)
    return ([(name, "evaluator", name) for name in evaluated]
            + [(RUN_METRIC_PREFIX + key if key in taken else key, "run", key) for key in recorded])


def metric_names(conn: sqlite3.Connection, study_id: str) -> list[str]:
    """The metric names a study's runs have values for: evaluator outputs in the order they
    first appeared, then the runner's metrics by name (see :data:`RUN_METRIC_PREFIX`)."""
    return study_metrics(conn, study_id)[0]


def study_metrics(conn: sqlite3.Connection, study_id: str,
                  study_row: Row | None = None) -> tuple[list[str], str | None]:
    """:func:`metric_names` and :func:`primary_metric` of a study from one read of its
    metrics (``study_row``: its :func:`study` row, when the caller has read it)."""
    catalogue = _metric_catalogue(conn, study_id)
    if study_row is None:
        study_row = study(conn, study_id)
    return [name for name, _, _ in catalogue], _primary_of(catalogue, study_row)


def primary_metric(conn: sqlite3.Connection, study_id: str) -> str | None:
    """The metric a study is judged by, or None when its runs have no metric.

    Its declared primary outcome (upstream's study.yaml ``outcomes``, the one with
    ``primary: true``) when runs have values for it: an outcome of ``source_table: runs``
    is the runner's metric named by its ``column`` (upstream's ``primary_outcome`` column
    is ``metrics.primary_outcome``), any other an evaluator's metric of its name. Without
    one, the runner's ``primary_outcome`` (upstream's runs.csv column: the run's first
    evaluator value), else the first metric an evaluator recorded, else the first name.
    """
    return study_metrics(conn, study_id)[1]


def _primary_of(catalogue: list[tuple[str, str, str]], study_row: Row | None) -> str | None:
    """:func:`primary_metric` of a study's metric catalogue and its study row."""
    outcome = declared_primary_outcome(study_row)
    wanted: list[tuple[str, Any]] = [("run", "primary_outcome"), ("evaluator", None)]
    if outcome is not None:
        name, column = outcome.get("name"), outcome.get("column")
        by_table = [("run", column), ("run", name), ("evaluator", name), ("evaluator", column)]
        declared = by_table if outcome.get("source_table") == "runs" else by_table[2:] + by_table[:2]
        wanted = [(source, recorded) for source, recorded in declared if isinstance(recorded, str)] + wanted
    for source, recorded in wanted:
        for name, found_source, found_recorded in catalogue:
            if found_source == source and recorded in (None, found_recorded):
                return name
    return catalogue[0][0] if catalogue else None


def _decoded(text: Any) -> Any:
    """A JSON text column decoded, or None when it is absent or not JSON."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def declared_primary_outcome(row: Row | None) -> Row | None:
    """A study's primary outcome as its study.yaml declared it (``name``, ``source_table``,
    ``column``...), or None when it declared none."""
    extra = _decoded(row.get("extra")) if row else None
    outcomes = extra.get("outcomes") if isinstance(extra, dict) else None
    for outcome in outcomes if isinstance(outcomes, list) else []:
        if isinstance(outcome, dict) and outcome.get("primary") is True and isinstance(outcome.get("name"), str):
            return outcome
    return None


def run_result(run: Row) -> Row | None:
    """The runner's record of a run's latest attempt (its ``result``), decoded, or None.

    ``metrics``, ``outputs``, ``latency_s``, execution metadata, trace and artifact
    references and provenance, with the ``status``, ``reason``, ``error`` and ``at`` of the
    outcome it came with (docs/events.md); NaN and Infinity as floats.
    """
    found = _decoded(run.get("result"))
    return from_canonical(found) if isinstance(found, dict) else None


def run_latencies(conn: sqlite3.Connection, *, study_id: str | None = None, run_id: str | None = None,
                  condition_id: str | None = None) -> dict[str, float]:
    """``{run_id: seconds}`` of the ended runs in scope: the runner's own ``latency_s`` when
    it recorded one, else end minus start by the ledger's times.

    The runner measures with a monotonic clock and writes times to the second, so its
    latency is the figure to trust: a 60 ms run that crossed a second boundary is 1.0 s by
    its times.
    """
    scope, params = _run_scope(study_id, run_id)
    if condition_id is not None:
        scope, params = f"{scope} AND r.condition_id = ?", [*params, condition_id]
    latencies: dict[str, float] = {}
    for row in rows(conn.execute(
            f"SELECT r.run_id, r.status, r.started_at, r.ended_at, "
            f"CASE WHEN json_type(r.result, '$.latency_s') IN ('integer', 'real') "
            f"THEN json_extract(r.result, '$.latency_s') END AS latency "
            f"FROM runs r WHERE r.ended_at IS NOT NULL AND {scope}", params)):
        seconds = row["latency"] if row["latency"] is not None else run_duration(row)
        if seconds is not None:
            latencies[row["run_id"]] = float(seconds)
    return latencies


_TOKENS = ("total_tokens", "input_tokens", "output_tokens")


def resource_values(conn: sqlite3.Connection, study_id: str, condition_id: str | None = None, *,
                    latencies: dict[str, float] | None = None) -> dict[str, list[float]]:
    """What a study's (or one condition's) runs cost, from the runner's records.

    ``latencies`` is :func:`run_latencies` of the same scope when the caller has read it.

    Returns:
        ``{"latency_s": [...], "cost_usd": [...], "tokens": [...]}``, one value per run that
        has it: :func:`run_latencies`; the runner's ``metrics.cost_usd``; its
        ``metrics.total_tokens``, else ``input_tokens`` plus ``output_tokens`` (upstream's
        names). Only numbers count (a boolean or NaN is not a cost); an empty list means
        no run recorded that figure.
    """
    scope, params = _run_scope(study_id, None)
    if condition_id is not None:
        scope, params = f"{scope} AND r.condition_id = ?", [*params, condition_id]
    numbers = ", ".join(f"CASE WHEN json_type(r.result, '$.metrics.{key}') IN ('integer', 'real') "
                        f"THEN json_extract(r.result, '$.metrics.{key}') END"
                        for key in ("cost_usd", *_TOKENS))
    found: dict[str, list[float]] = {"latency_s": [], "cost_usd": [], "tokens": []}
    for cost, total, tokens_in, tokens_out in conn.execute(
            f"SELECT {numbers} FROM runs r WHERE r.result IS NOT NULL AND {scope}", params):
        if cost is not None:
            found["cost_usd"].append(float(cost))
        if total is not None:
            found["tokens"].append(float(total))
        elif tokens_in is not None or tokens_out is not None:
            found["tokens"].append(float((tokens_in or 0) + (tokens_out or 0)))
    if latencies is None:
        latencies = run_latencies(conn, study_id=study_id, condition_id=condition_id)
    found["latency_s"] = list(latencies.values())
    return found


# Student's t at 97.5% for 1..30 degrees of freedom; beyond, a Cornish-Fisher expansion
# around the normal quantile is within 0.001 of it.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_Z975 = 1.959964


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def non_finite_counts(values: Iterable[object]) -> dict[str, int]:
    """``{"NaN": 2, "Infinity": 1}`` for the non-finite floats among ``values``, named as
    JSON's extensions name them (never averaged, never plotted: counted and shown so)."""
    found: dict[str, int] = {}
    for value in values:
        if isinstance(value, float) and not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            found[name] = found.get(name, 0) + 1
    return found


def summarize(values: Iterable[Any]) -> Row:
    """A metric's values summarised: ``{"n", "mean", "low", "high", ...}``.

    ``n`` counts the finite values the mean is of; ``low``/``high`` bound a 95% interval
    (Student's t for numbers; Wilson's for true/false values, whose mean is the share that
    is true), null below two values. NaN, Infinity and -Infinity are never averaged: they
    are counted in ``non_finite`` (``{"NaN": 2}``), so a mean is never silently NaN.
    Text and null values are counted in ``other``.
    """
    values = list(values)
    numbers: list[float] = []
    other = 0
    all_bool = True
    for value in values:
        if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
            all_bool = all_bool and isinstance(value, bool)
            numbers.append(float(value))
        elif not isinstance(value, float):
            other += 1
    non_finite = non_finite_counts(values)
    n = len(numbers)
    summary: Row = {"n": n, "mean": None, "low": None, "high": None,
                    "kind": "proportion" if numbers and all_bool else "mean",
                    "non_finite": non_finite, "other": other}
    if not n:
        return summary
    mean = sum(numbers) / n
    summary["mean"] = mean
    if n >= 2 and summary["kind"] == "proportion":
        z = _Z975
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        # Rounding must not put an all-true mean (1.0) above its own upper bound.
        summary["low"], summary["high"] = max(0.0, min(mean, centre - half)), min(1.0, max(mean, centre + half))
    elif n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in numbers) / (n - 1))
        half = t_quantile(n - 1) * sd / math.sqrt(n)
        summary["low"], summary["high"] = mean - half, mean + half
    return summary


def planned_runs(study_row: Row | None, conditions_rows: list[Row]) -> dict[str, int] | None:
    """``{condition_id: runs planned}`` as upstream's runner plans them, or None when unknown.

    Upstream plans, for each admissible condition in order, replicates x agents x problems
    runs (the agent and problem are the condition's own when it has them as factors, else the
    study's lists, else one default) and cuts the list at ``max_runs``. Unknown without the
    study's run budget or its conditions.
    """
    budget = _decoded(study_row.get("run_budget")) if study_row else None
    if not isinstance(budget, dict) or not conditions_rows:
        return None
    replicates = budget.get("replicates")
    if not isinstance(replicates, int) or isinstance(replicates, bool):
        return None
    extra = _decoded(study_row.get("extra")) if study_row else None
    extra = extra if isinstance(extra, dict) else {}
    max_runs = budget.get("max_runs")
    left = max_runs if isinstance(max_runs, int) and not isinstance(max_runs, bool) else None
    planned = {}
    for row in conditions_rows:
        factors = _decoded(row.get("factors"))
        factors = factors if isinstance(factors, dict) else {}
        count = 0
        if row.get("admissible", 1):
            agents = 1 if {"agent_id", "agent", "agent_spec"} & set(factors) else len(extra.get("agent_specs") or []) or 1
            problems = 1 if {"problem_id", "problem"} & set(factors) else len(extra.get("problem_ids") or []) or 1
            count = replicates * agents * problems
            if left is not None:
                count = min(count, left)
                left -= count
        planned[row["condition_id"]] = count
    return planned


def condition_summaries(conn: sqlite3.Connection, study_id: str,
                        values: dict[str, dict[str, list[Any]]] | None = None, *, study_row: Row | None = None,
                        run_rows: list[Row] | None = None, latencies: dict[str, float] | None = None) -> list[Row]:
    """One row per condition of a study: its factors, progress, success rate and metrics.

    ``values`` (:func:`condition_metric_values`), ``study_row`` (:func:`study`),
    ``run_rows`` (:func:`runs` of the study) and ``latencies`` (:func:`run_latencies` of
    the study) are what the caller has read already; each missing one is read here.

    Conditions come from the study's conditions (in the order they were registered), then
    any condition its runs name that no conditions file listed.

    Returns:
        ``{"condition_id", "factors" (name -> level), "admissible" (None when unlisted),
        "runs_by_status", "runs", "planned" (None when the budget is unknown),
        "success_rate" (successes of the runs that ended in success or failure, or None),
        "metrics" (name -> :func:`summarize`), "duration_s" (summary of the ended runs' :func:`run_latencies`),
        "last_activity"}`` per condition.
    """
    listed = rows(conn.execute(
        "SELECT condition_id, factors, admissible FROM conditions WHERE study_id = ? ORDER BY seq, condition_id",
        (study_id,)))
    planned = planned_runs(study(conn, study_id) if study_row is None else study_row, listed)
    summaries: dict[str, Row] = {}
    for row in listed:
        factors = _decoded(row["factors"])
        summaries[row["condition_id"]] = _new_condition(row["condition_id"], factors, bool(row["admissible"]))
    if latencies is None:
        latencies = run_latencies(conn, study_id=study_id)
    durations: dict[str, list[float]] = {}
    for run_row in runs(conn, study_id=study_id) if run_rows is None else run_rows:
        key = run_row["condition_id"] or ""
        summary = summaries.setdefault(key, _new_condition(key, None, None))
        by_status = summary["runs_by_status"]
        by_status[run_row["status"]] = by_status.get(run_row["status"], 0) + 1
        summary["runs"] += 1
        summary["last_activity"] = max(filter(None, (summary["last_activity"], run_row.get("last_activity"))),
                                       default=None)
        seconds = latencies.get(run_row["run_id"])
        if seconds is not None:
            durations.setdefault(key, []).append(seconds)
    if values is None:
        values = condition_metric_values(conn, study_id)
    for key, summary in summaries.items():
        by_status = summary["runs_by_status"]
        ended = by_status.get("success", 0) + by_status.get("failed", 0)
        summary["success_rate"] = by_status.get("success", 0) / ended if ended else None
        summary["planned"] = None if planned is None else planned.get(key, 0)
        summary["metrics"] = {name: summarize(found) for name, found in values.get(key, {}).items()}
        summary["duration_s"] = summarize(durations.get(key, []))
    return list(summaries.values())


def _new_condition(condition_id: str, factors: Any, admissible: bool | None) -> Row:
    return {"condition_id": condition_id, "factors": factors if isinstance(factors, dict) else {},
            "admissible": admissible, "runs_by_status": {}, "runs": 0, "last_activity": None}


def condition_metric_values(conn: sqlite3.Connection, study_id: str) -> dict[str, dict[str, list[Any]]]:
    """``{condition_id: {metric: [each run's latest value]}}``, for distribution pictures."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in metric_values(conn, study_id=study_id):
        if row["name"] is not None:
            per_metric = table.setdefault(row["condition_id"] or "", {}).setdefault(row["name"], {})
            per_metric[row["run_id"]] = row["value"]
    return {key: {name: list(by_run.values()) for name, by_run in metrics.items()} for key, metrics in table.items()}


def value_text(value: Any, digits: int = 4) -> str:
    """A value as a person reads it: ``NaN``, ``Infinity``, ``true``, ``0.75`` (floats to
    ``digits`` significant digits); ``-`` when missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return f"{value:.{digits}g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def summary_text(summary: Row, digits: int = 4) -> str:
    """A :func:`summarize` result on one line: ``0.62 [0.41,0.83] n=4 +1 NaN``; ``-`` without values."""
    parts = []
    if summary["n"]:
        proportion = summary["kind"] == "proportion"
        mean = f"{summary['mean'] * 100:.0f}%" if proportion else value_text(summary["mean"], digits)
        parts.append(mean)
        if summary["low"] is not None:
            if proportion:
                parts.append(f"[{summary['low'] * 100:.0f},{summary['high'] * 100:.0f}]")
            else:
                parts.append(f"[{value_text(summary['low'], digits)},{value_text(summary['high'], digits)}]")
        parts.append(f"n={summary['n']}")
    parts += [f"+{count} {name}" for name, count in sorted(summary["non_finite"].items())]
    if summary["other"]:
        parts.append(f"+{summary['other']} other")
    return " ".join(parts) or "-"


def decode_nested(value: Any) -> Any:
    """A value with JSON text inside it decoded, at any depth, for display.

    Upstream writes some objects as JSON strings inside JSON (``execution_metadata``,
    ``condition_fingerprint``); only strings that hold a JSON object or array are decoded.
    """
    if isinstance(value, str) and value[:1] in "{[":
        decoded = _decoded(value)
        return decode_nested(decoded) if isinstance(decoded, (dict, list)) else value
    if isinstance(value, dict):
        return {key: decode_nested(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_nested(item) for item in value]
    return value


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``[(dotted.path, leaf value)]`` of a decoded value, in key order (lists by index)."""
    if isinstance(value, dict) and value:
        return [pair for key, item in value.items() for pair in flatten(item, f"{prefix}{key}.")]
    if isinstance(value, list) and value:
        return [pair for index, item in enumerate(value) for pair in flatten(item, f"{prefix}{index}.")]
    return [(prefix[:-1], value)] if prefix else []


PROVENANCE_COLUMNS = ("captured_at", "host", "platform", "python_version", "git_sha")


def provenance_fields(row: Row) -> list[tuple[str, Any]]:
    """A provenance snapshot as ``(field, value)`` pairs a person can read: the standard
    fields that are known, then ``package:NAME``, then every extra field with nested JSON
    text decoded, as dotted paths (``execution_metadata.agent_id``)."""
    fields: list[tuple[str, Any]] = [(name, row.get(name)) for name in PROVENANCE_COLUMNS
                                     if row.get(name) is not None]
    packages = _decoded(row.get("package_versions"))
    if isinstance(packages, dict):
        fields += [(f"package:{name}", version) for name, version in sorted(packages.items())]
    extra = decode_nested(_decoded(row.get("extra")))
    fields += flatten(extra) if isinstance(extra, dict) else []
    return fields


def difference(first: Iterable[Any], second: Iterable[Any]) -> Row:
    """``second``'s mean minus ``first``'s, with a 95% Welch interval: ``{"delta", "low", "high"}``.

    Only finite values count (true/false as 1/0), as in :func:`summarize`; the interval is
    null when either side has fewer than two values, the delta when either has none.
    """
    a, b = finite_values(first), finite_values(second)
    result: Row = {"delta": None, "low": None, "high": None}
    if not a or not b:
        return result
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    result["delta"] = mean_b - mean_a
    if len(a) < 2 or len(b) < 2:
        return result
    var_a = sum((x - mean_a) ** 2 for x in a) / (len(a) - 1) / len(a)
    var_b = sum((x - mean_b) ** 2 for x in b) / (len(b) - 1) / len(b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        result["low"] = result["high"] = result["delta"]
        return result
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = t_quantile(max(1, int(df))) * se
    result["low"], result["high"] = result["delta"] - half, result["delta"] + half
    return result


def finite_values(values: Iterable[Any]) -> list[float]:
    """The values a mean or a picture can use: finite numbers, true/false as 1/0."""
    return [float(v) for v in values
            if isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(v))]
