"""The Python API contract: ids and seeds as upstream, the status machine, budgets, projections."""

from __future__ import annotations

import itertools
import os
import signal
from datetime import datetime, timezone
from dataclasses import replace
import sqlite3
from pathlib import Path

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyledger import (
    Ledger,
    Observation,
    RunBudget,
    RunStatus,
    SeedPolicy,
    UnknownRunError,
    UnknownStudyError,
    ValidationError,
)
from studyledger import events as ev
from studyledger.events import EventKind, NewEvent, make_event
from studyledger.schema import hash_identifier
from studyledger.audit.replay import replay
from studyledger import projections, query
from studyledger.projections import PROJECTION_TABLES
from studyledger.audit.verify import verify

LEGAL = {
    ("pending", "running"), ("pending", "skipped"), ("pending", "failed"),
    ("running", "success"), ("running", "failed"),
}
PATHS_TO = {  # how to bring a fresh run into each status legally
    "pending": [], "running": ["running"], "success": ["running", "success"],
    "failed": ["failed"], "skipped": ["skipped"],
}


def test_register_run_matches_upstream_ids_and_seeds(ledger: Ledger) -> None:
    policy = SeedPolicy(base_seed=42, per_run_offset=7)
    ledger.register_study("monty-hall", title="Monty", seed_policy=policy, run_budget=RunBudget(replicates=3))
    run_id = ledger.register_run("monty-hall", "cond-abc", replicate=3, agent_id="agent-1", problem_id="p1")
    assert run_id == hash_identifier("run", {"study_id": "monty-hall", "condition_id": "cond-abc", "replicate": 3,
                                             "agent_id": "agent-1", "problem_id": "p1"})
    run = ledger.run(run_id)
    assert run["seed"] == policy.derive_seed("monty-hall", "cond-abc", 3, salt="agent-1:p1")
    assert (run["status"], run["condition_id"], run["replicate"]) == ("pending", "cond-abc", 3)
    # Agent and problem unset: salt "None:None", exactly as upstream's f-string gives.
    other = ledger.register_run("monty-hall", "cond-abc", replicate=1)
    assert ledger.run(other)["seed"] == policy.derive_seed("monty-hall", "cond-abc", 1, salt="None:None")


def test_registering_twice_is_a_no_op(study_ledger: Ledger) -> None:
    first = study_ledger.register_run("s1", "c1", replicate=1)
    events_before = study_ledger.store.event_count()
    assert study_ledger.register_run("s1", "c1", replicate=1) == first
    study_ledger.register_study("s1", title="Study one", description="d", run_budget=RunBudget(replicates=3))
    assert study_ledger.store.event_count() == events_before


def test_a_limit_beyond_any_ledger_lists_everything(study_ledger: Ledger) -> None:
    run = study_ledger.register_run("s1", "c1", replicate=1)
    beyond = 10**30  # SQLite refuses a LIMIT literal over 64 bits; no ledger holds more rows
    assert [r["run_id"] for r in query.runs(study_ledger.conn, limit=beyond)] == [run]
    assert len(study_ledger.events(limit=beyond)) == study_ledger.store.event_count()
    assert len(study_ledger.observations(run, limit=beyond)) == 0


def test_run_budget_is_enforced(ledger: Ledger) -> None:
    ledger.register_study("b", run_budget=RunBudget(replicates=2, max_runs=3))
    with pytest.raises(ValidationError, match="replicate 3 is outside study 'b'"):
        ledger.register_run("b", "c1", replicate=3)
    with pytest.raises(ValidationError, match="replicate 0"):
        ledger.register_run("b", "c1", replicate=0)
    for condition, replicate in [("c1", 1), ("c1", 2), ("c2", 1)]:
        ledger.register_run("b", condition, replicate=replicate)
    with pytest.raises(ValidationError, match="max_runs=3"):
        ledger.register_run("b", "c2", replicate=2)
    # An existing run is still a no-op at the limit, not a refusal.
    ledger.register_run("b", "c1", replicate=1)
    assert len(ledger.runs(study_id="b")) == 3


