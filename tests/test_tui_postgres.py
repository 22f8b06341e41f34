"""The dashboard on a ledger on a PostgreSQL server: the same screens, live through LISTEN/NOTIFY."""

from __future__ import annotations

from textual.widgets import DataTable

from studyledger.tui.app import StudyLedgerApp
from studyledger.tui.screens.studies import StudiesScreen

from .test_tui_app import column
from .test_tui_live import new_observations, open_live_run
from .tui_helpers import CLOCK, build, sync, until


@sync
async def test_the_dashboard_shows_a_server_ledger_live(pg_url: str) -> None:
    build(pg_url)  # type: ignore[arg-type]
    app = StudyLedgerApp(pg_url, clock=CLOCK, stale_after=60.0)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StudiesScreen)
                    and app.screen.query_one(DataTable).row_count == 2)
        assert column(app.screen.query_one(DataTable), "study") == ["bracket", "smoke"]
        observations = await open_live_run(app, pilot)
        new_observations(pg_url, 100, 3)  # type: ignore[arg-type]
        # Another process commits; its NOTIFY moves the dashboard's data_version.
        await until(pilot, lambda: observations.total == 7, timeout=30)  # a deadline, not a speed claim: CI may be busy
        observations.move_to(6)
        await until(pilot, lambda: observations.loaded_row(6) is not None)
        assert observations.loaded_row(6)["text"] == "live 102"  # type: ignore[index]
