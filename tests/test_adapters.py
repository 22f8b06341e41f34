"""Format adapters on the shared upstream examples and on harder files, through a real ledger."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyledger.audit.restore import restore
from studyledger import Ledger, query
from studyledger.events import EventKind, make_event, observation_recorded, run_registered
from studyledger import own_lines
from studyledger.errors import BadLine
from studyledger.ingestion.adapters import (
    AGENTS_TRACE,
    EXPERIMENTS_CHECKPOINT,
    OBSERVATION_ROW,
    OWN,
    TRACE_KEYS,
    LineRejected,
    _checked_trace_fields,
    _trace_fields,
    detect_format,
    events_from_line,
    trace_level,
)
from studyledger.ingestion.lines import decode_line

from studyledger.projections import PROJECTION_TABLES

from .conftest import SHARED

FORMATS = SHARED / "formats"
DATA = Path(__file__).parent / "data" / "formats"


def shared(name: str) -> Path:
    """A file of the shared upstream format examples."""
    return FORMATS / name


def ingest_lines(ledger: Ledger, path: Path) -> tuple[int, int, list[str]]:
    """Feed every line of a file through the adapters into the ledger, as the tailer would.

    Returns:
        (events appended, duplicates, rejection reasons).
    """
    appended = duplicates = 0
    reasons: list[str] = []
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                events = events_from_line(json.loads(raw), source=f"file:{path}:{number}:{offset}")
            except LineRejected as exc:
                reasons.append(str(exc))
            else:
                result = ledger.append(events)
                appended += len(result.appended)
                duplicates += result.duplicates
            offset += len(raw)
    return appended, duplicates, reasons


def trace_line(**changes: Any) -> dict[str, Any]:
    """A valid trace event, changed as a test needs."""
    line: dict[str, Any] = {
        "event_type": "ToolCallStarted", "run_id": "r1", "span_id": "a" * 32,
        "parent_span_id": "b" * 32, "timestamp": "2026-03-02T10:15:00.001000+00:00",
        "timestamp_ms": 1772446500001, "duration_ms": None,
        "attributes": {"tool_name": "calc"}, "event_index": 3,
    }
    line.update(changes)
    return line


def checkpoint_line(**changes: Any) -> dict[str, Any]:
    """The first shared checkpoint line, changed as a test needs."""
    line: dict[str, Any] = json.loads(shared("experiments-runs.jsonl").read_text().splitlines()[0])
    line.update(changes)
    return line


# -- the shared examples ----------------------------------------------------------------


def test_trace_example_becomes_one_observation_per_line_and_a_failed_run(ledger: Ledger) -> None:
    appended, _, reasons = ingest_lines(ledger, shared("agents-trace.jsonl"))
    assert reasons == []
    run = ledger.run("demo-agent-run-001")
    # success: false with error: null is a failure; the study is unknown from a trace alone.
    assert (run["status"], run["error"], run["study_id"]) == ("failed", None, None)
    assert run["started_at"] == "2026-03-02T10:15:00.001000+00:00"
    assert run["ended_at"] == "2026-03-02T10:15:01.263000+00:00"
    assert run["observation_count"] == 11
    assert appended == 11 + 3  # + registration, running, failed
    assert [t["to_status"] for t in ledger.transitions("demo-agent-run-001")] == ["running", "failed"]
    rows = {row["event_type"]: row for row in ledger.observations("demo-agent-run-001", limit=100)}
    assert rows["RunStarted"]["level"] == "run"
    assert rows["ModelCallFinished"]["level"] == "step"
    assert rows["ToolSelectionDecision"]["level"] == "tool-call"
    assert rows["ToolCallFailed"]["level"] == "tool-call"
    assert rows["ToolCallFailed"]["tool_name"] == "lookup_material"
    assert rows["WorkflowStepFinished"]["step_id"] == "decide"
    assert "unobtainium" in rows["ToolCallFailed"]["text"]
    assert rows["ModelCallFinished"]["text"] == "ModelCallFinished demo-model 48 tokens (246 ms)"
    assert ledger.anomalies() == []


def test_trace_spans_rebuild_the_call_tree(ledger: Ledger) -> None:
    ingest_lines(ledger, shared("agents-trace.jsonl"))
    metas = [json.loads(row["meta_json"]) for row in ledger.observations("demo-agent-run-001", limit=100)]
    spans = {meta["span_id"] for meta in metas}
    parents = {meta["span_id"]: meta["parent_span_id"] for meta in metas}
    roots = [span for span, parent in parents.items() if parent is None]
    assert roots == ["a" * 32]
    assert all(parent in spans for parent in parents.values() if parent is not None)
    assert sorted(meta["event_index"] for meta in metas) == list(range(11))
    finished = next(m for m in metas if m["attributes"].get("usage"))
    assert finished["duration_ms"] == 246 and finished["attributes"]["usage"]["total_tokens"] == 48


def test_checkpoint_example_registers_runs_with_outcomes(ledger: Ledger) -> None:
    _, _, reasons = ingest_lines(ledger, shared("experiments-runs.jsonl"))
    assert reasons == []
    ok, failed = ledger.run("run-222222222222"), ledger.run("run-444444444444")
    assert {k: ok[k] for k in ("study_id", "condition_id", "replicate", "agent_id", "problem_id", "seed",
                               "status", "status_reason", "observation_count")} == {
        "study_id": "bracket-study", "condition_id": "cond-0a1b2c3d4e5f", "replicate": 1,
        "agent_id": "json-agent", "problem_id": "bracket", "seed": 123456789, "status": "success",
        "status_reason": "completed", "observation_count": 2}
    assert (failed["status"], failed["status_reason"], failed["error"]) == (
        "failed", "exception", "ValueError: HTTP 429 rate limited")
    # execution_metadata.agent_id (what ran) wins over agent_spec_ref (what was asked).
    assert failed["agent_id"] == "json-agent"
    (evaluation,) = query.evaluations(ledger.conn, "run-222222222222")
    assert evaluation["metric_value"] == '{"$float":"NaN"}'
    (provenance,) = ledger.provenance("run-222222222222")
    assert json.loads(provenance["extra"])["trace_path"].startswith("traces/run_")
    assert ledger.anomalies() == []


def test_observation_rows_repeat_the_checkpoint_facts_as_the_same_events(ledger: Ledger) -> None:
    ingest_lines(ledger, shared("experiments-runs.jsonl"))
    appended, duplicates, reasons = ingest_lines(ledger, shared("observations.jsonl"))
    assert (appended, duplicates, reasons) == (0, 2, [])
    embedded = checkpoint_line()["observations"]
    rows = [json.loads(line) for line in shared("observations.jsonl").read_text().splitlines()]
    for row, inside in zip(rows, embedded, strict=True):
        (alone,) = events_from_line(row, source="file:a:1:0")
        in_checkpoint = [e for e in events_from_line(checkpoint_line(), source="file:b:1:0")
                         if e.kind == EventKind.OBSERVATION_RECORDED and json.loads(e.body)["record_id"] == inside["record_id"]]
        assert [alone.event_id] == [e.event_id for e in in_checkpoint]


def test_observation_meta_json_as_a_string_is_the_same_fact() -> None:
    row = json.loads(shared("observations.jsonl").read_text().splitlines()[0])
    as_string = dict(row, meta_json=json.dumps(row["meta_json"]))
    assert events_from_line(row, source="x") == events_from_line(as_string, source="x")


def test_trace_and_runner_disagreeing_is_kept_and_flagged(ledger: Ledger) -> None:
    ingest_lines(ledger, shared("experiments-runs.jsonl"))
    # The trace ends within the second the runner wrote as its end (it truncates to seconds).
    finished = trace_line(event_type="RunFinished", run_id="run-222222222222", parent_span_id=None,
                          attributes={"success": False, "error": "tool crashed"}, event_index=9,
                          timestamp="2026-03-02T10:16:02.500000+00:00")
    ledger.append(events_from_line(finished, source="file:t:1:0"))
    run = ledger.run("run-222222222222")
    assert (run["status"], run["error"]) == ("failed", "tool crashed")
    assert [t["to_status"] for t in ledger.transitions("run-222222222222")] == ["running", "success", "failed"]
    (anomaly,) = ledger.anomalies("run-222222222222")
    assert anomaly["kind"] == "conflicting_outcome"
    assert "success" in anomaly["message"] and "failed" in anomaly["message"]


# -- harder files -----------------------------------------------------------------------


def test_nan_and_infinity_survive_and_stay_distinct_from_null(ledger: Ledger) -> None:
    _, _, reasons = ingest_lines(ledger, DATA / "runs-hard.jsonl")
    assert reasons == []
    values = {row["metric_name"]: row["metric_value"] for row in query.evaluations(ledger.conn, "run-hard-ok")}
    assert values == {"nan_metric": '{"$float":"NaN"}', "inf_metric": '{"$float":"Infinity"}',
                      "neg_inf": '{"$float":"-Infinity"}', "null_metric": None}
    metas = {row["record_id"]: json.loads(row["meta_json"]) for row in ledger.observations("run-hard-ok")}
    assert metas["evt-hard-1"] == {"score": {"$float": "NaN"}, "none": None}
    assert metas["evt-hard-2"] == {"as_string": True}
    notes = query.evaluations(ledger.conn, "run-hard-ok")[0]["notes_json"]
    assert json.loads(notes) == {"why": "because"}


def test_checkpoint_statuses_skipped_and_structured_errors(ledger: Ledger) -> None:
    ingest_lines(ledger, DATA / "runs-hard.jsonl")
    skipped = ledger.run("run-hard-skip")
    assert (skipped["status"], skipped["started_at"], skipped["status_reason"]) == (
        "skipped", None, "inadmissible condition")
    assert [t["to_status"] for t in ledger.transitions("run-hard-skip")] == ["skipped"]
    failed = ledger.run("run-hard-fail")
    assert failed["status"] == "failed"
    assert json.loads(failed["error"]) == {"type": "ValueError", "message": "bad input", "traceback": ["a", "b"]}
    (provenance,) = ledger.provenance("run-hard-fail")
    assert (provenance["host"], json.loads(provenance["extra"])) == ("node-1", {"gpu": "none"})


def test_runs_appended_twice_give_one_run_and_flag_the_second_attempt(ledger: Ledger) -> None:
    ingest_lines(ledger, DATA / "runs-hard.jsonl")
    run = ledger.run("run-hard-ok")
    assert (run["seed"], run["status"], run["observation_count"]) == (11, "success", 2)
    assert len(ledger.runs(study_id="hard-study")) == 3
    # Line 4 repeats line 1 exactly (no new events); line 5 is a second attempt with new
    # times: its start after the end is flagged, its success then confirms the outcome.
    transitions = ledger.transitions("run-hard-ok")
    assert [(t["to_status"], t["legal"]) for t in transitions] == [
        ("running", 1), ("success", 1), ("running", 0), ("success", 1)]
    assert {a["kind"] for a in ledger.anomalies("run-hard-ok")} == {"illegal_transition"}
    before = ledger.head()
    appended, _, _ = ingest_lines(ledger, DATA / "runs-hard.jsonl")
    assert (appended, ledger.head()) == (0, before)


def test_trace_without_run_finished_leaves_the_run_running(ledger: Ledger) -> None:
    _, _, reasons = ingest_lines(ledger, DATA / "trace-killed.jsonl")
    assert reasons == []
    run = ledger.run("killed-run-001")
    assert (run["status"], run["ended_at"], run["observation_count"]) == ("running", None, 4)
    rows = {row["event_type"]: row for row in ledger.observations("killed-run-001")}
    assert rows["ModelCacheHit"]["level"] == "step"  # an event type added upstream later
    model = json.loads(rows["ModelCallStarted"]["meta_json"])
    assert model["extra_keys"] == {"host": "node-7"}
    assert model["attributes"]["messages"][0]["content"] == "caf\u00e9 \U0001F680"


def test_two_sessions_in_one_trace_file_are_all_kept(ledger: Ledger) -> None:
    _, _, reasons = ingest_lines(ledger, DATA / "trace-two-sessions.jsonl")
    assert reasons == []
    run = ledger.run("twice-run")
    assert (run["observation_count"], run["status"], run["error"]) == (5, "failed", "boom")
    record_ids = [row["record_id"] for row in ledger.observations("twice-run")]
    assert len(set(record_ids)) == 5  # event_index restarts at 0: the ids still differ
    # The second session starts after the first ended: a new attempt, flagged once; its
    # failure is its own outcome, not a disagreement with the first session's success.
    assert [a["kind"] for a in ledger.anomalies("twice-run")] == ["illegal_transition"]


def test_hundred_kilobyte_line_with_truncated_strings(ledger: Ledger, tmp_path: Path) -> None:
    big = "x" * 2048 + "...[truncated:98000]"
    line = trace_line(attributes={"tool_name": "reader", "result": [big] * 48, "error": big})
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(line) + "\n")
    assert path.stat().st_size > 100_000
    _, _, reasons = ingest_lines(ledger, path)
    assert reasons == []
    (row,) = ledger.observations("r1")
    assert len(row["text"]) <= 200 and row["text"].endswith("...")
    assert json.loads(row["meta_json"])["attributes"]["result"][47] == big


def test_trace_record_ids_are_deterministic_and_line_specific() -> None:
    def record_id(line: dict[str, Any]) -> str:
        (event,) = events_from_line(line, source="x")
        return str(json.loads(event.body)["record_id"])

    assert record_id(trace_line()) == record_id(trace_line())
    assert record_id(trace_line()) != record_id(trace_line(event_index=4))
    assert record_id(trace_line()) != record_id(trace_line(timestamp="2026-03-02T10:15:00.002000+00:00"))
    assert record_id(trace_line()) != record_id(trace_line(event_type="ToolCallFinished"))


def test_run_started_registers_before_moving_to_running() -> None:
    started = trace_line(event_type="RunStarted", parent_span_id=None, attributes={})
    kinds = [event.kind for event in events_from_line(started, source="x")]
    assert kinds == ["run_registered", "run_status_changed", "observation_recorded"]
    kinds = [event.kind for event in events_from_line(checkpoint_line(), source="x")]
    assert kinds.index("run_registered") < kinds.index("run_status_changed")


@pytest.mark.parametrize(("event_type", "level"), [
    ("RunStarted", "run"), ("RunFinished", "run"), ("ModelCallToken", "step"),
    ("ModelRequestObserved", "step"), ("AgentRunFinished", "step"), ("WorkflowStepContextObserved", "step"),
    ("RouterDecision", "step"), ("GuardrailDecision", "step"), ("ToolCallFailed", "tool-call"),
    ("ToolResultObserved", "tool-call"), ("ToolSelectionDecision", "tool-call"), ("SomethingNew", "step"),
])
def test_trace_levels(event_type: str, level: str) -> None:
    assert trace_level(event_type) == level


def test_own_lines_round_trip_with_the_same_ids() -> None:
    body = run_registered("r9", study_id="s", condition_id="c", replicate=2, agent_id="a",
                          problem_id="p", seed=5)
    line = own_lines.line_for(EventKind.RUN_REGISTERED, body)
    (event,) = events_from_line(json.loads(line), source="file:f:1:0")
    assert event.event_id == make_event(EventKind.RUN_REGISTERED, body, source="api").event_id
    assert event.source == "file:f:1:0"


def test_detect_format_names_each_shape() -> None:
    observation = json.loads(shared("observations.jsonl").read_text().splitlines()[0])
    assert detect_format({"studyledger": 1}) == OWN
    assert detect_format(trace_line()) == AGENTS_TRACE
    assert detect_format(checkpoint_line()) == EXPERIMENTS_CHECKPOINT
    assert detect_format(observation) == OBSERVATION_ROW


# -- rejections -------------------------------------------------------------------------


OBSERVATION = {"timestamp": "2026-03-02T10:16:00+00:00", "record_id": "evt-1", "event_type": "note",
               "text": "t", "level": "step", "run_id": "r1", "meta_json": {}}


@pytest.mark.parametrize(("line", "reason"), [
    ([1, 2], "a line must be a JSON object, not a list"),
    ("text", "a line must be a JSON object, not text"),
    (None, "not null"),
    ({"hello": 1}, "unknown line shape (keys: hello)"),
    ({}, "unknown line shape (keys: no keys)"),
    ({"kind": "observation_recorded", "body": {}},
     'looks like a studyledger line without its version key: add "studyledger": 1'),
    ({k: v for k, v in trace_line().items() if k != "timestamp"}, "trace event is missing timestamp"),
    (trace_line(run_id=7), "trace event 'run_id' must be text, not a number"),
    (trace_line(timestamp="yesterday"), "trace event 'timestamp' 'yesterday' is not an ISO-8601 time"),
    ({"run_id": "r", "run_spec": {}, "status": "success", "ended_at": "12/03/2026"}, "'ended_at' '12/03/2026' is not"),
    (dict(OBSERVATION, timestamp="soon"), "observation row 'timestamp' 'soon' is not an ISO-8601 time"),
    (trace_line(run_id=""), "trace event 'run_id' is required"),
    (trace_line(event_index="3"), "'event_index' must be an integer, not text"),
    (trace_line(event_index=True), "'event_index' must be an integer, not a boolean"),
    (trace_line(attributes=[]), "'attributes' must be an object, not a list"),
    (trace_line(duration_ms="slow"), "'duration_ms' must be a number"),
    (trace_line(event_type="RunFinished", attributes={"error": None}), "'attributes.success' must be true or false"),
    (trace_line(timestamp_ms=2**70), "out of the 64-bit integer range"),
    (dict(OBSERVATION, level="galaxy"), "level 'galaxy' is not one of"),
    (dict(OBSERVATION, timestamp=None), "missing timestamp"),
    (dict(OBSERVATION, run_id=5), "observation row 'run_id' must be text or null, not a number"),
    (dict(OBSERVATION, meta_json="{not json"), "'meta_json' is a string but not JSON"),
    (dict(OBSERVATION, meta_json=[1]), "'meta_json' must be an object"),
    (dict(OBSERVATION, text="\ud800"), "lone UTF-16 surrogate"),
    ({"run_spec": {}, "status": "success"}, "checkpoint line 'run_id' is required"),
    ({"run_id": "r", "run_spec": [], "status": "success"}, "'run_spec' must be an object, not a list"),
    ({"run_id": "r", "run_spec": {"run_id": "q"}, "status": "success"}, "differs from run_spec.run_id"),
    ({"run_id": "r", "run_spec": {}, "status": "done"}, "status 'done' is not one of"),
    ({"run_id": "r", "run_spec": {"seed": 1.5}, "status": "success"}, "'seed' must be an integer"),
    ({"run_id": "r", "run_spec": {"replicate": 2**64}, "status": "success"}, "out of the 64-bit"),
    ({"run_id": "r", "run_spec": {}, "status": "success", "observations": {}}, "'observations' must be a list"),
    ({"run_id": "r", "run_spec": {}, "status": "success", "observations": [dict(OBSERVATION, level=1)]},
     "observations[0] 'level' must be text"),
    ({"run_id": "r", "run_spec": {}, "status": "success", "evaluator_outputs": [{"metric_value": [1]}]},
     "evaluator_outputs[0] 'metric_value' must be a number, boolean, text or null, not a list"),
    ({"run_id": "r", "run_spec": {}, "status": "success", "metrics": [1]}, "'metrics' must be an object"),
    ({"record_type": "run-evidence", "run_id": "r", "status": "finished"}, "run.json status 'finished' is not one of"),
    ({"record_type": "run-evidence", "run_id": "r", "status": "success", "timing": "x"},
     "run.json 'timing' must be an object"),
    ({"record_type": "run-evidence", "run_id": "r", "status": "running", "timing": {"started_at": "soon"}},
     "timing 'started_at' 'soon' is not an ISO-8601 time"),
    ({"record_type": "run-evidence", "status": "pending"}, "run.json 'run_id' is required"),
    ({"run_id": "r", "run_spec": {}, "status": "success", "provenance_info": "x"}, "'provenance_info' must be an object"),
    ({"run_id": "r", "run_spec": {}, "status": "success", "provenance_info": {"host": {"a": 1}}},
     "provenance_captured 'provenance' 'host' must be text or null, not an object"),
    ({"studyledger": 2, "kind": "run_registered", "body": {}}, "format 2 is not supported"),
    ({"studyledger": 1, "kind": "nope", "body": {}}, "unknown event kind 'nope'"),
    ({"studyledger": 1, "kind": "run_registered", "body": {}}, "run_registered body needs 'run_id'"),
    ({"studyledger": 1, "kind": "run_status_changed", "body": {"run_id": "r", "status": "done"}},
     "status 'done' is not a run status"),
    ({"studyledger": 1, "kind": "run_registered", "body": {"run_id": "r", "seed": {"$float": "NaN"}}},
     "'seed' must be a 64-bit integer or null, not an object"),
    ({"studyledger": 1, "kind": "run_registered", "body": {"run_id": "r"}, "event_id": "evt-0"}, "does not match"),
    ({"studyledger": 1, "kind": "run_registered", "body": {"run_id": "r", "agent_id": "\udc80"}}, "'agent_id' holds a lone"),
    ({"studyledger": 1, "kind": "run_registered", "body": {"run_id": "r", "extra": {"\udc80": 1}}}, "lone UTF-16"),
    ({"studyledger": 1, "kind": "condition_registered", "body": {"study_id": "s", "condition_id": "c",
                                                                 "factors": "notadict"}},
     "condition_registered 'factors' must be an object or null, not text"),
    ({"studyledger": 1, "kind": "audit_recorded", "body": {"check": "verify", "ok": True, "at": "2026-01-01",
                                                           "head": {"seq": 1, "chain": "c"}}},
     "audit_recorded events are recorded by studyledger itself"),
    ({"studyledger": 1, "kind": "line_rejected", "body": {"file": "/etc/shadow", "line": 1, "offset": 0,
                                                          "reason": "forged"}},
     "line_rejected events are recorded by studyledger itself"),
])
def test_invalid_lines_are_rejected_with_a_precise_reason(line: Any, reason: str) -> None:
    with pytest.raises(LineRejected) as caught:
        events_from_line(line, source="file:f:1:0")
    assert reason in str(caught.value)


def test_hostile_values_are_rejected_not_raised() -> None:
    deep: Any = {}
    for _ in range(5_000):
        deep = {"d": deep}
    with pytest.raises(LineRejected, match="nested too deeply"):
        events_from_line(dict(OBSERVATION, meta_json=deep), source="x")
    with pytest.raises(LineRejected, match="invalid values"):
        events_from_line(dict(OBSERVATION, meta_json={"n": 10**5000}), source="x")


def test_reasons_stay_short_whatever_the_line_holds() -> None:
    with pytest.raises(LineRejected) as caught:
        events_from_line({"studyledger": "v" * 100_000}, source="x")
    assert len(str(caught.value)) <= 300 and str(caught.value).endswith("...")
    with pytest.raises(LineRejected) as caught:
        events_from_line({"k" * 100_000: 1}, source="x")
    assert len(str(caught.value)) <= 300


# -- arbitrary input --------------------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**30), max_value=10**30)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
            | st.sampled_from(["", "run-1", "step", "tool-call", "success", "failed", "\ud800"]))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=20)
# Lines close to each accepted shape, so the checks deep inside the adapters are reached.
_KEYS = ["studyledger", "kind", "body", "event_id", "source", "recorded_at", "span_id", "event_type",
         "run_id", "parent_span_id", "timestamp", "timestamp_ms", "duration_ms", "attributes",
         "event_index", "run_spec", "status", "started_at", "ended_at", "status_reason", "error_info",
         "observations", "evaluator_outputs", "provenance_info", "record_id", "meta_json", "level",
         "study_id", "seed", "replicate", "provenance", "metric_value", "title", "condition_id"]
_shaped = st.dictionaries(st.sampled_from(_KEYS), _json | st.just(1) | st.sampled_from(
    [k.value for k in EventKind] + ["RunStarted", "RunFinished"]), max_size=14)
_nearly_valid = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from([trace_line(), trace_line(event_type="RunFinished", attributes={"success": True}),
                     OBSERVATION, {"studyledger": 1, "kind": "run_registered", "body": {"run_id": "r"}},
                     {"run_id": "r", "run_spec": {}, "status": "success"}]),
    st.dictionaries(st.sampled_from(_KEYS), _json, max_size=3),
)


@pytest.fixture(scope="module")
def shared_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """One real ledger for every generated example (a file per example would be slow)."""
    with Ledger.open(tmp_path_factory.mktemp("adapters") / "hypothesis.db") as opened:
        yield opened


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(line=st.one_of(_json, _shaped, _nearly_valid))
def test_arbitrary_json_only_ever_raises_line_rejected_and_accepted_events_store(
    shared_ledger: Ledger, line: Any
) -> None:
    try:
        events = events_from_line(line, source="file:f:1:0")
    except LineRejected as exc:
        assert str(exc)
        return
    shared_ledger.append(events)
    # Whatever was accepted folds cleanly and folds the same again: no anomaly says a body
    # could not be applied, and a rebuild reproduces the tables.
    assert [a for a in shared_ledger.anomalies() if a["kind"] in ("unreadable_event", "invalid_field")] == []


_trace_fields_varied = st.builds(
    lambda base, changes, drop: {key: value for key, value in {**base, **changes}.items() if key not in drop},
    st.just(trace_line()),
    st.dictionaries(st.sampled_from(list(TRACE_KEYS)), _json | st.sampled_from(
        ["2026-03-02T10:15:00Z", "2026-13-02", "", "x", 2**63, -(2**63) - 1, 1.5, True]), max_size=4),
    st.sets(st.sampled_from(list(TRACE_KEYS)), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(line=_trace_fields_varied)
def test_trace_fields_checked_at_once_are_the_fields_checked_one_by_one(line: dict[str, Any]) -> None:
    try:
        expected: Any = _checked_trace_fields(line)
    except LineRejected as exc:
        expected = str(exc)
    try:
        found: Any = _trace_fields(line)
    except LineRejected as exc:
        found = str(exc)
    assert found == expected


@settings(max_examples=300, deadline=None)
@given(line=st.one_of(_nearly_valid, _trace_fields_varied, _shaped))
def test_events_are_what_the_generic_builders_make_of_their_bodies(line: Any) -> None:
    # Adapters build bodies and events by shortcuts (encoded without a read-back check,
    # misfits known); each event is still what make_event makes of its decoded body.
    try:
        value, decoded = decode_line(json.dumps(line).encode())
        events = events_from_line(value, source="file:f:1:0", decoded=decoded)
    except (LineRejected, BadLine, ValueError):
        return
    for event in events:
        if event.data is None:
            continue
        assert json.loads(event.body) == event.data
        reference = make_event(event.kind, json.loads(event.body), source=event.source)
        assert (event.body, event.event_id, event.study_id, event.run_id, event.occurred_at, event.misfits) == (
            reference.body, reference.event_id, reference.study_id, reference.run_id, reference.occurred_at,
            reference.misfits)
        if event.kind == EventKind.OBSERVATION_RECORDED:
            assert observation_recorded(event.data) == event.data


def test_the_fuzzed_ledger_rebuilds_to_the_same_tables(shared_ledger: Ledger) -> None:
    """Runs after the hypothesis test above (same module-scoped ledger)."""
    tables = {name: shared_ledger.conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()
              for name in PROJECTION_TABLES}
    shared_ledger.rebuild_projections()
    assert {name: shared_ledger.conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()
            for name in PROJECTION_TABLES} == tables


def test_nan_is_not_null_in_an_observation_body() -> None:
    nan = observation_recorded(dict(OBSERVATION, meta_json={"v": math.nan}))
    null = observation_recorded(dict(OBSERVATION, meta_json={"v": None}))
    assert make_event(EventKind.OBSERVATION_RECORDED, nan, source="x").event_id != \
        make_event(EventKind.OBSERVATION_RECORDED, null, source="x").event_id


def test_an_exported_ledger_restores_into_an_empty_one_with_the_same_chain(
    ledger: Ledger, tmp_path: Path
) -> None:
    ingest_lines(ledger, DATA / "runs-hard.jsonl")
    ingest_lines(ledger, shared("agents-trace.jsonl"))
    export = tmp_path / "export.jsonl"
    export.write_text("".join(own_lines.line_for_stored(event) for event in ledger.events()))
    with Ledger.open(tmp_path / "copy.db") as copy:
        restore(copy, export)
        assert [e.event_id for e in copy.events()] == [e.event_id for e in ledger.events()]
        assert copy.head() == ledger.head()
        assert copy.runs() == ledger.runs()


@pytest.mark.parametrize("body,reason", [
    ({"run_id": "r1", "status": "running", "at": 1767225600}, "'at' must be an ISO-8601 time or null, not a number"),
    ({"run_id": "r1", "status": "running", "at": "yesterday"}, "'at' 'yesterday' is not an ISO-8601 time"),
    ({"run_id": "r1", "status": "running", "study_id": 7}, "'study_id' must be text or null"),
])
def test_own_status_lines_with_values_projections_cannot_use_are_rejected(body: dict, reason: str) -> None:
    line = {"studyledger": 1, "kind": "run_status_changed", "body": body}
    with pytest.raises(LineRejected, match=re.escape(reason)):
        events_from_line(line, source="file:x:1:0")


@pytest.mark.parametrize("field,value", [("seed_policy", {"bogus": 1}), ("run_budget", [1, 2]),
                                         ("run_budget", {"replicates": 0})])
def test_a_study_line_needs_a_usable_policy_and_budget(field: str, value: object) -> None:
    line = {"studyledger": 1, "kind": "study_registered", "body": {"study_id": "S", field: value}}
    with pytest.raises(LineRejected, match=field):
        events_from_line(line, source="file:x:1:0")
