"""Canonical export: design-research-experiments' artifact contract, schema 0.2.0.

One folder per study under the export directory, each holding ``study.yaml``,
``manifest.json``, ``conditions.csv``, ``runs.csv``, ``events.csv``, ``evaluations.csv``,
``hypotheses.json``, ``analysis_plan.json`` and, per run, ``artifacts/runs/<run_id>/``
(run.json, observations.jsonl, attachments/), written as upstream writes them so that
upstream's readers (design-research-experiments' ``load_study``, ``validate_study``,
``validate_canonical_artifacts``, ``load_run_evidence_records``; design-research-analysis'
loaders and tables) accept the export wherever they accept upstream's own folder, with the
same rows (docs/audit.md and docs/formats.md list every choice):

* Runs, observations and evaluations that belong to no study go to a folder named
  ``_unassigned`` whose files use ``_unassigned`` as their study id.
* A folder is named after its id when the id is a short, safe file name; otherwise unsafe
  characters become ``_``, it is cut, and a short hash of the id is appended.
* study.yaml is the study as its study.yaml stated it (kept in the study's ``extra``), or
  built from what the ledger knows: a study without a title is titled by its id.
* Each run is described as upstream's runner recorded it when the ledger holds that record
  (see :mod:`.run_artifacts`); its status is the ledger's. Values never recorded are what
  upstream writes for unknown (``unknown``, ``0``, ``0.0``, an empty cell).
* The export is written into a temporary folder beside the target and moved into place at
  the end: a reader never sees half an export.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import yaml

from .. import query
from ..schema import from_canonical, stable_json_dumps, utc_now_iso
from .files import folder_name, named_for_user
from .run_artifacts import RunView, run_view, upstream_provenance, write_run_artifacts
from .snapshot_read import Readable, connection_of, read_snapshot

ARTIFACT_SCHEMA_VERSION = "0.2.0"
UNASSIGNED = "_unassigned"

CONDITION_COLUMNS = ("study_id", "condition_id", "admissible", "constraint_messages", "assignment_meta_json")
RUN_COLUMNS = (
    "study_id", "condition_id", "run_id", "problem_id", "problem_family", "agent_id", "agent_kind",
    "pattern_name", "model_name", "seed", "replicate", "status", "start_time", "end_time", "latency_s",
    "input_tokens", "output_tokens", "cost_usd", "primary_outcome", "trace_path", "manifest_path",
    "error_info", "status_reason",
)
"""The contract's 21 columns, upstream's ``error_info``, then ours: ``status_reason`` says why a
run shows its status (e.g. a trace that reported a failure the runner did not see)."""
EVENT_COLUMNS = (
    "timestamp", "record_id", "text", "session_id", "actor_id", "event_type", "meta_json",
    "level", "study_id", "run_id", "condition_id", "trial_id", "step_id", "tool_name", "evaluation_id",
)
EVALUATION_COLUMNS = (
    "run_id", "evaluator_id", "metric_name", "metric_value", "metric_unit", "aggregation_level", "notes_json",
)
STUDY_KEYS = (
    "schema_version", "study_id", "title", "description", "authors", "rationale", "tags", "hypotheses",
    "factors", "blocks", "constraints", "design_spec", "outcomes", "analysis_plans", "run_budget",
    "seed_policy", "output_dir", "provenance_metadata", "notes", "problem_ids", "agent_specs",
)
"""study.yaml's keys in the order upstream's ``Study.to_dict`` writes them."""


def cell(value: Any) -> str:
    """One CSV cell as upstream's csv writer makes it (Python's ``str``): empty for null,
    ``True``/``False``, ``nan``/``inf``/``-inf``; objects and lists as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


