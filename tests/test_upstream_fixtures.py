"""The real thing: study folders written by the released upstream packages, ingested whole.

``tests/fixtures/upstream/`` holds folders written by design-research-experiments 0.4.0 and
design-research-agents 0.7.0 (see its README). Every line and file in them must be used:
nothing rejected, nothing skipped, no warning, each run with the status its run.json says,
and only the disagreements a person should look at flagged, whatever the ingestion order.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyledger import Ledger, query
from studyledger.events import NewEvent, parse_instant
from studyledger.ingestion.service import IngestReport, plan
from studyledger.ingestion.study_folder import scan_study_folder
from studyledger.ingestion.tailer import Tailer
from studyledger.projections import time_span
from studyledger.schema import from_canonical
from studyledger.tui.app import StudyLedgerApp

from .conftest import UPSTREAM, UPSTREAM_CASES
from .test_tui_app import column, open_runs
from .tui_helpers import sync, until

CASES = UPSTREAM_CASES
DISAGREEING = {"run-5fd4a18d4b22", "run-6f63d5076175"}
"""The two agents_traced runs whose trace says failed (RunFinished success: false) while the
runner says success: the only true disagreements in the fixtures."""


def run_json(case: str) -> dict[str, dict[str, Any]]:
    """Every run.json of a case, by run id."""
    found = {}
    for path in sorted((UPSTREAM / case / "artifacts" / "runs").glob("*/run.json")):
        record = json.loads(path.read_text())
        found[record["run_id"]] = record
    return found


def same(a: Any, b: Any) -> bool:
    """Equal as JSON, with NaN equal to NaN (``json.dumps`` writes both as ``NaN``)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.fixture(scope="module")
def ingested(upstream_ingested: dict[str, tuple[Path, IngestReport]]
             ) -> Iterator[dict[str, tuple[Ledger, IngestReport]]]:
    """Each case's shared ledger (ingested once a session, as `studyledger ingest CASE`
    does), opened for reading, with its ingest's report."""
    ledgers: dict[str, tuple[Ledger, IngestReport]] = {}
    try:
        for case, (path, report) in upstream_ingested.items():
            ledgers[case] = (Ledger.open(path, readonly=True), report)
        yield ledgers
    finally:
        for ledger, _ in ledgers.values():
            ledger.close()


@pytest.mark.parametrize("case", CASES)
def test_every_upstream_line_and_file_is_used_without_a_warning(
        ingested: dict[str, tuple[Ledger, IngestReport]], case: str) -> None:
    ledger, report = ingested[case]
    assert plan([UPSTREAM]).studies == [UPSTREAM / name for name in sorted(CASES)]
    assert report.lines_rejected == 0 and report.errors == []
    assert report.problems == [], report.problems
    assert report.orphan_traces == []
    assert report.lines_read == report.lines_accepted > 0
    assert query.rejections(ledger.conn) == []


@pytest.mark.parametrize("case", CASES)
def test_every_run_has_its_real_status_study_condition_replicate_and_seed(
        ingested: dict[str, tuple[Ledger, IngestReport]], case: str) -> None:
    ledger, _ = ingested[case]
    records = run_json(case)
    assert {run["run_id"] for run in ledger.runs()} == set(records)
    for run_id, record in records.items():
        run = ledger.run(run_id)
        expected = "failed" if run_id in DISAGREEING else record["status"]
        assert run["status"] == expected, run_id
        configured = record["configured"]
        assert (run["study_id"], run["condition_id"], run["replicate"], run["seed"]) == (
            record["study_id"], record["condition_id"], configured["replicate"], configured["seed"])
        assert run["problem_id"] == (configured["problem_id"] or None)
        assert run["agent_id"] == configured["execution_metadata"]["agent_id"]
        if record["terminal"]:
            # What the runner recorded with the outcome, whatever else a trace says.
            result = from_canonical(json.loads(run["result"]))
            assert (result["status"], result["reason"], result["error"]) == (
                record["status"], record["status_reason"], record["error"])
            assert (result["at"], result["started_at"], result["latency_s"]) == (
                record["timing"]["ended_at"], record["timing"]["started_at"], record["timing"]["latency_s"])
            observed = record["observed"]
            assert same((result["metrics"], result["observed_execution_metadata"], result["trace_refs"]),
                        (observed["metrics"], observed["execution_metadata"], observed["trace_refs"]))
        else:
            assert run["result"] is None
        if run_id not in DISAGREEING and not (UPSTREAM / case / "traces").is_dir():
            assert (run["status_reason"], run["error"]) == (record["status_reason"], record["error"])


