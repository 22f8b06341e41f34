"""Per-run files of a canonical export: ``artifacts/runs/<run_id>/run.json`` and ``observations.jsonl``.

They are not among the contract's required files, but upstream's study folders hold them and
studyledger's ingester reads them: with them, a canonical export read back by
``studyledger ingest`` registers the same runs (same ids, seeds, statuses and times) and the
same observations (same event ids, since an observation's id is its content). Without them
the ingester would see only the study, its conditions and its evaluations, because it reads
runs from run records rather than from ``runs.csv``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .files import atomic_writer, folder_name, write_atomic

RUNS_DIR = Path("artifacts") / "runs"


def run_record(run: dict[str, Any], provenance: dict[str, Any] | None) -> dict[str, Any]:
    """A run in the shape of upstream's checkpoint line (what the ingester's adapter reads).

    ``agent_id`` goes in ``execution_metadata`` (what actually ran), the adapter's first
    choice, so the registration it rebuilds is the one the ledger holds.
    """
    record: dict[str, Any] = {
        "run_id": run["run_id"],
        "status": run["status"],
        "status_reason": run["status_reason"],
        "started_at": run["started_at"],
        "ended_at": run["ended_at"],
        "error_info": run["error"],
        "run_spec": {
            "run_id": run["run_id"],
            "study_id": run["study_id"],
            "condition_id": run["condition_id"],
            "problem_id": run["problem_id"],
            "replicate": run["replicate"],
            "seed": run["seed"],
            "execution_metadata": {"agent_id": run["agent_id"]} if run["agent_id"] else {},
        },
        "trace_refs": [],
    }
    if provenance:
        record["provenance_info"] = {key: provenance.get(key) for key in (
            "captured_at", "host", "platform", "python_version", "package_versions", "git_sha", "extra")}
    return record


def write_run_artifacts(conn: sqlite3.Connection, folder: Path, run: dict[str, Any],
                        provenance: dict[str, Any] | None) -> None:
    """Write one run's record and its observations (each the stored body, one per line)."""
    target = folder / RUNS_DIR / folder_name(run["run_id"])
    target.mkdir(parents=True, exist_ok=True)
    record = json.dumps(run_record(run, provenance), sort_keys=True, ensure_ascii=True, allow_nan=False)
    write_atomic(target / "run.json", record + "\n")
    with atomic_writer(target / "observations.jsonl") as out:
        # The stored body is the canonical observation row: the ingester's observation
        # adapter rebuilds the identical body from it, hence the identical event id.
        for (body,) in conn.execute(
                "SELECT e.body FROM observations o JOIN events e ON e.seq = o.seq "
                "WHERE o.run_id = ? ORDER BY o.seq", (run["run_id"],)):
            out.write(body + "\n")