def test_unknown_study_and_run(study_ledger: Ledger) -> None:
    with pytest.raises(UnknownStudyError, match="nope"):
        study_ledger.register_run("nope", "c1")
    with pytest.raises(UnknownRunError, match="run-missing"):
        study_ledger.transition("run-missing", RunStatus.RUNNING)
    with pytest.raises(UnknownRunError):
        study_ledger.observe(Observation(timestamp="t", record_id="r", text="", session_id="", actor_id="",
                                         event_type="e", run_id="run-missing"))
    with pytest.raises(ValidationError, match="not a run status"):
        study_ledger.transition(study_ledger.register_run("s1", "c1"), "finished")


@pytest.mark.parametrize("current,requested", list(itertools.product(PATHS_TO, PATHS_TO)))
def test_every_transition(study_ledger: Ledger, current: str, requested: str) -> None:
    run_id = study_ledger.register_run("s1", f"{current}-{requested}", replicate=1)
    for step in PATHS_TO[current]:
        study_ledger.transition(run_id, step)
    assert study_ledger.run(run_id)["status"] == current
    if (current, requested) in LEGAL:
        study_ledger.transition(run_id, requested, reason="because", error="boom" if requested == "failed" else None)
        run = study_ledger.run(run_id)
        assert run["status"] == requested and run["status_reason"] == "because"
        assert study_ledger.transitions(run_id)[-1]["from_status"] == current
    else:
        events_before = study_ledger.store.event_count()
        with pytest.raises(ValidationError) as raised:
            study_ledger.transition(run_id, requested)
        assert str(raised.value) == f"run {run_id}: illegal transition {current} -> {requested}"
        assert study_ledger.store.event_count() == events_before
        assert study_ledger.run(run_id)["status"] == current


def test_a_full_run_through_the_api(study_ledger: Ledger) -> None:
    run_id = study_ledger.register_run("s1", "cond-a", replicate=1)
    study_ledger.transition(run_id, RunStatus.RUNNING, at="2026-01-01T00:00:00+00:00")
    provenance = study_ledger.capture_provenance(run_id, packages=["click"])
    study_ledger.observe(*[
        Observation(timestamp=f"2026-01-01T00:00:0{i}+00:00", record_id=f"r{i}", text="hi", session_id=run_id,
                    actor_id="agent", event_type="tool_call" if i % 2 else "assistant_output",
                    meta_json={"i": i, "v": float("nan")}, run_id=run_id, study_id="s1", tool_name="calc")
        for i in range(5)
    ])
    study_ledger.transition(run_id, RunStatus.SUCCESS, at="2026-01-01T00:00:09+00:00")
    run = study_ledger.run(run_id)
    assert run["status"] == "success"
    assert (run["started_at"], run["ended_at"]) == ("2026-01-01T00:00:00+00:00", "2026-01-01T00:00:09+00:00")
    assert run["observation_count"] == 5
    assert [p["python_version"] for p in study_ledger.provenance(run_id)] == [provenance.python_version]
    page = study_ledger.observations(run_id, limit=2)
    assert [row["record_id"] for row in page] == ["r0", "r1"]
    after = study_ledger.observations(run_id, after_seq=page[-1]["seq"], event_type="tool_call")
    assert [row["record_id"] for row in after] == ["r3"]
    assert '"$float":"NaN"' in page[0]["meta_json"]
    study = study_ledger.study("s1")
    assert (study["run_count"], study["runs_by_status"]) == (1, {"success": 1})
    assert study_ledger.stats()["runs_by_status"] == {"success": 1}
    assert study_ledger.anomalies() == []


def status_event(run_id: str, status: str, at: str, reason: str | None = None) -> list:
    return [make_event(EventKind.RUN_STATUS_CHANGED, ev.run_status_changed(run_id, status, at=at, reason=reason),
                       source="file:x:1:0")]


def test_facts_from_files_are_recorded_even_when_illegal(study_ledger: Ledger) -> None:
    run_id = study_ledger.register_run("s1", "c1")
    study_ledger.append(status_event(run_id, "success", "2026-01-01T00:00:01+00:00"))  # pending -> success
    study_ledger.append(status_event(run_id, "failed", "2026-01-01T00:00:02+00:00", reason="trace"))
    kinds = [a["kind"] for a in study_ledger.anomalies(run_id)]
    assert kinds == ["illegal_transition", "conflicting_outcome"]
    run = study_ledger.run(run_id)
    assert run["status"] == "failed" and run["anomaly_count"] == 2
    assert [t["legal"] for t in study_ledger.transitions(run_id)] == [0, 0]


