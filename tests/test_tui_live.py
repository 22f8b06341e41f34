"""The dashboard while another process writes: live rows, follow mode, no stolen cursor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.observation_list import ObservationList
from studyledger.tui.screens.runs import RunsScreen
from studyledger.tui.screens.studies import StudiesScreen

from .tui_helpers import CLOCK, build, sync, until

REPO = Path(__file__).resolve().parents[1]


def append_from_another_process(db: Path, code: str) -> None:
    """Run ``code`` in a fresh Python process with ``ledger`` open on ``db`` (through the API)."""
    script = (
        "import sys\n"
        "from studyledger import Ledger\n"
        "from tests.tui_helpers import *\n"
        f"with Ledger.open({str(db)!r}) as ledger:\n"
        f"    {code}\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=60)


def new_observations(db: Path, first: int, count: int) -> None:
    append_from_another_process(
        db, f"ledger.append([observation('run-live', n, text=f'live {{n}}', second=30 + n) "
            f"for n in range({first}, {first + count})])")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build(tmp_path / "ledger.db")


async def open_live_run(app: StudyLedgerApp, pilot: object) -> ObservationList:
    await until(pilot, lambda: app.source is not None)
    await app.open_run("run-live")
    observations = app.screen.query_one(ObservationList)
    await until(pilot, lambda: observations.total == 4 and observations.loaded_row(3) is not None)
    return observations


def status_line(app: StudyLedgerApp) -> str:
    content = app.screen.query_one("#list-status", Static).content
    return str(getattr(content, "plain", content))


@sync
async def test_rows_another_process_appends_show_up_without_moving_the_cursor(db: Path) -> None:
    app = StudyLedgerApp(db, clock=CLOCK)
    async with app.run_test(size=(120, 30)) as pilot:
        observations = await open_live_run(app, pilot)
        await pilot.press("j")
        assert observations.cursor == 1
        new_observations(db, 100, 3)
        await until(pilot, lambda: observations.total == 7, timeout=5)
        assert observations.cursor == 1
        assert app.screen.focused is observations
        assert observations.new_rows == 3
        await until(pilot, lambda: "+3 new" in status_line(app))
        observations.move_to(6)
        await until(pilot, lambda: observations.loaded_row(6) is not None)
        assert observations.loaded_row(6)["text"] == "live 102"  # type: ignore[index]


@sync
async def test_follow_mode_stays_at_the_bottom_until_the_user_moves_up(db: Path) -> None:
    app = StudyLedgerApp(db, clock=CLOCK)
    async with app.run_test(size=(120, 30)) as pilot:
        observations = await open_live_run(app, pilot)
        await pilot.press("G")
        assert observations.following and observations.cursor == 3
        assert "following" in status_line(app)
        new_observations(db, 100, 3)
        await until(pilot, lambda: observations.total == 7 and observations.cursor == 6, timeout=5)
        assert observations.following and observations.new_rows == 0
        await pilot.press("k")  # moving up stops following
        assert not observations.following and observations.cursor == 5
        new_observations(db, 200, 2)
        await until(pilot, lambda: observations.total == 9, timeout=5)
        assert observations.cursor == 5 and observations.new_rows == 2
        await pilot.press("F")  # F follows again, from the bottom
        assert observations.following and observations.cursor == 8 and observations.new_rows == 0


@sync
async def test_tables_update_in_place_while_the_cursor_stays_on_its_row(db: Path) -> None:
    app = StudyLedgerApp(db, clock=CLOCK, stale_after=3600.0)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen)
                    and app.screen.query_one(DataTable).row_count == 2)
        app.open_study("bracket")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen)
                    and app.screen.query_one(DataTable).row_count == 5)
        table = app.screen.query_one(DataTable)
        await pilot.press("j", "j")  # on run-live
        new_observations(db, 100, 3)
        append_from_another_process(
            db, "ledger.append([register('bracket', 'run-new', 'scaffold', 9, 9)])")
        await until(pilot, lambda: table.row_count == 6, timeout=5)
        await until(pilot, lambda: table.get_cell("run-live", "obs").plain == "7", timeout=5)
        assert table.cursor_row == 2 and app.screen.focused is table
        append_from_another_process(
            db, "ledger.append([status('run-live', 'bracket', 'failed', 90, error='killed')])")
        await until(pilot, lambda: table.get_cell("run-live", "status").plain == "failed", timeout=5)
        assert table.cursor_row == 2
