"""``studyledger demo --no-tui``: the README's main command, as CI and users without a terminal run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from studyledger import Ledger

from .conftest import REPO

STUDYLEDGER = [sys.executable, "-m", "studyledger"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STUDYLEDGER, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def test_demo_no_tui_ingests_examples_and_the_live_study(tmp_path: Path) -> None:
    result = _run("demo", "--no-tui", "--seconds", "3", "--dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert Path(summary["examples"]) == REPO / "ledger_examples"
    ledger = summary["ledger"]
    assert ledger["rejected"] == 5  # the malformed example file's bad lines, kept
    assert ledger["runs_by_status"].get("running", 0) >= 2  # the crashed example run and the hung live run
    # Every line the simulator wrote was read by the watcher and accepted.
    assert summary["watched"]["lines_read"] == summary["simulator"]["lines"] > 0
    assert summary["watched"]["lines_rejected"] == 0
    verify = _run("--db", summary["db"], "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True
    runs = json.loads(_run("--db", summary["db"], "runs", "--study", "live-bracket-study", "--json").stdout)
    assert len(runs) == 12


def test_demo_text_output_is_the_stats(tmp_path: Path) -> None:
    result = _run("demo", "--no-tui", "--seconds", "1", "--runs", "3", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "runs by status" in result.stdout and "rejected      5" in result.stdout
    assert f"studyledger --db {tmp_path / 'demo.db'} tui" in result.stderr


def test_demo_with_a_missing_examples_folder_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = _run("demo", "--no-tui", "--seconds", "1", "--runs", "3", "--dir", str(tmp_path / "w"),
                  env={"STUDYLEDGER_EXAMPLES": str(missing)})
    # A configured but missing examples folder is a user error: one line, no traceback.
    assert result.returncode != 0
    assert str(missing) in result.stderr and "Traceback" not in result.stderr


def test_dashboard_on_the_demo_shows_the_live_study_arrive_and_leaving_stops_everything(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from studyledger.demo import Demo
    from studyledger.tui.app import StudyLedgerApp

    async def scenario() -> Demo:
        with Demo(tmp_path, seconds=2, runs=6, seed=1, examples=REPO / "ledger_examples") as demo:
            app = StudyLedgerApp(demo.db)
            async with app.run_test(size=(120, 40)) as pilot:
                # The examples are in before the dashboard opens; the live study is not
                # yet: the dashboard must pick it up by itself, without input.
                seen: set[str] = set()
                # Stay until the simulator has written its first run too, so leaving cuts the
                # study short with runs in it (the study row appears before any run line).
                first_run = next(i for i, write in enumerate(demo.simulator.writes) if "run_registered" in write.text)
                for _ in range(1000):
                    tables = app.screen.query(DataTable)
                    seen = {str(key.value) for key in tables.first().rows} if tables else set()
                    if "live-bracket-study" in seen and demo.simulator.stats.lines > first_run:
                        break
                    await pilot.pause(0.01)
                assert {"bracket-study", "smoke-tests", "live-bracket-study"} <= seen
                assert demo.running
        return demo

    demo = asyncio.run(scenario())
    assert not demo.running
    # Quitting early stopped the simulator mid-study, and every line it wrote is committed.
    assert 0 < demo.simulator.stats.lines < len(demo.simulator.writes)
    assert demo.watched.lines_read == demo.simulator.stats.lines
    with Ledger.open(demo.db, create=False) as ledger:
        assert ledger.runs(study_id="live-bracket-study")
