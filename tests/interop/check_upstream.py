"""Run upstream's own readers and validators on study output folders; print one JSON document.

Run this with the Python 3.12 venv that holds design-research-experiments 0.4.0,
design-research-agents 0.7.0 and design-research-analysis 0.4.0 (``tests/upstream_venv.py``
builds it). It imports only those packages and the standard library.

    python tests/interop/check_upstream.py [--metric NAME]... [--condition-column COL]... FOLDER...

For every folder and every reader the output says ``ok`` (true/false), the ``error``
(exception type, message with the folder path replaced by ``<folder>``, and the upstream
frame that raised) and a ``result`` in a comparable form: tables are lists of row dicts
sorted by their canonical JSON, datetimes are ISO-8601 text, non-finite floats are
``{"$float": "NaN" | "Infinity" | "-Infinity"}`` (so NaN compares equal to NaN and the
document is strict JSON).

Readers, in order (their names are the keys under ``readers``):

- ``load_study``: ``design_research_experiments.study.load_study(FOLDER/study.yaml)``;
  result ``Study.to_dict()``.
- ``validate_study``: ``validate_study(study)`` on that study; ok when it returns no error.
- ``validate_canonical_artifacts``: ``design_research_experiments.artifacts.validate_canonical_artifacts``.
- ``load_run_evidence_records``: ``design_research_experiments.load_run_evidence_records``;
  result: the records sorted by run id.
- ``collect_paper_support``: ``design_research_experiments.collect_paper_support(FOLDER)``
  (reads study.yaml and the run evidence); result: run accounting and contribution ids.
- ``load_experiment_artifacts``: ``design_research_analysis.load_experiment_artifacts``;
  result: ``manifest.json`` and the rows of conditions.csv, runs.csv, events.csv, evaluations.csv.
- ``validate_experiment_events``: ``design_research_analysis.validate_experiment_events``;
  ok when the report says ``is_valid``; result: the report.
- ``build_event_table_from_artifacts``: ``design_research_analysis.build_event_table_from_artifacts``.
- ``build_run_metric_table_from_artifacts:<metric>``: one per ``--metric``
  (default ``primary_outcome``).
- ``build_condition_metric_table_from_artifacts:<metric>:<condition column>``: one per
  metric and ``--condition-column`` (default ``condition_id``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import platform
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

PACKAGES = ("design-research-experiments", "design-research-agents", "design-research-analysis")


def comparable(value: Any) -> Any:
    """Convert a reader's result into strict, order-stable JSON values.

    Args:
        value: Anything a reader returned.

    Returns:
        JSON-compatible data: mappings with text keys, lists, text, numbers, booleans, null;
        non-finite floats as ``{"$float": ...}``; datetimes as ISO-8601 text.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Enum):
        return comparable(value.value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): comparable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [comparable(item) for item in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return comparable(to_dict())
    return repr(value)


def sorted_rows(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Rows in comparable form, sorted by their canonical JSON."""
    converted = [comparable(row) for row in rows]
    return sorted(converted, key=lambda row: json.dumps(row, sort_keys=True))


def _error(exc: BaseException, folder: Path) -> dict[str, Any]:
    message = str(exc)
    for spelling in {str(folder.resolve()), str(folder.absolute()), str(folder)}:
        if spelling not in {"", "."}:
            message = message.replace(spelling, "<folder>")
    frames = traceback.extract_tb(exc.__traceback__)
    upstream = [frame for frame in frames if "design_research_" in frame.filename] or frames
    at = ""
    if upstream:
        frame = upstream[-1]
        name = frame.filename
        path = name.split("site-packages/")[-1] if "site-packages/" in name else Path(name).name
        at = f"{path}:{frame.lineno} in {frame.name}"
    return {"type": type(exc).__name__, "message": message, "at": at}


def _attempt(folder: Path, call: Callable[[], tuple[bool, Any]]) -> dict[str, Any]:
    try:
        ok, result = call()
    except Exception as exc:  # every reader failure is a finding, never a crash of the harness
        return {"ok": False, "error": _error(exc, folder), "result": None}
    return {"ok": ok, "error": None, "result": result}


def check_folder(folder: Path, *, metrics: Sequence[str], condition_columns: Sequence[str]) -> dict[str, Any]:
    """Run every reader on one study output folder.

    Args:
        folder: A design-research-experiments study output folder (or our export of one).
        metrics: Metric names for the run- and condition-level metric tables.
        condition_columns: Condition columns for the condition-level metric tables.

    Returns:
        ``{"readers": {name: {"ok", "error", "result"}}, "accepted": [...], "refused": [...]}``.
    """
    import design_research_analysis as dra
    import design_research_experiments as drex
    from design_research_experiments.artifacts import validate_canonical_artifacts
    from design_research_experiments.study import load_study, validate_study

    readers: dict[str, dict[str, Any]] = {}
    loaded: dict[str, Any] = {}

    def run_load_study() -> tuple[bool, Any]:
        loaded["study"] = load_study(folder / "study.yaml")
        return True, comparable(loaded["study"].to_dict())

    def run_validate_study() -> tuple[bool, Any]:
        study = loaded.get("study")
        if study is None:
            raise RuntimeError("load_study failed, nothing to validate")
        errors = validate_study(study)
        return not errors, list(errors)

    def run_validate_canonical() -> tuple[bool, Any]:
        return True, sorted(validate_canonical_artifacts(folder))

    def run_evidence() -> tuple[bool, Any]:
        records = drex.load_run_evidence_records(folder)
        return True, [comparable(records[run_id]) for run_id in sorted(records)]

    def run_paper_support() -> tuple[bool, Any]:
        support = drex.collect_paper_support(folder).to_dict()
        contribution_ids = sorted(str(item.get("contribution_id")) for item in support["contributions"])
        return True, {"run_accounting": support["run_accounting"], "contribution_ids": contribution_ids}

    def run_load_artifacts() -> tuple[bool, Any]:
        artifacts = dra.load_experiment_artifacts(folder)
        result: dict[str, Any] = {}
        for name in sorted(artifacts):
            content = artifacts[name]
            result[name] = sorted_rows(content) if isinstance(content, list) else comparable(content)
        return True, result

    def run_validate_events() -> tuple[bool, Any]:
        report = dra.validate_experiment_events(folder)
        return bool(report.is_valid), comparable(report.to_dict())

    def run_event_table() -> tuple[bool, Any]:
        return True, sorted_rows(dra.build_event_table_from_artifacts(folder))

    steps: list[tuple[str, Callable[[], tuple[bool, Any]]]] = [
        ("load_study", run_load_study),
        ("validate_study", run_validate_study),
        ("validate_canonical_artifacts", run_validate_canonical),
        ("load_run_evidence_records", run_evidence),
        ("collect_paper_support", run_paper_support),
        ("load_experiment_artifacts", run_load_artifacts),
        ("validate_experiment_events", run_validate_events),
        ("build_event_table_from_artifacts", run_event_table),
    ]
    for metric in metrics:

        def run_metric_table(metric: str = metric) -> tuple[bool, Any]:
            return True, sorted_rows(dra.build_run_metric_table_from_artifacts(folder, metrics=[metric]))

        steps.append((f"build_run_metric_table_from_artifacts:{metric}", run_metric_table))
        for column in condition_columns:

            def run_condition_table(metric: str = metric, column: str = column) -> tuple[bool, Any]:
                rows = dra.build_condition_metric_table_from_artifacts(folder, metric=metric, condition_column=column)
                return True, sorted_rows(rows)

            steps.append((f"build_condition_metric_table_from_artifacts:{metric}:{column}", run_condition_table))

    for name, call in steps:
        readers[name] = _attempt(folder, call)
    return {
        "readers": readers,
        "accepted": [name for name, outcome in readers.items() if outcome["ok"]],
        "refused": [name for name, outcome in readers.items() if not outcome["ok"]],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Check the folders named on the command line and print the JSON document.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0, also when readers refuse a folder (that is reported, not an error); 2 when a
        folder does not exist.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--metric", action="append", dest="metrics", help="default: primary_outcome")
    parser.add_argument("--condition-column", action="append", dest="condition_columns", help="default: condition_id")
    args = parser.parse_args(argv)
    missing = [str(folder) for folder in args.folders if not folder.is_dir()]
    if missing:
        print(f"not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    metrics = args.metrics or ["primary_outcome"]
    condition_columns = args.condition_columns or ["condition_id"]
    document = {
        "python": platform.python_version(),
        "packages": {name: importlib.metadata.version(name) for name in PACKAGES},
        "metrics": metrics,
        "condition_columns": condition_columns,
        "folders": {
            str(folder): check_folder(folder, metrics=metrics, condition_columns=condition_columns)
            for folder in args.folders
        },
    }
    json.dump(document, sys.stdout, indent=1, sort_keys=True, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
