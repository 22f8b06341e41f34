"""What the dashboard reads, and nothing about how it is drawn.

The dashboard's workers call these methods from their own threads. SQLite connections are
not shareable across concurrent threads, so :class:`Source` keeps a small pool of read
connections and lends one per call: a slow search on one connection never holds up the
page a user is scrolling to on another. Everything returns plain values (rows as dicts),
so this module is testable without a terminal and never imports Textual.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..events import parse_instant
from .. import query
from ..errors import LedgerError
from ..ledger import Ledger
from ..store import BUSY_TIMEOUT_MS, Store
from ..verify import VerifyReport, verify_store

Row = dict[str, Any]
T = TypeVar("T")

POOL_SIZE = 3
# Runs with at most this many observations get their whole span tree computed when they
# open, so every row is indented right; bigger runs indent from the pages seen so far.
SPAN_SCAN_LIMIT = 50_000


def last_event_time(run: Row) -> datetime | None:
    """When the run last gave a sign of life: its latest event, by source or ledger clock.

    Both clocks count: a trace with old source times that is still arriving now is alive,
    and a run whose source clock runs ahead must not look alive forever.
    """
    times = [t for t in (parse_instant(run.get("last_activity")), parse_instant(run.get("last_recorded"))) if t]
    return max(times) if times else None


def is_stale(run: Row, now: datetime, stale_after: float) -> bool:
    """A run still ``running`` with no event for ``stale_after`` seconds (derived, not stored).

    Runs stuck in ``running`` after their process died are what users of run trackers
    complain about first; the ledger cannot know a process died, but it can say nothing
    has been heard from it for a while.
    """
    if run.get("status") != "running":
        return False
    last = last_event_time(run)
    return last is not None and (now - last).total_seconds() > stale_after


def duration_seconds(run: Row, now: datetime, stale_after: float | None = None) -> float | None:
    """Seconds from start to end; a running run counts to ``now``, a stale one to its last event."""
    start = parse_instant(run.get("started_at"))
    if start is None:
        return None
    end = parse_instant(run.get("ended_at"))
    if end is None and run.get("status") == "running":
        stale = stale_after is not None and is_stale(run, now, stale_after)
        # A stale run lasted until its last sign of life, on the same (source) clock as its start.
        end = (parse_instant(run.get("last_activity")) or last_event_time(run)) if stale else now
    return None if end is None else max(0.0, (end - start).total_seconds())


def span_ids(meta_json: str | None) -> tuple[str | None, str | None]:
    """``(span_id, parent_span_id)`` from an observation's meta_json, when it has them."""
    if not meta_json or "span_id" not in meta_json:
        return None, None
    try:
        meta = json.loads(meta_json)
    except ValueError:
        return None, None
    if not isinstance(meta, dict):
        return None, None
    span, parent = meta.get("span_id"), meta.get("parent_span_id")
    return (span if isinstance(span, str) else None, parent if isinstance(parent, str) else None)


@dataclass
class SpanDepths:
    """Depth of each span in a run's call tree (run > agent > step > model/tool call).

    Started and Finished events of one span share its id, so both sit at the same depth.
    A span whose parent was never seen sits one level below the root.
    """

    parents: dict[str, str | None] = field(default_factory=dict)
    _depth: dict[str, int] = field(default_factory=dict)

    def add(self, span: str | None, parent: str | None) -> None:
        """Remember a span and its parent."""
        if span is not None and span not in self.parents:
            self.parents[span] = parent
            self._depth.clear()

    def depth(self, span: str | None, parent: str | None) -> int:
        """How deep a row with this span sits (0 for a row without spans)."""
        if span is None:
            return 0
        self.add(span, parent)
        return self._depth_of(span)

    def _depth_of(self, span: str) -> int:
        if span in self._depth:
            return self._depth[span]
        chain: list[str] = []
        current: str | None = span
        base = 0
        # Walked iteratively with a cycle guard: meta_json is untrusted input.
        while current is not None and current not in self._depth:
            if current in chain:
                break
            chain.append(current)
            if current not in self.parents:
                base = 1
                chain.pop()
                break
            current = self.parents[current]
        if current is not None and current in self._depth:
            base = self._depth[current] + 1
        for node in reversed(chain):
            self._depth[node] = base
            base += 1
        return self._depth.get(span, 1)


