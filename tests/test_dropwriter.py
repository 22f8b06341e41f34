"""DropWriter: whole lines from concurrent processes, read back as the Ledger's own events."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
from pathlib import Path
from typing import Any

import pytest

from studyledger import Ledger, ProvenanceMetadata, RunBudget, SeedPolicy, ValidationError, query
from studyledger.ingestion.adapters import events_from_line
from studyledger.ingestion.dropwriter import DropWriter
from tests.test_adapters import ingest_lines

WRITERS = 4
LINES_EACH = 120


def observation(run_id: str, record_id: str, text: str) -> dict[str, object]:
    return {"timestamp": "2026-03-02T10:16:00+00:00", "record_id": record_id, "event_type": "note",
            "text": text, "run_id": run_id, "level": "step", "meta_json": {}}


def _write_many(folder: str, writer_number: int, start: Any) -> None:
    """One of several processes appending to the same file (lines up to 64 KB, > PIPE_BUF)."""
    rng = random.Random(writer_number)
    with DropWriter(folder, name="shared") as writer:
        start.wait()  # all writers at once: spawning takes longer than writing
        for index in range(LINES_EACH):
            text = f"w{writer_number}-{index}:" + "x" * rng.randrange(0, 64 * 1024)
            writer.observe(observation("run-shared", f"w{writer_number}-{index}", text))


def test_concurrent_processes_never_interleave_lines(tmp_path: Path, ledger: Ledger) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    processes = [context.Process(target=_write_many, args=(str(tmp_path), n, start)) for n in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    raw = (tmp_path / "shared.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == WRITERS * LINES_EACH
    seen = set()
    for line in lines:
        parsed = json.loads(line)  # a torn or interleaved line would not parse
        body = parsed["body"]
        assert body["text"].startswith(body["record_id"] + ":")
        seen.add(body["record_id"])
    assert seen == {f"w{n}-{i}" for n in range(WRITERS) for i in range(LINES_EACH)}
    appended, _, reasons = ingest_lines(ledger, tmp_path / "shared.jsonl")
    assert (appended, reasons) == (WRITERS * LINES_EACH, [])
    assert ledger.run("run-shared")["observation_count"] == WRITERS * LINES_EACH


def test_written_lines_are_the_events_the_ledger_api_states(tmp_path: Path, ledger: Ledger) -> None:
    policy, budget = SeedPolicy(base_seed=7), RunBudget(replicates=2)
    with DropWriter(tmp_path / "drop", name="run") as writer:
        writer.register_study("s1", title="T", description="D", seed_policy=policy, run_budget=budget)
        run_id = writer.register_run("s1", "c1", replicate=2, agent_id="a", problem_id="p")
        writer.transition(run_id, "running", at="2026-03-02T10:00:00+00:00")
        writer.observe(observation(run_id, "r1", "hello \u2014 \U0001F680"))
        writer.record_evaluation(run_id, evaluator_id="e", metric_name="m", metric_value=math.nan)
        writer.record_provenance(run_id, ProvenanceMetadata(
            captured_at="2026-03-02T10:00:01+00:00", host="h", platform="p", python_version="3"))
        writer.transition(run_id, "success", reason="done", at="2026-03-02T10:00:02+00:00")
    _, _, reasons = ingest_lines(ledger, tmp_path / "drop" / "run.jsonl")
    assert reasons == []
    run = ledger.run(run_id)
    assert (run["status"], run["study_id"], run["replicate"], run["observation_count"]) == ("success", "s1", 2, 1)
    assert run["seed"] == policy.derive_seed("s1", "c1", 2, salt="a:p")
    assert query.evaluations(ledger.conn, run_id)[0]["metric_value"] == '{"$float":"NaN"}'
    assert ledger.observations(run_id)[0]["text"] == "hello \u2014 \U0001F680"
    assert ledger.provenance(run_id)[0]["host"] == "h"

    # The same registrations through the Ledger API are the same events: nothing new.
    before = ledger.head()
    ledger.register_study("s1", title="T", description="D", seed_policy=policy, run_budget=budget)
    assert ledger.register_run("s1", "c1", replicate=2, agent_id="a", problem_id="p") == run_id
    assert ledger.head() == before


def test_every_line_is_one_own_format_line(tmp_path: Path) -> None:
    with DropWriter(tmp_path, name="w") as writer:
        writer.register_study("s")
        writer.observe(observation("r", "x", "line\nbreak"), observation("r", "y", "z"))
    lines = (tmp_path / "w.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["studyledger"] == 1 and line.isascii() for line in lines)
    assert [len(events_from_line(json.loads(line), source="x")) for line in lines] == [1, 1, 1]


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "w.jsonl").write_text('{"studyledger":1,"kind":"study_registered","body":{"study_id":"a"}}\n')
    with DropWriter(tmp_path, name="w") as writer:
        writer.register_study("b")
    assert len((tmp_path / "w.jsonl").read_text().splitlines()) == 2


def test_the_writer_refuses_what_it_knows_is_wrong(tmp_path: Path) -> None:
    with DropWriter(tmp_path, name="w", durable=True) as writer:
        writer.register_study("s", run_budget=RunBudget(replicates=1))
        with pytest.raises(ValidationError, match="outside study 's'"):
            writer.register_run("s", "c", replicate=2)
        with pytest.raises(ValidationError, match="seed policy of study 'other' is unknown"):
            writer.register_run("other", "c")
        run_id = writer.register_run("s", "c")
        with pytest.raises(ValidationError, match="illegal transition pending -> success"):
            writer.transition(run_id, "success")
        with pytest.raises(ValidationError, match="'done' is not a run status"):
            writer.transition(run_id, "done")
        with pytest.raises(ValidationError, match="missing record_id"):
            writer.observe(observation(run_id, "ok", "t"), {"timestamp": "t", "event_type": "e"})
        # A run it does not know: the ledger decides (and flags what is wrong).
        writer.transition("run-elsewhere", "success")
        # A run registered elsewhere, with its study's policy passed explicitly.
        assert writer.register_run("other", "c", seed_policy=SeedPolicy()).startswith("run-")
    lines = (tmp_path / "w.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    # Nothing refused was written, not even the valid observation beside the bad one.
    assert kinds == ["study_registered", "run_registered", "run_status_changed", "run_registered"]
    with pytest.raises(ValueError, match="is closed"):
        writer.register_study("late")


def test_default_name_is_per_process_and_bad_names_are_refused(tmp_path: Path) -> None:
    with DropWriter(tmp_path) as writer:
        assert writer.path.name.endswith(f"-{os.getpid()}.jsonl")
    for bad in ("a/b", "..", "."):
        with pytest.raises(ValidationError, match="invalid drop file name"):
            DropWriter(tmp_path, name=bad)
