"""``studyledger ingest``, ``watch`` and ``rejects`` as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from studyledger.cli import cli
from studyledger.events import EventKind

from .conftest import SHARED
from .ingest_helpers import STUDYLEDGER, count_events, own_line, start_watch, wait_for, write
from .unprivileged import run_cli_unprivileged

OBS = EventKind.OBSERVATION_RECORDED.value
SUMMARY_KEYS = {"files", "lines_read", "lines_accepted", "lines_rejected", "events_appended", "duplicates"}


def run(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_ingest_json_summary_and_reingest_appends_nothing(ledger_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    write(folder / "a.jsonl", "".join(own_line(i) for i in range(5)))
    write(folder / "sub" / "b.jsonl", own_line(5) + "{broken\n")
    code, out, _ = run(ledger_path, "ingest", str(folder), "--json")
    assert code == 0
    first = json.loads(out)
    assert SUMMARY_KEYS <= set(first)
    assert (first["files"], first["lines_read"], first["lines_accepted"], first["lines_rejected"]) == (2, 7, 6, 1)
    assert first["events_appended"] == 7  # six observations and one rejection
    code, out, _ = run(ledger_path, "ingest", str(folder), "--json")
    again = json.loads(out)
    assert (again["lines_read"], again["events_appended"]) == (0, 0)


def test_ingest_creates_the_ledger_and_prints_a_summary(ledger_path: Path, tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", own_line(0))
    assert not ledger_path.exists()
    code, out, _ = run(ledger_path, "ingest", str(tmp_path / "a.jsonl"))
    assert code == 0 and ledger_path.exists()
    assert "1 line(s) read, 1 accepted, 0 rejected; 1 event(s) appended" in out


def test_shared_format_examples_are_ingested(ledger_path: Path) -> None:
    code, out, _ = run(ledger_path, "ingest", str(SHARED / "formats"), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["files"] == 3
    assert summary["lines_read"] == summary["lines_accepted"] + summary["lines_rejected"]
    assert summary["lines_accepted"] > 0


def test_missing_path_is_one_line_and_nonzero(ledger_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(ledger_path), "ingest", str(tmp_path / "nope.jsonl")])
    assert result.exit_code != 0
    assert result.stderr.strip() == f"Error: {tmp_path / 'nope.jsonl'}: no such file or folder"
    assert "Traceback" not in result.output


def test_unreadable_file_is_reported_and_others_still_read(open_folder: Path) -> None:
    """Run as a user a file's mode binds (root, which CI runs as, reads whatever it says)."""
    open_folder.chmod(0o777)  # that user writes the ledger here
    ledger_path = open_folder / "ledger.db"
    write(open_folder / "ok.jsonl", own_line(0))
    write(open_folder / "locked.jsonl", own_line(1))
    (open_folder / "locked.jsonl").chmod(0)
    [(code, _, err)] = run_cli_unprivileged([["--db", str(ledger_path), "ingest", str(open_folder)]])
    assert code == 1
    assert "locked.jsonl: Permission denied" in err
    assert count_events(ledger_path, OBS) == 1


def test_fifo_is_refused_not_waited_on(ledger_path: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    result = CliRunner().invoke(cli, ["--db", str(ledger_path), "ingest", str(fifo)])
    assert result.exit_code == 1
    assert "pipe.jsonl: not a regular file" in result.stderr


def test_line_limit_option(ledger_path: Path, tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", own_line(0) + '{"x": "' + "y" * 500 + '"}\n')
    code, out, _ = run(ledger_path, "ingest", str(tmp_path), "--line-limit", "400", "--json")
    assert json.loads(out)["lines_rejected"] == 1
    code, out, _ = run(ledger_path, "rejects")
    assert "longer than the limit of 400 bytes" in out


def test_rejects_lists_file_line_offset_reason(ledger_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, own_line(0).encode() + b"\xff\x1b[2J\n" + b"[1,\n")
    run(ledger_path, "ingest", str(path))
    code, out, _ = run(ledger_path, "rejects")
    first, second = out.splitlines()
    assert first.startswith(f"{path}:2:{len(own_line(0))} invalid UTF-8 at byte 0")
    assert second.startswith(f"{path}:3:{len(own_line(0)) + 6} invalid JSON")
    code, out, _ = run(ledger_path, "rejects", "--json")
    rows = json.loads(out)
    assert [(row["line"], row["raw"]) for row in rows] == [(2, "\\xff\x1b[2J"), (3, "[1,")]


def test_rejects_escapes_control_characters(ledger_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "evil\x1b[31m.jsonl"
    write(path, "nope\n")
    run(ledger_path, "ingest", str(path))
    code, out, _ = run(ledger_path, "rejects")
    assert "\x1b" not in out and "\\x1b[31m" in out


def test_watch_missing_folder_fails_cleanly(ledger_path: Path, tmp_path: Path) -> None:
    result = subprocess.run([*STUDYLEDGER, "--db", str(ledger_path), "watch", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().endswith("nope: no such folder")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("sig", "options"), [
    (signal.SIGTERM, ()), (signal.SIGINT, ()), (signal.SIGTERM, ("--poll", "0.1")),
])
def test_watch_ingests_then_exits_cleanly_on_signal(
    ledger_path: Path, tmp_path: Path, sig: signal.Signals, options: tuple[str, ...]
) -> None:
    write(tmp_path / "early.jsonl", own_line(0))
    process = start_watch(ledger_path, tmp_path, "--json", *options)
    try:
        wait_for(lambda: count_events(ledger_path, OBS) == 1, timeout=30, what="existing file")
        write(tmp_path / "late.jsonl", own_line(1) + own_line(2))
        wait_for(lambda: count_events(ledger_path, OBS) == 3, timeout=30, what="appended lines")
    finally:
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert b"Traceback" not in err
    summary = json.loads(out)
    assert (summary["files"], summary["lines_read"], summary["events_appended"]) == (2, 3, 3)


def test_study_folder_goes_through_the_study_scan(ledger_path: Path, tmp_path: Path) -> None:
    study = Path(__file__).parent / "data" / "study"
    outer = tmp_path / "results"
    shutil.copytree(study, outer / "bracket")
    write(outer / "loose.jsonl", own_line(0))
    code, out, _ = run(ledger_path, "ingest", str(outer), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["studies"] == ["bracket-study"]
    assert [Path(trace).name for trace in summary["orphan_traces"]] == ["run_20260302T090000Z_stray-request-7.jsonl"]
    assert summary["lines_read"] == summary["lines_accepted"] + summary["lines_rejected"]
    code, out, _ = run(ledger_path, "stats", "--json")
    stats = json.loads(out)
    assert stats["studies"] == 1 and stats["runs"] >= 2 and stats["observations"] >= 1
    code, out, _ = run(ledger_path, "ingest", str(outer), "--json")
    again = json.loads(out)
    assert (again["lines_read"], again["events_appended"]) == (0, 0)