def interleavings(a: list, b: list) -> list[list]:
    """Every merge of two sequences that keeps each one's own order."""
    if not a or not b:
        return [a + b]
    return [[a[0], *rest] for rest in interleavings(a[1:], b)] + [[b[0], *rest] for rest in interleavings(a, b[1:])]


@pytest.mark.parametrize("trace_outcome,expected", [
    ("failed", ("failed", "trace", "2026-01-01T00:00:04+00:00", ["conflicting_outcome"])),
    ("success", ("success", "runner", "2026-01-01T00:00:05+00:00", [])),
])
def test_shown_status_does_not_depend_on_ingestion_order(tmp_path: Path, trace_outcome: str, expected: tuple) -> None:
    """A runner and a trace describe one run; ingesting them in any interleaving gives one row."""
    runner = [*status_event("run-a", "running", "2026-01-01T00:00:00+00:00", reason="runner"),
              *status_event("run-a", "success", "2026-01-01T00:00:05+00:00", reason="runner")]
    trace = [*status_event("run-a", "running", "2026-01-01T00:00:00.500+00:00"),
             *status_event("run-a", trace_outcome, "2026-01-01T00:00:04+00:00", reason="trace")]
    seen = set()
    orders = interleavings(runner, trace)
    assert len(orders) == 6
    for number, order in enumerate(orders):
        with Ledger.open(tmp_path / f"{number}.db") as ledger:
            for event in order:
                ledger.append([event])
            run = ledger.run("run-a")
            kinds = sorted({a["kind"] for a in ledger.anomalies()})
            seen.add((run["status"], run["status_reason"], run["ended_at"], run["started_at"], tuple(kinds)))
    status, reason, ended, kinds = expected
    assert seen == {(status, reason, ended, "2026-01-01T00:00:00+00:00", tuple(kinds))}


def test_a_status_after_the_end_is_flagged_but_a_late_earlier_one_is_not(study_ledger: Ledger) -> None:
    run_id = study_ledger.register_run("s1", "c1")
    study_ledger.append(status_event(run_id, "running", "2026-01-01T00:00:00+00:00"))
    study_ledger.append(status_event(run_id, "success", "2026-01-01T00:00:05+00:00"))
    study_ledger.append(status_event(run_id, "running", "2026-01-01T00:00:01+00:00"))  # late, earlier: fine
    study_ledger.append(status_event(run_id, "pending", "2026-01-01T00:00:00+00:00"))
    assert study_ledger.anomalies(run_id) == []
    study_ledger.append(status_event(run_id, "running", "2026-01-02T00:00:00+00:00"))  # a re-run after the end
    assert [a["kind"] for a in study_ledger.anomalies(run_id)] == ["illegal_transition"]
    assert study_ledger.run(run_id)["status"] == "success"


def test_conflicting_registrations_are_flagged(ledger: Ledger) -> None:
    body = ev.run_registered("run-z", study_id=None, condition_id=None, replicate=None, agent_id=None,
                             problem_id=None, seed=None)
    ledger.append([make_event(EventKind.RUN_REGISTERED, body, source="trace")])
    assert ledger.run("run-z")["study_id"] is None
    full = {**body, "study_id": "s9", "condition_id": "c", "replicate": 1, "seed": 5}
    ledger.append([make_event(EventKind.RUN_REGISTERED, full, source="runs.jsonl")])
    assert (ledger.run("run-z")["study_id"], ledger.run("run-z")["seed"]) == ("s9", 5)
    assert ledger.anomalies() == []
    ledger.append([make_event(EventKind.RUN_REGISTERED, {**full, "seed": 6}, source="other")])
    assert [a["kind"] for a in ledger.anomalies("run-z")] == ["conflicting_registration"]
    assert ledger.run("run-z")["seed"] == 5
    assert [s["study_id"] for s in ledger.studies()] == ["s9"]


def snapshot(conn: sqlite3.Connection) -> dict[str, list]:
    return {name: conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall() for name in PROJECTION_TABLES}


