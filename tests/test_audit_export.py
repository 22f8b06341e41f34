"""Exports: the canonical artifact files downstream tools read, and a JSONL file that re-imports exactly."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
import yaml

from studyledger import Ledger, Observation, RunBudget, RunStatus, query
from studyledger import events as ev
from studyledger.audit.files import folder_name
from studyledger.audit.export_jsonl import export_jsonl
from studyledger.events import EventKind, make_event
from studyledger import ingest

from .audit_helpers import fill, invoke

REQUIRED = {
    "conditions.csv": ["study_id", "condition_id", "admissible", "constraint_messages", "assignment_meta_json"],
    "runs.csv": ["study_id", "condition_id", "run_id", "problem_id", "problem_family", "agent_id", "agent_kind",
                 "pattern_name", "model_name", "seed", "replicate", "status", "start_time", "end_time",
                 "latency_s", "input_tokens", "output_tokens", "cost_usd", "primary_outcome", "trace_path",
                 "manifest_path"],
    "events.csv": ["timestamp", "record_id", "text", "session_id", "actor_id", "event_type", "meta_json"],
    "evaluations.csv": ["run_id", "evaluator_id", "metric_name", "metric_value", "metric_unit",
                        "aggregation_level", "notes_json"],
}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def study_db(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Two studies, conditions with factors, evaluations (one NaN), a run with no study."""
    db = tmp_path / "ledger.db"
    with Ledger.open(db) as ledger:
        ledger.register_study("s1", title="Prompting", description="two prompts",
                              run_budget=RunBudget(replicates=2))
        ledger.register_study("study/two", title="Odd id")
        ledger.append([make_event(EventKind.CONDITION_REGISTERED, ev.condition_registered(
            "s1", cid, factors={"prompt": prompt, "temperature": temp}, blocks={"day": 1},
            admissible=cid != "c3", constraint_messages=[] if cid != "c3" else ["too hot"],
            assignment_meta={"order": i}), source="api")
            for i, (cid, prompt, temp) in enumerate([("c1", "short", 0.2), ("c2", "long", 0.2), ("c3", "long", 9.0)])])
        a = ledger.register_run("s1", "c1", replicate=1, agent_id="agent-x")
        b = ledger.register_run("s1", "c2", replicate=1)
        ledger.transition(a, RunStatus.RUNNING, at="2026-01-01T00:00:00+00:00")
        ledger.observe(Observation(timestamp="2026-01-01T00:00:01+00:00", record_id="o1",
                                   text='comma, "quote"\nnewline', session_id=a, actor_id="agent",
                                   event_type="model_call", meta_json={"tokens": 3}, run_id=a, study_id="s1"))
        ledger.observe(Observation(timestamp="2026-01-01T00:00:02+00:00", record_id="o2", text="no study",
                                   session_id=a, actor_id="agent", event_type="tool_call", run_id=a))
        ledger.transition(a, RunStatus.SUCCESS, at="2026-01-01T00:00:05.5+00:00")
        ledger.transition(b, RunStatus.SKIPPED, reason="inadmissible")
        ledger.append([make_event(EventKind.EVALUATION_RECORDED, ev.evaluation_recorded(
            run_id, evaluator_id="judge", metric_name=name, metric_value=value, metric_unit="score",
            notes_json={"why": "because"}), source="api")
            for run_id, name, value in [(a, "quality", 0.75), (a, "ratio", math.nan), (b, "quality", math.inf)]])
        # A run the ingester learnt about from a file that named no study.
        ledger.append([make_event(EventKind.RUN_STATUS_CHANGED, ev.run_status_changed("run-loose", "running", at=None),
                                  source="file:x.jsonl:1:0")])
    return db, {"a": a, "b": b}


