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

MetricValue = float | int | bool | str | None


def metric_values(conn: sqlite3.Connection, *, study_id: str | None = None,
                  run_id: str | None = None) -> list[Row]:
    """Every evaluator output of a study's (or one run's) runs, in sequence order.

    Values are read from the event bodies, so they are what the evaluator wrote: a boolean
    stays a boolean (the projection's column holds it as 0/1), and NaN and Infinity come
    back as floats, never as null.

    Returns:
        ``{"seq", "run_id", "condition_id", "status", "evaluator_id", "metric_name",
        "metric_unit", "aggregation_level", "value"}`` per output.
    """
    found_in = [(sql, value) for sql, value in (("r.study_id = ?", study_id), ("v.run_id = ?", run_id))
                if value is not None]
    where = f"WHERE {' AND '.join(sql for sql, _ in found_in)}" if found_in else ""
    params = [value for _, value in found_in]
    found = []
    for values in conn.execute(
        f"SELECT v.seq, v.run_id, r.condition_id, r.status, v.evaluator_id, v.metric_name, v.metric_unit, "
        f"v.aggregation_level, json_extract(e.body, '$.metric_value'), json_type(e.body, '$.metric_value') "
        f"FROM evaluations v JOIN runs r ON r.run_id = v.run_id JOIN events e ON e.seq = v.seq "
        f"{where} ORDER BY v.seq", params):
        *head, raw, kind = values
        row = dict(zip(("seq", "run_id", "condition_id", "status", "evaluator_id", "metric_name", "metric_unit",
                        "aggregation_level"), head, strict=True))
        row["value"] = _metric_value(raw, kind)
        found.append(row)
    return found


def _metric_value(raw: Any, kind: str | None) -> Any:
    """A value as json_extract/json_type read it from a body, decoded as the body meant it."""
    if kind in ("true", "false"):
        return kind == "true"
    if kind in ("object", "array"):
        return from_canonical(json.loads(raw))
    return raw


def run_metrics(conn: sqlite3.Connection, *, study_id: str | None = None,
                run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """``{run_id: {metric name: value}}``: each run's latest value of each metric.

    Two evaluators writing one metric name: the later output counts.
    """
    table: dict[str, dict[str, Any]] = {}
    for row in metric_values(conn, study_id=study_id, run_id=run_id):
        if row["metric_name"] is not None:
            table.setdefault(row["run_id"], {})[row["metric_name"]] = row["value"]
    return table


def metric_names(conn: sqlite3.Connection, study_id: str) -> list[str]:
    """The metric names a study's runs have values for, in the order they first appeared."""
    return [name for (name,) in conn.execute(
        "SELECT v.metric_name FROM evaluations v JOIN runs r ON r.run_id = v.run_id "
        "WHERE r.study_id = ? AND v.metric_name IS NOT NULL GROUP BY v.metric_name ORDER BY min(v.seq)",
        (study_id,))]


def primary_metric(conn: sqlite3.Connection, study_id: str) -> str | None:
    """The metric a study is judged by: its declared primary outcome when runs have values
    for it, else the first metric its runs recorded (upstream's ``primary_outcome`` is the
    run's first evaluator metric), else None."""
    names = metric_names(conn, study_id)
    declared = _primary_outcome(study(conn, study_id))
    if declared is not None and declared in names:
        return declared
    return names[0] if names else None


def _decoded(text: Any) -> Any:
    """A JSON text column decoded, or None when it is absent or not JSON."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _primary_outcome(row: Row | None) -> str | None:
    extra = _decoded(row.get("extra")) if row else None
    outcomes = extra.get("outcomes") if isinstance(extra, dict) else None
    for outcome in outcomes if isinstance(outcomes, list) else []:
        if isinstance(outcome, dict) and outcome.get("primary") and isinstance(outcome.get("name"), str):
            return str(outcome["name"])
    return None


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


def summarize(values: Iterable[Any]) -> Row:
    """A metric's values summarised: ``{"n", "mean", "low", "high", ...}``.

    ``n`` counts the finite values the mean is of; ``low``/``high`` bound a 95% interval
    (Student's t for numbers; Wilson's for true/false values, whose mean is the share that
    is true), null below two values. NaN, Infinity and -Infinity are never averaged: they
    are counted in ``non_finite`` (``{"NaN": 2}``), so a mean is never silently NaN.
    Text and null values are counted in ``other``.
    """
    numbers: list[float] = []
    non_finite: dict[str, int] = {}
    other = 0
    all_bool = True
    for value in values:
        if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
            all_bool = all_bool and isinstance(value, bool)
            numbers.append(float(value))
        elif isinstance(value, float):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            non_finite[name] = non_finite.get(name, 0) + 1
        else:
            other += 1
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
                        values: dict[str, dict[str, list[Any]]] | None = None) -> list[Row]:
    """One row per condition of a study: its factors, progress, success rate and metrics.

    ``values`` is :func:`condition_metric_values` when the caller has read it already.

    Conditions come from the study's conditions (in the order they were registered), then
    any condition its runs name that no conditions file listed.

    Returns:
        ``{"condition_id", "factors" (name -> level), "admissible" (None when unlisted),
        "runs_by_status", "runs", "planned" (None when the budget is unknown),
        "success_rate" (successes of the runs that ended in success or failure, or None),
        "metrics" (name -> :func:`summarize`), "duration_s" (summary of ended runs' durations),
        "last_activity"}`` per condition.
    """
    listed = rows(conn.execute(
        "SELECT condition_id, factors, admissible FROM conditions WHERE study_id = ? ORDER BY seq, condition_id",
        (study_id,)))
    planned = planned_runs(study(conn, study_id), listed)
    summaries: dict[str, Row] = {}
    for row in listed:
        factors = _decoded(row["factors"])
        summaries[row["condition_id"]] = _new_condition(row["condition_id"], factors, bool(row["admissible"]))
    durations: dict[str, list[float]] = {}
    for run_row in runs(conn, study_id=study_id):
        key = run_row["condition_id"] or ""
        summary = summaries.setdefault(key, _new_condition(key, None, None))
        by_status = summary["runs_by_status"]
        by_status[run_row["status"]] = by_status.get(run_row["status"], 0) + 1
        summary["runs"] += 1
        summary["last_activity"] = max(filter(None, (summary["last_activity"], run_row.get("last_activity"))),
                                       default=None)
        seconds = run_duration(run_row) if run_row.get("ended_at") else None
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
        if row["metric_name"] is not None:
            per_metric = table.setdefault(row["condition_id"] or "", {}).setdefault(row["metric_name"], {})
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