RUNS = [f"run-{i}" for i in range(3)]
fact = st.one_of(
    st.tuples(st.just("status"), st.sampled_from(RUNS), st.sampled_from([s.value for s in RunStatus]),
              st.integers(0, 30)),
    st.tuples(st.just("register"), st.sampled_from(RUNS), st.sampled_from(["s1", "s2", None]), st.integers(0, 2)),
    st.tuples(st.just("observe"), st.sampled_from(RUNS + [None]), st.sampled_from(["step", "tool-call"]),
              st.integers(0, 30)),
    st.tuples(st.just("study"), st.sampled_from(["s1", "s2"]), st.sampled_from(["", "T"]), st.integers(0, 1)),
    # An observation naming its study may give its run one: the fold keeps that in order.
    st.tuples(st.just("observe_in"), st.sampled_from(RUNS), st.sampled_from(["s1", "s2", ""]), st.integers(0, 30)),
)


def to_event(item: tuple) -> object:
    tag, a, b, n = item
    at = f"2026-01-01T00:00:{n:02d}+00:00"
    if tag == "status":
        return make_event(EventKind.RUN_STATUS_CHANGED, ev.run_status_changed(a, b, at=at), source="h")
    if tag == "register":
        body = ev.run_registered(a, study_id=b, condition_id="c", replicate=n, agent_id=None, problem_id=None, seed=n)
        return make_event(EventKind.RUN_REGISTERED, body, source="h")
    if tag == "observe":
        return make_event(EventKind.OBSERVATION_RECORDED, ev.observation_recorded(
            {"timestamp": at, "record_id": f"r{n}", "event_type": "e", "level": b, "run_id": a}), source="h")
    if tag == "observe_in":
        return make_event(EventKind.OBSERVATION_RECORDED, ev.observation_recorded(
            {"timestamp": at, "record_id": f"r{n}{b}", "event_type": "e", "run_id": a, "study_id": b}), source="h")
    return make_event(EventKind.STUDY_REGISTERED, ev.study_registered(a, title=b, extra={"n": n}), source="h")


HISTORY_NUMBERS = itertools.count()


def assert_folds_consistently(tmp_path: Path, batches: list[list[NewEvent]]) -> None:
    """Append the batches to a new ledger: a rebuild gives the incremental tables, verify
    passes and replay finds the stored tables identical."""
    with Ledger.open(tmp_path / f"history-{next(HISTORY_NUMBERS)}.db") as ledger:
        for batch in batches:
            ledger.append(batch)
        incremental = snapshot(ledger.conn)
        ledger.rebuild_projections()
        assert snapshot(ledger.conn) == incremental
        # Appends fold observations set-based too: the reference is every event folded in
        # Python one by one, as events read back from the store (no decoded bodies) fold.
        with ledger.store.transaction():
            projections.drop_tables(ledger.conn)
            projections.create_tables(ledger.conn)
            projections.apply(ledger.conn, list(ledger.store.iter_events()))
        assert snapshot(ledger.conn) == incremental
        # Rebuilt from the stored events a few at a time: observations folded set-based
        # between the events folded one by one give the same tables at any boundaries.
        for batch, parallel_from in ((1, None), (3, None), (3, 0)):
            with ledger.store.transaction():
                projections.drop_tables(ledger.conn)
                projections.create_tables(ledger.conn)
                projections.fold_stored(ledger.conn, batch=batch, parallel_from=parallel_from)
            assert snapshot(ledger.conn) == incremental
        assert verify(ledger.store).ok
        assert replay(ledger.store).identical


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(fact, max_size=8), max_size=6))
def test_rebuilt_projections_equal_incremental_ones(tmp_path: Path, batches: list) -> None:
    assert_folds_consistently(tmp_path, [[to_event(item) for item in batch] for batch in batches])


def test_outdated_projections_are_rebuilt_on_open(study_ledger: Ledger) -> None:
    run_id = study_ledger.register_run("s1", "c1")
    study_ledger.transition(run_id, RunStatus.RUNNING)
    before = snapshot(study_ledger.conn)
    path = study_ledger.path
    study_ledger.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE ledger_meta SET value = 'old' WHERE key = 'projection_version'")
    conn.execute("DROP VIEW observation_rows")
    conn.execute("DROP TABLE runs")
    conn.close()
    with Ledger.open(path) as reopened:
        assert snapshot(reopened.conn) == before
        assert reopened.run(run_id)["status"] == "running"