def test_a_crashed_study_shows_every_run_and_its_running_run_goes_stale(
        ingested: dict[str, tuple[Ledger, IngestReport]]) -> None:
    ledger, report = ingested["crashed"]
    assert report.studies == ["crash-study"]
    runs = ledger.runs()
    assert Counter(run["status"] for run in runs) == {"success": 4, "running": 1, "pending": 7}
    assert {run["study_id"] for run in runs} == {"crash-study"}
    running = next(run for run in runs if run["status"] == "running")
    assert running["run_id"] == "run-ec549d733348"
    assert running["started_at"] == run_json("crashed")["run-ec549d733348"]["timing"]["started_at"]
    last = query.last_event_time(running)
    assert last is not None
    assert not query.is_stale(running, last + timedelta(seconds=299), 300)
    assert query.is_stale(running, last + timedelta(seconds=301), 300)
    study = ledger.study("crash-study")
    assert study["runs_by_status"] == {"success": 4, "running": 1, "pending": 7}


def test_booleans_nan_and_infinity_are_kept(ingested: dict[str, tuple[Ledger, IngestReport]]) -> None:
    ledger, _ = ingested["metrics_special"]
    stored = Counter()
    for (body,) in ledger.conn.execute("SELECT body FROM events_json WHERE kind = 'evaluation_recorded'"):
        value = from_canonical(json.loads(body)["metric_value"])
        if isinstance(value, bool):
            stored[value] += 1
        elif isinstance(value, float) and not math.isfinite(value):
            stored["nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")] += 1
    lines = [json.loads(line) for line in
             (UPSTREAM / "metrics_special" / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines()]
    expected = Counter()
    for line in lines:
        for row in line["evaluator_outputs"]:
            value = row["metric_value"]
            if isinstance(value, bool):
                expected[value] += 1
            elif isinstance(value, float) and not math.isfinite(value):
                expected["nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")] += 1
    assert expected[True] and expected[False] and expected["nan"] and expected["inf"] and expected["-inf"]
    assert stored == expected
    assert all(run["status"] == "success" for run in ledger.runs())


def test_run_json_and_runs_jsonl_state_the_same_facts(ingested: dict[str, tuple[Ledger, IngestReport]]) -> None:
    """A finished run's run.json and its checkpoint line are one set of events, not two."""
    ledger, _ = ingested["plain"]
    per_run = Counter(row[0] for row in ledger.conn.execute(
        "SELECT run_id FROM events_json WHERE kind = 'run_status_changed'"))
    assert set(per_run.values()) == {2}  # running and success, once each


# -- anomalies: the true disagreements only, whatever the order -----------------------


def _units(folder: Path) -> list[tuple[str, Any]]:
    """A study folder cut into the pieces an ingester may meet in any order: the events of
    each whole file, and each JSONL file."""
    scan = scan_study_folder(folder)
    by_file: dict[str, list[NewEvent]] = {}
    for event in scan.events:
        by_file.setdefault(event.source.rsplit(":", 2)[0], []).append(event)
    return [("events", events) for events in by_file.values()] + [("jsonl", path) for path in scan.jsonl_files]


def _anomalies_after(units: list[tuple[str, Any]], path: Path) -> tuple[set[tuple[str, ...]], list[Any]]:
    with Ledger.open(path) as ledger:
        tailer = Tailer(ledger)
        for kind, unit in units:
            if kind == "events":
                ledger.append(unit)
            else:
                tailer.ingest_path(unit)
        anomalies = {(row["run_id"], row["kind"], row["message"], row["study_id"]) for row in ledger.anomalies()}
        runs = []
        for run in sorted(ledger.runs(), key=lambda run: run["run_id"]):
            history = [{k: v for k, v in step.items() if k != "seq"} for step in ledger.transitions(run["run_id"])]
            runs.append({**{k: v for k, v in run.items() if k not in ("first_seq", "last_seq", "last_recorded",
                                                                       "registered_at")}, "history": history})
    path.unlink()
    return anomalies, runs


def test_the_agent_study_flags_exactly_the_two_true_disagreements(
        ingested: dict[str, tuple[Ledger, IngestReport]]) -> None:
    ledger, _ = ingested["agents_traced"]
    anomalies = ledger.anomalies()
    assert sorted((row["run_id"], row["kind"]) for row in anomalies) == sorted(
        (run_id, "conflicting_outcome") for run_id in DISAGREEING)
    for run_id in DISAGREEING:
        run = ledger.run(run_id)
        assert run["status"] == "failed" and run["anomaly_count"] == 1


