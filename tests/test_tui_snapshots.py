"""SVG snapshots of the main screens (fixed ledger, fixed clock): a changed look is a failed test.

Update them after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.observation_list import ObservationList
from studyledger.tui.screens.observation import ObservationScreen
from studyledger.tui.screens.runs import RunsScreen
from studyledger.tui.screens.studies import StudiesScreen

from .tui_helpers import CLOCK, build, until


@pytest.fixture
def app(tmp_path: Path) -> StudyLedgerApp:
    return StudyLedgerApp(build(tmp_path / "ledger.db"), clock=CLOCK, stale_after=60.0)


async def studies_loaded(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.screen.query_one(DataTable).row_count)


async def runs_loaded(pilot: Pilot[Any]) -> None:
    await studies_loaded(pilot)
    app = pilot.app
    assert isinstance(app, StudyLedgerApp)
    app.open_study("bracket")
    await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.query_one(DataTable).row_count)


async def run_loaded(pilot: Pilot[Any]) -> None:
    await studies_loaded(pilot)
    app = pilot.app
    assert isinstance(app, StudyLedgerApp)
    await app.open_run("run-ok")
    observations = app.screen.query_one(ObservationList)
    await until(pilot, lambda: observations.loaded_row(observations.total - 1) is not None and observations.total)
    await pilot.press("j", "j", "j")


async def observation_loaded(pilot: Pilot[Any]) -> None:
    await run_loaded(pilot)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, ObservationScreen) and pilot.app.screen.row)


def test_studies_screen(app: StudyLedgerApp, snap_compare: Any) -> None:
    assert snap_compare(app, terminal_size=(100, 24), run_before=studies_loaded)


def test_runs_screen(app: StudyLedgerApp, snap_compare: Any) -> None:
    assert snap_compare(app, terminal_size=(100, 24), run_before=runs_loaded)


def test_run_screen_at_80x24(app: StudyLedgerApp, snap_compare: Any) -> None:
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_loaded)


def test_observation_screen_light_theme(app: StudyLedgerApp, snap_compare: Any) -> None:
    async def light(pilot: Pilot[Any]) -> None:
        await observation_loaded(pilot)
        await pilot.press("t")

    assert snap_compare(app, terminal_size=(100, 30), run_before=light)
