"""Replay rebuilds every projection and finds any difference; as-of shows the state of the past."""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyledger import Ledger, Observation, ProvenanceMetadata, RunBudget, RunStatus, ValidationError, query
from studyledger import events as ev
from studyledger.audit.replay import parse_as_of, replay, state_as_of
from studyledger.events import EventKind, make_event

from .audit_helpers import fill, invoke, raw

STATUSES = [status.value for status in RunStatus]

operation = st.one_of(
    st.tuples(st.just("run"), st.integers(1, 4), st.sampled_from(["c1", "c2"])),
    st.tuples(st.just("fact"), st.integers(0, 5), st.sampled_from(STATUSES)),  # any status, legal or not
    st.tuples(st.just("api"), st.integers(0, 5), st.sampled_from(STATUSES)),  # refused when illegal
    st.tuples(st.just("observe"), st.integers(0, 5), st.sampled_from(["step", "tool-call", "trial"])),
    st.tuples(st.just("provenance"), st.integers(0, 5), st.sampled_from(["3.11.1", "3.12.0"])),
    st.tuples(st.just("evaluate"), st.integers(0, 5),
              st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))),
    st.tuples(st.just("condition"), st.sampled_from(["c1", "c2"]), st.booleans()),
    st.tuples(st.just("snapshot"), st.just(0), st.just(0)),
)


def observed_state(conn: sqlite3.Connection) -> dict[str, Any]:
    """What a user could see at one moment, through the query layer."""
    runs = query.runs(conn)
    return {
        "stats": query.stats(conn),
        "runs": runs,
        "studies": query.studies(conn),
        "anomalies": query.anomalies(conn),
        "transitions": {run["run_id"]: query.transitions(conn, run["run_id"]) for run in runs},
        "observations": {run["run_id"]: query.observations(conn, run["run_id"]) for run in runs},
        "evaluations": json.dumps(query.evaluations(conn), sort_keys=True, default=str),
    }


def apply(ledger: Ledger, runs: list[str], op: tuple[Any, Any, Any], step: int) -> None:
    kind, a, b = op
    if kind == "run":
        runs.append(ledger.register_run("s1", b, replicate=a))
        return
    if kind == "condition":
        ledger.append([make_event(EventKind.CONDITION_REGISTERED, ev.condition_registered(
            "s1", a, factors={"temperature": 0.5 if a == "c1" else 1.0}, admissible=b), source="api")])
        return
    if not runs:
        return
    run_id = runs[a % len(runs)]
    if kind == "fact":
        body = ev.run_status_changed(run_id, b, at=f"2026-01-01T00:{step // 60:02d}:{step % 60:02d}+00:00")
        ledger.append([make_event(EventKind.RUN_STATUS_CHANGED, body, source=f"file:x.jsonl:{step}:0")])
    elif kind == "api":
        try:
            ledger.transition(run_id, b)
        except ValidationError:
            pass  # the API refuses illegal transitions; replay must agree with what was kept
    elif kind == "observe":
        ledger.observe(Observation(timestamp=f"2026-01-01T01:00:{step % 60:02d}+00:00", record_id=f"r{step}",
                                   text=f"step {step}", session_id=run_id, actor_id="agent",
                                   event_type="model_call", level=b, run_id=run_id))
    elif kind == "provenance":
        ledger.record_provenance(run_id, ProvenanceMetadata(captured_at="2026-01-01T00:00:00+00:00", host="h",
                                                            python_version=b, platform="linux",
                                                            package_versions={"numpy": "2.0"}))
    elif kind == "evaluate":
        ledger.append([make_event(EventKind.EVALUATION_RECORDED, ev.evaluation_recorded(
            run_id, evaluator_id="judge", metric_name=f"m{step}", metric_value=b), source="api")])


