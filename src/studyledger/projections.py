"""Read tables derived from the events.

Every table here is a fold of the events in sequence order and can be dropped and rebuilt
at any time (:func:`rebuild`); :func:`apply` folds newly appended events in the same
transaction that appended them, so the tables are never behind the events a reader sees.
``projection_state`` remembers the last sequence applied.

The status a run shows is chosen by a rule that does not depend on the order in which
sources were ingested: a terminal status beats a non-terminal one, and among terminal
statuses ``failed`` > ``success`` > ``skipped`` (``running`` > ``pending`` before that).
Two sources that disagree on the outcome are both kept as transitions and the disagreement
is an anomaly; the conservative pick is "failed" (see docs/events.md).

Status anomalies do not depend on ingestion order either: whenever a run gets a status
report, all its reports are judged again in the order they happened (by their times,
compared at the precision each source writes, see :func:`time_span`), never in the order
they were read.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson

from .codec import Codec, UnreadableRow, decode_time
from .events import (
    BODY_SHAPES,
    EVENT_COLUMNS,
    EventKind,
    StoredEvent,
    canonical_body,
    misfit_fields,
    parse_instant,
)
from .schema import (
    STATUS_PRECEDENCE,
    TERMINAL_STATUSES,
    ConstraintSeverity,
    RunStatus,
    is_legal_transition,
    shown_status,
)
from .store import is_sqlite
from .worker import Worker, can_fork, collector_paused

PROJECTION_VERSION = "7"

ANOMALY_SEVERITY: dict[str, ConstraintSeverity] = {
    "conflicting_outcome": ConstraintSeverity.ERROR,
    "illegal_transition": ConstraintSeverity.ERROR,
    "conflicting_registration": ConstraintSeverity.ERROR,
    "unreadable_event": ConstraintSeverity.ERROR,
    "invalid_field": ConstraintSeverity.WARNING,
}
"""How much each kind of anomaly asks of a person, in the seed's severity words: an error
is a disagreement about what happened to a run; a warning is a value read as missing."""

RUN_FIELDS = ("study_id", "condition_id", "replicate", "agent_id", "problem_id", "seed")

STATUS_ANOMALIES = ("conflicting_outcome", "illegal_transition")
"""Anomalies judged on a run's status reports together (the others on one event alone)."""

ANOMALY_SLOTS = 256
"""Anomaly ids per event: one event yields at most one anomaly per typed field, per
registration field and one for its status, far fewer than this."""

TABLES: dict[str, str] = {
    "studies": """CREATE TABLE studies (
        study_id TEXT PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        seed_policy TEXT,
        run_budget TEXT,
        extra TEXT,
        registered INTEGER NOT NULL DEFAULT 0,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        last_activity TEXT
    )""",
    "runs": """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        study_id TEXT,
        condition_id TEXT,
        replicate INTEGER,
        agent_id TEXT,
        problem_id TEXT,
        seed INTEGER,
        status TEXT NOT NULL,
        status_reason TEXT,
        error TEXT,
        registered_at TEXT,
        started_at TEXT,
        ended_at TEXT,
        observation_count INTEGER NOT NULL DEFAULT 0,
        anomaly_count INTEGER NOT NULL DEFAULT 0,
        last_activity TEXT,
        last_recorded TEXT,
        result TEXT,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL
    )""",
    # Only what observations are found by (their indexes end in seq, the rowid); every other
    # column comes from the event through the observation_rows view, so ingesting an
    # observation writes it once.
    "observations": """CREATE TABLE observations (
        seq INTEGER PRIMARY KEY,
        run_id TEXT,
        level TEXT,
        event_type TEXT,
        tool_name TEXT
    )""",
    "provenance": """CREATE TABLE provenance (
        seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        study_id TEXT,
        captured_at TEXT,
        host TEXT,
        platform TEXT,
        python_version TEXT,
        git_sha TEXT,
        package_versions TEXT,
        extra TEXT
    )""",
    # One row per status report. from_status, shown_status, legal and ordinal are derived
    # from all the run's reports in the order they happened (ordinal 1, 2, ...), and are
    # rewritten whenever the run gets another report.
    "transitions": """CREATE TABLE transitions (
        seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        from_status TEXT,
        to_status TEXT NOT NULL,
        shown_status TEXT NOT NULL,
        reason TEXT,
        error TEXT,
        at TEXT,
        legal INTEGER NOT NULL,
        ordinal INTEGER NOT NULL
    )""",
    "evaluations": """CREATE TABLE evaluations (
        seq INTEGER PRIMARY KEY,
        run_id TEXT,
        evaluator_id TEXT,
        metric_name TEXT,
        metric_value,
        metric_unit TEXT,
        aggregation_level TEXT,
        notes_json TEXT
    )""",
    "conditions": """CREATE TABLE conditions (
        study_id TEXT NOT NULL,
        condition_id TEXT NOT NULL,
        factors TEXT,
        blocks TEXT,
        admissible INTEGER NOT NULL,
        constraint_messages TEXT,
        assignment_meta TEXT,
        seq INTEGER NOT NULL,
        PRIMARY KEY (study_id, condition_id)
    )""",
    "rejections": """CREATE TABLE rejections (
        seq INTEGER PRIMARY KEY,
        file TEXT,
        line INTEGER,
        offset INTEGER,
        reason TEXT,
        raw TEXT
    )""",
    # id = seq * ANOMALY_SLOTS + n: the n-th anomaly of that event (0 is its status
    # anomaly), so a rebuild gives every anomaly the id it had.
    "anomalies": """CREATE TABLE anomalies (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        run_id TEXT,
        study_id TEXT,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        message TEXT NOT NULL
    )""",
    "projection_state": """CREATE TABLE projection_state (
        name TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    )""",
}

