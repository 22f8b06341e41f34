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

from .. import query, search
from ..audit.diff import diff_runs
from ..audit.verify import VerifyReport, verify
from ..errors import LedgerBusyError, LedgerError
from ..ledger import Ledger
from ..store import DatabaseURL, ledger_target

Row = dict[str, Any]
T = TypeVar("T")

POOL_SIZE = 3
BUSY = "the ledger is busy"
"""The :attr:`Source.index_note` of a search the lock held up; the next search tries again."""
# Runs with at most this many observations get their whole span tree computed when they
# open, so every row is indented right; bigger runs indent from the pages seen so far.
SPAN_SCAN_LIMIT = 50_000


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
class ConditionFigures:
    """What the conditions screen shows of one study."""

    study: Row | None
    conditions: list[Row]
    values: dict[str, dict[str, list[Any]]]
    metrics: list[str]
    primary: str | None
    ended: list[str]
    resources: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFigures:
    """What a runs table shows beside the runs: each run's metrics and latency, the study's
    metric names and primary outcome, and what the runs cost (:func:`query.resource_values`)."""

    values: dict[str, dict[str, Any]]
    metrics: list[str]
    primary: str | None
    latencies: dict[str, float]
    resources: dict[str, list[float]]


@dataclass(frozen=True)
class ObservationFilter:
    """Which of a run's observations a list shows."""

    level: str | None = None
    event_type: str | None = None


class SourceClosed(LedgerError):
    """A read was asked of a source the app has closed (it is exiting)."""


