"""diff shows two runs side by side and marks exactly the fields that differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studyledger import Ledger, Observation, ProvenanceMetadata, RunBudget, RunStatus, UnknownRunError
from studyledger import events as ev
from studyledger.audit.diff import diff_runs
from studyledger.events import EventKind, make_event

from .audit_helpers import invoke


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, str, str]:
    db = tmp_path / "l.db"
    with Ledger.open(db) as ledger:
        ledger.register_study("s1", run_budget=RunBudget(replicates=2))
        a = ledger.register_run("s1", "c1", replicate=1, agent_id="agent", problem_id="p1")
        b = ledger.register_run("s1", "c1", replicate=2, agent_id="agent", problem_id="p1")
        for run_id, python, numpy, end in ((a, "3.11.7", "2.0.0", "00:00:10"), (b, "3.11.7", "2.1.0", "00:01:40")):
            ledger.record_provenance(run_id, ProvenanceMetadata(
                captured_at="2026-01-01T00:00:00+00:00", host="node1", platform="linux", python_version=python,
                package_versions={"numpy": numpy, "click": "8.1"}, git_sha="abc123"))
            ledger.transition(run_id, RunStatus.RUNNING, at="2026-01-01T00:00:00+00:00")
            ledger.transition(run_id, RunStatus.SUCCESS, at=f"2026-01-01T{end}+00:00")
        for i, (run_id, kind) in enumerate([(a, "model_call"), (a, "tool_call"), (b, "model_call")]):
            ledger.observe(Observation(timestamp="2026-01-01T00:00:01+00:00", record_id=f"r{i}", text="",
                                       session_id=run_id, actor_id="x", event_type=kind, run_id=run_id))
        ledger.append([make_event(EventKind.EVALUATION_RECORDED, ev.evaluation_recorded(
            run_id, evaluator_id="judge", metric_name="score", metric_value=value), source="api")
            for run_id, value in ((a, 0.9), (b, 0.9))])
    return db, a, b


def fields(rows: list[dict[str, object]]) -> dict[str, tuple[object, object, object]]:
    return {str(row["field"]): (row["a"], row["b"], row["same"]) for row in rows}


def test_diff_sections(two_runs: tuple[Path, str, str]) -> None:
    db, a, b = two_runs
    with Ledger.open(db) as ledger:
        data = diff_runs(ledger.conn, a, b)
    provenance, configuration, outcome = (fields(data[s]) for s in ("provenance", "configuration", "outcome"))
    assert provenance["package:numpy"] == ("2.0.0", "2.1.0", False)
    assert provenance["package:click"] == ("8.1", "8.1", True)
    assert provenance["python_version"] == ("3.11.7", "3.11.7", True)
    assert provenance["git_sha"] == ("abc123", "abc123", True)
    assert configuration["replicate"] == (1, 2, False)
    assert configuration["seed"][2] is False
    assert configuration["condition_id"] == ("c1", "c1", True)
    assert outcome["duration_s"] == (10.0, 100.0, False)
    assert outcome["status"] == ("success", "success", True)
    assert outcome["observations.event_type:tool_call"] == (1, None, False)
    assert outcome["observations.event_type:model_call"] == (1, 1, True)
    assert outcome["observations.level:step"] == (2, 1, False)
    assert outcome["metric:judge/score"] == (0.9, 0.9, True)
    differing = sorted(f for rows in (provenance, configuration, outcome) for f, v in rows.items() if not v[2])
    assert data["differences"] == len(differing) == 7, differing


def test_diff_cli(two_runs: tuple[Path, str, str]) -> None:
    db, a, b = two_runs
    code, out, _ = invoke("--db", str(db), "diff", a, b, "--json")
    assert code == 0 and json.loads(out)["differences"] == 7
    code, out, _ = invoke("--db", str(db), "diff", a, b, "--changed")
    marked = [line for line in out.splitlines() if line.startswith("*")]
    assert code == 0 and len(marked) == 7 and "7 field(s) differ" in out
    assert not any(line.startswith("  package:click") for line in out.splitlines())
    code, out, _ = invoke("--db", str(db), "diff", a, a)
    assert code == 0 and "0 field(s) differ" in out


def test_unknown_run(two_runs: tuple[Path, str, str]) -> None:
    db, a, _ = two_runs
    code, _, err = invoke("--db", str(db), "diff", a, "run-nope")
    assert code != 0 and err.strip() == "Error: unknown run 'run-nope'"
    with Ledger.open(db) as ledger, pytest.raises(UnknownRunError):
        diff_runs(ledger.conn, "run-nope", a)