VIEWS = (
    """CREATE VIEW observation_rows AS SELECT
        o.seq AS seq,
        json_extract(e.body, '$.timestamp') AS timestamp,
        json_extract(e.body, '$.record_id') AS record_id,
        json_extract(e.body, '$.text') AS text,
        json_extract(e.body, '$.session_id') AS session_id,
        json_extract(e.body, '$.actor_id') AS actor_id,
        o.event_type AS event_type,
        json_extract(e.body, '$.meta_json') AS meta_json,
        o.level AS level,
        e.study_id AS study_id,
        o.run_id AS run_id,
        json_extract(e.body, '$.condition_id') AS condition_id,
        json_extract(e.body, '$.trial_id') AS trial_id,
        json_extract(e.body, '$.step_id') AS step_id,
        o.tool_name AS tool_name,
        json_extract(e.body, '$.evaluation_id') AS evaluation_id
    FROM observations o JOIN events_json e ON e.seq = o.seq""",
)

INDEXES = (
    "CREATE INDEX runs_study ON runs(study_id, status)",
    "CREATE INDEX observations_run ON observations(run_id)",
    "CREATE INDEX observations_run_filter ON observations(run_id, level, event_type)",
    "CREATE INDEX provenance_run ON provenance(run_id, seq)",
    "CREATE INDEX transitions_run ON transitions(run_id, seq)",
    "CREATE INDEX evaluations_run ON evaluations(run_id, seq)",
    "CREATE INDEX anomalies_run ON anomalies(run_id, seq)",
)

_OBSERVATION_INDEXES = tuple(ddl for ddl in INDEXES if " ON observations(" in ddl)

PROJECTION_TABLES = tuple(name for name in TABLES if name != "projection_state")


def create_tables(conn: sqlite3.Connection, *, indexes: Sequence[str] = INDEXES) -> None:
    """Create the projection tables and ``indexes`` (inside a transaction)."""
    for ddl in TABLES.values():
        conn.execute(ddl)
    for ddl in (*indexes, *VIEWS):
        conn.execute(ddl)
    conn.execute("INSERT INTO projection_state(name, last_seq) VALUES ('all', 0)")


def build(conn: sqlite3.Connection, *, table: str = "events_json", until: int | None = None,
          condition: str = "") -> int:
    """Create the projection tables and fold the stored events into them (:func:`fold_stored`).

    The indexes on ``observations`` are made after the fold: one sorted build of each costs
    less than inserting every observation into it (the fold looks nothing up by them).

    Returns:
        How many events were folded.
    """
    create_tables(conn, indexes=[ddl for ddl in INDEXES if ddl not in _OBSERVATION_INDEXES])
    folded = fold_stored(conn, table=table, until=until, condition=condition)
    for ddl in _OBSERVATION_INDEXES:
        conn.execute(ddl)
    return folded


def drop_tables(conn: sqlite3.Connection) -> None:
    """Drop every projection table (inside a transaction)."""
    conn.execute("DROP VIEW IF EXISTS observation_rows")
    for name in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def last_applied(conn: sqlite3.Connection) -> int:
    """The last event sequence folded into the tables."""
    row = conn.execute("SELECT last_seq FROM projection_state WHERE name = 'all'").fetchone()
    return int(row[0]) if row else 0


def _json(value: Any) -> str | None:
    return None if value is None else canonical_body(value)