class _Target:
    """A study folder being written in the staging folder, and where it will end up.

    A write that fails (a full disk) names the file where the user will look for it, not
    the temporary folder that is removed on the way out. The name is given here because
    an error of ``write`` names no file at all, so :func:`named_for_user` has none to rename.
    """

    def __init__(self, folder: Path, given: Path) -> None:
        self.folder = folder
        self.given = given

    @contextmanager
    def create(self, name: str | Path) -> Iterator[TextIO]:
        try:
            with (self.folder / name).open("w", encoding="utf-8", newline="") as out:
                yield out
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.given / name)) from None

    def write(self, name: str | Path, text: str) -> None:
        with self.create(name) as out:
            out.write(text)

    def write_csv(self, name: str, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> int:
        """Stream rows into a CSV file; returns how many were written."""
        count = 0
        with self.create(name) as out:
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
        factor_values = _stored_object(row["factors"])
        blocks = _stored_object(row["blocks"])
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
                    *(cell(factor_values.get(name)) for name in factor_names),
                    *(cell(blocks.get(name)) for name in block_names)])
    return header, out, levels


def _stored_object(text: str | None) -> dict[str, Any]:
    """A JSON object the projections stored; {} for anything else a forged body left there."""
    value = from_canonical(json.loads(text)) if text else {}
    return value if isinstance(value, dict) else {}


def _run_row(view: RunView, label: str, manifest_path: str) -> list[str]:
    """A runs.csv row, built as upstream's ``artifacts._runs_rows`` builds it."""
    run = view.run
    values = {
        "study_id": label, "condition_id": run["condition_id"], "run_id": run["run_id"],
        "problem_id": run["problem_id"] or "", "problem_family": view.metadata("problem_family"),
        "agent_id": run["agent_id"], "agent_kind": view.metadata("agent_kind"),
        "pattern_name": view.metadata("pattern_name"), "model_name": view.metadata("model_name"),
        "seed": run["seed"], "replicate": run["replicate"], "status": view.status,
        "start_time": view.started_at, "end_time": view.ended_at, "latency_s": view.latency_s,
        "input_tokens": view.metric("input_tokens", 0), "output_tokens": view.metric("output_tokens", 0),
        "cost_usd": view.cost_usd, "primary_outcome": view.metric("primary_outcome", None),
        "trace_path": view.trace_refs[0] if view.trace_refs else "", "manifest_path": manifest_path,
        "error_info": view.error, "status_reason": view.reason,
    }
    return [cell(values[name]) for name in RUN_COLUMNS]


def _study_rows(conn: sqlite3.Connection, source: str, columns: Iterable[str], study_of_row: str,
                study_id: str | None) -> Iterator[tuple[Any, ...]]:
    """Rows of ``source`` (aliased ``x``, its run joined as ``r``) that belong to one study."""
    where, params = _study_filter(study_id, study_of_row)
    # A loop, not ``yield from``: a generator abandoned by a failed write must not close its
    # cursor after the connection (``yield from`` would).
    for row in conn.execute(f"SELECT {', '.join(columns)} FROM {source} x "
                            f"LEFT JOIN runs r ON r.run_id = x.run_id WHERE {where} ORDER BY x.seq", params):
        yield row


def _upstream_json(text: str | None) -> str:
    """A stored JSON text as upstream's ``stable_json_dumps`` writes it: compact, sorted,
    ASCII, non-finite floats as bare tokens. Stored text already is, unless it holds
    non-ASCII or a non-finite tag, so only those are encoded again."""
    if text is None:
        return "{}"
    if not isinstance(text, str):  # a bare value a raw writer stored where an object belongs
        return stable_json_dumps(from_canonical(text))
    if text.isascii() and '"$float"' not in text:
        return text
    return stable_json_dumps(from_canonical(json.loads(text)))


def _event_rows(conn: sqlite3.Connection, study_id: str | None) -> Iterator[list[str]]:
    # An observation's own study wins; one without a study joins its run's.
    meta = EVENT_COLUMNS.index("meta_json")
    for row in _study_rows(conn, "observation_rows", (f"x.{c}" for c in EVENT_COLUMNS),
                           "coalesce(x.study_id, r.study_id)", study_id):
        values = [cell(value) for value in row]
        values[meta] = _upstream_json(row[meta])
        yield values