def raw_event(kind: str, body_text: str, run_id: str | None = "run-q") -> NewEvent:
    """An event as a raw writer could store it: any body text, id computed honestly."""
    from studyledger.events import event_id_for

    return NewEvent(kind, body_text, event_id_for(kind, body_text), None, run_id, None, "raw")


def test_bodies_the_fold_cannot_use_become_anomalies(ledger: Ledger) -> None:
    ledger.append(status_event("run-q", "running", "2026-01-01T00:00:00+00:00"))
    ledger.append([
        raw_event(EventKind.RUN_STATUS_CHANGED, "not json"),
        raw_event(EventKind.RUN_STATUS_CHANGED, "[1, 2]"),
        raw_event(EventKind.RUN_STATUS_CHANGED, "{}"),
        raw_event(EventKind.RUN_STATUS_CHANGED, '{"run_id":"run-q","status":"exploded"}'),
        raw_event(EventKind.RUN_STATUS_CHANGED, '{"at":1767225600,"run_id":"run-q","status":"running"}'),
        raw_event(EventKind.RUN_REGISTERED, '{"replicate":"x","run_id":"run-q","seed":true}'),
        raw_event(EventKind.PROVENANCE_CAPTURED, '{"provenance":"a string","run_id":"run-q"}'),
        raw_event(EventKind.PROVENANCE_CAPTURED, '{"provenance":{"host":{"a":1}},"run_id":"run-q"}'),
        raw_event(EventKind.LINE_REJECTED, '{"file":"f","line":1,"offset":0,"raw":{"an":"object"}}'),
    ])
    kinds = [a["kind"] for a in ledger.anomalies()]
    # Unreadable: not JSON, not an object, no run_id, no usable status, a rejection without
    # a reason. A field of the wrong type reads as null: the unusable status, at, replicate,
    # seed, both provenances and the rejection's raw.
    assert kinds.count("unreadable_event") == 5
    assert kinds.count("invalid_field") == 7
    run = ledger.run("run-q")
    assert (run["status"], run["started_at"], run["replicate"], run["seed"]) == (
        "running", "2026-01-01T00:00:00+00:00", None, None)
    incremental = snapshot(ledger.conn)
    ledger.rebuild_projections()
    assert snapshot(ledger.conn) == incremental


def odd_observation(field: str, value: str) -> str:
    """An observation body as a raw writer could store it: ``field`` holds ``value`` (JSON text)."""
    fields = {"event_type": '"e"', "record_id": '"r"', "run_id": '"run-o"', "timestamp": '"2026-01-01T00:00:01+00:00"',
              field: value}
    return "{" + ",".join(f'"{key}":{text}' for key, text in sorted(fields.items())) + "}"


ODD_OBSERVATIONS = [
    odd_observation("text", '"plain"'),
    odd_observation("study_id", '"s1"'), odd_observation("study_id", '"s1"'), odd_observation("study_id", '""'),
    odd_observation("level", '{"an":"object"}'), odd_observation("level", '["step"]'), odd_observation("level", '"loud"'),
    odd_observation("level", "3"), odd_observation("level", "null"), odd_observation("level", '"tool-call"'),
    odd_observation("timestamp", '"yesterday"'), odd_observation("timestamp", "12"),
    odd_observation("record_id", '""'), odd_observation("event_type", "null"),
    odd_observation("text", "123456789012345678901234567890"), odd_observation("text", '"caf\\u00e9"'),
    odd_observation("text", '"a\\u0000b"'), odd_observation("text", "NaN"),
    odd_observation("tool_name", "5"), odd_observation("tool_name", "1e400"), odd_observation("run_id", '"run-\\u00e9"'),
    odd_observation("meta_json", '"text"'), odd_observation("meta_json", "[1]"),
    odd_observation("meta_json", '{"n":123456789012345678901234567890,"x":1e-400}'),
    odd_observation("meta_json", "[" * 600 + "]" * 600),
    '{"event_type":"e","record_id":"r","run_id":"run-o","run_id":"run-p","timestamp":"2026-01-01T00:00:01+00:00"}',
    '{"event_type":"e","record_id":"r","run_id":"run-o","timestamp":"2026-01-01T00:00:01+00:00" }',
    '{"event_type":"e","run_id":"run-o","timestamp":"2026-01-01T00:00:01+00:00"}',
    "[1]", '"x"', "not json", "{}", "\xe9",
]


