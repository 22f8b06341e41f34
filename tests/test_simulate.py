"""The simulator: deterministic, real-format lines the adapters accept, stoppable, a study that unfolds."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from studyledger import Ledger, SeedPolicy, run_id_for
from studyledger.ingestion.adapters import events_from_line
from studyledger.ingestion.lines import parse_line
from studyledger import ingest
from studyledger.simulate import (
    OWN_LINES_FILE,
    STUDY_ID,
    TRACE_KEYS,
    Outcome,
    Simulator,
    agent_session,
    plan,
)

START = 1772446500000


def test_same_seed_same_lines_other_seed_other_lines() -> None:
    first = plan(runs=8, seed=3, seconds=5, start_ms=START)
    assert first == plan(runs=8, seed=3, seconds=5, start_ms=START)
    assert first != plan(runs=8, seed=4, seconds=5, start_ms=START)


@settings(max_examples=25, deadline=None)
@given(runs=st.integers(1, 30), seed=st.integers(0, 2**32), seconds=st.floats(0.5, 600))
def test_every_planned_line_is_accepted_by_the_adapters(runs: int, seed: int, seconds: float) -> None:
    writes = plan(runs=runs, seed=seed, seconds=seconds, start_ms=START)
    assert all(w.text.endswith("\n") and w.text.count("\n") == 1 for w in writes)
    assert [w.at_s for w in writes] == sorted(w.at_s for w in writes)
    assert writes[-1].at_s <= seconds
    for number, write in enumerate(writes):
        obj = parse_line(write.text[:-1].encode("ascii"))
        if write.path != OWN_LINES_FILE:
            assert tuple(obj) == TRACE_KEYS
        assert events_from_line(obj, source=f"file:{write.path}:{number}:0")


def test_each_outcome_ends_its_trace_as_upstream_does() -> None:
    def last(outcome: Outcome) -> dict[str, Any]:
        return agent_session("r", outcome=outcome, rng=random.Random(1))[-1][1]

    done = last(Outcome.SUCCESS)
    assert done["event_type"] == "RunFinished" and done["attributes"]["success"] is True
    failed = last(Outcome.TOOL_FAILURE)
    assert failed["event_type"] == "RunFinished"
    assert failed["attributes"]["success"] is False and failed["attributes"]["error"] is None
    assert "429" in last(Outcome.MODEL_ERROR)["attributes"]["error"]
    assert last(Outcome.CRASH)["event_type"] == "ToolCallStarted"
    assert last(Outcome.HANG)["event_type"] == "ModelCallStarted"


def test_a_written_study_ingests_with_upstream_ids_and_the_promised_outcomes(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    stats = Simulator(drop, runs=9, seconds=0.5, seed=11, start_ms=START).run()
    files = sorted(drop.rglob("*.jsonl"))
    assert stats.files == len(files) and stats.lines == sum(len(f.read_bytes().splitlines()) for f in files)
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        totals = ingest(ledger, [drop])
        assert totals.lines_rejected == 0 and totals.lines_read == stats.lines
        runs = ledger.runs(study_id=STUDY_ID)
        assert len(runs) == 9
        statuses = [row["status"] for row in runs]
        assert "running" in statuses and "skipped" in statuses and "failed" in statuses
        study = ledger.study(STUDY_ID)
        assert study["registered"]
        policy = SeedPolicy(base_seed=11)
        for row in runs:
            assert row["run_id"] == run_id_for(STUDY_ID, row["condition_id"], row["replicate"], "tool-agent", "bracket")
            assert row["seed"] == policy.derive_seed(STUDY_ID, row["condition_id"], row["replicate"],
                                                     salt="tool-agent:bracket")


def test_hanging_run_never_writes_again(tmp_path: Path) -> None:
    writes = plan(runs=6, seed=2, seconds=2, start_ms=START)
    by_file: dict[str, list[str]] = {}
    for write in writes:
        by_file.setdefault(write.path, []).append(json.loads(write.text).get("event_type", ""))
    endings = [events[-1] for path, events in by_file.items() if path != OWN_LINES_FILE]
    assert endings.count("ModelCallStarted") == 1  # the hang: its last line is a call that never returns
    assert sum(e == "RunFinished" for e in endings) == len(endings) - 1


def test_stops_when_told_and_leaves_only_whole_lines(tmp_path: Path) -> None:
    stop = threading.Event()
    simulator = Simulator(tmp_path, runs=30, seconds=120, seed=5, stop=stop)
    thread = simulator.start()
    # Wait for some lines to be out, then stop in the middle of the study.
    deadline = threading.Event()
    while simulator.stats.lines < 5 and not deadline.wait(0.02):
        pass
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    written = simulator.stats.lines
    assert 5 <= written < len(simulator.writes)
    deadline.wait(0.3)
    assert simulator.stats.lines == written  # nothing more after stopping
    for path in tmp_path.rglob("*.jsonl"):
        data = path.read_bytes()
        assert data.endswith(b"\n")
        for raw in data.splitlines():
            json.loads(raw)