def test_canonical_export_writes_the_contract(tmp_path: Path, study_db: tuple[Path, dict[str, str]]) -> None:
    db, runs = study_db
    out = tmp_path / "export"
    code, stdout, err = invoke("--db", str(db), "export", str(out), "--format", "canonical", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    folders = {study["study_id"]: Path(study["folder"]) for study in result["studies"]}
    assert set(folders) == {"s1", "study/two", "_unassigned"}
    assert folders["study/two"].name == folder_name("study/two") and "/" not in folders["study/two"].name
    for study_id, folder in folders.items():
        for name, columns in REQUIRED.items():
            header, _ = read_csv(folder / name)
            assert header[:len(columns)] == columns, (folder, name)
        study = yaml.safe_load((folder / "study.yaml").read_text())
        manifest = json.loads((folder / "manifest.json").read_text())
        assert study["schema_version"] == manifest["schema_version"] == "0.2.0"
        assert study["study_id"] == manifest["study_id"] == study_id
        assert {"title", "description"} <= set(study)
        assert {"generated_at", "status_counts", "model_ids", "run_count", "provenance"} <= set(manifest)
        assert json.loads((folder / "hypotheses.json").read_text()) == []
        assert json.loads((folder / "analysis_plan.json").read_text()) == []

    s1 = folders["s1"]
    header, conditions = read_csv(s1 / "conditions.csv")
    assert header[5:] == ["prompt", "temperature", "block_day"]
    assert [(c["condition_id"], c["admissible"], c["prompt"], c["temperature"]) for c in conditions] == [
        ("c1", "True", "short", "0.2"), ("c2", "True", "long", "0.2"), ("c3", "False", "long", "9.0")]
    assert json.loads(conditions[2]["constraint_messages"]) == ["too hot"]
    assert json.loads(conditions[1]["assignment_meta_json"]) == {"order": 1}

    _, run_rows = read_csv(s1 / "runs.csv")
    by_id = {row["run_id"]: row for row in run_rows}
    assert set(by_id) == {runs["a"], runs["b"]}
    assert by_id[runs["a"]]["status"] == "success" and by_id[runs["a"]]["latency_s"] == "5.5"
    # What was never recorded is what upstream writes for unknown.
    assert by_id[runs["a"]]["agent_id"] == "agent-x" and by_id[runs["a"]]["model_name"] == "unknown"
    assert (by_id[runs["a"]]["input_tokens"], by_id[runs["a"]]["cost_usd"], by_id[runs["a"]]["primary_outcome"]) == (
        "0", "0.0", "")
    assert by_id[runs["b"]]["start_time"] == "" and by_id[runs["b"]]["status"] == "skipped"
    assert (by_id[runs["b"]]["latency_s"], by_id[runs["b"]]["status_reason"]) == ("0.0", "inadmissible")
    manifest = json.loads((s1 / "manifest.json").read_text())
    assert manifest["run_count"] == 2 and manifest["status_counts"] == {"skipped": 1, "success": 1}

    # Each run's evidence record, in upstream's shape (15 keys), with its companions.
    record = json.loads((s1 / "artifacts" / "runs" / runs["a"] / "run.json").read_text())
    assert set(record) == {"attempted", "condition_id", "configured", "error", "files", "integrity", "observed",
                           "record_type", "run_id", "schema_version", "status", "status_reason", "study_id",
                           "terminal", "timing"}
    assert (record["status"], record["status_reason"], record["attempted"], record["terminal"]) == (
        "success", "completed", True, True)
    assert record["timing"] == {"started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:05.5+00:00",
                                "latency_s": 5.5}
    assert (s1 / "artifacts" / "runs" / runs["a"] / "attachments").is_dir()
    observations = (s1 / "artifacts" / "runs" / runs["a"] / "observations.jsonl").read_bytes()
    assert record["integrity"]["observations_sha256"] == hashlib.sha256(observations).hexdigest()
    assert record["observed"]["observation_count"] == 2
    assert [row["metric_name"] for row in record["observed"]["evaluations"]] == ["quality", "ratio"]

    _, events = read_csv(s1 / "events.csv")
    assert [e["record_id"] for e in events] == ["o1", "o2"]  # o2 joins through its run
    assert events[0]["text"] == 'comma, "quote"\nnewline'
    assert json.loads(events[0]["meta_json"]) == {"tokens": 3}

    _, evaluations = read_csv(s1 / "evaluations.csv")
    assert [(e["metric_name"], e["metric_value"]) for e in evaluations] == [
        ("quality", "0.75"), ("ratio", "nan"), ("quality", "inf")]
    assert float(evaluations[1]["metric_value"]) != float(evaluations[1]["metric_value"])  # reads back as NaN
    assert json.loads(evaluations[0]["notes_json"]) == {"why": "because"}

    _, loose = read_csv(folders["_unassigned"] / "runs.csv")
    assert [(r["run_id"], r["study_id"], r["status"]) for r in loose] == [("run-loose", "_unassigned", "running")]
    _, empty = read_csv(folders["study/two"] / "runs.csv")
    assert empty == []


def test_canonical_export_again_overwrites_cleanly(tmp_path: Path, study_db: tuple[Path, dict[str, str]]) -> None:
    db, _ = study_db
    out = tmp_path / "export"
    assert invoke("--db", str(db), "export", str(out))[0] == 0
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert invoke("--db", str(db), "export", str(out))[0] == 0
    second = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert first == second and not [p for p in out.rglob(".*")]


def test_folder_names_are_safe_and_distinct() -> None:
    assert folder_name("study-1.v2") == "study-1.v2"
    odd = [folder_name(s) for s in ("a/b", "a_b", "a:b", "..", "", "_unassigned")]
    assert len(set(odd)) == len(odd)
    assert all("/" not in name and name not in {".", "..", "", "_unassigned"} for name in odd)
    # An id that looks like a name made for another id does not get that id's folder.
    taken = folder_name("a b")
    assert folder_name(taken) != taken


@given(st.lists(st.text(min_size=1, max_size=20), min_size=2, max_size=6, unique=True))
def test_no_two_ids_share_a_folder(ids: list[str]) -> None:
    # The ids, and ids that spell the very names given to the others.
    every = set(ids) | {folder_name(identifier) for identifier in ids}
    names = {folder_name(identifier) for identifier in every}
    assert len(names) == len(every) and all(name and "/" not in name for name in names)


def stored(db: Path) -> list[tuple[Any, ...]]:
    with Ledger.open(db) as ledger:
        return [(e.seq, e.event_id, e.kind, e.body, e.recorded_at, e.source, e.chain) for e in ledger.events()]


def test_jsonl_round_trip_through_restore(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    fill(db)
    # Recorded audits are events like any other: they travel too (issue 11, item 9).
    assert invoke("--db", str(db), "verify", "--record")[0] == 0
    assert invoke("--db", str(db), "replay", "--record")[0] == 0
    code, stdout, _ = invoke("--db", str(db), "export", str(tmp_path / "out"), "--format", "jsonl", "--json")
    result = json.loads(stdout)
    assert code == 0 and result["events"] == 15
    code, stdout, err = invoke("--db", str(tmp_path / "b.db"), "restore", str(tmp_path / "out"), "--json")
    assert code == 0, err
    assert json.loads(stdout)["head"] == result["head"]
    assert stored(tmp_path / "b.db") == stored(db)
    assert invoke("--db", str(tmp_path / "b.db"), "verify")[0] == 0


def test_jsonl_through_the_ingester_keeps_ids_and_order_but_records_anew(
        tmp_path: Path, study_db: tuple[Path, dict[str, str]]) -> None:
    """An export's lines are facts to the ingester: it never takes their recording time or
    source (a drop line must not set the ledger's own columns), so the ids and their order
    come back and the chain is this ledger's own."""
    db, _ = study_db
    with Ledger.open(db) as original:
        result = export_jsonl(original.store, tmp_path / "out")
    with Ledger.open(tmp_path / "b.db") as copy:
        stats = ingest(copy, [result["path"]])
        assert not stats.errors and stats.lines_rejected == 0
        assert copy.head().seq == result["head"].seq and copy.head() != result["head"]
        assert all(event.source.startswith("file:") for event in copy.events())
    assert [row[1:4] for row in stored(tmp_path / "b.db")] == [row[1:4] for row in stored(db)]


def test_canonical_export_reads_back_through_the_ingester(tmp_path: Path,
                                                          study_db: tuple[Path, dict[str, str]]) -> None:
    """A study exported and ingested into an empty ledger states the same study, runs and results."""
    db, runs = study_db
    out = tmp_path / "export"
    assert invoke("--db", str(db), "export", str(out))[0] == 0
    copy = tmp_path / "copy.db"
    code, stdout, err = invoke("--db", str(copy), "ingest", str(out / "s1"), "--json")
    assert code == 0, err

    def state(path: Path) -> dict[str, Any]:
        with Ledger.open(path) as ledger:
            conn = ledger.conn
            study = ledger.study("s1")
            return {
                "study": {k: study[k] for k in ("title", "description", "seed_policy", "run_budget")},
                "runs": [{k: run[k] for k in ("run_id", "study_id", "condition_id", "replicate", "agent_id",
                                              "problem_id", "seed", "status", "started_at", "ended_at",
                                              "observation_count")}
                         for run in sorted(ledger.runs(study_id="s1"), key=lambda r: r["run_id"])],
                "conditions": [{k: c[k] for k in ("condition_id", "factors", "blocks", "admissible",
                                                  "constraint_messages", "assignment_meta")}
                               for c in query.conditions(conn, "s1")],
                "evaluations": sorted(
                    (e["run_id"], e["evaluator_id"], e["metric_name"], str(e["metric_value"]), e["metric_unit"],
                     e["notes_json"]) for e in query.evaluations(conn) if e["run_id"] in runs.values()),
                "observations": [e.event_id for e in ledger.events()
                                 if e.kind == EventKind.OBSERVATION_RECORDED and e.run_id == runs["a"]],
            }

    original, read_back = state(db), state(copy)
    assert read_back == original
    assert len(read_back["observations"]) == 2 and len(read_back["evaluations"]) == 3


# -- names that cannot be file names, and exports that fail half way ---------------------


def test_ids_too_long_for_file_names_export_and_read_back(tmp_path: Path) -> None:
    db, out = tmp_path / "ledger.db", tmp_path / "export"
    long_study, long_run = "s" * 300, "run-" + "r" * 252
    with Ledger.open(db) as ledger:
        ledger.register_study(long_study, title="A long id")
        ledger.append([make_event(EventKind.RUN_REGISTERED, ev.run_registered(
            long_run, study_id=long_study, condition_id="c1", replicate=1, agent_id=None, problem_id=None, seed=7),
            source="api")])
        ledger.transition(long_run, RunStatus.RUNNING, at="2026-01-01T00:00:00+00:00")
        ledger.transition(long_run, RunStatus.SUCCESS, at="2026-01-01T00:00:01+00:00")
    code, stdout, err = invoke("--db", str(db), "export", str(out), "--json")
    assert code == 0, err
    (study,) = json.loads(stdout)["studies"]
    folder = Path(study["folder"])
    assert folder.name == folder_name(long_study) and len(folder.name) < 100
    assert (folder / "manifest.json").is_file()
    (run_folder,) = (folder / "artifacts" / "runs").iterdir()
    assert run_folder.name == folder_name(long_run) and len(run_folder.name) < 100
    assert json.loads((run_folder / "run.json").read_text())["run_id"] == long_run
    copy = tmp_path / "copy.db"
    assert invoke("--db", str(copy), "ingest", str(folder))[0] == 0
    with Ledger.open(copy) as ledger:
        run = ledger.run(long_run)
        assert (run["study_id"], run["status"], run["seed"]) == (long_study, "success", 7)


def _export_with_a_file_size_limit(db: Path, out: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """``studyledger export`` in a process that may write no file larger than ``limit``
    bytes: the real failure a full disk gives, half way through an export (the limit must
    be above SQLite's shared-memory file, 32 KiB, for the ledger to open)."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "studyledger", "--db", str(db), "export", str(out)],
                          capture_output=True, text=True, preexec_fn=limit_file_size, timeout=60, check=False)


def test_an_export_that_fails_half_way_leaves_nothing_behind(tmp_path: Path) -> None:
    db, out = tmp_path / "ledger.db", tmp_path / "exports" / "export"
    fill(db, runs=3, observations=600)
    done = _export_with_a_file_size_limit(db, out, 100_000)
    assert done.returncode != 0
    # One line naming the file that could not be written where it was to be.
    assert done.stderr == f"Error: {out / 's1' / 'events.csv'}: File too large\n"
    assert os.listdir(tmp_path / "exports") == []  # no export, no temporary folder


def test_a_failed_export_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    db, out = tmp_path / "ledger.db", tmp_path / "exports" / "export"
    fill(db, runs=3, observations=600)
    assert invoke("--db", str(db), "export", str(out))[0] == 0
    (out / "notes.txt").write_text("mine")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert _export_with_a_file_size_limit(db, out, 100_000).returncode != 0
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert os.listdir(tmp_path / "exports") == ["export"]
    assert invoke("--db", str(db), "export", str(out))[0] == 0
    assert (out / "notes.txt").read_text() == "mine" and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_condition_stored_with_factors_that_are_not_an_object_still_exports(tmp_path: Path) -> None:
    """What an older or forged body left in the projections must not stop an export."""
    db = tmp_path / "ledger.db"
    with Ledger.open(db) as ledger:
        ledger.register_study("s1", title="t")
        ledger.append([make_event(EventKind.CONDITION_REGISTERED, {
            "study_id": "s1", "condition_id": "c", "factors": "notadict", "blocks": [], "admissible": True,
            "constraint_messages": [], "assignment_meta": {}}, source="api")])
    code, _, err = invoke("--db", str(db), "export", str(tmp_path / "out"))
    assert code == 0, err
    _, rows = read_csv(tmp_path / "out" / "s1" / "conditions.csv")
    assert [row["condition_id"] for row in rows] == ["c"]