@pytest.mark.parametrize("batch,parallel_from", [(1, None), (3, None), (20_000, None), (3, 0)])
def test_observations_a_raw_writer_stored_fold_alike_in_any_rebuild(tmp_path: Path, batch: int,
                                                                    parallel_from: int | None) -> None:
    """A rebuild reads stored observation bodies with orjson and checks their shape in Python:
    each odd one must be flagged, or folded, exactly as the one-by-one fold of Python does."""
    with Ledger.open(tmp_path / "a.db") as ledger:
        ledger.append(status_event("run-o", "running", "2026-01-01T00:00:00+00:00"))
        ledger.append([raw_event(EventKind.OBSERVATION_RECORDED, text, run_id=None) for text in ODD_OBSERVATIONS])
        with ledger.store.transaction():
            projections.drop_tables(ledger.conn)
            projections.create_tables(ledger.conn)
            projections.apply(ledger.conn, list(ledger.store.iter_events()))
        one_by_one = snapshot(ledger.conn)
        with ledger.store.transaction():
            projections.drop_tables(ledger.conn)
            projections.create_tables(ledger.conn, indexes=())
            projections.fold_stored(ledger.conn, batch=batch, parallel_from=parallel_from)
        assert snapshot(ledger.conn) == one_by_one
        kinds = [a["kind"] for a in ledger.anomalies()]
        assert kinds.count("unreadable_event") >= 8 and kinds.count("invalid_field") >= 10
        assert ledger.run("run-o")["observation_count"] >= 10
        assert replay(ledger.store).identical


class CountedWorker(projections.Worker):  # type: ignore[type-arg]
    """The real worker, remembering its children and how many batches each gave."""

    pids: list[int] = []
    batches: list[int] = []

    def __iter__(self):  # type: ignore[no-untyped-def]
        assert self.pid is not None
        CountedWorker.pids.append(self.pid)
        CountedWorker.batches.append(0)
        for item in super().__iter__():
            CountedWorker.batches[-1] += 1
            yield item


@pytest.fixture
def counted_worker(monkeypatch: pytest.MonkeyPatch) -> type[CountedWorker]:
    monkeypatch.setattr(projections, "Worker", CountedWorker)
    monkeypatch.setattr(CountedWorker, "pids", [])
    monkeypatch.setattr(CountedWorker, "batches", [])
    return CountedWorker


def killed_while_reading(monkeypatch: pytest.MonkeyPatch, batches: int) -> None:
    """The worker kills itself (SIGKILL) as it starts reading batch ``batches`` + 1."""
    parent, read_batch, read = os.getpid(), projections._read_batch, itertools.count()

    def reading(*args: Any) -> Any:
        if os.getpid() != parent and next(read) == batches:
            os.kill(os.getpid(), signal.SIGKILL)
        return read_batch(*args)

    monkeypatch.setattr(projections, "_read_batch", reading)


def replay_ledger(path: Path) -> Ledger:
    """A ledger of a few runs, their statuses, registrations and observations, one naming its study."""
    ledger = Ledger.open(path)
    items = [("study", "s1", "T", 0)]
    for n in range(60):
        items.append(("observe" if n % 5 else "status", RUNS[n % 3], "step" if n % 5 else "running", n % 30))
        if n % 17 == 0:
            items.append(("observe_in", RUNS[n % 3], "s1", n % 30))
            items.append(("register", RUNS[(n + 1) % 3], "s2", n % 3))
    ledger.append([to_event(item) for item in items])
    return ledger


def rebuilt_alone(ledger: Ledger) -> dict[str, list]:
    with ledger.store.transaction():
        projections.drop_tables(ledger.conn)
        projections.create_tables(ledger.conn)
        projections.apply(ledger.conn, list(ledger.store.iter_events()))
    return snapshot(ledger.conn)