def _later(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


_PREFETCH_CHUNK = 500
"""Keys per prefetch query: well under SQLite's limit on bound values."""


class _Fold:
    """Folds one batch of events; touched study and run rows are written back once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.runs: dict[str, dict[str, Any]] = {}
        self.studies: dict[str, dict[str, Any]] = {}
        self.observations: list[tuple[Any, ...]] = []
        self.anomalies: list[tuple[Any, ...]] = []
        self.status_changed: set[str] = set()
        self.event_anomalies = 0
        self.absent: set[tuple[str, str]] = set()  # (table, key) of rows known not to exist yet
        self.columns: dict[str, list[str]] = {}  # a table's column names, as prefetch read them

    def prefetch(self, events: Sequence[StoredEvent]) -> None:
        """Read the rows of the runs and studies a batch names in a few statements.

        One query per run would be one round trip per run on a database server, where
        that, not the fold, bounded ingestion.
        """
        for table, key, values in (("runs", "run_id", {event.run_id for event in events if event.run_id}),
                                   ("studies", "study_id", {event.study_id for event in events if event.study_id})):
            cache = self.runs if table == "runs" else self.studies
            wanted = sorted(values - cache.keys())
            for start in range(0, len(wanted), _PREFETCH_CHUNK):
                chunk = wanted[start:start + _PREFETCH_CHUNK]
                found = self.conn.execute(
                    f"SELECT * FROM {table} WHERE {key} IN ({', '.join('?' * len(chunk))})", chunk)
                names = self.columns[table] = [d[0] for d in found.description]
                for values_found in found.fetchall():
                    row = dict(zip(names, values_found, strict=True))
                    cache[row[key]] = row
                self.absent.update((table, value) for value in chunk if value not in cache)

    def _load(self, cache: dict[str, dict[str, Any]], table: str, key: str, value: str,
              **new: Any) -> dict[str, Any]:
        """A row of ``table`` from the batch's cache, the table, or ``new`` defaults."""
        row = cache.get(value)
        if row is None:
            values = None
            names = self.columns.get(table) if (table, value) in self.absent else None
            if names is None:
                found = self.conn.execute(f"SELECT * FROM {table} WHERE {key} = ?", (value,))
                names = [d[0] for d in found.description]
                values = found.fetchone()
            if values is not None:
                row = dict(zip(names, values, strict=True))
            else:
                row = {name: None for name in names}
                row.update({key: value}, **new)
            cache[value] = row
        return row

    def run(self, run_id: str, event: StoredEvent) -> dict[str, Any]:
        row = self._load(self.runs, "runs", "run_id", run_id, status=RunStatus.PENDING.value,
                         observation_count=0, anomaly_count=0, first_seq=event.seq)
        row["last_seq"] = event.seq
        row["last_activity"] = _later(row["last_activity"], event.occurred_at)
        row["last_recorded"] = _later(row["last_recorded"], event.recorded_at)
        return row

    def study(self, study_id: str, event: StoredEvent) -> dict[str, Any]:
        row = self._load(self.studies, "studies", "study_id", study_id, title="", description="",
                         registered=0, first_seq=event.seq)
        row["last_seq"] = event.seq
        row["last_activity"] = _later(row["last_activity"], event.occurred_at or event.recorded_at)
        return row

    def anomaly(self, event: StoredEvent, run_id: str | None, kind: str, message: str) -> None:
        severity = ANOMALY_SEVERITY[kind].value
        self.event_anomalies += 1
        anomaly_id = event.seq * ANOMALY_SLOTS + self.event_anomalies
        self.anomalies.append((anomaly_id, event.seq, run_id, event.study_id, kind, severity, message))
        if run_id is not None:
            self.run(run_id, event)["anomaly_count"] += 1

    def apply(self, event: StoredEvent) -> None:
        self.event_anomalies = 0
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            # A stored body is only as good as whatever wrote it (a raw INSERT, an old
            # version, a forged line): a body the fold cannot use becomes an anomaly, so
            # every history folds, and verify and replay can report on it.
            try:
                body = event.data
                if not isinstance(body, dict):
                    raise ValueError("the body is not a JSON object")
                body = _clean(self, event, body)
                for key in BODY_SHAPES[event.kind].required:
                    if body.get(key) is None:
                        raise ValueError(f"its body has no {key!r}")
                handler(self, event, body)
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError, sqlite3.InterfaceError,
                    sqlite3.ProgrammingError) as exc:
                # Binding errors mean a value SQLite cannot store (an object where text
                # belongs); a failed statement leaves no row, so the fold stays consistent.
                problem = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
                message = f"{event.kind} event could not be applied: {problem}"
                if isinstance(exc, KeyError):
                    message = f"{event.kind} event could not be applied: its body has no {problem!r}"
                self.anomaly(event, event.run_id, "unreadable_event", message)
        if event.study_id:
            self.study(event.study_id, event)

    def flush(self) -> None:
        if self.observations:
            self.conn.executemany(
                "INSERT INTO observations VALUES (?,?,?,?,?)",
                self.observations,
            )
        if self.anomalies:
            self.conn.executemany(
                "INSERT INTO anomalies(id, seq, run_id, study_id, kind, severity, message) VALUES (?,?,?,?,?,?,?)",
                self.anomalies,
            )
        changed = sorted(self.status_changed)
        for start in range(0, len(changed), _PREFETCH_CHUNK):
            chunk = changed[start:start + _PREFETCH_CHUNK]
            _judge_reports(self.conn, {run_id: self.runs[run_id]["study_id"] for run_id in chunk})
            counts = dict(self.conn.execute(
                f"SELECT run_id, count(*) FROM anomalies WHERE run_id IN ({', '.join('?' * len(chunk))}) "
                "GROUP BY run_id", chunk).fetchall())
            for run_id in chunk:
                self.runs[run_id]["anomaly_count"] = counts.get(run_id, 0)
        _upsert(self.conn, "studies", "study_id", self.studies.values())
        _upsert(self.conn, "runs", "run_id", self.runs.values())


