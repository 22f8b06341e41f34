"""Upstream's own readers on our canonical export, beside upstream's own folders.

Each study folder of ``tests/fixtures/upstream/`` (written by the released upstream packages)
is ingested into a ledger and exported with ``studyledger export --format canonical``; then
upstream's readers and validators (design-research-experiments 0.4.0 and
design-research-analysis 0.4.0, in a Python 3.12 venv: ``tests/upstream_venv.py``) read
upstream's folder and ours in one harness call. The bar: every reader that accepts
upstream's folder accepts ours, and gives the same rows, plus ours where the ledger knows
more.

Where upstream refuses its own output (see ``UPSTREAM_REFUSES``) there is nothing to match;
ours is then held to doing at least as well, and the test says where it does better.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from studyledger.cli import cli

from .test_upstream_fixtures import CASES, DISAGREEING, UPSTREAM
from .upstream_venv import SKIP_MESSAGE, run_check, upstream_python

METRIC_TABLES = ("build_run_metric_table_from_artifacts:primary_outcome",
                 "build_condition_metric_table_from_artifacts:primary_outcome:condition_id")
UPSTREAM_REFUSES = {
    # A failed or skipped run has no primary_outcome, and upstream's metric tables need
    # one for every run; a boolean primary outcome ("True") is not a float.
    "agents_traced": set(METRIC_TABLES),
    "fail_fast": set(METRIC_TABLES),
    "metrics_special": set(METRIC_TABLES),
    # ... and an empty events.csv does not validate.
    "runner_raises": {*METRIC_TABLES, "validate_experiment_events"},
    # A killed study has run.json files and nothing else: only the run evidence reads.
    "crashed": {*METRIC_TABLES, "build_event_table_from_artifacts", "collect_paper_support",
                "load_experiment_artifacts", "load_study", "validate_canonical_artifacts",
                "validate_experiment_events", "validate_study"},
}
"""Readers that refuse upstream's own folder, as measured (tests/fixtures/upstream/readers.json)."""

WE_DO_BETTER = {
    # Our export of a killed study is a complete artifact set: its runs with their real
    # statuses, the study named by its id (upstream wrote no study.yaml).
    "crashed": {"collect_paper_support", "load_experiment_artifacts", "load_study", "validate_canonical_artifacts",
                "validate_experiment_events", "validate_study"},
}
"""Readers that refuse upstream's folder and accept ours."""

VOLATILE_RUN_COLUMNS = {"manifest_path"}
"""Where upstream's runs.csv names its own folder (``plain/manifest.json``), ours names ours."""

JSON_CELLS = {"meta_json", "notes_json", "assignment_meta_json", "constraint_messages"}
"""Cells holding JSON, compared as the JSON they hold: upstream itself writes a resumed run's
observations with ``json.dumps`` spacing and a fresh run's compact."""


def same_cell(column: str, ours: Any, theirs: Any) -> bool:
    if column in JSON_CELLS and isinstance(ours, str) and isinstance(theirs, str):
        return bool(json.loads(ours) == json.loads(theirs))
    return bool(ours == theirs)


