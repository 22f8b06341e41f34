"""The core commands: outputs, exit codes, and one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from studyledger import Ledger, Observation, RunStatus
from studyledger.cli import cli
from studyledger.codec import Codec

from .study_helpers import build_study


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def populated(study_ledger: Ledger) -> tuple[Path, str]:
    run_id = study_ledger.register_run("s1", "cond-a", replicate=1)
    study_ledger.transition(run_id, RunStatus.RUNNING)
    study_ledger.observe(Observation(timestamp="2026-01-01T00:00:00+00:00", record_id="r1", text="hello",
                                     session_id=run_id, actor_id="a", event_type="assistant_output", run_id=run_id))
    other = study_ledger.register_run("s1", "cond-b", replicate=1)
    study_ledger.transition(other, RunStatus.SKIPPED, reason="inadmissible")
    return study_ledger.path, run_id


def test_init_creates_and_reopens(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    code, out, _ = invoke("--db", str(db), "init")
    assert code == 0 and "created" in out and db.exists()
    code, out, _ = invoke("--db", str(db), "init", "--json")
    assert code == 0 and json.loads(out)["created"] is False


def test_stats_json(populated: tuple[Path, str]) -> None:
    db, _ = populated
    code, out, _ = invoke("--db", str(db), "stats", "--json")
    data = json.loads(out)
    assert code == 0
    assert {k: data[k] for k in ("events", "studies", "runs", "observations", "rejected", "anomalies")} == {
        "events": 6, "studies": 1, "runs": 2, "observations": 1, "rejected": 0, "anomalies": 0}
    assert data["runs_by_status"] == {"running": 1, "skipped": 1}
    assert data["head"]["seq"] == 6 and len(data["head"]["chain"]) == 64


def test_db_from_environment(populated: tuple[Path, str]) -> None:
    db, _ = populated
    code, out, _ = invoke("stats", "--json", env={"STUDYLEDGER_DB": str(db)})
    assert code == 0 and json.loads(out)["runs"] == 2


def test_runs_filters(populated: tuple[Path, str]) -> None:
    db, run_id = populated
    code, out, _ = invoke("--db", str(db), "runs", "--status", "running", "--json")
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == [run_id]
    code, out, _ = invoke("--db", str(db), "runs", "--study", "s1")
    assert code == 0 and out.count("\n") == 3 and "skipped" in out
    code, _, err = invoke("--db", str(db), "runs", "--status", "finished")
    assert code == 2 and "finished" in err


def test_show_and_events(populated: tuple[Path, str]) -> None:
    db, run_id = populated
    code, out, _ = invoke("--db", str(db), "show", run_id, "--json")
    data = json.loads(out)
    assert code == 0 and data["run"]["status"] == "running"
    assert [t["to_status"] for t in data["transitions"]] == ["running"]
    code, out, _ = invoke("--db", str(db), "show", run_id)
    assert "pending -> running" in out
    code, out, _ = invoke("--db", str(db), "events", "--run", run_id, "--json")
    kinds = [e["kind"] for e in json.loads(out)]
    assert kinds == ["run_registered", "run_status_changed", "observation_recorded"]
    code, out, _ = invoke("--db", str(db), "events", "--after", "4")
    assert code == 0 and len(out.splitlines()) == 2


def test_verify_exit_codes(populated: tuple[Path, str]) -> None:
    db, _ = populated
    code, out, _ = invoke("--db", str(db), "verify")
    assert code == 0 and out.startswith("ok: 6 events")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_refuse_update")
    Codec(conn).register()
    conn.execute("UPDATE events SET body = replace(sl_body(body), 'hello', 'HELLO') "
                 "WHERE seq IN (SELECT seq FROM events_plain WHERE kind = 'observation_recorded')")
    conn.close()
    code, out, err = invoke("--db", str(db), "verify")
    assert code == 1
    assert "first failing seq 0: triggers" in err and "seq 4: event_id" in err
    code, out, _ = invoke("--db", str(db), "verify", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert {(p["seq"], p["check"]) for p in report["problems"]} >= {(4, "event_id"), (4, "chain")}


@pytest.mark.parametrize("args,message", [
    (["show", "run-nope"], "unknown run 'run-nope'"),
    (["stats"], "no ledger here"),
])
def test_user_mistakes_are_one_line(populated: tuple[Path, str], tmp_path: Path, args: list[str], message: str) -> None:
    db = populated[0] if args[0] == "show" else tmp_path / "missing.db"
    code, out, err = invoke("--db", str(db), *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "missing.db").exists()


def test_real_console_script_prints_no_traceback(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00\x01 not a database" * 1000)
    result = subprocess.run([sys.executable, "-m", "studyledger", "--db", str(garbage), "stats"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: {garbage}: not a studyledger ledger (file is not a database)"


@pytest.mark.parametrize("command", [["stats"], ["verify"], ["runs"], ["replay"], ["audits"], ["checkpoint", "--out", "c.json"]])
def test_read_only_commands_leave_an_empty_file_alone(tmp_path: Path, command: list[str]) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = invoke("--db", str(empty), *[str(tmp_path / a) if a.endswith(".json") else a for a in command])
    assert code == 1 and "empty file, not a ledger yet" in err
    assert empty.stat().st_size == 0


@pytest.mark.parametrize("args,message", [
    (["events", "--after", str(2**70)], "is not in the range"),
    (["replay", "--as-of", "²"], "give a sequence number"),
    (["replay", "--as-of", str(2**70)], "no ledger has that many events"),
])
def test_out_of_range_numbers_are_one_line_errors(populated: tuple[Path, str], args: list[str], message: str) -> None:
    code, _, err = invoke("--db", str(populated[0]), *args)
    assert code in (1, 2) and message in err and "Traceback" not in err


def test_a_raw_insert_of_garbage_is_reported_not_a_crash(populated: tuple[Path, str]) -> None:
    db, _ = populated
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO events (seq, event_id, kind, study_id, run_id, occurred_at, recorded_at, source, body, "
                 "chain) VALUES (7, ?, 'run_status_changed', NULL, NULL, NULL, 't', 'raw', 'not json', ?)",
                 (bytes(16), bytes(32)))
    conn.close()
    code, _, err = invoke("--db", str(db), "verify")
    assert code == 1 and "seq 7: body: body is not a JSON object" in err
    # stats reads without writing: it says the row is not folded yet, and a writer folds it.
    code, out, _ = invoke("--db", str(db), "stats", "--json")
    assert code == 0 and json.loads(out)["unfolded_events"] == 1
    assert invoke("--db", str(db), "init")[0] == 0
    code, out, _ = invoke("--db", str(db), "stats", "--json")
    assert code == 0 and json.loads(out)["anomalies"] == 1 and json.loads(out)["unfolded_events"] == 0


HOSTILE_TEXT = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\u202eevil\nforged line\x00"


def test_every_human_output_escapes_control_characters(tmp_path: Path) -> None:
    """Issue 11, item 6: show, runs and events printed an OSC 52 (writes the clipboard) and
    ESC [2J (clears the screen) from a drop line as they were; --json stays exact."""
    folder = tmp_path / f"drop{HOSTILE_TEXT.replace(chr(0), '').replace(chr(10), '')}"
    folder.mkdir()
    run_id = f"run-{HOSTILE_TEXT}"
    lines = [
        {"studyledger": 1, "kind": "study_registered", "body": {"study_id": f"s-{HOSTILE_TEXT}", "title": HOSTILE_TEXT}},
        {"studyledger": 1, "kind": "run_registered", "body": {"run_id": run_id, "study_id": f"s-{HOSTILE_TEXT}",
                                                              "condition_id": HOSTILE_TEXT, "agent_id": HOSTILE_TEXT}},
        {"studyledger": 1, "kind": "run_status_changed", "body": {"run_id": run_id, "status": "failed",
                                                                  "reason": HOSTILE_TEXT, "error": HOSTILE_TEXT,
                                                                  "at": "2026-01-01T00:00:00+00:00"}},
        {"studyledger": 1, "kind": "run_status_changed", "body": {"run_id": run_id, "status": "success",
                                                                  "at": "2026-01-01T00:00:01+00:00"}},
    ]
    (folder / "a.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + HOSTILE_TEXT + "\n")
    db = str(tmp_path / "ledger.db")
    assert invoke("--db", db, "ingest", str(folder))[0] == 0
    for command in (["runs"], ["show", run_id], ["events"], ["rejects"], ["diff", run_id, run_id], ["stats"],
                    ["replay"], ["verify"], ["ingest", str(folder)], ["export", str(tmp_path / "out")]):
        code, out, err = invoke("--db", db, *command)
        assert code == 0, (command, err)
        for stream in (out, err):
            assert not any(ch in stream for ch in "\x1b\x07\x00\u202e"), (command, stream)
            assert "forged line" not in stream.splitlines()[0:1] and "\nforged line" not in stream
    code, out, _ = invoke("--db", db, "show", run_id, "--json")
    data = json.loads(out)
    assert data["run"]["run_id"] == run_id and data["run"]["status_reason"] == HOSTILE_TEXT
    assert data["transitions"][0]["reason"] == HOSTILE_TEXT
    code, out, err = invoke("--db", db, "show", f"nope{HOSTILE_TEXT}")
    assert code != 0 and "\x1b" not in err and "\\x1b" in err


# -- small things a user runs into (review item 14) ----------------------------------------


def test_events_of_nothing_say_no_events(populated: tuple[Path, str]) -> None:
    code, out, err = invoke("--db", str(populated[0]), "events", "--run", "nope")
    assert (code, out, err) == (0, "", "no events\n")
    assert invoke("--db", str(populated[0]), "events", "--run", "nope", "--json")[1] == "[]\n"


def test_an_unknown_metric_is_named_with_the_known_ones(tmp_path: Path) -> None:
    db = build_study(tmp_path / "l.db", conditions=1, replicates=2)
    code, out, err = invoke("--db", str(db), "runs", "--metric", "nope", "--metric", "score")
    assert code == 0 and len(out.splitlines()) == 3
    assert err == "Warning: no run here has a metric 'nope'; these have: feasible, score, tokens\n"
    code, _, err = invoke("--db", str(db), "runs", "--metric", "score")
    assert code == 0 and err == ""


@pytest.mark.parametrize("command", [["events"], ["rejects"], ["search", "hello"]])
def test_every_limit_follows_one_rule(populated: tuple[Path, str], command: list[str]) -> None:
    """At least 1 everywhere (events took 0, search at most 10,000); any larger number is
    everything."""
    db = str(populated[0])
    code, _, err = invoke("--db", db, *command, "--limit", "0")
    assert code == 2 and "Invalid value for '--limit': 0 is not in the range x>=1." in err
    code, _, err = invoke("--db", db, *command, "--limit", str(2**70))
    assert code == 0, err