@given(st.lists(operation, min_size=1, max_size=30))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_replay_is_identical_and_as_of_equals_what_was_seen(ops: list[tuple[Any, Any, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder, Ledger.open(Path(folder) / "l.db") as ledger:
        ledger.register_study("s1", run_budget=RunBudget(replicates=4))
        runs: list[str] = []
        seen: list[tuple[int, dict[str, Any]]] = []
        for step, op in enumerate(ops):
            if op[0] == "snapshot":
                seen.append((ledger.head().seq, observed_state(ledger.conn)))
            else:
                apply(ledger, runs, op, step)
        report = replay(ledger.store, in_memory=True)
        assert report.identical is True, report.differences
        assert report.differences == [] and report.transitions["invalid"] == 0
        assert report.runs_by_status == query.status_breakdown(ledger.conn)
        assert report.anomaly_count == len(query.anomalies(ledger.conn))
        assert report.transitions["flagged"] == sum(
            1 for row in ledger.conn.execute("SELECT legal FROM transitions") if not row[0])
        for seq, state in seen:
            with state_as_of(ledger, seq=seq) as snapshot:
                assert snapshot.seq == seq
                assert observed_state(snapshot.conn) == state


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[str]]:
    db = tmp_path / "ledger.db"
    return db, fill(db)


EDITS = {
    "status changed": ("UPDATE runs SET status = 'failed' WHERE rowid = 1", "runs", "changed"),
    "observation removed": ("DELETE FROM observations WHERE seq = 5", "observations", "missing"),
    "anomaly invented": ("INSERT INTO anomalies(seq, run_id, study_id, kind, severity, message) "
                         "VALUES (3, NULL, NULL, 'x', 'error', 'made up')", "anomalies", "extra"),
    "projection behind": ("UPDATE projection_state SET last_seq = 2", "projection_state", "changed"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_an_edited_projection_is_not_identical(filled: tuple[Path, list[str]], case: str) -> None:
    db, _ = filled
    statement, table, problem = EDITS[case]
    conn = raw(db)
    conn.execute(statement)
    conn.close()
    code, out, _ = invoke("--db", str(db), "replay", "--json")
    data = json.loads(out)
    assert code == 1 and data["identical"] is False
    assert [(d["table"], d["problem"]) for d in data["differences"]] == [(table, problem)]
    assert data["tables"][table]["differences"] == 1 and data["difference_count"] == 1


def test_a_changed_row_names_its_key_and_columns(filled: tuple[Path, list[str]]) -> None:
    db, runs = filled
    conn = raw(db)
    conn.execute("UPDATE runs SET status = 'failed', observation_count = 99 WHERE run_id = ?", (runs[1],))
    conn.close()
    code, out, _ = invoke("--db", str(db), "replay", "--json")
    (difference,) = json.loads(out)["differences"]
    assert difference["key"] == {"run_id": runs[1]}
    assert difference["columns"] == ["status", "observation_count"]
    assert difference["stored"] == {"status": "failed", "observation_count": 99}
    assert difference["rebuilt"] == {"status": "success", "observation_count": 3}


def test_a_forged_legal_flag_is_an_invalid_transition(filled: tuple[Path, list[str]]) -> None:
    db, _ = filled
    conn = raw(db)
    conn.execute("UPDATE transitions SET legal = 0 WHERE seq = (SELECT min(seq) FROM transitions)")
    conn.close()
    code, out, _ = invoke("--db", str(db), "replay", "--json")
    data = json.loads(out)
    assert code == 1 and data["transitions"]["invalid"] == 2 and data["transitions"]["flagged"] == 1
    assert {d["problem"] for d in data["differences"]} == {"changed", "invalid_transition"}
    messages = sorted(d["message"] for d in data["differences"] if d["problem"] == "invalid_transition")
    assert messages == ["flagged as an anomaly but the anomalies table has none",
                        "pending -> running is legal but flagged as an anomaly"]


def test_a_removed_anomaly_leaves_its_transition_unexplained(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    with Ledger.open(db) as ledger:
        ledger.register_study("s1")
        run_id = ledger.register_run("s1", "c1")
        for second, status in enumerate(("running", "success", "failed")):  # two outcomes: flagged
            ledger.append([make_event(EventKind.RUN_STATUS_CHANGED, ev.run_status_changed(
                run_id, status, at=f"2026-01-01T00:00:0{second}+00:00"), source="file:f:1:0")])
    conn = raw(db)
    conn.execute("DELETE FROM anomalies")
    conn.execute("UPDATE transitions SET legal = 1")
    conn.close()
    code, out, _ = invoke("--db", str(db), "replay", "--json")
    invalid = [d["message"] for d in json.loads(out)["differences"] if d["problem"] == "invalid_transition"]
    assert code == 1 and invalid == ["outcomes success and failed disagree but are not flagged"]


def test_a_dropped_projection_table_is_reported(filled: tuple[Path, list[str]]) -> None:
    db, _ = filled
    conn = raw(db)
    conn.execute("DROP TABLE rejections")
    conn.close()
    code, out, err = invoke("--db", str(db), "replay")
    assert code == 1 and "DIFFERENT" in out and "missing_table" in out


def test_text_report_of_an_intact_ledger(filled: tuple[Path, list[str]]) -> None:
    db, _ = filled
    code, out, _ = invoke("--db", str(db), "replay")
    assert code == 0
    assert "rebuilt tables identical" in out and "runs by status: success 2" in out


def test_as_of_by_time_uses_recorded_at(tmp_path: Path) -> None:
    """Events recorded at or before the moment count, wherever the ledger stored them."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        def record(kind: EventKind, body: dict[str, Any], at: str) -> None:
            ledger.append([make_event(kind, body, source="api", recorded_at=at)])

        record(EventKind.STUDY_REGISTERED, ev.study_registered("s1"), "2026-03-01T10:00:00+00:00")
        record(EventKind.RUN_REGISTERED, ev.run_registered("run-1", study_id="s1", condition_id="c", replicate=1,
                                                           agent_id=None, problem_id=None, seed=1),
               "2026-03-01T10:00:01+00:00")
        record(EventKind.RUN_STATUS_CHANGED, ev.run_status_changed("run-1", "running", at=None),
               "2026-03-01T10:05:00+00:00")
        # Merged later from another machine, but recorded there before the run started.
        record(EventKind.RUN_REGISTERED, ev.run_registered("run-2", study_id="s1", condition_id="c", replicate=2,
                                                           agent_id=None, problem_id=None, seed=2),
               "2026-03-01T09:00:00Z")
        with state_as_of(ledger.store, at="2026-03-01T10:04:59+00:00") as snapshot:
            assert query.status_breakdown(snapshot.conn) == {"pending": 2}
            assert [e.seq for e in query.events(snapshot.conn)] == [1, 2, 4]
            assert snapshot.seq == 4
        with state_as_of(ledger.store, at="2026-03-01T12:05:00+02:00") as snapshot:  # 10:05 UTC
            assert query.status_breakdown(snapshot.conn) == {"pending": 1, "running": 1}
        with state_as_of(ledger.store, at="2026-03-01T10:00:00.5") as snapshot:  # no offset: UTC
            assert query.stats(snapshot.conn)["runs"] == 1
    code, out, _ = invoke("--db", str(tmp_path / "l.db"), "replay", "--as-of", "2026-03-01T10:00:00.5", "--json")
    data = json.loads(out)
    assert code == 0 and data["identical"] is None
    assert data["as_of"] == {"seq": 4, "at": "2026-03-01T10:00:00.500000+00:00"}
    assert data["stats"]["events"] == 2  # seq 1 and the merged seq 4
    assert data["runs_by_status"] == {"pending": 1}


def test_as_of_parsing() -> None:
    assert parse_as_of("12") == (12, None)
    seq, at = parse_as_of("2026-01-01T00:00:00Z")
    assert seq is None and at is not None and at.utcoffset() is not None
    with pytest.raises(ValidationError, match="sequence number"):
        parse_as_of("last tuesday")


def test_as_of_beyond_the_head_is_the_head(filled: tuple[Path, list[str]]) -> None:
    db, _ = filled
    code, out, _ = invoke("--db", str(db), "replay", "--as-of", "999", "--json")
    assert code == 0 and json.loads(out)["head"]["seq"] == 13


def test_replay_record_writes_an_audit_event(filled: tuple[Path, list[str]]) -> None:
    db, _ = filled
    assert invoke("--db", str(db), "replay", "--record")[0] == 0
    code, out, _ = invoke("--db", str(db), "audits", "--json")
    (audit,) = json.loads(out)
    assert audit["check"] == "replay" and audit["ok"] is True and audit["head"]["seq"] == 13
    assert audit["seq"] == 14 and audit["summary"]["difference_count"] == 0
    # The recorded audit is itself an event: the next replay folds it and stays identical.
    code, out, _ = invoke("--db", str(db), "replay", "--json")
    assert code == 0 and json.loads(out)["events"] == 14


def test_nan_metrics_survive_replay(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.append([make_event(EventKind.EVALUATION_RECORDED, ev.evaluation_recorded(
            None, evaluator_id="e", metric_name="m", metric_value=math.nan), source="api")])
        assert replay(ledger.store).identical is True