def assert_contains(mine: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> None:
    """Every upstream row has a row of ours with the same key and, in every upstream column,
    the same value (ours may have more columns); for the disagreeing runs the status is
    the ledger's (``failed``) where upstream's runner says ``success``."""
    by_key: dict[Any, list[dict[str, Any]]] = {}
    for row in mine:
        by_key.setdefault(row[key], []).append(row)
    for row in theirs:
        disagreeing = row.get("run_id") in DISAGREEING

        def matches(candidate: dict[str, Any], row: dict[str, Any] = row, disagreeing: bool = disagreeing) -> bool:
            for column, value in row.items():
                if column in VOLATILE_RUN_COLUMNS:
                    continue
                if column == "status" and disagreeing:
                    if (value, candidate.get(column)) != ("success", "failed"):
                        return False
                elif column not in candidate or not same_cell(column, candidate[column], value):
                    return False
            return True

        assert any(matches(candidate) for candidate in by_key.get(row[key], [])), (key, row)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory, upstream_ledgers: dict[str, Path]
            ) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """``{case: (upstream's report, our export's report)}``, from one harness call; each
    case's ledger is the session's (ingested as `studyledger ingest CASE` does)."""
    if upstream_python() is None:
        pytest.skip(SKIP_MESSAGE)
    root = tmp_path_factory.mktemp("interop")
    ours: dict[str, Path] = {}
    for case in CASES:
        out = root / "exports" / case
        result = CliRunner().invoke(cli, ["--db", str(upstream_ledgers[case]), "export", str(out), "--format",
                                          "canonical", "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        studies = json.loads(result.stdout)["studies"]
        assert len(studies) == 1, studies  # every run belongs to the study: no _unassigned
        ours[case] = Path(studies[0]["folder"])
    document = run_check([*(UPSTREAM / case for case in CASES), *ours.values()])
    folders = document["folders"]
    return {case: (folders[str(UPSTREAM / case)], folders[str(ours[case])]) for case in CASES}


def result(report: dict[str, Any], reader: str) -> Any:
    outcome = report["readers"][reader]
    assert outcome["ok"], (reader, outcome["error"])
    return outcome["result"]


@pytest.mark.parametrize("case", CASES)
def test_every_reader_that_accepts_upstreams_folder_accepts_ours(
        checked: dict[str, tuple[dict[str, Any], dict[str, Any]]], case: str) -> None:
    upstream, ours = checked[case]
    assert set(upstream["refused"]) == UPSTREAM_REFUSES.get(case, set()), upstream["refused"]
    for reader in upstream["accepted"]:
        assert ours["readers"][reader]["ok"], (reader, ours["readers"][reader]["error"])
    better = set(ours["accepted"]) - set(upstream["accepted"])
    assert better == WE_DO_BETTER.get(case, set()), {
        name: ours["readers"][name]["error"] for name in ours["refused"]}


@pytest.mark.parametrize("case", CASES)
def test_the_run_evidence_is_upstreams_with_the_ledgers_status(
        checked: dict[str, tuple[dict[str, Any], dict[str, Any]]], case: str) -> None:
    upstream, ours = checked[case]
    theirs = {record["run_id"]: record for record in result(upstream, "load_run_evidence_records")}
    mine = {record["run_id"]: record for record in result(ours, "load_run_evidence_records")}
    assert set(mine) == set(theirs)
    for run_id, record in theirs.items():
        got = mine[run_id]
        if run_id in DISAGREEING:
            # The trace says the workflow failed; the ledger shows the conservative outcome
            # and the runner's own record of the run (docs/formats.md).
            assert (got["status"], got["status_reason"]) == ("failed", "agent trace: RunFinished success=false")
            record = {**record, "status": "failed", "status_reason": got["status_reason"]}
        for key in ("study_id", "condition_id", "status", "status_reason", "attempted", "terminal", "error",
                    "timing", "files"):
            assert got[key] == record[key], (run_id, key)
        for key in ("replicate", "seed", "problem_id"):
            assert got["configured"][key] == record["configured"][key], (run_id, key)
        configured = record["configured"]["execution_metadata"]
        if not record["terminal"]:
            # The ledger keeps the agent and problem of a run that never ended, not the
            # rest of its configured metadata (docs/formats.md).
            configured = {key: configured[key] for key in ("agent_id", "problem_id")}
        assert got["configured"]["execution_metadata"] == configured, run_id
        for key in ("metrics", "outputs", "execution_metadata", "trace_refs", "artifact_refs", "provenance"):
            assert got["observed"][key] == record["observed"][key], (run_id, key)
        evaluations = sorted(record["observed"]["evaluations"], key=json.dumps)
        assert sorted(got["observed"]["evaluations"], key=json.dumps) == evaluations, run_id
        assert got["observed"]["observation_count"] >= record["observed"]["observation_count"]
        assert [(ref["kind"], ref["reference"]) for ref in got["integrity"]["referenced_artifacts"]] == [
            (ref["kind"], ref["reference"]) for ref in record["integrity"]["referenced_artifacts"]]


@pytest.mark.parametrize("case", [case for case in CASES if case != "crashed"])
def test_the_artifact_tables_are_upstreams_rows_plus_ours(
        checked: dict[str, tuple[dict[str, Any], dict[str, Any]]], case: str) -> None:
    upstream, ours = checked[case]
    theirs, mine = result(upstream, "load_experiment_artifacts"), result(ours, "load_experiment_artifacts")
    assert sorted(row["run_id"] for row in mine["runs.csv"]) == sorted(row["run_id"] for row in theirs["runs.csv"])
    assert_contains(mine["runs.csv"], theirs["runs.csv"], "run_id")
    assert len(mine["conditions.csv"]) == len(theirs["conditions.csv"])
    assert_contains(mine["conditions.csv"], theirs["conditions.csv"], "condition_id")
    assert Counter(json.dumps(row, sort_keys=True) for row in mine["evaluations.csv"]) == Counter(
        json.dumps(row, sort_keys=True) for row in theirs["evaluations.csv"])
    # events.csv: upstream's rows (the runs' observations) are all there; ours adds each
    # trace event the ledger holds.
    assert_contains(mine["events.csv"], theirs["events.csv"], "record_id")
    manifest, expected = mine["manifest.json"], theirs["manifest.json"]
    for key in ("schema_version", "study_id", "run_count", "model_ids"):
        assert manifest[key] == expected[key], key
    counts = Counter(expected["status_counts"])
    if case == "agents_traced":
        counts.update({"success": -len(DISAGREEING), "failed": len(DISAGREEING)})
    assert manifest["status_counts"] == dict(counts)


@pytest.mark.parametrize("case", [case for case in CASES if case != "crashed"])
def test_the_study_and_the_joined_tables_are_upstreams(
        checked: dict[str, tuple[dict[str, Any], dict[str, Any]]], case: str) -> None:
    upstream, ours = checked[case]
    theirs, mine = result(upstream, "load_study"), result(ours, "load_study")
    assert {**mine, "output_dir": None} == {**theirs, "output_dir": None}
    assert result(ours, "validate_study") == []
    assert_contains(result(ours, "build_event_table_from_artifacts"),
                    result(upstream, "build_event_table_from_artifacts"), "record_id")
    for reader in METRIC_TABLES:
        if reader not in UPSTREAM_REFUSES.get(case, set()):
            mine, theirs = result(ours, reader), result(upstream, reader)
            assert len(mine) == len(theirs)
            assert_contains(mine, theirs, "run_id")


def test_a_killed_study_exports_every_run_with_its_real_status(
        checked: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
    _, ours = checked["crashed"]
    records = result(ours, "load_run_evidence_records")
    assert Counter(record["status"] for record in records) == {"success": 4, "running": 1, "pending": 7}
    runs = result(ours, "load_experiment_artifacts")["runs.csv"]
    assert Counter(row["status"] for row in runs) == {"success": 4, "running": 1, "pending": 7}
    assert result(ours, "load_study")["title"] == "crash-study"
