"""Canonical export: design-research-experiments' artifact contract, schema 0.2.0.

One folder per study under the export directory, each holding ``study.yaml``,
``manifest.json``, ``conditions.csv``, ``runs.csv``, ``events.csv``, ``evaluations.csv``,
``hypotheses.json`` and ``analysis_plan.json``, so that design-research-analysis can read a
ledger as it reads a study the upstream runner wrote (docs/audit.md lists every choice):

* Runs, observations and evaluations that belong to no study go to a folder named
  ``_unassigned`` whose files use ``_unassigned`` as their study id.
* A folder is named after its study id when the id is a safe file name; otherwise unsafe
  characters become ``_`` and a short hash of the id is appended so two ids never share one.
* Each run also gets ``artifacts/runs/<run_id>/run.json`` and ``observations.jsonl``, as
  upstream's folders do, so the export reads back through the ingester (see run_artifacts).
* Columns the ledger cannot know (problem_family, agent_kind, pattern_name, model_name,
  token counts, cost, primary_outcome, trace and manifest paths) are empty.
* Non-finite metric values are written ``nan``, ``inf`` and ``-inf``, as Python's ``str``
  and the csv module write them; pandas' ``read_csv`` reads them back as floats. Missing
  values are empty cells.
* ``meta_json``, ``notes_json``, ``assignment_meta_json`` and ``constraint_messages`` are
  strict JSON text (non-finite floats inside them keep the ledger's ``{"$float": "NaN"}`` tag).
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from .. import query
from ..schema import RunStatus, from_canonical, utc_now_iso
from .files import atomic_writer, folder_name, write_atomic
from .run_artifacts import write_run_artifacts
from .snapshot_read import Readable, connection_of, read_snapshot

ARTIFACT_SCHEMA_VERSION = "0.2.0"
UNASSIGNED = "_unassigned"

CONDITION_COLUMNS = ("study_id", "condition_id", "admissible", "constraint_messages", "assignment_meta_json")
RUN_COLUMNS = (
    "study_id", "condition_id", "run_id", "problem_id", "problem_family", "agent_id", "agent_kind",
    "pattern_name", "model_name", "seed", "replicate", "status", "start_time", "end_time", "latency_s",
    "input_tokens", "output_tokens", "cost_usd", "primary_outcome", "trace_path", "manifest_path",
)
EVENT_COLUMNS = (
    "timestamp", "record_id", "text", "session_id", "actor_id", "event_type", "meta_json",
    "level", "study_id", "run_id", "condition_id", "trial_id", "step_id", "tool_name", "evaluation_id",
)
EVALUATION_COLUMNS = (
    "run_id", "evaluator_id", "metric_name", "metric_value", "metric_unit", "aggregation_level", "notes_json",
)
def cell(value: Any) -> str:
    """One CSV cell: empty for null, ``True``/``False``, ``nan``/``inf`` for non-finite floats."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def metric_cell(value: Any) -> str:
    """A metric value as stored by the projection (scalars raw, tagged or structured values as JSON)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            decoded = from_canonical(json.loads(value))
        except ValueError:
            return value
        return cell(decoded) if isinstance(decoded, float) else value
    return cell(value)


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> int:
    """Stream rows into a CSV file (atomically); returns how many were written."""
    count = 0
    with atomic_writer(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(list(header))
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def _study_filter(study_id: str | None, column: str) -> tuple[str, tuple[Any, ...]]:
    return (f"{column} IS NULL", ()) if study_id is None else (f"{column} = ?", (study_id,))


def _runs(conn: sqlite3.Connection, study_id: str | None) -> list[dict[str, Any]]:
    where, params = _study_filter(study_id, "study_id")
    return query.rows(conn.execute(f"SELECT * FROM runs WHERE {where} ORDER BY first_seq", params))


def _conditions(conn: sqlite3.Connection, study_id: str | None, label: str
                ) -> tuple[list[str], list[list[str]], dict[str, list[Any]]]:
    """The study's registered conditions: the CSV header, its rows, and each factor's levels.

    A condition that runs name but no event registered is left out rather than given an
    admissibility the ledger never saw (the ingester, like upstream, needs one).
    """
    registered = [] if study_id is None else query.conditions(conn, study_id)
    factor_names_seen: set[str] = set()
    levels: dict[str, list[Any]] = {}
    rows: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    for row in registered:
        factor_values = json.loads(row["factors"] or "{}")
        blocks = json.loads(row["blocks"] or "{}")
        rows.append((row, factor_values, blocks))
        factor_names_seen.update(factor_values)
        for name, value in factor_values.items():
            bucket = levels.setdefault(name, [])
            if value not in bucket:
                bucket.append(value)
    block_names = sorted({name for _, _, blocks in rows for name in blocks})
    factor_names = sorted(factor_names_seen)
    header = [*CONDITION_COLUMNS, *factor_names, *(f"block_{name}" for name in block_names)]
    out: list[list[str]] = []
    for row, factor_values, blocks in rows:
        out.append([label, row["condition_id"], cell(bool(row["admissible"])),
                    row["constraint_messages"] or "[]", row["assignment_meta"] or "{}",
                    *(cell(from_canonical(factor_values.get(name))) for name in factor_names),
                    *(cell(from_canonical(blocks.get(name))) for name in block_names)])
    return header, out, levels


def _run_rows(runs: list[dict[str, Any]], label: str) -> Iterator[list[str]]:
    for run in runs:
        values: dict[str, Any] = dict.fromkeys(RUN_COLUMNS)
        values.update({name: run[name] for name in ("condition_id", "run_id", "problem_id", "agent_id",
                                                    "seed", "replicate", "status")})
        values.update(study_id=label, start_time=run["started_at"], end_time=run["ended_at"],
                      latency_s=query.run_duration(run))
        yield [cell(values[name]) for name in RUN_COLUMNS]


def _study_rows(conn: sqlite3.Connection, source: str, columns: tuple[str, ...], study_of_row: str,
                study_id: str | None) -> Iterator[tuple[Any, ...]]:
    """Rows of ``source`` (aliased ``x``, its run joined as ``r``) that belong to one study."""
    where, params = _study_filter(study_id, study_of_row)
    yield from conn.execute(
        f"SELECT {', '.join('x.' + c for c in columns)} FROM {source} x "
        f"LEFT JOIN runs r ON r.run_id = x.run_id WHERE {where} ORDER BY x.seq", params)


def _event_rows(conn: sqlite3.Connection, study_id: str | None) -> Iterator[list[str]]:
    # An observation's own study wins; one without a study joins its run's.
    for row in _study_rows(conn, "observation_rows", EVENT_COLUMNS, "coalesce(x.study_id, r.study_id)", study_id):
        yield [cell(value) for value in row]


def _evaluation_rows(conn: sqlite3.Connection, study_id: str | None) -> Iterator[list[str]]:
    for row in _study_rows(conn, "evaluations", EVALUATION_COLUMNS, "r.study_id", study_id):
        values = [cell(value) for value in row]
        values[3] = metric_cell(row[3])
        yield values


def _provenance(conn: sqlite3.Connection, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest provenance snapshot of each run that has one."""
    latest = query.latest_provenance(conn)
    found: dict[str, Any] = {}
    for run in runs:
        snapshot = latest.get(run["run_id"])
        if snapshot is not None:
            for name in ("package_versions", "extra"):
                snapshot[name] = json.loads(snapshot[name] or "{}")
            found[run["run_id"]] = snapshot
    return found


