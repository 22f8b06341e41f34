"""The Python API: one object for programs that run studies and for tools that read them.

A :class:`Ledger` wraps one ledger: a SQLite file, or a database on a PostgreSQL server. Writes go through :meth:`Ledger.append`, which
appends events and folds them into the projections in one transaction; the convenience
methods (``register_study``, ``transition``, ...) check what the API promises first, inside
that same transaction, so a check and the write it guards cannot be separated by another
process's write.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import events as ev
from . import projections, query, search
from .backends import open_store
from .errors import StaleProjectionsError, UnknownRunError, UnknownStudyError, ValidationError
from .events import EventKind, NewEvent, StoredEvent
from .schema import (
    Observation,
    ProvenanceMetadata,
    RunBudget,
    RunStatus,
    SeedPolicy,
    hash_identifier,
    is_legal_transition,
)
from .store import AppendResult, DatabaseURL, Head, Store, Target, utc_now_precise

T = TypeVar("T")
Row = dict[str, Any]


def run_id_for(
    study_id: str, condition_id: str, replicate: int, agent_id: str | None, problem_id: str | None
) -> str:
    """The upstream run id, so ledgers and upstream artifacts join on ``run_id``."""
    return hash_identifier(
        "run",
        {
            "study_id": study_id,
            "condition_id": condition_id,
            "replicate": replicate,
            "agent_id": agent_id,
            "problem_id": problem_id,
        },
    )


class Ledger:
    """An open studyledger ledger.

    Use :meth:`open` (a context manager) rather than the constructor. Constructing one
    never writes: a writer brings the derived tables up to date with :meth:`catch_up`,
    which :meth:`open` does for it.
    """

    def __init__(self, store: Store, *, source: str = "api") -> None:
        self.store = store
        self.source = source

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | DatabaseURL = "studyledger.db",
        *,
        create: bool = True,
        readonly: bool = False,
        source: str = "api",
    ) -> Ledger:
        """Open a ledger: a SQLite file, or a PostgreSQL database given by URL.

        A writer (the default) creates the file and its schema when missing and brings
        the derived tables up to date (:meth:`catch_up`). A reader (``readonly=True``)
        writes nothing, ever, so an audit sees the file as it is; it works on a read-only
        file or mount, and with a server role that may only read.

        Args:
            path: The SQLite file, or ``postgresql://user@host:port/dbname`` (the password
                from the URL, ``PGPASSWORD`` or ``~/.pgpass``; it is never printed). The
                PostgreSQL backend needs ``pip install 'studyledger[postgres]'``.
            create: When false, a missing file raises ``LedgerMissingError``.
            readonly: Open for reading only (implies ``create=False``).
            source: What events written through the convenience methods record as their
                source (``api`` or ``cli``).

        Raises:
            LedgerMissingError: the file does not exist and may not be created.
            NotALedgerError: the file is not a studyledger ledger.
            NewerLedgerError: the file was written by a newer studyledger.
            LedgerConnectionLost: the server cannot be reached.
        """
        ledger = cls(open_store(path, create=create, readonly=readonly), source=source)
        if not readonly:
            try:
                ledger.catch_up()
            except BaseException:
                ledger.close()
                raise
        return ledger

    @property
    def readonly(self) -> bool:
        """Whether this ledger was opened for reading only."""
        return self.store.readonly

    @property
    def path(self) -> Target:
        """The ledger file, or the server's ``DatabaseURL`` (printed without its password)."""
        return self.store.path

    @property
    def conn(self) -> sqlite3.Connection:
        """The underlying connection (for read queries)."""
        return self.store.conn

    def close(self) -> None:
        """Close the ledger."""
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- projections ----------------------------------------------------------------

    @property
    def projections_current(self) -> bool:
        """Whether the derived tables were built by this studyledger's projection code."""
        return (
            self.store.meta().get("projection_version") == projections.PROJECTION_VERSION
            and "projection_state" in self.store.tables()
        )

    def check_readable(self) -> None:
        """Make sure the derived tables can be read as this version reads them.

        Raises:
            StaleProjectionsError: they were built by another version (a writer rebuilds
                them on open; a read-only open may not).
        """
        if not self.projections_current:
            raise StaleProjectionsError(
                f"{self.path}: its derived tables were built by another studyledger version; "
                f"open it once with a writing command (`studyledger --db {self.path} init`) to rebuild them"
            )

    def catch_up(self) -> None:
        """Create, rebuild or catch up the derived tables: the writer's step after opening.

        Every append folds its events in the same transaction, so the tables only lag
        after an upgrade changed the projection code, or after rows were written around
        the API. Opening read-only never does this.

        Raises:
            LedgerReadOnlyError: the ledger was opened read-only.
        """
        current = self.projections_current
        if current and projections.last_applied(self.conn) == self.store.head().seq:
            return
        with self.store.transaction():
            if not current:
                self._rebuild_in_transaction()
            else:
                projections.fold_stored(self.conn, after=projections.last_applied(self.conn))
            search.catch_up(self.conn)

    def _rebuild_in_transaction(self) -> None:
        projections.drop_tables(self.conn)
        projections.build(self.conn)
        self.store.set_meta("projection_version", projections.PROJECTION_VERSION)

    def rebuild_projections(self) -> None:
        """Drop every derived table and fold all events again."""
        with self.store.transaction():
            self._rebuild_in_transaction()

    # -- writing --------------------------------------------------------------------

    def write(self, action: Callable[[], T]) -> T:
        """Run ``action`` inside one write transaction (for checks guarding appends).

        When the connection to a server drops, ``action`` runs again after reconnecting
        (see :meth:`Store.atomically`), so it must only check and append.
        """
        return self.store.atomically(action)

    def append(self, new_events: Sequence[NewEvent]) -> AppendResult:
        """Append events and fold them into the projections, atomically.

        Already stored events are skipped (idempotent). Joins an enclosing transaction.
        """

        def append() -> AppendResult:
            result = self.store.append(new_events)
            rows = {event.event_id: event.observation_row for event in new_events if event.observation_row}
            projections.apply(self.conn, result.appended, rows)
            if result.appended:
                search.catch_up(self.conn)
            self.store.flush()
            return result

        return self.write(append)

    def _emit(self, kind: EventKind, body: dict[str, Any]) -> AppendResult:
        return self.append([ev.make_event(kind, body, source=self.source)])

    def register_study(
        self,
        study_id: str,
        *,
        title: str = "",
        description: str = "",
        seed_policy: SeedPolicy | None = None,
        run_budget: RunBudget | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Register a study; registering the same study the same way again is a no-op.

        Returns:
            The study id.
        """
        if not study_id:
            raise ValidationError("a study needs a non-empty study_id")
        body = ev.study_registered(
            study_id, title=title, description=description, seed_policy=seed_policy,
            run_budget=run_budget, extra=extra,
        )
        self._emit(EventKind.STUDY_REGISTERED, body)
        return study_id

    def register_run(
        self,
        study_id: str,
        condition_id: str,
        *,
        replicate: int = 1,
        agent_id: str | None = None,
        problem_id: str | None = None,
    ) -> str:
        """Register one run of a study and derive its seed as upstream does.

        The run id is upstream's ``hash_identifier("run", {...})`` and the seed
        ``SeedPolicy.derive_seed(study, condition, replicate, salt=f"{agent_id}:{problem_id}")``
        with the study's policy. Registering the same run again is a no-op.

        Raises:
            UnknownStudyError: the study was never registered.
            ValidationError: the study's RunBudget refuses the run.
        """
        run_id = run_id_for(study_id, condition_id, replicate, agent_id, problem_id)

        def register() -> str:
            study = query.study(self.conn, study_id)
            if study is None or not study["registered"]:
                raise UnknownStudyError(f"study {study_id!r} is not registered; register_study first")
            if query.run(self.conn, run_id) is not None:
                return run_id
            budget, policy = _study_rules(study)
            if not 1 <= replicate <= budget.replicates:
                raise ValidationError(
                    f"replicate {replicate} is outside study {study_id!r}'s budget of "
                    f"{budget.replicates} replicate(s) (1..{budget.replicates})"
                )
            if budget.max_runs is not None and study["run_count"] >= budget.max_runs:
                raise ValidationError(
                    f"study {study_id!r} already has {study['run_count']} run(s); "
                    f"its budget allows max_runs={budget.max_runs}"
                )
            seed = policy.derive_seed(study_id, condition_id, replicate, salt=f"{agent_id}:{problem_id}")
            body = ev.run_registered(
                run_id, study_id=study_id, condition_id=condition_id, replicate=replicate,
                agent_id=agent_id, problem_id=problem_id, seed=seed,
            )
            self._emit(EventKind.RUN_REGISTERED, body)
            return run_id

        return self.write(register)

    def transition(
        self,
        run_id: str,
        status: RunStatus | str,
        *,
        reason: str | None = None,
        error: str | None = None,
        at: str | None = None,
    ) -> None:
        """Move a run to a new status, refusing an illegal transition.

        Legal: pending -> running | skipped | failed; running -> success | failed.

        Raises:
            UnknownRunError: the run is not in the ledger.
            ValidationError: the transition is illegal; the message names the run, its
                current status and the requested one.
        """
        try:
            requested = RunStatus(status)
        except ValueError:
            raise ValidationError(
                f"{status!r} is not a run status ({', '.join(s.value for s in RunStatus)})"
            ) from None

        def move() -> None:
            row = self._run_or_raise(run_id)
            if not is_legal_transition(row["status"], requested):
                raise ValidationError(
                    f"run {run_id}: illegal transition {row['status']} -> {requested.value}"
                )
            body = ev.run_status_changed(
                run_id, requested, at=at or utc_now_precise(), reason=reason, error=error,
                study_id=row["study_id"],
            )
            self._emit(EventKind.RUN_STATUS_CHANGED, body)

        self.write(move)

    def capture_provenance(
        self,
        run_id: str,
        packages: Iterable[str] = (),
        *,
        cwd: Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ProvenanceMetadata:
        """Capture this process's provenance (``ProvenanceMetadata.capture``) for a run."""
        provenance = ProvenanceMetadata.capture(packages, cwd=cwd, extra=extra)
        self.record_provenance(run_id, provenance)
        return provenance

    def record_provenance(self, run_id: str, provenance: ProvenanceMetadata) -> None:
        """Record provenance captured elsewhere for a run."""

        def record() -> None:
            row = self._run_or_raise(run_id)
            body = ev.provenance_captured(run_id, provenance, study_id=row["study_id"])
            self._emit(EventKind.PROVENANCE_CAPTURED, body)

        self.write(record)

    def observe(self, *observations: Observation | dict[str, Any]) -> AppendResult:
        """Record observations; those already recorded are skipped.

        Raises:
            UnknownRunError: an observation names a run the ledger does not know.
            ValidationError: an observation is malformed.
        """
        bodies = [ev.observation_recorded(item) for item in observations]

        def record() -> AppendResult:
            for run_id in {body["run_id"] for body in bodies if body["run_id"]}:
                self._run_or_raise(run_id)
            return self.append(
                [ev.make_event(EventKind.OBSERVATION_RECORDED, body, source=self.source) for body in bodies]
            )

        return self.write(record)

    def _run_or_raise(self, run_id: str) -> Row:
        row = query.run(self.conn, run_id)
        if row is None:
            raise UnknownRunError(f"unknown run {run_id!r}")
        return row

    # -- reading --------------------------------------------------------------------

    def studies(self) -> list[Row]:
        """Every study with run counts and a status breakdown."""
        return query.studies(self.conn)

    def study(self, study_id: str) -> Row:
        """One study.

        Raises:
            UnknownStudyError: no such study.
        """
        row = query.study(self.conn, study_id)
        if row is None:
            raise UnknownStudyError(f"unknown study {study_id!r}")
        return row

    def runs(self, *, study_id: str | None = None, status: RunStatus | str | None = None) -> list[Row]:
        """Runs, optionally of one study and one status."""
        return query.runs(self.conn, study_id=study_id, status=None if status is None else RunStatus(status).value)

    def run(self, run_id: str) -> Row:
        """One run.

        Raises:
            UnknownRunError: no such run.
        """
        return self._run_or_raise(run_id)

    def observations(self, run_id: str, **filters: Any) -> list[Row]:
        """A page of a run's observations; see :func:`studyledger.query.observations`."""
        return query.observations(self.conn, run_id, **filters)

    def transitions(self, run_id: str) -> list[Row]:
        """A run's status history."""
        return query.transitions(self.conn, run_id)

    def provenance(self, run_id: str) -> list[Row]:
        """A run's provenance snapshots."""
        return query.provenance(self.conn, run_id)

    def anomalies(self, run_id: str | None = None) -> list[Row]:
        """Anomalies flagged by the projections."""
        return query.anomalies(self.conn, run_id)

    def events(self, *, after: int = 0, run_id: str | None = None, limit: int | None = None) -> list[StoredEvent]:
        """Stored events after a sequence number."""
        return query.events(self.conn, after=after, run_id=run_id, limit=limit)

    def stats(self) -> Row:
        """Counts of everything, and the head of the chain."""
        return query.stats(self.conn)

    def head(self) -> Head:
        """The last sequence number and its chain hash."""
        return self.store.head()


def _study_rules(study: Row) -> tuple[RunBudget, SeedPolicy]:
    """A study's run budget and seed policy as stored (possibly written by another program).

    Raises:
        ValidationError: what is stored cannot be a RunBudget or SeedPolicy.
    """
    try:
        budget = json.loads(study["run_budget"]) if study["run_budget"] else {}
        policy = json.loads(study["seed_policy"]) if study["seed_policy"] else {}
        return RunBudget(**budget), SeedPolicy(**policy)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"study {study['study_id']!r} has a run budget or seed policy that cannot be used: {exc}"
        ) from None