@pytest.mark.parametrize(("case", "expected"), [("crashed", 0), ("resumed", 0), ("fail_fast", 0), ("rerun", 4)])
def test_other_studies_flag_only_what_happened(
        ingested: dict[str, tuple[Ledger, IngestReport]], case: str, expected: int) -> None:
    ledger, _ = ingested[case]
    anomalies = ledger.anomalies()
    assert len(anomalies) == expected, anomalies
    # A study run again without resume: the four runs it ran twice started again after
    # they had ended, once each.
    assert {row["kind"] for row in anomalies} <= {"illegal_transition"}
    assert len({row["run_id"] for row in anomalies}) == expected


@pytest.fixture(scope="module")
def traced_units() -> list[tuple[str, Any]]:
    return _units(UPSTREAM / "agents_traced")


@pytest.fixture(scope="module")
def traced_reference(traced_units: list[tuple[str, Any]], tmp_path_factory: pytest.TempPathFactory
                     ) -> tuple[set[tuple[str, ...]], list[Any]]:
    return _anomalies_after(traced_units, tmp_path_factory.mktemp("reference") / "ledger.db")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_anomalies_and_runs_do_not_depend_on_ingestion_order(
        traced_units: list[tuple[str, Any]], traced_reference: tuple[set[tuple[str, ...]], list[Any]],
        tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    units = list(traced_units)
    random.Random(seed).shuffle(units)
    anomalies, runs = _anomalies_after(units, tmp_path_factory.mktemp("order") / "ledger.db")
    assert anomalies == traced_reference[0]
    assert {run_id for run_id, _, _, _ in anomalies} == DISAGREEING
    assert runs == traced_reference[1]


def test_rerun_anomalies_do_not_depend_on_ingestion_order(tmp_path: Path) -> None:
    units = _units(UPSTREAM / "rerun")
    reference = _anomalies_after(units, tmp_path / "a.db")
    for seed in range(3):
        shuffled = list(units)
        random.Random(seed).shuffle(shuffled)
        assert _anomalies_after(shuffled, tmp_path / "b.db") == reference
    assert len(reference[0]) == 4


def test_runner_and_trace_times_agree_at_the_runner_precision(
        ingested: dict[str, tuple[Ledger, IngestReport]]) -> None:
    """The runner writes whole seconds, the trace microseconds: the run starts at the
    earliest reported moment, which is the runner's second."""
    ledger, _ = ingested["agents_traced"]
    records = run_json("agents_traced")
    for run in ledger.runs():
        started = parse_instant(run["started_at"])
        assert started is not None
        assert run["started_at"] == records[run["run_id"]]["timing"]["started_at"]


@pytest.mark.parametrize(("text", "width"), [
    ("2026-11-30T14:35:46+00:00", timedelta(seconds=1)),
    ("2026-11-30T14:35:46.885928+00:00", timedelta(microseconds=1)),
    ("2026-11-30T14:35:46.5Z", timedelta(milliseconds=100)),
    ("2026-11-30T14:35:46.123", timedelta(milliseconds=1)),
    ("2026-11-30T14:35", timedelta(minutes=1)),
    ("2026-11-30T14:35-05:00", timedelta(minutes=1)),
    ("2026-11-30", timedelta(days=1)),
    ("20261130T143546Z", timedelta(seconds=1)),
])
def test_a_time_means_every_moment_of_the_precision_it_is_written_in(text: str, width: timedelta) -> None:
    span = time_span(text)
    assert span is not None
    assert span[0] == parse_instant(text) and span[1] - span[0] == width
    assert time_span("not a time") is None and time_span(None) is None


@sync
async def test_the_dashboard_shows_the_killed_studys_running_run_going_stale(
        ingested: dict[str, tuple[Ledger, IngestReport]]) -> None:
    ledger, _ = ingested["crashed"]
    last = query.last_event_time(ledger.run("run-ec549d733348"))
    assert last is not None

    async def statuses(now: datetime) -> dict[str, str]:
        app = StudyLedgerApp(ledger.path, clock=lambda: now, stale_after=300.0)
        async with app.run_test(size=(140, 30)) as pilot:
            table = await open_runs(app, pilot, study="crash-study")
            await until(pilot, lambda: table.row_count == 12)
            return dict(zip(column(table, "run"), column(table, "status"), strict=True))

    before = await statuses(last + timedelta(seconds=60))
    assert Counter(before.values()) == {"success": 4, "running": 1, "pending": 7}
    after = await statuses(last + timedelta(seconds=301))
    assert after["run-ec549d733348"] == "running stale"
    assert Counter(after.values()) == {"success": 4, "running stale": 1, "pending": 7}