def _evaluation_rows(conn: sqlite3.Connection, study_id: str | None) -> Iterator[list[str]]:
    """evaluations.csv rows from the event bodies, so a value is exactly what was recorded
    (a boolean, a NaN); ``notes_json`` as upstream writes it (``json.dumps`` sorted)."""
    where, params = _study_filter(study_id, "r.study_id")
    for (body,) in conn.execute(
            f"SELECT e.body FROM evaluations x JOIN events_json e ON e.seq = x.seq LEFT JOIN runs r ON r.run_id = x.run_id "
            f"WHERE {where} ORDER BY x.seq", params):
        data = from_canonical(json.loads(body))
        notes = data.get("notes_json")
        values = [cell(data.get(name)) for name in EVALUATION_COLUMNS]
        values[-1] = json.dumps(notes if notes is not None else {}, sort_keys=True)
        yield values


def _provenance(conn: sqlite3.Connection, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest provenance snapshot of each run that has one."""
    latest = query.latest_provenance(conn)
    found: dict[str, Any] = {}
    for run in runs:
        snapshot = latest.get(run["run_id"])
        if snapshot is not None:
            for name in ("package_versions", "extra"):
                snapshot[name] = from_canonical(json.loads(snapshot[name] or "{}"))
            found[run["run_id"]] = snapshot
    return found


def _factors(levels: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Factors for a study.yaml that never stated them, from the registered conditions: each
    level an object as upstream's ``Factor`` needs (``name``, ``value``, ``label``)."""
    factors: list[dict[str, Any]] = []
    for name, values in levels.items():
        named = [value if isinstance(value, str) else json.dumps(value) for value in values]
        factors.append({"name": name, "description": "", "kind": "manipulated",
                        "levels": [{"name": level, "value": value, "label": level, "metadata": {}}
                                   for level, value in zip(named, values, strict=True)],
                        "dtype": None, "default": None, "metadata": {}})
    return factors


def _study_document(study: dict[str, Any] | None, label: str, factor_levels: dict[str, list[Any]]) -> dict[str, Any]:
    """study.yaml: the study as its study.yaml stated it, in upstream's key order.

    The ingester keeps every study.yaml key it does not model in the study's ``extra``, so
    hypotheses, factors with their level objects, outcomes, the design and analysis plans
    come back as written. What the ledger never learnt is built (factors from the
    registered conditions) or left out (upstream's defaults apply); a study with no title
    is titled by its id, since upstream refuses an empty title.
    """
    study = study or {}
    extra = _stored_object(study.get("extra"))
    known = {
        "schema_version": ARTIFACT_SCHEMA_VERSION,
        "study_id": label,
        "title": study.get("title") or label,
        "description": study.get("description") or "",
        "run_budget": json.loads(study["run_budget"]) if study.get("run_budget") else None,
        "seed_policy": json.loads(study["seed_policy"]) if study.get("seed_policy") else None,
    }
    if "factors" not in extra and factor_levels:
        known["factors"] = _factors(factor_levels)
    document: dict[str, Any] = {}
    for key in STUDY_KEYS:
        value = known[key] if key in known else extra.get(key)
        if value is not None or key in extra:
            document[key] = value
    document.update({key: value for key, value in extra.items() if key not in document})
    return document


def export_study(conn: sqlite3.Connection, study_id: str | None, folder: Path, *, given: Path,
                 generated_at: str, ledger_head: dict[str, Any]) -> dict[str, Any]:
    """Write one study's folder; ``study_id`` None writes the ``_unassigned`` folder.

    ``given`` is where the folder will be once the export is moved into place: upstream's
    runs.csv names its manifest by that path.
    """
    label = UNASSIGNED if study_id is None else study_id
    folder.mkdir(parents=True)
    target = _Target(folder, given)
    study = None if study_id is None else query.study(conn, study_id)
    runs = _runs(conn, study_id)
    views = [run_view(run) for run in runs]
    header, condition_rows, factor_levels = _conditions(conn, study_id, label)
    document = _study_document(study, label, factor_levels)
    target.write("study.yaml", yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    target.write_csv("conditions.csv", header, condition_rows)
    manifest_path = str(given / "manifest.json")
    target.write_csv("runs.csv", RUN_COLUMNS, (_run_row(view, label, manifest_path) for view in views))
    events = target.write_csv("events.csv", EVENT_COLUMNS, _event_rows(conn, study_id))
    evaluations = target.write_csv("evaluations.csv", EVALUATION_COLUMNS, _evaluation_rows(conn, study_id))
    provenance = _provenance(conn, runs)
    for view in views:
        write_run_artifacts(conn, target, view, label, provenance.get(view.run["run_id"]))
    model_ids = set()
    for view in views:
        used = view.provenance if view.provenance is not None else upstream_provenance(
            provenance.get(view.run["run_id"]))
        if used.get("model_name"):
            model_ids.add(str(used["model_name"]))
    manifest = {
        "schema_version": ARTIFACT_SCHEMA_VERSION,
        "study_id": label,
        "generated_at": generated_at,
        "status_counts": dict(sorted(Counter(view.status for view in views).items())),
        "model_ids": sorted(model_ids),
        "run_count": len(runs),
        "provenance": {"generator": "studyledger", "ledger_head": ledger_head, "runs": provenance},
    }
    target.write("manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for name, key in (("hypotheses.json", "hypotheses"), ("analysis_plan.json", "analysis_plans")):
        target.write(name, json.dumps(document.get(key) or [], indent=2, sort_keys=True) + "\n")
    return {"study_id": label, "folder": str(given), "runs": len(runs), "events": events,
            "evaluations": evaluations}


def _has_unassigned(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE study_id IS NULL) "
        "OR EXISTS (SELECT 1 FROM observations o JOIN events e ON e.seq = o.seq LEFT JOIN runs r ON r.run_id = o.run_id "
        "           WHERE coalesce(e.study_id, r.study_id) IS NULL) "
        "OR EXISTS (SELECT 1 FROM evaluations e LEFT JOIN runs r ON r.run_id = e.run_id "
        "           WHERE r.study_id IS NULL)").fetchone()[0])


def _move_into_place(staging: Path, root: Path) -> None:
    """Move the finished export from ``staging`` to ``root``.

    A new ``root`` is one rename: the export appears complete or not at all. Into an
    existing folder, each study folder replaces its previous export by renames, so every
    study folder a reader sees is complete, and other files there are left alone.
    """
    if not root.exists():
        os.rename(staging, root)
        return
    retired = staging / ".retired"
    retired.mkdir()
    for folder in sorted(path for path in staging.iterdir() if path != retired):
        target = root / folder.name
        if target.exists() or target.is_symlink():
            os.rename(target, retired / folder.name)
        os.rename(folder, target)
    shutil.rmtree(staging)


def export_canonical(source: Readable | sqlite3.Connection, root: Path) -> dict[str, Any]:
    """Write every study (and ``_unassigned`` when needed) under ``root``, as upstream's
    artifact files, from one consistent snapshot of the ledger.

    Everything is written into a temporary folder beside ``root`` first and moved into
    place at the end, so a failure (a full disk, a name the file system refuses) leaves no
    partial export behind.

    Args:
        source: The ledger, or an as-of snapshot of it (:func:`state_as_of`).
        root: The folder to write into (created when missing).

    Returns:
        ``{"dir", "schema_version", "studies": [{"study_id", "folder", "runs", "events",
        "evaluations"}]}``.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name[:40]}.export-", dir=root.parent))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(root)) from None
    try:
        conn = connection_of(source)
        with read_snapshot(conn):
            generated_at, head = utc_now_iso(), query.head(conn).to_dict()
            study_ids: list[str | None] = [row["study_id"] for row in query.studies(conn)]
            if _has_unassigned(conn):
                study_ids.append(None)
            written = []
            for study_id in study_ids:
                name = UNASSIGNED if study_id is None else folder_name(study_id)
                written.append(export_study(conn, study_id, staging / name, given=root / name,
                                            generated_at=generated_at, ledger_head=head))
        _move_into_place(staging, root)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise named_for_user(exc, staging, root) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"dir": str(root), "schema_version": ARTIFACT_SCHEMA_VERSION, "studies": written}
