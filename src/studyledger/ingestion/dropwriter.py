"""A writer for programs that would rather append to files than open the ledger database.

``DropWriter`` appends studyledger's own lines (docs/own-lines.md) to a JSONL file in a
folder that ``studyledger watch`` or ``studyledger ingest`` reads. Its methods mirror
:class:`~studyledger.ledger.Ledger`'s, and each states the same event the Ledger method
would (same body, so the same event id), so a run logged either way is one fact.

Why lines are safe to append from many processes: the file is opened with ``O_APPEND``
and every line goes out in ONE ``os.write`` of the whole line. On a local filesystem the
kernel positions and performs such a write atomically with respect to other appenders, so
lines from concurrent writers never interleave and a reader never sees half of one line
followed by another. ``os.write`` bypasses user-space buffers, so a line is in the file
(the page cache) as soon as the call returns; pass ``durable=True`` to also ``fsync``.

A full disk can cut a write short. The writer then tries to end the fragment with a
newline, and whether or not that succeeds, its next write starts with one: the fragment
becomes one rejected line of its own, and every later line stays whole (an extra newline
is a blank line, which reads as nothing).
Network filesystems do not promise atomic appends: give each process its own file there
(the default name is per host and process).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import ValidationError
from .. import events as ev
from ..events import RECORDED_BY_STUDYLEDGER, EventKind, canonical_body, check_body
from ..ledger import run_id_for
from ..schema import (
    Observation,
    ProvenanceMetadata,
    RunBudget,
    RunStatus,
    SeedPolicy,
    is_legal_transition,
)
from ..store import utc_now_precise
from ..own_lines import line_for


class DropWriter:
    """Append studyledger events as lines to ``<folder>/<name>.jsonl``.

    The writer has no ledger to consult, so it checks what it can from what it wrote
    itself: a run's seed comes from the policy its study was registered with through this
    writer, and a transition is refused only when this writer knows the run's status.
    Anything else is left to the ledger, whose projections flag anomalies.

    Args:
        folder: The drop folder (created if missing).
        name: The file's name without ``.jsonl``; defaults to ``<host>-<pid>``, one file
            per process, which is safe on any filesystem. Several processes may share
            one name on a local filesystem.
        durable: ``fsync`` after every line, so a line survives a power cut once the
            method returns (slower; a process crash never loses a written line anyway).
    """

    def __init__(self, folder: str | os.PathLike[str], *, name: str | None = None, durable: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = name or f"{socket.gethostname()}-{os.getpid()}"
        if not stem or "/" in stem or stem in {".", ".."}:
            raise ValidationError(f"invalid drop file name {stem!r}")
        self.path = self.folder / f"{stem}.jsonl"
        self.durable = durable
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._cut = False  # a write failed or was cut short: the file may end mid-line
        self._studies: dict[str, tuple[SeedPolicy, RunBudget]] = {}
        self._runs: dict[str, tuple[str | None, str]] = {}  # run id -> (study id, status)

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; later writes raise ``ValueError``."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DropWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the one write --------------------------------------------------------------

    def emit(self, kind: EventKind | str, body: dict[str, Any]) -> None:
        """Append one event line: the primitive every other method uses.

        Raises:
            ValueError: the writer is closed, or ``kind`` is not an event kind.
            ValidationError: the body is not what its kind holds (the ingester would
                reject the line), or the kind is one only studyledger records.
            OSError: the write failed or was short (disk full); see below.
        """
        if self._fd is None:
            raise ValueError(f"DropWriter for {self.path} is closed")
        kind = EventKind(kind).value
        if kind in RECORDED_BY_STUDYLEDGER:
            raise ValidationError(f"{kind} events are recorded by studyledger itself; the ingester refuses "
                                  "them from a drop folder")
        check_body(kind, json.loads(canonical_body(body)))
        data = line_for(kind, body).encode("utf-8")
        if self._cut:
            data = b"\n" + data  # line and newline in one write, after ending a fragment
        # A write that fails writes nothing (the file ends as it did); one cut short
        # leaves a fragment.
        written = os.write(self._fd, data)
        if written != len(data):
            # Writing the rest separately could land after another process's line and
            # glue two halves together. End the fragment instead: it becomes one
            # rejected line, and every later line (ours or others') stays whole.
            self._cut = True
            try:
                os.write(self._fd, b"\n")
                self._cut = False
            except OSError:
                pass  # the next write starts with the newline
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes); line not recorded",
                          str(self.path))
        self._cut = False
        if self.durable:
            os.fsync(self._fd)

    # -- what Ledger offers ---------------------------------------------------------

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
        """Register a study (as :meth:`Ledger.register_study`). Returns the study id."""
        if not study_id:
            raise ValidationError("a study needs a non-empty study_id")
        policy, budget = seed_policy or SeedPolicy(), run_budget or RunBudget()
        self.emit(EventKind.STUDY_REGISTERED, ev.study_registered(
            study_id, title=title, description=description, seed_policy=policy,
            run_budget=budget, extra=extra))
        self._studies[study_id] = (policy, budget)
        return study_id

    def register_run(
        self,
        study_id: str,
        condition_id: str,
        *,
        replicate: int = 1,
        agent_id: str | None = None,
        problem_id: str | None = None,
        seed_policy: SeedPolicy | None = None,
    ) -> str:
        """Register a run with upstream's run id and seed (as :meth:`Ledger.register_run`).

        Args:
            seed_policy: The study's policy, needed when the study was not registered
                through this writer (the ledger's copy is out of reach).

        Raises:
            ValidationError: the seed policy is unknown, or the replicate is outside the
                budget of a study this writer registered.
        """
        known = self._studies.get(study_id)
        policy = seed_policy or (known[0] if known else None)
        if policy is None:
            raise ValidationError(
                f"the seed policy of study {study_id!r} is unknown to this writer: register the "
                "study through it first, or pass seed_policy=")
        if known is not None and not 1 <= replicate <= known[1].replicates:
            raise ValidationError(
                f"replicate {replicate} is outside study {study_id!r}'s budget of "
                f"{known[1].replicates} replicate(s) (1..{known[1].replicates})")
        run_id = run_id_for(study_id, condition_id, replicate, agent_id, problem_id)
        seed = policy.derive_seed(study_id, condition_id, replicate, salt=f"{agent_id}:{problem_id}")
        self.emit(EventKind.RUN_REGISTERED, ev.run_registered(
            run_id, study_id=study_id, condition_id=condition_id, replicate=replicate,
            agent_id=agent_id, problem_id=problem_id, seed=seed))
        self._runs.setdefault(run_id, (study_id, RunStatus.PENDING.value))
        return run_id

    def transition(
        self,
        run_id: str,
        status: RunStatus | str,
        *,
        reason: str | None = None,
        error: str | None = None,
        at: str | None = None,
        study_id: str | None = None,
    ) -> None:
        """Move a run to a new status (as :meth:`Ledger.transition`).

        Raises:
            ValidationError: not a status, or an illegal transition for a run whose status
                this writer knows.
        """
        try:
            requested = RunStatus(status)
        except ValueError:
            raise ValidationError(
                f"{status!r} is not a run status ({', '.join(s.value for s in RunStatus)})") from None
        known_study, current = self._runs.get(run_id, (None, None))
        if current is not None and not is_legal_transition(current, requested):
            raise ValidationError(f"run {run_id}: illegal transition {current} -> {requested.value}")
        study = study_id or known_study
        self.emit(EventKind.RUN_STATUS_CHANGED, ev.run_status_changed(
            run_id, requested, at=at or utc_now_precise(), reason=reason, error=error, study_id=study))
        self._runs[run_id] = (study, requested.value)

    def observe(self, *observations: Observation | dict[str, Any]) -> int:
        """Record observations (as :meth:`Ledger.observe`); returns how many lines were written.

        All are validated before any is written, so a bad one writes none.
        """
        bodies = [ev.observation_recorded(item) for item in observations]
        for body in bodies:
            self.emit(EventKind.OBSERVATION_RECORDED, body)
        return len(bodies)

    def capture_provenance(
        self,
        run_id: str,
        packages: Iterable[str] = (),
        *,
        cwd: Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ProvenanceMetadata:
        """Capture this process's provenance for a run (as :meth:`Ledger.capture_provenance`)."""
        provenance = ProvenanceMetadata.capture(packages, cwd=cwd, extra=extra)
        self.record_provenance(run_id, provenance)
        return provenance

    def record_provenance(self, run_id: str, provenance: ProvenanceMetadata) -> None:
        """Record provenance captured elsewhere (as :meth:`Ledger.record_provenance`)."""
        study = self._runs.get(run_id, (None, None))[0]
        self.emit(EventKind.PROVENANCE_CAPTURED, ev.provenance_captured(run_id, provenance, study_id=study))

    def record_evaluation(
        self,
        run_id: str,
        *,
        evaluator_id: str,
        metric_name: str,
        metric_value: Any,
        metric_unit: str | None = None,
        aggregation_level: str | None = None,
        notes: dict[str, Any] | None = None,
    ) -> None:
        """Record one evaluator output row for a run (upstream's evaluations.csv columns)."""
        study = self._runs.get(run_id, (None, None))[0]
        self.emit(EventKind.EVALUATION_RECORDED, ev.evaluation_recorded(
            run_id, evaluator_id=evaluator_id, metric_name=metric_name, metric_value=metric_value,
            metric_unit=metric_unit, aggregation_level=aggregation_level, notes_json=notes,
            study_id=study))
