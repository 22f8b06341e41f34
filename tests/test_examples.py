"""The committed example inputs: reproducible, in the real formats, and they show what the README says."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from studyledger import Ledger, SeedPolicy, query, run_id_for
from studyledger.schema import from_canonical
from studyledger.cli import cli
from studyledger.simulate import TRACE_KEYS

from .conftest import REPO

EXAMPLES = REPO / "ledger_examples"
STUDY = EXAMPLES / "bracket-study"
HAS_STUDY_FOLDER = importlib.util.find_spec("studyledger.ingestion.study_folder") is not None


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_make_examples_reproduces_the_committed_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for name in ("bracket-study", "drop"):
        assert _tree(tmp_path / name) == _tree(EXAMPLES / name)
        for rel in _tree(EXAMPLES / name):
            assert filecmp.cmp(tmp_path / name / rel, EXAMPLES / name / rel, shallow=False), rel


def test_traces_have_the_upstream_shape() -> None:
    files = sorted((STUDY / "traces").glob("run_*.jsonl"))
    assert len(files) == 8
    for path in files:
        raw = path.read_bytes()
        assert raw.isascii() and raw.endswith(b"\n")
        lines = [json.loads(text) for text in raw.decode().splitlines()]
        assert all(tuple(line) == TRACE_KEYS for line in lines)
        request_id = path.stem.split("_", 2)[2]
        assert {line["run_id"] for line in lines} == {request_id}
        assert [line["event_index"] for line in lines] == list(range(len(lines)))
        assert lines[0]["event_type"] == "RunStarted" and lines[0]["parent_span_id"] is None
        assert all(len(line["span_id"]) == 32 for line in lines)


def test_checkpoint_ids_and_seeds_join_with_upstream() -> None:
    lines = (STUDY / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines()
    assert lines[0] == lines[-1], "the re-run without --resume appends the first run again"
    assert "NaN" in "".join(lines) and "Infinity" in "".join(lines)
    policy = SeedPolicy(base_seed=20260302)
    for text in lines:
        spec = json.loads(text)["run_spec"]
        agent, problem = spec["execution_metadata"]["agent_id"], spec["problem_id"]
        assert spec["run_id"] == run_id_for(spec["study_id"], spec["condition_id"], spec["replicate"], agent, problem)
        assert spec["seed"] == policy.derive_seed(spec["study_id"], spec["condition_id"], spec["replicate"],
                                                  salt=f"{agent}:{problem}")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    db = tmp_path_factory.mktemp("examples") / "ledger.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "ingest", str(STUDY), str(EXAMPLES / "drop"), "--json"])
    assert result.exit_code == 0, result.output
    return db, json.loads(result.output)


def test_every_example_line_is_accounted_for(ingested: tuple[Path, dict[str, Any]]) -> None:
    _db, totals = ingested
    assert totals["lines_read"] == totals["lines_accepted"] + totals["lines_rejected"]
    assert totals["lines_rejected"] == 5  # malformed.jsonl lines 2-6, nothing else


def test_malformed_file_rejects_each_bad_line_with_its_line_number(ingested: tuple[Path, dict[str, Any]]) -> None:
    db, _ = ingested
    with Ledger.open(db, create=False) as ledger:
        rows = query.rejections(ledger.conn)
    assert all(row["file"].endswith("malformed.jsonl") for row in rows)
    assert sorted(row["line"] for row in rows) == [2, 3, 4, 5, 6]


def test_example_runs_end_as_the_readme_says(ingested: tuple[Path, dict[str, Any]]) -> None:
    db, _ = ingested
    with Ledger.open(db, create=False) as ledger:
        status = {row["run_id"]: row["status"] for row in ledger.runs()}
        assert status["run-65fbeb998b6f"] == "success"
        assert status["run-bc27e90b2998"] == "failed"       # success: false, error: null
        assert status["run-14447d5846f9"] == "running"      # crashed: no RunFinished
        assert status["run-2d428b9bec7c"] == "skipped"
        assert status["run-7720e844b836"] == "failed"       # sources disagree: flagged
        assert status["adhoc-7f3a9c"] == "success"          # orphan trace, still kept
        assert status["run-40a61839aa0d"] == "success"      # own lines of smoke-tests
        kinds = {row["kind"] for row in ledger.anomalies("run-7720e844b836")}
        assert "conflicting_outcome" in kinds
        values = {row["metric_name"]: from_canonical(json.loads(row["metric_value"]))
                  for row in query.evaluations(ledger.conn, "run-0eb87e2bcb28")}
        assert math.isnan(values["feasibility"]) and values["mass_g"] == math.inf
        if HAS_STUDY_FOLDER:
            assert status["run-d806ceb90258"] == "pending"
            assert ledger.study("bracket-study")["title"].startswith("Bracket sizing")


def test_duplicated_checkpoint_line_and_reingestion_append_nothing(ingested: tuple[Path, dict[str, Any]]) -> None:
    db, _ = ingested
    with Ledger.open(db, create=False) as ledger:
        before = ledger.head().seq
        last = len((STUDY / "artifacts" / "checkpoints" / "runs.jsonl").read_text().splitlines())
        from_repeat = ledger.conn.execute(
            "SELECT count(*) FROM events_plain WHERE source LIKE ?", (f"%runs.jsonl:{last}:%",)
        ).fetchone()[0]
        from_first = ledger.conn.execute(
            "SELECT count(*) FROM events_plain WHERE source LIKE ?", ("%runs.jsonl:1:%",)
        ).fetchone()[0]
    assert from_first > 0 and from_repeat == 0  # the repeated line stated nothing new
    result = CliRunner().invoke(cli, ["--db", str(db), "ingest", str(STUDY), str(EXAMPLES / "drop"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["events_appended"] == 0
    with Ledger.open(db, create=False) as ledger:
        assert ledger.head().seq == before
