"""What a canonical export says about each run: its ``runs.csv`` row and its run-evidence record.

One view of a run (:func:`run_view`) feeds both files, so they never disagree. When the
ledger holds the runner's own record of the outcome it shows (a checkpoint line or a
run.json: its times, latency, metrics, execution metadata and references), the run is
described as the runner recorded it; the status is always the ledger's. Values never
recorded are written as upstream writes them for unknown (docs/formats.md).

Each run also gets ``artifacts/runs/<run_id>/run.json`` (upstream's run-evidence record,
schema 0.1.0), its ``observations.jsonl`` and an empty ``attachments/`` folder, as upstream's
folders do: upstream's ``load_run_evidence_records`` reads them, and studyledger's ingester
reads them back into the same runs.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from .. import query
from ..schema import DEFAULT_STATUS_REASONS, TERMINAL_STATUSES, RunStatus, from_canonical
from .files import folder_name

RUNS_DIR = Path("artifacts") / "runs"
EVIDENCE_SCHEMA_VERSION = "0.1.0"
UNKNOWN = "unknown"
"""What upstream's runs.csv says of a problem family, agent kind, pattern or model it never learnt."""

_ATTEMPTED = frozenset({RunStatus.RUNNING, RunStatus.SUCCESS, RunStatus.FAILED})


@dataclass(slots=True)
class RunView:
    """One run as the export describes it.

    Attributes:
        run: The ledger's run row.
        status: The status the ledger shows.
        reason: The runner's reason when its record is of the shown outcome, else the
            ledger's, else upstream's default for the status.
        error: Likewise.
        started_at: When it started (the runner's time when known).
        ended_at: When it ended.
        latency_s: The runner's latency, else end minus start, else 0.0.
        metrics: The runner's metrics ({} when unknown).
        outputs: The runner's outputs.
        configured: The execution metadata the run was configured with.
        observed: The execution metadata the runner observed.
        trace_refs: References to its traces, as the runner wrote them.
        artifact_refs: References to other artifacts.
        provenance: The runner's provenance_info of this attempt (None when the ledger
            holds no runner record: the run's latest snapshot is used then).
    """

    run: dict[str, Any]
    status: str
    reason: str
    error: str | None
    started_at: str | None
    ended_at: str | None
    latency_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: Any = field(default_factory=dict)
    configured: dict[str, Any] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)
    trace_refs: list[Any] = field(default_factory=list)
    artifact_refs: list[Any] = field(default_factory=list)
    provenance: dict[str, Any] | None = None

    def metadata(self, key: str) -> Any:
        """A value of the merged execution metadata, as upstream's runs.csv reads it."""
        return {**self.configured, **self.observed}.get(key, UNKNOWN)

    def metric(self, key: str, unknown: Any) -> Any:
        return self.metrics.get(key, unknown)

    @property
    def cost_usd(self) -> float:
        """The runner's cost: its ``metrics.cost_usd``, as upstream's runner computes it."""
        value = self.metrics.get("cost_usd")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def run_view(run: dict[str, Any]) -> RunView:
    """How the export describes one run row (see the module docstring)."""
    status = run["status"]
    result = from_canonical(json.loads(run["result"])) if run.get("result") else None
    duration = query.run_duration(run)
    if result is None:
        return RunView(run=run, status=status,
                       reason=run["status_reason"] or DEFAULT_STATUS_REASONS[RunStatus(status)],
                       error=run["error"], started_at=run["started_at"], ended_at=run["ended_at"],
                       latency_s=duration if duration is not None else 0.0,
                       configured={"agent_id": run["agent_id"], "problem_id": run["problem_id"]})
    own = result.get("status") == status
    reason = (result.get("reason") if own else run["status_reason"]) or DEFAULT_STATUS_REASONS[RunStatus(status)]
    latency = result.get("latency_s")
    return RunView(
        run=run, status=status, reason=reason, error=result.get("error") if own else run["error"],
        started_at=result.get("started_at"), ended_at=result.get("at"),
        latency_s=latency if isinstance(latency, (int, float)) and not isinstance(latency, bool) else 0.0,
        metrics=_mapping(result.get("metrics")), outputs=result.get("outputs") or {},
        configured=_mapping(result.get("configured_execution_metadata")),
        observed=_mapping(result.get("observed_execution_metadata")),
        trace_refs=_sequence(result.get("trace_refs")), artifact_refs=_sequence(result.get("artifact_refs")),
        provenance=_mapping(result.get("provenance")))


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def upstream_provenance(snapshot: dict[str, Any] | None) -> dict[str, Any]:
    """A provenance snapshot as upstream's run.json holds it (``observed.provenance``).

    The ingester keeps the keys of upstream's ``provenance_info`` (agent, problem, model,
    trace path...) in the snapshot's ``extra``; a snapshot with nothing else is given back
    as those keys. One captured by studyledger itself is given whole.
    """
    if snapshot is None:
        return {}
    extra = snapshot.get("extra") or {}
    standard = {name: snapshot.get(name) for name in query.PROVENANCE_COLUMNS}
    if not any(standard.values()) and not snapshot.get("package_versions"):
        return dict(extra)
    return {**standard, "package_versions": snapshot.get("package_versions") or {}, "extra": extra}