@pytest.mark.parametrize("killed_after", [None, 0, 2])
def test_a_rebuild_read_ahead_by_a_worker_gives_the_tables_one_process_gives(
        tmp_path: Path, counted_worker: type[CountedWorker], monkeypatch: pytest.MonkeyPatch,
        killed_after: int | None) -> None:
    """The worker on (parallel_from=0), whole or killed after some batches: the rest is
    folded in this process, and the tables are the one-by-one fold's."""
    if killed_after is not None:
        killed_while_reading(monkeypatch, killed_after)
    with replay_ledger(tmp_path / "l.db") as ledger:
        one_by_one = rebuilt_alone(ledger)
        with ledger.store.transaction():
            projections.drop_tables(ledger.conn)
            projections.create_tables(ledger.conn)
            assert projections.fold_stored(ledger.conn, batch=7, parallel_from=0) == ledger.store.event_count()
        assert snapshot(ledger.conn) == one_by_one
        # Every batch came from the worker, or the batches before the one it was killed reading.
        batches = -(-ledger.store.event_count() // 7)
        (taken,) = counted_worker.batches
        assert taken == batches if killed_after is None else killed_after <= taken < batches
        assert verify(ledger.store).ok and replay(ledger.store).identical


def test_a_worker_that_cannot_see_this_transactions_events_leaves_them_to_this_process(
        tmp_path: Path, counted_worker: type[CountedWorker]) -> None:
    """Events appended in the rebuild's own transaction are not committed: the worker reads
    only the last commit, sees it is behind and stops; this process folds everything."""
    with replay_ledger(tmp_path / "l.db") as ledger:
        with ledger.store.transaction():
            ledger.append(status_event(RUNS[0], "success", "2026-01-01T00:01:00+00:00"))
            projections.drop_tables(ledger.conn)
            projections.create_tables(ledger.conn)
            assert projections.fold_stored(ledger.conn, batch=7, parallel_from=0) == ledger.store.event_count()
            folded = snapshot(ledger.conn)
        assert counted_worker.batches == [0]
        assert folded == rebuilt_alone(ledger)
        assert ledger.run(RUNS[0])["status"] == "success"


def test_replay_folds_its_attached_copy_in_one_process(tmp_path: Path, counted_worker: type[CountedWorker],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay, as of a time or not, folds another database's events through a view: no worker."""
    monkeypatch.setattr(projections, "PARALLEL_FROM", 0)
    with replay_ledger(tmp_path / "l.db") as ledger:
        assert replay(ledger.store).identical
        assert replay(ledger.store, at=datetime.now(timezone.utc)).events == ledger.store.event_count()
        assert counted_worker.pids == []
        ledger.rebuild_projections()  # the same setting folds the ledger itself with one
        assert len(counted_worker.pids) == 1


def test_a_number_where_a_time_belongs_folds_the_same_in_any_batching(tmp_path: Path) -> None:
    events = [*status_event("run-q", "running", "2026-01-01T00:00:00+00:00"),
              raw_event(EventKind.RUN_STATUS_CHANGED, '{"at":1767225600,"run_id":"run-q","status":"running"}'),
              *status_event("run-q", "success", "2026-01-01T00:00:05+00:00")]
    # Fixed recording times, so the two ledgers can be compared row for row.
    events = [replace(e, recorded_at="2026-01-02T00:00:00+00:00") for e in events]
    tables = []
    for number, batches in enumerate([[events], [[e] for e in events]]):
        with Ledger.open(tmp_path / f"{number}.db") as ledger:
            for batch in batches:
                ledger.append(batch)
            tables.append(snapshot(ledger.conn))
            ledger.rebuild_projections()
            assert snapshot(ledger.conn) == tables[-1]
    assert tables[0] == tables[1]


FIELD_NAMES = ["run_id", "study_id", "status", "at", "timestamp", "seed", "replicate", "provenance",
               "level", "event_type", "metric_value", "raw", "line", "condition_id", "title", "x"]
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(["run-a", "s1", "running", "2026-01-01T00:00:00+00:00", "nope"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(FIELD_NAMES), children, max_size=3),
    max_leaves=8,
)
raw_bodies = st.tuples(st.sampled_from([kind.value for kind in EventKind]),
                       st.dictionaries(st.sampled_from(FIELD_NAMES), any_json, max_size=6))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(raw_bodies, max_size=6), max_size=4))
def test_any_stored_history_folds_and_rebuilds_the_same(tmp_path: Path, batches: list) -> None:
    """Whatever a raw writer stored, the fold neither raises nor depends on batching."""
    assert_folds_consistently(tmp_path, [[make_event(kind, body, source="raw") for kind, body in batch]
                                         for batch in batches])