@dataclass(frozen=True)
class ObservationFilter:
    """Which of a run's observations a list shows."""

    level: str | None = None
    event_type: str | None = None

    def clauses(self) -> tuple[str, list[Any]]:
        """SQL conditions on the lean ``observations`` table, and their parameters."""
        sql, params = "", []
        if self.level:
            sql += " AND level = ?"
            params.append(self.level)
        if self.event_type:
            sql += " AND event_type = ?"
            params.append(self.event_type)
        return sql, params


class SourceClosed(LedgerError):
    """A read was asked of a source the app has closed (it is exiting)."""


class Source:
    """Read access to one ledger file for the dashboard's worker threads.

    Args:
        path: The ledger file. It must exist: the dashboard never creates one.

    Raises:
        LedgerMissingError, NotALedgerError, NewerLedgerError: as :meth:`Ledger.open`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Opening through the Ledger checks the file and brings stale projections up to
        # date once, before any read connection relies on them.
        Ledger.open(self.path, create=False).close()
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()
        self._closed = False
        self._version_conn = self._connect()
        self._version_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        return conn

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Lend a read connection for one call (blocks while all are lent).

        Raises:
            SourceClosed: the dashboard is shutting down.
        """
        with self._lock:
            if self._closed:
                raise SourceClosed(str(self.path))
            if self._pool.empty() and self._made < POOL_SIZE:
                self._made += 1
                self._pool.put(self._connect())
        conn = self._pool.get()
        try:
            yield conn
        finally:
            with self._lock:
                # A connection lent when the app closed is closed on return, not under its user.
                if self._closed:
                    conn.close()
                else:
                    self._pool.put(conn)

    def read(self, call: Callable[[sqlite3.Connection], T]) -> T:
        """Run one read function on a lent connection."""
        with self.connection() as conn:
            return call(conn)

    def close(self) -> None:
        """Close every idle connection now and each lent one when it comes back.

        Closing a SQLite connection while another thread runs a query on it crashes the
        process, so nothing in use is closed here.
        """
        with self._lock:
            self._closed = True
            while not self._pool.empty():
                self._pool.get().close()
        with self._version_lock:
            self._version_conn.close()

    # -- change detection -------------------------------------------------------------

    def data_version(self) -> int:
        """Changes whenever another connection commits: one cheap pragma per poll."""
        with self._version_lock:
            if self._closed:
                raise SourceClosed(str(self.path))
            return query.data_version(self._version_conn)

    # -- screens ----------------------------------------------------------------------

    def studies(self) -> list[Row]:
        """Every study with its run count and status breakdown."""
        return self.read(query.studies)

    def runs(self, study_id: str | None, *, status: str | None = None) -> list[Row]:
        """The runs of one study (or all runs), optionally of one status."""
        return self.read(lambda c: query.runs(c, study_id=study_id, status=status))

    def run_detail(self, run_id: str) -> Row | None:
        """A run with its transitions, provenance and anomalies, for the run screen's header."""

        def load(conn: sqlite3.Connection) -> Row | None:
            row = query.run(conn, run_id)
            if row is None:
                return None
            row["transitions"] = query.transitions(conn, run_id)
            row["provenance"] = query.provenance(conn, run_id)
            row["anomalies"] = query.anomalies(conn, run_id)
            return row

        return self.read(load)

    def ids(self) -> tuple[list[Row], list[Row]]:
        """Study and run ids with a few words each, for the command palette."""

        def load(conn: sqlite3.Connection) -> tuple[list[Row], list[Row]]:
            studies = [dict(zip(("study_id", "title"), r, strict=True))
                       for r in conn.execute("SELECT study_id, title FROM studies ORDER BY study_id")]
            runs = [dict(zip(("run_id", "study_id", "condition_id", "status"), r, strict=True))
                    for r in conn.execute(
                        "SELECT run_id, study_id, condition_id, status FROM runs ORDER BY first_seq")]
            return studies, runs

        return self.read(load)

    def event_types(self, run_id: str) -> list[str]:
        """The distinct event types of a run (for the filter dialog)."""
        return self.read(lambda c: [r[0] for r in c.execute(
            "SELECT DISTINCT event_type FROM observations WHERE run_id = ? AND event_type IS NOT NULL "
            "ORDER BY event_type", (run_id,))])

    # -- observations, paged ----------------------------------------------------------

    def tail(self, run_id: str, where: ObservationFilter, after_seq: int) -> tuple[int, int]:
        """``(count, last seq)`` of the filtered rows after ``after_seq``.

        A live list asks only about rows newer than the last it counted, so a change in a
        million-row run costs an index range scan of the new rows, not a count of all.
        """
        sql, params = where.clauses()

        def load(conn: sqlite3.Connection) -> tuple[int, int]:
            count, last = conn.execute(
                f"SELECT count(*), coalesce(max(seq), ?) FROM observations WHERE run_id = ? AND seq > ?{sql}",
                [after_seq, run_id, after_seq, *params]).fetchone()
            return int(count), int(last)

        return self.read(load)

    def page(self, run_id: str, where: ObservationFilter, index: int, size: int,
             *, after_seq: int | None = None) -> list[Row]:
        """``size`` observations starting at row ``index`` of the filtered list.

        With ``after_seq`` (the last seq of the page before) the page is found by key,
        which costs the same anywhere in the run. Without it the first row is found by
        OFFSET on the narrow ``(run_id, ..., seq)`` index, which only reads index pages,
        so a jump to the middle of a million-row run stays in milliseconds.
        """
        sql, params = where.clauses()

        def load(conn: sqlite3.Connection) -> list[Row]:
            start = after_seq
            if start is None:
                if index == 0:
                    start = 0
                else:
                    found = conn.execute(
                        f"SELECT seq FROM observations WHERE run_id = ?{sql} ORDER BY seq "
                        f"LIMIT 1 OFFSET ?", [run_id, *params, index - 1]).fetchone()
                    if found is None:
                        return []
                    start = int(found[0])
            return query.observations(conn, run_id, after_seq=start, limit=size,
                                      level=where.level, event_type=where.event_type)

        return self.read(load)

    def index_of(self, run_id: str, where: ObservationFilter, seq: int) -> int:
        """The row index of an observation in the filtered list."""
        sql, params = where.clauses()
        return self.read(lambda c: int(c.execute(
            f"SELECT count(*) FROM observations WHERE run_id = ? AND seq < ?{sql}",
            [run_id, seq, *params]).fetchone()[0]))

    def find(self, run_id: str, where: ObservationFilter, text: str, *, from_seq: int,
             backwards: bool = False) -> int | None:
        """The seq of the next (or previous) observation matching ``text``, or None."""

        def load(conn: sqlite3.Connection) -> int | None:
            if backwards:
                rows = query.observations(conn, run_id, before_seq=from_seq, limit=1, level=where.level,
                                          event_type=where.event_type, search=text, descending=True)
            else:
                rows = query.observations(conn, run_id, after_seq=from_seq, limit=1, level=where.level,
                                          event_type=where.event_type, search=text)
            return int(rows[0]["seq"]) if rows else None

        return self.read(load)

    def span_tree(self, run_id: str) -> SpanDepths:
        """The span tree of a run small enough to read whole (empty for bigger runs)."""

        def load(conn: sqlite3.Connection) -> SpanDepths:
            depths = SpanDepths()
            count = conn.execute("SELECT count(*) FROM observations WHERE run_id = ?", (run_id,)).fetchone()[0]
            if count > SPAN_SCAN_LIMIT:
                return depths
            for (meta,) in conn.execute(
                    "SELECT meta_json FROM observation_rows WHERE run_id = ? ORDER BY seq", (run_id,)):
                depths.add(*span_ids(meta))
            return depths

        return self.read(load)

    def observation(self, seq: int) -> Row | None:
        """Every field of one observation."""
        return self.read(lambda c: query.observation(c, seq))

    # -- ingestion and audit ----------------------------------------------------------

    def ingestion(self, *, limit: int = 1_000) -> tuple[list[Row], list[Row]]:
        """Files the ingester tracks (with offsets) and the latest rejected lines."""
        from ..ingest.tailer import file_states

        def load(conn: sqlite3.Connection) -> tuple[list[Row], list[Row]]:
            newest = conn.execute("SELECT seq FROM rejections ORDER BY seq DESC LIMIT 1 OFFSET ?",
                                  (limit,)).fetchone()
            return file_states(conn), query.rejections(conn, after_seq=newest[0] if newest else 0)

        return self.read(load)

    def anomalies(self) -> list[Row]:
        """Every anomaly the projections flagged."""
        return self.read(query.anomalies)

    def verify(self) -> VerifyReport:
        """Recompute the hash chain over the whole ledger (slow on big ledgers: a worker calls it)."""
        store = Store(self.path, create=False)
        try:
            return verify_store(store)
        finally:
            store.close()


def now_utc() -> datetime:
    """The dashboard's clock (tests and screenshots pass a fixed one instead)."""
    return datetime.now(UTC)