def evaluation_rows(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's evaluator outputs with their exact values (booleans, NaN), in the order stored."""
    rows = []
    for (body,) in conn.execute(
            "SELECT e.body FROM evaluations x JOIN events_json e ON e.seq = x.seq WHERE x.run_id = ? ORDER BY x.seq",
            (run_id,)):
        data = from_canonical(json.loads(body))
        rows.append({key: data.get(key) for key in ("aggregation_level", "evaluator_id", "metric_name",
                                                    "metric_unit", "metric_value", "notes_json", "run_id")})
    return rows


def _observation_lines(conn: sqlite3.Connection, run_id: str) -> Iterator[str]:
    # The stored body is the canonical observation row: the ingester's observation adapter
    # rebuilds the identical body from it, hence the identical event id.
    for (body,) in conn.execute("SELECT e.body FROM observations o JOIN events_json e ON e.seq = o.seq "
                                "WHERE o.run_id = ? ORDER BY o.seq", (run_id,)):
        yield body + "\n"


def evidence_record(view: RunView, study_label: str, provenance: dict[str, Any],
                    evaluations: list[dict[str, Any]], observations_sha256: str,
                    observation_count: int) -> dict[str, Any]:
    """Upstream's run-evidence record (``evidence._build_run_evidence_payload``) of a run.

    References are written with ``sha256: null``: upstream checks a hash only against a
    file inside the folder being read, and the export holds no trace files.
    """
    run, status = view.run, RunStatus(view.status)
    return {
        "schema_version": EVIDENCE_SCHEMA_VERSION,
        "record_type": "run-evidence",
        "study_id": study_label,
        "condition_id": run["condition_id"],
        "run_id": run["run_id"],
        "status": status.value,
        "status_reason": view.reason,
        "attempted": status in _ATTEMPTED,
        "terminal": status in TERMINAL_STATUSES,
        "configured": {
            "problem_id": run["problem_id"] or "",
            "problem_spec_ref": run["problem_id"],
            "agent_spec_ref": run["agent_id"],
            "replicate": run["replicate"],
            "seed": run["seed"],
            "execution_metadata": view.configured,
        },
        "observed": {
            "execution_metadata": view.observed,
            "outputs": view.outputs,
            "metrics": view.metrics,
            "evaluations": evaluations,
            "provenance": provenance,
            "trace_refs": view.trace_refs,
            "artifact_refs": view.artifact_refs,
            "observation_count": observation_count,
        },
        "timing": {"started_at": view.started_at, "ended_at": view.ended_at, "latency_s": view.latency_s},
        "error": view.error,
        "files": {"observations": "observations.jsonl", "attachments": "attachments"},
        "integrity": {
            "observations_sha256": observations_sha256,
            "referenced_artifacts": [{"kind": kind, "reference": str(reference), "sha256": None}
                                     for kind, references in (("trace", view.trace_refs),
                                                              ("artifact", view.artifact_refs))
                                     for reference in references],
        },
    }


class Writer(Protocol):
    """Where a study folder's files are written (the export's staging folder)."""

    folder: Path

    def create(self, name: str | Path) -> AbstractContextManager[TextIO]: ...

    def write(self, name: str | Path, text: str) -> None: ...


def write_run_artifacts(conn: sqlite3.Connection, study: Writer, view: RunView, study_label: str,
                        snapshot: dict[str, Any] | None) -> None:
    """Write one run's run.json, observations.jsonl and empty attachments/ folder."""
    run_id = view.run["run_id"]
    target = RUNS_DIR / folder_name(run_id)
    (study.folder / target / "attachments").mkdir(parents=True, exist_ok=True)
    digest, count = hashlib.sha256(), 0
    with study.create(target / "observations.jsonl") as out:
        for line in _observation_lines(conn, run_id):
            out.write(line)
            digest.update(line.encode("utf-8"))
            count += 1
    provenance = view.provenance if view.provenance is not None else upstream_provenance(snapshot)
    record = evidence_record(view, study_label, provenance, evaluation_rows(conn, run_id), digest.hexdigest(), count)
    # As upstream writes it: indented, keys sorted, ASCII, NaN and Infinity as bare tokens.
    study.write(target / "run.json", json.dumps(record, indent=2, sort_keys=True, ensure_ascii=True) + "\n")