class Source:
    """Read access to one ledger file for the dashboard's worker threads.

    Every connection it reads through is read-only, and it never writes an event: the
    ledger's history is never changed by looking at it. It writes derived state only, and
    only when it cannot show the ledger otherwise, as any writer would: it rebuilds derived
    tables another studyledger version left (once, when it opens), and builds or catches up
    the search index at a search. A ledger it cannot write is shown as it is (stale
    derived tables are reported, searches use a temporary index).

    Args:
        path: The ledger file. It must exist: the dashboard never creates one.

    Raises:
        LedgerMissingError, NotALedgerError, NewerLedgerError: as :meth:`Ledger.open`.
        StaleProjectionsError: the derived tables are another version's and the file
            cannot be written to rebuild them.
    """

    def __init__(self, path: str | Path | DatabaseURL) -> None:
        self.path = ledger_target(path)
        self._ready_projections()
        self._pool: queue.LifoQueue[Ledger] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()
        self._closed = False
        self._version = self._open()
        self._version_lock = threading.Lock()
        self._search_ledger: Ledger | None = None  # holds a temporary index: see search()
        self._search_lock = threading.Lock()
        self.index_note: str | None = None
        """Why searches use a temporary index (None: the ledger's own serves)."""

    def _ready_projections(self) -> None:
        """Bring derived tables built by another version up to date: the writer's step.

        A write of derived tables, never of an event, made only when the dashboard cannot
        show the ledger otherwise; a read-only file is then reported, not rebuilt.
        """
        with Ledger.open(self.path, readonly=True) as ledger:
            if ledger.projections_current:
                return
        try:
            Ledger.open(self.path, create=False).close()
        except (LedgerError, OSError, sqlite3.Error):
            with Ledger.open(self.path, readonly=True) as ledger:
                ledger.check_readable()

    def _open(self) -> Ledger:
        return Ledger.open(self.path, readonly=True)

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
                self._pool.put(self._open())
        ledger = self._pool.get()
        try:
            yield ledger.conn
        finally:
            with self._lock:
                # A connection lent when the app closed is closed on return, not under its user.
                if self._closed:
                    ledger.close()
                else:
                    self._pool.put(ledger)

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
            self._version.close()
        with self._search_lock:
            if self._search_ledger is not None:
                self._search_ledger.close()

    # -- change detection -------------------------------------------------------------

    def data_version(self) -> int:
        """Changes whenever another connection commits: one cheap pragma per poll."""
        with self._version_lock:
            if self._closed:
                raise SourceClosed(str(self.path))
            return query.data_version(self._version.conn)

    # -- screens ----------------------------------------------------------------------

    def studies(self) -> tuple[list[Row], dict[str, int]]:
        """Every study with its run count and status breakdown, and ``{status: count}`` of
        the runs no source tied to a study (trace-only runs)."""
        return self.read(lambda c: (query.studies(c), query.runs_without_study(c)))

    def runs(self, study_id: str | None, *, status: str | None = None, condition_id: str | None = None,
             without_study: bool = False) -> list[Row]:
        """The runs of one study (or all runs, or those without a study), optionally of one
        condition and one status."""
        return self.read(lambda c: query.runs(c, study_id=study_id, status=status, condition_id=condition_id,
                                              without_study=without_study))

    def run_figures(self, study_id: str | None, condition_id: str | None = None) -> RunFigures:
        """The metrics, latencies and costs of a study's runs (of every run when None)."""

        def load(conn: sqlite3.Connection) -> RunFigures:
            if study_id is None:
                return RunFigures(query.run_metrics(conn), [], None, query.run_latencies(conn), {})
            names, primary = query.study_metrics(conn, study_id)
            latencies = query.run_latencies(conn, study_id=study_id, condition_id=condition_id)
            return RunFigures(query.run_metrics(conn, study_id=study_id), names, primary, latencies,
                              query.resource_values(conn, study_id, condition_id, latencies=latencies))

        return self.read(load)

    def conditions(self, study_id: str) -> ConditionFigures:
        """Everything the conditions screen draws, read in one go."""

        def load(conn: sqlite3.Connection) -> ConditionFigures:
            # Each table read once: the summaries, the metrics and the costs share them.
            study = query.study(conn, study_id)
            values = query.condition_metric_values(conn, study_id)
            run_rows = query.runs(conn, study_id=study_id)
            latencies = query.run_latencies(conn, study_id=study_id)
            names, primary = query.study_metrics(conn, study_id, study)
            return ConditionFigures(
                study=study,
                conditions=query.condition_summaries(conn, study_id, values, study_row=study, run_rows=run_rows,
                                                     latencies=latencies),
                values=values,
                metrics=names,
                primary=primary,
                ended=[r["ended_at"] for r in run_rows if r.get("ended_at")],
                resources=query.resource_values(conn, study_id, latencies=latencies),
            )

        return self.read(load)

    def diff(self, run_a: str, run_b: str) -> Row:
        """Two runs side by side (:func:`studyledger.audit.diff.diff_runs`)."""
        return self.read(lambda c: diff_runs(c, run_a, run_b))

    def search(self, text: str, filters: search.Filters, *, limit: int = 200) -> tuple[list[Row], int]:
        """``(newest hits, hit count up to the cap)`` of a search across every run.

        The index is built (or caught up) first when it is missing or behind: derived
        state like the derived tables, never an event. A ledger the dashboard cannot write
        is searched with a temporary index on a connection of its own
        (:attr:`temporary_index`, :attr:`index_note` says why), caught up before each search.
        """
        with self._search_lock:
            conn = self._search_connection()
            if conn is not None:
                search.build_temporary(conn)
                return search.search(conn, text, filters=filters, limit=limit), search.count(conn, text, filters=filters)
        return self.read(lambda c: (search.search(c, text, filters=filters, limit=limit),
                                    search.count(c, text, filters=filters)))

    def _search_connection(self) -> sqlite3.Connection | None:
        """The connection holding a temporary index, or None when the ledger's own serves.

        A ledger that cannot be written (a read-only file, another user's) keeps the
        temporary index for the session. A busy one (another writer held the lock past
        every retry) only for this search: the next one tries the ledger's index again.
        """
        if self._search_ledger is not None and self.index_note != BUSY:
            return self._search_ledger.conn
        self.index_note = None
        if not self.read(search.is_current):
            try:
                with Ledger.open(self.path, create=False) as ledger, ledger.store.transaction():
                    search.build(ledger.conn)
            except LedgerBusyError:
                self.index_note = BUSY
            except (LedgerError, OSError, sqlite3.Error):
                self.index_note = "the ledger cannot be written here"
        if self.index_note is None:
            if self._search_ledger is not None:  # busy before: the ledger's own index serves again
                self._search_ledger.close()
                self._search_ledger = None
            return None
        if self._search_ledger is None:
            self._search_ledger = self._open()
        return self._search_ledger.conn

    @property
    def temporary_index(self) -> bool:
        """Whether searches use a temporary index (:attr:`index_note` says why)."""
        return self._search_ledger is not None

    def run_detail(self, run_id: str) -> Row | None:
        """A run with its transitions, provenance, anomalies, metrics (evaluator outputs and
        the runner's), the runner's record (``result``, decoded) and latency, for the run screen."""

        def load(conn: sqlite3.Connection) -> Row | None:
            row = query.run(conn, run_id)
            if row is None:
                return None
            row["transitions"] = query.transitions(conn, run_id)
            row["provenance"] = query.provenance(conn, run_id)
            row["anomalies"] = query.anomalies(conn, run_id)
            row["metrics"] = query.metric_values(conn, run_id=run_id)
            row["result"] = query.run_result(row)
            row["latency_s"] = query.run_latencies(conn, run_id=run_id).get(run_id)
            return row

        return self.read(load)

    def ids(self) -> tuple[list[Row], list[Row]]:
        """Study and run ids with a few words each, for the command palette."""
        return self.read(lambda c: (query.study_titles(c), query.run_labels(c)))

    def event_types(self, run_id: str) -> list[str]:
        """The distinct event types of a run (for the filter dialog)."""
        return self.read(lambda c: query.event_types(c, run_id))

    # -- observations, paged ----------------------------------------------------------

    def tail(self, run_id: str, where: ObservationFilter, after_seq: int) -> tuple[int, int]:
        """``(count, last seq)`` of the filtered rows after ``after_seq``."""
        return self.read(lambda c: query.observation_tail(
            c, run_id, after_seq=after_seq, level=where.level, event_type=where.event_type))

    def page(self, run_id: str, where: ObservationFilter, index: int, size: int,
             *, after_seq: int | None = None) -> list[Row]:
        """``size`` observations starting at row ``index`` of the filtered list.

        With ``after_seq`` (the last seq of the page before) the page is found by key,
        which costs the same anywhere in the run; without it, by its index.
        """

        def load(conn: sqlite3.Connection) -> list[Row]:
            start = after_seq
            if start is None and index > 0:
                start = query.observation_seq_at(conn, run_id, index - 1, level=where.level,
                                                 event_type=where.event_type)
                if start is None:
                    return []
            return query.observations(conn, run_id, after_seq=start or 0, limit=size, level=where.level,
                                      event_type=where.event_type)

        return self.read(load)

    def index_of(self, run_id: str, where: ObservationFilter, seq: int) -> int:
        """The row index of an observation in the filtered list."""
        return self.read(lambda c: query.observation_index(
            c, run_id, seq, level=where.level, event_type=where.event_type))

    def find(self, run_id: str, where: ObservationFilter, text: str, *, from_seq: int,
             backwards: bool = False) -> int | None:
        """The seq of the next (or previous) observation matching ``text``, or None."""

        def load(conn: sqlite3.Connection) -> int | None:
            if backwards:
                rows = query.observations(conn, run_id, before_seq=from_seq, limit=1, search=text,
                                          descending=True, level=where.level, event_type=where.event_type)
            else:
                rows = query.observations(conn, run_id, after_seq=from_seq, limit=1, search=text,
                                          level=where.level, event_type=where.event_type)
            return int(rows[0]["seq"]) if rows else None

        return self.read(load)

    def span_tree(self, run_id: str) -> SpanDepths:
        """The span tree of a run small enough to read whole (empty for bigger runs)."""

        def load(conn: sqlite3.Connection) -> SpanDepths:
            depths = SpanDepths()
            if query.observation_count(conn, run_id) > SPAN_SCAN_LIMIT:
                return depths
            for meta in query.observation_meta(conn, run_id):
                depths.add(*span_ids(meta))
            return depths

        return self.read(load)

    def observation(self, seq: int) -> Row | None:
        """Every field of one observation."""
        return self.read(lambda c: query.observation(c, seq))

    # -- ingestion and audit ----------------------------------------------------------

    def ingestion(self, *, limit: int = 1_000) -> tuple[list[Row], list[Row]]:
        """Files the ingester tracks (with offsets) and the latest rejected lines."""
        return self.read(lambda c: (query.ingest_files(c), query.rejections(c, latest=limit)))

    def anomalies(self) -> list[Row]:
        """Every anomaly the projections flagged."""
        return self.read(query.anomalies)

    def verify(self) -> VerifyReport:
        """Recompute the hash chain over the whole ledger (slow on big ledgers: a worker calls it)."""
        with self._open() as ledger:
            return verify(ledger)


def now_utc() -> datetime:
    """The dashboard's clock (tests and screenshots pass a fixed one instead)."""
    return datetime.now(UTC)