def _study_yaml(study: dict[str, Any] | None, label: str, factor_levels: dict[str, list[Any]]) -> str:
    document: dict[str, Any] = {
        "schema_version": ARTIFACT_SCHEMA_VERSION,
        "study_id": label,
        "title": (study or {}).get("title") or "",
        "description": (study or {}).get("description") or "",
    }
    if factor_levels:
        document["factors"] = [{"name": name, "levels": levels} for name, levels in factor_levels.items()]
    for name in ("run_budget", "seed_policy"):
        if study and study.get(name):
            document[name] = json.loads(study[name])
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def export_study(conn: sqlite3.Connection, study_id: str | None, root: Path, *,
                 generated_at: str, ledger_head: dict[str, Any]) -> dict[str, Any]:
    """Write one study's folder; ``study_id`` None writes the ``_unassigned`` folder."""
    label = UNASSIGNED if study_id is None else study_id
    folder = root / (UNASSIGNED if study_id is None else folder_name(study_id))
    folder.mkdir(parents=True, exist_ok=True)
    study = None if study_id is None else query.study(conn, study_id)
    runs = _runs(conn, study_id)
    header, condition_rows, factor_levels = _conditions(conn, study_id, label)
    write_atomic(folder / "study.yaml", _study_yaml(study, label, factor_levels))
    _write_csv(folder / "conditions.csv", header, condition_rows)
    _write_csv(folder / "runs.csv", RUN_COLUMNS, _run_rows(runs, label))
    events = _write_csv(folder / "events.csv", EVENT_COLUMNS, _event_rows(conn, study_id))
    evaluations = _write_csv(folder / "evaluations.csv", EVALUATION_COLUMNS, _evaluation_rows(conn, study_id))
    provenance = _provenance(conn, runs)
    for run in runs:
        write_run_artifacts(conn, folder, run, provenance.get(run["run_id"]))
    status_counts = {status.value: 0 for status in RunStatus}
    for run in runs:
        status_counts[run["status"]] = status_counts.get(run["status"], 0) + 1
    manifest = {
        "schema_version": ARTIFACT_SCHEMA_VERSION,
        "study_id": label,
        "generated_at": generated_at,
        "status_counts": status_counts,
        "model_ids": [],
        "run_count": len(runs),
        "provenance": {"generator": "studyledger", "ledger_head": ledger_head,
                       "runs": provenance},
    }
    write_atomic(folder / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n")
    for name in ("hypotheses.json", "analysis_plan.json"):
        write_atomic(folder / name, "[]\n")
    return {"study_id": label, "folder": str(folder), "runs": len(runs), "events": events,
            "evaluations": evaluations}


def _has_unassigned(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE study_id IS NULL) "
        "OR EXISTS (SELECT 1 FROM observations o LEFT JOIN runs r ON r.run_id = o.run_id "
        "           WHERE coalesce(o.study_id, r.study_id) IS NULL) "
        "OR EXISTS (SELECT 1 FROM evaluations e LEFT JOIN runs r ON r.run_id = e.run_id "
        "           WHERE r.study_id IS NULL)").fetchone()[0])


def export_canonical(source: Readable | sqlite3.Connection, root: Path) -> dict[str, Any]:
    """Write every study (and ``_unassigned`` when needed) under ``root``, as upstream's
    artifact files, from one consistent snapshot of the ledger.

    Args:
        source: The ledger, or an as-of snapshot of it (:func:`state_as_of`).
        root: The folder to write into (created when missing).

    Returns:
        ``{"dir", "schema_version", "studies": [{"study_id", "folder", "runs", "events",
        "evaluations"}]}``.
    """
    root.mkdir(parents=True, exist_ok=True)
    conn = connection_of(source)
    with read_snapshot(conn):
        generated_at, head = utc_now_iso(), query.head(conn).to_dict()
        study_ids: list[str | None] = [row["study_id"] for row in query.studies(conn)]
        if _has_unassigned(conn):
            study_ids.append(None)
        written = [export_study(conn, study_id, root, generated_at=generated_at, ledger_head=head)
                   for study_id in study_ids]
    return {"dir": str(root), "schema_version": ARTIFACT_SCHEMA_VERSION, "studies": written}