def _clean(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> dict[str, Any]:
    """The body with fields its kind's shape refuses (events.BODY_SHAPES) read as null, each flagged.

    Projections keep these fields in typed columns and compare them (times, ids); a number
    where a time belongs would otherwise be stored as text by SQLite's column affinity in one
    batch and compared as a number in the next, and rebuilds would disagree; and every
    reader of the tables may then rely on the shape (factors is an object, a head has a seq).
    """
    wrong = event.misfits if event.misfits is not None else misfit_fields(event.kind, body)
    if not wrong:
        return body
    for key in wrong:
        fold.anomaly(event, event.run_id, "invalid_field",
                     f"{event.kind} field {key!r} is not {_wanted(event.kind, key)}; read as null")
    return {**body, **dict.fromkeys(wrong)}


def _wanted(kind: str, key: str) -> str:
    shape = BODY_SHAPES[kind]
    return (shape.required.get(key) or shape.optional[key]).name


def _upsert(conn: sqlite3.Connection, table: str, key: str, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    if not rows:
        return
    names = list(rows[0])
    updates = ", ".join(f"{name} = excluded.{name}" for name in names if name != key)
    conn.executemany(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT({key}) DO UPDATE SET {updates}",
        [tuple(row[name] for name in names) for row in rows],
    )


def _on_study(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> None:
    row = fold.study(body["study_id"], event)
    for name in ("title", "description"):
        if body.get(name):
            row[name] = body[name]
    for name in ("seed_policy", "run_budget", "extra"):
        if body.get(name) is not None:
            row[name] = _json(body[name])
    row["registered"] = 1


def _on_run(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> None:
    row = fold.run(body["run_id"], event)
    row["registered_at"] = row["registered_at"] or body.get("at") or event.recorded_at
    for name in RUN_FIELDS:
        new = body.get(name)
        if new is None:
            continue
        old = row[name]
        if old is not None and old != new:
            fold.anomaly(event, body["run_id"], "conflicting_registration",
                         f"{name} was {old!r}, a later registration says {new!r}")
            continue
        if name == "study_id" and old is None:
            # Status anomalies name the run's study: judge them again now it is known.
            fold.status_changed.add(body["run_id"])
        row[name] = new


def _pick(old: str | None, new: str | None, *, latest: bool) -> str | None:
    """The later (or earlier) of two ISO times; an unparseable one loses to a parseable one."""
    if old is None or new is None:
        return old or new
    a, b = parse_instant(old), parse_instant(new)
    if a is None or b is None:
        return old if b is None else new
    return (new if b > a else old) if latest else (new if b < a else old)


_FRACTION = re.compile(r"[.,](\d+)")
_UNITS = {2: timedelta(hours=1), 4: timedelta(minutes=1), 6: timedelta(seconds=1)}


def time_span(text: str | None) -> tuple[datetime, datetime] | None:
    """The moments an ISO time can mean, ``[start, end)``, at the precision it is written in.

    Sources write times at different precisions: upstream's runner to the whole second
    (``…T17:49:55+00:00``, cut from a later moment), a trace with microseconds. A time
    written to the second means any moment of that second; comparing it with a precise one
    as if it were the second's first microsecond makes a trace event "later" than a
    runner's outcome that in truth came after it. None when absent or unparseable.
    """
    start = parse_instant(text)
    if start is None or text is None:
        return None
    clock = re.split(r"[Tt ]", text, maxsplit=1)
    if len(clock) == 1:
        return start, start + timedelta(days=1)
    digits = re.split(r"[+\-Zz]", clock[1], maxsplit=1)[0]
    fraction = _FRACTION.search(digits)
    if fraction:
        return start, start + timedelta(microseconds=10 ** (6 - min(len(fraction[1]), 6)))
    whole = len(digits.replace(":", ""))
    return start, start + _UNITS.get(whole, timedelta(microseconds=1))


def _judge(state: str, reached: tuple[datetime, datetime] | None, reported: str,
           span: tuple[datetime, datetime] | None) -> tuple[str | None, str]:
    """One report against the run's state so far: ``(anomaly kind or None, state after)``.

    ``reached`` is when the run reached ``state``. Ordinary: the status it already has
    (two sources confirming), a legal transition, or an earlier status reported at a
    moment that may lie before the run reached its state (a trace's RunStarted and the
    runner's outcome written to the same second). Two different outcomes conflict (the
    conservative one is kept). Anything else is an illegal transition, and the run is then
    where the report says: a run started again after it ended is a new attempt, flagged
    once, whose own reports follow from there.
    """
    if reported == state or is_legal_transition(state, reported):
        return None, reported
    if state in TERMINAL_STATUSES and reported in TERMINAL_STATUSES:
        return "conflicting_outcome", shown_status(state, reported)
    late = STATUS_PRECEDENCE[RunStatus(reported)] < STATUS_PRECEDENCE[RunStatus(state)]
    if late and span is not None and reached is not None and span[0] < reached[1]:
        return None, state
    return "illegal_transition", reported


def _report_order(timed: tuple[tuple[Any, ...], tuple[datetime, datetime] | None]) -> tuple[Any, ...]:
    """The order reports happened in, of ``(report, its time_span)``: by time (unknown times
    last), then by status (a start before an outcome given in the same second), then by
    what they say; the sequence number only tells apart reports that say the same thing."""
    (seq, status, reason, error, at), span = timed
    when = (0, span[0], span[1]) if span is not None else (1,)
    return (when, STATUS_PRECEDENCE[RunStatus(status)], at or "", reason or "", error or "", seq)


def _judge_reports(conn: sqlite3.Connection, runs: Mapping[str, str | None]) -> None:
    """Judge all of each run's status reports in the order they happened; rewrite their
    transitions' derived columns and their status anomalies.

    Args:
        runs: run id -> its study id. Read and written in a few statements for all of them,
            not a few per run: on a database server each statement waited on is a round trip.
    """
    marks = ", ".join("?" * len(runs))
    reports: dict[str, list[tuple[Any, ...]]] = {run_id: [] for run_id in runs}
    for run_id, *report in conn.execute(
            f"SELECT run_id, seq, to_status, reason, error, at FROM transitions WHERE run_id IN ({marks})",
            list(runs)).fetchall():
        reports[run_id].append(tuple(report))
    updates, anomalies = [], []
    for run_id, study_id in runs.items():
        state = shown = RunStatus.PENDING.value
        reached: tuple[datetime, datetime] | None = None
        timed = [(report, time_span(report[4])) for report in reports[run_id]]
        for ordinal, ((seq, reported, *_), span) in enumerate(sorted(timed, key=_report_order), start=1):
            kind, after = _judge(state, reached, reported, span)
            now_shown = shown_status(shown, reported)
            if kind is not None:
                message = (f"sources disagree: {state} and {reported}; showing {now_shown}"
                           if kind == "conflicting_outcome" else f"{state} -> {reported} is not a legal transition")
                anomalies.append((seq * ANOMALY_SLOTS, seq, run_id, study_id, kind,
                                  ANOMALY_SEVERITY[kind].value, message))
            updates.append((state, now_shown, int(kind is None), ordinal, seq))
            if after != state:
                state, reached = after, span
            shown = now_shown
    conn.executemany("UPDATE transitions SET from_status = ?, shown_status = ?, legal = ?, ordinal = ? "
                     "WHERE seq = ?", updates)
    kinds = ", ".join("?" * len(STATUS_ANOMALIES))
    conn.execute(f"DELETE FROM anomalies WHERE run_id IN ({marks}) AND kind IN ({kinds})",
                 (*runs, *STATUS_ANOMALIES))
    conn.executemany("INSERT INTO anomalies(id, seq, run_id, study_id, kind, severity, message) "
                     "VALUES (?,?,?,?,?,?,?)", anomalies)


def _later_result(old: str | None, new: dict[str, Any]) -> str:
    """The runner's record of a run's latest attempt: the one that ended last (ties: the
    larger canonical text), whatever the order the attempts were read in."""
    text = canonical_body(new)
    if old is None:
        return text
    kept = json.loads(old)
    a, b = parse_instant(kept.get("at")), parse_instant(new.get("at"))
    if a is not None and b is not None and a != b:
        return text if b > a else old
    if (a is None) != (b is None):
        return text if a is None else old
    return max(old, text)


def _on_status(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> None:
    run_id = body["run_id"]
    row = fold.run(run_id, event)
    if body.get("study_id") and row["study_id"] is None:
        row["study_id"] = body["study_id"]
    current, reported = row["status"], body["status"]
    at = body.get("at") or event.recorded_at
    shown = shown_status(current, reported)
    # Times and reasons are chosen so that the order sources were ingested in does not
    # matter: the earliest start; for a confirmed outcome the latest end with its reason
    # (a confirmation without a reason does not erase one).
    if reported == RunStatus.RUNNING:
        row["started_at"] = _pick(row["started_at"], at, latest=False)
    if reported == current and reported in TERMINAL_STATUSES:
        if _pick(row["ended_at"], at, latest=True) != row["ended_at"]:
            row["ended_at"] = at
            row["status_reason"] = body.get("reason") or row["status_reason"]
            row["error"] = body.get("error") or row["error"]
        else:
            row["status_reason"] = row["status_reason"] or body.get("reason")
            row["error"] = row["error"] or body.get("error")
    elif shown == reported and reported != current:
        if reported in TERMINAL_STATUSES:
            row["ended_at"] = at
        row["status_reason"] = body.get("reason")
        row["error"] = body.get("error")
    elif reported in TERMINAL_STATUSES and row["ended_at"] is None:
        row["ended_at"] = at
    row["status"] = shown
    result = body.get("result")
    if isinstance(result, dict):
        record = {**result, **{key: body.get(key) for key in ("status", "reason", "error", "at")}}
        row["result"] = _later_result(row["result"], record)
    # Judged with the run's other reports when the batch is written (see _judge_reports).
    fold.conn.execute(
        "INSERT INTO transitions VALUES (?,?,?,?,?,?,?,?,?,?)",
        (event.seq, run_id, current, reported, shown, body.get("reason"), body.get("error"),
         body.get("at"), 1, 0),
    )
    fold.status_changed.add(run_id)


def _on_provenance(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> None:
    fold.run(body["run_id"], event)
    data = body.get("provenance") or {}
    fold.conn.execute(
        "INSERT INTO provenance VALUES (?,?,?,?,?,?,?,?,?,?)",
        (event.seq, body["run_id"], body.get("study_id"), data.get("captured_at"),
         data.get("host"), data.get("platform"), data.get("python_version"), data.get("git_sha"),
         _json(data.get("package_versions") or {}), _json(data.get("extra") or {})),
    )


def _on_observation(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> None:
    run_id = body.get("run_id")
    if run_id:
        row = fold.run(run_id, event)
        row["observation_count"] += 1
        if row["study_id"] is None and body.get("study_id"):
            row["study_id"] = body["study_id"]
            fold.status_changed.add(run_id)  # its status anomalies name the study
    fold.observations.append((event.seq, run_id, body.get("level"), body.get("event_type"), body.get("tool_name")))


def _on_evaluation(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> None:
    if body.get("run_id"):
        fold.run(body["run_id"], event)
    value = body.get("metric_value")
    fold.conn.execute(
        "INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?)",
        (event.seq, body.get("run_id"), body.get("evaluator_id"), body.get("metric_name"),
         _json(value) if isinstance(value, (dict, list)) else value, body.get("metric_unit"),
         body.get("aggregation_level"), _json(body.get("notes_json"))),
    )


def _on_condition(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> None:
    fold.conn.execute(
        "INSERT INTO conditions VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(study_id, condition_id) DO UPDATE "
        "SET factors = excluded.factors, blocks = excluded.blocks, admissible = excluded.admissible, "
        "constraint_messages = excluded.constraint_messages, "
        "assignment_meta = excluded.assignment_meta, seq = excluded.seq",
        (body["study_id"], body["condition_id"], _json(body.get("factors") or {}),
         _json(body.get("blocks") or {}), int(bool(body.get("admissible", True))),
         _json(body.get("constraint_messages") or []), _json(body.get("assignment_meta") or {}),
         event.seq),
    )


def source_file(source: str) -> str | None:
    """The file a ``file:PATH:LINE:OFFSET`` source names (None for another kind of source)."""
    if not source.startswith("file:"):
        return None
    parts = source[len("file:"):].rsplit(":", 2)
    return parts[0] if len(parts) == 3 else None


def _on_rejection(fold: _Fold, event: StoredEvent, body: dict[str, Any]) -> None:
    # A rejection names no file in its body (so a copy read elsewhere is the same event):
    # the file is where it was first read. Older bodies still name theirs.
    fold.conn.execute(
        "INSERT INTO rejections VALUES (?,?,?,?,?,?)",
        (event.seq, body.get("file") or source_file(event.source), body.get("line"), body.get("offset"),
         body.get("reason"), body.get("raw")),
    )


_HANDLERS = {
    EventKind.STUDY_REGISTERED.value: _on_study,
    EventKind.RUN_REGISTERED.value: _on_run,
    EventKind.RUN_STATUS_CHANGED.value: _on_status,
    EventKind.PROVENANCE_CAPTURED.value: _on_provenance,
    EventKind.OBSERVATION_RECORDED.value: _on_observation,
    EventKind.EVALUATION_RECORDED.value: _on_evaluation,
    EventKind.LINE_REJECTED.value: _on_rejection,
    EventKind.CONDITION_REGISTERED.value: _on_condition,
}


ObservationRow = tuple[Any, Any, Any, Any, Any]
"""What the fold takes from an observation's body: ``(run_id, study_id, level, event_type,
tool_name)``."""


def observation_row(kind: str, body: dict[str, Any] | None, misfits: tuple[str, ...] | None) -> ObservationRow | None:
    """The fields the fold takes from an observation it reads whole and flags nothing in.

    None for any other event: another kind, a body not at hand, a field its type refuses
    or misfits not known (:func:`~studyledger.events.misfit_fields`), a required field
    absent. Such an observation folds set-based (see :func:`apply`); an ingest worker hands
    this over instead of the decoded body, which costs more to send than to parse.
    """
    if kind != _OBSERVATION or body is None or misfits != () or not _REQUIRED_OBSERVATION.issubset(body):
        return None
    get = body.get
    return get("run_id"), get("study_id"), get("level"), get("event_type"), get("tool_name")


def apply(conn: sqlite3.Connection, events: Sequence[StoredEvent],
          observation_rows: Mapping[str, ObservationRow] | None = None) -> None:
    """Fold events (in sequence order, all after :func:`last_applied`) into the tables.

    On SQLite, the observations whose bodies the fold reads whole and flags nothing in
    (:func:`observation_row`, from the decoded body an event carries or from
    ``observation_rows`` by event id) are folded set-based after the other events, as
    :func:`fold_stored` folds them (see :class:`_Observed`).
    """
    if not events:
        return
    fold = _Fold(conn)
    fold.prefetch(events)
    folded = False
    observed = _Observed()
    set_based = is_sqlite(conn)
    for event in events:
        row = None
        if set_based and event.kind == _OBSERVATION:
            row = observation_rows.get(event.event_id) if observation_rows else None
            if row is None:
                row = observation_row(event.kind, event.decoded, event.misfits)
        if row is None or not observed.add(event.seq, row, event.study_id, event.occurred_at, event.recorded_at):
            fold.apply(event)
            folded = True
    if folded:
        fold.flush()
    observed.write(conn)
    _folded_to(conn, events[-1].seq)


def _folded_to(conn: sqlite3.Connection, last_seq: int) -> None:
    """Record that the tables hold every event up to ``last_seq``."""
    conn.execute("UPDATE projection_state SET last_seq = ? WHERE name = 'all'", (last_seq,))


class _Observed:
    """Observations folded set-based: their rows in one statement, their runs' and studies'
    counts, seqs and times summed up per run and study and merged in one upsert each.

    Observations are most of a ledger, and what one does to the tables needs no per-event
    SQL: its row of ``observations`` is a function of its own body, and what it does to its
    run and study rows commutes with everything else (a count, the earliest and latest seq,
    the latest times). The one exception is a run's study: the first observation naming one
    sets it when the run has none, which a later registration naming another study then
    disputes; so per run the first observation naming a study is folded in Python, in its
    place (:meth:`add` refuses it). Everything else goes through :class:`_Fold` in sequence
    order, and :meth:`write` runs after its flush: these add to whatever rows it left.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.runs: dict[str, list[Any]] = {}  # run_id -> [run_id, count, first seq, last seq, activity, recorded]
        self.studies: dict[str, list[Any]] = {}  # study_id -> [study_id, first seq, last seq, activity]
        self.named: set[str] = set()  # runs whose first observation naming a study went to Python

    def add(self, seq: int, row: ObservationRow, study_id: str | None, occurred: str | None, recorded: str) -> bool:
        """Take one observation the fold reads whole and flags nothing in; False when it
        must fold in Python in its place (the first of its run naming a study)."""
        run_id = row[0]
        if run_id and row[1] and run_id not in self.named:
            self.named.add(run_id)
            return False
        self.rows.append((seq, run_id, *row[2:]))
        # _later written out (a call per observation is a tenth of this loop).
        if run_id:
            found = self.runs.get(run_id)
            if found is None:
                self.runs[run_id] = [run_id, 1, seq, seq, occurred, recorded]
            else:
                found[1] += 1
                found[3] = seq
                if occurred is not None and (found[4] is None or occurred > found[4]):
                    found[4] = occurred
                if recorded is not None and (found[5] is None or recorded > found[5]):
                    found[5] = recorded
        if study_id:
            activity = occurred or recorded
            known = self.studies.get(study_id)
            if known is None:
                self.studies[study_id] = [study_id, seq, seq, activity]
            else:
                known[2] = seq
                if activity is not None and (known[3] is None or activity > known[3]):
                    known[3] = activity
        return True

    def write(self, conn: sqlite3.Connection) -> None:
        """Write what was taken (after the batch's other events are flushed)."""
        if not self.rows:
            return
        conn.executemany("INSERT INTO observations VALUES (?,?,?,?,?)", self.rows)
        conn.executemany(f"{_RUNS_INSERT} VALUES (?, '{RunStatus.PENDING.value}', ?, 0, ?, ?, ?, ?) {_RUNS_MERGE}",
                         list(self.runs.values()))
        conn.executemany(f"{_STUDIES_INSERT} VALUES (?, '', '', 0, ?, ?, ?) {_STUDIES_MERGE}",
                         list(self.studies.values()))


# -- folding stored events ----------------------------------------------------------------

_OBSERVATION_SHAPE = BODY_SHAPES[EventKind.OBSERVATION_RECORDED.value]
_OBSERVATION = EventKind.OBSERVATION_RECORDED.value
_REQUIRED_OBSERVATION = frozenset(_OBSERVATION_SHAPE.required)
_FOLD_SOURCES = {"events_json": "main", "sl_ledger_events": "ledger"}
"""Where stored events are read decoded (the ledger's view, or replay's view of the ledger it
attached), and the schema whose ``events`` table holds them as stored."""


PARALLEL_FROM = 50_000
"""Events from which :func:`fold_stored` reads ahead in a second process: below, the fork
and the pipe cost more than the second core saves."""


def fold_stored(conn: sqlite3.Connection, *, table: str = "events_json", after: int = 0, until: int | None = None,
                condition: str = "", batch: int = 20_000, parallel_from: int | None = None) -> int:
    """Fold the stored events with ``after < seq <= until`` (and ``condition``) into the tables.

    One batch of ``batch`` events at a time, in one transaction (the caller's), through
    :func:`apply`; on SQLite the observations the fold reads whole and flags nothing in are
    picked out of each batch in Python first (:func:`_read_batch`). Gives the tables
    event-by-event folding gives, which replay checks against the ones stored. From
    ``parallel_from`` events (:data:`PARALLEL_FROM` by default) of a ledger's own file on, a
    forked worker reads the batches ahead (:func:`_fold_in_worker`).

    Args:
        table: Where the events are, decoded (``sl_ledger_events``: replay's attached ledger).
        condition: More SQL on ``e`` choosing which events count (replay's as-of by time).

    Returns:
        How many events were folded.
    """
    _check_sql_names(table, condition)
    if not is_sqlite(conn):  # another database behind the same API
        events = _stored_events(conn, table, after, until, condition)
        counted = 0
        for chunk in _chunks(events, batch):
            apply(conn, chunk)
            counted += len(chunk)
        return counted
    schema = _FOLD_SOURCES[table]
    counted, last = 0, after
    if table == "events_json" and not condition:
        counted, last = _fold_in_worker(conn, after, until, batch,
                                        PARALLEL_FROM if parallel_from is None else parallel_from)
    codec: Codec | None = None
    bound = "" if until is None else f" AND e.seq <= {int(until)}"
    while True:
        # The rows as stored (a compressed body is decompressed once, in Python); the view
        # only chooses them, so its decoding runs only for what ``condition`` reads.
        rows = conn.execute(f"SELECT s.seq, s.kind, s.study_id, s.occurred_at, s.recorded_at, s.body "
                            f"FROM {table} e JOIN {schema}.events s ON s.seq = e.seq WHERE e.seq > ?{bound}"
                            f"{condition} ORDER BY e.seq LIMIT {int(batch)}", (last,)).fetchall()
        if not rows:
            return counted
        if codec is None:
            codec = Codec(conn, schema)
        last = _fold_read(conn, table, _read_batch(codec, rows))
        counted += len(rows)


_OWN_SHARE = 3
"""Of every this many batches, the worker reads all but one, which this process reads
itself: reading a batch costs the worker ~7 us an event (the fetch and the pickle
included), folding and writing one costs this process ~4.4, so the worker alone would
keep this process waiting. Measured on 1M events, 2 cores: one in 3 read here 6.5 s,
in 2 6.9 s, in 4 7.1 s, none 8.9 s."""

_WORKER_BATCH = 2_000
"""Events per batch when a worker reads ahead: small enough that several fit in the pipe
(~90 bytes an event pickled, the pipe 1 MiB), so neither side waits on the other's slow
batch (1M events: 6.5 s at 2,000, 6.9 s at 5,000, 8.2 s at 20,000)."""


def _fold_in_worker(conn: sqlite3.Connection, after: int, until: int | None, batch: int,
                    least: int) -> tuple[int, int]:
    """Fold the ledger's events after ``after`` with a forked worker reading ahead; returns
    ``(events folded, last seq folded)``, where this process goes on alone.

    Reading a batch (fetch, decompress, parse, the shape check: :func:`_read_batch`) costs
    more than folding and writing it, so the child reads the next batches while this
    process folds the one before, in order, and reads one batch in :data:`_OWN_SHARE`
    itself (the child names its last seq). Only for a ledger's own file in WAL mode, from
    ``least`` events on, and when this process may fork (:func:`~studyledger.worker.can_fork`).

    The child opens the file read-only itself (this process's connection must not be used
    across a fork) and reads the last commit. That holds every event this process folds: a
    rebuild writes only derived tables, and the write lock its transaction holds keeps
    every other writer out until it commits, so the last commit is the snapshot this
    transaction began from. The child's copy of SQLite's per-process lock records believes
    it holds this process's locks, so its reads may take none of their own; this process
    holds them (its WAL read mark at that same snapshot, which no checkpoint passes) until
    the child has been stopped, which :class:`~studyledger.worker.Worker` does before this
    function returns.
    Events are append-only, so the child reads at most to this process's head; if it sees
    fewer (this transaction appended events of its own), it stops at once. Whatever stops
    the child, killed or failing, this process folds the rest itself from its last whole
    batch: nothing the child sends is written but by this process, a batch at a time.
    """
    head = conn.execute("SELECT coalesce(max(seq), 0) FROM main.events").fetchone()[0]
    upper = head if until is None else min(int(until), head)
    if upper <= after or upper - after < least or not can_fork():
        return 0, after
    file = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
    if not file or str(conn.execute("PRAGMA main.journal_mode").fetchone()[0]).lower() != "wal":
        return 0, after
    codec = Codec(conn)
    counted, last = 0, after
    batch = min(batch, _WORKER_BATCH)
    with Worker(lambda: _read_ahead(file, after, upper, batch), _same, _same, _nothing, role="replay",
                pipe_bytes=1 << 20) as worker:
        items = iter(worker)
        while True:
            try:
                read = next(items, None)
            except Exception:  # a lost or failed child: this process reads the rest
                break
            if read is None:
                break
            with collector_paused():
                if read.__class__ is int:  # the last seq of a batch this process reads
                    read = list(_read_batch(codec, conn.execute(
                        "SELECT seq, kind, study_id, occurred_at, recorded_at, body FROM main.events "
                        "WHERE seq > ? AND seq <= ? ORDER BY seq", (last, read)).fetchall()))
                counted, last = counted + len(read), _fold_read(conn, "events_json", read)
    return counted, last


def _read_ahead(file: str, after: int, upper: int, batch: int) -> Iterator[list[Any] | int]:
    """The worker's half: every batch of the events with ``after < seq <= upper``, read
    (:func:`_read_batch`) over a read-only connection of its own, but for one in
    :data:`_OWN_SHARE`, of which it gives only the last seq."""
    conn = sqlite3.connect(f"file:{quote(os.path.abspath(file))}?mode=ro", uri=True, isolation_level=None)
    conn.execute("BEGIN")
    seen = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    if seen < upper:
        raise LookupError(f"the replay worker sees events up to {seen}, not {upper}")
    codec = Codec(conn)
    last = after
    for number in itertools.count(1):
        if number % _OWN_SHARE == 0:
            end = conn.execute("SELECT max(seq) FROM (SELECT seq FROM events WHERE seq > ? AND seq <= ? "
                               "ORDER BY seq LIMIT ?)", (last, upper, batch)).fetchone()[0]
            if end is None:
                return
            yield end
            last = end
            continue
        rows = conn.execute("SELECT seq, kind, study_id, occurred_at, recorded_at, body FROM events "
                            "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?", (last, upper, batch)).fetchall()
        if not rows:
            return
        yield list(_read_batch(codec, rows))
        last = rows[-1][0]


def _same(value: Any) -> Any:
    return value


def _nothing() -> None:
    return None


def _read_batch(codec: Codec, rows: list[tuple[Any, ...]]) -> Iterator[Any]:
    """Read one batch of stored rows (``seq, kind, study_id, occurred_at, recorded_at, body`` as stored).

    Gives, in order, ``(seq, row, study_id, occurred_at, recorded_at)`` for an observation
    whose body reads as an object with nothing to flag (:func:`_stored_observation`), and
    the bare seq of every other event, which :func:`_fold_read` reads again whole.
    """
    names = codec.names
    for seq, kind, study_id, occurred, recorded, body in rows:
        if kind.__class__ is int:
            if kind not in names:
                codec.refresh()  # named by another writer since; a name still missing folds in Python
            kind = names.get(kind, kind)
        if kind == _OBSERVATION:
            occurred, recorded = decode_time(occurred), decode_time(recorded)
            row = _stored_observation(codec, body, study_id, occurred, recorded)
            if row is not None:
                yield seq, row, study_id, occurred, recorded
                continue
        yield seq


def _fold_read(conn: sqlite3.Connection, table: str, read: Iterable[Any]) -> int:
    """Fold one batch as :func:`_read_batch` reads it; returns its last seq.

    The observations it read are folded set-based (:class:`_Observed`); every other event
    is read again whole from ``table`` and folded by :func:`apply` in sequence order,
    before them.
    """
    observed = _Observed()
    add = observed.add
    rest: list[int] = []
    for item in read:
        if item.__class__ is int:
            rest.append(item)
            last = item
        else:
            last = item[0]
            if not add(*item):
                rest.append(last)
    for chunk in _chunks(_events_at(conn, table, rest), 5_000):
        apply(conn, chunk)
    observed.write(conn)
    _folded_to(conn, last)
    return int(last)


def _stored_observation(codec: Codec, stored: Any, study_id: Any, occurred: Any, recorded: Any) -> ObservationRow | None:
    """:func:`observation_row` of a stored observation, or None where :class:`_Fold` must read it.

    The body is read by orjson. Where it reads a body at all, it reads what the standard
    parser (:attr:`StoredEvent.data`) reads, except for numbers beyond 64 bits or below
    float precision: no field of an observation's shape accepts a number, so either reading
    is flagged alike, and such a body folds in Python anyway. Anything orjson refuses (NaN,
    a lone surrogate, deep nesting, not JSON), a body that does not decompress, and columns
    of a type a raw writer chose go to :class:`_Fold`, which reads them as it always has.
    """
    if not (study_id is None or study_id.__class__ is str) or not (occurred is None or occurred.__class__ is str) \
            or recorded.__class__ is not str:
        return None
    try:
        body = orjson.loads(codec.body_bytes(stored))
    except (orjson.JSONDecodeError, UnreadableRow):
        return None
    try:
        if body.__class__ is not dict or _OBSERVATION_SHAPE.misfits(body):
            return None
    except TypeError:  # an unhashable value where a level belongs: the fold says it is unreadable
        return None
    return observation_row(_OBSERVATION, body, ())


def _events_at(conn: sqlite3.Connection, table: str, seqs: list[int]) -> Iterator[StoredEvent]:
    """The stored events with these seqs (in order), read decoded from ``table``."""
    columns = ", ".join(f"e.{name}" for name in EVENT_COLUMNS)
    for start in range(0, len(seqs), 5_000):
        for row in conn.execute(f"SELECT {columns} FROM {table} e WHERE e.seq IN (SELECT value FROM json_each(?)) "
                                "ORDER BY e.seq", (json.dumps(seqs[start:start + 5_000]),)).fetchall():
            yield StoredEvent(*row)


# What observations add to a run's and a study's row, merged into what is there: counts add
# up, the first seq is the least, the last seq and the times the greatest (nulls aside).
_LATER = "CASE WHEN {0} IS NULL THEN excluded.{0} WHEN excluded.{0} IS NULL THEN {0} ELSE max({0}, excluded.{0}) END"
_RUNS_INSERT = ("INSERT INTO runs (run_id, status, observation_count, anomaly_count, first_seq, last_seq, "
                "last_activity, last_recorded)")
_RUNS_MERGE = ("ON CONFLICT(run_id) DO UPDATE SET observation_count = observation_count + excluded.observation_count, "
               "first_seq = min(first_seq, excluded.first_seq), last_seq = max(last_seq, excluded.last_seq), "
               f"last_activity = {_LATER.format('last_activity')}, last_recorded = {_LATER.format('last_recorded')}")
_STUDIES_INSERT = "INSERT INTO studies (study_id, title, description, registered, first_seq, last_seq, last_activity)"
_STUDIES_MERGE = ("ON CONFLICT(study_id) DO UPDATE SET first_seq = min(first_seq, excluded.first_seq), "
                  f"last_seq = max(last_seq, excluded.last_seq), last_activity = {_LATER.format('last_activity')}")


def _stored_events(conn: sqlite3.Connection, table: str, after: int, until: int | None,
                   condition: str) -> Iterator[StoredEvent]:
    """Stored events in sequence order, read in pages of 5,000 fetched whole: the fold writes
    on the same connection between pages, which an open cursor would not survive."""
    columns = ", ".join(f"e.{name}" for name in EVENT_COLUMNS)
    bound = "" if until is None else f" AND e.seq <= {int(until)}"
    last = after
    while True:
        found = 0
        for row in conn.execute(f"SELECT {columns} FROM {table} e WHERE e.seq > ?{bound}{condition} "
                                "ORDER BY e.seq LIMIT 5000", (last,)).fetchall():
            found += 1
            last = row[0]
            yield StoredEvent(*row)
        if not found:
            return


def _chunks(events: Iterable[StoredEvent], size: int) -> Iterator[list[StoredEvent]]:
    chunk: list[StoredEvent] = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_sql_names(table: str, condition: str) -> None:
    if table not in _FOLD_SOURCES or (condition and not condition.startswith(" AND ")):
        raise ValueError(f"cannot fold from {table!r} where {condition!r}")

